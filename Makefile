# pycontainerd — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := runc containerd busybox-static docker-registry skopeo docker.io containernetworking-plugins iproute2 iptables
STAMP := $(VENV)/.installed

.PHONY: all deps venv proto unasync check lint typecheck test test-unit test-integration fuzz demo bench clean

all: test

# System packages the daemon and the tests use; installed only when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

proto: $(STAMP)
	$(PY) tools/genproto.py

unasync: $(STAMP)
	$(PY) tools/unasync.py

# Generated code must match its sources.
check: $(STAMP)
	$(PY) tools/genproto.py --check
	$(PY) tools/unasync.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/lint-imports --no-logo

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: deps $(STAMP) check lint typecheck
	$(VENV)/bin/pytest -q

test-unit: $(STAMP)
	$(VENV)/bin/pytest -q -m unit

test-integration: deps $(STAMP)
	$(VENV)/bin/pytest -q -m "integration or interop"

# The long fuzz pass: FUZZ_MINUTES of hypothesis (tar reader and applier,
# filter language, live daemon request decoding, HTTP/2 frame parser, small
# parsers) and, when it installs, atheris; `make test` runs the short pass
# of the same targets.
FUZZ_MINUTES ?= 10

fuzz: deps $(STAMP)
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q -e '.[dev,fuzz]' \
	  || echo "atheris did not install: the pass runs on hypothesis alone"
	$(PY) -m tests.fuzz.run --minutes $(FUZZ_MINUTES)

demo: deps $(STAMP)
	$(PY) tools/demo.py

bench: deps $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
