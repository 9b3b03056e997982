#!/usr/bin/env python3
"""Per-call cost of attnscope.select_heads (one decode step of one layer: every query head's
selection) against the NumPy dense attention of the same step, in one run (ratios, not absolute
times: the machine is shared). SmolLM2-135M-like shapes: hq = 9, hkv = 3, d = 64, n keys.

usage: OPENBLAS_NUM_THREADS=1 python3 tests/bench/bench_select_heads.py [--n 2048,8192]
       [--reps 30] [--dtype float32|float64] [--budget 20x] [--eps 0.05] [--trace FILE]
       [--alternate] [--json FILE]
Random steps (q ~ N(0, 4), K, V ~ N(0, 1)) of each n, and with --trace the last query of each
layer of a real trace. Medians; both sides in separate loops (warm caches) or, with --alternate,
in turn.
(ATTNSCOPE_LIB or PYTHONPATH=python as in docs/python.md.)"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import numpy as np  # noqa: E402

import attnscope  # noqa: E402


def dense_step(q, K, V, scale):
    """o[h] = softmax(scale K_g q_h) V_g for every query head, per kv head group (one gemm for the
    scores of the group, one for the outputs), as a model's decode step computes it."""
    hq, d = q.shape
    hkv = K.shape[0]
    G = hq // hkv
    o = np.empty((hq, d), dtype=q.dtype)
    for g in range(hkv):
        s = (q[g * G:(g + 1) * G] @ K[g].T) * scale                     # [G, n]
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)
        o[g * G:(g + 1) * G] = s @ V[g]
    return o


def timeit_pair(f_sel, f_dense, reps, alternate):
    """Medians of f_sel and f_dense. alternate: called in turn (a shared machine's load drift hits
    both alike; each call finds the caches as the other left them, as in a model's step, where
    the cache of 30 layers does not stay in L2/L3); else each in its own loop (warm caches)."""
    f_sel(), f_dense()  # warm
    ts, td = [], []
    if alternate:
        for _ in range(reps):
            t0 = time.perf_counter()
            f_dense()
            t1 = time.perf_counter()
            f_sel()
            t2 = time.perf_counter()
            td.append(t1 - t0)
            ts.append(t2 - t1)
    else:
        for f, out in ((f_dense, td), (f_sel, ts)):
            for _ in range(reps):
                t0 = time.perf_counter()
                f()
                out.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(np.median(td))


def steps(a, rng):
    """(label, q [hq, d], K, V [hkv, n, d], scale) decode steps: random ones of each n, and with
    --trace the last query of every layer of a real trace (its visible keys)."""
    hq, hkv, d = 9, 3, 64
    for n in [int(x) for x in a.n.split(",")]:
        q = (rng.normal(size=(hq, d)) * 2).astype(a.dtype)
        K = rng.normal(size=(hkv, n, d)).astype(a.dtype)
        V = rng.normal(size=(hkv, n, d)).astype(a.dtype)
        yield "random", q, K, V, 1 / np.sqrt(d)
    if a.trace:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        import py_attnscope_util as u
        for (L, q, k, v, pos, scale) in u.trace_layers(a.trace):
            n = int(pos[-1]) + 1 if pos is not None else k.shape[1]
            yield ("%s L%d" % (os.path.basename(a.trace).split(".")[0], L),
                   np.ascontiguousarray(q[:, -1]).astype(a.dtype),
                   np.ascontiguousarray(k[:, :n]).astype(a.dtype),
                   np.ascontiguousarray(v[:, :n]).astype(a.dtype), scale)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="2048,8192")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--budget", default="20x")
    ap.add_argument("--eps", type=float, default=0.05, help="eps_rel of the sized topk-sample rows")
    ap.add_argument("--trace", help="also the last query of every layer of this trace")
    ap.add_argument("--alternate", action="store_true",
                    help="time the two sides in turn (cold caches) instead of in separate loops")
    ap.add_argument("--json")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print("library %s, %s inputs, OPENBLAS_NUM_THREADS=%s, budget %s, %s" % (
        attnscope.library_path(), a.dtype, os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"), a.budget,
        "alternating" if a.alternate else "separate loops"))
    print("%-26s %6s  %-20s %4s  %10s  %10s  %6s  %6s" % ("step", "n", "method", "mode", "select_us",
                                                         "dense_us", "ratio", "k"))
    for label, q, K, V, scale in steps(a, rng):
        n = K.shape[1]
        cases = [(m, mode, None) for m in attnscope.METHODS for mode in ("q", "kv")]
        cases += [("topk-sample", mode, a.eps) for mode in ("q", "kv")]
        for method, mode, eps in cases:
            kw = {"mode": mode, "scale": scale}
            if eps is not None:
                kw.update(V=V, eps_rel=eps)
            sels = attnscope.select_heads(q, K, method, a.budget, **kw)
            k = float(np.mean([len(s) for s in sels]))
            t, t_dense = timeit_pair(lambda: attnscope.select_heads(q, K, method, a.budget, **kw),
                                     lambda: dense_step(q, K, V, scale), a.reps, a.alternate)
            name = method + (" eps=%g" % eps if eps is not None else "")
            rows.append({"step": label, "n": n, "method": name, "mode": mode,
                         "select_us": t * 1e6, "dense_us": t_dense * 1e6, "ratio": t / t_dense,
                         "mean_k": k})
            print("%-26s %6d  %-20s %4s  %10.0f  %10.0f  %6.2f  %6.0f" % (
                label, n, name, mode, t * 1e6, t_dense * 1e6, t / t_dense, k))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dtype": a.dtype, "budget": a.budget, "eps_rel": a.eps,
                       "alternate": a.alternate, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
