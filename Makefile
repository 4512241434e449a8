# The two commands a newcomer needs on a fresh machine; each creates .venv when it is missing.
#   make demo   the whole DR ablation on generated demo data, on CPU, into ./mlflow.db
#   make test   the test suite (offline: the model hub is never contacted)

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
# torch is installed only where none is importable: a box that has its own build (the NGC
# container on the DGX Spark) keeps it, because the venv sees the system site-packages.
TORCH  ?= torch==2.13.0

.PHONY: demo test clean-demo

$(VENV)/.ready: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.ready
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 bash experiments/demo.sh

test: $(VENV)/.ready
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean-demo:
	rm -rf data/demo experiments/results/regolith-demo
