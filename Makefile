# Two commands on a fresh machine: `make demo` dissects the shipped model and ranks layer4's units by causal
# effect on every concept (for the painter), `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test lint browser clean fuzz

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/gandissect dissect --model scenes64 --out $(RUN) --force
	$(BIN)/gandissect causal $(RUN) --layer layer4 --concept all --samples 48 --set-samples 16

browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report's browser tests will be skipped"

test: $(BIN)/.installed browser
	$(BIN)/python -m pytest

fuzz: $(BIN)/.installed  # a longer, randomised run of the painter's schema fuzz test (CI runs a fixed one)
	GANDISSECT_FUZZ_RANDOM=1 GANDISSECT_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest tests/test_painter_schema.py

lint: $(BIN)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
