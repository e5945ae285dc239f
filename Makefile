# The two commands a newcomer needs: `make demo` and `make test`; `make test-fast` while working.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Synthetic data, profile, one front search at the DLRM reference's latency and half of it, retrain, export, bench: about 5-8 minutes
# on 2 CPU cores from an empty LUT cache; the report is runs/demo/report.md.
demo: install
	$(BIN)/dnas-hw pipeline --out runs/demo

# Every test, the slow ones included (CI runs this).
test: install
	$(BIN)/python -m pytest tests

# The tests not marked slow: about 55 s on the idle 2-core development machine.
test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) runs
