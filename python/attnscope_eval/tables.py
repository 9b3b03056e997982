"""Markdown tables of one or more `attnscope eval` documents (what docs/results.md shows).

    python3 -m attnscope_eval.tables [--svg PERHEAD.svg] eval-2k.json [eval-4k.json ...]

Prints: the dense accuracy per task and length (samples, Wilson 95% CI); per task and length
the accuracy of every method at every sparsity (with the CI); mean KL(dense || sparse) and top-1
agreement; the perplexity ratio; the model-level tolerance; the per-head comparison when
present (and, with --svg, its scatter plot as an SVG file). Only the records are read: nothing is recomputed but the summary (stats.summarise)."""
from __future__ import annotations

import json
import math
import sys

from . import stats


def _fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def _ci(lo, hi):
    return "–" if lo is None else f"[{lo:.2f}, {hi:.2f}]"


def _sp(x):
    return f"{x:g}x"


METHOD_COLOURS = {"topk": "#1f77b4", "topk-sample": "#2ca02c", "page": "#ff7f0e",
                  "sink-window": "#9467bd", "uniform": "#d62728"}


def perhead_svg(perhead: list[dict], ranks: list[dict]) -> str:
    """Scatter (log-log) of the per-head median tolerance (x) against the model-level tolerance
    (y), one point per (task, length, method) whose dense accuracy is at least 0.5 (or ppl);
    a model-level value that is the sweep's largest (censored) is drawn as a triangle."""
    pts = [r for r in perhead if r["perhead_tolerance"] is not None
           and (r["dense_accuracy"] is None or r["dense_accuracy"] >= 0.5)]
    W, H, L, B, T, R = 560, 420, 60, 50, 20, 150
    top = max([100.0] + [max(r["perhead_tolerance"], r["model_tolerance"]) for r in pts])
    lmax = math.log10(top * 1.3)

    def x(v):
        return L + (W - L - R) * math.log10(max(v, 1.0)) / lmax

    def y(v):
        return H - B - (H - B - T) * math.log10(max(v, 1.0)) / lmax
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
    for v in (1, 2, 5, 10, 20, 50, 100, 200):
        if v > top * 1.3:
            break
        o.append(f'<line x1="{x(v):.1f}" y1="{T}" x2="{x(v):.1f}" y2="{H - B}" stroke="#eee"/>')
        o.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#eee"/>')
        o.append(f'<text x="{x(v):.1f}" y="{H - B + 14}" text-anchor="middle">{v}x</text>')
        o.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}x</text>')
    o.append(f'<line x1="{x(1):.1f}" y1="{y(1):.1f}" x2="{x(top * 1.3):.1f}" '
             f'y2="{y(top * 1.3):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    o.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - B - T}" fill="none" '
             f'stroke="#333"/>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">per-head '
             f'tolerance: median over heads, largest sparsity under 5% output error</text>')
    o.append(f'<text transform="translate(14 {(T + H - B) / 2}) rotate(-90)" '
             f'text-anchor="middle">model-level tolerance (accuracy within dense CI)</text>')
    seen = {}
    for i, r in enumerate(pts):
        c = METHOD_COLOURS.get(r["method"], "#333")
        # jitter identical points a little so that they stay visible
        k = (r["perhead_tolerance"], r["model_tolerance"])
        j = seen.get(k, 0)
        seen[k] = j + 1
        px, py = x(r["perhead_tolerance"]) + 4 * j, y(r["model_tolerance"]) - 3 * j
        tip = (f'{r["task"]} {r["length"]} {r["method"]}: per-head {r["perhead_tolerance"]:g}x, '
               f'model {r["model_tolerance"]:g}x{"+" if r["model_censored"] else ""}')
        if r["model_censored"]:
            o.append(f'<path d="M{px:.1f} {py - 6:.1f} L{px - 5:.1f} {py + 3:.1f} '
                     f'L{px + 5:.1f} {py + 3:.1f} Z" fill="{c}" opacity="0.8">'
                     f'<title>{tip}</title></path>')
        else:
            o.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}" opacity="0.8">'
                     f'<title>{tip}</title></circle>')
    rho = {r["method"]: r for r in ranks}
    ly = T + 10
    for m, c in METHOD_COLOURS.items():
        if not any(r["method"] == m for r in pts):
            continue
        rr = rho.get(m)
        lab = m if rr is None or rr["spearman"] is None else \
            f'{m} (rho {rr["spearman"]:.2f}, n={rr["points"]})'
        o.append(f'<circle cx="{W - R + 12}" cy="{ly}" r="4" fill="{c}"/>'
                 f'<text x="{W - R + 20}" y="{ly + 4}">{lab}</text>')
        ly += 16
    o.append(f'<text x="{W - R + 6}" y="{ly + 8}">triangle: largest</text>')
    o.append(f'<text x="{W - R + 6}" y="{ly + 22}">sparsity of the sweep</text>')
    o.append(f'<text x="{W - R + 6}" y="{ly + 36}">(censored); dashed: y = x</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    svg = None
    if len(argv) >= 2 and argv[0] == "--svg":
        svg, argv = argv[1], argv[2:]
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
    if len(argv) > 1 and perhead:  # points of several documents: one rank over all of them
        from .perhead import rank_records
        ranks = rank_records(perhead)
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
    if svg:
        with open(svg, "w") as f:
            f.write(perhead_svg(perhead, ranks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
