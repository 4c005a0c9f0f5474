# Two commands do everything on a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on the build machines' disk; a range would download GBs.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: bench run test lint services compose-tools venv clean grpc-stubs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)" || $(PY) -m pip install -q "torch>=2.4,<3"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Start Redis and PostgreSQL for the integration tests if they are not running.
services:
	@scripts/ensure-services.sh

# `docker-compose config` validates docker-compose.yml in the tests (no engine needed). Installed
# from Debian when missing and apt-get is usable (root); otherwise that one check skips.
compose-tools:
	@command -v docker-compose >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { timeout 300 apt-get install -y -qq docker-compose >/dev/null 2>&1 \
	       || { timeout 300 apt-get update -qq >/dev/null 2>&1 \
	            && timeout 300 apt-get install -y -qq docker-compose >/dev/null 2>&1; }; } \
	  || echo "docker-compose not installed: its check will skip"; }

run: $(STAMP)
	$(PY) -m service.launch

# The quick tests, then the slow quality tests two at a time; PYTEST_ARGS: one run with those.
test: $(STAMP) services compose-tools
	@PY=$(PY) scripts/run-tests.sh $(PYTEST_ARGS)

# The style, the arrows between the packages (pyproject.toml [tool.importlinter]) and the types.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The benchmarks, each against a baseline measured in the same run (about 25 minutes on 2
# quiet cores), then bench/RESULTS.md and bench/RESULTS.json from their JSON under bench/out/.
bench: $(STAMP) services
	mkdir -p bench/out
	$(PY) bench/kernel.py --json bench/out/kernel.json
	$(PY) bench/protocols.py --json bench/out/protocols.json
	$(PY) bench/concurrency.py --json bench/out/concurrency.json
	$(PY) bench/trainer.py --json bench/out/trainer.json
	$(PY) bench/load.py --json bench/out/load.json
	$(PY) bench/results.py

# The gRPC stubs of the Open Inference Protocol (committed; remake them after editing the proto).
grpc-stubs: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  service/oip/proto/grpc_service.proto

clean:
	rm -rf $(VENV) var .pytest_cache
