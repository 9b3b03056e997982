#!/usr/bin/env python3
"""The default sparsity sweep (topk, sink-window, page, uniform, topk-sample at the 12 budgets
2x..100x) in NumPy float64, written to be fast: the yardstick of `attnscope sparsity` in
tests/bench/bench_sweep.py (issue 18). Not a test; no attnscope code is used.

Per kv head, query rows in chunks: scores and outputs by matrix products (Q K^T, A V); per
query one stable argsort of the scores (top-k and topk-sample's heavy sets of every budget are
its prefixes) and one of the Quest page bounds; every set of every budget (5 methods x 12, the
sampling methods' heavy sets and samples) as one weight matrix W (sets x n) so that all the
sums sum_S a_i v_i are ONE matrix product W V; the bound's max_{i not in S} ||v_i - o_S||^2 for
all 60 sets at once from ONE product V [o_S ...] (||v||^2 - 2 v.o_S + ||o_S||^2, members masked);
the sampling statistics in closed form with one more product V [ybar ...]; samples drawn once per
query (one permutation; a budget's sample is the first m keys of it outside its heavy set:
a uniform sample without replacement of the rest, the estimator's requirement).

    python3 tests/bench/sweep_numpy.py TRACE [--layer L] [--head H] [--out FILE.json] [--rows R]

--out writes per (method, budget) the mean over queries of rel_error, rel_bound and
captured_mass (bench_sweep.py compares the deterministic methods with attnscope's).
"""
import argparse
import json
import math
import sys

import numpy as np

FRACS = [1.0 / x for x in (2, 3, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100)]
SINKS, PAGE, HEAVY, DELTA = 4, 16, 0.5, 0.05
METHODS = ("topk", "sink-window", "page", "uniform", "topk-sample")


def open_trace(path):
    blob = np.memmap(path, dtype=np.uint8, mode="r")
    hlen = int.from_bytes(bytes(blob[:8]), "little")
    header = json.loads(bytes(blob[8:8 + hlen]))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen

    def tensor(name):
        info = header[name]
        a, b = info["data_offsets"]
        raw = np.frombuffer(blob, dtype=np.uint8, count=b - a, offset=base + a)
        dt = info["dtype"]
        if dt == "BF16":
            x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = raw.view({"F64": "<f8", "F32": "<f4", "F16": "<f2", "I32": "<i4",
                          "I64": "<i8"}[dt])
        return x.reshape(info["shape"])

    layers = sorted({int(k.split(".")[1]) for k in header if k.startswith("layers.")})
    return tensor, header, meta, layers


def budget_keys(f, n):
    x = f * n
    return min(max(int(math.ceil(x - 1e-9 * x)), 1), n)


def bernstein(b2, a, L):
    return a * L / 3.0 + math.sqrt(a * a * L * L / 9.0 + 2.0 * b2 * L)


def sampling_eps(nr, ph, var_y, max_y, var_e, mass_rest, dev_max, m, delta):
    """epsilon of the sampling estimator (docs/theory.md; the same formulas as attnscope)"""
    if nr <= 0 or m >= nr:
        return 0.0
    if m <= 0:
        return dev_max
    fpc = (nr - m) / (nr - 1.0)
    b2, a = nr * nr * var_y / m, nr * max_y / m
    rY = min(bernstein(b2, a, math.log(2.0 / (delta / 2))), math.sqrt(b2 * fpc / (delta / 2)))
    aD, b2D = mass_rest / m, nr * nr * var_e / m
    rD = min(bernstein(b2D, aD, math.log(1.0 / (delta / 2))),
             math.sqrt(b2D * fpc * (1 - delta / 2) / (delta / 2)))
    low = max(1.0 - rD, ph)
    eps = rY / low if low > 0 else math.inf
    return min(eps, dev_max)


