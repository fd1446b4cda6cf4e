# MedSight Workstation. The two commands a newcomer needs:
#   make run    install into .venv (first time only) and start the app on http://127.0.0.1:8501
#   make test   install into .venv (first time only) with test tools and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
# Chat corpus + similar-case base, built once from data installed with the packages (see medsight/reference.py).
REFSTAMP := reference/reference.json
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test test-fast test-slow install install-dev reference weights samples bench viewer clean-venv

run: install
	$(BIN)/streamlit run app.py

install: $(STAMP) $(REFSTAMP)

reference: $(REFSTAMP)

# A failed build does not stop setup: the app then builds the reference data in the background at first start.
$(REFSTAMP): $(STAMP)
	$(BIN)/python -m medsight.reference build || echo "reference data not built; the app will build it at first start"

$(STAMP): requirements.txt requirements-nodeps.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-nodeps.txt
	touch $@

install-dev: $(DEVSTAMP)

$(DEVSTAMP): $(STAMP) requirements-dev.txt requirements-dev-nodeps.txt
	$(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps -r requirements-dev-nodeps.txt
	touch $@

# Fast tests first, then the slow and real-browser ones; both must pass.
test: install-dev
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider
	$(BIN)/python -m pytest -m "slow" -p no:cacheprovider

test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider

# Rebuild the shipped demo weights and sample studies from the synthetic phantoms (deterministic).
samples: install
	$(BIN)/python -m training.make_samples

weights: install
	$(BIN)/python -m training.train_vgg_extractor train --n-train 500 --n-val 100 --epochs 12
	$(BIN)/python -m training.train_anomaly --demo
	$(BIN)/python -m training.fit_patch_model --checkpoint models/anomaly_demo.pt
	$(BIN)/python -m training.train_pathology --demo

bench: install-dev
	$(BIN)/python -m benchmarks.run

# Rebuild the image viewer's committed bundle (components/viewer/build/viewer.js) from its locked npm packages.
viewer:
	cd components/viewer/frontend && npm ci --no-audit --no-fund && npm run build

clean-venv:
	rm -rf $(VENV)
