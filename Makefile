# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make install` builds .venv/ from nothing; every pip call goes through constraints.txt
# (torch pinned to the local CPU wheel; lava-nc's numpy/scipy/networkx limits).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PIPC := $(PIP) install -q -c constraints.txt

.PHONY: install test demo clean lava-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIPC) torch==2.13.0
	# lava-nc 0.10.0 declares Python <3.11; snncompile.lava_compat fixes its one 3.11 issue.
	$(PIPC) --ignore-requires-python lava-nc==0.10.0
	# These declare torchvision/torchaudio, which would pull a CUDA torch: install without deps.
	$(PIPC) --no-deps spikingjelly==2.0.0 norse==1.1.0
	$(PIPC) -e '.[test,ray]'
	$(PY) -m snncompile.lava_compat
	# numba compiles the emulator's event kernel on first use (about a minute): do it now.
	$(PY) -m snncompile.targets.emulator
	touch $@

lava-check: install
	$(PY) -m snncompile.lava_compat

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/snncompile demo

clean:
	rm -rf $(VENV) build *.egg-info
