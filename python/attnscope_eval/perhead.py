"""Per-head prediction against model-level outcome (`attnscope eval --perhead DIR`).

For the first `--perhead-samples` samples of every (task, length), the capture tool
(data/capture) writes a trace of the same prompt (its last T tokens decoded one at a time, the
layers of --perhead-layers), and `attnscope sparsity TRACE --summary-only --json` measures each
head's tolerance (its `head_sweep` record: the largest sparsity whose mean relative output error
stays under 5%, every smaller sparsity also passing). The per-head tolerance of a (task, length,
method) is the median over every head of every captured sample (with one sample: `sparsity`'s
`model_summary` `median_sparsity_5pct`). Beside it, the model-level tolerance of the `tolerance`
record. Spearman's rho over the (task, length) points whose dense accuracy is at least 0.5 (and
the perplexity task), per method, with a permutation p-value; and over every (task, length,
method) point together, its p-value from permutations within each (task, length) (does the
per-head number order the methods as the model does?).

What `attnscope sparsity` says about each trace is kept in DIR as TASK-LENGTH-sI.perhead.json
(the head_sweep tolerances and model_summary records, with the prompt's token-id hash and the
capture settings): a rerun with the same prompt and settings reuses it without capturing."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

from . import stats
from . import tasks as tk

PERMUTATIONS = 20000  # Monte-Carlo permutations of the rank test (exact below 9 points)


class PerHeadError(Exception):
    pass


def _attnscope_bin() -> str:
    b = os.environ.get("ATTNSCOPE_BIN") or shutil.which("attnscope")
    if not b or not os.access(b, os.X_OK):
        raise PerHeadError("--perhead needs the attnscope program (run through `attnscope eval` "
                           "or set ATTNSCOPE_BIN)")
    return b


def ids_sha256(ids) -> str:
    """The hash of a prompt's token ids, as the sample records' `ids_sha256`."""
    return hashlib.sha256(struct.pack(f"<{len(ids)}i", *ids)).hexdigest()


def _settings(args, methods) -> dict:
    return dict(layers=args.perhead_layers, T=args.perhead_t, methods=methods, seed=args.seed,
                sinks=args.sinks, page_size=args.page_size, heavy_frac=args.heavy_frac,
                delta=args.delta, model=args.model, dtype="f32")


def measure(args, exe: str, t: str, n: int, i: int, sample: dict, methods: list[str]) -> dict:
    """Per-head tolerances of one sample's trace: {"trace", "ids_sha256", "settings",
    "methods": {method: {"summary": model_summary record, "heads": [sparsity_5pct, ...]}}},
    from DIR's cache when the prompt and settings match, else captured and measured."""
    base = os.path.join(args.perhead, f"{t}-{n}-s{i}")
    cache, trace = base + ".perhead.json", base + ".safetensors"
    sha = ids_sha256(sample["ids"])
    want = _settings(args, methods)
    if os.path.exists(cache):
        try:
            with open(cache) as f:
                c = json.load(f)
            if c.get("ids_sha256") == sha and c.get("settings") == want:
                return c
        except (OSError, json.JSONDecodeError):
            pass  # a cut or foreign file: measure again
    ids_path = base + ".ids"
    with open(ids_path, "w") as f:
        f.write(" ".join(str(x) for x in sample["ids"]) + "\n")
    tool = os.path.join(tk.CAPTURE_DIR, "attnscope_capture.py")
    cmd = [sys.executable, tool, "--model", args.model, "--prompt-ids", ids_path,
           "-T", str(args.perhead_t), "--layers", args.perhead_layers, "--dtype", "f32",
           "--threads", str(args.threads or 0), "-o", trace]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PerHeadError(f"capture of {t} at {n} (sample {i}) failed: "
                           f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    r = subprocess.run([exe, "sparsity", trace, "--method", ",".join(methods),
                        "--summary-only", "--json", "--quiet", "--seed", str(args.seed),
                        "--sinks", str(args.sinks), "--page-size", str(args.page_size),
                        "--heavy-frac", str(args.heavy_frac), "--delta", str(args.delta)],
                       capture_output=True, text=True)
    if r.returncode not in (0, 1):  # 1: a check failed; the summary is still written
        raise PerHeadError(f"attnscope sparsity {trace}: {r.stderr.strip()}")
    doc = json.loads(r.stdout)
    per = {m: {"summary": None, "heads": []} for m in methods}
    for rec in doc["records"]:
        m = rec.get("method")
        if m not in per:
            continue
        if rec.get("record") == "model_summary":
            per[m]["summary"] = rec
        elif rec.get("record") == "head_sweep":
            per[m]["heads"].append(rec["sparsity_5pct"])
    c = dict(task=t, length=n, sample=i, trace=trace, ids_sha256=sha, settings=want,
             sparsity_exit=r.returncode, methods=per)
    fd, tmp = tempfile.mkstemp(dir=args.perhead, prefix=".perhead-")
    with os.fdopen(fd, "w") as f:
        json.dump(c, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, cache)
    return c


def aggregate(t, n, method, measured: list[dict], mt: dict, model: str) -> dict | None:
    """The `perhead` record of one (task, length, method) from the measured samples."""
    rows = [(c["sample"], c["methods"].get(method)) for c in measured]
    rows = [(i, m) for i, m in rows if m and m["heads"]]
    if not rows:
        return None
    pooled = [h for _, m in rows for h in m["heads"]]
    per_sample = [dict(sample=i, tolerance=statistics.median(m["heads"]),
                       dense_heads=sum(1 for h in m["heads"] if h <= 1),
                       min_tolerance=min(m["heads"])) for i, m in rows]
    return dict(record="perhead", model=model, task=t, length=n, method=method,
                trace=measured[0]["trace"], traces=[c["trace"] for c in measured],
                samples=len(rows),
                perhead_tolerance=statistics.median(pooled),
                perhead_min_tolerance=min(pooled),
                perhead_dense_heads=statistics.median(s["dense_heads"] for s in per_sample),
                heads=len(rows[0][1]["heads"]), per_sample=per_sample,
                model_tolerance=mt["model_tolerance"], model_censored=mt["censored"],
                dense_accuracy=mt["dense_accuracy"], model_samples=mt.get("samples"))


def run(args, work, tol_records, info) -> list[dict]:
    os.makedirs(args.perhead, exist_ok=True)
    exe = _attnscope_bin()
    tol = {(r["task"], r["length"], r["method"]): r for r in tol_records}
    methods = sorted({r["method"] for r in tol_records})
    k = getattr(args, "perhead_samples", 1) or 1
    solved_only = getattr(args, "perhead_solved_only", False)
    measured: dict[tuple, list] = {}
    order = []
    for t, n, i, build in sorted(work, key=lambda w: (w[2], w[1], w[0])):
        if i >= k:
            continue
        d = next((r["dense_accuracy"] for r in tol_records if r["task"] == t
                  and r["length"] == n), None)
        if solved_only and d is not None and d < 0.5:
            continue
        if (t, n) not in measured:
            order.append((t, n))
        measured.setdefault((t, n), []).append(measure(args, exe, t, n, i, build(), methods))
    out = []
    for t, n in sorted(order, key=lambda p: (p[1], p[0])):
        for m in methods:
            mt = tol.get((t, n, m))
            if mt is None:
                continue
            rec = aggregate(t, n, m, measured[(t, n)], mt, args.model)
            if rec is not None:
                out.append(rec)
    return out + rank_records(out, seed=args.seed)


def _counts(r) -> bool:
    return r["perhead_tolerance"] is not None and \
        (r["dense_accuracy"] is None or r["dense_accuracy"] >= 0.5)


def rank_records(perhead: list[dict], seed: int = 0) -> list[dict]:
    """Per method, Spearman's rho between per-head and model-level tolerance over the
    (task, length) points of `perhead` records whose dense accuracy is at least 0.5 (ppl has
    no accuracy and counts): elsewhere the model-level tolerance measures nothing; with its
    two-sided permutation p-value. Then one record over every method's points together
    (method "all"), its p-value from permutations within each (model, task, length)."""
    out = []
    for m in sorted({r["method"] for r in perhead}):
        pts = [r for r in perhead if r["method"] == m and _counts(r)]
        x = [r["perhead_tolerance"] for r in pts]
        y = [r["model_tolerance"] for r in pts]
        rho, p, perms = spearman_test(x, y, seed=seed)
        out.append(dict(record="perhead_rank", method=m, points=len(pts), spearman=rho,
                        p_value=p, permutations=perms, distinct_perhead=len(set(x)),
                        distinct_model=len(set(y)), strata=None))
    pts = [r for r in perhead if _counts(r)]
    if len({r["method"] for r in pts}) > 1:
        x = [r["perhead_tolerance"] for r in pts]
        y = [r["model_tolerance"] for r in pts]
        strata = [(r.get("model"), r["task"], r["length"]) for r in pts]
        rho, p, perms = spearman_test(x, y, seed=seed, strata=strata)
        out.append(dict(record="perhead_rank", method="all", points=len(pts), spearman=rho,
                        p_value=p, permutations=perms, distinct_perhead=len(set(x)),
                        distinct_model=len(set(y)), strata=len(set(strata))))
    return out


def spearman_test(x, y, permutations: int = PERMUTATIONS, seed: int = 0, strata=None):
    """(rho, two-sided p-value, permutations used) of Spearman's rho (ties averaged) under the
    null that y is exchangeable with respect to x (within each stratum when `strata` is given).
    The p-value counts the permutations whose |rho| is at least the observed one, the observed
    arrangement included: exact over every permutation of y when there are at most 8 points
    and no strata, else (count + 1) / (permutations + 1) from `permutations` seeded draws.
    None where rho is undefined (fewer than 3 points, or x or y constant)."""
    rho = stats.spearman(x, y)
    if rho is None:
        return None, None, 0
    tol = 1e-12
    n = len(y)
    if strata is None and n <= 8:
        hits = total = 0
        for perm in itertools.permutations(y):
            r = stats.spearman(x, list(perm))
            total += 1
            hits += r is not None and abs(r) >= abs(rho) - tol
        return rho, hits / total, total
    rng = random.Random(seed)
    groups: dict = {}
    for j, s in enumerate(strata if strata is not None else [0] * n):
        groups.setdefault(s, []).append(j)
    hits = 0
    yy = list(y)
    for _ in range(permutations):
        for idx in groups.values():
            vals = [y[j] for j in idx]
            rng.shuffle(vals)
            for j, v in zip(idx, vals):
                yy[j] = v
        r = stats.spearman(x, yy)
        hits += r is not None and abs(r) >= abs(rho) - tol
    return rho, (hits + 1) / (permutations + 1), permutations
