#!/usr/bin/env bash
# compare_outputs.sh: every command's output on the bundled samples and on a synthetic trace,
# byte for byte, against a reference (issue 16: a redesign must keep every record identical).
#
#   tests/compare_outputs.sh record BIN FILE    run the cases with BIN, write "sha256  case" lines
#   tests/compare_outputs.sh check  BIN FILE    run the cases with BIN, compare with FILE (exit 1
#                                               naming each case that differs)
#   tests/compare_outputs.sh diff   BIN REFBIN  run the cases with both programs and diff each
#                                               output (for a reference build at hand)
#   env KEEP=DIR                                keep the outputs of the (last) run in DIR
#   env RUNNER='mpirun -q -n 3'                 run each case under this launcher (the MPI
#                                               engine: outputs must not change; issue 19);
#                                               the sim cases, which do not use it, are skipped
#
# A case's output is its stdout, its exit status and every file it writes (a synthetic trace,
# an index file, an HTML report). Traces are named by paths relative to the run's folder, so the
# "trace" fields of the JSON documents do not depend on where the checkout lies. OpenBLAS is
# pinned to one kernel family and one thread so that its sums run in one order on any x86-64
# machine (with AVX2); the recorded digests (tests/data/golden/outputs.sha256) come from 00c7ebc
# built with every optional library (GLPK, GSL, PLplot + OpenSSL; cases of a missing GSL or
# report are skipped). FFTW's and libm's CPU-specific code paths are not pinned: on a machine
# whose results differ in the last bits, re-record from the reference commit there.
set -u
mode=${1:-}
bin=${2:-}
arg=${3:-}
if [[ -z $mode || -z $bin || -z $arg ]]; then
    sed -n 2,18p "$0" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd -P)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
export LC_ALL=C

S=samples/smollm2-135m-needle-2k.safetensors
R=samples/smollm2-135m-needle-2k.ref.safetensors
C=samples/smollm2-135m-code-1k.safetensors
Y=synth.safetensors
GEN="sim gen -o $Y --n 600 --d 32 --t 8 --heads 4 --kv-heads 2 --layers 2 --causal --seed 7 \
--profile zipf:s=1.1 --profile needle:gap=10,pos=100,noise=1 --quiet --json"
# name | arguments (word-split) | files the case writes
cases=(
    "gen|$GEN|$Y"
    "info|info $S --json|"
    "info_table|info $C|"
    "info_ref|info $R --json|"
    "attend|attend $S --layer 10 --head 4 --json|"
    "attend_csv|attend $Y --csv|"
    "entropy|entropy $S --json|"
    "entropy_csv|entropy $C --layer 19 --csv|"
    "entropy_table|entropy $Y --quiet|"
    "rank|rank $S --json|"
    "rank_sv|rank $C --layer 0 --matrix all --sv --json|"
    "bottleneck|bottleneck $S --layer 29 --head 2 --query 15 --witness --json --quiet|"
    "bottleneck_default|bottleneck $S --layer 29 --head 2 --query 15 --json --quiet|"
    "sparsity|sparsity $S --json --quiet|"
    "sparsity_table|sparsity $C --layer 10 --quiet|"
    "sparsity_methods|sparsity $S --layer 19 --method page,topk-sample,uniform --budget 3%,128 --trials 3 --eps 0.05 --json --quiet|"
    "sparsity_export|sparsity $S --layer 0 --method page --budget 5% --export-index idx.safetensors --export-outputs --json --quiet|idx.safetensors"
    "sparsity_index|sparsity $S --layer 0 --method index --index idx.safetensors --json --quiet|"
    "spectrum|spectrum $S --json|"
    "spectrum_bins|spectrum $C --layer 29 --bins --json|"
    "compare|compare $S $C --layer 29 --json --quiet|"
    "y_info|info $Y --json|"
    "y_entropy|entropy $Y --json|"
    "y_rank|rank $Y --sv --json|"
    "y_bottleneck|bottleneck $Y --layer 1 --witness --json --quiet|"
    "y_sparsity|sparsity $Y --method all --budget 5%,25% --trials 2 --json --quiet|"
    "y_spectrum|spectrum $Y --json|"
    "y_attend|attend $Y --json|"
    "sim_topk|sim topk-mass --quick --json|"
    "sim_rank|sim rank --quick --json|"
    "sim_bottleneck|sim bottleneck --quick --json|"
    "sim_coverage|sim coverage --quick --json|"
    "sim_spectrum|sim spectrum --quick --json|"
    "usage_budget|sparsity $S --budget 0%|"
    "usage_layer|entropy $S --layer 3|"
    "report|report $C --layer 29 --witness none -o r.html --quiet|r.html"
    "report_gpu|report $C --layer 0 --witness none --gpu-json gpu.json -o g.html --quiet|g.html"
)

