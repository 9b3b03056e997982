#!/usr/bin/env python3
"""Per-call cost of attnscope.select_heads (one decode step of one layer: every query head's
selection) against the NumPy dense attention of the same step, in one run (ratios, not absolute
times: the machine is shared). SmolLM2-135M-like shapes: hq = 9, hkv = 3, d = 64, n keys.

usage: OPENBLAS_NUM_THREADS=1 python3 tests/bench/bench_select_heads.py [--n 2048,8192]
       [--reps 30] [--dtype float32|float64] [--json FILE]
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


def timeit(fn, reps):
    fn()  # warm
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="2048,8192")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--budget", default="20x")
    ap.add_argument("--json")
    a = ap.parse_args()
    hq, hkv, d = 9, 3, 64
    scale = 1 / np.sqrt(d)
    rng = np.random.default_rng(0)
    rows = []
    print("library %s, %s inputs, OPENBLAS_NUM_THREADS=%s, budget %s" % (
        attnscope.library_path(), a.dtype, os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"), a.budget))
    print("%6s  %-22s %4s  %10s  %10s  %7s  %6s" % ("n", "method", "mode", "select_us", "dense_us",
                                                     "ratio", "k"))
    for n in [int(x) for x in a.n.split(",")]:
        q = (rng.normal(size=(hq, d)) * 2).astype(a.dtype)
        K = rng.normal(size=(hkv, n, d)).astype(a.dtype)
        V = rng.normal(size=(hkv, n, d)).astype(a.dtype)
        t_dense = timeit(lambda: dense_step(q, K, V, scale), a.reps)
        cases = [(m, mode, None) for m in attnscope.METHODS for mode in ("q", "kv")]
        cases += [("topk-sample", mode, 0.05) for mode in ("q", "kv")]
        for method, mode, eps in cases:
            kw = {"mode": mode, "scale": scale}
            if eps is not None:
                kw.update(V=V, eps_rel=eps)
            sels = attnscope.select_heads(q, K, method, a.budget, **kw)
            k = float(np.mean([len(s) for s in sels]))
            t = timeit(lambda: attnscope.select_heads(q, K, method, a.budget, **kw), a.reps)
            name = method + (" eps=%g" % eps if eps is not None else "")
            rows.append({"n": n, "method": name, "mode": mode, "select_us": t * 1e6,
                         "dense_us": t_dense * 1e6, "ratio": t / t_dense, "mean_k": k})
            print("%6d  %-22s %4s  %10.0f  %10.0f  %7.1f  %6.0f" % (n, name, mode, t * 1e6,
                                                                   t_dense * 1e6, t / t_dense, k))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"hq": hq, "hkv": hkv, "d": d, "dtype": a.dtype, "budget": a.budget,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
