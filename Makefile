# Set-up and everyday commands. Each target creates .venv and installs skconv with
# its dev extras on first use, so a fresh clone needs nothing but Python 3 and pip.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.skconv-installed
# Tests never wait on a hub: timm/huggingface would otherwise retry for a minute.
export HF_HUB_OFFLINE := 1

.PHONY: install test lint demo docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/skconv demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# The documentation: run the examples (they write the figures the pages show), then
# build with warnings as errors.
docs: $(STAMP)
	mkdir -p docs/_generated
	for example in docs/examples/*.py; do \
		SKCONV_EXAMPLES_OUT=docs/_generated $(BIN)/python $$example > /dev/null || exit 1; \
	done
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
