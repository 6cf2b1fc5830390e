"""The dashboard at / in a real browser: Debian's headless Chromium, driven by Playwright's Python
package (its own browser builds are never installed), against the real app on uvicorn and the test
session's redis-server, seeded with the repo's seeds."""

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sprockets_cache.ops import seed
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.store.connections import connect
from sprockets_cache.store.store import Store

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (the dev extra)")

# As root on a closed network: no sandbox, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SEEDS = [Path("seeds/seed_factory_data.json"), Path("seeds/seed_sprocket_types.json")]
FACTORIES = 3
# Patient ceilings for a loaded CI machine running Chromium too: a live update comes within a second (README),
# and the cards the test checks are live, so without their events no update would come at all.
UPDATE_S = 20.0
# Polling, when a stream is down, runs every 5 s.
POLLED_UPDATE_S = 30.0
# Playwright's own default wait for an expectation is 5 s.
sync_api.expect.set_options(timeout=UPDATE_S * 1000)
pytestmark = pytest.mark.timeout(120)
# `make screenshot` sets this to docs/dashboard.png; otherwise the picture goes to the test's temp dir.
SCREENSHOT = os.environ.get("DASHBOARD_SCREENSHOT")
# The series' stroke colours in app.js, as RGB.
ACTUAL_RGB, GOAL_RGB = (0x25, 0x63, 0xEB), (0xD9, 0x77, 0x06)
# Of the plot's width in device pixels: how far a series' strokes must reach, and how many columns they must
# touch (the goal is dashed), for a line across the plot rather than a dot or two.
SPAN_AT_LEAST, COVER_AT_LEAST = 0.8, 0.4


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        return port


async def _seed(url: str) -> None:
    client = connect(url)
    await client.flushdb()
    await seed.load(Store(client), SEEDS)
    await client.aclose()


