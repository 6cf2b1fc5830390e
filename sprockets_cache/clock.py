"""Timestamps as the API writes them: ISO 8601 in UTC to the millisecond."""

import functools
import time


def utc_stamp(seconds: float) -> str:
    """`seconds` (unix time) as e.g. 2026-11-26T21:23:48.123Z."""
    whole = int(seconds)
    return f"{_utc_second(whole)}.{int((seconds - whole) * 1000):03d}Z"


def now() -> str:
    return utc_stamp(time.time())


@functools.lru_cache(maxsize=1)  # a request formats only the milliseconds while the second lasts
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
