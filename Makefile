# Quick start: `make demo` and `make test`. Both set up what they need on a
# fresh machine with only Python 3.11, and are quick once it is set up.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# py-libp2p is our interoperability peer; it lives in its own environment so
# that its pins never constrain ours.
INTEROP_VENV := .venv-interop
PYLIBP2P_VERSION := 0.8.1
# The `kademlia` package (asyncio, UDP): the DHT bench's in-process baseline.
KADEMLIA_VERSION := 2.2.3

# jco and componentize-js build the JavaScript capsule scaffold in the tests
# (capsules/build.py names the same releases); installed only where npm is.
JS_TOOLS := .js-tools
JS_PACKAGES := @bytecodealliance/jco@1.15.4 @bytecodealliance/componentize-js@0.18.5

.PHONY: demo test bench setup interop-setup js-setup clean

setup: $(VENV)/.installed

# One line per step: pip says something (-qq) only when a step fails.
PIP_QUIET := --quiet --quiet --disable-pip-version-check

$(VENV)/.installed: pyproject.toml
	@echo "setup: creating $(VENV) with $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: upgrading pip"
	@$(BIN)/python -m pip install $(PIP_QUIET) --upgrade "pip>=24"
	@echo "setup: installing hypermesh and its test tools into $(VENV) (about 30 s the first time)"
	@$(BIN)/python -m pip install $(PIP_QUIET) -e '.[test]'
	@touch $@
	@echo "setup: done; the hypermesh command is $(BIN)/hypermesh"

interop-setup: $(INTEROP_VENV)/.installed

$(INTEROP_VENV)/.installed: Makefile
	@echo "setup: creating $(INTEROP_VENV) with py-libp2p $(PYLIBP2P_VERSION) and kademlia $(KADEMLIA_VERSION), our interop peers"
	@test -x $(INTEROP_VENV)/bin/python || $(PYTHON) -m venv $(INTEROP_VENV)
	@$(INTEROP_VENV)/bin/python -m pip install $(PIP_QUIET) "libp2p==$(PYLIBP2P_VERSION)" "kademlia==$(KADEMLIA_VERSION)"
	@touch $@

js-setup: $(JS_TOOLS)/.installed

$(JS_TOOLS)/.installed: Makefile
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix $(JS_TOOLS) $(JS_PACKAGES) && touch $@; \
	else echo "npm not found: the JavaScript capsule test will be skipped"; fi

demo: setup
	$(BIN)/python -m hypermesh.node.demo

test: setup interop-setup js-setup
	HYPERMESH_INTEROP_PY=$(abspath $(INTEROP_VENV))/bin/python \
		$(BIN)/python -m pytest -n 2 -q

bench: setup interop-setup
	HYPERMESH_INTEROP_PY=$(abspath $(INTEROP_VENV))/bin/python $(BIN)/python bench/transport.py

clean:
	rm -rf $(VENV) $(INTEROP_VENV) $(JS_TOOLS) build *.egg-info
