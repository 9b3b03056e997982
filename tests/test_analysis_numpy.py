#!/usr/bin/env python3
"""Cross-check of `attnscope entropy|rank|bottleneck --json` against an independent NumPy float64
implementation (issue 4), to 1e-9 relative.

Traces: the bundled real sample (data/samples/smollm2-135m-needle-2k.safetensors, BF16, causal,
GQA 9/3) read by a small independent reader (tests/py_attnscope_util.py; the format by hand:
8-byte length, JSON header, raw little-endian data; BF16 widened by shifting into float32), and
a synthetic trace written with the `safetensors` package (F32 and F64, causal and not, peaked
and diffuse queries, N large enough for several key tiles).

The NumPy side is the straightforward definition: scores = scale * q @ K[:n].T,
a = softmax, H = -sum a ln a, k_p from a full sort and a cumulative sum, singular values from
np.linalg.svd of the formed matrices (K, V, Q, S = scale Q K^T, A with zero rows past each
query's visible keys), ranks with np.linalg.matrix_rank, the absorption from the formed top-k
distribution.

Integer results (k50/k90/k99, r90/r99, rank, collision_dim) must agree exactly, except on a
knife edge: a cumulative sum within 1e-12 of its threshold, which is reported and allowed.
Exit 0: pass, 1: a check failed, 77: skipped (numpy or the binary missing).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AS_SRC") or os.path.dirname(HERE)
BIN = os.environ.get("AS_BIN")
SAMPLE = os.path.join(SRC, "data", "samples", "smollm2-135m-needle-2k.safetensors")
RTOL = 1e-9

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only contend
try:
    import numpy as np
except ImportError as e:
    print(f"SKIP: needs numpy ({e})")
    sys.exit(77)
if not BIN or not os.path.exists(BIN):
    print("SKIP: AS_BIN not set or missing")
    sys.exit(77)

sys.path.insert(0, HERE)
import py_attnscope_util as u  # noqa: E402  (the trace reader and the NumPy reference)

FAILED = []
STATS = {}  # quantity -> (max relative difference, count)


def fail(msg):
    FAILED.append(msg)
    if len(FAILED) <= 30:
        print("FAIL " + msg, flush=True)


def close(name, got, want, where, rtol=RTOL):
    if got is None or want is None or (isinstance(want, float) and math.isnan(want)):
        if not (got is None and (want is None or math.isnan(want))):
            fail(f"{where}: {name} = {got}, NumPy {want}")
        return
    d = abs(got - want)
    rel = d / abs(want) if want != 0 else d
    m, c = STATS.get(name, (0.0, 0))
    STATS[name] = (max(m, rel), c + 1)
    if rel > rtol:
        fail(f"{where}: {name} = {got!r}, NumPy {want!r} (relative {rel:.3g})")


# ---------------------------------------------------------------------------------------------
# independent reader

def read_trace(path):
    """{L: {"q", "k", "v"[, "q_pos"]}} (float64 / int64) and the metadata, by the shared reader."""
    tensors, meta = u.load_safetensors(path)
    return u.layer_tensors(tensors), meta or {}


def run_json(*args):
    r = subprocess.run([BIN, *args, "--json", "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"attnscope {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return []
    return json.loads(r.stdout)["records"]


def by_key(records, kind, *keys):
    out = {}
    for r in records:
        if r["record"] == kind:
            out[tuple(r.get(k) for k in keys)] = r
    return out


# ---------------------------------------------------------------------------------------------
# NumPy reference

def k_mass(p):
    """(k50, k90, k99) and, per threshold, the distance of the boundary cumsum to it."""
    c = np.cumsum(np.sort(p)[::-1])
    out, edge = [], []
    for t in (0.5, 0.9, 0.99):
        k = int(np.searchsorted(c, t, side="left")) + 1
        k = min(k, len(p))
        out.append(k)
        edge.append(min(abs(c[k - 1] - t), abs(c[k - 2] - t) if k >= 2 else 1.0))
    return out, edge


def ranks(sv, shape):
    s = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    if s.size == 0 or s[0] <= 0:
        return dict(erank=0.0, stable_rank=0.0, r90=0, r99=0, rank=0), [1, 1]
    p = s / s.sum()
    p = p[p > 0]
    e2 = s ** 2
    c = np.cumsum(e2) / e2.sum()
    r90 = int(np.searchsorted(c, 0.9, side="left")) + 1
    r99 = int(np.searchsorted(c, 0.99, side="left")) + 1
    tol = s[0] * max(shape) * np.finfo(np.float64).eps
    edges = [abs(c[r90 - 1] - 0.9), abs(c[r99 - 1] - 0.99)]
    return dict(erank=float(np.exp(-(p * np.log(p)).sum())),
                stable_rank=float(e2.sum() / e2[0]), r90=min(r90, s.size),
                r99=min(r99, s.size), rank=int((s > tol).sum())), edges


def check_int(name, got, want, edge, where):
    if got == want:
        return
    if edge < 1e-12:
        print(f"note {where}: {name} {got} vs NumPy {want} on a knife edge ({edge:.1e})")
        return
    fail(f"{where}: {name} = {got}, NumPy {want}")


def check_trace(path, extra=()):
    layers, meta = read_trace(path)
    ent = run_json("entropy", path, *extra)
    rnk = run_json("rank", path, *extra)
    bot = run_json("bottleneck", path, "--no-witness", *extra)
    E = by_key(ent, "entropy", "layer", "head", "query")
    EH = by_key(ent, "entropy_head", "layer", "head", "stat")
    R = by_key(rnk, "rank", "layer", "matrix", "head")
    B = by_key(bot, "bottleneck", "layer", "head", "query")
    A = by_key(bot, "absorption", "layer", "head", "query", "budget")
    name = os.path.basename(path)
    n_q = 0
    for L, t in sorted(layers.items()):
        q = t["q"].astype(np.float64)
        K = t["k"].astype(np.float64)
        V = t["v"].astype(np.float64)
        hq, T, d = q.shape
        hkv, N, _ = K.shape
        scale = float(meta.get("scale", 1.0 / math.sqrt(d)))
        pos = t["q_pos"].astype(np.int64) if "q_pos" in t else np.full(T, N - 1)
        g = hq // hkv
        # keys and values
        for h in range(hkv):
            for mname, M in (("k", K[h]), ("v", V[h])):
                want, edges = ranks(np.linalg.svd(M, compute_uv=False), M.shape)
                got = R.get((L, mname, h))
                if got is None:
                    fail(f"{name} L{L} {mname} head {h}: no record")
                    continue
                where = f"{name} L{L} {mname} kv {h}"
                for f in ("erank", "stable_rank"):
                    close(f"rank.{f}", got[f], want[f], where)
                check_int("r90", got["r90"], want["r90"], edges[0], where)
                check_int("r99", got["r99"], want["r99"], edges[1], where)
                check_int("rank", got["rank"], want["rank"], 1.0, where)
        for h in range(hq):
            kv = h // g
            Qh = q[h]
            S = scale * Qh @ K[kv].T                 # T x N, all keys
            Amat = np.zeros((T, N))
            norms = np.sqrt((V[kv] ** 2).sum(axis=1))
            H = []
            for qi in range(T):
                n = int(pos[qi]) + 1
                p = u.softmax(S[qi, :n])
                Amat[qi, :n] = p
                nz = p[p > 0]
                h_nats = float(-(nz * np.log(nz)).sum())
                ks, edge = k_mass(p)
                where = f"{name} L{L} head {h} query {qi}"
                rec = E.get((L, h, qi))
                if rec is None:
                    fail(where + ": no entropy record")
                    continue
                n_q += 1
                if rec["n"] != n or rec["kv_head"] != kv:
                    fail(f"{where}: n/kv_head {rec['n']}/{rec['kv_head']} vs {n}/{kv}")
                close("entropy_nats", rec["entropy_nats"], h_nats, where)
                close("entropy_bits", rec["entropy_bits"], h_nats / math.log(2), where)
                close("entropy_norm", rec["entropy_norm"], h_nats / math.log(n) if n > 1 else 0.0,
                      where)
                close("eff_support", rec["eff_support"], math.exp(h_nats), where)
                for j, f in enumerate(("k50", "k90", "k99")):
                    check_int(f, rec[f], ks[j], edge[j], where)
                    if rec[f] == ks[j]:
                        close(f + "_frac", rec[f + "_frac"], ks[j] / n, where)
                H.append(rec["entropy_nats"])
                # bottleneck: collision space and absorption of oracle top-k
                b = B.get((L, h, qi))
                if b is None:
                    fail(where + ": no bottleneck record")
                    continue
                VV = np.vstack([V[kv][:n].T, np.ones((1, n))])
                want_rank = int(np.linalg.matrix_rank(VV))
                check_int("collision_dim", b["collision_dim"], n - want_rank, 1.0, where)
                close("v_max_norm", b["v_max_norm"], float(norms[:n].max()), where)
                order = np.argsort(-p, kind="stable")
                for budget in (0.01, 0.05, 0.1, 0.25):
                    k = min(max(int(math.ceil(budget * n)), 1), n)
                    a_rec = A.get((L, h, qi, budget))
                    if a_rec is None:
                        fail(f"{where}: no absorption record at {budget}")
                        continue
                    sel = order[:k]
                    P = p[sel].sum()
                    ak = np.zeros(n)
                    ak[sel] = p[sel] / P
                    delta = p - ak
                    num = np.linalg.norm(V[kv][:n].T @ delta)
                    den = np.abs(delta).sum() * norms[:n].max()
                    if a_rec["k"] != k:
                        fail(f"{where}: k {a_rec['k']} vs {k}")
                    close("captured_mass", a_rec["captured_mass"], float(P), where)
                    if den > 0:
                        # the denominator: ||delta||_1 = 2 (1 - P); rest mass summed directly
                        close("absorption", a_rec["absorption"], float(num / den), where,
                              rtol=RTOL if 1 - P > 1e-6 else 1e-6)
            # aggregates of the head
            Hs = np.array([E[(L, h, qi)]["entropy_nats"] for qi in range(T)])
            for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max),
                             ("median", np.median), ("q10", lambda x: np.quantile(x, 0.1)),
                             ("q90", lambda x: np.quantile(x, 0.9))):
                rec = EH.get((L, h, stat))
                if rec is None:
                    fail(f"{name} L{L} head {h}: no entropy_head {stat}")
                else:
                    close("entropy_head." + stat, rec["entropy_nats"], float(fn(Hs)),
                          f"{name} L{L} head {h}")
            # Q, scores, attention
            for mname, M in (("q", Qh), ("scores", S), ("attn", Amat)):
                want, edges = ranks(np.linalg.svd(M, compute_uv=False), M.shape)
                got = R.get((L, mname, h))
                where = f"{name} L{L} {mname} head {h}"
                if got is None:
                    fail(where + ": no record")
                    continue
                for f in ("erank", "stable_rank"):
                    close(f"rank.{f}", got[f], want[f], where)
                check_int("r90", got["r90"], want["r90"], edges[0], where)
                check_int("r99", got["r99"], want["r99"], edges[1], where)
                check_int("rank", got["rank"], want["rank"], 1.0, where)
    print(f"{name}: {n_q} queries checked", flush=True)
    return layers


def synthetic(tmp):
    """A trace written with the safetensors package: F32 causal GQA + F64 non-causal."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        print("note: safetensors package missing, synthetic trace skipped")
        return None
    rng = np.random.default_rng(4)
    hq, hkv, T, N, d = 4, 2, 5, 9000, 32
    tensors = {}
    for L, (dt, qs) in enumerate(((np.float32, 3.0), (np.float64, 0.3))):
        tensors[f"layers.{L}.q"] = (qs * rng.standard_normal((hq, T, d))).astype(dt)
        k = rng.standard_normal((hkv, N, d))
        k[:, :, 0] += np.linspace(0, 4, N)  # a drift: the maximum moves along the positions
        tensors[f"layers.{L}.k"] = k.astype(dt)
        tensors[f"layers.{L}.v"] = rng.standard_normal((hkv, N, d)).astype(dt)
        if L == 0:
            tensors[f"layers.{L}.q_pos"] = np.arange(N - T, N, dtype=np.int32) - 3000
    path = os.path.join(tmp, "synthetic.safetensors")
    save_file(tensors, path, metadata={"format": "attnscope-trace", "version": "1",
                                      "model": "synthetic-numpy"})
    return path


def main():
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.exists(SAMPLE):
            check_trace(SAMPLE)
        else:
            print("note: the real sample is missing; synthetic trace only")
        syn = synthetic(tmp)
        if syn:
            check_trace(syn, ("--tile", "1000"))
    for k in sorted(STATS):
        m, c = STATS[k]
        print(f"  {k:24s} max relative difference {m:.2e} over {c} values")
    if FAILED:
        print(f"FAILED: {len(FAILED)} checks")
        return 1
    print("ok: attnscope agrees with NumPy float64 to 1e-9 relative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
