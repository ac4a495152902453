# Everything a fresh machine needs is installed from pyproject.toml into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# Two install stamps: `run` needs only the package and what serving needs (a few seconds);
# the tests, checks and benches add the [dev] extras (pytest, ruff, mypy, the Helm SDK, ...),
# which take most of a first install. Each step prints a line, and pip its own progress.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test tools bench bench-smoke chaos chaos-smoke check lint typecheck bench-matcher bench-propagation bench-auth bench-ratelimit bench-observability bench-pool bench-pool-fairness bench-cpu bench-entities clean

# The pip that venv bundles with Python >= 3.11 installs editable pyproject packages: it is
# not upgraded first (that was a download on every fresh clone).
$(PY):
	@echo "==> creating $(VENV) (python3 -m venv)"
	python3 -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(PY)
	@echo "==> installing modgate and what serving needs into $(VENV)"
	$(PY) -m pip install --progress-bar on -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml $(RUN_STAMP)
	@echo "==> installing the test and check tools ('.[dev]': pytest, ruff, mypy, helm sdk, ...)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

run: $(RUN_STAMP)  ## the gateway on the embedded default (config/routes.yaml)
	$(VENV)/bin/modgate serve

# One pytest-xdist worker per CPU, at most four: more workers than CPUs gained little alone
# (84 s against 93 s on two) and starved the timing tests when the machine was busy.
test: $(STAMP) tools  ## the whole test suite (needs Postgres and Redis; see docs/development.md)
	$(VENV)/bin/pytest -n auto --maxprocesses 4

# promtool (Debian package prometheus) checks the metrics and alert rules in the tests; nginx
# (nginx-light) is the normalising upstream of tests/edge (each test starts its own, never the
# system's).
tools:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -z "$$missing" ] || { \
	  command -v apt-get >/dev/null || { echo "needed for the tests:$$missing"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

check: lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check proxy tests bench
	$(VENV)/bin/ruff format --check proxy tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# wrk and nginx are installed with apt-get when missing; Postgres and Redis must be running.
bench: $(STAMP)  ## side by side with nginx and bare aiohttp, p99 at half peak, then the extra benches
	$(PY) bench/run.py

# CI runs this: it fails when something is broken, never because a speed target is missed.
bench-smoke: $(STAMP)  ## the same, short (under a minute)
	$(PY) bench/run.py --smoke

# Faults injected into real processes under load (private Postgres, Redis, nginx, executor);
# fails only when something is broken, never because a target is missed.
chaos: $(STAMP)  ## Redis, Postgres, handler pool, upstream and worker faults under load
	$(PY) bench/chaos.py

chaos-smoke: $(STAMP)  ## the same, short faults (CI)
	$(PY) bench/chaos.py --short

bench-matcher: $(STAMP)  ## route match cost at 10, 10k and 100k routes
	$(PY) bench/matcher_bench.py

bench-auth: $(STAMP)  ## cost of authenticate + authorize per request, in µs
	$(PY) bench/auth_bench.py

bench-ratelimit: $(STAMP)  ## limited vs unlimited requests (needs wrk and Redis)
	$(PY) bench/ratelimit_bench.py

bench-observability: $(STAMP)  ## metrics + access log + request log per request (wrk, Postgres)
	$(PY) bench/observability_bench.py

bench-cpu: $(STAMP)  ## CPU µs per request at a fixed rate; variants: bench/cpu_bench.py --help
	$(PY) bench/cpu_bench.py

bench-pool: $(STAMP)  ## per-call overhead of the handler pool (modgate executor; needs wrk)
	$(PY) bench/pool_bench.py

bench-pool-fairness: $(STAMP)  ## module B's latency while module A's handlers loop forever
	$(PY) bench/pool_fairness.py

bench-entities: $(STAMP)  ## entity REST CRUD on a 1M-row table through the gateway (Postgres, Redis, wrk)
	$(PY) bench/entities_bench.py

bench-propagation: $(STAMP)  ## commit-to-live latency across gateway processes (needs Postgres)
	$(PY) bench/propagation_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
