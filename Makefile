# The workspace's two commands:  `make` sets everything up and reproduces the
# pipeline; `make test` runs every test. Needs only Python 3.11 to 3.13, git and
# make. Another Python: make PYTHON=/path/to/python3.12
# Resolved through its symlinks: a copied workspace's own .venv/bin first on
# PATH names the interpreter it was made from, not a venv make may replace.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,python3.11 python3.12 python3.13 python3,$(realpath $(shell command -v $(p) 2>/dev/null))) python3)
endif
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.9
# The venv's commands first (dvc, dataops-run, jupyter, pytest).
export PATH := $(BIN):$(PATH)
export JUPYTER_PLATFORM_DIRS := 1

# In a workspace (not in a course repository, which has no kit/), the toolkit
# serves this folder: its lessons, its notebooks.
export DATAOPS_WORKSPACE := $(if $(wildcard kit/pyproject.toml),$(CURDIR))

.PHONY: all help setup repro test lab bench lock course course-verify course-publish catch-up review exercise check class-deps class-remote class-remote-stop class-codes class-join leaderboard submit grades class-bench

all: repro

## Student
help: ## List the targets, each with one line
	@awk 'BEGIN {FS = ":.*## "} /^## / {printf "\n%s\n", substr($$0, 4)} /^[a-z -]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed ## Make the venv, install the pinned packages and the toolkit, nothing else

# A venv belongs to the folder it was made in: its scripts start with that
# folder's absolute path. .venv/.made-in records the folder once the venv is
# complete, so a copied or moved workspace, or a venv cut short by Ctrl-C, gets
# a new one instead of running another folder's code (or failing without pip).
# A .venv that is a symlink is shared on purpose (the tests do it): left alone,
# its kernel, dvc command and import path still naming the workspace it belongs to.
MADE_IN := $(shell test -L $(VENV) && echo "$(CURDIR)" || cat $(VENV)/.made-in 2>/dev/null)
ifneq ($(MADE_IN),$(CURDIR))
$(shell rm -f $(VENV)/.installed)
endif