def sweep(path, only_layer=None, rows_per_chunk=8, seed=0, only_head=None):
    tensor, header, meta, layers = open_trace(path)
    rng = np.random.default_rng(seed)
    nb = len(FRACS)
    acc = {(m, b): [0.0, 0.0, 0.0, 0] for m in METHODS for b in range(nb)}
    for L in layers:
        if only_layer is not None and L != only_layer:
            continue
        q_all = tensor(f"layers.{L}.q")
        k_all, v_all = tensor(f"layers.{L}.k"), tensor(f"layers.{L}.v")
        hq, T, d = q_all.shape
        hkv, N, _ = k_all.shape
        pname = f"layers.{L}.q_pos"
        pos = tensor(pname).astype(np.int64) if pname in header else np.full(T, N - 1)
        scale = float(meta.get("scale", 1.0 / math.sqrt(d)))
        grp = hq // hkv
        for g in range(hkv):
            rows = [(h, t) for h in range(g * grp, (g + 1) * grp) for t in range(T)
                    if only_head is None or h == only_head]
            if not rows:
                continue
            K = np.ascontiguousarray(k_all[g], dtype=np.float64)
            V = np.ascontiguousarray(v_all[g], dtype=np.float64)
            vn2 = np.einsum("ij,ij->i", V, V)
            nfull = N // PAGE
            pmin = K[:nfull * PAGE].reshape(nfull, PAGE, d).min(axis=1)
            pmax = K[:nfull * PAGE].reshape(nfull, PAGE, d).max(axis=1)
            for c0 in range(0, len(rows), rows_per_chunk):
                chunk = rows[c0:c0 + rows_per_chunk]
                Q = np.stack([q_all[h, t].astype(np.float64) for h, t in chunk])
                nmax = int(max(pos[t] for _, t in chunk)) + 1
                S = scale * (Q @ K[:nmax].T)
                for r, (h, t) in enumerate(chunk):
                    n = int(pos[t]) + 1
                    S[r, n:] = -np.inf
                A = np.exp(S - S.max(axis=1, keepdims=True))
                A /= A.sum(axis=1, keepdims=True)
                O = A @ V[:nmax]
                for r, (h, t) in enumerate(chunk):
                    one_query(S[r], A[r], O[r], Q[r], int(pos[t]) + 1, K, V, vn2, pmin, pmax,
                              scale, rng, acc)
    return {f"{m}|{b}": [v[0] / v[3], v[1] / v[3], v[2] / v[3]] for (m, b), v in acc.items()
            if v[3] > 0}


