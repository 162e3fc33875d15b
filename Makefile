# make demo  - set up (once) and run the main job on an embedded default
# make test  - set up (once) and run the whole test suite
# make bench - set up (once) and run the benchmarks
# make sim   - set up (once) and run the deterministic simulator (docs/simulation.md):
#              make sim SEEDS=1..200 NODES=6, make sim SEED=17 (replay), make sim NODES=1000 (scale)
# make fuzz TARGET=wire SECONDS=60 - fuzz one decoder (docs/fuzzing.md); `make fuzz` lists them
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

TEST_WORKERS ?= 2  # pytest-xdist processes for make test (a file to a worker); 0: in this process
SEEDS  ?= 1..20
NODES  ?= 6

.PHONY: demo test bench sim fuzz clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "p2pnode needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP)
	@# Byte-compile the sources once: where PYTHONDONTWRITEBYTECODE is set, every CLI and
	@# node process a test starts would otherwise compile them again.
	@$(PY) -m compileall -q protocol p2pnode cli sim tests examples >/dev/null
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/ledger.py
	$(PY) bench/sync.py
	$(PY) bench/idle.py
	$(PY) bench/gossip.py
	$(PY) bench/node.py
	$(PY) bench/agree.py
	$(PY) bench/credit.py
	$(PY) bench/portfolio.py

sim: $(STAMP)
	$(PY) -m sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS)) --nodes $(NODES) $(SIM_ARGS)

FUZZ_STAMP := $(VENV)/.installed-fuzz
TARGET  ?=
SECONDS ?= 60

$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,fuzz]'
	@touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP)
	$(PY) -m fuzz $(TARGET) $(if $(TARGET),-max_total_time=$(SECONDS) -print_final_stats=1)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
