#!/usr/bin/env bash
# gpu/run_device.sh: everything the GPU machine runs, in one call (docs/gpu.md, "Running on a
# GPU machine"). Steps run in the order given; logs go to $OUT (default ./out/device).
#
#   env        device, driver, tool versions
#   prebuilt   use binaries built elsewhere (.dev/gpu/prebuilt: attnscope, libattnscope.so*,
#              test_gpu_kernels), else build
#   build      configure + build with CMake here (cJSON from .dev/gpu/debs when missing)
#   test       device tests (full shapes)
#   sanitize   compute-sanitizer memcheck and racecheck (SAN_TOOLS) on the quick test shapes
#   replay     attnscope gpu replay of the bundled sample trace, every method, kv and q modes
#   bench      gpu/bench/bench.py: attnscope gpu bench + FlashInfer + PyTorch SDPA (BENCH_ARGS)
#   quickbench the same on a small sweep
#   profile    Nsight Compute on the dense decode kernel at B = 8 (PROFILE_B), N = 8k and 64k,
#              variants 0 and 2 (PROFILE_VARIANTS) (profile.txt)
#   slowmode   gpu/bench/slowmode.py: dense at B = 32/64, N = 8k/32k, attnscope with K/V in one
#              and in two allocations, SDPA likewise, alternating (slowmode.md)
#   profsel    Nsight Compute (SpeedOfLight) on the kernels of one Quest page selection
#              (pages of PROF_PAGE, default 16) at B = PROF_B (8), N = PROF_N (256k), 50x
#              (profsel.txt; at N = 1M ncu's save/restore of the 32 GiB working set outlasted a
#              call's deadline on 2026-12-05)
#   paged      attnscope gpu bench with contiguous, paged (--paged PAGED_BS, default 16) and again
#              contiguous K/V on one sweep (PAGED_BATCHES, PAGED_NS, PAGED_SPARSITIES), side by
#              side (paged.md)
#   variants   attnscope gpu bench for decode variants 0 (tensor cores), 2 and 3 (CUDA cores,
#              2- and 3-stage copy pipeline) on one sweep, in one run, side by side
#              (variants.md); VARIANTS="0 2" picks some, VAR_BATCHES, VAR_NS and
#              VAR_SPARSITIES change the sweep
# Steps stop being started once DEADLINE (epoch seconds; default start + 540 s, under the
# device's 10-minute limit per call) is near, and long steps are cut at it, so that the logs are
# always packed and come back.
set -u
OUT=${OUT:-$PWD/out/device}
mkdir -p "$OUT"
ROOT=$PWD
BIN=""
TEST=""
LIBDIR=""
DEADLINE=${DEADLINE:-$(($(date +%s) + 540))}
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/steps.log"; }
left() { local l=$((DEADLINE - $(date +%s))); [ $l -lt 1 ] && l=1; echo $l; }

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
    timeout "$(left)" "$TEST" >"$OUT/test.log" 2>&1
    echo "test_gpu_kernels rc=$?" | tee -a "$OUT/steps.log"
    grep -E "FAIL|checks|max relative|dense vs|^  [a-z]+ |estimator" "$OUT/test.log" | head -30
}

step_sanitize() {
    for tool in ${SAN_TOOLS:-memcheck racecheck}; do
        log "compute-sanitizer $tool"
        local t=${SAN_TIMEOUT:-120}
        [ "$(left)" -lt "$t" ] && t=$(left)
        AS_GPU_TEST_QUICK=1 timeout "$t" compute-sanitizer --tool $tool --error-exitcode 9 \
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
    # baselines stop being started 90 s before the deadline (a large shape takes up to ~30 s)
    local tl=$(($(left) - 90))
    [ $tl -lt 10 ] && tl=10
    PYTHONUNBUFFERED=1 timeout "$(left)" python3 gpu/bench/bench.py --attnscope "$BIN" --lib "$LIBDIR" --out "$OUT" \
        --time-limit $tl ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | grep -vE "^  (dense|sparse|select|e2e|copy)" | tail -60
}

step_quickbench() {
    BENCH_ARGS="--quick ${BENCH_ARGS:-}" step_bench
}

step_profile() {
    log profile
    local ncu v n
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    [ -n "$ncu" ] || { echo "profile: no ncu here" | tee -a "$OUT/steps.log"; return; }
    : >"$OUT/profile.txt"
    for v in ${PROFILE_VARIANTS:-0 2}; do
        for n in 8192 65536; do
            echo "### dense decode B = ${PROFILE_B:-8}, N = $n, variant $v" >>"$OUT/profile.txt"
            timeout "$(left)" "$ncu" --clock-control none --kernel-name regex:as_k_decode \
                --launch-skip 5 --launch-count 1 --section SpeedOfLight --section Occupancy \
                --section LaunchStats --section WarpStateStats --section SchedulerStats \
                --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
                "$BIN" gpu bench --variant $v --ds 128 --batches ${PROFILE_B:-8} --ns $n --sparsities 1 \
                --reps 20 --no-selection >>"$OUT/profile.txt" 2>&1
            echo "profile variant $v N=$n rc=$?" | tee -a "$OUT/steps.log"
        done
    done
    grep -E "^### |DRAM Throughput|Duration|Achieved Occupancy|Issue Slots Busy|Issued Warp|No Eligible|Warp Cycles Per Issued" "$OUT/profile.txt" | head -60
    # SASS of the bf16 d = 128 GQA dense instances (tensor-core and 2-stage CUDA-core)
    local cob
    cob=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null)
    if [ -n "$cob" ] && [ -f "$LIBDIR/libattnscope.so" ]; then
        "$cob" -sass "$LIBDIR/libattnscope.so" 2>&1 | awk '/Function : /{f = ($0 ~ /as_k_decode_tcILi2ELi128ELb0E|as_k_decodeILi2ELi128ELi4ELb0ELi2E/)} f' >"$OUT/decode.sass"
        wc -l "$OUT/decode.sass"
    fi
}

