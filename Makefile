# The workspace's two commands:  `make` sets everything up and reproduces the
# pipeline; `make test` runs every test. Needs only python3.11, git and make.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.9
# Stage commands in dvc.yaml say `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export JUPYTER_PLATFORM_DIRS := 1

.PHONY: all setup repro test lab student-edition bench

all: repro

setup: $(VENV)/.installed

# --compile-bytecode writes every .pyc at install, so no run pays to compile
# (where PYTHONDONTWRITEBYTECODE is set, Python would compile on every import).
$(VENV)/.installed: requirements.txt src/dataops/install.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode -r requirements.txt
	PYTHONPATH=src $(BIN)/python -m dataops.install
	touch $@

# DVC stages a changed dvc.lock silently (core.autostage): say what changed.
repro: setup
	dvc repro
	@python -m dataops.lockcheck

test: setup
	pytest --nbval-lax

# JupyterLab on 127.0.0.1, opened at notebooks/, saving notebooks stripped
# (settings that `make` wrote into .venv). Extra flags: make lab LAB_ARGS=...
LAB_ARGS ?=
lab: setup
	@echo "Starting JupyterLab: open the http://127.0.0.1:... URL with its token, printed below."
	jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  --LabApp.extension_manager=readonly $(LAB_ARGS)

# The exercises without their solutions and the note to instructors, to hand out.
student-edition:
	mkdir -p student-edition
	sed -e '/^<!-- solution -->$$/,/^<!-- end solution -->$$/d' \
	    -e '/^<!-- instructors -->$$/,/^<!-- end instructors -->$$/d' \
	    -e 's|](walkthrough.md)|](../docs/walkthrough.md)|g' docs/exercises.md > student-edition/exercises.md

# Speed of the notebook pipeline against the same code as plain scripts.
bench: setup
	python bench/bench.py
