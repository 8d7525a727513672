# The two commands of the README: `make run` (the pipeline on the built-in world) and `make test`.
# Both create or reuse .venv and install what they need; nothing is downloaded at run time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.linkstyle-installed
CORES  ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: install lock run dry-run lint test test-fast clean-results

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Write the installed versions to constraints.txt (after changing a dependency; then update envs/linkstyle.yaml).
lock: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|torchvision|triton|pip|setuptools|wheel|linkstyle)==|^nvidia-'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The whole pipeline on config/config.yaml; results/<run>/report.html at the end.
run: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(SNAKEMAKE_ARGS)
	@echo "report: results/$$($(BIN)/python -m linkstyle config -c config/config.yaml | sed -n 's/^run: //p')/report.html"

dry-run: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -n $(SNAKEMAKE_ARGS)

# Snakemake's own linter, the Snakemake formatter and a Python linter (settings in pyproject.toml).
lint: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/ruff check src tests bench

# --dist loadfile keeps the tests that share the real SLURM cluster (tests/test_slurm.py) on one worker.
test: lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

test-fast: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

clean-results:
	rm -rf results .snakemake
