"""Settings that cannot work together, or cannot be read, stop the service at start-up with a clear error."""

import pytest
from pydantic import ValidationError

from sprockets_cache.settings import Settings


def test_sentinels_are_read_from_a_comma_separated_list_of_host_and_port() -> None:
    settings = Settings(redis_sentinels="10.0.0.1:26379, sentinel-b:26380")  # type: ignore[arg-type]
    assert settings.redis_sentinels == ("10.0.0.1:26379", "sentinel-b:26380")
    assert settings.redis_sentinel_master == "sprockets"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_sentinels": "sentinel-a"}, "host:port"),
        ({"redis_sentinels": "sentinel-a:port"}, "host:port"),
        ({"redis_sentinels": "a:1", "redis_cluster": True}, "not both"),
        ({"redis_wait_replicas": -1}, "greater than or equal to 0"),
    ],
    ids=["no-port", "bad-port", "sentinels-and-cluster", "negative-wait"],
)
def test_settings_that_cannot_work_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_a_write_waits_for_replicas_a_third_of_the_time_a_request_has_for_redis() -> None:
    assert Settings(redis_timeout_s=1.5).wait_ms == 500
    assert Settings(redis_timeout_s=0.001).wait_ms == 1  # WAIT 0 would wait for ever
