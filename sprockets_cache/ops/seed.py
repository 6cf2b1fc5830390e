"""Bulk-load factories and sprockets from JSON files, once per file content.

A file holds `{"factories": [...]}`, `{"sprockets": [...]}` or both: the seed
files, what GET /api/v1/factories or /sprockets returned, or an export. A factory
item is `{"factory": F}` or F itself. Items without an `id` get fresh ids in file
order. When every item of a list has one (an export, a saved listing), the ids are
kept, and so are sprockets' `created_at` and `updated_at`: such a list loads only
where none of its ids is taken. `next_cursor` is ignored; the rest is validated
with the API's models.

Like a migrations table, the hash `keys.SEEDS` holds one JSON record per list
of a file content (SHA-256 of its bytes): ids are reserved and the record saved
as "loading" before anything is written, and it turns "done" after. A rerun of a
"done" file writes nothing; one of a "loading" file writes into the same ids
again, which converges because every write is an upsert. (A crash between
reserving the ids and saving the record leaves a gap in the ids, never a duplicate.)
"""

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from sprockets_cache.clock import now
from sprockets_cache.errors import BeforeRawWindow
from sprockets_cache.models import MAX_ID, FactoryIn, SprocketIn, validated
from sprockets_cache.store.points import Buckets, buckets, by_time, count
from sprockets_cache.store.store import Store

Progress = Callable[[str], None]

# Points per factory write: one Lua call of about 500 KB, a few milliseconds of Redis time.
CHUNK_POINTS = 50_000
SPROCKET_BATCH = 1_000
KEPT_FIELDS = ("id", "created_at", "updated_at")
# What a saved GET listing says of a factory's points, but a write does not take: points load as given.
READ_ONLY_FIELDS = ("resolution_s",)
KINDS = ("factories", "sprockets")
# created_at and updated_at as the API writes them (RFC 3339, UTC).
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TOP_LEVEL_FIELDS = frozenset({"factories", "sprockets", "next_cursor"})
# A broken file reports at most this many problems.
MAX_ERRORS = 10
PROGRESS_INTERVAL_S = 1.0


class SeedError(Exception):
    """A seed file that cannot be read or breaks the rules; nothing from it was written."""


@dataclass(frozen=True, slots=True)
class _Factory:
    name: str | None
    buckets: Buckets


@dataclass(slots=True)
class _Seed:
    """One list of a file."""

    path: Path
    digest: str  # names its record: the file's SHA-256, with the kind for a file of both lists
    kind: str
    ids: list[int] | None  # the file's, or None for fresh ones
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
    seeds = [seed for path in paths for seed in _read(Path(path), progress)]
    for seed in seeds:
        if seed.ids is not None and await store.get_seed(seed.digest) is None:
            taken = await store.taken_ids(seed.kind, seed.ids)
            if taken:
                raise SeedError(
                    f"{seed.path}: {seed.kind} {', '.join(map(str, taken[:5]))} exist already: a list that keeps "
                    "its ids (an export) loads only where they are free, such as an empty store"
                )
    return [await _load_one(store, seed, progress) for seed in seeds]


async def unfinished(store: Store, paths: Sequence[Path]) -> list[Path]:
    """The files whose load was started and not finished, say by a crash."""
    found = []
    for path in map(Path, paths):
        digest = hashlib.sha256(_bytes(path)).hexdigest()
        for name in (digest, *(f"{digest}:{kind}" for kind in KINDS)):
            record = await store.get_seed(name)
            if record is not None and orjson.loads(record)["state"] == "loading":
                found.append(path)
                break
    return found


