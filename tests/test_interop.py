#!/usr/bin/env python3
"""Interop at the command line: traces written with Python's `safetensors` and `numpy`
packages are read by `attnscope info --json` (shapes, dtypes, scale, positions) and
`attnscope attend --json` (float64 outputs and log-sum-exp within 1e-12 of a NumPy float64
reference, GQA and causal positions included); files NumPy writes that attnscope refuses
(big-endian, Fortran order, complex) give exit 2 with one line naming the file.
The element-by-element bit-for-bit comparison in both directions is tests/test_interop.c.
Exit 77 (skipped) without numpy/safetensors or without the program (AS_BIN)."""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:
    print("skipped: %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop_fixtures import bf16_bits_to_f64, f64_to_bf16_bits, write_st_by_hand  # noqa: E402

BIN = os.environ.get("AS_BIN")
if not BIN or not os.access(BIN, os.X_OK):
    print("skipped: AS_BIN not set or not executable")
    sys.exit(77)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def run(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def reference(q, k, v, pos, scale):
    """Dense attention in float64: {(head, query): (output, lse, n)}."""
    hq, t, d = q.shape
    hkv, n, _ = k.shape
    out = {}
    for h in range(hq):
        kv = h // (hq // hkv)
        for i in range(t):
            vis = int(pos[i]) + 1 if pos is not None else n
            s = scale * (k[kv, :vis] @ q[h, i])
            m = s.max()
            w = np.exp(s - m)
            z = w.sum()
            out[(h, i)] = ((w / z) @ v[kv, :vis], m + np.log(z), vis)
    return out


def check_trace(path, layers, scale=None, label=""):
    """layers: {L: (q, k, v, pos or None, dtype names)} with q/k/v as float64 stored values."""
    rc, out, err = run("info", path, "--json")
    check(rc == 0, "%s: info exit %d: %s" % (label, rc, err))
    if rc:
        return
    recs = [r for r in json.loads(out)["records"] if r["record"] == "layer"]
    check(sorted(r["layer"] for r in recs) == sorted(layers), "%s: layers %s" % (label, recs))
    for r in recs:
        q, k, v, pos, (dq, dkv) = layers[r["layer"]]
        want = {"hq": q.shape[0], "hkv": k.shape[0], "t": q.shape[1], "n": k.shape[1],
                "d": q.shape[2], "dtype_q": dq, "dtype_kv": dkv, "causal": pos is not None,
                "group": q.shape[0] // k.shape[0]}
        for key, val in want.items():
            check(r[key] == val, "%s layer %d: %s = %r, want %r" % (label, r["layer"], key, r[key], val))
        sc = scale if scale is not None else 1 / np.sqrt(q.shape[2])
        check(abs(r["scale"] - sc) <= 1e-15 * sc, "%s: scale %r vs %r" % (label, r["scale"], sc))
        if pos is not None:
            check(r["pos_first"] == pos[0] and r["pos_last"] == pos[-1], "%s: positions" % label)
    rc, out, err = run("attend", path, "--json")
    check(rc == 0, "%s: attend exit %d: %s" % (label, rc, err))
    if rc:
        return
    worst, count = 0.0, 0
    refs = {L: reference(q, k, v, pos, scale if scale is not None else 1 / np.sqrt(q.shape[2]))
            for L, (q, k, v, pos, _) in layers.items()}
    for r in json.loads(out)["records"]:
        o, lse, n = refs[r["layer"]][(r["head"], r["query"])]
        check(r["n"] == n, "%s: keys seen %d vs %d" % (label, r["n"], n))
        check(r["kv_head"] == r["head"] // (layers[r["layer"]][0].shape[0] // layers[r["layer"]][1].shape[0]),
              "%s: kv head" % label)
        err_o = np.max(np.abs(np.array(r["output"]) - o) / np.maximum(1.0, np.abs(o)))
        err_l = abs(r["lse"] - lse) / max(1.0, abs(lse))
        worst = max(worst, err_o, err_l)
        count += 1
    want_count = sum(q.shape[0] * q.shape[1] for q, *_ in layers.values())
    check(count == want_count, "%s: %d attend records, want %d" % (label, count, want_count))
    check(worst <= 1e-12, "%s: largest relative difference %.3g > 1e-12" % (label, worst))
    print("%-28s %4d records, largest relative difference %.2g" % (label, count, worst))


def rand_layer(rng, hq, hkv, t, n, d):
    return rng.standard_normal((hq, t, d)), rng.standard_normal((hkv, n, d)) * 2, rng.standard_normal((hkv, n, d))


def main():
    rng = np.random.default_rng(11)
    meta = {"format": "attnscope-trace", "format_version": "1", "model": "py", "rope_applied": "true"}
    with tempfile.TemporaryDirectory() as tmp:
        # safetensors, numpy writer: f32 and f64 (GQA 8/2, causal, two layers), f16 (MHA)
        for dt, name in (("<f4", "F32"), ("<f8", "F64"), ("<f2", "F16")):
            tensors, layers = {}, {}
            for L, (hq, hkv) in ((0, (8, 2)), (5, (4, 4))):
                q, k, v = (a.astype(dt) for a in rand_layer(rng, hq, hkv, 3, 40, 16))
                pos = np.array([20, 30, 39], "<i4") if L == 0 else None
                tensors.update({"layers.%d.q" % L: q, "layers.%d.k" % L: k, "layers.%d.v" % L: v})
                if pos is not None:
                    tensors["layers.%d.q_pos" % L] = pos
                layers[L] = (q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), pos,
                             (name, name))
            tensors["lm_head.extra"] = np.arange(5, dtype="<i8")  # foreign: ignored
            path = os.path.join(tmp, "st_%s.safetensors" % name)
            save_file(tensors, path, metadata=meta)
            check_trace(path, layers, label="safetensors " + name)
        # bf16 by hand (safetensors.numpy has no bf16), metadata scale
        q, k, v = rand_layer(rng, 6, 3, 2, 33, 8)
        bits = {nm: f64_to_bf16_bits(a.ravel()).reshape(a.shape) for nm, a in (("q", q), ("k", k), ("v", v))}
        pos = np.array([10, 32], "<i8")
        path = os.path.join(tmp, "bf16.safetensors")
        write_st_by_hand(path, [("layers.0.%s" % nm, "BF16", b.shape, b.astype("<u2").tobytes())
                                for nm, b in bits.items()] + [("layers.0.q_pos", "I64", (2,), pos.tobytes())],
                         dict(meta, scale="0.3"))
        vals = {nm: bf16_bits_to_f64(b.ravel()).reshape(b.shape) for nm, b in bits.items()}
        check_trace(path, {0: (vals["q"], vals["k"], vals["v"], pos, ("BF16", "BF16"))}, scale=0.3,
                    label="safetensors BF16 (hand)")
        # .npy directory via np.save: f16 queries, f32 cache, metadata.json with a numeric scale
        d = os.path.join(tmp, "npydir")
        os.makedirs(d)
        q, k, v = rand_layer(rng, 4, 2, 2, 25, 8)
        q, k, v = q.astype("<f2"), k.astype("<f4"), v.astype("<f4")
        pos = np.array([12, 24], "<i8")
        for nm, a in (("q", q), ("k", k), ("v", v), ("q_pos", pos)):
            np.save(os.path.join(d, "layers.3.%s.npy" % nm), a)
        with open(os.path.join(d, "metadata.json"), "w") as f:
            json.dump({"format": "attnscope-trace", "scale": 0.2, "rope_applied": True}, f)
        check_trace(d, {3: (q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), pos,
                            ("F16", "F32"))}, scale=0.2, label="npy dir (np.save)")

        # arrays NumPy writes that attnscope refuses: one line naming the file, exit 2
        for label, arr, want in (("big-endian", k.astype(">f4"), "big-endian"),
                                 ("fortran", np.asfortranarray(k.astype("<f4")), "Fortran"),
                                 ("complex", k.astype("<c8"), "not supported")):
            bad = os.path.join(tmp, "bad_" + label)
            os.makedirs(bad)
            for nm, a in (("q", q), ("k", arr), ("v", v)):
                np.save(os.path.join(bad, "layers.0.%s.npy" % nm), a)
            rc, out, err = run("info", bad)
            kfile = os.path.join(bad, "layers.0.k.npy")
            check(rc == 2, "%s: exit %d" % (label, rc))
            check(err.count("\n") == 1 and kfile in err and want in err, "%s: stderr %r" % (label, err))
            check(out == "", "%s: stdout %r" % (label, out))
        # a safetensors file NumPy data cannot make valid: truncated by one byte
        path = os.path.join(tmp, "st_F32.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        trunc = os.path.join(tmp, "trunc.safetensors")
        with open(trunc, "wb") as f:
            f.write(data[:-1])
        rc, out, err = run("info", trunc)
        check(rc == 2 and err.count("\n") == 1 and trunc in err, "truncated: %d %r" % (rc, err))
        # header length past EOF
        with open(trunc, "wb") as f:
            f.write(struct.pack("<Q", len(data)) + data[8:100])
        rc, out, err = run("info", trunc)
        check(rc == 2 and "runs past the end" in err, "header past EOF: %d %r" % (rc, err))
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
