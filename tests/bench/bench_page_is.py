#!/usr/bin/env python3
"""Pages + importance sampling (`sparsity --method page-is`) against Quest (`page`) and
`topk-sample` on real traces: median relative output error over every (layer, head, query)
record at 10x, 20x, 50x, 100x, with page-is's ratio to Quest's (pages of 16) at 50x (issue 20's
goal: <= 0.5). Sweeps the heavy share F (--heavy-frac), the proposal's temperature (--is-temp),
its uniform share (--is-mix) and the page size, and reports the coverage record of each run.

  python3 tests/bench/bench_page_is.py --attnscope build/attnscope [--score center|bound] \
      [--draw poisson|replace] \
      /work/traces/needle-8k.safetensors /work/traces/multihop-8k.safetensors
"""
import argparse
import json
import statistics
import subprocess
import sys

SPS = "10x,20x,50x,100x"


def run(binary, trace, extra):
    cmd = [binary, "sparsity", trace, "--sparsity", SPS, "--seed", "1", "--json", "--quiet"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    errs, cov, ok, keys = {}, {}, None, {}
    for r in json.loads(p.stdout)["records"]:
        if r["record"] == "sparsity":
            errs.setdefault((r["method"], round(r["budget"], 9)), []).append(r["rel_error"])
            keys.setdefault((r["method"], round(r["budget"], 9)), []).append(r["k"])
        elif r["record"] == "coverage":
            cov[r["method"]] = (r["exceed"], r["draws"])
        elif r["record"] == "check":
            ok = r["pass"]
    med = {k: statistics.median(v) for k, v in errs.items()}
    med.update({("keys",) + k: statistics.mean(v) for k, v in keys.items()})
    return med, cov, ok, " ".join(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--attnscope", default="build/attnscope")
    ap.add_argument("--score", default="center", choices=("center", "bound"),
                    help="the proposal's page score (--is-score) of the page-is runs")
    ap.add_argument("--draw", default="poisson", choices=("poisson", "replace"),
                    help="how page-is samples the rest (--is-draw)")
    ap.add_argument("--quick", action="store_true", help="only the default page-is run")
    a = ap.parse_args()
    buds = [0.1, 0.05, 0.02, 0.01]
    sc = ["--is-score", a.score, "--is-draw", a.draw]
    # the best heavy share of each (on needle-8k): 0.5 with the centre, 0.8 with the bound
    F0 = "0.5" if a.score == "center" else "0.8"
    variants = [("page-is", sc + ["--heavy-frac", F0])]
    if not a.quick and a.draw == "poisson":
        variants += [("page-is", sc + ["--heavy-frac", f]) for f in ("0.3", "0.7")]
        variants += [("page-is", sc + ["--heavy-frac", F0, "--is-temp", "0.5"]),
                     ("page-is", sc + ["--heavy-frac", F0, "--page-size", "8"]),
                     ("page-is", sc + ["--heavy-frac", F0, "--page-size", "32"])]
    elif not a.quick:
        variants += [("page-is", sc + ["--heavy-frac", f]) for f in ("0.5", "0.7", "0.8", "0.9")
                     if f != F0]
        variants += [("page-is", sc + ["--heavy-frac", F0, "--is-temp", "0.5"]),
                     ("page-is", sc + ["--heavy-frac", F0, "--is-mix", "0.3"]),
                     ("page-is", sc + ["--heavy-frac", F0, "--page-size", "8"]),
                     ("page-is", sc + ["--heavy-frac", F0, "--page-size", "32"]),
                     ("page", ["--page-size", "8"]), ("page", ["--page-size", "32"])]
    print("| trace | method | options | 10x | 20x | 50x | 100x | 50x / Quest | keys read at 50x "
          "(mean) | exceed / draws |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tr in a.traces:
        name = tr.rsplit("/", 1)[-1].split(".")[0]
        base, cov, ok, cmd = run(a.attnscope, tr, ["--method", "page,topk-sample"])
        print(f"<!-- {cmd} -->", flush=True)
        q50 = base[("page", 0.02)]
        for m in ("page", "topk-sample"):
            cells = " | ".join(f"{base[(m, b)]:.3f}" for b in buds)
            c = cov.get(m)
            print(f"| {name} | {m} | {'F = 0.5' if m != 'page' else 'P = 16'} | {cells} | "
                  f"{base[(m, 0.02)] / q50:.2f} | {base[('keys', m, 0.02)]:.1f} | "
                  f"{f'{c[0]} / {c[1]}' if c else '-'} |", flush=True)
        for m, extra in variants:
            res, cov, ok, cmd = run(a.attnscope, tr, ["--method", m] + extra)
            cells = " | ".join(f"{res[(m, b)]:.3f}" for b in buds)
            c = cov.get(m)
            print(f"| {name} | {m} | {' '.join(extra)} | {cells} | {res[(m, 0.02)] / q50:.2f} | "
                  f"{res[('keys', m, 0.02)]:.1f} | {f'{c[0]} / {c[1]}' if c else '-'} |"
                  f"{'' if ok else ' CHECK FAILED'}", flush=True)


if __name__ == "__main__":
    main()
