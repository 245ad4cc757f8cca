# hotshot: `make demo` renders the example shot, `make test` runs the tests (with the fast part of the
# reliability suite), `make test-reliability` runs the whole reliability suite and prints its figures.
# Both set everything up first: a virtual environment in .venv (torch's CPU
# build is installed first, pinned, so pip never pulls a CUDA build), ffmpeg
# (installed with apt when missing and run as root), the tiny local model.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
DEMO   := hotfolders/demo
FIGURES := var/reliability/report.jsonl
K      ?=

.PHONY: setup ffmpeg chromium tiny demo test test-slow test-reliability lint bench clean

setup: $(STAMP) ffmpeg chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

ffmpeg:
	@if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing ffmpeg with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	else \
		echo "ffmpeg and ffprobe are needed: install them (e.g. 'sudo apt-get install ffmpeg' or 'brew install ffmpeg') and run make again" >&2; \
		exit 1; \
	fi

# The web workspace's browser tests drive Debian's chromium with Playwright (Playwright's own browser
# download is not used); without it, and not root, those tests are skipped.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium with apt-get (for the web workspace's browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is not installed: the web workspace's browser tests will be skipped (apt-get install chromium)" >&2; \
	fi

tiny: setup
	$(BIN)/hotshot models make-tiny

demo: tiny
	@test -f $(DEMO)/plate.mp4 || cp tests/data/chaplin.mp4 $(DEMO)/plate.mp4
	$(BIN)/hotshot run --drain
	@echo
	$(BIN)/hotshot status

test: tiny
	$(BIN)/pytest

test-slow: tiny
	$(BIN)/pytest -m 'slow and not reliability'

# Crashes, faults, load and hostile input (tests/reliability/, about an hour); K='...' picks tests by name.
# HOTSHOT_RELIABILITY_TRIALS sets the kill trials per scenario (default 20). Figures: docs/reliability.md.
test-reliability: tiny
	@mkdir -p $(dir $(FIGURES)) && rm -f $(FIGURES)
	HOTSHOT_RELIABILITY_REPORT=$(CURDIR)/$(FIGURES) $(BIN)/pytest tests/reliability -m reliability $(if $(K),-k "$(K)")
	@$(BIN)/python -m tests.reliability.figures $(FIGURES)

lint: setup
	$(BIN)/ruff check daemon engine tests bench

bench: tiny
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/keyframe_flow.py
	$(BIN)/python bench/compare_settings.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf var $(DEMO)/*.mp4 $(DEMO)/*.render-info.json $(DEMO)/*.status.json $(DEMO)/plate_r*/
