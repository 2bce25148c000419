# Two commands set everything up: `make demo` and `make test`. Each creates .venv from
# constraints.txt when needed (torch is pinned to the local CPU wheel).
PYTHON ?= python3
VENV := .venv
VENV_TL4 := .venv-tl4
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: demo test test-main test-tl4 bench reproduce reproduce-tests clean

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

# -k: a failure under one TransformerLens line does not hide the other line's results.
test:
	$(MAKE) -k test-main test-tl4

# Each suite on TEST_WORKERS pytest-xdist workers. The suite runs at one torch thread per process
# (tests/conftest.py), so two workers keep both cores busy. Work goes out in collection order, the
# longest tests first, each file as one xdist group except the tutorials and the quick-profile
# science, whose tests are spread one by one (tests/conftest.py: LONGEST_FIRST, SPREAD).
TEST_WORKERS ?= 2
PYTEST := python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-main: $(VENV)/.installed
	$(VENV)/bin/$(PYTEST)

# The whole suite again under TransformerLens 4: probes, the bridge backend, training. Tests that
# need HookedTransformer (removed in 4) are skipped there by their `needs_hooked` marker. The
# quick-profile science (`science` marker) and Ray's cluster and fault tests (`once`) run once, in test-main.
test-tl4: $(VENV_TL4)/.installed
	$(VENV_TL4)/bin/$(PYTEST) -m "not science and not once"

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run.py

# Every experiment's quick and paper profile, one at a time, then docs/results.md and the README's
# table from their reproduction.json (about 65 minutes on a 2-core AMD EPYC; see docs/results.md).
EXPERIMENTS_RUN := gradient chain standard multi-parent many-trees
reproduce: $(VENV)/.installed
	for e in $(EXPERIMENTS_RUN); do for p in quick paper; do \
		$(VENV)/bin/interp-causal reproduce $$e --profile $$p --quiet || exit 1; done; done
	$(VENV)/bin/interp-causal results

# The paper's experiments at full size (slow; see README).
reproduce-tests: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(VENV_TL4) runs
