#!/usr/bin/env python3
"""Why pages + sampling cannot reach half of Quest's error at 50x (evidence, numpy float64).

For the same heavy set H as `sparsity --method page-is` (the Quest pages of 16 keys within
round(F k) keys) and the same m = k - |H| draws with replacement, each weighted 1 / (m q_j),
compares proposals q over the rest R:
  bound:       a page in proportion to |p| exp(U_p) (its Quest bound) mixed with 10% uniform, a
               key uniform in the page (`page-is --is-score bound`, numpy's generator here);
  center:      the same with the score of the centre of the page's key box, (U_p + L_p) / 2
               (`page-is`'s default);
  oracle-page: a page in proportion to its true mass A_p = sum_{j in p} a_j, a key uniform in it:
               the best any proposal that sees pages but not keys can do (up to the split of m);
  oracle-key:  q_j = a_j / (1 - P_H): zero-variance denominator, the floor of importance
               sampling with m draws;
and prints the median relative error over every (layer, head, query), with the ratio to Quest
(pages of 16) at 50x. Diagnostics at 50x, F = 0.8 (medians): the missed mass 1 - P_H, Quest's
bias (1 - P_H) ||o_rest - o_H|| / ||o||, the spread sqrt(E_{a|R} ||v - o_rest||^2) / ||o||, and
the second-moment factor chi = sum_R a_j^2 / q_j / (1 - P_H)^2 (1 for oracle-key; the effective
number of draws is m / chi) of oracle-page and bound.

  python3 tests/bench/proto_page_is_limits.py /work/traces/needle-8k.safetensors
"""
import argparse

import numpy as np
import torch
from safetensors import safe_open

P = 16
SPS = (10, 20, 50, 100)
FRACS = (0.5, 0.8)


def run(trace, seed):
    rng = np.random.default_rng(seed)
    f = safe_open(trace, "pt")
    scale = float(f.metadata()["scale"])
    layers = sorted(int(k.split(".")[1]) for k in f.keys() if k.endswith(".k"))
    errs, diag = {}, {}
    for L in layers:
        K = f.get_tensor(f"layers.{L}.k").to(torch.float64).numpy()
        V = f.get_tensor(f"layers.{L}.v").to(torch.float64).numpy()
        Q = f.get_tensor(f"layers.{L}.q").to(torch.float64).numpy()
        qpos = f.get_tensor(f"layers.{L}.q_pos").numpy()
        hq, hkv = Q.shape[0], K.shape[0]
        for h in range(hq):
            kh = h // (hq // hkv)
            for t in range(Q.shape[1]):
                n = int(qpos[t]) + 1
                k_, v_, q = K[kh, :n], V[kh, :n], Q[h, t]
                s = scale * (k_ @ q)
                a = np.exp(s - s.max())
                a /= a.sum()
                o = a @ v_
                no = np.linalg.norm(o)
                npg = (n + P - 1) // P
                pid = np.arange(n) // P
                mn = np.array([k_[p * P:(p + 1) * P].min(0) for p in range(npg)])
                mx = np.array([k_[p * P:(p + 1) * P].max(0) for p in range(npg)])
                ub = scale * np.maximum(q * mn, q * mx).sum(1)
                ctr = scale * (q * (mn + mx) / 2).sum(1)
                order = np.lexsort((np.arange(npg), -ub))
                Ap = np.bincount(pid, weights=a, minlength=npg)
                size = np.bincount(pid, minlength=npg).astype(float)

                def err(idx, w):
                    return np.linalg.norm((w * a[idx]) @ v_[idx] / (w * a[idx]).sum() - o) / no

                for sp in SPS:
                    k = max(1, int(np.ceil(n / sp)))
                    quest = np.flatnonzero(np.isin(pid, order[:max(1, k // P)]))
                    errs.setdefault(("page", None, sp), []).append(err(quest, np.ones(len(quest))))
                    for F in FRACS:
                        inHp = np.zeros(npg, bool)
                        inHp[order[:int(np.floor(k * F + 0.5)) // P]] = True
                        inH = inHp[pid]
                        H, R = np.flatnonzero(inH), np.flatnonzero(~inH)
                        m, r = k - len(H), len(R)
                        if m <= 0 or m >= r:
                            continue
                        props = {}
                        e = np.exp(ub[pid[R]] - ub[pid[R]].max())
                        props["bound"] = 0.9 * e / e.sum() + 0.1 / r
                        e = np.exp(ctr[pid[R]] - ctr[pid[R]].max())
                        props["center"] = 0.9 * e / e.sum() + 0.1 / r
                        props["oracle-page"] = Ap[pid[R]] / Ap[~inHp].sum() / size[pid[R]]
                        props["oracle-key"] = a[R] / a[R].sum()
                        for name, qR in props.items():
                            dr = rng.choice(r, size=m, p=qR / qR.sum())
                            idx = np.concatenate([H, R[dr]])
                            w = np.concatenate([np.ones(len(H)), 1.0 / (m * qR[dr])])
                            errs.setdefault((name, F, sp), []).append(err(idx, w))
                        if sp == 50 and F == 0.8:
                            mr = a[R].sum()
                            oH = a[H] @ v_[H] / a[H].sum()
                            orest = a[R] @ v_[R] / mr
                            spread = np.sqrt(a[R] @ ((v_[R] - orest) ** 2).sum(1) / mr)
                            for key, val in (("1 - P_H", mr),
                                             ("Quest bias (1 - P_H)|o_rest - o_H| / |o|",
                                              mr * np.linalg.norm(orest - oH) / no),
                                             ("spread / |o|", spread / no),
                                             ("chi oracle-page", (a[R] ** 2 / props["oracle-page"]).sum() / mr ** 2),
                                             ("chi bound", (a[R] ** 2 / props["bound"]).sum() / mr ** 2),
                                             ("chi center", (a[R] ** 2 / props["center"]).sum() / mr ** 2)):
                                diag.setdefault(key, []).append(val)
    return errs, diag


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print("| trace | proposal | F | " + " | ".join(f"{s}x" for s in SPS) + " | 50x / Quest |")
    print("|---|---|---|" + "---|" * len(SPS) + "---|")
    for tr in a.traces:
        errs, diag = run(tr, a.seed)
        name = tr.rsplit("/", 1)[-1].split(".")[0]
        q50 = np.median(errs[("page", None, 50)])
        keys = [("page", None)] + [(p, F) for p in ("bound", "center", "oracle-page", "oracle-key")
                                   for F in FRACS]
        for key in keys:
            meds = [np.median(errs[key + (s,)]) for s in SPS]
            print(f"| {name} | {key[0]} | {key[1] if key[1] is not None else '-'} | "
                  + " | ".join(f"{x:.3f}" for x in meds)
                  + f" | {np.median(errs[key + (50,)]) / q50:.2f} |", flush=True)
        for key, vals in diag.items():
            print(f"{name} 50x F=0.8 {key}: median {np.median(vals):.3f} "
                  f"(quartiles {np.percentile(vals, 25):.3f}, {np.percentile(vals, 75):.3f})")


if __name__ == "__main__":
    main()
