"""The GitHub workflow runs what .ci/run runs: the same Debian packages, then the same make targets, on
Python 3.11 and, with no compiler and no redis-server, on Python 3.13."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = (ROOT / ".ci" / "run").read_text()
WORKFLOW = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
PYTHON_3_13 = (ROOT / "tests" / "python3.13" / "Dockerfile").read_text()
INSTALLED = re.compile(r"apt-get install -y -qq (?:--no-install-recommends )?([a-z0-9 .+-]+?) >/dev/null")


def _job(name: str) -> str:
    return WORKFLOW.split(f"\n  {name}:\n")[1].split("\n\n  ")[0]


def _installed(text: str) -> set[str]:
    return {package for line in INSTALLED.findall(text) for package in line.split()}


def test_the_workflow_installs_the_debian_packages_that_ci_run_does() -> None:
    assert _installed(CI_RUN) == {"redis-server", "chromium", "iptables"}
    assert _installed(_job("test")) == {"redis-server", "chromium"}
    assert _installed(_job("test")) | _installed(_job("partitions")) == _installed(CI_RUN)


def test_the_workflow_runs_the_make_targets_of_ci_run_in_order() -> None:
    targets = re.findall(r"^make ([\w.-]+)$", CI_RUN, re.MULTILINE)
    # make test-python3.13 is the GitHub workflow's job on Python 3.13 (the last test).
    assert targets == ["lock-check", "test", "test-python3.13", "contract", "compose-check", "partitions"]
    assert re.findall(r"^\s+run: make ([\w-]+)$", _job("test"), re.MULTILINE) == ["lock-check", "test", "contract"]
    assert re.search(r"^\s+image: python:3\.11-", _job("test"), re.MULTILINE)
    # compose-check runs on the runner itself (Docker is there), after the job in the container.
    compose = _job("compose-check")
    assert re.findall(r"^\s+run: make ([\w-]+)$", compose, re.MULTILINE) == ["compose-check"]
    assert re.search(r"^\s+needs: test$", compose, re.MULTILINE)
    assert re.search(r'^\s+python-version: "3\.11"$', compose, re.MULTILINE)
    partitions = _job("partitions")
    assert re.findall(r"^\s+run: make ([\w-]+)$", partitions, re.MULTILINE) == ["partitions"]
    assert "--cap-add NET_ADMIN" in partitions and "iptables" in _installed(partitions)


def test_both_run_the_suite_on_python_3_13_in_the_same_bare_image() -> None:
    assert "docker run" in (ROOT / "Makefile").read_text().split("\ntest-python3.13:")[1].split("\n\n")[0]
    # Where no image registry is reachable, .ci/run first builds a stand-in for the image's base.
    assert CI_RUN.index("container-standins up tests/python3.13") < CI_RUN.index("\nmake test-python3.13\n")
    job = _job("test-python3-13")
    assert re.search(r"^FROM python:3\.13-slim$", PYTHON_3_13, re.MULTILINE)
    assert re.search(r"^\s+image: python:3\.13-slim$", job, re.MULTILINE)
    assert _installed(job) == _installed(PYTHON_3_13) == {"make", "git", "iptables", "ca-certificates"}
    assert "--cap-add NET_ADMIN" in job
    assert re.findall(r"^\s+run: make ([\w-]+)$", job, re.MULTILINE) == ["test"]
