import json
import logging

import httpx
import pytest

from sprockets_cache.observability import JSONFormatter

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
CHART = {"sprocket_production_actual": [1, 2], "sprocket_production_goal": [1, 2], "time": [10, 20]}


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in metrics.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def test_metrics_count_requests_by_route_template_and_status(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/sprockets", json=SPROCKET)
    await api.get("/api/v1/sprockets/1")
    await api.get("/api/v1/sprockets/1")
    await api.get("/api/v1/sprockets/2")
    await api.get("/nowhere")
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/api/v1/sprockets/{sprocket_id:int}"
    assert sample(text, "http_requests_total", method="GET", route=route, status="200") == 2
    assert sample(text, "http_requests_total", method="GET", route=route, status="404") == 1
    assert sample(text, "http_requests_total", method="POST", route="/api/v1/sprockets", status="201") == 1
    assert sample(text, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert sample(text, "http_request_duration_seconds_count", method="GET", route=route) == 3


async def test_metrics_count_points_written(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/factories", json={"chart_data": CHART})
    await api.post("/api/v1/factories/1/chart_data", json={**CHART, "time": [20, 30]})
    assert sample((await api.get("/metrics")).text, "points_written_total") == 4


async def test_a_request_id_is_returned_and_a_sane_client_id_is_kept(api: httpx.AsyncClient) -> None:
    kept = await api.get("/health", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = await api.get("/health", headers={"X-Request-ID": "evil\nline"})
    generated = await api.get("/health")
    assert replaced.headers["x-request-id"] != "evil\nline"
    assert len(generated.headers["x-request-id"]) == 32


async def test_each_request_logs_one_json_line_without_credentials(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sprockets_cache.access"):
        await api.get("/api/v1/sprockets/7", headers={"X-Request-ID": "r-1", "Authorization": "Bearer s3cret"})
    records = [r for r in caplog.records if r.name == "sprockets_cache.access"]
    assert len(records) == 1
    line = json.loads(JSONFormatter().format(records[0]))
    assert line["message"] == "request"
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/sprockets/{sprocket_id:int}"
    assert line["status"] == 404
    assert line["request_id"] == "r-1"
    assert line["duration_ms"] >= 0
    assert "s3cret" not in json.dumps(line)
