"""The package as a user installs it: a wheel built from the repository holds every Lua script and
dashboard file, and, installed on its own, serves the dashboard and loads the scripts."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sprockets_cache"
# Files the package reads at run time, besides its modules.
DATA = ["store/lua/*.lua", "http/dashboard/**/*.*", "http/dashboard/uplot/LICENSE", "http/static/*.js"]
# Run from outside the repository, on nothing but the installed copy (the test's own packages beside it).
SERVES = """
import sys
from importlib.resources import files
from starlette.applications import Starlette
from starlette.testclient import TestClient
import sprockets_cache
from sprockets_cache.http import docs, home
assert sprockets_cache.__file__.startswith(sys.argv[1]), sprockets_cache.__file__
client = TestClient(Starlette(routes=[*home.routes(), *docs.routes(b"{}")]))
for path in ["/", "/static/app.js", "/static/app.css", "/static/uplot/uPlot.iife.min.js", "/docs/static/docs.js"]:
    assert client.get(path).status_code == 200, path
assert "redis.call" in files("sprockets_cache.store").joinpath("lua/factory_write.lua").read_text()
print("served")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # From a copy of what the Dockerfile copies too, so that no build/ left in the repository is reused.
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(PACKAGE, source / "sprockets_cache", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("sprockets_cache-*.whl")
    return built


@pytest.mark.timeout(300)
def test_the_wheel_holds_every_lua_script_and_dashboard_file(wheel: Path) -> None:
    wanted = {f"sprockets_cache/{path.relative_to(PACKAGE)}" for pattern in DATA for path in PACKAGE.glob(pattern)}
    assert len(wanted) > 20
    assert wanted - set(zipfile.ZipFile(wheel).namelist()) == set()


@pytest.mark.timeout(300)
def test_the_installed_wheel_serves_the_dashboard_and_loads_its_scripts(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel], check=True, timeout=300
    )
    served = subprocess.run(
        [sys.executable, "-c", SERVES, str(target)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.stdout.strip() == "served", served.stderr
