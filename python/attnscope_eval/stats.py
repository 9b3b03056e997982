"""Aggregation of `attnscope eval` sample records: accuracies with Wilson intervals, the dense
baseline beside every row, model-level tolerance, Spearman rank correlation."""
from __future__ import annotations

import math
from collections import defaultdict

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for k successes in n trials (Wilson 1927; docs/theory.md)."""
    if n == 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, c - h), min(1.0, c + h)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarise(samples: list[dict]) -> list[dict]:
    """One `summary` record per (task, length, config), the dense baseline beside it; only
    samples whose dense record is present count (so both sides have the same samples)."""
    by = defaultdict(dict)  # (task, length) -> sample -> config -> record
    for r in samples:
        by[(r["task"], r["length"])].setdefault(r["sample"], {})[r["config"]] = r
    out = []
    for (task, length), per in sorted(by.items()):
        configs = sorted({c for s in per.values() for c in s},
                         key=lambda c: (c != "dense", c))
        for c in configs:
            rows = [(s["dense"], s[c]) for s in per.values() if c in s and "dense" in s]
            if not rows:
                continue
            r0 = rows[0][1]
            n = len(rows)
            scored = [(d, r) for d, r in rows if r["correct"] is not None]
            k = sum(1 for _, r in scored if r["correct"])
            kd = sum(1 for d, _ in scored if d["correct"])
            ns = len(scored)
            lo, hi = wilson(k, ns)
            dlo, dhi = wilson(kd, ns)
            agree = [r["agree_dense"] for _, r in rows if r["agree_dense"] is not None]
            alo, ahi = wilson(sum(agree), len(agree))
            out.append(dict(
                record="summary", task=task, length=length, config=c, method=r0["method"],
                sparsity=r0["sparsity"], budget=r0["budget"], eps=r0["eps"], samples=n,
                correct=k if ns else None, accuracy=k / ns if ns else None,
                ci_low=lo, ci_high=hi,
                dense_accuracy=kd / ns if ns else None, dense_ci_low=dlo, dense_ci_high=dhi,
                agree_dense=sum(agree) / len(agree) if agree else None,
                agree_ci_low=alo, agree_ci_high=ahi,
                top1=_mean([r["top1"] for _, r in rows]),
                kl_mean=_mean([r["kl_mean"] for _, r in rows]),
                kl_max=max(r["kl_max"] for _, r in rows),
                ppl_ratio=_geomean([r["ppl_ratio"] for _, r in rows]),
                kept_mean=_mean([r["kept_mean"] for _, r in rows]),
                realised_sparsity=_mean([r.get("realised_sparsity") for _, r in rows]),
                within_dense_ci=(None if not ns else (dlo - 1e-12 <= k / ns)),
            ))
    return out


def tolerance(summary: list[dict]) -> list[dict]:
    """Model-level tolerance per (task, length, method): the largest nominal sparsity whose
    accuracy stays within the dense 95% CI (at or above its lower end), with every smaller
    sparsity of the sweep also within (as head_sweep defines a head's tolerance); 1 = none.
    For the perplexity task the criterion is a perplexity ratio at most 1.05."""
    groups = defaultdict(list)
    for s in summary:
        if s["method"] == "dense" or s["sparsity"] is None:
            continue
        groups[(s["task"], s["length"], s["method"])].append(s)
    out = []
    for (task, length, method), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r["sparsity"])
        tol, censored = 1.0, False
        for r in rows:
            ok = (r["ppl_ratio"] is not None and r["ppl_ratio"] <= 1.05) \
                if r["accuracy"] is None else bool(r["within_dense_ci"])
            if not ok:
                break
            tol = r["sparsity"]
        else:
            censored = True
        d = rows[0]
        out.append(dict(record="tolerance", task=task, length=length, method=method,
                        model_tolerance=tol, censored=censored,
                        criterion="ppl_ratio<=1.05" if d["accuracy"] is None
                        else "accuracy>=dense_ci_low",
                        dense_accuracy=d["dense_accuracy"], samples=d["samples"]))
    return out


def _ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for t in range(i, j + 1):
            r[order[t]] = (i + j) / 2 + 1  # average rank of the ties
        i = j + 1
    return r


def spearman(x, y) -> float | None:
    """Spearman's rho: Pearson correlation of the average ranks (ties averaged)."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)
