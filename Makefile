# Two commands for users: `make demo` and `make test`. Each installs what it needs on
# a bare Debian 12 machine (apt packages, .venv, pip packages), builds the native side
# with CMake, and is quick when everything is already there (stamp files under .stamps/).
#
# How .venv gets the native side: pip installs the package (pure Python, the kernel
# modules _stft_rows, _pulse_contrast and _carrier_power, the console commands); CMake builds gr-rfdetect/ in build/cmake and
# `native` copies the C++ block module (rfdetect_python*.so) into the package pip
# installed, in pip's RECORD (or into python/rfdetect/ for a `pip install -e .`;
# gr-rfdetect/tools/install_block_module.py), where it loads libgnuradio-rfdetect from
# build/cmake through its build-tree RPATH.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := .stamps
APT_PACKAGES := gnuradio gnuradio-dev python3-venv python3-pip python3-setuptools python3-scipy \
                python3-matplotlib python3-zmq cmake g++ gcc make libfftw3-dev pkg-config \
                chromium chromium-driver pybind11-dev g++-aarch64-linux-gnu
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY_SOURCES := $(shell find python training -name "*.py" -o -name "*.onnx" -o -name "*.card.json") \
              gr-rfdetect/lib/stft_rows.cc gr-rfdetect/include/gnuradio/rfdetect/stft_rows.h \
              gr-rfdetect/python/bindings/stft_rows_python.cc gr-rfdetect/lib/pulse_contrast.cc \
              gr-rfdetect/include/gnuradio/rfdetect/pulse_contrast.h \
              gr-rfdetect/include/gnuradio/rfdetect/kernel_api.h \
              gr-rfdetect/python/bindings/pulse_contrast_python.cc gr-rfdetect/lib/carrier_power.cc \
              gr-rfdetect/include/gnuradio/rfdetect/carrier_power.h gr-rfdetect/lib/radix_median.h \
              gr-rfdetect/lib/pow10.h \
              gr-rfdetect/python/bindings/carrier_power_python.cc \
              gr-rfdetect/python/bindings/float32_tile.h pyproject.toml setup.py
CMAKE_BUILD := build/cmake
NATIVE_SOURCES := $(shell find gr-rfdetect -type f) CMakeLists.txt
PYTEST_ARGS ?=

.PHONY: demo test deps native bench clean distclean

deps: $(STAMPS)/installed

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "== apt: installing $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: $(STAMPS)/apt
	@[ -x $(PY) ] || { echo "== creating $(VENV) from /usr/bin/python3 (sees Debian's GNU Radio)"; \
	  /usr/bin/python3 -m venv --system-site-packages $(VENV); }
	@touch $@

# PyTorch's CUDA wheels (the CPU-only torch has no matching torchvision) make .venv ~5.7 GB:
# say so up front rather than fail half-way with "No space left on device"
PIP_NEEDS_GB := 6

$(STAMPS)/pip: $(STAMPS)/venv requirements-test.txt constraints.txt
	@for d in $(VENV) $${TMPDIR:-/tmp}; do \
	  free=$$(df -Pk "$$d" | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(PIP_NEEDS_GB) ]; then \
	    echo "error: pip needs about $(PIP_NEEDS_GB) GB free for the test and runtime packages (PyTorch with CUDA);" \
	         "$$d has $$free GB: free some space and run make again" >&2; exit 1; fi; \
	done
	@echo "== pip: test and runtime packages (numpy<2 for GNU Radio)"
	@$(PIP) install -q --disable-pip-version-check -c constraints.txt -r requirements-test.txt
	@touch $@

$(STAMPS)/installed: $(STAMPS)/pip $(PY_SOURCES)
	@echo "== installing gr-rfdetect into $(VENV)"
	@$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation . 2>&1 | grep -v "^\s*$$" || true
	@$(PY) -c "from gnuradio import rfdetect; rfdetect.stft_tile"
	@$(PY) -c "from gnuradio.rfdetect.dsp import compiled_rows; compiled_rows.load()"
	@$(PY) -c "from gnuradio.rfdetect.inference import pulse_detector; pulse_detector.load_kernel()"
	@$(PY) -c "from gnuradio.rfdetect.inference import carrier_detector; carrier_detector.KERNEL.load()"
	@touch $@

# the C++ blocks, their bindings and the kernel, built with GNU Radio's CMake modules
native: $(STAMPS)/native

$(STAMPS)/native: $(STAMPS)/installed $(NATIVE_SOURCES)
	@echo "== cmake: gr-rfdetect/ (C++ STFT Tile, bindings, kernel, QA) in $(CMAKE_BUILD)"
	@mkdir -p $(CMAKE_BUILD)
	@cmake -S . -B $(CMAKE_BUILD) -DPYTHON_EXECUTABLE=$(abspath $(PY)) >$(CMAKE_BUILD).log 2>&1 || \
	  { cat $(CMAKE_BUILD).log; exit 1; }
	@cmake --build $(CMAKE_BUILD) -j2 >>$(CMAKE_BUILD).log 2>&1 || { tail -50 $(CMAKE_BUILD).log; exit 1; }
	@$(PY) gr-rfdetect/tools/install_block_module.py $(CMAKE_BUILD)/test_modules/gnuradio/rfdetect
	@$(PY) -c "from gnuradio.rfdetect.blocks.stft_tile import native_block; assert native_block()"
	@touch $@

# ctest (C++ QA, the bound block's Python QA, the aarch64 compile check), then pytest
test: deps native
	cd $(CMAKE_BUILD) && ctest --output-on-failure
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: deps native
	@$(VENV)/bin/rfdetect-demo

# the quick benchmarks; bench/realtime.py (about 8 min) and bench/memory.py (30 min) run by hand
bench: deps native
	$(PY) bench/stft.py
	$(PY) bench/models.py
	$(PY) bench/latency.py
	$(PY) bench/quality.py

clean:
	rm -rf build demo_out .pytest_cache $(STAMPS)/installed $(STAMPS)/native

distclean: clean
	rm -rf $(VENV) $(STAMPS)
