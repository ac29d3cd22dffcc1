# Bond's developer commands. Everything installs itself: `make demo` and `make test` work on a
# fresh machine with Python 3.11, Java 17 and Maven (Kafka's jars and Redis are fetched).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up demo down status logs test test-fast lint format bench chaos wheel-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server,dev]'
	touch $(STAMP)

up: install
	$(BIN)/bond up

demo: install
	$(BIN)/bond demo

down: install
	$(BIN)/bond down

status: install
	$(BIN)/bond status

logs: install
	$(BIN)/bond logs -f

test: install
	$(BIN)/pytest -q -ra

test-fast: install
	$(BIN)/pytest -q -m "not slow and not e2e" tests/unit

# ruff over the whole tree; mypy over src/, agents/, gateway/, topics/ (as the wheel's bond.*
# packages, see tools/typecheck.py), bench/ and tools/. tests/test_lint.py runs the same in CI.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

chaos: install
	$(BIN)/python -m bench.chaos

wheel-check: install
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) .bond dist build
