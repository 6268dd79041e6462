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

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

interop-setup: $(INTEROP_VENV)/.installed

$(INTEROP_VENV)/.installed: Makefile
	test -x $(INTEROP_VENV)/bin/python || $(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "libp2p==$(PYLIBP2P_VERSION)" "kademlia==$(KADEMLIA_VERSION)"
	touch $@

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
