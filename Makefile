# Two commands do all set-up on a fresh machine:
#   make run    fetch MNIST, then train -> export -> verify -> bench into runs/main/report.md
#   make test   run the test suite
#   make test-portable   the suite again with torch on its non-SIMD kernels (CI runs both)
# Both create .venv and install stn-deploy into it on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/stn-deploy
EXTRAS ?= torch,cpu,openvino,plots,dev,litert,ncnn,mnn,iree
OUT    ?= runs/main
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup run test test-portable lint clean onnx2tf

# The ncnn extra's converter, pnnx, is installed without its declared dependencies (a CUDA
# torch): stn-deploy runs only the converter binary inside it.
$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[$(EXTRAS)]'
	case ',$(EXTRAS),' in *,ncnn,*) $(PY) -m pip install --quiet --no-deps pnnx ;; esac
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

# onnx2tf (stn-deploy convert --to tflite) pins its own TensorFlow/onnx/onnxruntime (~2.5 GB,
# a few minutes): a separate environment. Then put .venv-onnx2tf/bin on PATH or set
# STN_DEPLOY_ONNX2TF=.venv-onnx2tf/bin/onnx2tf. Python 3.11 resolves onnx2tf 1.29.x.
ONNX2TF_PYTHON ?= python3.11
onnx2tf: .venv-onnx2tf/bin/onnx2tf

.venv-onnx2tf/bin/onnx2tf:
	$(ONNX2TF_PYTHON) -m venv .venv-onnx2tf
	.venv-onnx2tf/bin/python -m pip install --quiet --upgrade pip
	.venv-onnx2tf/bin/python -m pip install --quiet 'onnx2tf==1.29.*'

lint: setup
	$(VENV)/bin/ruff check stn_deploy tests benchmarks

clean:
	rm -rf $(VENV) .venv-onnx2tf runs .pytest_cache
