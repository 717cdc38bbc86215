# Two commands: `make lab` opens the course, `make test` runs every test.
# The first run creates .venv (CPU-only PyTorch) and installs everything.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: lab test test-unit test-notebooks bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# the CPU build of torch first: a later ">=" requirement is then already met
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[lab,test]"
	@$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA torch was installed'; print('torch', torch.__version__, 'CPU build')"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

test: $(STAMP)
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax --nbval-current-env notebooks/

test-unit: $(STAMP)
	$(PY) -m pytest tests

test-notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_dlg.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
