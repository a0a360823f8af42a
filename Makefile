# Set-up and everyday commands. Each target creates .venv and installs skconv with
# its dev extras on first use, so a fresh clone needs nothing but Python 3 and pip.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.skconv-installed
# Tests never wait on a hub: timm/huggingface would otherwise retry for a minute.
export HF_HUB_OFFLINE := 1

.PHONY: install test test-floor lint demo docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One pytest-xdist worker per core; a test module's tests stay in one worker, so that
# its module-scoped fixtures (fitted models) are built once.
PYTEST_PARALLEL := -n auto --dist loadscope

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# The lowest versions pyproject.toml declares for the libraries whose APIs skconv leans on
# (scikit-learn's tags and validation, skorch's training loop, timm's models), installed
# without their dependencies beside .venv and put first on the path; the rest of .venv
# stays as it is. The part of the suite that exercises those APIs runs against them.
FLOOR := $(VENV)/floor
FLOOR_PACKAGES := scikit-learn skorch timm
FLOOR_TESTS := tests/test_features.py tests/test_finetune.py tests/test_checkpoint.py \
	tests/test_zoo.py tests/test_model_selection.py tests/test_export.py

test-floor: $(STAMP)
	rm -rf $(FLOOR)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --target $(FLOOR) \
		$$($(BIN)/python -c "import re; text = open('pyproject.toml').read(); \
		print(' '.join(f'{p}=={v}' for p in '$(FLOOR_PACKAGES)'.split() \
		for v in re.findall(rf'\"{p}>=([0-9.]+)', text)))")
	PYTHONPATH=$(FLOOR) $(BIN)/python -c "import sklearn, skorch, timm; \
		print('floors:', 'scikit-learn', sklearn.__version__, 'skorch', skorch.__version__, \
		'timm', timm.__version__)"
	PYTHONPATH=$(FLOOR) $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) \
		-m "not real_data" $(FLOOR_TESTS)

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
