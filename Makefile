# Two commands: `make lab` opens the course, `make test` runs every test.
# The first run creates .venv (CPU-only PyTorch) and installs everything.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: lab app test test-unit test-notebooks test-colab test-cpus bench clean browser figures glossary-figures

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# the CPU build of torch first: a later ">=" requirement is then already met
	$(PY) -m pip install --quiet $(TORCH) "uv>=0.13.5,<0.14"
	# uv (Flower depends on it: the range is Flower's) installs the rest about twice as fast as pip; the CPU torch
	# above already meets ">=2.6", so nothing replaces it. Bytecode is compiled here, once (uv's
	# --compile-bytecode, and compileall for the course's own modules): where PYTHONDONTWRITEBYTECODE is set (the
	# machine our timings come from sets it) Python never caches it, and every process (test worker, notebook
	# kernel, Ray worker) would compile every module it imports again: 8 s instead of 3.5 s to import torch,
	# gleak_edu and matplotlib
	$(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -e ".[lab,app,test,scale,fl]"
	$(PY) -m compileall -q gleak_edu
	@$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA torch was installed'; print('torch', torch.__version__, 'CPU build')"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The workshop's attack playground as a web app (Voila) on http://localhost:8866;
# `make app APP_IP=0.0.0.0` serves it to the room (anyone on the network can then run code on it).
APP_IP ?= 127.0.0.1
app: $(STAMP)
	$(VENV)/bin/voila app/playground.ipynb --port=8866 --no-browser --Voila.ip=$(APP_IP)

# Debian's Chromium for the real-browser test (tests/test_browser.py), installed when we are root with
# apt-get; anywhere else the test is skipped with a message saying why. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "Chromium not installed (needs root and apt-get): the browser test will be skipped"

# make test, in the order that keeps two cores busy (about 25 minutes on a 2-core CPU from a fresh clone, with the
# install):
# 1. the unit tests in two pytest-xdist workers (a test file stays on one worker), while the Colab-like venv
#    (tests/colab_env.py: Colab's pinned packages, the course installed under them) builds in the background;
# 2. the real-browser test alone (its timed waits need a quiet machine);
# 3. notebooks 02-08 under nbval in two workers, beside notebook 01 and the widget tests in the Colab-like venv
#    (notebook 01 runs there, under Colab's IPython 7.34 and ipywidgets 7.7, and not twice).
# COLAB=0 (a lab without a package index: the Colab-like venv downloads Colab's versions) skips the Colab-like
# venv and runs notebook 01 here. TEST_JOBS=1 runs each step in one process.
TEST_JOBS ?= 2
COLAB ?= 1
COLAB_VENV := build/colab-venv
NOTEBOOK_01 := notebooks/01_dlg_idlg.ipynb
# The unit test files go to the two workers slowest first (the Ray and Flower files after two that only compute,
# away from the Colab-like venv's build at the start), so that the workers finish together; every other file
# follows
SLOWEST_TESTS := $(addprefix tests/test_,grnn.py inverting.py flower.py arena.py text.py dpsgd.py attacks.py \
  precode_cli_training.py cli.py scale.py accounting_hardening.py)
UNIT_TESTS := $(foreach t,$(SLOWEST_TESTS),$(filter $(t),$(wildcard tests/test_*.py))) \
  $(filter-out $(SLOWEST_TESTS) tests/test_browser.py,$(wildcard tests/test_*.py))
UNIT := $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
NBVAL := $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --nbval-lax --nbval-current-env
# nbval takes the notebooks in this order, the slowest first (measured under nbval in two workers), so that the
# two workers finish together; any notebook not named here follows
SLOWEST_NOTEBOOKS := $(addprefix notebooks/,02_grnn.ipynb 06_transformer_leakage.ipynb 07_defense_arena.ipynb \
  05_dp_fixed_vs_dynamic.ipynb 08_flower.ipynb)
NOTEBOOKS := $(foreach n,$(SLOWEST_NOTEBOOKS),$(filter $(n),$(wildcard notebooks/*.ipynb))) \
  $(filter-out $(SLOWEST_NOTEBOOKS),$(wildcard notebooks/*.ipynb))
test: $(STAMP) browser
	@mkdir -p build && rm -f $(COLAB_VENV).status
	@if [ "$(COLAB)" = 1 ]; then echo "building the Colab-like venv in the background (build/colab-build.log)"; \
	  $(PY) tests/colab_env.py build $(COLAB_VENV) > build/colab-build.log 2>&1 & fi
	$(UNIT) $(UNIT_TESTS)
	$(PY) -m pytest tests/test_browser.py
	@if [ "$(COLAB)" != 1 ]; then set -x; $(NBVAL) $(NOTEBOOKS); exit $$?; fi; \
	$(PY) tests/colab_env.py check $(COLAB_VENV) > build/colab-check.log 2>&1 & colab=$$!; \
	set -x; $(NBVAL) $(filter-out $(NOTEBOOK_01),$(NOTEBOOKS)); nb=$$?; set +x; \
	wait $$colab; rc=$$?; echo "== the Colab-like venv: build/colab-build.log (end), build/colab-check.log"; \
	tail -n 12 build/colab-build.log; cat build/colab-check.log; \
	[ $$nb -eq 0 ] && [ $$rc -eq 0 ]

# Colab as it really is, alone: a fresh venv with Colab's pins (binder/colab-constraints.txt), the course on top,
# nothing pinned may change; then the widget and panel tests and notebook 01 in it.
test-colab: $(STAMP)
	@mkdir -p build
	$(PY) tests/colab_env.py build $(COLAB_VENV)
	$(PY) tests/colab_env.py check --timed $(COLAB_VENV)

test-unit: $(STAMP)
	$(UNIT) $(UNIT_TESTS)
	$(PY) -m pytest tests/test_browser.py

# The unit tests again under other CPU kernels (PyTorch's ATEN_CPU_CAPABILITY): a seeded optimisation
# takes another path with other vector instructions, and the suite must pass on any x86-64 CPU.
# CPU_CAPABILITIES=default make test-cpus runs one of them.
CPU_CAPABILITIES ?= default avx2
test-cpus: $(STAMP)
	@for cap in $(CPU_CAPABILITIES); do \
	  echo "== unit tests with ATEN_CPU_CAPABILITY=$$cap"; \
	  ATEN_CPU_CAPABILITY=$$cap $(PY) -m pytest tests -q -p no:cacheprovider || exit 1; \
	done

test-notebooks: $(STAMP)
	$(NBVAL) $(NOTEBOOKS)

# Benchmark suite (benchmarks/): every attack against a plain reference loop, peak memory, batched
# restarts; writes benchmarks/results.json and build/benchmarks.md (the README's Performance tables).
# BENCH_ARGS=--quick for a 3-minute smoke run. bench-notebooks adds the notebooks' run costs (slow).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py --markdown build/benchmarks.md $(BENCH_ARGS)

.PHONY: bench-notebooks
bench-notebooks: $(STAMP)
	$(PY) benchmarks/run_all.py --notebooks-only --markdown build/benchmarks.md $(BENCH_ARGS)

# The lecturer's figure bank: every figure saved in the executed notebooks (read from their outputs, nothing is
# re-run) as build/figures/NN_<section>_<k>.png, with build/figures/index.md listing notebook and section.
figures: $(STAMP)
	$(PY) -m gleak_edu.figures --out build/figures

# The glossary's pictures (docs/img/psnr_levels.png, docs/img/ssim_levels.png; committed, checked by
# tests/test_glossary_figures.py), regenerated through gleak_edu.viz.quality.
glossary-figures: $(STAMP)
	$(PY) -m gleak_edu.figures --glossary

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
