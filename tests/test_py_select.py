#!/usr/bin/env python3
"""The Python binding selects what the program selects: on both bundled samples, for every
method (topk, sink-window, page, uniform, topk-sample) and several budgets (a sparsity, a
percentage, a fraction, a key count), `attnscope sparsity --export-index` writes, for every
layer x query head x query, exactly the keys of `attnscope.select(...)` (seeded with the same
--seed, layer, head, query) and of `attnscope.select_heads(..., mode="q")` on the whole decode
step. Sampling methods are exported by the same command (their heavy hitters and draws merged
into one row), so draws are compared too. Exit 77 (skip) without NumPy or the program."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_attnscope_util as u  # noqa: E402

attnscope = u.import_attnscope()
import numpy as np  # noqa: E402

if not os.path.exists(u.BIN):
    u.skip("program %s missing" % u.BIN)

SEED = 7
# (CLI flag, value, the same budget for the binding)
BUDGETS = [("--sparsity", "10x", "10x"), ("--budget", "2%", "2%"), ("--budget", "0.3", 0.3),
           ("--budget", "128", 128)]

failures = 0
checked = 0
tmp = tempfile.mkdtemp(prefix="as_py_select_")
for path in u.SAMPLES:
    if not os.path.exists(path):
        u.skip("sample %s missing" % path)
    layers = u.trace_layers(path)
    for method in attnscope.METHODS:
        for flag, val, bud in BUDGETS:
            out = os.path.join(tmp, "idx.safetensors")
            r = subprocess.run([u.BIN, "sparsity", path, "--method", method, flag, val, "--seed",
                                str(SEED), "--export-index", out, "--quiet", "--summary-only"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print("FAIL: export %s %s %s: rc %d %s" % (os.path.basename(path), method, val,
                                                          r.returncode, r.stderr.strip()))
                failures += 1
                continue
            idx, meta = u.load_safetensors(out)
            assert meta["method"] == method, meta
            for (L, q, k, v, pos, scale) in layers:
                hq, t, d = q.shape
                hkv = k.shape[0]
                G = hq // hkv
                rows = idx["layers.%d.idx" % L]
                for qi in range(t):
                    n = int(pos[qi]) + 1 if pos is not None else k.shape[1]
                    heads = attnscope.select_heads(q[:, qi], k[:, :n], method, bud, mode="q",
                                                   scale=scale, seed=SEED, layer=L, query=qi)
                    for h in range(hq):
                        want = rows[h, qi]
                        want = np.sort(want[want >= 0])
                        sel = attnscope.select(method, bud, q=q[h, qi], K=k[h // G, :n],
                                               scale=scale, seed=SEED, layer=L, head=h, query=qi)
                        checked += 1
                        for what, got in (("select", sel), ("select_heads", heads[h])):
                            if not np.array_equal(got.indices, want) or got.n != n:
                                failures += 1
                                if failures <= 10:
                                    print("FAIL: %s %s %s layer %d head %d query %d: %s keys "
                                          "%s..., program %d keys %s..." % (
                                              os.path.basename(path), method, val, L, h, qi, what,
                                              len(got.indices), got.indices[:6], len(want),
                                              want[:6]))
                        if method in ("uniform", "topk-sample"):
                            assert sel.sampled and len(sel.samp) > 0 or sel.n_rest == 0
                        else:
                            assert not sel.sampled and len(sel.samp) == 0
            os.unlink(out)

print("%d selections compared (x2: select and select_heads), %d mismatches" % (checked, failures))
# a different seed must change the draws (the comparison above is not vacuous for sampling)
L, q, k, v, pos, scale = u.trace_layers(u.SAMPLES[0])[0]
a = attnscope.select("uniform", "10x", q=q[0, 0], K=k[0, :pos[0] + 1], seed=SEED)
b = attnscope.select("uniform", "10x", q=q[0, 0], K=k[0, :pos[0] + 1], seed=SEED + 1)
if np.array_equal(a.samp, b.samp):
    print("FAIL: seeds 7 and 8 draw the same uniform sample")
    failures += 1
sys.exit(1 if failures else 0)
