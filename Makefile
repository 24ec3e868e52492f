# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# The day-to-day benchmark: the scenarios that matter most, small images, one counted round.
QUICK_SCENARIOS := fetch mirror
# A 96 MiB big layer (not --quick's 24): enough data that the ratios are not all start-up.
QUICK_ARGS := --quick --big-mb 96
SYSTEM_TOOLS := docker-registry skopeo podman umoci runc dockerd busybox
APT_PACKAGES := docker-registry skopeo podman umoci runc time docker.io busybox-static

.PHONY: demo test check lint types mutants bench bench-quick profile bytecode system-deps registry-dep clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# py-spy for `make profile` only: the `bench` extra, kept out of what `make test` and CI install.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Installs the Debian packages the tests and demo use, when run as root and any is missing.
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS) /usr/bin/time; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else echo "missing:$$missing -- run as root, or: sudo apt-get install $(APT_PACKAGES)"; exit 1; fi; \
	fi

registry-dep:
	@command -v docker-registry >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; \
	  else echo "docker-registry is missing: sudo apt-get install docker-registry"; exit 1; fi; }

# Bytecode, as `pip install` would leave it: an editable checkout under
# PYTHONDONTWRITEBYTECODE=1 would recompile occystrap's modules at every start (~40 ms).
bytecode: $(STAMP)
	@$(PY) -m compileall -q occystrap

demo: $(STAMP) registry-dep bytecode
	$(PY) -m tests.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check occystrap tests benchmarks tools
	$(VENV)/bin/ruff format --check occystrap benchmarks tools

types: $(STAMP)
	$(VENV)/bin/mypy

check: lint types

test: $(STAMP) system-deps check
	$(PY) -m pytest -q

# Each integrity and safety check removed in turn from a scratch copy: its tests must then fail
# (tools/mutants.py lists them). A few minutes; exit 1 if any mutation survives.
mutants: $(STAMP) system-deps
	$(PY) tools/mutants.py

bench: $(STAMP) system-deps bytecode
	$(PY) -m benchmarks.bench

# Under two minutes on 2 cores; its results go to bench-out/quick/, beside the full run's.
bench-quick: $(STAMP) system-deps bytecode
	$(PY) -m benchmarks.bench $(QUICK_ARGS) $(addprefix --scenario ,$(QUICK_SCENARIOS)) --out-dir bench-out/quick

# py-spy profiles of the big and five-layer fetches: tables and flame graphs in bench-out/profile/.
profile: $(BENCH_STAMP) system-deps bytecode
	$(PY) -m benchmarks.profiling

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache .mypy_cache .ruff_cache
