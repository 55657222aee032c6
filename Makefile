# The two commands: `make run` (the whole platform) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-cloud run test fuzz lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cloud]'
	@touch $(STAMP)

# The cloud provider packages (the `cloud` extra: the Pulumi programs in infra/ and their
# mock tests) are part of `install`: ~50 s and ~1 GB more. Kept as a name for old habits.
install-cloud: install

run: install
	$(BIN)/idp dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The API fuzz test at length (`make test` runs it with a few examples per operation).
fuzz: install
	IDP_FUZZ_EXAMPLES=$${IDP_FUZZ_EXAMPLES:-150} $(BIN)/python -m pytest tests/security/test_api_fuzz.py $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
