# devicetrust: two commands matter, `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test lint format deps system-deps bench mutation docs package clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[agent,server,test]'
	rm -f $(VENV)/.installed-*
	touch $@

deps: $(STAMP)

## run: start the IdP on 127.0.0.1:8000 with a local agent enrolled to it (Ctrl-C stops both;
##      PORT=9000 for another port, VERBOSE=1 for every log line)
run: $(STAMP)
	$(BIN)/devicetrust demo $(if $(PORT),--port $(PORT)) $(if $(VERBOSE),--verbose)

## system-deps: Debian packages the tests need (installed only when run as root)
system-deps:
	bash packaging/system-deps.sh

## test: install everything the tests need, lint, then run the whole suite
##       (in parallel: TEST_WORKERS=auto by default, one per core; TEST_WORKERS=0 for one process)
TEST_WORKERS ?= auto
test: system-deps $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=30 $(PYTEST_ARGS)

## package: the self-contained agent (PyInstaller) and its .deb and .rpm, into dist/
##          (packaging/linux/build-packages.sh; FORMATS=deb for the .deb only)
package: system-deps $(STAMP)
	PY=$(BIN)/python bash packaging/linux/build-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/verify.py

## mutation: mutation-test the security-critical modules (slow; not part of `make test`).
## MUTATION_ARGS="--module scim/auth.py" runs one, "--changed" those touched since main.
mutation: $(STAMP)
	$(BIN)/python tests/mutation/run.py $(MUTATION_ARGS)

## docs: render docs/architecture.svg and docs/deploy.svg from their Graphviz sources (Debian's graphviz)
docs: docs/architecture.svg docs/deploy.svg

docs/architecture.svg: docs/architecture.dot
	dot -Tsvg $< | sed "1a <!-- source: docs/architecture.dot sha256=$$(sha256sum $< | cut -c1-64) -->" > $@

docs/deploy.svg: docs/deploy.dot
	dot -Tsvg $< | sed "1a <!-- source: docs/deploy.dot sha256=$$(sha256sum $< | cut -c1-64) -->" > $@

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts mutants
