# Two entry points: `make app` (dashboard on the embedded default) and `make test` (whole suite).
# Both create the virtual environment first if it is missing or older than pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch wheels to install; override on another machine, e.g. make TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PORT ?= 8501

.PHONY: app test env browser demo bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

env: $(VENV)/.installed

# Debian's chromium serves Plotly's static export (kaleido) and the real-browser tests.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	    elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	    else echo "chromium not found and not root: install Debian's 'chromium' package for figure export and browser tests"; fi; }

app: env
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: env browser
	$(PY) -m pytest -q

demo: env
	$(VENV)/bin/dat demo

# Every speed ratio side by side in one run (bench/run_all.py): a table, and the CSV it writes.
# BENCH_ARGS="--quick" checks that it runs; BENCH_ARGS="--paper" adds DAT-Full at the paper's size.
bench: env
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/run_all.py $(BENCH_ARGS)
