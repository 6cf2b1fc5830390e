import pytest

from sprockets_cache import access
from sprockets_cache.http.app import create_app
from sprockets_cache.settings import Settings, SettingsError

A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("entry", "scopes"),
    [
        (A, {"admin"}),
        (f"{A}=sprockets", {"sprockets"}),
        (f"{A}=factory:7+read", {"factory:7", "read"}),
        (f" {A} = factories + sprockets ", {"factories", "sprockets"}),
    ],
    ids=["digest alone", "one scope", "two scopes", "spaces"],
)
def test_an_entry_is_a_digest_with_its_scopes(entry: str, scopes: set[str]) -> None:
    assert access.parse_entry(entry) == (A, frozenset(scopes))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"{A},hunter2", "SPROCKETS_API_KEYS: entry 2: not the SHA-256 hex digest of a key (64 lower-case hex digits)"),
        (f"{A}=raed", "SPROCKETS_API_KEYS: entry 1: unknown scope 'raed' (known: " + access.SCOPES_HELP + ")"),
        (f"{A},,{B}=", "SPROCKETS_API_KEYS: entry 3: no scope after '='"),
        (
            f"{A}=read+hunter2-is-a-key",
            "SPROCKETS_API_KEYS: entry 1: unknown scope of 16 characters (known: " + access.SCOPES_HELP + ")",
        ),
        (
            f"{A}=factory:0",
            "SPROCKETS_API_KEYS: entry 1: scope 'factory:0' needs a factory id from 1 up, as in factory:7",
        ),
        (f"{A.upper()}", "SPROCKETS_API_KEYS: entry 1: not the SHA-256 hex digest of a key (64 lower-case hex digits)"),
    ],
    ids=["a raw key", "unknown scope", "no scope after a blank entry", "a key as a scope", "factory 0", "upper case"],
)
def test_a_bad_entry_is_one_line_naming_its_position_and_never_the_entry(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("SPROCKETS_API_KEYS", value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    assert str(raised.value) == message
    assert "hunter2" not in str(raised.value)


def test_settings_read_entries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPROCKETS_API_KEYS", f"{A}, {B}=factory:1+read,")
    assert Settings.from_env().api_keys == {A: {"admin"}, B: {"factory:1", "read"}}


def test_an_entry_made_from_scopes_reads_back_as_them() -> None:
    for scopes in ({"admin"}, {"factory:3", "sprockets"}):
        assert access.parse_entry(access.entry(A, scopes)) == (A, frozenset(scopes))


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("POST", "/api/v1/sprockets", ("sprockets",)),
        ("DELETE", "/api/v1/sprockets/12", ("sprockets",)),
        ("POST", "/api/v1/factories", ("factories",)),
        ("POST", "/api/v1/factories/007/chart_data", ("factory:7", "factories")),
        ("GET", "/api/v1/factories/3/summary", ("read", "factory:3")),
        ("GET", "/api/v1/factories", ("read",)),
        ("GET", "/api/v1/sprockets/1", ("read",)),
        ("POST", "/api/v1/nowhere", ()),
    ],
    ids=str,
)
def test_each_request_needs_the_scopes_of_what_it_touches(method: str, path: str, needed: tuple[str, ...]) -> None:
    assert access.needed_scopes(method, access.target(path), private_reads=True) == needed


def test_public_reads_need_no_scope() -> None:
    assert access.needed_scopes("GET", access.target("/api/v1/sprockets"), private_reads=False) == ()


def test_the_routes_known_here_are_the_apps() -> None:
    routed = {route.path for route in create_app(Settings()).routes if route.path.startswith("/api/")}
    assert set(access.routes()) == routed
