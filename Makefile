# The two commands: `make run` (the whole platform) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-cloud run test fuzz lint format bench reset clean

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

# Start again from an empty platform: remove the data directory (the database, the Temporal
# history, the development secrets, workspaces, artifacts and deployment records) and keep
# .venv. Refused while `idp dev` runs on it (its Temporal dev server names the directory's
# temporal.db; awk, unlike grep, does not match its own command line), and for a directory
# that holds none of the platform's files (a mistyped IDP_DATA_DIR).
DATA_DIR := $(or $(IDP_DATA_DIR),.data)

reset:
	@dir='$(DATA_DIR)'; \
	if [ ! -e "$$dir" ]; then echo "make reset: $$dir does not exist; nothing to remove"; exit 0; fi; \
	abs=$$(cd "$$dir" && pwd -P); \
	if [ ! -e "$$abs/idp.db" ] && [ ! -e "$$abs/temporal.db" ] && [ ! -e "$$abs/local-secrets.json" ]; then \
		echo "make reset: $$abs has no idp.db, temporal.db or local-secrets.json; not a data directory, left alone"; exit 1; \
	fi; \
	if ps -eo args= | awk -v db="$$abs/temporal.db" 'index($$0, "--db-filename " db) { found = 1 } END { exit !found }'; then \
		echo "make reset: idp dev is running on $$abs; stop it (Ctrl-C) first"; exit 1; \
	fi; \
	rm -rf -- "$$abs" && echo "make reset: removed $$abs (.venv is kept)"

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
