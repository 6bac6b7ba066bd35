# acs-pipeline: two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= .demo
DEMO_PATIENTS ?= 1200
DEMO_SEED ?= 7
# More cath-tested visits than the real 5 %, so the demo's ACS validation split is not tiny.
DEMO_TESTED_FRACTION ?= 0.25

# The demo marks itself by exporting its paths here, explicitly: the code has no default for the
# required ACS_RAW_URI and ACS_STORAGE_URI (a step that needs an unset one fails naming it), so
# only `make demo`, `make dev` and `make test` (and what they run) use the demo cohort.
export ACS_RAW_URI ?= $(abspath $(DEMO))/data/ed-bwh-ecg/v1
export ACS_HOLDOUT_URI ?= $(abspath $(DEMO))/data/ed-bwh-ecg/holdout
export ACS_TRUTH_URI ?= $(abspath $(DEMO))/data/synthetic-truth.csv
export ACS_STORAGE_URI ?= $(abspath $(DEMO))/storage
export ACS_PROFILE ?= smoke
export DAGSTER_HOME ?= $(abspath $(DEMO))/dagster_home

# pip compiles the bytecode of what it installs, but not the sources of an editable install,
# and where PYTHONDONTWRITEBYTECODE is set (CI and container images) Python never caches it:
# every process that loads the definitions (each CLI run, the code server, a run's fork
# server) would compile the 49 modules they import again: 0.09 s, about 3 % of a no-change CLI
# run (benchmarks/pipeline.py reports `bytecode_cached`). Compiled at install and before each
# use (0.3 s when nothing changed).
BYTECODE = $(PY) -m compileall -q acs_pipeline

.PHONY: install demo test dev bench lint lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(BYTECODE)
	touch $(STAMP)

$(ACS_RAW_URI)/ecg-metadata.csv: | $(STAMP)
	$(PY) -m acs_pipeline synth --out $(abspath $(DEMO))/data --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) \
		--tested-fraction $(DEMO_TESTED_FRACTION)

$(DAGSTER_HOME)/dagster.yaml: dagster.local.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.local.yaml $@

demo: $(STAMP) $(ACS_RAW_URI)/ecg-metadata.csv $(DAGSTER_HOME)/dagster.yaml
	@$(BYTECODE)
	$(VENV)/bin/dagster asset materialize -m acs_pipeline.definitions --select '*' \
		--config-json '{"execution": {"config": {"in_process": {}}}}'
	@$(PY) -m acs_pipeline report-path --storage $(ACS_STORAGE_URI)

dev: $(STAMP) $(ACS_RAW_URI)/ecg-metadata.csv $(DAGSTER_HOME)/dagster.yaml
	@$(BYTECODE)
	$(VENV)/bin/dagster dev -w workspace.yaml

test: $(STAMP)
	@$(BYTECODE)
	$(VENV)/bin/ruff check acs_pipeline acs_pipeline_tests benchmarks
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	@$(BYTECODE)
	@for f in benchmarks/*.py; do echo "# $$f" >&2; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check acs_pipeline acs_pipeline_tests benchmarks
	$(VENV)/bin/ruff format --check acs_pipeline acs_pipeline_tests benchmarks

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf $(DEMO) .pytest_cache
