# Two commands: `make lab` opens the course, `make test` runs every test.
# The first run creates .venv (CPU-only PyTorch) and installs everything.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: lab app test test-unit test-notebooks test-cpus bench clean browser figures glossary-figures

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# the CPU build of torch first: a later ">=" requirement is then already met
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[lab,app,test,scale,fl]"
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

# Two pytest workers (pytest-xdist; a test file, or a notebook, stays on one worker), the real-browser test
# alone afterwards (its timed waits need a quiet machine). TEST_JOBS=1 runs everything in one process.
TEST_JOBS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --ignore=tests/test_browser.py tests
	$(PY) -m pytest tests/test_browser.py
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --nbval-lax --nbval-current-env notebooks/

test-unit: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --ignore=tests/test_browser.py tests
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
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --nbval-lax --nbval-current-env notebooks/

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
