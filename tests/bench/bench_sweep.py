#!/usr/bin/env python3
"""Benchmark of the sparsity sweep (issue 18), as ratios measured in one run:

  sweep / dense   `attnscope sparsity TRACE` (default: 5 methods x 12 budgets) against one dense
                  pass, `attnscope attend TRACE` (every query's exact float64 output);
  numpy / sweep   tests/bench/sweep_numpy.py (the same sweep in fast NumPy float64, in a child
                  process) against `attnscope sparsity`;
  1 / 2 threads   `attnscope sparsity --threads 1` against `--threads 2`;
plus optional commands (--extra NAME='ARGS', e.g. bottleneck or report) against the dense pass.

Every side runs --reps times, interleaved, with OPENBLAS_NUM_THREADS=1 (the NumPy side too);
medians of wall time (and of user CPU time, which the other jobs of a shared machine disturb
less) are reported with the machine's load. Then the deterministic methods' mean errors, bounds
and masses of the two implementations are compared (they must agree to 1e-9: the same sweep).

    python3 tests/bench/bench_sweep.py TRACE [--bin build/attnscope] [--reps 3] [--layer L]
        [--head H] [--no-numpy] [--no-threads] [--extra NAME='ARGS'...] [--json OUT]
Not a ctest test (docs/benchmarks.md, "The sparsity sweep").
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
FRACS = [1.0 / x for x in (2, 3, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100)]


def timed(cmd, env, out=None):
    """wall seconds, user+sys CPU seconds of the child, exit status"""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(out or os.devnull, "w") as f:
        rc = subprocess.call(cmd, stdout=f, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if rc != 0:
        sys.exit(f"bench_sweep: {' '.join(cmd)}: exit {rc}")
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "attnscope"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layer", type=int)
    ap.add_argument("--head", type=int, help="one query head (every side)")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--no-threads", action="store_true")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--json")
    args = ap.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    lay = ["--layer", str(args.layer)] if args.layer is not None else []
    if args.head is not None:
        lay += ["--head", str(args.head)]
    tmp = tempfile.mkdtemp(prefix="bench_sweep.")
    c_json, np_json = os.path.join(tmp, "c.json"), os.path.join(tmp, "np.json")
    sides = {
        "dense": [args.bin, "attend", args.trace, "--json", *lay],
        "sweep": [args.bin, "sparsity", args.trace, "--json", "--summary-only", "--quiet",
                  "--threads", "1", *lay],
    }
    if not args.no_threads:
        sides["sweep_2t"] = [args.bin, "sparsity", args.trace, "--json", "--summary-only",
                             "--quiet", "--threads", "2", *lay]
    if not args.no_numpy:
        sides["numpy"] = [sys.executable, os.path.join(HERE, "sweep_numpy.py"), args.trace,
                          "--out", np_json, *lay]
    for e in args.extra:
        name, _, rest = e.partition("=")
        sides[name] = [args.bin, *rest.replace("TRACE", args.trace).split(), *lay]
    times = {k: [] for k in sides}
    load = [os.getloadavg()[0]]
    for rep in range(args.reps):
        for name, cmd in sides.items():
            out = c_json if name == "sweep" else None
            times[name].append(timed(cmd, env, out))
            print(f"  rep {rep + 1} {name:10s} wall {times[name][-1][0]:8.2f} s  "
                  f"cpu {times[name][-1][1]:8.2f} s", file=sys.stderr, flush=True)
        load.append(os.getloadavg()[0])
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in times.items()}
    res = {"trace": args.trace, "reps": args.reps, "load_1min": load, "median": med,
           "ratios": {}}

    def ratio(a, b):
        return [med[a][0] / med[b][0], med[a][1] / med[b][1]]

    res["ratios"]["sweep/dense"] = ratio("sweep", "dense")
    if "sweep_2t" in med:
        res["ratios"]["sweep_1t/sweep_2t"] = ratio("sweep", "sweep_2t")
        res["ratios"]["sweep_2t/dense"] = ratio("sweep_2t", "dense")
    if "numpy" in med:
        res["ratios"]["numpy/sweep"] = ratio("numpy", "sweep")
    for e in args.extra:
        name = e.partition("=")[0]
        res["ratios"][f"{name}/dense"] = ratio(name, "dense")
    # the same sweep: deterministic methods' means agree
    if "numpy" in med:
        npr = json.load(open(np_json))
        c = json.load(open(c_json))
        acc = {}
        for r in c["records"]:
            if r["record"] != "head_budget" or r["method"] not in ("topk", "sink-window", "page"):
                continue
            bi = min(range(len(FRACS)), key=lambda i: abs(FRACS[i] - r["budget"]))
            acc.setdefault((r["method"], bi), []).append(
                (r["mean_rel_error"], r["mean_rel_bound"], r["mean_captured_mass"]))
        worst = 0.0
        for (m, bi), v in acc.items():
            ce = [sum(x[j] for x in v) / len(v) for j in range(3)]
            ne = npr[f"{m}|{bi}"]
            worst = max(worst, *(abs(ce[j] - ne[j]) / max(abs(ce[j]), 1e-300) for j in range(3)))
        res["numpy_agreement_max_rel"] = worst
        if worst > 1e-9:
            print(f"bench_sweep: NumPy and attnscope disagree (max rel {worst:.3g})",
                  file=sys.stderr)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
