#!/usr/bin/env python3
"""Quest page min/max stored in bf16: does it change the page method's selections?

Issue 20, item 2: store Quest's per-page key min and max in bf16 (rounded outward: min toward
-inf, max toward +inf, so the bound stays an upper bound; docs/theory.md) if the CPU side shows
that this changes no selection materially. For each trace and sparsity this runs
`attnscope sparsity --method page` once with the exact page bounds (--page-bounds exact, today's
default) and once with bf16 ones (--page-bounds bf16), and compares

  - the selected page sets, read from `--export-index` (one run per sparsity and format): the
    fraction of (layer, head, query) rows whose set differs, and the mean size of the symmetric
    difference in pages (over every row, and over the rows that differ);
  - the relative output error of the records (rel_error of the per-query records of one run
    over all sparsities per format): median and mean.

  python3 tests/bench/bench_page_bf16.py --attnscope build/attnscope \\
      /work/traces/needle-8k.safetensors /work/traces/multihop-8k.safetensors

Extra arguments after `--` go to every attnscope run (e.g. `-- --layer 3`).
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile

import numpy as np


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    return p


def base_cmd(a, trace, fmt, sparsities):
    return [a.attnscope, "sparsity", trace, "--method", "page", "--sparsity",
            ",".join(f"{s}x" for s in sparsities), "--page-size", str(a.page), "--page-bounds",
            fmt, "--threads", str(a.threads), "--quiet"] + a.extra


def records(a, trace, fmt, sparsities):
    """rel_error per (layer, head, query, budget); whether the checks passed; the command."""
    cmd = base_cmd(a, trace, fmt, sparsities) + ["--json"]
    p = sh(cmd)
    rel, ok = {}, True
    for r in json.loads(p.stdout)["records"]:
        if r["record"] == "sparsity":
            rel[(r["layer"], r["head"], r["query"], round(r["budget"], 9))] = r["rel_error"]
        elif r["record"] == "check":
            ok = ok and r["pass"]
    return rel, ok, " ".join(cmd)


def read_index(path):
    """{layer: int array [H, T, K]} of an index file (safetensors, I32 or I64)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__" or not name.endswith(".idx"):
            continue
        dt = {"I32": np.int32, "I64": np.int64}[t["dtype"]]
        a0, a1 = t["data_offsets"]
        out[int(name.split(".")[1])] = np.frombuffer(data[a0:a1], dtype=dt).reshape(t["shape"])
    return out


def page_sets(idx, page):
    """Boolean [rows, pages] per layer: the pages each (head, query) row reads."""
    sets = {}
    for layer, a in idx.items():
        rows = a.reshape(-1, a.shape[-1]).astype(np.int64)
        npg = int(rows.max()) // page + 1 if rows.size else 1
        m = np.zeros((rows.shape[0], npg), dtype=bool)
        r, c = np.nonzero(rows >= 0)
        m[r, rows[r, c] // page] = True
        sets[layer] = m
    return sets


def selections(a, trace, fmt, s, tmp):
    path = os.path.join(tmp, f"{fmt}-{s}.idx.safetensors")
    cmd = base_cmd(a, trace, fmt, [s]) + ["--summary-only", "--json", "--export-index", path]
    sh(cmd)
    sets = page_sets(read_index(path), a.page)
    os.unlink(path)
    return sets, " ".join(cmd)


def compare(sa, sb):
    """(rows, rows that differ, total symmetric difference in pages, pages of sa)."""
    rows = differ = sym = sel = 0
    for layer in sa:
        x, y = sa[layer], sb[layer]
        w = max(x.shape[1], y.shape[1])
        x = np.pad(x, ((0, 0), (0, w - x.shape[1])))
        y = np.pad(y, ((0, 0), (0, w - y.shape[1])))
        d = (x ^ y).sum(axis=1)
        rows += d.size
        differ += int((d > 0).sum())
        sym += int(d.sum())
        sel += int(x.sum())
    return rows, differ, sym, sel


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--attnscope", default="build/attnscope")
    ap.add_argument("--sparsities", default="10,20,50,100")
    ap.add_argument("--format", default="bf16", help="the reduced format against exact")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the table here")
    a = ap.parse_args(argv)
    a.extra = extra
    sp = [int(s) for s in a.sparsities.split(",")]
    out = []
    print(f"| trace | sparsity | rows | pages a row reads | rows whose page set differs | mean "
          f"sym. diff. (pages, all rows / differing rows) | median rel_error exact / {a.format} | "
          f"mean rel_error exact / {a.format} |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for tr in a.traces:
            name = os.path.basename(tr).split(".")[0]
            re_e, ok_e, cmd_e = records(a, tr, "exact", sp)
            re_b, ok_b, cmd_b = records(a, tr, a.format, sp)
            print(f"<!-- {cmd_e} (checks {'pass' if ok_e else 'FAIL'}) -->", file=sys.stderr)
            print(f"<!-- {cmd_b} (checks {'pass' if ok_b else 'FAIL'}) -->", file=sys.stderr)
            for s in sp:
                se, c1 = selections(a, tr, "exact", s, tmp)
                sb, c2 = selections(a, tr, a.format, s, tmp)
                print(f"<!-- {c1} ; {c2} -->", file=sys.stderr)
                rows, differ, sym, sel = compare(se, sb)
                b = round(1.0 / s, 9)
                ve = [v for k, v in re_e.items() if k[3] == b]
                vb = [v for k, v in re_b.items() if k[3] == b]
                if len(ve) != rows or len(vb) != rows:
                    sys.exit(f"{name} {s}x: {len(ve)}/{len(vb)} records for {rows} index rows")
                row = dict(trace=name, sparsity=s, rows=rows, differ=differ,
                           frac_differ=differ / rows, mean_pages=sel / rows,
                           mean_sym_pages=sym / rows,
                           mean_sym_pages_differing=sym / differ if differ else 0.0,
                           median_rel_exact=statistics.median(ve),
                           median_rel_reduced=statistics.median(vb),
                           mean_rel_exact=statistics.fmean(ve),
                           mean_rel_reduced=statistics.fmean(vb),
                           max_abs_rel_change=max(abs(re_b[k] - re_e[k]) for k in re_e
                                                  if k[3] == b),
                           checks_pass=ok_e and ok_b)
                out.append(row)
                print(f"| {name} | {s}x | {rows} | {sel / rows:.1f} | "
                      f"{differ} ({100 * differ / rows:.2f}%) | "
                      f"{sym / rows:.3f} / {row['mean_sym_pages_differing']:.2f} | "
                      f"{row['median_rel_exact']:.4f} / {row['median_rel_reduced']:.4f} | "
                      f"{row['mean_rel_exact']:.4f} / {row['mean_rel_reduced']:.4f} |",
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(format=a.format, page=a.page, extra=a.extra, rows=out), f, indent=1)


if __name__ == "__main__":
    main()