def one_query(s, a, o, q, n, K, V, vn2, pmin, pmax, scale, rng, acc):
    nb = len(FRACS)
    s, a, Vn, vn = s[:n], a[:n], V[:n], vn2[:n]
    d = V.shape[1]
    k = np.array([budget_keys(f, n) for f in FRACS])
    kh = np.minimum(np.floor(k * HEAVY + 0.5).astype(np.int64), k)
    # one sort of the scores: rank of every key (ties: lower index first)
    order = np.argsort(-s, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    # one sort of the page bounds
    npg = (n + PAGE - 1) // PAGE
    nf = n // PAGE
    mn, mx = pmin[:nf], pmax[:nf]
    if nf < npg:
        tail = K[nf * PAGE:n]
        mn = np.vstack([mn, tail.min(axis=0)])
        mx = np.vstack([mx, tail.max(axis=0)])
    ub = scale * np.maximum(mx * q, mn * q).sum(axis=1)
    prank = np.empty(npg, np.int64)
    prank[np.argsort(-ub, kind="stable")] = np.arange(npg)
    want = np.where(k >= n, npg, np.maximum(k // PAGE, 1))
    idx = np.arange(n)
    kr_sink = np.where(idx < SINKS, idx + 1, n - idx + SINKS)
    # membership (n x nb) of each family
    m_topk = rank[:, None] < k[None, :]
    m_heavy = rank[:, None] < kh[None, :]
    m_sink = kr_sink[:, None] <= k[None, :]
    m_page = prank[idx // PAGE][:, None] < want[None, :]
    # samples: one permutation; budget b takes the first m_b keys outside its heavy set
    perm = rng.permutation(n)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    m_uni = inv[:, None] < k[None, :]
    ms = k - kh
    rest_in_perm = ~m_heavy[perm]                      # n x nb, in permutation order
    cnt = np.cumsum(rest_in_perm, axis=0)
    m_samp = np.zeros((n, nb), bool)
    take = rest_in_perm & (cnt <= ms[None, :])
    m_samp[perm] = take
    # all sums in one product: sets = [topk, sink, page, uniform, heavy, samples]
    sets = np.concatenate([m_topk, m_sink, m_page, m_uni, m_heavy, m_samp], axis=1)
    W = sets.T * a[None, :]                            # (6 nb) x n
    SV = W @ Vn                                        # (6 nb) x d
    SM = W.sum(axis=1)
    T_, W_, P_, U_, H_, X_ = (slice(i * nb, (i + 1) * nb) for i in range(6))
    # touched sets of the 5 methods and their o_S
    touch = np.concatenate([m_topk, m_sink, m_page, m_uni, m_heavy | m_samp], axis=1)
    tSV = np.concatenate([SV[T_], SV[W_], SV[P_], SV[U_], SV[H_] + SV[X_]])
    tSM = np.concatenate([SM[T_], SM[W_], SM[P_], SM[U_], SM[H_] + SM[X_]])
    oS = tSV / tSM[:, None]
    # the bound's max over keys outside each set: one product
    G = Vn @ oS.T                                      # n x 60
    D2 = vn[:, None] - 2.0 * G + np.einsum("ij,ij->i", oS, oS)[None, :]
    D2[touch] = -np.inf
    maxd = np.sqrt(np.maximum(D2.max(axis=0), 0.0))
    prest = 1.0 - tSM
    bound_sub = prest * maxd
    err_sub = np.linalg.norm(oS - o[None, :], axis=1)
    no = float(np.linalg.norm(o))
    # sampling statistics (uniform: heavy set empty; topk-sample: heavy = top kh)
    d2o = np.maximum(vn - 2.0 * (Vn @ o) + o @ o, 0.0)
    dev_max = math.sqrt(float(d2o.max()))
    a2d2 = a * a * d2o
    heavy_uni = np.zeros((n, nb), bool)
    out = {}
    for name, mh, msamp, hs, hm, sv, sm in (
            ("uniform", heavy_uni, m_uni, np.zeros(nb, np.int64), np.zeros(nb),
             np.zeros((nb, d)), np.zeros(nb)),
            ("topk-sample", m_heavy, m_samp, kh, SM[H_], SV[H_], SM[H_])):
        nr = n - hs
        ph = hm
        ybar = -(sv - ph[:, None] * o[None, :]) / np.maximum(nr, 1)[:, None]
        y2 = np.einsum("ij,ij->i", ybar, ybar)
        rest = ~mh
        a2r = a2d2 @ rest
        var_y = np.maximum(a2r - nr * y2, 0.0) / np.maximum(nr, 1)
        abar = (1.0 - ph) / np.maximum(nr, 1)
        var_e = np.maximum((a * a) @ rest - nr * abar * abar, 0.0) / np.maximum(nr, 1)
        # max over the rest of ||a_i (v_i - o) - ybar||^2: one product
        Gy = Vn @ ybar.T - (o @ ybar.T)[None, :]
        Y2 = a2d2[:, None] - 2.0 * a[:, None] * Gy + y2[None, :]
        Y2[mh] = -np.inf
        max_y = np.sqrt(np.maximum(Y2.max(axis=0), 0.0))
        ssv = SV[U_] if name == "uniform" else SV[X_]
        ssm = SM[U_] if name == "uniform" else SM[X_]
        mm = k if name == "uniform" else msamp.sum(axis=0)
        eps = np.empty(nb)
        err = np.empty(nb)
        for b in range(nb):
            eps[b] = sampling_eps(int(nr[b]), float(ph[b]), float(var_y[b]), float(max_y[b]),
                                  float(var_e[b]), max(1.0 - float(ph[b]), 0.0), dev_max,
                                  int(mm[b]), DELTA)
            w = nr[b] / mm[b] if mm[b] > 0 else 0.0
            oh = (sv[b] + w * ssv[b]) / (ph[b] + w * ssm[b])
            err[b] = np.linalg.norm(oh - o)
        out[name] = (err, eps)
    for i, m in enumerate(METHODS):
        for b in range(nb):
            j = i * nb + b
            if m in out:
                e, bd = out[m][0][b], out[m][1][b]
            else:
                e, bd = err_sub[j], bound_sub[j]
            x = acc[(m, b)]
            x[0] += e / no
            x[1] += bd / no
            x[2] += tSM[j]
            x[3] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--layer", type=int)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--head", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    res = sweep(args.trace, args.layer, args.rows, only_head=args.head)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f)
    else:
        json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
