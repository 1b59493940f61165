# The README's commands. `make run` builds everything; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
ARTIFACTS ?= $(CURDIR)/artifacts
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

# Point at the shared catalogue when it is there (CI and this machine); otherwise the package
# looks in data/cache and downloads with kagglehub.
SHARED_ZIP := $(wildcard $(SHARED)/data/fashion-product-images-small.zip)
ifneq ($(SHARED_ZIP),)
export SHOPBOT_DATA ?= $(abspath $(SHARED_ZIP))
endif
ifneq ($(wildcard $(SHARED)/nltk_data),)
export NLTK_DATA ?= $(abspath $(SHARED)/nltk_data)
endif
ifneq ($(wildcard $(SHARED)/models/isnet-general-use-quint8.onnx),)
export SHOPBOT_BG_MODEL ?= $(abspath $(SHARED)/models/isnet-general-use-quint8.onnx)
endif
export SHOPBOT_ARTIFACTS := $(ARTIFACTS)
export PYTHONUNBUFFERED := 1
# Long steps print text progress bars, which papermill --log-output shows live.
export SHOPBOT_PROGRESS ?= text

.PHONY: run test env data notebooks report golden colab clean demo lab book serve
DEMO_PORT ?= 8866
API_PORT ?= 8765
LAB_PORT ?= 8888
# The project's kernel: the notebooks' kernelspec names it (shopbot_utils.report.KERNELSPEC), `make env`
# registers it inside the venv (--sys-prefix), so JupyterLab offers it and papermill runs it.
KERNEL := shopbot
KERNEL_DISPLAY := ShopBot (.venv)
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
# Jupyter refuses to start as root (Docker images, cloud VMs, CI) unless told it may.
USER_UID := $(shell id -u)
ALLOW_ROOT := $(if $(filter 0,$(USER_UID)),--allow-root)

env: $(VENV)/.installed $(KERNEL_SPEC)

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(KERNEL_SPEC): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)"

data: env
	$(PY) -m shopbot_utils data

notebooks: env
	mkdir -p $(ARTIFACTS)/notebooks
	@for nb in $(NOTEBOOKS); do \
	  echo "=== $$nb"; \
	  $(PY) -m papermill --progress-bar --log-output -k $(KERNEL) $$nb $(ARTIFACTS)/notebooks/$$(basename $$nb) --cwd notebooks || exit 1; \
	done

run: data notebooks report
	@echo "Done: model, embeddings and metrics.json in $(ARTIFACTS); figures in figures/; notebooks/ carry this run's outputs"

# The executed notebooks back into notebooks/ (timestamps, paths and progress bars scrubbed), so that
# they read as the report on GitHub and Colab; `git diff notebooks/` shows what this run changed.
report: env
	$(PY) -m shopbot_utils report $(ARTIFACTS)/notebooks

# Re-bless the nbval regression checks: run every notebook at the tests' small parameters and keep
# the outputs of its `# NBVAL_CHECK_OUTPUT` cells in tests/golden/ (make test compares a fresh run).
golden: env
	$(PY) -m shopbot_utils golden $(NOTEBOOKS)

test: env
	$(PY) -m pytest

# The repository URL of pyproject.toml ([project.urls] Repository) into every notebook's Colab badge and
# clone line (a fork changes that one line, then runs this), with each notebook's prerequisites cell.
colab: env
	$(PY) -m shopbot_utils colab $(NOTEBOOKS) $(wildcard tests/golden/[0-9]*.ipynb)

# The chat page for people who do not use Jupyter (app/chat.ipynb, not the course's notebook 08): the API
# (one process with the models) and Voila together, on 127.0.0.1; Ctrl-C stops both. Needs `make run` first.
demo: env
	@test -f $(ARTIFACTS)/index.json -a -d $(ARTIFACTS)/intents || { echo "no model in $(ARTIFACTS): run 'make run' first"; exit 1; }
	$(PY) -m shopbot_utils.demo --port=$(DEMO_PORT) --api-port=$(API_PORT)

# The HTTP API over one bot (docs at /docs), on 127.0.0.1 only; see docs/serving.md to serve a network.
serve: env
	@test -f $(ARTIFACTS)/index.json -a -d $(ARTIFACTS)/intents || { echo "no model in $(ARTIFACTS): run 'make run' first"; exit 1; }
	$(PY) -m shopbot_utils serve --port=$(API_PORT)

# JupyterLab on the course's notebooks, on this machine only; LAB_FLAGS=--no-browser for a server
# you open yourself. Jupyter prints the URL with its token (the next free port if LAB_PORT is taken).
lab: env
	@echo "JupyterLab on notebooks/ with the kernel \"$(KERNEL_DISPLAY)\": open the http://127.0.0.1:...?token=... URL printed below; Ctrl-C then y (or Ctrl-C twice) stops it"
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) $(ALLOW_ROOT) $(LAB_FLAGS)

# The course as a static website (Sphinx + sphinx-book-theme) from the committed, executed notebooks
# (never re-run): book/_build/html/index.html, readable offline; `make lab` is where they run.
book: env
	$(PY) -m shopbot_utils book
	@echo "The course's website: open book/_build/html/index.html, or serve it with"
	@echo "  $(PY) -m http.server --bind 127.0.0.1 --directory book/_build/html 8000"

clean:
	rm -rf $(ARTIFACTS) data/cache book/_build
