# MTL Explain — the README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MTL := $(VENV)/bin/mtl
APT_PACKAGES := qgis python3-qgis qgis-providers python3-gdal gdal-bin xvfb
STAMP := $(VENV)/.installed
CACHE := $(or $(MTL_EXPLAIN_CACHE),$(HOME)/.cache/mtl-explain)
SAMPLE_CONFIG := $(CACHE)/raleigh/raleigh.yaml
SAMPLE := $(CACHE)/raleigh
DEMO := outputs/demo
DEMO_MINUTES ?= 5
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup system-packages demo test test-qgis344 test-fast clean help

help:
	@echo "make setup   install Debian packages (as root), .venv and pinned Python dependencies"
	@echo "make demo    train the mtl model on the real sample scene, explain it (real SWIR + labels), write $(DEMO)/"
	@echo "make test    run the test suite (installs what it needs first), then test-qgis344"
	@echo "make test-qgis344   the plugin tests again on QGIS 3.44 LTR in a cached Debian trixie chroot (root)"
	@echo "make package / check-package / deploy / qgis   build, scan, install and start the QGIS plugin"

setup: system-packages $(STAMP)

# Debian's QGIS and GDAL live in the system Python: install them when missing, as root only.
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "Missing Debian packages. Run:"; echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	    echo "then run make again."; exit 1; \
	  fi; \
	fi

# The venv sees the system site-packages (PyQGIS, osgeo, numpy 1.24); pip adds the pinned rest.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

demo: setup
	$(MTL) -q sample-data
	@mkdir -p $(DEMO)
	$(MTL) train $(SAMPLE_CONFIG) --variant mtl --minutes $(DEMO_MINUTES) --out $(DEMO)/model.mtl.safetensors
	$(MTL) -q explain $(DEMO)/model.mtl.safetensors $(SAMPLE)/raleigh_vnir.tif --aux swir=$(SAMPLE)/raleigh_swir.tif \
	  --labels $(SAMPLE)/raleigh_landcover.tif --out $(DEMO) --overwrite --split test
	$(PY) tools/demo_project.py $(DEMO)/model.mtl.safetensors $(dir $(SAMPLE_CONFIG))raleigh_vnir.tif $(DEMO)
	@echo; echo "Demo outputs in $(DEMO)/ (report: $(DEMO)/raleigh_vnir_report.html); open $(DEMO)/demo.qgz in QGIS (or: make qgis) to see them styled."

test: setup
	$(PY) -m flake8 --max-line-length=120 mtl_core plugin tools tests bench
	$(PY) -m pytest -ra
	$(MAKE) test-qgis344

# The plugin's QGIS-side tests again on QGIS 3.44 LTR (Python 3.13, numpy 2), in a Debian trixie chroot built once
# into ~/.cache/mtl-explain/qgis-3.44 (about 4 min, 2.1 GB); as a user who is not root it says how and skips.
test-qgis344: setup
	PY=$(abspath $(PY)) bash tools/qgis344.sh test

test-fast: setup
	$(PY) -m pytest -ra -m "not slow"

clean:
	rm -rf outputs .pytest_cache build dist *.egg-info

# ---- QGIS plugin: default model, styles, package, checks, deployment -----------------------------------------------
PLUGIN_VERSION := $(shell sed -n 's/^version=//p' metadata.txt)
PLUGIN_ZIP := dist/mtl_explain-$(PLUGIN_VERSION).zip
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
DEFAULT_MODEL := resources/default_model.mtl.onnx

.PHONY: default-model styles package check-package deploy qgis demo-project

default-model: setup
	$(PY) tools/default_model.py --out $(DEFAULT_MODEL)

styles: setup
	$(PY) tools/make_styles.py

package:
	@test -f $(DEFAULT_MODEL) || { echo "$(DEFAULT_MODEL) is missing: run make default-model first"; exit 1; }
	$(PY) tools/package.py --out $(PLUGIN_ZIP)

check-package: package
	$(PY) tools/check_package.py $(PLUGIN_ZIP)

deploy: package
	$(PY) tools/deploy.py $(PLUGIN_ZIP) --profile $(QGIS_PROFILE) --worker-python $(abspath $(PY))

demo-project: setup
	$(PY) tools/demo_project.py $(DEMO)/model.mtl.safetensors $(dir $(SAMPLE_CONFIG))raleigh_vnir.tif $(DEMO)

qgis: deploy
	@test -f $(DEMO)/demo.qgz || $(MAKE) demo
	# QGIS's own Python gets ONNX Runtime from .venv; the plugin never imports torch there (its worker does).
	env -u QT_QPA_PLATFORM PYTHONPATH=$$($(PY) -c 'import site; print(site.getsitepackages()[0])') \
	  qgis --profile $(notdir $(QGIS_PROFILE)) $(DEMO)/demo.qgz
