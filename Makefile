# One command to serve (make run), one to test (make test); each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_OUT ?= petsage_grpc/_gen
PROTOS := protos/petsage/v1/smoke.proto

.PHONY: install run test test-servers lint proto proto-released generate bench soak fuzz clean

install: $(STAMP)

# Debian's python3 comes without venv: as root with apt-get, install python3-venv and go on.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else false; fi; } || { rm -rf $(VENV); \
	  echo "make: cannot create $(VENV): install python3-venv (apt-get install python3-venv)" >&2; \
	  exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/petsage-grpc serve

test: lint test-servers
	$(BIN)/pytest

# The tests run real servers and a real browser: Debian's postgresql (initdb and pg_ctl, under
# /usr/lib/postgresql) and redis-server for the postgres and redis checks, chromium and
# chromium-driver for the status page. Installed here when missing (as root, with apt-get), so
# that no test skips for want of them.
test-servers:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -x /usr/bin/chromedriver || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "make: the tests need$$missing: apt-get install -y$$missing" >&2; exit 1; fi; \
	fi

lint: install
	$(BIN)/ruff check petsage_grpc tests examples bench deploy
	$(BIN)/ruff format --check petsage_grpc tests examples bench deploy
	$(BIN)/mypy
	cd protos && ../$(BIN)/buf lint
	cd protos && ../$(BIN)/buf breaking --against released.json
	$(BIN)/hadolint Dockerfile
	$(BIN)/python deploy/validate.py

# Regenerate the stubs from protos/. `generate` does it with the set-up already there
# (PROTO_OUT=dir writes them elsewhere, GEN_PYTHON=... picks the interpreter: the freshness test).
GEN_PYTHON ?= $(BIN)/python
proto: install generate

generate:
	$(GEN_PYTHON) -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) $(PROTOS)
	# protoc writes absolute imports (from petsage.v1 import ...); the stubs live inside our package.
	sed -i 's/^from petsage\.v1 import /from . import /' $(PROTO_OUT)/petsage/v1/*_pb2_grpc.py
	touch $(PROTO_OUT)/__init__.py $(PROTO_OUT)/petsage/__init__.py $(PROTO_OUT)/petsage/v1/__init__.py

# When releasing: protos/released.json becomes the image of the proto as released, the contract
# `buf breaking` (in make lint) holds every later change to.
proto-released: install
	cd protos && ../$(BIN)/buf build --exclude-source-info -o '-#format=json' \
	  | ../$(BIN)/python -m json.tool --indent 1 > released.json.tmp && mv released.json.tmp released.json

# A long fuzzing run (make test runs a brief one). FUZZ_EXAMPLES=N per target.
FUZZ_EXAMPLES ?= 5000
fuzz: install
	PETSAGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz.py

# Benchmarks: never part of make test. h2load comes from Debian's nghttp2-client; a grpc-go
# yardstick joins where Debian's golang-go and golang-google-grpc-dev are installed.
bench: install
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	@mkdir -p bench/results
	{ $(BIN)/python bench/run.py && echo && $(BIN)/python bench/rollout.py 3 1; } \
	  | tee bench/results/latest.md

# Soak: one server under a steady mix of health traffic with faults injected on a schedule, for
# SOAK_SECONDS (5 minutes by default); loopback only, bounded, never part of make test (which runs
# a 30-second one). Writes bench/results/soak.md.
SOAK_SECONDS ?= 300
soak: install test-servers
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS) --out bench/results/soak.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
