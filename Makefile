# The two commands of the quick start: `make test` and `make serve`.
# torch is pinned to the CPU wheel first so pip never resolves a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data

.PHONY: install test lint serve bench data clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,bench,postgres]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

serve: install
	$(PY) -m service --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

bench: install
	$(PY) benchmarks/bench_losses.py

# Optional data: Fashion-MNIST's official IDX files from Debian (for --dataset fashion-mnist).
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y dataset-fashion-mnist; \
	    else sudo apt-get install -y dataset-fashion-mnist; fi; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
