"""The dashboard: GET / serves dashboard/index.html, and /static/ the page's script, styles and uPlot.

The page is static; it reads the public API like any client. Its files ship in the package and
nothing is built at start-up.
"""

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = "/static"


def routes() -> list[BaseRoute]:
    page = files("sprockets_cache.http").joinpath("dashboard/index.html").read_bytes()

    async def dashboard(request: Request) -> Response:
        # no-cache: a browser revalidates, so a new release's page is seen at once.
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    assets = StaticFiles(packages=[("sprockets_cache.http", "dashboard")])
    return [Route("/", dashboard), Mount(STATIC, assets, name="static")]
