# speechllm: `make install` then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: install test test-all bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	bash tools/install_debian_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	$(PY) -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)"
	touch $@

# The default suite: unit tests plus the tiny end-to-end recipe smoke test.
test: install
	$(PY) -m pytest -q tests

# Also runs the tests marked slow (longer recipe runs).
test-all: install
	$(PY) -m pytest -q -m "slow or not slow" tests

# Speed and memory: the mini recipe's ASR model (training throughput, decoding RTF) and
# feature extraction per encoder family, CPU training under glibc malloc vs jemalloc; results in
# bench/results/.
bench: install
	$(PY) bench/run_bench.py
	$(PY) bench/encoder_features.py
	$(PY) bench/sllm_bench.py
	$(PY) bench/sllm_bench.py --jobs 2 --projectors ctc_text --repeats 10
	$(PY) bench/allocator_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
