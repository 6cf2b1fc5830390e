"""/openapi.json is valid OpenAPI 3.1, made from the models that validate, and covers every route;
/docs is Swagger UI served from this app alone."""

import asyncio
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib.resources import files
from typing import Any

import fakeredis
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sprockets_cache.http import docs, events, openapi, openapi_components
from sprockets_cache.http.app import create_app
from sprockets_cache.models import SprocketIn
from sprockets_cache.settings import Settings
from tests.conftest import lifespan

METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), fakeredis.FakeAsyncRedis())
    async with lifespan(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    # pyproject.toml leaves it out on macOS on Intel, where one of its dependencies has no wheel.
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator is not installed here")
    assert document["openapi"].startswith("3.1.")
    validator.validate(document)


async def test_every_route_is_documented_and_nothing_else() -> None:
    app = create_app(Settings(), fakeredis.FakeAsyncRedis())
    routed = set()
    for route in app.routes:
        if isinstance(route, Mount):
            # Static files (Swagger UI's, the dashboard's) are not operations.
            assert isinstance(route.app, StaticFiles), route.path
            continue
        assert isinstance(route, Route)
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
        # HEAD comes with every GET (RFC 9110), so it is not listed on its own.
        routed |= {(path, method.lower()) for method in route.methods or () if method != "HEAD"}
    paths = openapi.document()["paths"]
    documented = {(path, method) for path, item in paths.items() for method in item if method in METHODS}
    assert routed == documented


def test_the_request_schemas_are_the_models_own() -> None:
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["SprocketIn"] == SprocketIn.model_json_schema()
    for model in openapi_components.REQUEST_MODELS:
        schema = model.model_json_schema(ref_template=openapi_components.REF)
        schema.pop("$defs", None)
        assert schemas[model.__name__] == schema


def test_every_operation_has_an_id_and_every_reference_resolves() -> None:
    document = openapi.document()
    operations = [op for item in document["paths"].values() for method, op in item.items() if method in METHODS]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    references = re.findall(r'"\$ref":"#/components/(\w+)/([^"]+)"', openapi.document_bytes().decode())
    for kind, name in references:
        assert name in document["components"][kind], (kind, name)


def test_last_event_id_is_documented_as_the_events_stream_reads_it() -> None:
    assert openapi_components.EVENT_ID == f"^({events._EVENT_ID.pattern})?$"


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/v1/sprockets", "limit"),
        ("/api/v1/factories", "limit"),
        ("/api/v1/factories", "from"),
        ("/api/v1/factories", "to"),
        ("/api/v1/factories", "bucket"),
    ],
)
async def test_query_bounds_in_the_document_are_the_ones_enforced(
    client: httpx.AsyncClient, url: str, parameter: str
) -> None:
    schema = openapi_components.PARAMETERS[parameter]["schema"]
    low, high = schema["minimum"], schema["maximum"]
    for value in (low, high):
        assert (await client.get(url, params={parameter: value})).status_code == 200, value
    for value in (low - 1, high + 1):
        assert (await client.get(url, params={parameter: value})).status_code == 422, value


def _header(name: str) -> st.SearchStrategy[bytes]:
    """Values of a header parameter the document allows, as the bytes a client sends."""
    pattern = openapi_components.PARAMETERS[name]["schema"]["pattern"]
    return st.from_regex(pattern, fullmatch=True).map(lambda value: value.encode("latin-1"))


async def _answers(if_none_match: bytes, if_match: bytes, idempotency_key: bytes) -> list[int]:
    app = create_app(Settings(), fakeredis.FakeAsyncRedis())
    async with lifespan(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sprocket = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
            created = await http.post("/api/v1/sprockets", json=sprocket, headers={"Idempotency-Key": idempotency_key})
            read = await http.get("/api/v1/sprockets/1", headers={"If-None-Match": if_none_match})
            replaced = await http.put("/api/v1/sprockets/1", json=sprocket, headers={"If-Match": if_match})
            return [created.status_code, read.status_code, replaced.status_code]


@settings(max_examples=60, deadline=None)
@given(_header("If-None-Match"), _header("If-Match"), _header("Idempotency-Key"))
def test_every_header_value_the_document_allows_is_taken(
    if_none_match: bytes, if_match: bytes, idempotency_key: bytes
) -> None:
    created, read, replaced = asyncio.run(_answers(if_none_match, if_match, idempotency_key))
    assert created == 201
    assert read in (200, 304)
    assert replaced in (200, 412)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value is not None]
        self.inline += [name for name, _ in attrs if name.startswith("on") or name == "style"]
        if tag == "script":
            self.scripts.append(found)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


async def test_docs_load_only_this_apps_files_and_run_no_inline_script(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    assert page.urls and all(url.startswith(docs.STATIC + "/") for url in page.urls)
    assert page.scripts and all(script.get("src") for script in page.scripts)
    assert page.inline == []
    for url in page.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    script = (await client.get(f"{docs.STATIC}/docs.js")).text
    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script
    assert not re.search(r"https?://", response.text + script)


async def test_docs_serve_only_the_files_the_page_needs(client: httpx.AsyncClient) -> None:
    # The bundle's own demo page points at a remote petstore; it is not served.
    for name in ("index.html", "swagger-initializer.js", "../__init__.py"):
        assert (await client.get(f"{docs.STATIC}/{name}")).status_code == 404, name


def test_docs_js_ships_in_the_package() -> None:
    assert files("sprockets_cache.http").joinpath("static/docs.js").is_file()


def test_with_api_keys_the_document_says_writes_need_one_and_reads_do_not() -> None:
    document = openapi.document(api_keys=True)
    sprocket = document["paths"]["/api/v1/sprockets/{sprocket_id}"]
    assert sprocket["put"]["security"] == [{"bearer": []}]
    assert sprocket["get"]["security"] == [{}, {"bearer": []}]
    private = openapi.document(api_keys=True, private_reads=True)["paths"]["/api/v1/sprockets/{sprocket_id}"]
    assert private["get"]["security"] == [{"bearer": []}]
    assert openapi.document()["paths"]["/api/v1/sprockets"]["post"]["security"] == [{}, {"bearer": []}]