# run_all BIN DIR: one file per case in DIR (stdout, exit status, written files)
run_all() {
    local b=$1 out=$2 work
    work=$(mktemp -d)
    ln -s "$here/data/samples" "$work/samples"
    ln -s "$here/gpu/bench/results/h100-bench.json" "$work/gpu.json" # a finished run: frozen
    mkdir -p "$out"
    local c name args files f
    for c in "${cases[@]}"; do
        IFS='|' read -r name args files <<<"$c"
        if [[ $name == report* ]] && ! "$b" help report >/dev/null 2>&1; then continue; fi
        if [[ $name == sim_* || $name == gen ]] && ! "$b" help sim >/dev/null 2>&1; then continue; fi
        if [[ $name == sim_* && -n ${RUNNER:-} ]]; then continue; fi
        local runner=
        [[ $name != gen ]] && runner=${RUNNER:-}
        # shellcheck disable=SC2086
        (cd "$work" && $runner "$b" $args >"$out/$name.stdout" 2>"$out/$name.stderr")
        echo $? >"$out/$name.rc"
        for f in $files; do
            if [[ ! -f $work/$f ]]; then
                echo missing >"$out/$name.$f"
            elif [[ $f == *.html ]]; then # the report's clock (when it was made, how long it
                # took) and the trace's absolute path, which names the checkout's folder
                sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC/DATE/g;
                        s/>[0-9]+\.[0-9]{2} s</>SECONDS</g' "$work/$f" |
                    awk -v h="$here/" '{ while ((i = index($0, h)) > 0) $0 = substr($0, 1, i - 1) "CHECKOUT/" substr($0, i + length(h)); print }' >"$out/$name.$f"
            else
                cp "$work/$f" "$out/$name.$f"
            fi
        done
    done
    rm -rf "$work"
}

# digests DIR: "sha256  case-file" per output (stderr is not compared: progress and timing)
digests() {
    (cd "$1" && for f in $(ls | grep -v '\.stderr$' | sort); do sha256sum "$f"; done)
}

case $mode in
record)
    out=${KEEP:-$(mktemp -d)}
    run_all "$bin" "$out"
    digests "$out" >"$arg"
    echo "recorded $(wc -l <"$arg") outputs in $arg"
    [[ -n ${KEEP:-} ]] || rm -rf "$out"
    ;;
check)
    out=${KEEP:-$(mktemp -d)}
    run_all "$bin" "$out"
    digests "$out" >"$out/.now"
    bad=0
    while read -r sum f; do
        now=$(awk -v f="$f" '$2 == f { print $1 }' "$out/.now")
        if [[ -z $now ]]; then
            case $f in report* | sim_* | gen.*) continue ;; esac # built without PLplot / GSL
            echo "MISSING $f"
            bad=1
        elif [[ $now != "$sum" ]]; then
            echo "DIFFERS $f"
            bad=1
        fi
    done <"$arg"
    while read -r sum f; do
        grep -q "  $f\$" "$arg" || { echo "NEW     $f (not in $arg)"; bad=1; }
    done <"$out/.now"
    if ((bad)); then
        echo "outputs differ from $arg (KEEP=DIR keeps them; 'diff' mode shows the bytes)"
    else
        echo "all $(wc -l <"$arg") outputs identical to $arg"
    fi
    [[ -n ${KEEP:-} ]] || rm -rf "$out"
    exit $bad
    ;;
diff)
    a=$(mktemp -d)
    b=$(mktemp -d)
    run_all "$arg" "$a"
    run_all "$bin" "$b"
    bad=0
    for f in $(cd "$a" && ls | grep -v '\.stderr$' | sort); do
        if ! cmp -s "$a/$f" "$b/$f"; then
            echo "DIFFERS $f"
            diff <(head -c 4000 "$a/$f") <(head -c 4000 "$b/$f") | head -20
            bad=1
        fi
    done
    ((bad)) || echo "all outputs identical ($arg vs $bin)"
    rm -rf "$a" "$b"
    exit $bad
    ;;
*)
    sed -n 2,18p "$0" >&2
    exit 2
    ;;
esac
