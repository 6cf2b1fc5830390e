"""Bulk-load factories and sprockets from JSON files, once per file content.

A file holds `{"factories": [...]}` or `{"sprockets": [...]}`: the seed files, or
what GET /api/v1/factories or /sprockets returned. A factory item is
`{"factory": F}` or F itself. `id`, `created_at`, `updated_at` and `next_cursor`
are ignored (ids are assigned fresh); the rest is validated with the API's models.

Like a migrations table, the hash `keys.SEEDS` holds one JSON record per file
content (SHA-256 of its bytes): ids are reserved and the record saved as
"loading" before anything is written, and it turns "done" after. A rerun of a
"done" file writes nothing; one of a "loading" file writes into the same ids
again, which converges because every write is an upsert. (A crash between
reserving the ids and saving the record leaves a gap in the ids, never a duplicate.)
"""

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from sprockets_cache.clock import now
from sprockets_cache.models import FactoryIn, SprocketIn, validated
from sprockets_cache.points import RECORD, count, pack
from sprockets_cache.store import Store

Progress = Callable[[str], None]

# Points per factory write: one Lua call of about 500 KB, a few milliseconds of Redis time.
CHUNK_POINTS = 50_000
SPROCKET_BATCH = 1_000
IGNORED_FIELDS = frozenset({"id", "created_at", "updated_at"})
TOP_LEVEL_FIELDS = frozenset({"factories", "sprockets", "next_cursor"})
# A broken file reports at most this many problems.
MAX_ERRORS = 10
PROGRESS_INTERVAL_S = 1.0


class SeedError(Exception):
    """A seed file that cannot be read or breaks the rules; nothing from it was written."""


@dataclass(frozen=True, slots=True)
class _Factory:
    name: str | None
    buckets: dict[int, bytes]


@dataclass(slots=True)
class _Seed:
    path: Path
    digest: str
    kind: str
    factories: list[_Factory] = field(default_factory=list)
    sprockets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.factories) if self.kind == "factories" else len(self.sprockets)

    @property
    def points(self) -> int:
        return sum(count(factory.buckets) for factory in self.factories)


async def load(store: Store, paths: Sequence[Path], progress: Progress | None = None) -> list[str]:
    """Load each file once; every file is read and validated before anything is written.

    Returns one line per file saying what happened. Raises SeedError for a broken file.
    """
    seeds = [_read(Path(path), progress) for path in paths]
    return [await _load_one(store, seed, progress) for seed in seeds]


async def unfinished(store: Store, paths: Sequence[Path]) -> list[Path]:
    """The files whose load was started and not finished, say by a crash."""
    found = []
    for path in map(Path, paths):
        record = await store.get_seed(hashlib.sha256(_bytes(path)).hexdigest())
        if record is not None and orjson.loads(record)["state"] == "loading":
            found.append(path)
    return found


def _read(path: Path, progress: Progress | None = None) -> _Seed:
    """Parse, validate and pack one file, without touching Redis."""
    started = time.perf_counter()
    data, document = _parse(path)
    parsed = time.perf_counter()
    kind, items = _items(path, document)
    seed = _Seed(path, hashlib.sha256(data).hexdigest(), kind)
    models = _validate(path, kind, items)
    validated = time.perf_counter()
    for model in models:
        if isinstance(model, FactoryIn):
            seed.factories.append(_Factory(model.name, _packed(model)))
        else:
            seed.sprockets.append(model.model_dump())
    if progress:
        points = f", {seed.points} points" if seed.factories else ""
        packed = time.perf_counter()
        progress(
            f"{path}: read {_counted(seed.count, kind)}{points} in {packed - started:.2f} s (parse "
            f"{parsed - started:.2f} s, validate {validated - parsed:.2f} s, pack {packed - validated:.2f} s)"
        )
    return seed


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SeedError(f"{path}: cannot read it: {error.strerror or error}") from error


def _parse(path: Path) -> tuple[bytes, Any]:
    data = _bytes(path)
    try:
        return data, orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise SeedError(f"{path}: line {error.lineno} column {error.colno}: not valid JSON: {error.msg}") from error


def _items(path: Path, document: Any) -> tuple[str, list[Any]]:
    """The kind of the file and its list of items."""
    kinds = [kind for kind in ("factories", "sprockets") if isinstance(document, dict) and kind in document]
    if len(kinds) != 1:
        raise SeedError(f'{path}: must be a JSON object holding one list, "factories" or "sprockets"')
    unknown = sorted(set(document) - TOP_LEVEL_FIELDS)
    if unknown:
        raise SeedError(f"{path}: {unknown[0]}: Extra inputs are not permitted")
    kind = kinds[0]
    if not isinstance(document[kind], list):
        raise SeedError(f"{path}: {kind}: Input should be a valid list")
    return kind, document[kind]


