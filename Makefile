# Two entry points for people: `make demo` (set up and run) and `make test` (set up and test);
# `make bench` measures speed beside peers (JSON in bench-results/).
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup system-deps serve demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml api/static/viewer/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	./scripts/viewer-assets.sh
	touch $@

system-deps:
	./scripts/system-deps.sh

serve: setup
	$(BIN)/marrowlink serve

demo: setup
	$(BIN)/marrowlink demo

test: setup system-deps
	./scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup system-deps
	mkdir -p bench-results
	for b in wsi store ai mllp; do \
		TF_USE_LEGACY_KERAS=1 SM_FRAMEWORK=tf.keras TF_CPP_MIN_LOG_LEVEL=2 \
			$(BIN)/marrowlink bench $$b --json > bench-results/$$b.json || exit 1; \
		echo "bench-results/$$b.json"; \
	done
