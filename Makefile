# The README's two commands: `make run` and `make test`. CI runs `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# llama.cpp must not be built with -march=native here: the CPU advertises AMX that the
# kernel does not enable ("Illegal instruction"). pip caches the wheel after the first build.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev browser haproxy lint bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[local]"

install-dev: $(PY)
	$(PY) -m pip install --quiet -e ".[local,dev]"

run: install
	$(VENV)/bin/sessiongate serve --host $(HOST) --port $(PORT)

browser:
	./scripts/ensure-chromium.sh

# The fleet tests (tests/fleet/) put Debian's HAProxy in front of several gateways.
haproxy:
	./scripts/ensure-haproxy.sh

test: install-dev browser haproxy
	$(PY) -m pytest
	@echo "Browser screenshots: build/screenshots/"

lint: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: install-dev
	$(PY) bench/local_model.py
