"""The GitHub workflow runs what .ci/run runs: the same Debian packages, then the same make targets."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = (ROOT / ".ci" / "run").read_text()
WORKFLOW = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
INSTALLED = re.compile(r"apt-get install -y -qq ([a-z0-9 .+-]+?) >/dev/null")


def test_the_workflow_installs_the_debian_packages_that_ci_run_does() -> None:
    wanted = {package for line in INSTALLED.findall(CI_RUN) for package in line.split()}
    assert wanted == {"redis-server", "chromium"}
    assert {package for line in INSTALLED.findall(WORKFLOW) for package in line.split()} == wanted


def test_the_workflow_runs_the_make_targets_of_ci_run_in_order_on_python_3_11() -> None:
    # make test-without-redis hides binaries in a mount namespace, which a workflow's container cannot: there
    # a job of its own runs make test on a machine without Redis (the next test).
    targets = [name for name in re.findall(r"^make ([\w-]+)$", CI_RUN, re.MULTILINE) if name != "test-without-redis"]
    assert targets == ["test", "contract", "compose-check"]
    jobs = WORKFLOW.split("\n  test-without-redis:\n")[0]
    assert re.findall(r"^\s+run: make ([\w-]+)$", jobs, re.MULTILINE) == targets
    assert re.search(r"^\s+image: python:3\.11-", WORKFLOW, re.MULTILINE)
    # compose-check runs on the runner itself (Docker is there), after the job in the container.
    assert re.search(r"^\s+needs: test$", WORKFLOW, re.MULTILINE)
    assert re.search(r'^\s+python-version: "3\.11"$', WORKFLOW, re.MULTILINE)


def test_both_run_the_suite_again_on_a_machine_without_redis() -> None:
    assert re.search(r"^make test-without-redis$", CI_RUN, re.MULTILINE)
    job = WORKFLOW.split("\n  test-without-redis:\n")[1]
    assert "redis-server" not in job.split("name: make test (no redis-server)")[0]
    assert re.search(r"^\s+run: make test$", job, re.MULTILINE)
