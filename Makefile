# The two commands a newcomer needs on a fresh machine; each creates .venv when it is missing.
#   make demo   the whole DR ablation on generated demo data, on CPU, into ./mlflow.db
#   make test   the test suite (offline: the model hub is never contacted)
# Both install the exact versions of requirements-lock.txt; `make lock` refreshes that file.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
# torch is installed only where none is importable: a box that has its own build (the NGC
# container on the DGX Spark) keeps it, because the venv sees the system site-packages.
TORCH  ?= torch==2.13.0
# Every dependency but torch, pinned for Linux x86-64 and aarch64, Python 3.10 to 3.12.
LOCK   := requirements-lock.txt
UV     ?= uv

.PHONY: demo test lock clean-demo

# Rebuilt when the lock or pyproject.toml changes. The project itself goes in with --no-deps, so
# nothing is resolved again beyond the lock.
$(VENV)/.ready: $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)" -c $(LOCK)
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.ready
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 bash experiments/demo.sh

test: $(VENV)/.ready
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Re-resolve every pin to the newest releases that pyproject.toml's ranges allow (needs uv:
# `pip install uv`). The platforms, and torch's exclusion with its CUDA wheels, are in the
# [tool.uv] table of pyproject.toml. Commit the new file after `make test` passes.
LOCK_ARGS := pip compile pyproject.toml --universal --python-version 3.10 --extra test --extra postgres --extra onnx --upgrade -o $(LOCK)
lock:
	$(UV) $(LOCK_ARGS) --custom-compile-command "uv $(LOCK_ARGS)"

clean-demo:
	rm -rf data/demo experiments/results/regolith-demo
