# One command to serve (make run), one to test (make test); each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_OUT ?= petsage_grpc/_gen
PROTOS := protos/petsage/v1/smoke.proto

.PHONY: install run test test-servers image image-tools lint lock proto proto-released generate bench soak fuzz clean

install: $(STAMP)

# Debian's python3 comes without venv: as root with apt-get, install python3-venv and go on.
# Every package comes from the lock, hashes checked (requirements/dev.txt); then the project itself,
# editable, built by the locked setuptools in the venv (no isolated build of whatever is newest).
$(STAMP): pyproject.toml requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else false; fi; } || { rm -rf $(VENV); \
	  echo "make: cannot create $(VENV): install python3-venv (apt-get install python3-venv)" >&2; \
	  exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
	  -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
	  --no-build-isolation -e .
	@touch $(STAMP)

run: install
	$(BIN)/petsage-grpc serve

test: lint test-servers image
	$(BIN)/pytest

# The tests run real servers and a real browser: Debian's postgresql (initdb and pg_ctl, under
# /usr/lib/postgresql) and redis-server for the postgres and redis checks, chromium and
# chromium-driver for the status page, nodejs and npm for the grpc-js client, util-linux's
# unshare for a hosts file of a test's own. Installed here when missing (as root, with apt-get), so
# that no test skips for want of them.
test-servers:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -x /usr/bin/chromedriver || missing="$$missing chromium-driver"; \
	{ command -v node && command -v npm; } >/dev/null || missing="$$missing nodejs npm"; \
	command -v unshare >/dev/null || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "make: the tests need$$missing: apt-get install -y$$missing" >&2; exit 1; fi; \
	fi

# The container image, built with podman (no Docker engine needed): deploy/image.py, which the image
# test (tests/test_image.py) runs too. What a Debian machine like CI's needs for it, found by
# trying, as root on a fresh machine:
# - podman, runc and mmdebstrap, from Debian, installed here when missing; not buildah (podman
#   builds by itself) nor podman's other recommended packages (crun, slirp4netns, uidmap, ...):
#   rootful podman needs none of them.
# - runc, not crun: crun refuses this machine's hybrid cgroup v1 + v2 set-up ("cgroups in hybrid
#   mode not supported, drop all controllers from cgroupv2").
# - default ulimits within the limits podman itself runs with: podman run gives a container nofile
#   1048576 and nproc 4194304, and root here has neither CAP_SYS_RESOURCE nor hard limits that
#   high (runc: "error setting rlimit type 7: operation not permitted"); podman lowers its own
#   nproc to 32768. Both settings go in a drop-in, $(CONTAINERS_CONF), written when missing;
#   /etc/containers/containers.conf itself is left alone.
# - --format docker (deploy/image.py): the default OCI format has no HEALTHCHECK, and podman
#   drops it with a warning.
# - pip in the build reaches the package index only with this machine's CA bundle (the index's
#   TLS is signed by a CA the base image does not hold): deploy/image.py passes it as a build
#   secret, mounted for that one step, never in a layer. The machine's pip configuration is not
#   needed: it names that bundle, local wheel directories and a cap on torch, none of which
#   the build may see.
# - Docker Hub is not reachable, so the base image can be neither found nor pulled: deploy/image.py
#   builds a stand-in under its name (mmdebstrap --variant=minbase bookworm with this machine's
#   CPython 3.11 in /usr/local, imported with podman import), once: its tarball is cached under
#   ~/.cache/petsage-grpc, keyed by its inputs. The Dockerfile keeps the official base.
# - systemd is absent, so nothing runs the HEALTHCHECK on its interval (podman logs "unable to get
#   systemd connection"): the test runs it by hand, with podman healthcheck run.
IMAGE_PACKAGES := podman runc mmdebstrap
CONTAINERS_CONF := /etc/containers/containers.conf.d/petsage-grpc.conf
image: install image-tools
	$(BIN)/python deploy/image.py

image-tools:
	@missing=""; for tool in $(IMAGE_PACKAGES); do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "make: the image needs$$missing: apt-get install -y$$missing" >&2; exit 1; fi; \
	fi
	@test -f $(CONTAINERS_CONF) || [ "$$(id -u)" != 0 ] || { mkdir -p $(dir $(CONTAINERS_CONF)) \
	  && files=$$(bash -c 'ulimit -Hn') && procs=$$(bash -c 'ulimit -Hu') \
	  && { [ "$$procs" != unlimited ] && [ "$$procs" -le 32768 ] || procs=32768; } \
	  && printf '%s\n' '# Written by make image-tools (petsage-grpc): see its Makefile.' \
	    '[containers]' "default_ulimits = [\"nofile=$$files:$$files\", \"nproc=$$procs:$$procs\"]" \
	    '[engine]' 'runtime = "runc"' > $(CONTAINERS_CONF); }

lint: install
	$(BIN)/ruff check petsage_grpc tests examples bench deploy
	$(BIN)/ruff format --check petsage_grpc tests examples bench deploy
	$(BIN)/mypy
	cd protos && ../$(BIN)/buf lint
	cd protos && ../$(BIN)/buf breaking --against released.json
	$(BIN)/hadolint Dockerfile
	$(BIN)/python deploy/validate.py

# The lock: uv.lock holds every extra and group for every platform; requirements/*.txt are
# exported from it with hashes, for pip: image.txt (the [all] extra: what the image installs),
# build.txt (the build backend), dev.txt (the dev extras and the build backend: what make install
# and CI install). Only what pyproject.toml changed is resolved again; UPGRADE=1 takes the newest
# releases of everything. A test fails when pyproject.toml, uv.lock and these files disagree.
UV_EXPORT := $(BIN)/uv --quiet export --frozen --no-emit-project --format requirements.txt
lock: install
	$(BIN)/uv lock --python $(BIN)/python $(if $(UPGRADE),--upgrade)
	$(UV_EXPORT) --extra all -o requirements/image.txt
	$(UV_EXPORT) --only-group build -o requirements/build.txt
	$(UV_EXPORT) --extra dev --group build -o requirements/dev.txt

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

# Benchmarks: never part of make test. h2load comes from Debian's nghttp2-client; the Watch load
# and a grpc-go yardstick are built from bench/go with Debian's Go and grpc-go sources.
BENCH_DEBS = nghttp2-client golang-go golang-google-grpc-dev golang-golang-x-sys-dev
bench: install
	@missing=""; for deb in $(BENCH_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$deb 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$deb"; \
	done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@mkdir -p bench/results
	@# Bytecode as an installed package has it (pip compiles at install; the image does): where
	@# PYTHONDONTWRITEBYTECODE is set, the editable checkout would be compiled at every start-up.
	$(BIN)/python -m compileall -q petsage_grpc
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
