PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench bench-full lint

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# Loopback only, as the README promises, unless BIND_HOST says otherwise.
run: install
	BIND_HOST=$${BIND_HOST:-127.0.0.1} $(PY) scripts/dev.py run

# SQLite, PostgreSQL and the fault tests as three pytest runs side by side, each one's output
# and wall time shown as it ends; PYTEST_ADDOPTS="--durations=50" reaches all three.
test: install
	$(PY) scripts/dev.py test

# One backend, no slow tests: the quick loop while working.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) scripts/dev.py bench --quick

bench-full: install
	$(PY) scripts/dev.py bench

# The Procfile booted from requirements.txt alone, in its own virtualenv, as production runs it.
.PHONY: procfile-check
procfile-check:
	$(PYTHON) scripts/procfile_check.py

lint: install
	$(VENV)/bin/ruff check .
