#!/usr/bin/env python3
"""Independent NumPy float64 check of `attnscope sparsity` on the real sample trace.

For every layer x head x query x budget of the deterministic methods (topk, sink-window, page)
this recomputes, from the raw trace bytes, the selection, the sparse output o_S, the captured
mass, the error ||o - o_S|| and the bound (1 - P_S) max_{i not in S} ||v_i - o_S||, and compares
them with the JSON records (1e-9 relative). For the sampling methods it recomputes the predicted
epsilon (docs/theory.md) from the population statistics. The trace reader, softmax, top-k and
the sampling statistics and epsilon are the shared NumPy reference of tests/py_attnscope_util.py
(also used by test_py_bounds.py); the selections of the deterministic methods are here. Exit 77
(skip) without NumPy, the sample trace or the program.
"""
import json
import math
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:
    print("numpy not installed: skip")
    sys.exit(77)

SRC = os.environ.get("AS_SRC", os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("AS_BIN")
SAMPLE = os.path.join(SRC, "data", "samples", "smollm2-135m-needle-2k.safetensors")
if not BIN or not os.path.exists(BIN) or not os.path.exists(SAMPLE):
    print("program or sample trace missing: skip")
    sys.exit(77)

RTOL = 1e-9
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402  (the trace reader and the NumPy reference)


def keys_for(b, n):
    if b["count"]:
        k = b["count"]
    else:
        x = b["frac"] * n
        k = math.ceil(x - 1e-9 * x)
    return max(1, min(n, k))


def select(method, q, K, s, n, k, sinks=4, P=16, scale=1.0):
    if method == "topk":
        return u.topk_idx(s, k)
    if method == "sink-window":
        s0 = min(sinks, k)
        w = k - s0
        return np.array(sorted(set(range(s0)) | set(range(max(n - w, s0), n))), dtype=np.int64)
    if method == "page":
        npg = (n + P - 1) // P
        want = npg if k >= n else max(1, k // P)
        want = min(want, npg)
        ub = np.empty(npg)
        for p in range(npg):
            blk = K[p * P: min((p + 1) * P, n)]
            mn, mx = blk.min(axis=0), blk.max(axis=0)
            ub[p] = scale * np.sum(np.maximum(q * mx, q * mn))
        pages = np.sort(np.lexsort((np.arange(npg), -ub))[:want])
        return np.concatenate([np.arange(p * P, min((p + 1) * P, n)) for p in pages])
    raise ValueError(method)


def close(x, y, what, ctx, atol=0.0):
    if not (abs(x - y) <= RTOL * max(abs(x), abs(y)) + atol):
        raise AssertionError(f"{ctx}: {what} attnscope {x!r} numpy {y!r}")


def run(args):
    p = subprocess.run([BIN, "sparsity", SAMPLE, "--json", "--quiet"] + args,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"attnscope sparsity {args}: exit {p.returncode}: {p.stderr}")
    return [r for r in json.loads(p.stdout)["records"] if r["record"] == "sparsity"]


def main():
    t, meta = u.load_safetensors(SAMPLE)
    scale = float(meta.get("scale", "0"))
    budgets = {0: {"frac": 0.02, "count": 0}, 1: {"frac": 0.10, "count": 0},
               2: {"frac": 0.0, "count": 64}}
    recs = run(["--method", "topk,sink-window,page", "--budget", "2%,10%,64"])
    checked = 0
    cache = {}
    skipped_ties = 0
    for r in recs:
        L, h, qi = r["layer"], r["head"], r["query"]
        key = (L, h, qi)
        if key not in cache:
            Q, K, V = t[f"layers.{L}.q"], t[f"layers.{L}.k"], t[f"layers.{L}.v"]
            hq, hkv = Q.shape[0], K.shape[0]
            kvh = h // (hq // hkv)
            pos = t.get(f"layers.{L}.q_pos")
            n = int(pos[qi]) + 1 if pos is not None else K.shape[1]
            sc = scale if scale > 0 else 1 / math.sqrt(Q.shape[2])
            q = Q[h, qi]
            Kn, Vn = K[kvh, :n], V[kvh, :n]
            s = sc * (Kn @ q)
            a = u.softmax(s)
            o = a @ Vn
            cache = {key: (q, Kn, Vn, s, a, o, n, sc)}
        q, Kn, Vn, s, a, o, n, sc = cache[key]
        if r["budget"] == 0.02:
            b = budgets[0]
        elif r["budget"] == 0.1:
            b = budgets[1]
        else:
            b = budgets[2]
        k = keys_for(b, n)
        S = select(r["method"], q, Kn, s, n, k, scale=sc)
        ctx = f"{r['method']} L{L} h{h} q{qi} budget {r['budget']}"
        if r["method"] == "topk":
            # a near tie at the k-th score may be broken differently by rounding: skip those
            srt = np.sort(s)[::-1]
            if k < n and abs(srt[k - 1] - srt[k]) <= 1e-12 * abs(srt[k - 1]):
                skipped_ties += 1
                continue
        assert r["k"] == len(S), f"{ctx}: k {r['k']} vs {len(S)}"
        w = np.exp(s[S] - s[S].max())
        oS = (w[:, None] * Vn[S]).sum(axis=0) / w.sum()
        PS = a[S].sum()
        mask = np.ones(n, bool)
        mask[S] = False
        err = float(np.linalg.norm(o - oS))
        if mask.any():
            bound = (1 - PS) * float(np.sqrt(((Vn[mask] - oS) ** 2).sum(axis=1)).max())
            orest = (a[mask, None] * Vn[mask]).sum(axis=0) / a[mask].sum()
            ident = (o - oS) - (1 - PS) * (orest - oS)
            assert np.linalg.norm(ident) <= 1e-12 * (1 + np.abs(Vn).max()), ctx
        else:
            bound = 0.0
        atol = 1e-14 * (1 + np.abs(Vn).max())
        close(r["captured_mass"], PS, "captured_mass", ctx)
        close(r["abs_error"], err, "abs_error", ctx, atol)
        close(r["bound"], bound, "bound", ctx, atol)
        on = float(np.linalg.norm(o))
        close(r["rel_error"], err / on, "rel_error", ctx, atol / on)
        close(r["rel_bound"], bound / on, "rel_bound", ctx, atol / on)
        assert err <= bound * (1 + 1e-9) + atol, ctx
        assert r["violated"] is False, ctx
        checked += 1
    # sampling methods: the predicted epsilon from the population statistics
    recs = run(["--method", "uniform,topk-sample", "--budget", "5%,25%", "--layer", "19"])
    ns = 0
    for r in recs:
        L, h, qi = r["layer"], r["head"], r["query"]
        Q, K, V = t[f"layers.{L}.q"], t[f"layers.{L}.k"], t[f"layers.{L}.v"]
        kvh = h // (Q.shape[0] // K.shape[0])
        pos = t.get(f"layers.{L}.q_pos")
        n = int(pos[qi]) + 1 if pos is not None else K.shape[1]
        sc = scale if scale > 0 else 1 / math.sqrt(Q.shape[2])
        s = sc * (K[kvh, :n] @ Q[h, qi])
        k = keys_for({"frac": r["budget"], "count": 0}, n)
        kh = 0 if r["method"] == "uniform" else int(math.floor(k * 0.5 + 0.5))
        H = u.topk_idx(s, kh) if kh else np.array([], dtype=np.int64)
        m = r["samples"]
        assert m == k - kh, f"samples {m} vs {k - kh}"
        st, _ = u.sampling_stats(s, V[kvh, :n], H)
        eps = u.sampling_eps(st, m, r["delta"])
        ctx = f"{r['method']} L{L} h{h} q{qi} budget {r['budget']}"
        if not abs(r["bound"] - eps) <= 1e-8 * eps + 1e-15:
            raise AssertionError(f"{ctx}: epsilon attnscope {r['bound']!r} numpy {eps!r}")
        ns += 1
    print(f"numpy float64 agrees: {checked} deterministic records ({skipped_ties} near-ties "
          f"skipped), {ns} sampling epsilons")
    assert checked > 4000 and ns > 500


if __name__ == "__main__":
    main()
