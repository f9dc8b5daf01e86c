# Two commands for a new user: `make demo` and `make test`. Both set everything up first.
# `make quick` while editing: lint, types and the unit tests (no Azurite, no emulator), well under a minute.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: setup quick test lint scan format demo console screenshots bench chaos emulator telemetry-volume smoke clean chromium

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup: $(VENV)/.installed node_modules/.installed

# The console's browser tests drive Debian's Chromium (Playwright's own browser download is not needed).
# Only the tests need it: `make demo` and `make console` run without a browser on the machine.
chromium:
	@[ -n "$$CHROMIUM" ] || [ -x /usr/bin/chromium ] || command -v chromium >/dev/null || \
		{ command -v apt-get >/dev/null || { echo "The browser tests need Chromium: install it (Debian: apt-get install chromium) or set CHROMIUM to its path" >&2; exit 1; }; \
		  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

.venv-checkov/.installed: requirements-scan.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet -r requirements-scan.txt
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Security scan of infra/ (offline: --skip-download); each skipped check is justified at its resource.
scan: .venv-checkov/.installed
	.venv-checkov/bin/checkov --directory infra --framework bicep --quiet --compact --skip-download

# Everything, the chaos run included: the CI gate (.ci/run).
test: lint scan chromium
	$(BIN)/pytest

# The inner loop: needs only the venv (no npm, no Chromium), runs only tests/unit.
quick: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/pytest tests/unit -q

demo: setup
	$(BIN)/python -m devtools.demo $(ARGS)

# The demo shift, then the stack stays up with the operator console; it prints the URL.
console: setup
	$(BIN)/python -m devtools.demo --console $(ARGS)

# The console's screenshots in docs/console/, taken by its browser tests.
screenshots: setup chromium
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest tests/e2e/test_console.py -q

bench: setup
	$(BIN)/python -m devtools.bench $(ARGS)

# 5,000 MES events with every fault at once; ARGS="--events 50000" for the larger run.
chaos: setup
	$(BIN)/python -m devtools.chaos $(ARGS)

emulator: setup
	$(BIN)/python -m devtools.fo_emulator $(ARGS)

# After `azd up`: health, then one MES message through to F&O and back (README "Smoke test").
#   make smoke URL=https://<app>.azurewebsites.net ORDER=<released order> [KEY=<function key>] [ARGS="--company DEMF"]
smoke: setup
	$(BIN)/python -m devtools.smoke --url "$(URL)" --order "$(ORDER)" $(if $(KEY),--key "$(KEY)") $(ARGS)

# What one MES message costs in Application Insights, measured on the demo shift (README "Telemetry cost").
telemetry-volume: setup
	$(BIN)/python -m devtools.telemetry_volume $(ARGS)

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .mypy_cache .ruff_cache