def _read(path: Path, progress: Progress | None = None) -> list[_Seed]:
    """Parse and validate one file and group its points by bucket, without touching Redis."""
    started = time.perf_counter()
    data, document = _parse(path)
    parsed = time.perf_counter()
    lists = _items(path, document)
    digest = hashlib.sha256(data).hexdigest()
    seeds = []
    for kind, items in lists:
        models, ids = _validate(path, kind, items)
        seed = _Seed(path, digest if len(lists) == 1 else f"{digest}:{kind}", kind, ids)
        for model, item in zip(models, items, strict=True):
            if isinstance(model, FactoryIn):
                seed.factories.append(_Factory(model.name, _buckets(model)))
            else:
                kept = {name: item[name] for name in KEPT_FIELDS[1:] if ids is not None and name in item}
                seed.sprockets.append({**model.model_dump(), **kept})
        seeds.append(seed)
    if progress:
        grouped = time.perf_counter()
        what = ", ".join(_counted(seed.count, seed.kind) for seed in seeds)
        points = sum(seed.points for seed in seeds)
        progress(
            f"{path}: read {what}{f', {points} points' if points else ''} in {grouped - started:.2f} s (parse "
            f"{parsed - started:.2f} s, validate and group {grouped - parsed:.2f} s)"
        )
    return seeds


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


def _items(path: Path, document: Any) -> list[tuple[str, list[Any]]]:
    """The file's lists, by kind: factories first."""
    kinds = [kind for kind in KINDS if isinstance(document, dict) and kind in document]
    if not kinds:
        raise SeedError(f'{path}: must be a JSON object holding a list "factories", "sprockets" or both')
    unknown = sorted(set(document) - TOP_LEVEL_FIELDS)
    if unknown:
        raise SeedError(f"{path}: {unknown[0]}: Extra inputs are not permitted")
    for kind in kinds:
        if not isinstance(document[kind], list):
            raise SeedError(f"{path}: {kind}: Input should be a valid list")
    return [(kind, document[kind]) for kind in kinds]


def _validate(path: Path, kind: str, items: list[Any]) -> tuple[list[BaseModel], list[int] | None]:
    """The items' models, and their ids if every item has one (None if none has)."""
    model: type[BaseModel] = FactoryIn if kind == "factories" else SprocketIn
    models: list[BaseModel] = []
    ids: list[Any] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        where, body = f"{kind}[{index}]", item
        if kind == "factories" and isinstance(item, dict) and "factory" in item:
            extra = (name for name in item if name != "factory" and name not in KEPT_FIELDS)
            errors.extend(f"{where}.{name}: Extra inputs are not permitted" for name in extra)
            where, body = f"{where}.factory", item["factory"]
            if isinstance(body, dict) and "id" in item:
                body = {"id": item["id"], **body}
        if isinstance(body, dict):
            errors.extend(f"{where}{problem}" for problem in _kept_field_problems(body))
            ids.append(body.get("id"))
            body = {name: value for name, value in body.items() if name not in (*KEPT_FIELDS, *READ_ONLY_FIELDS)}
        try:
            models.append(validated(model, body))
        except ValidationError as error:
            errors.extend(f"{where}{_location(e['loc'])}: {e['msg']}" for e in error.errors(include_url=False))
        if len(errors) >= MAX_ERRORS:
            break
    given = [i for i in ids if i is not None]
    if given and len(given) < len(ids):
        errors.append(f"{kind}: every item has an id (they are kept) or none has (fresh ids); some have one")
    if len(set(given)) < len(given):
        errors.append(f"{kind}: an id appears twice")
    if errors:
        raise SeedError("\n".join(f"{path}: {error}" for error in errors[:MAX_ERRORS]))
    return models, (given or None) if items else None


def _kept_field_problems(body: dict[str, Any]) -> Iterator[str]:
    item_id, stamps = body.get("id"), (body.get(name) for name in KEPT_FIELDS[1:])
    if item_id is not None and (type(item_id) is not int or not 1 <= item_id <= MAX_ID):
        yield f".id: must be a whole number from 1 to {MAX_ID}"
    for name, stamp in zip(KEPT_FIELDS[1:], stamps, strict=True):
        if stamp is not None and not (isinstance(stamp, str) and _STAMP.fullmatch(stamp)):
            yield f".{name}: must be an RFC 3339 time in UTC, such as 2021-01-21T02:06:58.000Z"


