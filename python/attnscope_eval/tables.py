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
    (y), one point per (model, task, length, method) whose dense accuracy is at least 0.5 (or
    ppl); a model-level value that is the sweep's largest (censored) is drawn as a triangle;
    points of a second model are hollow; a horizontal whisker spans the per-sample medians when
    several samples were captured."""
    pts = [r for r in perhead if r["perhead_tolerance"] is not None
           and (r["dense_accuracy"] is None or r["dense_accuracy"] >= 0.5)]
    models = []
    for r in pts:
        if r.get("model") not in models:
            models.append(r.get("model"))
    W, H, L, B, T, R = 640, 440, 60, 50, 20, 230

    def spread(r):
        ps = [s["tolerance"] for s in r.get("per_sample") or []]
        return (min(ps), max(ps)) if len(ps) > 1 else None
    top = max([100.0] + [max(r["perhead_tolerance"], r["model_tolerance"]) for r in pts]
              + [spread(r)[1] for r in pts if spread(r)])
    lmin, lmax = math.log10(0.8), math.log10(top * 1.3)  # 1x off the frame

    def x(v):
        return L + (W - L - R) * (math.log10(max(v, 1.0)) - lmin) / (lmax - lmin)

    def y(v):
        return H - B - (H - B - T) * (math.log10(max(v, 1.0)) - lmin) / (lmax - lmin)
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
    for r in pts:
        c = METHOD_COLOURS.get(r["method"], "#333")
        fill = c if models.index(r.get("model")) == 0 else "white"
        # jitter identical points a little so that they stay visible
        k = (r["perhead_tolerance"], r["model_tolerance"])
        j = seen.get(k, 0)
        seen[k] = j + 1
        px, py = x(r["perhead_tolerance"]) + 3 * (j % 4), y(r["model_tolerance"]) - 4 * (j // 4) \
            - 2 * (j % 4)
        sp = spread(r)
        tip = (f'{r.get("model") or ""} {r["task"]} {r["length"]} {r["method"]}: per-head '
               f'{r["perhead_tolerance"]:g}x'
               + (f' (samples {sp[0]:g}-{sp[1]:g}x)' if sp else '')
               + f', model {r["model_tolerance"]:g}x{"+" if r["model_censored"] else ""}')
        if sp:
            o.append(f'<line x1="{x(sp[0]):.1f}" y1="{py:.1f}" x2="{x(sp[1]):.1f}" '
                     f'y2="{py:.1f}" stroke="{c}" opacity="0.5"/>')
        if r["model_censored"]:
            o.append(f'<path d="M{px:.1f} {py - 6:.1f} L{px - 5:.1f} {py + 3:.1f} '
                     f'L{px + 5:.1f} {py + 3:.1f} Z" fill="{fill}" stroke="{c}" '
                     f'opacity="0.85"><title>{tip}</title></path>')
        else:
            o.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{fill}" stroke="{c}" '
                     f'opacity="0.85"><title>{tip}</title></circle>')
    rho = {r["method"]: r for r in ranks}

    def lab(name, rr):
        if rr is None:
            return name
        if rr["spearman"] is None:
            return f'{name} (rho undefined, n={rr["points"]})'
        pv = rr.get("p_value")
        return f'{name} (rho {rr["spearman"]:.2f}, n={rr["points"]}' + \
            (f', p={pv:.2g})' if pv is not None else ')')
    ly = T + 10
    for m, c in METHOD_COLOURS.items():
        if not any(r["method"] == m for r in pts):
            continue
        o.append(f'<circle cx="{W - R + 12}" cy="{ly}" r="4" fill="{c}"/>'
                 f'<text x="{W - R + 20}" y="{ly + 4}">{lab(m, rho.get(m))}</text>')
        ly += 16
    if "all" in rho:
        o.append(f'<text x="{W - R + 6}" y="{ly + 4}">{lab("pooled", rho["all"])}</text>')
        o.append(f'<text x="{W - R + 6}" y="{ly + 18}">(p: permutations within task x length)</text>')
        ly += 30
    notes = ["triangle: largest sparsity of the", "sweep (censored); dashed: y = x"]
    if len(models) > 1:
        notes += [f"filled: {models[0]}"] + [f"hollow: {m}" for m in models[1:]]
    if any(spread(r) for r in pts):
        notes += ["whisker: range of the per-sample", "medians"]
    for t in notes:
        o.append(f'<text x="{W - R + 6}" y="{ly + 8}">{t}</text>')
        ly += 14
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
        several = len({r.get("model") for r in perhead}) > 1
        print("| " + ("model | " if several else "") + "task | length | method | traces | "
              "per-head median (5% error) | per-sample medians | heads needing dense | "
              "model-level |")
        print("|" + ("---|" if several else "") + "---|---:|---|---:|---:|---|---:|---:|")
        for r in perhead:
            ps = ", ".join(_sp(s["tolerance"]) for s in r.get("per_sample") or [])
            print("| " + (f"{r.get('model')} | " if several else "") +
                  f"{r['task']} | {r['length']} | {r['method']} | {r.get('samples', 1)} | "
                  f"{_sp(r['perhead_tolerance'])} | {ps or '–'} | "
                  f"{r['perhead_dense_heads']:g}/{r['heads']} | "
                  f"{_sp(r['model_tolerance'])}{'+' if r['model_censored'] else ''} |")
        # the same, one row per task and length: per-head -> model-level, per method
        pm = sorted({r["method"] for r in perhead})
        print("\nper-head median tolerance → model-level tolerance (+: the largest sparsity of the "
              "sweep still passes)\n")
        print("| " + ("model | " if several else "") + "task | length | traces | "
              + " | ".join(pm) + " |")
        print("|" + ("---|" if several else "") + "---|---:|---:|" + "---:|" * len(pm))
        seen_pts = []
        for r in perhead:
            k = (r.get("model"), r["task"], r["length"])
            if k not in seen_pts:
                seen_pts.append(k)
        for k in seen_pts:
            rows = {r["method"]: r for r in perhead
                    if (r.get("model"), r["task"], r["length"]) == k}
            cells = ["–" if m not in rows else
                     f"{_sp(rows[m]['perhead_tolerance'])} → {_sp(rows[m]['model_tolerance'])}"
                     f"{'+' if rows[m]['model_censored'] else ''}" for m in pm]
            n_tr = max(r.get("samples", 1) for r in rows.values())
            print("| " + (f"{k[0]} | " if several else "") + f"{k[1]} | {k[2]} | {n_tr} | "
                  + " | ".join(cells) + " |")
        print("\n| method | points | distinct per-head / model-level values | Spearman rho | "
              "p (two-sided, permutation) |")
        print("|---|---:|---|---:|---:|")
        for r in ranks:
            pv = r.get("p_value")
            how = "" if pv is None else (" exact" if r.get("strata") is None and r["points"] <= 8
                                         else f" {r['permutations']} perms" +
                                         (f" within {r['strata']} strata" if r.get("strata")
                                          else ""))
            rho = "undefined" if r["spearman"] is None else f"{r['spearman']:.2f}"
            print(f"| {r['method']} | {r['points']} | {r.get('distinct_perhead', '–')} / "
                  f"{r.get('distinct_model', '–')} | {rho} | "
                  f"{'–' if pv is None else f'{pv:.3g}'}{how} |")
    if svg:
        with open(svg, "w") as f:
            f.write(perhead_svg(perhead, ranks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
