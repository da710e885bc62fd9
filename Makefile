# seekforge: `make test` and (once the pipeline lands) `make demo` on a fresh machine.
# Everything installs into .venv from requirements.lock (resolved by uv from pyproject.toml).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-tf test-jax lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	# PyTorch (test-only, the parity reference): a CPU build by pip, see pyproject's `parity` extra
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	touch $(STAMP)

# The whole suite on the TensorFlow backend, then the model tests on the JAX backend.
test: test-tf test-jax

test-tf: venv
	$(BIN)/python -m pytest tests

test-jax: venv
	KERAS_BACKEND=jax $(BIN)/python -m pytest tests/model

# Re-resolve requirements.lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --quiet -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
