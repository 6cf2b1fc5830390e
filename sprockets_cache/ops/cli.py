"""`python -m sprockets_cache serve | seed | run | migrate | export | keys`: the service's entry points.

Options fall back to environment variables (HOST, PORT, WORKERS; Redis settings
as in settings.py), and every command is safe to rerun.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import redis.asyncio as redis
import uvicorn

from sprockets_cache.http.observability import MULTIPROCESS_DIR, configure_logging
from sprockets_cache.ops import apikeys, export, migration, seed
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings, SettingsError
from sprockets_cache.store import schema
from sprockets_cache.store.connections import connect_with, redacted
from sprockets_cache.store.store import Store

log = logging.getLogger("sprockets_cache")

APP = "sprockets_cache.http.app:app"
SEED_FILES = (Path("seeds/seed_factory_data.json"), Path("seeds/seed_sprocket_types.json"))
# Where `run` keeps the embedded Redis's AOF, relative to the working directory.
DATA_DIR = Path("data")


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO").upper())
    args = _parser().parse_args(argv)
    try:
        code: int = args.command(args)
    except SettingsError as error:
        _to_stderr(str(error))
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sprockets_cache", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the API (Redis from REDIS_URL)")
    _add_address(serve)
    serve.set_defaults(command=_serve)

    load = commands.add_parser("seed", help="load JSON seed files into Redis, each file once")
    load.add_argument("files", nargs="+", type=Path, metavar="FILE")
    load.add_argument("--progress", action="store_true", help="report points written on stderr")
    load.set_defaults(command=_seed)

    run = commands.add_parser(
        "run", help="serve with an embedded Redis (AOF under ./data) when REDIS_URL is unset, seeded if empty"
    )
    _add_address(run)
    run.set_defaults(command=_run)

    migrate = commands.add_parser(
        "migrate", help="convert a store of an earlier version (points in packed strings) to sorted sets"
    )
    migrate.set_defaults(command=_migrate)

    backup = commands.add_parser(
        "export", help="write every factory and sprocket, with their ids, as one seed file (a backup)"
    )
    backup.add_argument("--out", type=Path, metavar="FILE", help="write here (replaced when complete); else stdout")
    backup.set_defaults(command=_export)

    apikeys.add_commands(commands)
    return parser


def _add_address(parser: argparse.ArgumentParser) -> None:
    # argparse converts string defaults with `type`, so a bad PORT in the environment is a usage error.
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="env HOST; 127.0.0.1")
    parser.add_argument("--port", type=_port, default=os.environ.get("PORT", "8000"), help="env PORT; 8000")
    parser.add_argument("--workers", type=_positive, default=os.environ.get("WORKERS", "1"), help="env WORKERS; 1")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text!r}")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    workers = args.workers
    settings = Settings.from_env()
    if not settings.api_keys:
        log.warning(
            "SPROCKETS_API_KEYS is not set: ANYONE CAN WRITE unless keys are held in Redis (keys add). "
            "Set one or the other before exposing this server."
        )
    # log_config=None keeps our JSON logging; the app logs each request itself, so uvicorn's
    # access log is off; no Server header to tell attackers the version.
    with _shared_metrics(workers):
        uvicorn.run(
            APP,
            host=args.host,
            port=args.port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=settings.limit_concurrency,
            timeout_keep_alive=5,
        )
    return 0


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several workers, each keeps its metrics in files of one directory, and /metrics adds up
    every worker's (prometheus_client's multiprocess mode): a scrape through the shared port sees all
    of them. A directory the operator names in PROMETHEUS_MULTIPROC_DIR is used as it is."""
    if workers == 1 or MULTIPROCESS_DIR in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="sprockets-metrics-") as path:
        os.environ[MULTIPROCESS_DIR] = path  # the workers inherit it and count into files there
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def _seed(args: argparse.Namespace) -> int:
    progress = _to_stderr if args.progress else None
    return _load_seeds(Settings.from_env(), args.files, progress, _to_stdout, only_if_empty=False)


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


def _to_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")


def _load_seeds(
    settings: Settings,
    paths: Sequence[Path],
    progress: seed.Progress | None,
    report: seed.Progress,
    only_if_empty: bool,
) -> int:
    """Load the files and report what happened; the exit code: 2 for a broken file, 1 when Redis fails."""
    try:
        lines = asyncio.run(_load(settings, paths, progress, only_if_empty))
    except (seed.SeedError, schema.IncompatibleStore) as error:
        _to_stderr(str(error))
        return 2
    except redis.RedisError as error:
        return _redis_failed(settings, error)
    for line in lines:
        report(line)
    return 0


