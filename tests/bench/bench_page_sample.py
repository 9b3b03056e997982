#!/usr/bin/env python3
"""Pages + sampling: how to split the budget between Quest pages and uniform samples.

Runs `attnscope sparsity --method page,topk-sample,page-sample` on each trace at 10x-100x
(default heavy fraction 0.5 for topk-sample and page-sample), then page-sample alone at other
heavy fractions F (the share of the budget given to whole Quest pages; the rest is sampled), and
prints the median relative output error over every (layer, head, query) record per method,
F and sparsity, with page-sample's ratio to Quest's error (issue 20's goal: <= 0.5 at 50x).

  python3 tests/bench/bench_page_sample.py --attnscope build/attnscope \
      /work/traces/needle-8k.safetensors /work/traces/multihop-8k.safetensors
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, trace, methods, sparsities, frac, page, seed):
    cmd = [binary, "sparsity", trace, "--method", methods, "--sparsity",
           ",".join(str(s) for s in sparsities), "--heavy-frac", str(frac), "--page-size",
           str(page), "--seed", str(seed), "--json", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    errs, bad = {}, 0
    for r in json.loads(p.stdout)["records"]:
        if r["record"] == "sparsity":
            errs.setdefault((r["method"], round(r["budget"], 9)), []).append(r["rel_error"])
        elif r["record"] == "check":
            bad = 0 if r["pass"] else 1
    return {k: statistics.median(v) for k, v in errs.items()}, bad, " ".join(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--attnscope", default="build/attnscope")
    ap.add_argument("--sparsities", default="10,20,50,100")
    ap.add_argument("--fracs", default="0.7,0.8,0.9,0.95")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the medians here")
    a = ap.parse_args()
    sp = [int(s) for s in a.sparsities.split(",")]
    out = []
    for tr in a.traces:
        name = os.path.basename(tr).split(".")[0]
        base, bad, cmd = run(a.attnscope, tr, "page,topk-sample,page-sample", sp, 0.5, a.page,
                             a.seed)
        print(f"# {cmd}  (checks {'FAIL' if bad else 'pass'})", flush=True)
        rows = [("page", None, base, "page"), ("topk-sample", 0.5, base, "topk-sample"),
                ("page-sample", 0.5, base, "page-sample")]
        for f in [float(x) for x in a.fracs.split(",") if x]:
            med, bad, cmd = run(a.attnscope, tr, "page-sample", sp, f, a.page, a.seed)
            print(f"# {cmd}  (checks {'FAIL' if bad else 'pass'})", flush=True)
            rows.append(("page-sample", f, med, "page-sample"))
        for meth, f, med, key in rows:
            vals = [med.get((key, round(1.0 / s, 9))) for s in sp]
            quest = [base.get(("page", round(1.0 / s, 9))) for s in sp]
            out.append({"trace": name, "method": meth, "heavy_frac": f, "page": a.page,
                        "median_rel_error": dict(zip(sp, vals)),
                        "over_quest": dict(zip(sp, [v / q if v is not None and q else None
                                                    for v, q in zip(vals, quest)]))})
    print("\n| trace | method | F | " + " | ".join(f"{s}x" for s in sp) + " | 50x / Quest |")
    print("|---|---|---|" + "---|" * len(sp) + "---|")
    for r in out:
        cells = " | ".join(f"{r['median_rel_error'][s]:.3f}" if r['median_rel_error'][s] is not None
                           else "-" for s in sp)
        ratio = r["over_quest"].get(50)
        print(f"| {r['trace']} | {r['method']} | {r['heavy_frac'] if r['heavy_frac'] is not None else '-'}"
              f" | {cells} | {'%.2f' % ratio if ratio is not None else '-'} |")
    if a.json:
        with open(a.json + ".tmp", "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
