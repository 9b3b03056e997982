#!/usr/bin/env python3
"""docs/python.md's examples run: every ```python block of the page is executed (in a fresh
namespace, with the checkout's `attnscope`), and every test_* function it defines is called,
as pytest would. Also: the float32 stand-in kernel of the pytest example is within the 1e-6 of
o_S the page states, and a kernel that forgets to normalise is caught. Exit 77 (skip) without NumPy."""
import os
import re
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402

A = u.import_attnscope()
import numpy as np  # noqa: E402

with open(os.path.join(u.SRC, "docs", "python.md")) as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
fails = 0
if len(blocks) < 2:
    print("FAIL: expected the page's two examples, found %d python blocks" % len(blocks))
    fails += 1
spaces = []
for i, code in enumerate(blocks):
    ns = {"__name__": "docs_python_md_%d" % i}
    try:
        exec(compile(code, "docs/python.md block %d" % i, "exec"), ns)
        for name, fn in list(ns.items()):
            if name.startswith("test_") and callable(fn):
                fn()
                print("ran %s" % name)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("FAIL: docs/python.md block %d" % i)
        fails += 1
    spaces.append(ns)
# the stand-in kernel: within 1e-6 of o_S (relative to ||o||); dropping a key is caught
ns = spaces[0] if spaces else {}
if "my_kernel" in ns:
    rng = np.random.default_rng(0)
    q, K, V = rng.normal(size=64), rng.normal(size=(4096, 64)), rng.normal(size=(4096, 64))
    sel = A.select("topk", "20x", q=q, K=K)
    r = A.check_subset(q, K, V, sel.indices)
    o_hat = ns["my_kernel"](q, K, V, sel.indices)
    dev = np.linalg.norm(o_hat - r["o_S"]) / r["norm_o"]
    print("stand-in kernel: ||o_hat - o_S|| / ||o|| = %.3g" % dev)
    if not dev <= 1e-6:
        print("FAIL: the stand-in kernel is %.3g from o_S (the page says within 1e-6)" % dev)
        fails += 1
    # a kernel that forgets to normalise its weights (sum of 205 weights in (0, 1])
    s = (K[sel.indices] @ q / 8).astype(np.float32)
    bad = np.exp(s - s.max()) @ V[sel.indices].astype(np.float32)
    rb = A.check_subset(q, K, V, sel.indices, o_hat=bad, out_tol=1e-4)
    if not rb["violated"]:
        print("FAIL: an unnormalised kernel passes (abs_error %g, bound %g)" %
              (rb["abs_error"], rb["bound"]))
        fails += 1
sys.exit(1 if fails else 0)