def _location(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as `.chart_data.time[5]`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _buckets(factory: FactoryIn) -> Buckets:
    chart_data = factory.chart_data
    if chart_data is None:
        return {}
    return buckets(by_time(chart_data.time, chart_data.sprocket_production_actual, chart_data.sprocket_production_goal))


async def _load_one(store: Store, seed: _Seed, progress: Progress | None) -> str:
    held = await store.get_seed(seed.digest)
    resumed = held is not None
    if held is None:
        if seed.ids is None:
            reserve = store.new_factory_ids if seed.kind == "factories" else store.new_sprocket_ids
            first_id = await reserve(seed.count)
        else:
            await store.raise_next_id(seed.kind, max(seed.ids))
            first_id = min(seed.ids)
        held = await store.claim_seed(seed.digest, _record(seed, first_id, "loading"))
    record = orjson.loads(held)
    ids = seed.ids or list(range(record["first_id"], record["first_id"] + seed.count))
    what = _counted(seed.count, seed.kind) + _ids(ids, seed.points if seed.factories else None)
    if record["state"] == "done":
        return f"{seed.path}: already loaded {what} at {record['at']}"
    if seed.kind == "factories":
        await _write_factories(store, seed, ids, _Meter(seed.path, seed.points, progress))
    else:
        await _write_sprockets(store, seed, ids)
    await store.save_seed(seed.digest, _record(seed, record["first_id"], "done"))
    return f"{seed.path}: {'finished an interrupted load of' if resumed else 'loaded'} {what}"


def _record(seed: _Seed, first_id: int, state: str) -> bytes:
    record = {"file": str(seed.path), "kind": seed.kind, "first_id": first_id, "count": seed.count}
    return orjson.dumps({**record, "ids_kept": seed.ids is not None, "state": state, "at": now()})


def _counted(number: int, kind: str) -> str:
    singular = {"factories": "factory", "sprockets": "sprocket"}[kind]
    return f"{number} {singular if number == 1 else kind}"


def _ids(ids: Sequence[int], points: int | None) -> str:
    parts = [] if not ids else [f"id {ids[0]}" if len(ids) == 1 else f"ids {min(ids)}-{max(ids)}"]
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


async def _write_factories(store: Store, seed: _Seed, ids: Sequence[int], meter: _Meter) -> None:
    for factory_id, factory in zip(ids, seed.factories, strict=True):
        chunks = list(_chunks(factory.buckets)) or [{}]
        # Creating upserts the factory's hash, so a resumed load writes over what it wrote before.
        # Refused before the raw window (retention): a resumed load, whose first run wrote those points
        # and trimmed them since (chunks go in time order, so a load never refuses its own).
        with contextlib.suppress(BeforeRawWindow):
            await store.create_factory(factory_id, factory.name or f"Factory {factory_id}", chunks[0])
        meter.add(count(chunks[0]))
        for chunk in chunks[1:]:
            with contextlib.suppress(BeforeRawWindow):
                await store.write_points(factory_id, chunk)
            meter.add(count(chunk))


def _chunks(buckets: Buckets) -> Iterator[Buckets]:
    """Whole buckets, in time order, about CHUNK_POINTS points at a time."""
    chunk: Buckets = {}
    size = 0
    for number in sorted(buckets):
        chunk[number] = buckets[number]
        size += len(buckets[number].pairs) // 2
        if size >= CHUNK_POINTS:
            yield chunk
            chunk, size = {}, 0
    if chunk:
        yield chunk


async def _write_sprockets(store: Store, seed: _Seed, ids: Sequence[int]) -> None:
    for start in range(0, len(seed.sprockets), SPROCKET_BATCH):
        batch = slice(start, start + SPROCKET_BATCH)
        await store.put_sprockets(ids[batch], seed.sprockets[batch])
