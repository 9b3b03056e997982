#!/usr/bin/env python3
"""The Python binding's checks, bounds and per-kv-head selections against independent NumPy
float64 references, torch tensors, and bad input:

1. check_subset: o, o_S, P_S, ||o - o_S||, the bound (1 - P_S) max_{i not in S} ||v_i - o_S||
   and the identity, on real queries of the bundled sample and on random ones; with a
   kernel's o_hat, the error is ||o - o_hat|| and a wrong o_hat is flagged;
2. sampling: the population statistics, epsilon (Bernstein/Chebyshev, docs/theory.md),
   the sample size (smallest m meeting the target), the estimator, and the stated equivalence:
   softmax over Selection.indices with logit offsets Selection.log_weights = the estimator;
3. entropy / top-k mass against NumPy;
4. select_heads(mode="kv") against a NumPy reference of the rule (max over the group of the
   log-probabilities / of the page bounds) and the sized (eps, delta) sampling;
5. torch CPU tensors (f32, bf16, f64) give the NumPy results (skipped without torch);
6. bad input raises AttnscopeError with one line; a missing library raises
   LibraryNotFoundError naming where it looked.
Exit 77 (skip) without NumPy."""
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402

A = u.import_attnscope()
import numpy as np  # noqa: E402

RTOL = 1e-9
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL: " + what)


def close(a, b, what, rtol=RTOL, atol=1e-13):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol)
    check(ok, "%s: %s vs %s" % (what, a if a.size < 5 else a[:4], b if b.size < 5 else b[:4]))


# ---- 1. check_subset -----------------------------------------------------------------------------

def ref_subset(q, K, V, S, scale):
    s = scale * (K @ q)
    a = u.softmax(s)
    o = a @ V
    S = np.asarray(S)
    PS = a[S].sum()
    oS = u.softmax(s[S]) @ V[S]
    rest = np.setdiff1d(np.arange(len(s)), S)
    bound = (1 - PS) * (np.linalg.norm(V[rest] - oS, axis=1).max() if len(rest) else 0.0)
    o_rest = (a[rest] @ V[rest]) / a[rest].sum() if len(rest) else oS
    ident = np.linalg.norm((o - oS) - (1 - PS) * (o_rest - oS))
    return o, oS, PS, np.linalg.norm(o - oS), bound, ident


