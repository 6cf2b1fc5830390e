"""Compare ways to store production points (time, actual, goal) of one factory in Redis.

For each layout the script FLUSHDBs the target database, writes N points
(time = 1_600_000_000 + i * spacing, small actual/goal ints) with pipelines of
about 10,000 points, and reports:

* bytes/point: (INFO memory used_memory after - before) / N, measured from a
  connection other than the writer's, after the writer has disconnected, so
  its query buffer is not counted;
* write points/s: wall time of the whole write, Python-side encoding included;
* range read p50/p99 ms: 200 reads (after 5 warm-ups), each of 1,000
  consecutive points at a random position, decoded to (time, actual, goal)
  int tuples in time order; every result is checked against the expected points.
  The script's own heap is gc.freeze()d first: otherwise Python's full
  collections (~10 ms each here) land in p99 whatever the layout.

Layouts: `zset` (score = time, member "t:a:g"), `stream` (XADD id "t-0"),
`hash-buckets` (hash per 128 * spacing seconds, field = offset, value "a:g",
plus a sorted-set index of bucket numbers), `packed-buckets` (string per hour
of 10-byte '>HII' records, written with one SET per bucket, plus the index; read
by ZRANGEBYSCORE + MGET from the client, and again by one Lua script doing
both), and `packed-buckets APPEND` (the same strings built by one APPEND per
point, to show the cost of APPEND's greedy growth).

Usage: python bench/storage.py --redis-url redis://127.0.0.1:PORT/0 [--points 1000000] [--spacing 60]
It refuses to run on port 6379: it deletes everything in the database it is given.
"""

import argparse
import gc
import random
import statistics
import struct
import sys
import time
from collections import Counter
from itertools import groupby
from urllib.parse import urlparse

import redis

T0 = 1_600_000_000
BATCH = 10_000
READS, WARMUP, SPAN = 200, 5, 1000
PACKED_W = 3600
REC = struct.Struct(">HII")
Z, S, HI, PI = "m:{f1}:z", "m:{f1}:s", "m:{f1}:hi", "m:{f1}:pi"
HP, PP = "m:{f1}:h:", "m:{f1}:p:"
LUA_READ = """
local bs = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
if #bs == 0 then return {{}, {}} end
local ks = {}
for i, b in ipairs(bs) do ks[i] = ARGV[3] .. b end
return {bs, redis.call('MGET', unpack(ks))}
"""


def point(i: int, spacing: int) -> tuple[int, int, int]:
    return T0 + i * spacing, 25 + i % 11, 30 + i % 6


def points(n: int, spacing: int):
    return (point(i, spacing) for i in range(n))


# Writers yield (points covered, command args); run_writes pipelines them.
def write_zset(pts, spacing):
    for t, a, g in pts:
        yield 1, ("ZADD", Z, t, f"{t}:{a}:{g}")


def write_stream(pts, spacing):
    for t, a, g in pts:
        yield 1, ("XADD", S, f"{t}-0", "a", a, "g", g)


def write_hash(pts, spacing):
    w, last = 128 * spacing, None
    for t, a, g in pts:
        b = t // w
        if b != last:
            yield 0, ("ZADD", HI, b, b)
            last = b
        yield 1, ("HSET", f"{HP}{b}", t - b * w, f"{a}:{g}")


