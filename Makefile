# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Where torch comes from. Empty (the default): pip's configured index, normally PyPI, whose
# torch==2.13.0 for Linux x86-64 is the CUDA build (it pulls about 20 nvidia-* packages, several
# GB); macOS and Windows get the CPU build. For the CPU-only build on Linux, set up with
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# in a fresh clone (or after `make clean`); it is passed to pip as --index-url.
TORCH_INDEX ?=

.PHONY: setup demo test lint bench clean docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, from TORCH_INDEX when set (see above)
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/macdmp demo

lint: setup
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/ruff format --check src tests benchmarks experiments examples

test: lint
	$(BIN)/pytest -q

# the docs site (mkdocs.yml) into site/; --strict: a broken link or docstring fails the build
docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
