# Every target creates the virtual environment and installs the pinned packages when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXP ?= seq
DATA_DIR ?= $(firstword $(wildcard ../shared/data))
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)
ARGS ?=
TEST_WORKERS ?= 2

.PHONY: install test test-fast reproduce lint docs train bench ablations report tour clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The whole suite in TEST_WORKERS processes (pytest-xdist): about 9 minutes on 2 cores, 19 in one process.
test: install
	RNN_JAX_DATA_DIR=$${RNN_JAX_DATA_DIR:-$(DATA_DIR)} $(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

# The edit loop: every test not marked slow (pyproject.toml's markers), in under a minute on one core.
test-fast: install
	RNN_JAX_DATA_DIR=$${RNN_JAX_DATA_DIR:-$(DATA_DIR)} $(PY) -m pytest -q -m "not slow" $(ARGS)

# The book's whole 500-epoch runs, both schemes side by side, checked against its figures (about 3 minutes on 2 cores).
reproduce: install
	RNN_JAX_DATA_DIR=$${RNN_JAX_DATA_DIR:-$(DATA_DIR)} $(PY) -m pytest -q --full -m full $(ARGS)

# ruff's rules and its formatting, then mypy's type check (pyproject.toml's [tool.mypy]).
lint: install
	$(PY) -m ruff check rnn_jax tests experiments docs
	$(PY) -m ruff format --check rnn_jax tests experiments docs
	$(PY) -m mypy

train: install
	$(PY) -m rnn_jax.train --exp $(EXP) $(DATA_FLAG) $(ARGS)

# Writes experiments/results/bench/<UTC time>.txt (the printed report) and .json (every figure, with the host's CPU,
# XLA flags and measured limit); `python -m rnn_jax.bench.compare A.json B.json` sets hosts side by side.
bench: install
	mkdir -p experiments/results/bench
	$(PY) -m rnn_jax.bench $(DATA_FLAG) --out experiments/results/bench/$$(date -u +%Y%m%dT%H%M%SZ) $(ARGS)

# The book's exercises over several seeds (about an hour on 2 cores), the held-out sweep (about an hour), tiny
# Shakespeare (26-47 minutes per 1x512 LSTM run, about twice that per 1x768 one, ~10 per run of the recurrences'
# race; 4 runs per model, resumable), its levers and the recurrences' probes on validation (8 epochs each, 5-10
# minutes on 2 cores; then the candidate at its full 32), then the report.
ablations: install
	$(PY) experiments/ablations.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/gated.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/sampling.py $(DATA_FLAG)
	$(PY) experiments/other_books.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/hparams.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/book_random.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/heldout.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/shakespeare.py $(DATA_FLAG) $(ARGS)
	$(PY) experiments/shakespeare_levers.py $(DATA_FLAG)
	$(PY) experiments/shakespeare_levers.py --epochs 32 --levers lstm-1x768-reset-0.1 $(DATA_FLAG)
	$(PY) experiments/report.py

# Regenerates docs/cli.md from the command-line parsers and the Config fields' help.
docs: install
	$(PY) -m rnn_jax.clidoc > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

# Regenerates experiments/RESULTS.md, its figures and the README's results table from experiments/results/*.json.
report: install
	$(PY) experiments/report.py

# Executes docs/tour.ipynb in a fresh kernel (from a temporary folder) and stores it with its outputs (under a minute).
tour: install
	RNN_JAX_DATA_DIR=$${RNN_JAX_DATA_DIR:-$(abspath $(DATA_DIR))} $(PY) docs/execute.py docs/tour.ipynb

clean:
	rm -rf $(VENV) runs .pytest_cache