def write_packed(pts, spacing):
    for b, grp in groupby(pts, key=lambda p: p[0] // PACKED_W):
        recs = [REC.pack(t - b * PACKED_W, a, g) for t, a, g in grp]
        yield 0, ("ZADD", PI, b, b)
        yield len(recs), ("SET", f"{PP}{b}", b"".join(recs))


def write_append(pts, spacing):
    last = None
    for t, a, g in pts:
        b = t // PACKED_W
        if b != last:
            yield 0, ("ZADD", PI, b, b)
            last = b
        yield 1, ("APPEND", f"{PP}{b}", REC.pack(t - b * PACKED_W, a, g))


def run_writes(r, ops) -> None:
    pipe, pending = r.pipeline(transaction=False), 0
    for n, args in ops:
        pipe.execute_command(*args)
        pending += n
        if pending >= BATCH:
            pipe.execute()
            pending = 0
    pipe.execute()


def read_zset(r, t0, t1, spacing):
    return [tuple(map(int, m.split(b":"))) for m in r.zrangebyscore(Z, t0, t1)]


def read_stream(r, t0, t1, spacing):
    return [(int(i[:-2]), int(f[b"a"]), int(f[b"g"])) for i, f in r.xrange(S, f"{t0}-0", f"{t1}-0")]


def read_hash(r, t0, t1, spacing):
    w = 128 * spacing
    bs = [int(b) for b in r.zrangebyscore(HI, t0 // w, t1 // w)]
    pipe = r.pipeline(transaction=False)
    for b in bs:
        pipe.hgetall(f"{HP}{b}")
    out = []
    for b, h in zip(bs, pipe.execute(), strict=True):
        rows = sorted((b * w + int(k), *map(int, v.split(b":"))) for k, v in h.items())
        out.extend(p for p in rows if t0 <= p[0] <= t1)
    return out


def decode_packed(bs, vals, t0, t1):
    out = []
    for b, v in zip(bs, vals, strict=True):
        base = int(b) * PACKED_W
        out.extend((base + o, a, g) for o, a, g in REC.iter_unpack(v) if t0 <= base + o <= t1)
    return out


def read_packed(r, t0, t1, spacing):
    bs = r.zrangebyscore(PI, t0 // PACKED_W, t1 // PACKED_W)
    return decode_packed(bs, r.mget([PP + b.decode() for b in bs]) if bs else [], t0, t1)


def read_packed_lua(r, t0, t1, spacing):
    bs, vals = r.eval(LUA_READ, 1, PI, t0 // PACKED_W, t1 // PACKED_W, PP)
    return decode_packed(bs, vals, t0, t1)


def encodings(r, keys, limit=20_000) -> str:
    sample = keys if len(keys) <= limit else random.Random(1).sample(keys, limit)
    pipe = r.pipeline(transaction=False)
    for k in sample:
        pipe.object("encoding", k)
    c = Counter(e.decode() if isinstance(e, bytes) else e for e in pipe.execute())
    enc = ", ".join(f"{e} x{n}" for e, n in c.most_common())
    return enc + (f" (a sample of the {len(keys)})" if len(sample) < len(keys) else "")


def notes(r, layout: str, npts: int) -> str:
    if layout == "zset":
        return f"zset {r.object('encoding', Z).decode()}, {r.zcard(Z)} members"
    if layout == "stream":
        x = r.xinfo_stream(S)
        return f"stream, {x['length']} entries in {x['radix-tree-keys']} listpack nodes"
    idx, prefix = (HI, HP) if layout == "hash-buckets" else (PI, PP)
    keys = [prefix + b.decode() for b in r.zrange(idx, 0, -1)]
    idx_enc, idx_b = r.object("encoding", idx).decode(), r.memory_usage(idx, samples=0) / npts
    note = f"{len(keys)} keys: {encodings(r, keys)}; index {idx_enc}, {idx_b:.2f} B/point"
    if layout != "hash-buckets":
        sample = random.Random(2).sample(keys, min(200, len(keys)))
        pipe = r.pipeline(transaction=False)
        for k in sample:
            pipe.strlen(k).memory_usage(k, samples=0)
        res = pipe.execute()
        ln, mu = statistics.fmean(res[0::2]), statistics.fmean(res[1::2])
        note += f"; avg STRLEN {ln:.0f} B, MEMORY USAGE {mu:.0f} B/key"
    return note


LAYOUTS = [
    ("zset", write_zset, [("", read_zset)]),
    ("stream", write_stream, [("", read_stream)]),
    ("hash-buckets", write_hash, [("", read_hash)]),
    ("packed-buckets", write_packed, [(", ZRANGEBYSCORE+MGET", read_packed), (", Lua", read_packed_lua)]),
    ("packed-buckets APPEND", write_append, [("", read_packed)]),
]


def bench(url: str, n: int, spacing: int, append_n: int) -> list[str]:
    rows = []
    for name, write, readers in LAYOUTS:
        npts = append_n if "APPEND" in name else n
        r = redis.Redis.from_url(url)
        r.flushdb()
        before = r.info("memory")["used_memory"]
        writer = redis.Redis.from_url(url)
        start = time.perf_counter()
        run_writes(writer, write(points(npts, spacing), spacing))
        wps = npts / (time.perf_counter() - start)
        writer.close()
        time.sleep(0.2)  # let the server notice the writer's disconnect
        bpp = (r.info("memory")["used_memory"] - before) / npts
        note = notes(r, name, npts)
        gc.collect()
        gc.freeze()
        for j, (label, read) in enumerate(readers):
            rng, lat = random.Random(3), []
            for k in range(WARMUP + READS):
                first = rng.randrange(npts - SPAN + 1)
                t0, t1 = point(first, spacing)[0], point(first + SPAN - 1, spacing)[0]
                t = time.perf_counter()
                got = read(r, t0, t1, spacing)
                dt = (time.perf_counter() - t) * 1000
                if got != [point(i, spacing) for i in range(first, first + SPAN)]:
                    sys.exit(f"{name}{label}: wrong read for [{t0}, {t1}]")
                if k >= WARMUP:
                    lat.append(dt)
            p99 = statistics.quantiles(lat, n=100, method="inclusive")[98]
            npts_note = f" ({npts:,} points)" if npts != n else ""
            mem, w = (f"{bpp:.1f}", f"{wps:,.0f}") if j == 0 else ("same", "same")
            if j:
                note = "same data as above, read by one EVAL doing ZRANGEBYSCORE + MGET"
            p50 = statistics.median(lat)
            rows.append(f"| {name}{label}{npts_note} | {mem} | {w} | {p50:.2f} | {p99:.2f} | {note} |")
        r.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--spacing", type=int, default=60)
    ap.add_argument("--append-points", type=int, help="points for the APPEND variant (default: --points)")
    args = ap.parse_args()
    if (urlparse(args.redis_url).port or 6379) == 6379:
        sys.exit("refusing to run on port 6379: this script FLUSHDBs the database")
    append_n = args.append_points or args.points
    if min(args.points, append_n) < SPAN:
        sys.exit(f"--points and --append-points must be at least {SPAN}")
    info = redis.Redis.from_url(args.redis_url).info("server")
    start = time.perf_counter()
    rows = bench(args.redis_url, args.points, args.spacing, append_n)
    print(  # noqa: T201
        f"### {args.points:,} points, spacing {args.spacing} s (redis {info['redis_version']}, "
        f"{time.perf_counter() - start:.0f} s run)\n\n"
        "| layout | bytes/point | write points/s | range read p50 ms | p99 ms | notes (encoding seen) |\n"
        "|---|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
