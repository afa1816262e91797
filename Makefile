# Two commands do all set-up on a fresh machine:
#   make run    fetch MNIST, then train -> export -> verify -> bench into runs/main/report.md
#   make test   run the test suite
#   make test-portable   the suite again with torch on its non-SIMD kernels (CI runs both)
# Both create .venv and install stn-deploy into it on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/stn-deploy
EXTRAS ?= torch,cpu,openvino,plots,dev
OUT    ?= runs/main
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup run test test-portable lint clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)

run: setup
	$(CLI) data fetch
	$(CLI) run mnist-affine --distortion rts --epochs 5 --target ort-cpu --out $(OUT) --force

test: setup
	$(PY) -m pytest -n 2 -q

# The suite with torch forced onto another kernel path (its generic, non-SIMD one): results that
# depend on the CPU (float32 summation order, fused multiply-adds) differ here as they would on
# another machine, so a test or a library claim that only holds on this CPU fails in CI first.
test-portable: setup
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -n 2 -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check stn_deploy tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
