# The two commands a newcomer needs: `make test` and `make demo`. `make venv` only sets up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# tf2_msgs/TFMessage built from interfaces/tf2_msgs into the venv (the ROS wheels on PyPI have no tf2_msgs), so the
# node subscribes to /tf and /tf_static like on a robot. Needs cmake and a C/C++ compiler; about 20 s.
TF2_MSGS_STAMP := $(VENV)/.tf2_msgs
TF2_MSGS_BUILD := build/tf2_msgs
TORCH_VERSION := 2.13.0
# '' = pip's configured index (PyPI: the Linux wheel is the CUDA build); https://download.pytorch.org/whl/cpu for CPU only
TORCH_INDEX_URL ?=

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv tf2-msgs test lint demo bench clean

venv: $(STAMP) $(TF2_MSGS_STAMP)

$(STAMP): setup.py setup.cfg package.xml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: a looser pin pulls the newest multi-GB CUDA build.
	$(PIP) install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install --quiet -e ".[test,train,ros,rosidl,triton,pretrained]"
	touch $(STAMP)

tf2-msgs: $(TF2_MSGS_STAMP)

$(TF2_MSGS_STAMP): $(STAMP) $(wildcard interfaces/tf2_msgs/*.txt interfaces/tf2_msgs/*.xml interfaces/tf2_msgs/msg/*.msg)
	rm -rf $(TF2_MSGS_BUILD) && mkdir -p $(TF2_MSGS_BUILD)
	cmake -S interfaces/tf2_msgs -B $(TF2_MSGS_BUILD) -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) \
	    -DPython3_EXECUTABLE=$(abspath $(PY)) > $(TF2_MSGS_BUILD).log 2>&1 || (cat $(TF2_MSGS_BUILD).log; false)
	cmake --build $(TF2_MSGS_BUILD) -j2 >> $(TF2_MSGS_BUILD).log 2>&1 || (cat $(TF2_MSGS_BUILD).log; false)
	cmake --install $(TF2_MSGS_BUILD) >> $(TF2_MSGS_BUILD).log 2>&1 || (cat $(TF2_MSGS_BUILD).log; false)
	$(PY) -c "from tf2_msgs.msg import TFMessage"
	touch $(TF2_MSGS_STAMP)

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
