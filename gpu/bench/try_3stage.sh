#!/usr/bin/env bash
# gpu/bench/try_3stage.sh: the next GPU step of gpu/bench/NOTES.md, in one device call.
# Builds and benchmarks the current decode kernel, then the same tree with
# patches/decode-3stage.patch applied (device tests, sanitizers, the same quick bench), so the
# two are compared in one run on one machine. FlashInfer joins the bench when
# .dev/gpu/whl/fi-trim.tar.xz was carried (gpu/bench/fi_prebuild.py makes it).
#   OUT=... bash gpu/bench/try_3stage.sh        (from the repository root)
set -u
OUT=${OUT:-$PWD/out/device}
mkdir -p "$OUT/base" "$OUT/3stage"
fi=""
[ -f .dev/gpu/whl/fi-trim.tar.xz ] || fi="--no-fi"
OUT="$OUT/base" BENCH_ARGS="$fi" bash gpu/run_device.sh env build quickbench
rm -rf /tmp/as3 && mkdir -p /tmp/as3 && cp -r . /tmp/as3/ && cd /tmp/as3 &&
    patch -p1 --quiet < gpu/bench/patches/decode-3stage.patch &&
    OUT="$OUT/3stage" BENCH_ARGS="$fi" SAN_TIMEOUT=180 bash gpu/run_device.sh build test sanitize quickbench
echo "== dense decode, base vs 3-stage (us)"
for v in base 3stage; do
    echo "-- $v"; grep -E "^\| 128 \| (1|8) \| " "$OUT/$v/bench.md" | head -4
done
