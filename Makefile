# Everyday commands. `make demo` and `make test` are the two in README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install lint check-deploy clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[test]"

# run_demo writes var/demo.env with keys generated for this machine on its first run
# (never .env; the tests read neither). PORT=8001 make demo serves on another port.
demo: install
	$(PY) manage.py run_demo --port $(or $(PORT),8000)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
