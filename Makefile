# The two commands of the README: `make run` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Marks an install done for this pyproject.toml and lock; either changing reinstalls.
STAMP := $(VENV)/.kiln-installed

.PHONY: run test test-fast lint install test-packages ui status clean

run: $(STAMP)
	$(BIN)/kiln run

# Everything CI runs: lint, then every test tier (tests/ops, pipeline, stages, unit).
# Two workers, a test file each, in the order tests/conftest.py gives (tier by tier, long
# files first): much of a test's time is a fresh interpreter importing or a server
# starting, which the second core overlaps.
# Each process keeps to one thread (torch, BLAS): two workers on two cores with two threads
# apiece spend their time taking cores from each other (the generality tests: 202 s -> 159 s).
test: lint test-packages
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The unit tier alone: seconds per test, no pipeline runs, no servers (every test neither
# slow nor postgres, and no other: tests/conftest.py fails a test in the wrong folder).
test-fast: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(STAMP)

# PostgreSQL and Chromium, which some tests need: installed from Debian when missing.
test-packages:
	infra/test-packages.sh

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# constraints.txt is the lock: every package at the version that was tested.
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e '.[dev]'
	# To bytecode on every core (pip compiles one file at a time). The few files written for
	# newer Pythons (torch's py312 test helpers) cannot compile; pip skips them too. Left
	# out: what Kiln never imports, the packages' own tests and the ~400 model families of
	# transformers other than BERT (a quarter of the files: 57 s -> 42 s on 2 cores).
	$(BIN)/python -c "import compileall, re, sys; compileall.compile_dir(sys.prefix + '/lib', quiet=2, workers=0, \
		rx=re.compile(r'/tests?/|/transformers/models/(?!bert/|auto/)'))"
	# The databases a first run would make, made once here: Prefect's, for the API each
	# `kiln run` starts for itself (its ~150 migrations were 5 s of the first run's start),
	# and the local MLflow store's tables (0.8 s).
	(PREFECT_HOME=$${PREFECT_HOME:-.prefect} PREFECT_SERVER_ANALYTICS_ENABLED=false \
		$(BIN)/prefect server database upgrade -y && MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -c \
		"import mlflow; mlflow.MlflowClient('sqlite:///mlflow/mlflow.db').search_experiments()") \
		> $(VENV)/databases.log 2>&1 || (cat $(VENV)/databases.log; exit 1)
	touch $@

ui: $(STAMP)
	$(BIN)/kiln ui

status: $(STAMP)
	$(BIN)/kiln status

clean:
	rm -rf $(VENV) .prefect
