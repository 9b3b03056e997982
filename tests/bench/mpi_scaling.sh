#!/usr/bin/env bash
# Strong scaling of the MPI engine (issue 19) on one trace: the plain process against
# `mpirun -n 1` and `mpirun -n 2`, the same command, in alternating rounds (plain, 1 rank,
# 2 ranks; plain, ...), each output compared byte for byte with the plain run's. Prints every
# run (wall, user, sys, the 1-minute load before it; the ranks' ATTNSCOPE_MPI_STATS lines at 2
# ranks), then the medians and the speed-ups. Not a ctest test (docs/benchmarks.md, "MPI engine").
#
#   bash tests/bench/mpi_scaling.sh BIN TRACE [REPS] [sparsity|report]
#
# sparsity: `sparsity TRACE --threads 1 --summary-only --json --quiet`;
# report:   `report TRACE -o FILE --quiet` (default witness; the page compared with its clock
#           masked).
# OPENBLAS_NUM_THREADS=1 everywhere. On a shared machine take the machine alone while it runs
# (here: flock -x /tmp/attnscope-cpu.lock bash tests/bench/mpi_scaling.sh ...).
set -u
bin=${1:?usage: mpi_scaling.sh BIN TRACE [REPS] [sparsity|report]}
trace=$(realpath "${2:?usage: mpi_scaling.sh BIN TRACE [REPS] [sparsity|report]}")
bin=$(realpath "$bin")
reps=${3:-3}
what=${4:-sparsity}
export OPENBLAS_NUM_THREADS=1 LC_ALL=C
mpi=(mpirun --oversubscribe -q -x OPENBLAS_NUM_THREADS -x ATTNSCOPE_MPI_STATS)
[[ $(id -u) == 0 ]] && mpi+=(--allow-run-as-root)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run NAME [LAUNCHER...]: one run; appends "NAME wall" to $tmp/walls
run() {
    local name=$1
    shift
    local out=$tmp/$name.out args
    if [[ $what == report ]]; then
        args=(report "$trace" -o r.html --quiet) # in a folder of its own: the same command line
    else
        args=(sparsity "$trace" --threads 1 --summary-only --json --quiet)
    fi
    local load t0 t1 rc
    load=$(cut -d' ' -f1 /proc/loadavg)
    mkdir -p "$tmp/$name"
    t0=$(date +%s.%N)
    (cd "$tmp/$name" && ATTNSCOPE_MPI_STATS=1 /usr/bin/time -f "%U %S" -o "$tmp/time" "$@" \
        "$bin" "${args[@]}" >"$out" 2>"$tmp/err")
    rc=$?
    t1=$(date +%s.%N)
    local wall
    wall=$(echo "$t1 - $t0" | bc -l)
    read -r user sys <"$tmp/time"
    if [[ $what == report ]]; then
        sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC/DATE/g;
                s/>[0-9]+\.[0-9]{2} s</>SECONDS</g' "$tmp/$name/r.html" >"$out"
    fi
    local same=identical
    [[ -f $tmp/plain.ref ]] && ! cmp -s "$out" "$tmp/plain.ref" && same=DIFFERENT
    [[ $name == plain && ! -f $tmp/plain.ref ]] && cp "$out" "$tmp/plain.ref"
    printf '%-6s wall %7.2f s  user %7.2f s  sys %5.2f s  load %s  exit %d  %s\n' \
        "$name" "$wall" "$user" "$sys" "$load" "$rc" "$same"
    grep '^attnscope mpi:' "$tmp/err" | sed 's/^/         /'
    echo "$name $wall" >>"$tmp/walls"
}

echo "# $what on $trace, $reps rounds; $(nproc) cores; $(uptime)"
for ((r = 1; r <= reps; r++)); do
    run plain
    run n1 "${mpi[@]}" -n 1
    run n2 "${mpi[@]}" -n 2
done
median() { awk -v n="$1" '$1 == n {print $2}' "$tmp/walls" | sort -g |
    awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
p=$(median plain) m1=$(median n1) m2=$(median n2)
printf 'median wall: plain %.2f s, mpirun -n 1 %.2f s (%.3fx plain), mpirun -n 2 %.2f s\n' \
    "$p" "$m1" "$(echo "$m1 / $p" | bc -l)" "$m2"
printf 'speed-up of 2 ranks: %.2fx the plain process, %.2fx one rank\n' \
    "$(echo "$p / $m2" | bc -l)" "$(echo "$m1 / $m2" | bc -l)"
echo "# $(uptime)"
