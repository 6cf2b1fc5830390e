"""The API's documentation: the OpenAPI document at /openapi.json and Swagger UI at /docs, offline.

Swagger UI's files come from the swagger_ui_bundle package; the page runs no inline script, so a
strict Content-Security-Policy can be put in front of it.
"""

import os

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from sprockets_cache.http.web import JSON

STATIC = "/docs/static"
# What the page loads: Swagger UI's files and our docs.js, nothing else from either directory.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "docs.js"})

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sprockets-cache API</title>
<link rel="stylesheet" href="{STATIC}/swagger-ui.css">
<link rel="icon" type="image/png" href="{STATIC}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC}/swagger-ui-bundle.js"></script>
<script src="{STATIC}/docs.js"></script>
</body>
</html>
"""


class _Assets(StaticFiles):
    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path not in ASSETS:
            return "", None
        return super().lookup_path(path)


def routes(document: bytes) -> list[BaseRoute]:
    async def openapi(request: Request) -> Response:
        return Response(document, media_type=JSON)

    async def docs(request: Request) -> Response:
        return HTMLResponse(PAGE)

    assets = _Assets(directory=str(swagger_ui_path), packages=[("sprockets_cache.http", "static")])
    return [Route("/openapi.json", openapi), Route("/docs", docs), Mount(STATIC, assets)]
