# Two entry points: `make run` (the digits pipeline) and `make test` (the test suite).
# Both create .venv and install gafi-opt with torch/torchvision pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: install run test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

run: install
	$(BIN)/gafi-opt run studies/digits.toml

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