async def _load(
    settings: Settings, paths: Sequence[Path], progress: seed.Progress | None, only_if_empty: bool
) -> list[str]:
    store = _store(settings)
    try:
        # Fail fast on an unreachable Redis, before reading big files.
        await store.ping()
        await schema.check(store)
        if only_if_empty and not await store.is_empty():
            # Data is there already; only finish a seed load that a crash cut short.
            paths = await seed.unfinished(store, paths)
            if not paths:
                return ["the store holds data already: not seeding"]
        return await seed.load(store, paths, progress)
    finally:
        await store.close()


def _store(settings: Settings) -> Store:
    """A store on the Redis the settings name (one, a cluster, or the master the Sentinels name)."""
    return Store(connect_with(settings), retention_s=settings.points_retention_s, downsample_s=settings.downsample_s)


def _migrate(args: argparse.Namespace) -> int:
    return _migrate_store(Settings.from_env(), _to_stderr, _to_stdout)


def _migrate_store(settings: Settings, progress: seed.Progress, report: seed.Progress) -> int:
    """Convert the store to this version's format; the exit code: 2 for a newer format, 1 when Redis fails."""

    async def convert() -> str:
        store = _store(settings)
        try:
            return await migration.migrate(store, progress)
        finally:
            await store.close()

    try:
        report(asyncio.run(convert()))
    except schema.IncompatibleStore as error:
        _to_stderr(str(error))
        return 2
    except redis.RedisError as error:
        return _redis_failed(settings, error)
    return 0


def _export(args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    async def write(out: BinaryIO) -> str:
        store = _store(settings)
        try:
            await schema.check(store)
            return await export.write(store, out)
        finally:
            await store.close()

    try:
        if args.out is None:
            what = asyncio.run(write(sys.stdout.buffer))
        else:
            # Into a file beside the target, renamed when complete: a failed export leaves no half file.
            partial = args.out.with_name(f".{args.out.name}.partial")
            try:
                with partial.open("wb") as out:
                    what = asyncio.run(write(out))
                partial.replace(args.out)
            finally:
                partial.unlink(missing_ok=True)
    except schema.IncompatibleStore as error:
        _to_stderr(str(error))
        return 2
    except redis.RedisError as error:
        return _redis_failed(settings, error)
    _to_stderr(f"exported {what}" + (f" to {args.out}" if args.out else ""))
    return 0


def _redis_failed(settings: Settings, error: redis.RedisError) -> int:
    """Say what went wrong with Redis, in one line; the exit code."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        _to_stderr(f"cannot reach Redis at {redacted(settings.redis_url)}: {error}")
    else:
        _to_stderr(f"Redis at {redacted(settings.redis_url)} failed: {error}")
    return 1


def _run(args: argparse.Namespace) -> int:
    """Embedded Redis if REDIS_URL is unset, seeds if the store is empty, then serve until Ctrl-C or SIGTERM."""
    # uvicorn hands SIGTERM back to the handler it found once it has shut down: make that
    # handler unwind through `finally`, so the embedded Redis is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    embedded = None
    try:
        if not os.environ.get("REDIS_URL"):
            embedded = EmbeddedRedis(DATA_DIR)
            embedded.start()
            # The app reads its settings from the environment when uvicorn imports it.
            os.environ["REDIS_URL"] = embedded.url
            # So `make seed` in another terminal finds this Redis.
            (DATA_DIR / "redis.url").write_text(embedded.url + "\n")
            log.info("embedded Redis at %s, AOF under %s", embedded.url, embedded.data_dir)
        # A ./data of an earlier version is converted before anything reads it.
        code = _migrate_store(Settings.from_env(), log.info, log.info) or _seed_for_run()
        if code:
            return code
        return _serve(args)
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    finally:
        if embedded is not None:
            embedded.stop()
            (DATA_DIR / "redis.url").unlink(missing_ok=True)


def _seed_for_run() -> int:
    paths = [path for path in SEED_FILES if path.is_file()]
    for path in sorted(set(SEED_FILES) - set(paths)):
        log.warning("no seed file at %s; not loading it", path.resolve())
    return _load_seeds(Settings.from_env(), paths, None, log.info, only_if_empty=True) if paths else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
