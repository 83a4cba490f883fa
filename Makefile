# Two commands on a fresh machine:
#   make run   -> set up .venv and run the default federated job on embedded data
#   make test  -> set up .venv (with the dev extra), lint, and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1
# Python caches each module's bytecode (.pyc) beside it on first import, unless
# PYTHONDONTWRITEBYTECODE is set, as it is in this machine's environment (CI's is alike). The
# install below writes no .pyc either, so every process of a run or test compiled torch,
# Ray and Flower from source: `import torch, flwr, ray, sklearn` 9.2 s of CPU instead of
# 3.9, and a 2-round digits job on the simulation engine (a dozen Python processes) 84-90
# CPU-s and 50-65 s instead of 35 CPU-s and 27 s (1 Dec, quiet machine). The .venv and
# the checkout's __pycache__ (git-ignored; the FAB is staged without it) are this
# project's own, so what make starts may write them.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup system-deps run test suite lint bench clean

# The install runs through uv, with the sources and constraints pip is configured with
# here (.ci/uv_install.py reads them from pip at run time): fresh clone on the 2-core
# machine, 28 s (load 2) and 62 s (load 3, other developers' jobs) instead of 115 s
# with pip (load 1), the same 143 package versions. uv's --compile-bytecode cost 92 s
# (load 3): instead Python writes the .pyc files of what it imports (see above), about
# half of each big package. uv is pinned to the
# range flwr 1.42 requires (it is one of its dependencies). Plain pip if uv fails.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	{ $(PY) -m pip install -q 'uv>=0.13.5,<0.14' && $(PY) .ci/uv_install.py -q -e '.[dev]'; } \
	  || { $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]'; }
	touch $(STAMP)

# nginx: the Fleet-only proxy of the deployment layout (deploy/proxy.sh, tests/deploy).
# Installed from the distribution (Debian/Ubuntu) when missing; as root or with sudo.
system-deps:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends nginx; }

setup: $(STAMP) system-deps

run: $(STAMP)
	$(VENV)/bin/feddistill run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check feddistill tests
	$(VENV)/bin/ruff format --check feddistill tests
	$(VENV)/bin/mypy feddistill

# The suite runs on PYTEST_WORKERS pytest-xdist workers. --dist loadfile gives each test
# file to one worker, so a module-scoped fixture (one deployment, one Ray instance) is
# built once. (Not loadgroup: with pytest 9.2 it silently stops grouping, pytest-xdist
# issue #1386.) --no-loadscope-reorder keeps tests/conftest.py's order, files holding a
# slow test first, so the long single-test files (hard kill, e2e, two-node cluster) do
# not run last, one worker alone. This failed on 30 Nov (Ray start-ups side by side
# timed out); the cause was Ray's workers at nice 15 starved by the other pytest
# workers, fixed by RAY_worker_niceness=0 in tests/conftest.py. Measured 30 Nov, same
# clone, one after the other: 854 s of pytest with it, 1042 s without (both passed).
# `make test` runs lint and the suite side by side (-j2): mypy is one process, so the
# cores are shared instead of one idling through lint (their few lines may interleave).
# Either failing fails `make test`.
# 3 workers on 2 cores: many tests wait on processes they started (Ray, Flower), so a
# third worker fills that time (measured, fresh clone: 623 s of pytest vs 752 s with 2).
PYTEST_WORKERS ?= 3
test: $(STAMP) system-deps
	$(MAKE) --no-print-directory -j2 lint suite

suite: $(STAMP)
	$(VENV)/bin/pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/feddistill bench compression
	$(VENV)/bin/feddistill bench fed

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache .mypy_cache