# --compile-bytecode writes every .pyc at install, so no run pays to compile
# (where PYTHONDONTWRITEBYTECODE is set, Python would compile on every import).
# The toolkit (kit/) is installed like any package: reinstalled when it changes.
# A course repository has no kit/: it uses the toolkit of the venv it links to.
KIT := $(wildcard kit/pyproject.toml kit/src/dataops_kit/*.py kit/src/dataops_kit/*/*.py)
# A shared venv is its own workspace's to install into: here only this clone's part.
SHARED := $(shell test -L $(VENV) && echo yes)
$(VENV)/.installed: requirements.txt $(KIT)
ifneq ($(SHARED),yes)
	@[ "$$(cat $(VENV)/.made-in 2>/dev/null)" = "$(CURDIR)" ] || { \
	  $(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null || { \
	    echo "The pinned packages need Python 3.11, 3.12 or 3.13; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
	      "Install one, or name it: make PYTHON=/path/to/python3.12"; exit 1; }; \
	  echo "Making $(VENV) for $(CURDIR) with $$($(PYTHON) --version)"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && echo "$(CURDIR)" > $(VENV)/.made-in; }
	@# A uv cut short by Ctrl-C may be there but not run: install it again then.
	$(BIN)/uv --version 2>/dev/null | grep -qE '^uv $(UV_VERSION)( |$$)' || \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check --force-reinstall uv==$(UV_VERSION)
	@# Scripts name the venv's real path: a workspace sharing it may go away. dvc is
	@# reinstalled only where an older toolkit rewrote its command (it named dataops_kit),
	@# so its command is pip's again; never otherwise, as a shared venv may be running it.
	$(BIN)/uv pip install --quiet --python "$$(cd $(VENV) && pwd -P)/bin/python" --no-deps --compile-bytecode \
	  $$(grep -qs dataops_kit $(BIN)/dvc && echo --reinstall-package dvc) -r requirements.txt
	$(if $(KIT),$(BIN)/uv pip install --quiet --python "$$(cd $(VENV) && pwd -P)/bin/python" --no-deps --compile-bytecode --reinstall-package dataops-kit ./kit)
	$(BIN)/python -I -m dataops_kit.install
	touch $@
else
	$(BIN)/python -I -m dataops_kit.install
endif

# DVC stages a changed dvc.lock silently (core.autostage): say what changed.
repro: setup ## Set up (once), then dvc repro: the pipeline, reproduced
	dvc repro
	@python -I -m dataops_kit.lockcheck

# One pytest worker per core, up to four: the tests mostly wait on kernels,
# DVC and git. The in-process layer alone: make test ARGS=tests/unit; one file or test:
# make test ARGS="tests/unit -k params"
ARGS ?=
test: setup ## Run every test (pass pytest arguments with ARGS="...")
	pytest --nbval-lax -n auto --maxprocesses 4 $(ARGS)

# JupyterLab on 127.0.0.1, opened at notebooks/, saving notebooks stripped
# (settings that `make` wrote into .venv). Extra flags: make lab LAB_ARGS=...
# As root (a container, a classroom VM), Jupyter wants --allow-root: added.
LAB_ARGS ?=
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup ## JupyterLab on 127.0.0.1, opened at notebooks/
	@echo "Starting JupyterLab: open the http://127.0.0.1:... URL with its token, printed below."
	jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  --LabApp.extension_manager=readonly $(ROOT_ARGS) $(LAB_ARGS)

## Instructor (docs/instructors/)
# The course: the pipeline built from an empty folder, lesson by lesson
# (docs/lessons/), as a git history with a tag per lesson, in COURSE/repo.
# course-verify reproduces every tag in a fresh clone; course-publish writes
# what a class clones (a bare repository and a DVC remote) to COURSE/published.
# In a course repository, `make catch-up LESSON=3` goes to the start of lesson 3,
# keeping the student's work on a branch and a stash that it names.
COURSE ?= ../dataops-course
course: setup ## Build the course from the lesson pages into COURSE/repo, a tag per lesson
	python -I -m dataops_kit.teach.course build $(COURSE)
course-verify: setup ## Reproduce every lesson tag of the course in a fresh clone (SANDBOX=on: a course you did not build)
	python -I -m dataops_kit.teach.course verify $(COURSE) $(if $(SANDBOX),--sandbox $(SANDBOX))
course-publish: setup ## Write what a class clones (bare repository, DVC remote) to COURSE/published
	python -I -m dataops_kit.teach.course publish $(COURSE)
# A workspace already set up is used as it is (a fresh clone's newer
# requirements.txt would otherwise re-run the install before each command).
READY := $(if $(wildcard $(VENV)/.installed),,setup)
catch-up: $(READY) ## In a course repository: go to the start of LESSON, keeping your work
	@test -n "$(LESSON)" || { echo "Which lesson? make catch-up LESSON=3"; exit 1; }
	@python -I -m dataops_kit.teach.course catch-up $(LESSON)

# What a branch or experiment changes against BASE, as a pull request shows it:
# review/review.md and review/index.html, read from git and DVC's cache (no code runs).
review: $(READY) ## make review BASE=main [REV=HEAD]: params, metrics, files and plots changed (review/)
	@test -n "$(BASE)" || { echo "Against what? make review BASE=main (REV=HEAD by default)"; exit 1; }
	@python -I -m dataops_kit.review $(BASE) $(or $(REV),HEAD) --class-dir $(CLASS) $(if $(SANDBOX),--sandbox $(SANDBOX))

# Graded exercises (docs/exercises.md), from the course: `make exercise 3` sets
# up exercise 3's scene in EXERCISES/03-.../repo; `make check 3` grades it.
EXERCISES ?= ../dataops-exercises
ifneq ($(filter exercise check submit,$(firstword $(MAKECMDGOALS))),)
N := $(word 2,$(MAKECMDGOALS))
$(eval $(N):;@:)
endif
exercise check: $(READY) ## make exercise N sets up exercise N; make check N grades it
	@python -I -m dataops_kit.teach.exercises $(if $(filter exercise,$@),start,check) $(N) --course $(COURSE) --exercises $(EXERCISES)

# The class as one system (README, "A class on one store"): the instructor's
# S3 store (SeaweedFS) and class git remote in CLASS, students' experiments
# pushed to both, a leaderboard. Optional: class-deps adds dvc-s3 and
# SeaweedFS (requirements-class.txt) to the venv; `make` never needs them.
CLASS ?= ../dataops-class
CLASS_HOST ?= 127.0.0.1
CLASS_PORT ?= 8333
STUDENTS ?= 40
CLASS_QUOTA_MB ?= 200
class-deps: setup ## Add the class store's packages (dvc-s3, SeaweedFS) to the venv
	$(if $(SHARED),,uv pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode -r requirements-class.txt)
class-remote: class-deps ## Start the class store and class git remote in CLASS (CLASS_CERT=cert.pem: HTTPS)
	@python -I -m dataops_kit.teach.classroom serve --class-dir $(CLASS) --host $(CLASS_HOST) --port $(CLASS_PORT) \
	  --quota-mb $(CLASS_QUOTA_MB) $(if $(CLASS_CERT),--cert $(CLASS_CERT)) $(if $(CLASS_CERT_KEY),--cert-key $(CLASS_CERT_KEY))
class-remote-stop: ## Stop the class store
	@python -I -m dataops_kit.teach.classroom stop --class-dir $(CLASS)
# Join codes: one a name of CLASS/roster.csv, in CLASS/codes.csv; STUDENT=bob revokes bob's key, and a new code.
class-codes: ## Join codes for the roster's students (CLASS/codes.csv); STUDENT=name: revoke theirs, a new code
	@python -I -m dataops_kit.teach.classroom codes --class-dir $(CLASS) $(if $(STUDENT),--student $(STUDENT))
class-join: class-deps ## Link this clone to the class store as STUDENT (your own key; asks for your join code)
	@python -I -m dataops_kit.teach.classroom join --class-dir $(CLASS) $(if $(STUDENT),--student $(STUDENT))
# Only experiments that change params.yaml's RANKED keys (globs) and nothing else but dvc.lock are ranked.
RANKED ?= train.*
leaderboard: class-deps ## Rank the class's experiments, each reproduced in a sandbox (leaderboard.html; RANKED=train.*)
	@python -I -m dataops_kit.teach.classroom leaderboard --class-dir $(CLASS) --keys '$(RANKED)' $(if $(filter off,$(SANDBOX)),--unsandboxed)
# Submissions (python -I -m dataops_kit.teach.gradebook): `make submit 1 CLASS=... STUDENT=ada` sends
# exercise 1's scene, committed, to the class; `make grades` grades the latest of each, in the sandbox.
submit: class-deps ## make submit N: send exercise N's scene, committed, to the class (CLASS, STUDENT)
	@python -I -m dataops_kit.teach.gradebook submit $(N) --class-dir $(CLASS) --exercises $(EXERCISES) $(if $(STUDENT),--student $(STUDENT))
grades: class-deps ## Grade every submission in a sandbox: CLASS/grades/grades.csv and feedback/ (DEADLINE=2026-12-10T23:59)
	@python -I -m dataops_kit.teach.gradebook grades --class-dir $(CLASS) --course $(COURSE) $(if $(DEADLINE),--deadline $(DEADLINE))
# A simulated class on loopback: STUDENTS clones push at once, with and without
# the store killed at a fixed point (kit/bench/class_bench.py; figures in docs/instructors/class-bench-results.md).
class-bench: class-deps ## A simulated class of STUDENTS pushing at once, then with the store killed
	python kit/bench/class_bench.py --students $(STUDENTS)

## Maintainer (docs/maintainers/)
# Speed of the notebook pipeline against the same code as plain scripts.
bench: setup ## Time the pipeline against scripts: kit/bench/results.json, docs/maintainers/bench-results.md
	python kit/bench/bench.py

# Pin every package for every supported Python (3.11 to 3.13, any OS) after
# editing requirements.in. Versions already pinned are kept unless the change
# needs others. rfc3987-syntax and lark stay out: jsonschema imports them
# whenever they are installed, about 1.5 s in every papermill and nbval process,
# and only JupyterLab's event schemas would use them (README, "Speed").
# requirements-class.txt (make class-remote) is the same set plus the class
# store's packages; tests/test_requirements.py checks the two agree.
LOCK := uv pip compile --universal --python-version 3.11 --quiet \
	  --no-emit-package rfc3987-syntax --no-emit-package lark --custom-compile-command "make lock"
lock: setup ## Pin every package for Python 3.11-3.13 after editing requirements.in
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) requirements-class.in -o requirements-class.txt
