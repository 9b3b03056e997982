#!/usr/bin/env python3
"""gpu/bench/figures.py: the GPU figures of an attnscope report as standalone SVG files.

`attnscope report TRACE --gpu-json gpu/bench/results/DEV-bench.json -o R.html` draws the speedup
and shape figures (PLplot, inline SVG); this copies them out for docs/benchmarks.md:
  python3 gpu/bench/figures.py R.html docs/img h200   -> docs/img/gpu-speedup-h200.svg, ...
"""
import os
import re
import sys

IDS = ("gpu-speedup", "gpu-shapes")


def main(html_path, out_dir, tag):
    with open(html_path, encoding="utf-8") as f:
        html = f.read()
    wrote = 0
    for fid in IDS:
        m = re.search(r'<figure data-plot="%s">\s*(<svg.*?</svg>)' % re.escape(fid), html, re.S)
        if not m:
            print(f"{html_path}: no figure {fid} (was the report run with --gpu-json?)",
                  file=sys.stderr)
            continue
        svg = m.group(1)
        if "xmlns=" not in svg[:400]:
            svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
        path = os.path.join(out_dir, f"{fid}-{tag}.svg")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(svg + "\n")
        os.replace(path + ".tmp", path)
        print(path)
        wrote += 1
    return 0 if wrote == len(IDS) else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
