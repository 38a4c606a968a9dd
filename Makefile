# Swarm Runtime: `make dev` on a fresh Debian 12 machine, as root or not.
# Extra arguments go through ARGS, e.g. `make test ARGS="-k embedded"`, `make loadtest ARGS=...`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

# Loads the runtime/embedded_pg/ package by path (not through the `runtime` package) and exits
# non-zero when no PostgreSQL binaries are usable by the account the embedded server would run as.
FIND_PG := import importlib.util as u, sys; \
	s = u.spec_from_file_location("embedded_pg", "runtime/embedded_pg/__init__.py", \
		submodule_search_locations=["runtime/embedded_pg"]); \
	m = u.module_from_spec(s); sys.modules["embedded_pg"] = m; s.loader.exec_module(m); \
	m.find_binaries()

.DEFAULT_GOAL := help
.PHONY: help venv pg-binaries deps wrk dev serve test lint bench bench-reload loadtest clean distclean

help:
	@echo "make dev           run 'swarm-runtime dev' (hot reload, embedded PostgreSQL)"
	@echo "make serve         run 'swarm-runtime serve' (needs DATABASE_URL)"
	@echo "make test          run the test suite (embedded PostgreSQL or TEST_DATABASE_URL)"
	@echo "make lint          ruff check, ruff format --check, mypy"
	@echo "make bench         benchmarks.bench_calls;  make bench-reload: benchmarks.bench_reload"
	@echo "make loadtest      swarm-runtime loadtest \$$(ARGS)"
	@echo "make venv          create $(VENV) and install the package with its dev extras"
	@echo "make pg-binaries   make sure PostgreSQL binaries are available (apt-get as root)"
	@echo "make clean         remove caches and build output; distclean also $(VENV), .runtime"

venv: $(STAMP)

# Re-installs only when pyproject.toml changes (or the venv is gone).
$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv; \
		else \
			echo "'$(PYTHON) -m venv' is unavailable: run 'sudo apt-get install python3-venv'" >&2; \
			exit 1; \
		fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

pg-binaries: venv
	@if $(BIN)/python -c '$(FIND_PG)' >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "No PostgreSQL binaries usable by the server's user: installing Debian's"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
		$(BIN)/python -c '$(FIND_PG)'; \
	else \
		$(BIN)/python -c '$(FIND_PG)' || true; \
		echo "Install PostgreSQL: 'sudo apt-get install postgresql' (or set DATABASE_URL" \
			"/ TEST_DATABASE_URL to a server you run)" >&2; \
		[ -n "$${DATABASE_URL:-}$${TEST_DATABASE_URL:-}" ]; \
	fi

deps: venv pg-binaries

dev: deps
	$(BIN)/swarm-runtime dev $(ARGS)

serve: venv
	$(BIN)/swarm-runtime serve $(ARGS)

test: deps
	$(BIN)/pytest -q $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# wrk drives the benchmarks' HTTP load (Debian's package, installed when root).
wrk:
	@command -v wrk >/dev/null 2>&1 || \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; \
		else \
			echo "the benchmarks need wrk: 'sudo apt-get install wrk'" >&2; exit 1; \
		fi

bench: deps wrk
	$(BIN)/python -m benchmarks.bench_calls $(ARGS)

bench-reload: deps wrk
	$(BIN)/python -m benchmarks.bench_reload $(ARGS)

loadtest: deps
	$(BIN)/swarm-runtime loadtest $(ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also deletes the virtualenv and .runtime (the dev database); stop `make dev` first.
distclean: clean
	rm -rf $(VENV) .runtime
