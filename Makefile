# The two commands a newcomer needs: `make test` and `make demo`. `make venv` only sets up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv test lint demo bench clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: a looser pin pulls the multi-GB CUDA build.
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[test,train,ros,triton,pretrained]"
	touch $(STAMP)

test: venv
	$(VENV)/bin/ruff check mtl3d_perception test benchmarks launch
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check mtl3d_perception test benchmarks launch

demo: venv
	$(VENV)/bin/mtl3d demo --out demo_out

bench: venv
	$(PY) benchmarks/synthetic.py
	$(PY) benchmarks/cost_volume.py
	$(PY) benchmarks/model.py
	$(PY) benchmarks/node_latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache demo_out
