#!/usr/bin/env bash
# gpu/run_device.sh: everything the GPU machine runs, in one call (docs/gpu.md, "Running on a
# GPU machine"). Steps run in the order given; logs go to $OUT (default ./out/device).
#
#   env        device, driver, tool versions
#   prebuilt   use binaries built elsewhere (.dev/gpu/prebuilt: attnscope, libattnscope.so*,
#              test_gpu_kernels), else build
#   build      configure + build with CMake here (cJSON from .dev/gpu/debs when missing)
#   test       device tests (full shapes)
#   sanitize   compute-sanitizer memcheck and racecheck on the quick test shapes
#   replay     attnscope gpu replay of the bundled sample trace, every method, kv and q modes
#   bench      gpu/bench/bench.py: attnscope gpu bench + FlashInfer + PyTorch SDPA (BENCH_ARGS)
#   quickbench the same on a small sweep
set -u
OUT=${OUT:-$PWD/out/device}
mkdir -p "$OUT"
ROOT=$PWD
BIN=""
TEST=""
LIBDIR=""
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/steps.log"; }

setup_deps() {
    # cJSON (and pkg-config) from carried Debian packages when the machine lacks them
    if ! pkg-config --exists libcjson 2>/dev/null; then
        mkdir -p /tmp/cj
        for f in "$ROOT"/.dev/gpu/debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/cj; done
        for pc in /tmp/cj/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
            # the .pc may set prefix= or spell libdir/includedir out: point both into /tmp/cj
            [ -f "$pc" ] && sed -i -e 's|^prefix=.*|prefix=/tmp/cj/usr|' \
                -e 's#^\(libdir\|includedir\)=/usr#\1=/tmp/cj/usr#' "$pc"
        done
        rm -rf /tmp/cj/usr/lib/x86_64-linux-gnu/cmake/cJSON
        export PKG_CONFIG_PATH=/tmp/cj/usr/lib/x86_64-linux-gnu/pkgconfig:${PKG_CONFIG_PATH:-}
        export LD_LIBRARY_PATH=/tmp/cj/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
        if ! command -v pkg-config >/dev/null; then
            export PATH=/tmp/cj/usr/bin:$PATH
            ln -sf /tmp/cj/usr/bin/pkgconf /tmp/cj/usr/bin/pkg-config
        fi
    fi
    export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
}

step_env() {
    log env
    { nvidia-smi; nvcc --version | tail -2; cmake --version | head -1; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))';
      compute-sanitizer --version | head -2; pkg-config --version; uname -a; } >"$OUT/env.txt" 2>&1
    cat "$OUT/env.txt" | grep -E "H100|H200|Driver|release|torch|cmake version|Sanitizer" | head -8
}

step_build() {
    log build
    setup_deps
    rm -rf /tmp/asb  # a warm machine keeps it: no stale pkg-config results
    cmake -S . -B /tmp/asb -G Ninja -DCMAKE_BUILD_TYPE=Release >"$OUT/build.log" 2>&1 &&
        cmake --build /tmp/asb -j 16 >>"$OUT/build.log" 2>&1
    local rc=$?
    tail -3 "$OUT/build.log"
    BIN=/tmp/asb/attnscope
    TEST=/tmp/asb/gpu/test_gpu_kernels
    LIBDIR=/tmp/asb
    return $rc
}

step_prebuilt() {
    setup_deps
    local p="$ROOT/.dev/gpu/prebuilt"
    if [ -x "$p/attnscope" ] && LD_LIBRARY_PATH=$p:$LD_LIBRARY_PATH "$p/attnscope" --version >/dev/null 2>&1; then
        log "prebuilt binaries run"
        BIN=$p/attnscope
        TEST=$p/test_gpu_kernels
        LIBDIR=$p
        export LD_LIBRARY_PATH=$p:$LD_LIBRARY_PATH
    else
        LD_LIBRARY_PATH=$p:$LD_LIBRARY_PATH ldd "$p/attnscope" 2>&1 | grep "not found" | head
        step_build
    fi
}

step_test() {
    log test
    "$TEST" >"$OUT/test.log" 2>&1
    echo "test_gpu_kernels rc=$?" | tee -a "$OUT/steps.log"
    grep -E "FAIL|checks|max relative|dense vs|^  [a-z]+ |estimator" "$OUT/test.log" | head -30
}

step_sanitize() {
    for tool in memcheck racecheck; do
        log "compute-sanitizer $tool"
        AS_GPU_TEST_QUICK=1 timeout ${SAN_TIMEOUT:-120} compute-sanitizer --tool $tool --error-exitcode 9 \
            "$TEST" >"$OUT/sanitize_$tool.log" 2>&1
        echo "sanitizer $tool rc=$?" | tee -a "$OUT/steps.log"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|checks:|Error|Hazard" "$OUT/sanitize_$tool.log" | sort | uniq -c | head -8
    done
}

step_replay() {
    log replay
    local tr=data/samples/smollm2-135m-needle-2k.safetensors
    : >"$OUT/replay.log"
    for mode in kv q; do
        for b in 10% 2%; do
            echo "### --mode $mode --budget $b" >>"$OUT/replay.log"
            "$BIN" gpu replay "$tr" --method all --budget $b --mode $mode >>"$OUT/replay.log" 2>&1
            echo "replay mode=$mode budget=$b rc=$?" | tee -a "$OUT/steps.log"
        done
    done
    "$BIN" gpu replay "$tr" --method all --budget 2% --json >"$OUT/replay.json" 2>/dev/null
    grep -E "bound checks passed" "$OUT/replay.log" | head -16
}

fi_setup() {
    # FlashInfer (trimmed wheel + kernels prebuilt for sm_90a) and apache-tvm-ffi, carried in .dev/gpu/whl
    mkdir -p /tmp/fi && tar -xJf "$ROOT/.dev/gpu/whl/fi-trim.tar.xz" -C /tmp/fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fi "$ROOT"/.dev/gpu/whl/apache_tvm_ffi-*.whl >"$OUT/pip.log" 2>&1
    export PYTHONPATH=/tmp/fi:${PYTHONPATH:-}
    export FLASHINFER_WORKSPACE_BASE=/tmp/fi/fiws FLASHINFER_CUDA_ARCH_LIST=9.0
}

step_bench() {
    log bench
    fi_setup
    PYTHONUNBUFFERED=1 python3 gpu/bench/bench.py --attnscope "$BIN" --lib "$LIBDIR" --out "$OUT" \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | grep -vE "^  (dense|sparse|select|e2e|copy)" | tail -60
}

step_quickbench() {
    BENCH_ARGS="--quick ${BENCH_ARGS:-}" step_bench
}

for s in "$@"; do
    case $s in
    env) step_env ;;
    prebuilt) step_prebuilt ;;
    build) step_build ;;
    test) step_test ;;
    sanitize) step_sanitize ;;
    replay) step_replay ;;
    bench) step_bench ;;
    quickbench) step_quickbench ;;
    *) echo "unknown step $s" ;;
    esac
done
log done
# The device tool brings back only a few files from $OUT: pack the logs into one archive,
# keeping the step log and the bench tables beside it.
if [ "$(ls "$OUT" | wc -l)" -gt 4 ]; then
    tar -czf /tmp/as-logs.tar.gz -C "$OUT" . &&
        find "$OUT" -mindepth 1 -maxdepth 1 ! -name steps.log ! -name bench.md ! -name bench.json \
            -exec rm -rf {} + && mv /tmp/as-logs.tar.gz "$OUT/logs.tar.gz"
fi
