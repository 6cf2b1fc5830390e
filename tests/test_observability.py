import json

import httpx

from sprockets_cache.http.app import create_app
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import Client
from tests.conftest import lifespan

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
    requests = "http_request_duration_seconds_count"
    assert sample(text, requests, method="GET", route=route, status="200") == 2
    assert sample(text, requests, method="GET", route=route, status="404") == 1
    assert sample(text, requests, method="POST", route="/api/v1/sprockets", status="201") == 1
    assert sample(text, requests, method="GET", route="unmatched", status="404") == 1


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
    assert generated.headers["x-request-id"] != replaced.headers["x-request-id"]


async def test_each_request_logs_one_json_line_without_credentials(redis_client: Client) -> None:
    app = create_app(Settings(), redis_client)
    lines: list[bytes] = []
    app.state.access_log.sink = lines.append
    async with lifespan(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
            headers = {"X-Request-ID": "r-1", "Authorization": "Bearer s3cret"}
            await api.get("/api/v1/sprockets/7", headers=headers)
            await api.request("BREW", "/api/v1/sprockets/7")
            await api.get('/nowhere/"quoted"\\back\u00e9')
    records = [json.loads(line) for line in b"".join(lines).splitlines()]
    assert len(records) == 3
    line = records[0]
    assert line["logger"] == "sprockets_cache.access"
    assert line["message"] == "request"
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/sprockets/{sprocket_id:int}"
    assert line["status"] == 404
    assert line["request_id"] == "r-1"
    assert line["duration_ms"] >= 0
    assert line["time"].endswith("Z")
    assert "s3cret" not in b"".join(lines).decode()
    assert records[1]["method"] == "OTHER"
    assert records[2]["path"] == '/nowhere/"quoted"\\back\u00e9'
