#!/usr/bin/env python3
"""Independent NumPy float64 reference of `attnscope sparsity --method page-is`.

For every record of page-is on the bundled real sample this recomputes, from the raw trace bytes
and docs/theory.md ("Pages + importance sampling"): the Quest page bounds and heavy pages, the
proposal q, the draws themselves (xoshiro256** seeded per record as docs/theory.md says, drawn
by the inverse of q's running sums, re-implemented here), the estimator's output and error, and
the (epsilon, delta) bound from the population statistics under q; and compares them with the
JSON records (error 1e-9 relative, epsilon 1e-8). Then it checks the coverage of the bound over
repeated draws on the same sample (at most delta of the draws exceed it). Exit 77 (skip)
without NumPy, the sample trace or the program.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402

M64 = (1 << 64) - 1
PAGE_IS = 7  # as_sp_method's number of page-is


def splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def seed_mix(a, b):
    x = a ^ ((b * 0xD6E8FEB86659FD93 + 0x9E3779B97F4A7C15) & M64)
    return splitmix(x)[1]


class Xoshiro:
    def __init__(self, seed):
        x, self.s = seed, []
        for _ in range(4):
            x, z = splitmix(x)
            self.s.append(z)
        if not any(self.s):
            self.s[0] = 1

    def next(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64  # noqa: E731
        res = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return res

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53


def record_seed(seed, layer, h, qi, k):
    s = seed_mix(seed, layer + 1)
    for v in (h, qi, k, PAGE_IS):
        s = seed_mix(s, v + 1)
    return s


def keys_for(frac, n):
    x = frac * n
    return max(1, min(n, math.ceil(x - 1e-9 * x)))


def inclusion(prop, m):
    """Poisson sampling: pi_j = min(1, c q_j), sum pi_j = m (bisection as the program does it)."""
    pos = prop > 0
    keys = np.flatnonzero(pos)
    vals = prop[keys]
    brk = np.concatenate([[True], vals[1:] != vals[:-1]])
    val = vals[brk]
    cnt = np.diff(np.concatenate([np.flatnonzero(brk), [len(vals)]])).astype(float)
    sq = np.cumsum(cnt * val)[-1]
    lo, hi = m / sq, 1.0 / vals.min()
    eps = 2.0 ** -52
    for _ in range(200):
        if not hi > lo * (1 + 4 * eps):
            break
        mid = 0.5 * (lo + hi)
        f = np.cumsum(cnt * np.minimum(1.0, mid * val))[-1]
        if f >= m:
            hi = mid
        else:
            lo = mid
    return np.where(pos, np.minimum(1.0, hi * prop), 0.0)


def select(q, K, n, k, F, P, tau, beta, score, draw, scale, rng):
    """page-is's heavy set H, proposal q and draws (keys, weights); None, None when exact."""
    npg = (n + P - 1) // P
    ub, ctr = np.empty(npg), np.empty(npg)
    for p in range(npg):
        blk = K[p * P: min((p + 1) * P, n)]
        mn, mx = blk.min(axis=0), blk.max(axis=0)
        terms = np.where(q >= 0, q * mx, q * mn)
        ub[p] = scale * np.cumsum(terms)[-1]  # summed in order, as the program does
        ctr[p] = scale * np.cumsum(q * (0.5 * (mn + mx)))[-1]  # the box centre's score
    kh = int(math.floor(k * F + 0.5))
    want = min(kh // P, npg)
    pages = np.sort(np.lexsort((np.arange(npg), -ub))[:want])
    H = np.concatenate([np.arange(p * P, min((p + 1) * P, n)) for p in pages]).astype(np.int64) \
        if want else np.zeros(0, np.int64)
    r, m = n - len(H), k - len(H)
    if m >= r:
        return np.arange(n), None, None, 0
    if m <= 0:
        return H, None, None, 0
    inH = np.zeros(n, bool)
    inH[H] = True
    ubk = (ub if score == "bound" else ctr)[np.arange(n) // P]
    top = ubk[~inH].max()
    e = np.where(inH, 0.0, np.exp(tau * (ubk - top)))
    W = np.cumsum(e)[-1]
    prop = np.where(inH, 0.0, (1 - beta) * e / W + beta / r)
    if draw == "poisson":
        pi = inclusion(prop, float(m))
        keep = []
        for j in range(n):
            if pi[j] <= 0:
                continue
            if pi[j] < 1.0 and not rng.uniform() < pi[j]:
                continue
            keep.append(j)
        keys = np.array(keep, dtype=np.int64)
        return H, pi, (keys, 1.0 / pi[keys]), len(keys)
    cq = np.cumsum(prop)
    draws = []
    for _ in range(m):
        x = rng.uniform() * cq[-1]
        j = int(np.searchsorted(cq, x, side="right"))
        while j < n - 1 and prop[j] <= 0:
            j += 1
        draws.append(j)
    keys, cnt = np.unique(np.array(draws), return_counts=True)
    return H, prop, (keys, cnt / (m * prop[keys])), m


def is_eps(s, V, H, prop, m, delta, draw):
    """docs/theory.md, "Pages + importance sampling": the (epsilon, delta) bound for m draws
    (with replacement from prop) or for the Poisson sample of inclusion probabilities prop."""
    a = u.softmax(s)
    o = a @ V
    n = len(s)
    R = np.setdiff1d(np.arange(n), H)
    y = a[R, None] * (V[R] - o)
    Yb = -(a[H, None] * (V[H] - o)).sum(axis=0)
    qR = prop[R]
    ph, mr = a[H].sum(), a[R].sum()
    if draw == "poisson":
        f = (1 - qR) / qR
        y2 = np.sum(y ** 2, axis=1)
        b2 = (f * y2).sum()
        b2d = (f * a[R] ** 2).sum()
        lt = qR < 1
        amax = np.sqrt((y2[lt] * np.maximum(1 / qR[lt] - 1, 1) ** 2).max()) if lt.any() else 0.0
        ad = a[R][lt].max() if lt.any() else 0.0
    else:
        b2 = max((np.sum(y ** 2, axis=1) / qR).sum() - Yb @ Yb, 0) / m
        amax = np.sqrt(np.max(np.sum((y / qR[:, None] - Yb) ** 2, axis=1))) / m
        b2d = max((a[R] ** 2 / qR).sum() - mr * mr, 0) / m
        ad = mr / m

    def bern(b2_, a_, L):
        return a_ * L / 3 + math.sqrt(a_ * a_ * L * L / 9 + 2 * b2_ * L)

    dY = dD = delta / 2
    rY = min(bern(b2, amax, math.log(2 / dY)), math.sqrt(b2 / dY))
    rD = min(bern(b2d, ad, math.log(1 / dD)), math.sqrt(b2d * (1 - dD) / dD))
    low = max(ph, 1 - rD)
    eps = rY / low if low > 0 else math.inf
    return min(eps, np.linalg.norm(V - o, axis=1).max()), o


def run(args):
    p = subprocess.run([BIN, "sparsity", SAMPLE, "--method", "page-is", "--json", "--quiet"] + args,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"attnscope sparsity {args}: exit {p.returncode}: {p.stderr}")
    return json.loads(p.stdout)["records"]


def main():
    t, meta = u.load_safetensors(SAMPLE)
    scale = float(meta["scale"])
    configs = [
        (["--sparsity", "10x,50x"],
         dict(F=0.5, tau=1.0, beta=0.1, score="center", draw="poisson", seed=0)),
        (["--sparsity", "20x", "--layer", "10", "--heavy-frac", "0.8", "--is-temp", "0.5",
          "--is-mix", "0.3", "--is-score", "bound", "--is-draw", "replace", "--seed", "5"],
         dict(F=0.8, tau=0.5, beta=0.3, score="bound", draw="replace", seed=5)),
        (["--sparsity", "50x", "--layer", "19", "--is-draw", "replace"],
         dict(F=0.5, tau=1.0, beta=0.1, score="center", draw="replace", seed=0)),
    ]
    checked = exact = 0
    for args, c in configs:
        for r in run(args):
            if r["record"] != "sparsity":
                continue
            L, h, qi = r["layer"], r["head"], r["query"]
            Q, K, V = t[f"layers.{L}.q"], t[f"layers.{L}.k"], t[f"layers.{L}.v"]
            kvh = h // (Q.shape[0] // K.shape[0])
            n = int(t[f"layers.{L}.q_pos"][qi]) + 1
            q, Kn, Vn = Q[h, qi], K[kvh, :n], V[kvh, :n]
            s = scale * (Kn @ q)
            k = keys_for(r["budget"], n)
            rng = Xoshiro(seed_mix(record_seed(c["seed"], L, h, qi, k), 0))
            H, prop, dr, m = select(q, Kn, n, k, c["F"], 16, c["tau"], c["beta"], c["score"],
                                   c["draw"], scale, rng)
            ctx = f"L{L} h{h} q{qi} budget {r['budget']} {args}"
            assert r["samples"] == m, f"{ctx}: samples {r['samples']} vs {m}"
            if dr is None:
                exact += 1
                continue
            keys, w = dr
            assert r["k"] == len(H) + len(keys), f"{ctx}: k {r['k']} vs {len(H) + len(keys)}"
            eps, o = is_eps(s, Vn, H, prop, m, r["delta"], c["draw"])
            idx = np.concatenate([H, keys])
            f = np.concatenate([np.ones(len(H)), w])
            ew = np.exp(s[idx] - s[idx].max()) * f
            oh = (ew[:, None] * Vn[idx]).sum(axis=0) / ew.sum()
            err = float(np.linalg.norm(oh - o))
            assert abs(r["abs_error"] - err) <= 1e-9 * err + 1e-13, \
                f"{ctx}: error attnscope {r['abs_error']!r} numpy {err!r}"
            assert abs(r["bound"] - eps) <= 1e-8 * eps + 1e-14, \
                f"{ctx}: epsilon attnscope {r['bound']!r} numpy {eps!r}"
            checked += 1
    # coverage: repeated draws per query, at most delta of them above epsilon
    cov = []
    for extra in ([], ["--is-draw", "replace"]):
        recs = run(["--sparsity", "10x,50x", "--trials", "50"] + extra)
        draws = sum(r["trials"] for r in recs if r["record"] == "sparsity")
        exceed = sum(r["exceed"] for r in recs if r["record"] == "sparsity")
        assert draws > 50000 and exceed <= 0.05 * draws, f"coverage {extra}: {exceed} / {draws}"
        cov.append(f"{exceed} / {draws}")
    print(f"numpy float64 agrees on {checked} page-is records ({exact} without draws); "
          f"coverage (Poisson, with replacement) {cov[0]}, {cov[1]} draws above epsilon "
          "(delta 0.05)")
    assert checked > 1000


if __name__ == "__main__":
    main()
