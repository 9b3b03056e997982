#!/usr/bin/env python3
"""Write the fuzzers' seed corpora (small valid files) into tests/fuzz/seeds/.

Run once with numpy (safetensors is not needed: files are laid out by hand, as the format
says); the output is committed, so the fuzz build needs no Python."""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def st_bytes(tensors, meta=None):
    """tensors: list of (name, dtype string, shape, raw bytes)."""
    hdr, off, blobs = {}, 0, []
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def bf16(a):
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def npy_bytes(a, version):
    import io

    from numpy.lib import format as F

    b = io.BytesIO()
    F.write_array(b, a, version=version)
    return b.getvalue()


def main():
    rng = np.random.default_rng(7)
    out = {k: os.path.join(HERE, "seeds", k) for k in ("safetensors", "npy", "trace")}
    for d in out.values():
        os.makedirs(d, exist_ok=True)
    meta = {"format": "attnscope-trace", "format_version": "1", "model": "seed",
            "rope_applied": "true"}
    traces = {}
    for dt, conv in (("F32", lambda a: a.astype("<f4").tobytes()),
                     ("F16", lambda a: a.astype("<f2").tobytes()),
                     ("F64", lambda a: a.astype("<f8").tobytes()),
                     ("BF16", bf16)):
        hq, hkv, t, n, d = 4, 2, 2, 3, 2
        q, k, v = (rng.standard_normal(s) for s in ((hq, t, d), (hkv, n, d), (hkv, n, d)))
        ts = [("layers.0.q", dt, q.shape, conv(q)), ("layers.0.k", dt, k.shape, conv(k)),
              ("layers.0.v", dt, v.shape, conv(v)),
              ("layers.0.q_pos", "I32", (t,), np.array([1, 2], "<i4").tobytes())]
        traces["trace_%s" % dt.lower()] = st_bytes(ts, dict(meta, scale="0.5"))
    q, k = rng.standard_normal((1, 1, 1)), rng.standard_normal((1, 2, 1))
    traces["two_layers_i64"] = st_bytes([
        ("layers.0.q", "F32", (1, 1, 1), q.astype("<f4").tobytes()),
        ("layers.0.k", "F32", (1, 2, 1), k.astype("<f4").tobytes()),
        ("layers.0.v", "F32", (1, 2, 1), k.astype("<f4").tobytes()),
        ("layers.7.q", "F16", (1, 1, 1), q.astype("<f2").tobytes()),
        ("layers.7.k", "F16", (1, 2, 1), k.astype("<f2").tobytes()),
        ("layers.7.v", "F16", (1, 2, 1), k.astype("<f2").tobytes()),
        ("layers.7.q_pos", "I64", (1,), np.array([0], "<i8").tobytes()),
        ("other", "I32", (0,), b"")], {"model": "x"})
    traces["empty_header"] = st_bytes([])
    for name, b in traces.items():
        for d in ("safetensors", "trace"):
            with open(os.path.join(out[d], name + ".safetensors"), "wb") as f:
                f.write(b)
    arrays = {"f8": rng.standard_normal((2, 3)), "f4": rng.standard_normal((2, 2, 2)).astype("<f4"),
              "f2": rng.standard_normal((3,)).astype("<f2"), "i4": np.arange(4, dtype="<i4"),
              "i8": np.arange(2, dtype="<i8").reshape(1, 2, 1), "scalar": np.float32(1.5),
              "empty": np.zeros((0, 3), "<f4")}
    for name, a in arrays.items():
        for ver in ((1, 0), (2, 0), (3, 0)):
            if ver != (1, 0) and name not in ("f4", "i4"):
                continue
            with open(os.path.join(out["npy"], "%s_v%d.npy" % (name, ver[0])), "wb") as f:
                f.write(npy_bytes(np.asarray(a), ver))
    return 0


if __name__ == "__main__":
    sys.exit(main())
