#!/usr/bin/env python3
"""gpu/bench/variants.py: side-by-side table of `attnscope gpu bench --json` runs.

Reads one JSON document per run (run_device.sh's `variants` step: one run per decode variant;
its `paged` step: contiguous and paged K/V, `--paged P`, alternating; the same sweep, one
machine) and prints, per (method, B, N, sparsity), the median microseconds of each run, its
share of the measured copy bandwidth, and each run's time over the first one's.
  python3 gpu/bench/variants.py out/variant0.json out/variant2.json out/variant3.json
  python3 gpu/bench/variants.py out/paged-a0.json out/paged-b16.json out/paged-c0.json
"""
import json
import sys

# what each decode variant is (gpu/as_gpu.h, gpu/as_gpu_decode.cu)
NAMES = {0: "tensor cores", 1: "simple", 2: "CUDA cores, 2-stage", 3: "CUDA cores, 3-stage"}


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: not read ({e})", file=sys.stderr)
        return None
    rows = {}
    for r in doc.get("records", []):
        if r.get("record") != "gpu_bench" or r["method"] == "copy":
            continue
        rows[(r["method"], r["d"], r["batch"], r["n"], r["sparsity"])] = r
    return (doc.get("variant"), doc.get("paged", 0) or 0, path), doc.get("device", "?"), rows


def main(paths):
    runs = [x for x in (load(p) for p in paths) if x is not None and x[0][0] is not None]
    if not runs:
        print("no variant runs to compare")
        return 1
    runs.sort(key=lambda x: x[0][2] if any(r[0][1] for r in runs) else x[0][0])
    print(f"Device: {runs[0][1]}\n")
    names = [f"v{v} ({NAMES.get(v, '?')}{f', paged {pg}' if pg else ''})"
             for (v, pg, _), _, _ in runs]
    head = "| method | d | B | N | sparsity | " + " | ".join(f"{n} us" for n in names)
    head += " | " + " | ".join(f"{n} % copy" for n in names)
    head += " | " + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    keys = sorted(set().union(*(r[2].keys() for r in runs)))
    for k in keys:
        got = [r[2].get(k) for r in runs]
        us = [f"{g['us']:.1f}" if g else "-" for g in got]
        pc = [f"{g['pct_copy']:.0f}" if g else "-" for g in got]
        ratio = [f"{g['us'] / got[0]['us']:.3f}" if g and got[0] else "-" for g in got[1:]]
        sp = f"{k[4]:.0f}x" if k[4] != 1 else "dense"
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {sp} | " + " | ".join(us) + " | " +
              " | ".join(pc) + " | " + " | ".join(ratio) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
