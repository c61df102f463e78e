# Two commands for users: `make demo` and `make test`. Each installs what it needs on
# a bare Debian 12 machine (apt packages, .venv, pip packages) and is quick when
# everything is already there (stamp files under .stamps/).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := .stamps
APT_PACKAGES := gnuradio gnuradio-dev python3-venv python3-pip python3-setuptools python3-scipy \
                python3-matplotlib python3-zmq cmake g++ gcc make libfftw3-dev pkg-config \
                chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY_SOURCES := $(shell find python training lib -name "*.py" -o -name "*.c" -o -name "*.onnx" -o -name "*.card.json") \
              pyproject.toml setup.py
PYTEST_ARGS ?=

.PHONY: demo test deps bench clean distclean

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

$(STAMPS)/pip: $(STAMPS)/venv requirements-test.txt constraints.txt
	@echo "== pip: test and runtime packages (numpy<2 for GNU Radio)"
	@$(PIP) install -q --disable-pip-version-check -c constraints.txt -r requirements-test.txt
	@touch $@

$(STAMPS)/installed: $(STAMPS)/pip $(PY_SOURCES)
	@echo "== installing gr-rfdetect into $(VENV)"
	@$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation . 2>&1 | grep -v "^\s*$$" || true
	@$(PY) -c "from gnuradio import rfdetect; rfdetect.stft_tile"
	@$(PY) -c "from gnuradio.rfdetect.dsp import compiled_rows; compiled_rows.load()"
	@touch $@

test: deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: deps
	@$(VENV)/bin/rfdetect-demo

# the quick benchmarks; bench/realtime.py (about 8 min) and bench/memory.py (30 min) run by hand
bench: deps
	$(PY) bench/stft.py
	$(PY) bench/models.py
	$(PY) bench/latency.py
	$(PY) bench/quality.py

clean:
	rm -rf build demo_out .pytest_cache $(STAMPS)/installed

distclean: clean
	rm -rf $(VENV) $(STAMPS)
