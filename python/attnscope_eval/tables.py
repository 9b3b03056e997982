"""Markdown tables of one or more `attnscope eval` documents (what docs/results.md shows).

    python3 -m attnscope_eval.tables eval-2k.json [eval-4k.json ...]

Prints: the dense accuracy per task and length (samples, Wilson 95% CI); per task and length
the accuracy of every method at every sparsity (with the CI); mean KL(dense || sparse) and top-1
agreement; the perplexity ratio; the model-level tolerance; the per-head comparison when
present. Only the records are read: nothing is recomputed but the summary (stats.summarise)."""
from __future__ import annotations

import json
import sys

from . import stats


def _fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def _ci(lo, hi):
    return "–" if lo is None else f"[{lo:.2f}, {hi:.2f}]"


def _sp(x):
    return f"{x:g}x"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    samples, perhead, ranks = [], [], []
    for path in argv:
        with open(path) as f:
            doc = json.load(f)
        if doc.get("command") != "eval":
            print(f"attnscope_eval.tables: {path}: not an eval document", file=sys.stderr)
            return 2
        for r in doc["records"]:
            if r["record"] == "sample":
                samples.append(r)
            elif r["record"] == "perhead":
                perhead.append(r)
            elif r["record"] == "perhead_rank":
                ranks.append(r)
    summ = stats.summarise(samples)
    tol = stats.tolerance(summ)
    keys = sorted({(s["task"], s["length"]) for s in summ}, key=lambda k: (k[1], k[0]))
    print("### Dense baseline\n")
    print("| task | length | samples | dense accuracy | 95% CI |")
    print("|---|---:|---:|---:|---|")
    for t, n in keys:
        d = next(s for s in summ if s["task"] == t and s["length"] == n and s["config"] == "dense")
        print(f"| {t} | {n} | {d['samples']} | {_fmt(d['accuracy'])} | "
              f"{_ci(d['ci_low'], d['ci_high'])} |")
    methods = sorted({s["method"] for s in summ if s["method"] != "dense"})
    sps = sorted({s["sparsity"] for s in summ if s["sparsity"] and s["method"] != "dense"})
    solved = [(t, n) for t, n in keys
              if (d := next(s for s in summ if s["task"] == t and s["length"] == n
                            and s["config"] == "dense"))["accuracy"] is not None
              and d["accuracy"] >= 0.5]

    def row(t, n, m, x):
        return next((s for s in summ if s["task"] == t and s["length"] == n
                     and s["method"] == m and s["sparsity"] == x), None)

    print("\n### Accuracy under sparse decode: correct / samples [Wilson 95% CI], tasks the "
          "dense model solves\n")
    print("| task | length | method | " + " | ".join(_sp(x) for x in sps) + " |")
    print("|---|---:|---|" + "---|" * len(sps))
    for t, n in solved:
        for m in methods:
            cells = []
            for x in sps:
                r = row(t, n, m, x)
                cells.append("–" if r is None or r["correct"] is None else
                             f"{r['correct']}/{r['samples']} {_ci(r['ci_low'], r['ci_high'])}")
            print(f"| {t} | {n} | {m} | " + " | ".join(cells) + " |")
    lengths = sorted({n for _, n in keys})
    for what, field, nd in (("mean KL(dense ‖ sparse) per decode step, nats", "kl_mean", 3),
                            ("top-1 agreement with the dense argmax", "top1", 2)):
        print(f"\n### {what} (mean over the summary rows of every task, perplexity task "
              "included)\n")
        print("| length | method | " + " | ".join(_sp(x) for x in sps) + " |")
        print("|---:|---|" + "---:|" * len(sps))
        for n in lengths:
            for m in methods:
                cells = []
                for x in sps:
                    v = [s[field] for s in summ if s["length"] == n and s["method"] == m
                         and s["sparsity"] == x and s[field] is not None]
                    cells.append(f"{sum(v) / len(v):.{nd}g}" if field == "kl_mean" and v
                                 else f"{sum(v) / len(v):.{nd}f}" if v else "–")
                print(f"| {n} | {m} | " + " | ".join(cells) + " |")
    print("\n### Perplexity ratio exp(NLL sparse − NLL dense), 16 held-out tokens\n")
    print("| length | samples | method | " + " | ".join(_sp(x) for x in sps) + " |")
    print("|---:|---:|---|" + "---:|" * len(sps))
    for n in lengths:
        for m in methods:
            cells, ns = [], 0
            for x in sps:
                r = row("ppl", n, m, x)
                cells.append("–" if r is None or r["ppl_ratio"] is None else f"{r['ppl_ratio']:.3f}")
                ns = max(ns, r["samples"] if r else 0)
            if ns:
                print(f"| {n} | {ns} | {m} | " + " | ".join(cells) + " |")
    eps = [s for s in summ if s["eps"] is not None]
    for s in eps:
        print(f"\n{s['task']} {s['length']} {s['config']}: accuracy {_fmt(s['accuracy'])} "
              f"{_ci(s['ci_low'], s['ci_high'])}, realised sparsity "
              f"{_fmt(s['realised_sparsity'], 2)}x, KL {s['kl_mean']:.3g}")
    print("\n### Model-level tolerance (largest sparsity with accuracy within the dense CI)\n")
    print("| task | length | dense acc. | " + " | ".join(methods) + " |")
    print("|---|---:|---:|" + "---:|" * len(methods))
    for t, n in keys:
        cells = []
        for m in methods:
            r = next((r for r in tol if r["task"] == t and r["length"] == n and r["method"] == m),
                     None)
            cells.append("–" if r is None else
                         f"{_sp(r['model_tolerance'])}{'+' if r['censored'] else ''}")
        d = next(s for s in summ if s["task"] == t and s["length"] == n and s["config"] == "dense")
        if d["accuracy"] is not None and d["accuracy"] < 0.5:
            cells = ["n/a (dense fails)"] * len(cells)
        print(f"| {t} | {n} | {_fmt(d['accuracy'])} | " + " | ".join(cells) + " |")
    if perhead:
        print("\n### Per-head prediction vs model-level tolerance\n")
        print("| task | length | method | per-head median (5% error) | heads needing dense | "
              "model-level |")
        print("|---|---:|---|---:|---:|---:|")
        for r in perhead:
            print(f"| {r['task']} | {r['length']} | {r['method']} | "
                  f"{_sp(r['perhead_tolerance'])} | {r['perhead_dense_heads']}/{r['heads']} | "
                  f"{_sp(r['model_tolerance'])}{'+' if r['model_censored'] else ''} |")
        for r in ranks:
            print(f"\n{r['method']}: Spearman rho = {_fmt(r['spearman'])} over {r['points']} "
                  f"points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