def _validate(path: Path, kind: str, items: list[Any]) -> list[BaseModel]:
    model: type[BaseModel] = FactoryIn if kind == "factories" else SprocketIn
    models: list[BaseModel] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        where, body = f"{kind}[{index}]", item
        if kind == "factories" and isinstance(item, dict) and "factory" in item:
            extra = (name for name in item if name != "factory" and name not in IGNORED_FIELDS)
            errors.extend(f"{where}.{name}: Extra inputs are not permitted" for name in extra)
            where, body = f"{where}.factory", item["factory"]
        if isinstance(body, dict):
            body = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
        try:
            models.append(validated(model, body))
        except ValidationError as error:
            errors.extend(f"{where}{_location(e['loc'])}: {e['msg']}" for e in error.errors(include_url=False))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise SeedError("\n".join(f"{path}: {error}" for error in errors[:MAX_ERRORS]))
    return models


def _location(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as `.chart_data.time[5]`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _packed(factory: FactoryIn) -> dict[int, bytes]:
    chart_data = factory.chart_data
    if chart_data is None:
        return {}
    return pack(chart_data.time, chart_data.sprocket_production_actual, chart_data.sprocket_production_goal)


async def _load_one(store: Store, seed: _Seed, progress: Progress | None) -> str:
    held = await store.get_seed(seed.digest)
    resumed = held is not None
    if held is None:
        reserve = store.new_factory_ids if seed.kind == "factories" else store.new_sprocket_ids
        first_id = await reserve(seed.count)
        held = await store.claim_seed(seed.digest, _record(seed, first_id, "loading"))
    record = orjson.loads(held)
    first_id = record["first_id"]
    what = _counted(seed.count, seed.kind) + _ids(first_id, seed.count, seed.points if seed.factories else None)
    if record["state"] == "done":
        return f"{seed.path}: already loaded {what} at {record['at']}"
    if seed.kind == "factories":
        await _write_factories(store, seed, first_id, _Meter(seed.path, seed.points, progress))
    else:
        await _write_sprockets(store, seed, first_id)
    await store.save_seed(seed.digest, _record(seed, first_id, "done"))
    return f"{seed.path}: {'finished an interrupted load of' if resumed else 'loaded'} {what}"


def _record(seed: _Seed, first_id: int, state: str) -> bytes:
    record = {"file": str(seed.path), "kind": seed.kind, "first_id": first_id, "count": seed.count}
    return orjson.dumps({**record, "state": state, "at": now()})


def _counted(number: int, kind: str) -> str:
    singular = {"factories": "factory", "sprockets": "sprocket"}[kind]
    return f"{number} {singular if number == 1 else kind}"


def _ids(first_id: int, number: int, points: int | None) -> str:
    parts = [] if number == 0 else [f"id {first_id}" if number == 1 else f"ids {first_id}-{first_id + number - 1}"]
    if points is not None:
        parts.append(f"{points} points")
    return f" ({', '.join(parts)})" if parts else ""


class _Meter:
    """Reports points written every 10% or PROGRESS_INTERVAL_S, whichever comes first."""

    def __init__(self, path: Path, total: int, progress: Progress | None) -> None:
        self.path, self.total, self.progress = path, total, progress
        self.done = 0
        self.reported_at = time.monotonic()
        self.next_report = total / 10

    def add(self, points: int) -> None:
        self.done += points
        if self.progress is None or points == 0:
            return
        finished = self.done >= self.total
        if finished or self.done >= self.next_report or time.monotonic() - self.reported_at >= PROGRESS_INTERVAL_S:
            self.progress(f"{self.path}: {self.done}/{self.total} points written")
            self.reported_at = time.monotonic()
            self.next_report = self.done + self.total / 10


async def _write_factories(store: Store, seed: _Seed, first_id: int, meter: _Meter) -> None:
    for offset, factory in enumerate(seed.factories):
        factory_id = first_id + offset
        chunks = list(_chunks(factory.buckets)) or [{}]
        # Creating upserts the factory's hash, so a resumed load writes over what it wrote before.
        await store.create_factory(factory_id, factory.name or f"Factory {factory_id}", chunks[0])
        meter.add(count(chunks[0]))
        for chunk in chunks[1:]:
            await store.write_points(factory_id, chunk)
            meter.add(count(chunk))


def _chunks(buckets: Mapping[int, bytes]) -> Iterator[dict[int, bytes]]:
    """Whole buckets, in time order, about CHUNK_POINTS points at a time."""
    chunk: dict[int, bytes] = {}
    size = 0
    for number in sorted(buckets):
        chunk[number] = buckets[number]
        size += len(buckets[number])
        if size >= CHUNK_POINTS * RECORD.size:
            yield chunk
            chunk, size = {}, 0
    if chunk:
        yield chunk


async def _write_sprockets(store: Store, seed: _Seed, first_id: int) -> None:
    for start in range(0, len(seed.sprockets), SPROCKET_BATCH):
        await store.put_sprockets(first_id + start, seed.sprockets[start : start + SPROCKET_BATCH])
