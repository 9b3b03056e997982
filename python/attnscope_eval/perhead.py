"""Per-head prediction against model-level outcome (`attnscope eval --perhead DIR`).

For the first sample of every (task, length), the capture tool (data/capture) writes a trace of
the same prompt (its last T tokens decoded one at a time, the layers of --perhead-layers), and
`attnscope sparsity TRACE --summary-only --json` measures each head's tolerance: the median over
heads of the largest sparsity whose mean relative output error stays under 5% (its
`model_summary` record, `median_sparsity_5pct`). Beside it, the model-level tolerance of the
`tolerance` record. Spearman's rho over the (task, length) points whose dense accuracy is at
least 0.5 (and the perplexity task), per method."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from . import stats
from . import tasks as tk


class PerHeadError(Exception):
    pass


def _attnscope_bin() -> str:
    b = os.environ.get("ATTNSCOPE_BIN") or shutil.which("attnscope")
    if not b or not os.access(b, os.X_OK):
        raise PerHeadError("--perhead needs the attnscope program (run through `attnscope eval` "
                           "or set ATTNSCOPE_BIN)")
    return b


def run(args, work, tol_records, info) -> list[dict]:
    os.makedirs(args.perhead, exist_ok=True)
    exe = _attnscope_bin()
    tool = os.path.join(tk.CAPTURE_DIR, "attnscope_capture.py")
    tol = {(r["task"], r["length"], r["method"]): r for r in tol_records}
    methods = sorted({r["method"] for r in tol_records})
    out = []
    seen = set()
    for t, n, i, build in work:
        if (t, n) in seen or i != 0:
            continue
        seen.add((t, n))
        s = build()
        base = os.path.join(args.perhead, f"{t}-{n}")
        ids_path, trace = base + ".ids", base + ".safetensors"
        if not os.path.exists(trace):
            with open(ids_path, "w") as f:
                f.write(" ".join(str(x) for x in s["ids"]) + "\n")
            cmd = [sys.executable, tool, "--model", args.model, "--prompt-ids", ids_path,
                   "-T", str(args.perhead_t), "--layers", args.perhead_layers,
                   "--dtype", "f32", "-o", trace]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise PerHeadError(f"capture of {t} at {n} failed: "
                                   f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
        r = subprocess.run([exe, "sparsity", trace, "--method", ",".join(methods),
                            "--summary-only", "--json", "--quiet", "--seed", str(args.seed),
                            "--sinks", str(args.sinks), "--page-size", str(args.page_size),
                            "--heavy-frac", str(args.heavy_frac), "--delta", str(args.delta)],
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):  # 1: a check failed; the summary is still written
            raise PerHeadError(f"attnscope sparsity {trace}: {r.stderr.strip()}")
        doc = json.loads(r.stdout)
        for rec in doc["records"]:
            if rec.get("record") != "model_summary":
                continue
            m = rec["method"]
            mt = tol.get((t, n, m))
            if mt is None:
                continue
            out.append(dict(record="perhead", task=t, length=n, method=m, trace=trace,
                            perhead_tolerance=rec.get("median_sparsity_5pct"),
                            perhead_min_tolerance=rec.get("min_sparsity_5pct"),
                            perhead_dense_heads=rec.get("dense_heads_5pct"),
                            heads=rec.get("heads"), model_tolerance=mt["model_tolerance"],
                            model_censored=mt["censored"], dense_accuracy=mt["dense_accuracy"]))
    return out + rank_records(out)


def rank_records(perhead: list[dict]) -> list[dict]:
    """Per method, Spearman's rho between per-head and model-level tolerance over the
    (task, length) points of `perhead` records whose dense accuracy is at least 0.5 (ppl has
    no accuracy and counts): elsewhere the model-level tolerance measures nothing."""
    out = []
    for m in sorted({r["method"] for r in perhead}):
        pts = [(r["perhead_tolerance"], r["model_tolerance"]) for r in perhead
               if r["method"] == m and r["perhead_tolerance"] is not None
               and (r["dense_accuracy"] is None or r["dense_accuracy"] >= 0.5)]
        out.append(dict(record="perhead_rank", method=m, points=len(pts),
                        spearman=stats.spearman([a for a, _ in pts], [b for _, b in pts])))
    return out
