# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Installs come from requirements/lock.txt (exact versions, made by `make lock`), so a fresh machine
# gets tomorrow the environment the suite passed on today. `make test-latest` / `make test-oldest`
# try the newest releases in range and the declared lower bounds, each in a throwaway venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PIP_SPEC ?= pip==26.3
UV_SPEC ?= uv==0.13.9
# The test set: the test extra plus training (the torchrun tests assert DeepSpeed) and the demo's plots.
# test-oldest leaves the training extras out: their floors are newer than the core's, and the training
# tests skip there, saying so.
EXTRAS ?= test,train,deepspeed,demo
OLDEST_EXTRAS ?= test
LOCK := requirements/lock.txt
OLDEST := requirements/oldest.txt
# The CPU torch wheel lies in /opt/wheels on these machines; its metadata keeps CUDA out of the lock.
LOCK_FLAGS ?= --python-version 3.11 --find-links /opt/wheels --override requirements/torch-cpu.txt --no-emit-package torch \
	--only-binary :all: --no-binary deepspeed
# DeepSpeed ships only a source distribution; without its C++ ops it builds in seconds (ops JIT-build on use).
export DS_BUILD_OPS := 0
PYTEST_ARGS ?=
LATEST_PYTEST_ARGS ?= $(PYTEST_ARGS)

.PHONY: venv demo test test-fast lint lock test-latest test-oldest bench clean

venv: $(BIN)/.installed

# torch goes first: installing it by exact version takes the local CPU wheel, and the later
# `pip install -e .` then finds its range already satisfied instead of pulling a CUDA build.
$(BIN)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(PIP_SPEC)"
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(VENV)/torch-constraint.txt
	$(BIN)/python -m pip install -q -c $(LOCK) -c $(VENV)/torch-constraint.txt -e ".[$(EXTRAS)]"
	touch $@

demo: venv
	$(BIN)/internvl demo

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

test: venv lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Regenerate both lock files from pyproject.toml (newest versions in range / declared lower bounds).
lock: venv
	$(BIN)/python -m pip install -q "$(UV_SPEC)"
	$(BIN)/uv pip compile pyproject.toml --all-extras --upgrade $(LOCK_FLAGS) -o $(LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra video --extra eval --extra lora --extra bench --extra serve --extra test \
		--upgrade --resolution lowest-direct $(LOCK_FLAGS) -o $(OLDEST)

# A throwaway venv with the newest release of every dependency in range (torch stays TORCH_SPEC).
test-latest:
	rm -rf .venv-latest && $(PY) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q "$(PIP_SPEC)" "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > .venv-latest/torch-constraint.txt  # eager upgrades must not swap in a CUDA torch build
	.venv-latest/bin/python -m pip install -q -c .venv-latest/torch-constraint.txt --upgrade --upgrade-strategy eager \
		-e ".[$(EXTRAS)]"
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(transformers|tokenizers|accelerate|peft|torch|numpy|safetensors|huggingface.hub)=' || true
	.venv-latest/bin/ruff check src tests benchmarks scripts
	.venv-latest/bin/python -m pytest -q $(LATEST_PYTEST_ARGS)

# A throwaway venv with the declared lower bounds of the direct dependencies (requirements/oldest.txt).
test-oldest:
	rm -rf .venv-oldest && $(PY) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q "$(PIP_SPEC)" "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > .venv-oldest/torch-constraint.txt
	.venv-oldest/bin/python -m pip install -q -c $(OLDEST) -c .venv-oldest/torch-constraint.txt -e ".[$(OLDEST_EXTRAS)]"
	.venv-oldest/bin/python -m pip list --format=freeze | grep -iE '^(transformers|tokenizers|accelerate|peft|torch|numpy|safetensors|huggingface.hub)=' || true
	.venv-oldest/bin/python -m pytest -q $(PYTEST_ARGS)

bench: venv
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest build *.egg-info src/*.egg-info
