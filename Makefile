# citystream: two commands on a fresh machine —  `make demo`  and  `make test`.
# Both run `make setup` first, which installs only what is missing (deploy/local/setup.sh).

VENV := .venv
BIN := $(VENV)/bin
CS := $(BIN)/citystream
DEMO_SECONDS ?= 60

.PHONY: setup demo test lint typecheck pytest stack-up stack-down clean

setup:
	@bash deploy/local/setup.sh

demo: setup
	$(CS) stack up
	$(CS) demo --duration $(DEMO_SECONDS)

test: setup lint typecheck pytest

lint:
	$(BIN)/ruff check .

# mypy sees the one `citystream` namespace through a generated tree of links
# (the package-dir mapping is an install-time view that mypy cannot follow).
typecheck:
	@rm -rf .build/typecheck && mkdir -p .build/typecheck/citystream
	@cp -rs $(CURDIR)/citystream/. .build/typecheck/citystream/
	@for d in ingest processors sinks schemas bench; do ln -s $(CURDIR)/$$d .build/typecheck/citystream/$$d; done
	cd .build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p citystream

pytest:
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

stack-up: setup
	$(CS) stack up

stack-down:
	$(CS) stack down

clean:
	-$(CS) stack down
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
