# Two commands set everything up: `make demo` and `make test`. Each creates .venv from
# constraints.txt when needed (torch is pinned to the local CPU wheel).
PYTHON ?= python3
VENV := .venv
VENV_TL4 := .venv-tl4
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: demo test test-main test-tl4 bench reproduce-tests clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt -e ".[test,nnsight,sweep]"
	touch $@

# The second environment: TransformerLens 4, where HookedTransformer was removed.
$(VENV_TL4)/.installed: pyproject.toml constraints-tl4.txt
	test -x $(VENV_TL4)/bin/python || $(PYTHON) -m venv $(VENV_TL4)
	$(VENV_TL4)/bin/pip install $(PIP_FLAGS) -c constraints-tl4.txt torch==2.13.0
	$(VENV_TL4)/bin/pip install $(PIP_FLAGS) -c constraints-tl4.txt -e ".[test,nnsight,sweep]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/interp-causal demo

test: test-main test-tl4

test-main: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

# The whole suite again under TransformerLens 4: probes, the bridge backend, training. Tests that
# need HookedTransformer (removed in 4) are skipped there by their `needs_hooked` marker.
test-tl4: $(VENV_TL4)/.installed
	$(VENV_TL4)/bin/python -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run.py

# The paper's experiments at full size (slow; see README).
reproduce-tests: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(VENV_TL4) runs
