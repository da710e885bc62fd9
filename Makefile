# seekforge: `make test` and (once the pipeline lands) `make demo` on a fresh machine.
# Everything installs into .venv from requirements.lock (resolved by uv from pyproject.toml).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv browser demo up down test test-fast test-tf test-jax test-parallel bench lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	# PyTorch (test-only, the parity reference): a CPU build by pip, see pyproject's `parity` extra;
	# accelerate: transformers refuses to load an FP8 (quant_method fp8) checkpoint without it
	$(BIN)/python -m pip install --quiet "torch==2.13.0" "accelerate==1.16.0"
	touch $(STAMP)

# Debian's chromium and chromedriver for the browser end-to-end test, when absent (needs root
# and the Debian registry; without them that test is skipped with the reason).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "make browser: could not install chromium + chromium-driver; the browser test will be skipped" >&2

# The tiny preset through Airflow: every phase whose stages exist, with `airflow dags test`
# (nothing is left running), then a summary of what ran and where to look.
demo: venv
	$(BIN)/python -m dags.demo

# Airflow (api-server, scheduler, dag-processor) and the MLflow UI on 127.0.0.1; `make down` stops them.
up: venv
	$(BIN)/python -m dags.local_airflow up

down:
	$(BIN)/python -m dags.local_airflow down

# The whole suite on the TensorFlow backend, then the model tests on the JAX backend, then
# the expert-parallel trainer on 8 simulated CPU devices.
test: test-tf test-jax test-parallel

test-tf: venv browser
	$(BIN)/python -m pytest tests

test-jax: venv
	KERAS_BACKEND=jax $(BIN)/python -m pytest tests/model

test-parallel: venv
	KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest tests/parallel

# The inner loop: the tests not marked slow (each under ~5 s on 2 cores), TensorFlow
# backend only (eager JAX makes the model tests several times slower; `make test` runs them).
test-fast: venv
	$(BIN)/python -m pytest -m "not slow" tests

# Re-resolve requirements.lock after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --quiet -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
