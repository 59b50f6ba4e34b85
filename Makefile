# Two entry points for a fresh machine: `make main` (the end-to-end job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: main motion test bench install

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints pin torch and its matching torchvision: an unpinned torch would pull another multi-GB build
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

test: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

main:
	./scripts/main.sh

motion:
	./scripts/motion.sh

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/throughput.py