layers = u.trace_layers(u.SAMPLES[1]) if os.path.exists(u.SAMPLES[1]) else []
rng = np.random.default_rng(1)
cases = []
for (L, q, k, v, pos, scale) in layers[:2]:
    for (h, qi) in ((0, 0), (4, 15), (8, 7)):
        n = int(pos[qi]) + 1
        cases.append((q[h, qi], k[h // 3, :n], v[h // 3, :n], scale))
for n in (50, 700):
    cases.append((rng.normal(size=32) * 2, rng.normal(size=(n, 32)), rng.normal(size=(n, 32)), None))
for (q, K, V, scale) in cases:
    sc = scale if scale is not None else 1 / math.sqrt(len(q))
    n = len(K)
    for S in (A.select("topk", "10x", q=q, K=K, scale=scale).indices,
              A.select("sink-window", 0.05, q=q, K=K, scale=scale).indices,
              np.sort(rng.choice(n, size=max(1, n // 7), replace=False)), np.arange(n)):
        r = A.check_subset(q, K, V, S, scale=scale)
        o, oS, PS, err, bound, ident = ref_subset(q, K, V, S, sc)
        close(r["o_S"], oS, "o_S")
        close(r["norm_o"], np.linalg.norm(o), "norm_o")
        close(r["captured_mass"], PS, "captured_mass")
        close(r["abs_error"], err, "abs_error", atol=1e-12)
        close(r["bound"], bound, "bound", atol=1e-12)
        close(r["rel_error"], err / np.linalg.norm(o), "rel_error", atol=1e-12)
        check(r["identity_ok"] and r["identity_error"] <= 1e-12 + 1e-9 * np.linalg.norm(o),
              "identity %g (numpy %g)" % (r["identity_error"], ident))
        check(not r["violated"] and r["abs_error"] <= r["bound"] + r["tol"], "bound violated")
        check(r["k"] == len(S) and r["n"] == n, "k / n")
        # a kernel's output: exact o_S passes; o_S in float32 passes with out_tol; a wrong one fails
        r2 = A.check_subset(q, K, V, S, scale=scale, o_hat=oS.astype(np.float32), out_tol=1e-5)
        check(not r2["violated"], "f32 o_hat flagged")
        close(r2["abs_error"], np.linalg.norm(o - oS.astype(np.float32)), "abs_error with o_hat", rtol=1e-7)
        if len(S) < n and r["bound"] > 0:
            wrong = oS + 3 * r["bound"] / np.sqrt(len(oS)) + 1e-3
            check(A.check_subset(q, K, V, S, scale=scale, o_hat=wrong)["violated"],
                  "a wrong o_hat is not flagged")

# ---- 2. sampling (reference: u.sampling_stats, u.sampling_eps) ------------------------------

for (q, K, V, scale) in cases:
    sc = scale if scale is not None else 1 / math.sqrt(len(q))
    s = sc * (K @ q)
    n = len(s)
    for budget in ("4x", "20x", 0.5):
        sel = A.select("topk-sample", budget, scores=s, seed=3, query=2)
        H = sel.det
        st = A.sampling_stats(s, V, H)
        ref, o = u.sampling_stats(s, V, H)
        for key in ref:
            close(st[key], ref[key], "sampling_stats " + key, atol=1e-14)
        for m in (1, 5, max(1, len(sel.samp)), n // 2):
            close(A.sampling_eps(st, m, 0.05), u.sampling_eps(ref, m, 0.05), "eps m=%d" % m, rtol=1e-8)
        for er in (0.05, 0.2, 0.5):
            target = er * np.linalg.norm(o)
            m = A.sampling_size(st, target, 0.05)
            check(1 <= m <= st["n_rest"], "sampling_size out of range")
            check(u.sampling_eps(ref, m, 0.05) <= target * (1 + 1e-9), "sampling_size %d misses the target" % m)
            check(m == 1 or u.sampling_eps(ref, m - 1, 0.05) > target * (1 - 1e-9),
                  "sampling_size %d not the smallest" % m)
        # the estimator: NumPy, and softmax over indices with the log-weight offsets
        est = A.estimate(s, V, H, sel.samp)
        w = np.concatenate([np.exp(s[H] - s.max()),
                            (n - len(H)) / max(1, len(sel.samp)) * np.exp(s[sel.samp] - s.max())])
        ref_o = w @ np.concatenate([V[H], V[sel.samp]]) / w.sum()
        close(est, ref_o, "estimate")
        idx, lw = sel.indices, sel.log_weights
        check(np.array_equal(idx, np.sort(np.concatenate([H, sel.samp]))), "indices = det + samp")
        close(u.softmax(s[idx] + lw) @ V[idx], est, "softmax over indices + log_weights = estimate")
        check(np.all(lw[np.isin(idx, H)] == 0), "heavy log-weights are 0")
    # uniform: no heavy set
    sel = A.select("uniform", 0.1, scores=s, seed=1)
    est = A.estimate(s, V, sel.det, sel.samp)
    close(u.softmax(s[sel.indices] + sel.log_weights) @ V[sel.indices], est, "uniform equivalence")
    close(sel.log_weights, np.full(len(sel.samp), math.log(n / len(sel.samp))), "uniform log-weights")

# ---- 3. entropy ------------------------------------------------------------------------------
for (q, K, V, scale) in cases:
    sc = scale if scale is not None else 1 / math.sqrt(len(q))
    s = sc * (K @ q)
    a = u.softmax(s)
    e = A.entropy(s)
    Hn = -np.sum(a * np.log(a))
    close(e["entropy_nats"], Hn, "entropy")
    close(e["eff_support"], np.exp(Hn), "eff_support")
    cs = np.cumsum(np.sort(a)[::-1])
    for t, key in ((0.5, "k50"), (0.9, "k90"), (0.99, "k99")):
        check(e[key] == int(np.searchsorted(cs, t * cs[-1] * (1 - 1e-15)) + 1) or
              abs(cs[e[key] - 1] - t) < 1e-12, "%s %d" % (key, e[key]))
    for kk in (1, 3, len(s) // 2, len(s)):
        close(A.topk_mass(s, kk), cs[kk - 1], "topk_mass k=%d" % kk)

# ---- 4. kv mode --------------------------------------------------------------------------------


def lse(s):
    return s.max() + np.log(np.exp(s - s.max()).sum())


step_cases = []
for (L, q, k, v, pos, scale) in layers:
    step_cases.append((q[:, 9], k[:, :pos[9] + 1], v[:, :pos[9] + 1], scale, L))
step_cases.append((rng.normal(size=(8, 16)) * 3, rng.normal(size=(2, 333, 16)),
                   rng.normal(size=(2, 333, 16)), None, 0))
for (qs, Ks, Vs, scale, L) in step_cases:
    hq, d = qs.shape
    hkv, n, _ = Ks.shape
    G = hq // hkv
    sc = scale if scale is not None else 1 / math.sqrt(d)
    S = np.stack([sc * (Ks[h // G] @ qs[h]) for h in range(hq)])
    for budget in ("10x", "50x", 64):
        kk = A.budget_keys(budget, n)
        top = A.select_heads(qs, Ks, "topk", budget, mode="kv", scale=scale, layer=L)
        pages = A.select_heads(qs, Ks, "page", budget, mode="kv", scale=scale, layer=L)
        ts = A.select_heads(qs, Ks, "topk-sample", budget, mode="kv", scale=scale, layer=L, query=9)
        uni = A.select_heads(qs, Ks, "uniform", budget, mode="kv", scale=scale, layer=L, query=9)
        uniq = A.select_heads(qs, Ks, "uniform", budget, mode="q", scale=scale, layer=L, query=9)
        sw = A.select_heads(qs, Ks, "sink-window", budget, mode="kv", scale=scale, layer=L)
        check(len(top) == hkv and len(pages) == hkv, "kv mode: one selection per kv head")
        for g in range(hkv):
            grp = range(g * G, (g + 1) * G)
            rank = np.max([S[h] - lse(S[h]) for h in grp], axis=0)
            check(np.array_equal(top[g].indices, u.topk_idx(rank, kk)), "kv topk group %d %s" % (g, budget))
            P = 16
            npg = (n + P - 1) // P
            kmin = np.stack([Ks[g, p * P:(p + 1) * P].min(axis=0) for p in range(npg)])
            kmax = np.stack([Ks[g, p * P:(p + 1) * P].max(axis=0) for p in range(npg)])
            ub = np.max([sc * np.sum(np.maximum(qs[h] * kmin, qs[h] * kmax), axis=1) for h in grp], axis=0)
            want_pg = npg if kk >= n else min(max(1, kk // P), npg)
            keys = np.concatenate([np.arange(p * P, min((p + 1) * P, n)) for p in u.topk_idx(ub, want_pg)])
            check(np.array_equal(pages[g].indices, keys), "kv page group %d %s" % (g, budget))
            kh = int(math.floor(kk * 0.5 + 0.5))  # llround: halves away from 0
            check(np.array_equal(ts[g].det, u.topk_idx(rank, kh)), "kv topk-sample heavy %d" % g)
            check(len(ts[g].samp) == kk - kh and not np.isin(ts[g].samp, ts[g].det).any(),
                  "kv topk-sample samples")
            check(np.array_equal(uni[g].samp, uniq[g * G].samp), "kv uniform = first head's draw")
            sw_q = A.select("sink-window", budget, scores=S[g * G])
            check(np.array_equal(sw[g].indices, sw_q.indices), "kv sink-window")
    # sized sampling: m = the largest over the group of sampling_size for eps_rel ||o_h||
    for mode in ("q", "kv"):
        for er in (0.05, 0.3):
            sels = A.select_heads(qs, Ks, "topk-sample", "20x", mode=mode, scale=scale, V=Vs,
                                  eps_rel=er, layer=L)
            for r, sel in enumerate(sels):
                grp = [r] if mode == "q" else list(range(r * G, (r + 1) * G))
                ms = []
                for h in grp:
                    st = A.sampling_stats(S[h], Vs[h // G], sel.det)
                    o = u.softmax(S[h]) @ Vs[h // G]
                    ms.append(A.sampling_size(st, er * np.linalg.norm(o), 0.05))
                check(len(sel.samp) == max(ms), "sized %s eps %g row %d: %d samples, want %d" % (
                    mode, er, r, len(sel.samp), max(ms)))
                check(len(sel.det) == int(math.floor(A.budget_keys("20x", n) * 0.5 + 0.5)), "sized heavy count")

# ---- 5. torch ---------------------------------------------------------------------------------
try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: torch part skipped")
if torch is not None:
    qs, Ks, Vs, scale, L = step_cases[-1]
    for dt in (torch.float32, torch.float64, torch.bfloat16):
        qt, Kt, Vt = (torch.tensor(x).to(dt) for x in (qs, Ks, Vs))
        qn, Kn, Vn = (x.double().numpy() for x in (qt, Kt, Vt))  # exact
        for method in A.METHODS:
            a = A.select_heads(qt, Kt, method, "8x", mode="kv")
            b = A.select_heads(qn, Kn, method, "8x", mode="kv")
            check(all(np.array_equal(x.indices, y.indices) for x, y in zip(a, b)), "torch %s %s" % (dt, method))
        s1 = A.select("topk", 0.1, q=qt[0], K=Kt[0])
        s2 = A.select("topk", 0.1, q=qn[0], K=Kn[0])
        check(np.array_equal(s1.indices, s2.indices), "torch select")
        r1 = A.check_subset(qt[0], Kt[0], Vt[0], torch.tensor(s1.indices))
        r2 = A.check_subset(qn[0], Kn[0], Vn[0], s2.indices)
        check(r1["abs_error"] == r2["abs_error"], "torch check_subset")
        check(A.entropy(torch.tensor(qn[0]))["entropy_nats"] == A.entropy(qn[0])["entropy_nats"], "torch entropy")

# ---- 6. bad input --------------------------------------------------------------------------------
q0, K0 = rng.normal(size=8), rng.normal(size=(40, 8))
bad = [
    lambda: A.select("nope", 0.1, q=q0, K=K0),
    lambda: A.select("index", 0.1, q=q0, K=K0),
    lambda: A.select("topk", "abc", q=q0, K=K0),
    lambda: A.select("topk", 1.5, q=q0, K=K0),
    lambda: A.select("topk", 0, q=q0, K=K0),
    lambda: A.select("topk", "0.5x", q=q0, K=K0),
    lambda: A.select("page", 0.1, scores=K0 @ q0),
    lambda: A.select("topk", 0.1, q=q0, K=K0[:, :4]),
    lambda: A.select("topk", 0.1, q=q0, K=K0, delta=0),
    lambda: A.select_heads(q0[None], K0[None], "topk", 0.1, mode="x"),
    lambda: A.select_heads(q0[None], K0[None], "topk", 0.1, eps_rel=0.1, V=K0[None]),
    lambda: A.select_heads(q0[None], K0[None], "topk-sample", 0.1, eps_rel=0.1),
    lambda: A.select_heads(np.zeros((5, 8)), np.zeros((2, 40, 8)), "topk", 0.1),
    lambda: A.check_subset(q0, K0, K0, [3, 3]),
    lambda: A.check_subset(q0, K0, K0, [40]),
    lambda: A.estimate(K0 @ q0, K0, [1, 2], [2, 5]),
    lambda: A.sampling_stats(K0 @ q0, K0, [-1]),
    lambda: A.topk_mass(np.array([1.0, np.nan]), 1),
]
for i, f in enumerate(bad):
    try:
        f()
        check(False, "bad input %d accepted" % i)
    except A.AttnscopeError as e:
        check("\n" not in str(e) and len(str(e)) > 5, "bad input %d: message %r" % (i, str(e)))
    except Exception as e:  # noqa: BLE001
        check(False, "bad input %d raised %s: %s" % (i, type(e).__name__, e))

env = dict(os.environ, ATTNSCOPE_LIB="/nonexistent/libattnscope.so", PYTHONPATH=os.path.join(u.SRC, "python"))
r = subprocess.run([sys.executable, "-c", "import attnscope; attnscope.budget_keys('2%', 10)"],
                   env=env, capture_output=True, text=True)
check(r.returncode != 0 and "LibraryNotFoundError" in r.stderr and "/nonexistent/libattnscope.so" in r.stderr,
      "missing library: %s" % r.stderr.strip()[-300:])
# importing without a library works (loaded on first use)
r = subprocess.run([sys.executable, "-c", "import attnscope; print(attnscope.METHODS)"], env=env,
                   capture_output=True, text=True)
check(r.returncode == 0, "import without the library: " + r.stderr[-300:])
# importing does not import torch
r = subprocess.run([sys.executable, "-c", "import sys, attnscope; attnscope.budget_keys(3, 10); "
                    "sys.exit('torch' in sys.modules)"],
                   env=dict(os.environ, PYTHONPATH=os.path.join(u.SRC, "python")), capture_output=True, text=True)
check(r.returncode == 0, "import attnscope imports torch: " + r.stderr[-300:])

print("%d failures" % len(fails))
sys.exit(1 if fails else 0)
