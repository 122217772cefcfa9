# Two commands on a fresh machine: `make demo` (the whole flow on the embedded defaults) and
# `make test`. Both install what they need: uv from PyPI, then the locked environment in .venv.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON_DOWNLOADS := never
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true

.PHONY: setup demo test test-fast bench lint notebooks

setup: .venv/.lapse-synced

.venv/.lapse-synced: pyproject.toml uv.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --compile-bytecode
	touch $@

demo: setup
	$(RUN) lapse demo

# Three pytest workers, each taking whole files (module fixtures train once; the files sharing the
# session's trained app go to one worker together, tests/conftest.py TRAINED_APP_FILES): tests wait on
# servers, subprocesses and SQLite as much as on the CPU (two workers kept 1.6 of the 2 cores busy).
# Files go out in collection order, the heaviest first (tests/conftest.py HEAVY_FIRST), not
# xdist's default of the most tests first, which left a one-test, four-minute file for last.
PYTEST_WORKERS ?= 3
test: setup
	$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

test-fast: setup
	$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

bench: setup
	$(RUN) python benchmarks/generate.py
	$(RUN) python benchmarks/ingest.py
	$(RUN) python benchmarks/features.py
	$(RUN) python benchmarks/braze_sync.py
	$(RUN) python benchmarks/train.py
	$(RUN) python benchmarks/shapes.py
	$(RUN) python benchmarks/serve.py
	$(RUN) python benchmarks/scale.py

# Re-run the notebooks from their paired text files (notebooks/NN-*.py, the source) on a fresh
# sample app in data/notebooks, and write them with their outputs (notebooks/NN-*.ipynb).
notebooks: setup
	rm -rf data/notebooks
	$(RUN) python notebooks/execute.py

lint: setup
	$(RUN) ruff check lapse features training serving tests benchmarks notebooks