@pytest.fixture
def server(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The app as `python -m sprockets_cache serve` runs it, on the seeded redis-server."""
    asyncio.run(_seed(redis_server.url))
    port = _free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "sprockets_cache", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Browsing:
    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def browsing() -> Iterator[Browsing]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="UTC", locale="en-GB")
        page = context.new_page()
        seen = Browsing(page)
        page.on("request", lambda request: seen.requests.append(request.url))
        page.on("response", lambda response: seen.statuses.append((response.url, response.status)))
        page.on("console", lambda message: message.type == "error" and seen.errors.append(message.text))
        page.on("pageerror", lambda error: seen.errors.append(str(error)))
        try:
            yield seen
        finally:
            browser.close()


def _open(browsing: Browsing, base: str) -> Any:
    page = browsing.page
    page.goto(f"{base}/")
    cards = page.locator(".card")
    sync_api.expect(cards).to_have_count(FACTORIES)
    for n in range(FACTORIES):
        sync_api.expect(cards.nth(n).locator(".uplot canvas")).to_have_count(1)
        sync_api.expect(cards.nth(n).locator(".last time")).not_to_have_attribute("data-unix", "")
    return page


# Runs in the page: which columns of a chart's plot area hold pixels of a stroke colour.
STROKE_COLUMNS = """(card, rgb) => {
  const canvas = card.querySelector(".uplot canvas");
  const over = card.querySelector(".u-over").getBoundingClientRect();
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  const left = Math.round((over.left - box.left) * scale), top = Math.round((over.top - box.top) * scale);
  const width = Math.round(over.width * scale), height = Math.round(over.height * scale);
  const pixels = canvas.getContext("2d").getImageData(left, top, width, height).data;
  const columns = new Set();
  for (let i = 0; i < pixels.length; i += 4) {
    const near = Math.abs(pixels[i] - rgb[0]) + Math.abs(pixels[i + 1] - rgb[1]) + Math.abs(pixels[i + 2] - rgb[2]);
    if (pixels[i + 3] > 200 && near < 60) columns.add((i / 4) % width);
  }
  return { width, columns: [...columns] };
}"""


def _stroke_reach(card: Any, rgb: tuple[int, int, int]) -> tuple[float, float]:
    """How much of its plot's width a series' line spans (first to last column) and touches."""
    found = card.evaluate(STROKE_COLUMNS, list(rgb))
    columns, width = found["columns"], found["width"]
    if not columns:
        return 0.0, 0.0
    return (max(columns) - min(columns) + 1) / width, len(columns) / width


def _newest(base: str) -> int:
    return max(httpx.get(f"{base}/api/v1/factories/{n}/summary").json()["last_time"] for n in range(1, FACTORIES + 1))


def _write(base: str, factory_id: int, at: int) -> None:
    body = {"time": [at], "sprocket_production_actual": [40], "sprocket_production_goal": [32]}
    assert httpx.post(f"{base}/api/v1/factories/{factory_id}/chart_data", json=body).status_code == 200


def test_the_dashboard_draws_every_factory_and_follows_a_new_point_live(
    server: str, browsing: Browsing, tmp_path: Path
) -> None:
    page = _open(browsing, server)
    card = page.locator('.card[data-factory-id="1"]')
    for n in range(FACTORIES):
        sync_api.expect(page.locator(".card .live").nth(n)).to_have_text("live")
    # A chart never holds more points than it has pixels across.
    for root in page.locator(".card .uplot").all():
        assert int(root.get_attribute("data-points")) <= root.bounding_box()["width"]
    sync_api.expect(page.locator("#sprockets tbody tr")).not_to_have_count(0)
    actual_before = card.locator(".actual").text_content()

    at = _newest(server) + 60
    started = time.monotonic()
    _write(server, 1, at)
    sync_api.expect(card.locator(".last time")).to_have_attribute("data-unix", str(at), timeout=UPDATE_S * 1000)
    sync_api.expect(card.locator(".actual")).not_to_have_text(actual_before)
    assert time.monotonic() - started < UPDATE_S
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    assert [url for url in browsing.requests if urlsplit(url).netloc != urlsplit(server).netloc] == []
    assert browsing.errors == []  # no script error, no Content-Security-Policy violation


def test_on_first_load_every_chart_draws_actual_and_goal_as_lines_across_its_plot(
    server: str, browsing: Browsing, tmp_path: Path
) -> None:
    page = _open(browsing, server)
    for n in range(FACTORIES):
        card = page.locator(".card").nth(n)
        sync_api.expect(card.locator(".uplot")).not_to_have_attribute("data-points", "0")
        for name, rgb in (("actual", ACTUAL_RGB), ("goal", GOAL_RGB)):
            span, cover = _stroke_reach(card, rgb)
            assert span >= SPAN_AT_LEAST, f"factory {n + 1}: {name} spans {span:.0%} of the plot"
            assert cover >= COVER_AT_LEAST, f"factory {n + 1}: {name} touches {cover:.0%} of the plot's columns"

    # Hovering shows the point under the cursor: its time, actual and goal, as the API has them.
    card = page.locator('.card[data-factory-id="1"]')
    card.locator(".u-over").hover()
    tip = card.locator(".tip")
    sync_api.expect(tip).to_be_visible()
    at, bucket = int(tip.get_attribute("data-unix")), int(card.locator(".uplot").get_attribute("data-bucket"))
    chart = httpx.get(f"{server}/api/v1/factories/1", params={"from": at, "to": at + bucket - 1}).json()["chart_data"]
    assert chart["time"], "the tooltip names a time with no point"
    assert tip.locator(".tip-actual").text_content() == f"{sum(chart['sprocket_production_actual']):,}"
    assert tip.locator(".tip-goal").text_content() == f"{sum(chart['sprocket_production_goal']):,}"
    sync_api.expect(tip.locator(".tip-time")).to_have_text(re.compile(r"\d{4}"))

    # The page down to the end of its content, not the empty viewport below it.
    height = page.evaluate("Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)")
    page.screenshot(
        path=SCREENSHOT or str(tmp_path / "dashboard.png"), clip={"x": 0, "y": 0, "width": 1400, "height": height}
    )
    assert browsing.errors == []


def test_when_streams_fail_the_page_polls_with_if_none_match(server: str, browsing: Browsing) -> None:
    browsing.page.route("**/events", lambda route: route.abort())
    page = _open(browsing, server)
    sync_api.expect(page.locator(".card .live").first).to_have_text("polling")
    # Unchanged factories answer 304 to the page's If-None-Match.
    _wait_for(
        page, lambda: any(status == 304 and "/summary" in url for url, status in browsing.statuses), POLLED_UPDATE_S
    )

    at = _newest(server) + 60
    _write(server, 2, at)
    card = page.locator('.card[data-factory-id="2"]')
    sync_api.expect(card.locator(".last time")).to_have_attribute("data-unix", str(at), timeout=POLLED_UPDATE_S * 1000)
    assert [url for url in browsing.requests if urlsplit(url).netloc != urlsplit(server).netloc] == []


def _windows(browsing: Browsing) -> set[tuple[int, int]]:
    """The (from, to) of every chart the page asked for."""
    found = (re.search(r"/api/v1/factories/\d+\?from=(\d+)&to=(\d+)&bucket=\d+$", url) for url in browsing.requests)
    return {(int(match[1]), int(match[2])) for match in found if match}


def _wait_for(page: Any, condition: Callable[[], bool], timeout_s: float = UPDATE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def test_the_range_picker_asks_for_the_window_it_names(server: str, browsing: Browsing) -> None:
    page = _open(browsing, server)
    summaries = [httpx.get(f"{server}/api/v1/factories/{n}/summary").json() for n in range(1, FACTORIES + 1)]
    newest = max(summary["last_time"] for summary in summaries)
    oldest = min(summary["first_time"] for summary in summaries)
    # By default each chart shows its own factory's recent points, however old.
    assert _windows(browsing) == {(summary["first_time"], summary["last_time"]) for summary in summaries}
    assert page.locator("[data-range=recent]").get_attribute("aria-pressed") == "true"

    # Presets end at the newest point of any factory: the seeds are from January 2021.
    page.get_by_role("button", name="Week").click()
    sync_api.expect(page.locator("#window")).to_contain_text("Last week")
    _wait_for(page, lambda: (newest - 7 * 86400 + 1, newest) in _windows(browsing))
    assert page.evaluate("location.hash") == "#week"

    page.get_by_role("button", name="All").click()
    sync_api.expect(page.locator("#window")).to_contain_text("All data")
    _wait_for(page, lambda: (oldest, newest) in _windows(browsing))

    page.get_by_role("button", name="Custom").click()
    page.locator("#from").fill("2021-01-21T02:00")
    page.locator("#to").fill("2021-01-21T03:00")
    page.get_by_role("button", name="Show").click()
    sync_api.expect(page.locator("#window")).to_contain_text("Custom")
    start = int(datetime(2021, 1, 21, 2, tzinfo=UTC).timestamp())
    _wait_for(page, lambda: (start, start + 3600 + 59) in _windows(browsing))
    assert page.evaluate("location.hash") == f"#custom:{start}-{start + 3659}"
