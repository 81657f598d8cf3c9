# chatscreen developer tasks. `make test` is what CI runs (via .ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
PYTEST_ARGS ?=
ARGS ?=

.DEFAULT_GOAL := test
.PHONY: venv sysdeps bench-sysdeps test lint run bench soak clean fuzz attack

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $@

sysdeps:
	PYTHON=$(PYTHON) bash scripts/ensure-sysdeps.sh

# What only `make bench` needs: x0vncserver, the VNC baseline of bench/bench_vnc.py.
bench-sysdeps: sysdeps
	bash scripts/ensure-bench-sysdeps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: sysdeps $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# With a display, the server also opens the app (--app), filled in with the ports it
# listens on (ARGS); Ctrl+C stops both. Closing the app leaves the server running.
run: $(STAMP)
	@exec $(BIN)/chatscreen server $${DISPLAY:+--app} $(ARGS)

# A 10-minute soak: clients joining, chatting and leaving; the server must not grow.
soak: $(STAMP)
	CHATSCREEN_SOAK_SECONDS=600 $(BIN)/python -m pytest -q -o timeout=900 tests/test_soak.py

# Fuzzing with a large budget and a random seed (`make test` runs the same tests small).
# Bounded: at most 15 minutes. Replay a run with `make fuzz FUZZ_SEED=<the seed it printed>`.
fuzz: $(STAMP)
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz seed $$seed (replay: make fuzz FUZZ_SEED=$$seed)"; \
	CHATSCREEN_FUZZ_EXAMPLES=$${CHATSCREEN_FUZZ_EXAMPLES:-2000} \
	CHATSCREEN_FUZZ_LIVE_EXAMPLES=$${CHATSCREEN_FUZZ_LIVE_EXAMPLES:-1500} \
	timeout --kill-after=30 900 $(BIN)/python -m pytest -q -o timeout=880 \
		--hypothesis-seed=$$seed --hypothesis-show-statistics tests/test_fuzz.py $(PYTEST_ARGS)

# Every bench/bench_*.py in turn. Shorter: e.g. BENCH_FILES_MB=200 BENCH_FILES_RUNS=1 (files,
# issue 18; see each module's docstring for its knobs).
bench: bench-sysdeps $(STAMP)
	$(BIN)/python -m bench

# Attacks with a guest login at full scale (minutes): chat latency and server memory, idle vs
# under attack (bench/bench_attack.py: a flooding sharer; bench/bench_room_flood.py: 32
# connections from one address creating rooms for 40 s; the fast versions are in the tests).
attack: $(STAMP)
	$(BIN)/python -m bench.bench_attack
	$(BIN)/python -m bench.bench_room_flood --duration 40

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
