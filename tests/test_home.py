"""GET / and /static/: the dashboard's page and files, from the package, under a strict policy."""

import re
from importlib.resources import files

import httpx
import pytest

ASSETS = ["app.js", "app.css", "uplot/uPlot.iife.min.js", "uplot/uPlot.min.css", "uplot/LICENSE"]


async def test_the_page_is_html_that_runs_only_scripts_from_this_origin(api: httpx.AsyncClient) -> None:
    response = await api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self'" in policy
    page = response.text
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="/static/uplot/uPlot.iife.min.js" defer>',
        '<script src="/static/app.js" defer>',
    ]
    # Nothing that would need 'unsafe-inline': no style attributes, no inline event handlers.
    assert re.search(r"<[^>]+\s(style|on\w+)=", page) is None


@pytest.mark.parametrize("path", ASSETS)
async def test_the_page_files_are_served_from_the_package(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(f"/static/{path}")
    assert response.status_code == 200
    assert response.content == files("sprockets_cache.http").joinpath(f"dashboard/{path}").read_bytes()


async def test_a_file_outside_the_dashboard_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/static/../app.py")).status_code == 404
    assert (await api.get("/static/nothing.js")).status_code == 404


def test_the_vendored_chart_library_loads_nothing_from_elsewhere() -> None:
    script = files("sprockets_cache.http").joinpath("dashboard/uplot/uPlot.iife.min.js").read_text()
    assert "fetch(" not in script
    assert "XMLHttpRequest" not in script
