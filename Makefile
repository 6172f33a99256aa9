# codeQ — make targets. `make test` and `make run` work on a fresh Debian machine as root.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install redis-server chromium test check lint typecheck run bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# The store tests start their own redis-server; install it from the OS packages when absent.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server from the OS packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing and this is not a Debian/Ubuntu machine: install Redis >= 7" >&2; exit 1; fi; }

# The dashboard tests drive the system Chromium (never a browser Playwright downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium from the OS packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and this is not a Debian/Ubuntu machine: install Chromium" >&2; exit 1; fi; }

# Two pytest-xdist workers, a test file each at a time (each worker starts its own servers):
# most tests wait on servers, so two halve the wall time on a 2-core machine.
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: install redis-server chromium
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

run: install redis-server
	$(BIN)/codeq serve --host 127.0.0.1 --port 8080

bench: install redis-server
	$(BIN)/python bench/roundtrips.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/engine.py --store kvrocks --backends server
	$(BIN)/python bench/http.py
	$(BIN)/python bench/http.py --store kvrocks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
