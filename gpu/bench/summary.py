#!/usr/bin/env python3
"""gpu/bench/summary.py: one line per record of `attnscope gpu bench --json` output."""
import json,sys
d=json.load(open(sys.argv[1]))
for r in d["records"]:
    print(f'{r["method"]:15s} B={r["batch"]:3d} N={r["n"]:8d} sp={r["sparsity"]:5.0f} us={r["us"]:9.1f} GB/s={r["gbps"]:7.0f} %copy={r["pct_copy"]:5.1f} %read={r.get("pct_read",0):5.1f}')