step_slowmode() {
    log slowmode
    PYTHONUNBUFFERED=1 timeout "$(left)" python3 gpu/bench/slowmode.py --attnscope "$BIN" \
        --rounds ${SLOW_ROUNDS:-3} --json "$OUT/slowmode.json" 2>&1 | tee "$OUT/slowmode.md" | tail -12
}

step_profsel() {
    log profsel
    local ncu only=select_pages
    [ "${PROF_PAGE:-16}" = 32 ] && only=select_pages32
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    [ -n "$ncu" ] || { echo "profsel: no ncu here" | tee -a "$OUT/steps.log"; return; }
    timeout "$(left)" "$ncu" --clock-control none --section SpeedOfLight --launch-count 24 \
        --kernel-name regex:'as_k_(page|tk|decode_tc|expand|agg)' \
        "$BIN" gpu bench --ds 128 --batches ${PROF_B:-8} --ns ${PROF_N:-262144} --sparsities 50 \
        --reps 20 --only $only >"$OUT/profsel.txt" 2>&1
    echo "profsel rc=$?" | tee -a "$OUT/steps.log"
    grep -E "^  as_k_|Duration|DRAM Throughput|Compute \(SM\) Throughput" "$OUT/profsel.txt" | head -60
}

step_variants() {
    log variants
    local v
    for v in ${VARIANTS:-0 2 3}; do
        timeout "$(left)" "$BIN" gpu bench --json --variant $v --ds 128 \
            --batches ${VAR_BATCHES:-1,8,32,64} --ns ${VAR_NS:-8192,65536,262144} \
            --sparsities ${VAR_SPARSITIES:-1,10,50} --max-gib 8 --no-selection \
            >"$OUT/variant$v.json" 2>"$OUT/variant$v.err"
        echo "gpu bench --variant $v rc=$?" | tee -a "$OUT/steps.log"
    done
    python3 gpu/bench/variants.py "$OUT"/variant*.json | tee "$OUT/variants.md"
}

step_paged() {
    # the same sweep with contiguous K/V, paged K/V (blocks of PAGED_BS keys through a random
    # block table) and contiguous again, one process each, back to back (paged.md)
    log paged
    local r
    for r in a0 b${PAGED_BS:-16} c0; do
        timeout "$(left)" "$BIN" gpu bench --json --ds 128 --batches ${PAGED_BATCHES:-1,8,32} \
            --ns ${PAGED_NS:-32768,262144,1048576} --sparsities ${PAGED_SPARSITIES:-1,50} \
            --max-gib 36 --paged ${r#?} >"$OUT/paged-$r.json" 2>"$OUT/paged-$r.err"
        echo "gpu bench --paged ${r#?} rc=$?" | tee -a "$OUT/steps.log"
    done
    python3 gpu/bench/variants.py "$OUT"/paged-a0.json "$OUT"/paged-b*.json "$OUT"/paged-c0.json |
        tee "$OUT/paged.md"
}

for s in "$@"; do
    if [ "$(left)" -lt 15 ]; then
        echo "step $s skipped: the deadline is reached" | tee -a "$OUT/steps.log"
        continue
    fi
    case $s in
    env) step_env ;;
    prebuilt) step_prebuilt ;;
    build) step_build ;;
    test) step_test ;;
    sanitize) step_sanitize ;;
    replay) step_replay ;;
    bench) step_bench ;;
    quickbench) step_quickbench ;;
    variants) step_variants ;;
    paged) step_paged ;;
    slowmode) step_slowmode ;;
    profsel) step_profsel ;;
    profile) step_profile ;;
    *) echo "unknown step $s" ;;
    esac
done
log done
# The device tool brings back only a few files from $OUT: pack the logs into one archive,
# keeping the step log and the bench tables beside it.
if [ "$(ls "$OUT" | wc -l)" -gt 4 ]; then
    tar -czf /tmp/as-logs.tar.gz -C "$OUT" . &&
        find "$OUT" -mindepth 1 -maxdepth 1 ! -name steps.log ! -name bench.md ! -name bench.json ! -name variants.md ! -name slowmode.md ! -name paged.md \
            ! -name profsel.txt \
            -exec rm -rf {} + && mv /tmp/as-logs.tar.gz "$OUT/logs.tar.gz"
fi
