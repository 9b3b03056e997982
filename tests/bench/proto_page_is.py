#!/usr/bin/env python3
"""Prototype (evidence only, not a method of attnscope): pages + sampling with a bound-based
proposal instead of uniform draws, on real traces.

`sparsity --method page-sample` draws the rest uniformly; on the 8k traces that gives a larger
median error than Quest alone (docs/results.md). Here the heavy set H is the same (the top Quest
pages of 16 keys within F k keys), but the rest of the budget is spent on draws from a proposal
that depends only on q and the page min/max (so it is still independent of the sampled values,
and the estimator stays unbiased): page p outside H with probability pi_p proportional to
|p| exp(ub_p - max ub) (ub_p the Quest bound); then
  is-key:  a key uniform within the drawn page (m = k - |H| draws, weight 1 / (m pi_p / |p|));
  is-page: the whole drawn page (m = (k - |H|) / 16 page draws, weight 1 / (m pi_p)),
numerator and denominator estimated separately, as page-sample. Also recomputed here: Quest and
uniform page-sample (as a check against attnscope's own medians). Prints the median relative
output error over every (layer, head, query) per method and sparsity. float64 throughout.

  python3 tests/bench/proto_page_is.py /work/traces/needle-8k.safetensors [--fracs 0.5,0.8]
"""
import argparse

import numpy as np
import torch
from safetensors import safe_open

P = 16


def page_bounds(q, kmin, kmax, scale):
    return scale * (np.maximum(q[None, :] * kmin, q[None, :] * kmax)).sum(1)


def run(trace, sparsities, fracs, seed):
    f = safe_open(trace, "pt")
    meta = f.metadata()
    scale = float(meta["scale"])
    layers = sorted(int(k.split(".")[1]) for k in f.keys() if k.endswith(".k"))
    rng = np.random.default_rng(seed)
    errs = {}
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
                k_, v_ = K[kh, :n], V[kh, :n]
                q = Q[h, t]
                s = scale * (k_ @ q)
                e = np.exp(s - s.max())
                o = (e @ v_) / e.sum()
                no = np.linalg.norm(o)
                npg = (n + P - 1) // P
                pad = npg * P - n
                kp = np.concatenate([k_, np.full((pad, k_.shape[1]), np.nan)]) if pad else k_
                kp = kp.reshape(npg, P, -1)
                ub = page_bounds(q, np.nanmin(kp, 1), np.nanmax(kp, 1), scale)
                order = np.argsort(-ub, kind="stable")
                sizes = np.full(npg, P)
                sizes[-1] = n - (npg - 1) * P
                ep = np.concatenate([e, np.zeros(pad)]).reshape(npg, P)
                vp = np.concatenate([v_, np.zeros((pad, v_.shape[1]))]).reshape(npg, P, -1)
                num_pg = np.einsum("pk,pkd->pd", ep, vp)  # per-page numerator
                den_pg = ep.sum(1)
                for sp in sparsities:
                    k = max(1, int(np.ceil(n / sp)))

                    def err(num, den):
                        return np.linalg.norm(num / den - o) / no

                    quest = order[:max(1, k // P)]
                    errs.setdefault(("page", None, sp), []).append(
                        err(num_pg[quest].sum(0), den_pg[quest].sum()))
                    for F in fracs:
                        nh = int(round(k * F)) // P
                        H = order[:nh]
                        inH = np.zeros(npg, bool)
                        inH[H] = True
                        hk = sizes[H].sum()
                        num0, den0 = num_pg[H].sum(0), den_pg[H].sum()
                        rest = np.flatnonzero(~inH)
                        nrest = n - hk
                        m = k - hk
                        if m <= 0 or nrest <= 0:
                            for meth in ("page-sample", "is-key", "is-page"):
                                errs.setdefault((meth, F, sp), []).append(err(num0, den0))
                            continue
                        # uniform draws over the keys outside H (with replacement)
                        restkeys = (rest[:, None] * P + np.arange(P)[None, :]).ravel()
                        restkeys = restkeys[restkeys < n]
                        dr = rng.choice(restkeys, size=m)
                        w = nrest / m
                        errs.setdefault(("page-sample", F, sp), []).append(
                            err(num0 + w * (e[dr] @ v_[dr]), den0 + w * e[dr].sum()))
                        # proposal over the rest pages
                        lw = np.log(sizes[rest]) + ub[rest]
                        pi = np.exp(lw - lw.max())
                        pi /= pi.sum()
                        pg = rng.choice(len(rest), size=m, p=pi)
                        off = (rng.random(m) * sizes[rest][pg]).astype(int)
                        keys = rest[pg] * P + off
                        wk = sizes[rest][pg] / (m * pi[pg])
                        errs.setdefault(("is-key", F, sp), []).append(
                            err(num0 + (wk * e[keys]) @ v_[keys], den0 + (wk * e[keys]).sum()))
                        mp = max(1, m // P)
                        pg = rng.choice(len(rest), size=mp, p=pi)
                        wp = 1.0 / (mp * pi[pg])
                        errs.setdefault(("is-page", F, sp), []).append(
                            err(num0 + wp @ num_pg[rest[pg]], den0 + wp @ den_pg[rest[pg]]))
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--sparsities", default="10,20,50,100")
    ap.add_argument("--fracs", default="0.5,0.8")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    sps = [int(x) for x in a.sparsities.split(",")]
    fr = [float(x) for x in a.fracs.split(",")]
    print("| trace | method | F | " + " | ".join(f"{s}x" for s in sps) + " | 50x / Quest |")
    print("|---|---|---|" + "---|" * len(sps) + "---|")
    for tr in a.traces:
        errs = run(tr, sps, fr, a.seed)
        name = tr.rsplit("/", 1)[-1].split(".")[0]
        quest50 = np.median(errs[("page", None, 50)]) if 50 in sps else None
        for key in [("page", None)] + [(m, F) for m in ("page-sample", "is-key", "is-page") for F in fr]:
            meds = [np.median(errs[key + (s,)]) for s in sps]
            r = (np.median(errs[key + (50,)]) / quest50) if quest50 else float("nan")
            print(f"| {name} | {key[0]} | {key[1] if key[1] is not None else '-'} | "
                  + " | ".join(f"{x:.3f}" for x in meds) + f" | {r:.2f} |", flush=True)


if __name__ == "__main__":
    main()
