# The one entry point: CI calls the same targets a person does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SEEDS := seeds/seed_factory_data.json seeds/seed_sprocket_types.json

.PHONY: install run seed test lint bench contract soak clean

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

test: lint
	$(BIN)/pytest

# schemathesis (every default check, stateful phase too) against uvicorn on a redis-server of its own;
# about a minute. Not part of `make test`; CI runs it after.
contract: $(STAMP)
	$(BIN)/python tests/contract.py

# The API against a minimal Starlette + Redis baseline on a Redis of its own, then 2 workers against 1 and a
# 3-master Redis Cluster against one Redis, and API keys and the audit trail against none (6-10 minutes,
# more when the host takes cores); writes BENCHMARKS.md and bench/results.png.
# Not part of `make test`.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/pip install -q matplotlib==3.11.2
	$(BIN)/python bench/run.py

# A mixed read/write load for SOAK_S seconds (default 60): fails on any error or on memory growth.
soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
