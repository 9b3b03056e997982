#!/bin/bash
# Peak anonymous memory (RssAnon: allocations, not the mapped trace) of the shared sparsity
# sweep on query head 0 (32 queries) of a 64k-key and a 1M-key trace, at --mem 64 and 512 MiB.
# The traces (docs/benchmarks.md):
#   attnscope sim gen --n 64k --heads 8 --kv-heads 2 --t 32 --causal -o /tmp/sim-64k.safetensors
#   attnscope sim gen --n 1M  --heads 8 --kv-heads 2 --t 32 --causal -o /tmp/sim-1m.safetensors
# Usage: ATTNSCOPE=build/attnscope T64K=... T1M=... bash tests/bench/mem_sweep.sh
export OPENBLAS_NUM_THREADS=1
for T in ${T64K:-/tmp/sim-64k.safetensors} ${T1M:-/tmp/sim-1m.safetensors}; do
 for M in 64 512; do
  r=$(bash "$(dirname "$0")/rssanon.sh" ${ATTNSCOPE:-build/attnscope} sparsity $T --head 0 --threads 1 --mem $M --summary-only --json --quiet)
  echo "$T mem=$M $r"
 done
done
