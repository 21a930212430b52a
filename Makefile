# citystream: two commands on a fresh machine —  `make demo`  and  `make test`.
# Both run `make setup` first, which installs only what is missing (deploy/local/setup.sh).

VENV := .venv
BIN := $(VENV)/bin
CS := $(BIN)/citystream
DEMO_SECONDS ?= 60

.PHONY: setup demo test lint typecheck pytest stack-up stack-down clean images

setup:
	@bash deploy/local/setup.sh

demo: setup
	$(CS) stack up
	@if ! kill -0 "$$(cat .citystream/console.pid 2>/dev/null)" 2>/dev/null; then mkdir -p .citystream/logs; nohup $(CS) console --demo-login >> .citystream/logs/console.log 2>&1 & echo $$! > .citystream/console.pid; fi
	$(CS) stack pipeline stop
	$(CS) demo --duration $(DEMO_SECONDS)
	$(CS) stack pipeline start --demo-watchlist

test: setup lint typecheck pytest

lint:
	$(BIN)/ruff check .

# mypy sees the one `citystream` namespace through a generated tree of links
# (the package-dir mapping is an install-time view that mypy cannot follow).
typecheck:
	@rm -rf .build/typecheck && mkdir -p .build/typecheck/citystream
	@cp -rs $(CURDIR)/citystream/. .build/typecheck/citystream/
	@for d in ingest processors sinks schemas bench console; do ln -s $(CURDIR)/$$d .build/typecheck/citystream/$$d; done
	cd .build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p citystream

pytest:
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# One image per role (Dockerfile targets), tagged citystream-<role>:<version>; needs a Docker engine.
IMAGE_ROLES := gateway simulator bridge worker sink console
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_PREFIX ?= citystream
images:
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine reachable (docker info failed)" >&2; exit 1; }
	@for role in $(IMAGE_ROLES); do \
	  echo "building $(IMAGE_PREFIX)-$$role:$(IMAGE_TAG)"; \
	  docker build --target $$role -t $(IMAGE_PREFIX)-$$role:$(IMAGE_TAG) . || exit 1; \
	done

stack-up: setup
	$(CS) stack up

# Stops the live pipeline and the console that `make demo` leaves running, then Mosquitto and Kafka.
stack-down:
	$(CS) stack down

clean:
	-$(CS) stack down
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
