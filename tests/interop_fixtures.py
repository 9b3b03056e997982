#!/usr/bin/env python3
"""Interop fixtures for tests/test_interop.c (bit-for-bit, both directions).

  interop_fixtures.py write DIR   Python -> C: write traces and tensors with the `safetensors`
                                  and `numpy` packages (bf16 through torch when importable, and
                                  always also laid out by hand), plus the float64 value NumPy
                                  gives every element (DIR/exp/*.f64) and DIR/manifest.json.
  interop_fixtures.py check DIR   C -> Python: read what the C test wrote (DIR/manifest_c.json)
                                  with safetensors/numpy and compare every element, bit for bit,
                                  with NumPy's own conversion of the C side's float64 sources.

Exit 77 when numpy or safetensors cannot be imported (the C test then skips), 1 on a mismatch.
"""
import json
import math
import os
import struct
import sys

try:
    import numpy as np
    import safetensors
    from safetensors import safe_open
    from safetensors.numpy import save_file
except ImportError as e:  # pragma: no cover - depends on the machine
    print("interop: skipped (%s)" % e)
    sys.exit(77)

try:
    import torch
    from safetensors.torch import save_file as torch_save_file
except Exception:  # torch is optional: bf16 is then written by hand only
    torch = None

ST_NAME = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
           np.dtype("<i4"): "I32", np.dtype("<i8"): "I64"}


# ---------------------------------------------------------------- bfloat16 without torch
def bf16_bits_to_f64(bits):
    """uint16 bfloat16 bit patterns -> float64 (exact: bf16 is the top half of a float32)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def f64_to_bf16_bits(x):
    """Correctly rounded (nearest, ties to even) float64 -> bfloat16, computed with frexp and
    Python's exact round-half-even on the scaled significand; independent of the C code."""
    out = np.empty(len(x), np.uint16)
    for i, v in enumerate(np.asarray(x, np.float64).tolist()):
        sign = 0x8000 if math.copysign(1.0, v) < 0 else 0
        a = abs(v)
        if math.isnan(a):
            raise ValueError("NaN has no unique bf16 encoding here")
        if math.isinf(a):
            out[i] = sign | 0x7F80
            continue
        m, e = math.frexp(a)  # a = m * 2^e, 0.5 <= m < 1
        if a == 0 or e - 1 < -126:  # bf16 subnormal range: quantum 2^-133
            r = round(a * 2.0 ** 133) * 2.0 ** -133
        else:
            r = round(m * 256.0) * 2.0 ** (e - 8)  # 8 significant bits
        if r >= 2.0 ** 128:
            out[i] = sign | 0x7F80
            continue
        u = struct.unpack("<I", struct.pack("<f", r))[0]
        assert u & 0xFFFF == 0, (v, r)
        out[i] = sign | (u >> 16)
    return out


def write_st_by_hand(path, tensors, metadata=None):
    """tensors: list of (name, dtype name, shape, raw bytes); minimal header padded to 8."""
    hdr, off = {}, 0
    if metadata:
        hdr["__metadata__"] = metadata
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))


# ---------------------------------------------------------------- Python -> C
class Manifest:
    def __init__(self, root):
        self.root, self.entries = root, []
        os.makedirs(os.path.join(root, "exp"), exist_ok=True)

    def add(self, file, fmt, tensor, dtype, shape, values_f64, trace=False):
        exp = "exp/%d.f64" % len(self.entries)
        np.ascontiguousarray(values_f64, "<f8").tofile(os.path.join(self.root, exp))
        self.entries.append({"file": file, "format": fmt, "tensor": tensor, "dtype": dtype,
                             "shape": [int(s) for s in shape], "expected": exp, "trace": trace})

    def save(self):
        with open(os.path.join(self.root, "manifest.json"), "w") as f:
            json.dump({"torch": torch is not None, "numpy": np.__version__,
                       "safetensors": safetensors.__version__, "entries": self.entries}, f)


def all_f16_patterns():
    b = np.concatenate([np.arange(0, 0x7C01), np.arange(0x8000, 0xFC01)]).astype(np.uint16)
    return b.view(np.float16)


def all_bf16_patterns():
    return np.concatenate([np.arange(0, 0x7F81), np.arange(0x8000, 0xFF81)]).astype(np.uint16)


def random_nonnan_bits(rng, n, width):
    if width == 32:
        u = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
        v = u.view(np.float32)
    else:
        u = rng.integers(0, 2**63, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << 63)
        v = u.view(np.float64)
    return v[~np.isnan(v)]


def trace_arrays(rng, hq, hkv, t, n, d):
    q = rng.standard_normal((hq, t, d))
    k = rng.standard_normal((hkv, n, d)) * 3
    v = rng.standard_normal((hkv, n, d))
    return q, k, v


def write(root):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(20240531)
    man = Manifest(root)
    meta = {"format": "attnscope-trace", "format_version": "1", "model": "interop",
            "rope_applied": "true"}

    # 1. every non-NaN f16 pattern, random f32/f64 bit patterns, integer extremes (numpy writer)
    f16 = all_f16_patterns()
    f32 = random_nonnan_bits(rng, 200000, 32)
    f64 = random_nonnan_bits(rng, 200000, 64)
    i32 = np.concatenate([np.array([0, -1, 1, 2**31 - 1, -(2**31)], "<i4"),
                          rng.integers(-(2**31), 2**31, 1000, dtype=np.int64).astype("<i4")])
    i64 = np.concatenate([np.array([0, -1, 2**63 - 1, -(2**63), 2**53 + 1, 2**62 + 3], "<i8"),
                          rng.integers(-(2**63), 2**63 - 1, 1000, dtype=np.int64)])
    arrays = {"all.f16": f16.reshape(2, -1), "rand.f32": f32, "rand.f64": f64,
              "ints.i32": i32, "ints.i64": i64.reshape(-1, 1), "empty.f32": np.zeros((0, 3), "<f4"),
              "scalar.f64": np.array(2.5)}
    save_file(arrays,  # all C-contiguous already (np.ascontiguousarray would make 0-d 1-d)
              os.path.join(root, "np_values.safetensors"), metadata={"note": "values"})
    for k, v in arrays.items():
        with np.errstate(all="ignore"):
            man.add("np_values.safetensors", "safetensors", k, ST_NAME[v.dtype], v.shape,
                    v.astype(np.float64).ravel())

    # 2. every non-NaN bf16 pattern: by hand always, through torch when it is there
    bf = all_bf16_patterns()
    write_st_by_hand(os.path.join(root, "hand_bf16.safetensors"),
                     [("all.bf16", "BF16", (len(bf),), bf.astype("<u2").tobytes()),
                      ("x.f32", "F32", (2,), np.array([1.5, -2], "<f4").tobytes())],
                     {"made": "by hand"})
    man.add("hand_bf16.safetensors", "safetensors", "all.bf16", "BF16", (len(bf),), bf16_bits_to_f64(bf))
    man.add("hand_bf16.safetensors", "safetensors", "x.f32", "F32", (2,), np.array([1.5, -2.0]))
    if torch is not None:
        tb = torch.from_numpy(bf.astype(np.int16)).view(torch.bfloat16).reshape(2, -1).contiguous()
        torch_save_file({"all.bf16": tb}, os.path.join(root, "torch_bf16.safetensors"))
        man.add("torch_bf16.safetensors", "safetensors", "all.bf16", "BF16", tuple(tb.shape),
                tb.to(torch.float64).numpy().ravel())

    # 3. traces (safetensors): one per dtype, GQA, positions I32 / I64, metadata scale
    hq, hkv, t, n, d = 8, 2, 3, 17, 16
    for dt in ("<f8", "<f4", "<f2", "bf16"):
        q, k, v = trace_arrays(rng, hq, hkv, t, n, d)
        pos = np.array([n - 3, n - 2, n - 1], "<i4" if dt != "<f2" else "<i8")
        fname = "trace_%s.safetensors" % ("bf16" if dt == "bf16" else dt[1:])
        if dt == "bf16":
            bits = {nm: f64_to_bf16_bits(a.ravel()).reshape(a.shape) for nm, a in (("q", q), ("k", k), ("v", v))}
            if torch is not None:
                ts = {"layers.0.%s" % nm: torch.from_numpy(b.astype(np.int16)).view(torch.bfloat16)
                      for nm, b in bits.items()}
                ts["layers.0.q_pos"] = torch.from_numpy(pos)
                torch_save_file(ts, os.path.join(root, fname), metadata=dict(meta, scale="0.25"))
            else:
                write_st_by_hand(os.path.join(root, fname),
                                 [("layers.0.%s" % nm, "BF16", b.shape, b.astype("<u2").tobytes())
                                  for nm, b in bits.items()] +
                                 [("layers.0.q_pos", "I32", pos.shape, pos.tobytes())],
                                 dict(meta, scale="0.25"))
            vals = {nm: bf16_bits_to_f64(b.ravel()) for nm, b in bits.items()}
            stn = "BF16"
        else:
            arrs = {nm: a.astype(dt) for nm, a in (("q", q), ("k", k), ("v", v))}
            save_file({"layers.0.%s" % nm: a for nm, a in arrs.items()} | {"layers.0.q_pos": pos},
                      os.path.join(root, fname), metadata=dict(meta, scale="0.25"))
            vals = {nm: a.astype(np.float64).ravel() for nm, a in arrs.items()}
            stn = ST_NAME[np.dtype(dt)]
        for nm, shape in (("q", (hq, t, d)), ("k", (hkv, n, d)), ("v", (hkv, n, d))):
            man.add(fname, "safetensors", "layers.0.%s" % nm, stn, shape, vals[nm], trace=True)
        man.add(fname, "safetensors", "layers.0.q_pos", ST_NAME[pos.dtype], pos.shape,
                pos.astype(np.float64), trace=True)

    # 4. .npy directory traces: np.save (v1), write_array v2 / v3, mixed dtypes, two layers
    from numpy.lib import format as npf
    for ver in ((1, 0), (2, 0), (3, 0)):
        dname = "npy_v%d" % ver[0]
        os.makedirs(os.path.join(root, dname), exist_ok=True)
        for L, (dq, dkv) in enumerate((("<f2", "<f4"), ("<f8", "<f2"))):
            q, k, v = trace_arrays(rng, 4, 4 if L else 1, 2, 9, 8)
            arrs = {"q": q.astype(dq), "k": k.astype(dkv), "v": v.astype(dkv),
                    "q_pos": np.array([5, 8], "<i8")}
            for nm, a in arrs.items():
                p = os.path.join(root, dname, "layers.%d.%s.npy" % (L, nm))
                if ver == (1, 0):
                    np.save(p, a)
                else:
                    with open(p, "wb") as f:
                        npf.write_array(f, a, version=ver)
                man.add(dname, "npy-dir", "layers.%d.%s" % (L, nm), ST_NAME[a.dtype], a.shape,
                        a.astype(np.float64).ravel(), trace=True)
        with open(os.path.join(root, dname, "metadata.json"), "w") as f:
            json.dump({"format": "attnscope-trace", "model": "npy", "scale": 0.125,
                       "rope_applied": False}, f)
    man.save()
    return 0


# ---------------------------------------------------------------- C -> Python
def expected_bits(src, dtype):
    with np.errstate(all="ignore"):
        if dtype == "F64":
            return src.view(np.uint64)
        if dtype == "F32":
            return src.astype("<f4").view(np.uint32)
        if dtype == "F16":
            return src.astype("<f2").view(np.uint16)  # NumPy rounds float64 -> half directly
        if dtype == "BF16":
            return f64_to_bf16_bits(src)
        if dtype == "I32":
            assert np.all(src == np.round(src))
            return src.astype("<i4").view(np.uint32)
        if dtype == "I64":
            assert np.all(src == np.round(src))
            return src.astype("<i8").view(np.uint64)
    raise ValueError(dtype)


def load_safetensors(path, name, dtype):
    """The tensor's raw bits as an unsigned integer array, read by the safetensors package."""
    if dtype == "BF16":
        if torch is not None:
            with safe_open(path, framework="pt") as f:
                return f.get_tensor(name).view(torch.int16).numpy().view(np.uint16)
        with open(path, "rb") as f:  # no torch: locate it through the header ourselves
            buf = f.read()
        hl = struct.unpack("<Q", buf[:8])[0]
        info = json.loads(buf[8:8 + hl])[name]
        b, e = info["data_offsets"]
        return np.frombuffer(buf[8 + hl + b:8 + hl + e], "<u2")
    with safe_open(path, framework="numpy") as f:
        a = f.get_tensor(name)
    return a.view({8: np.uint64, 4: np.uint32, 2: np.uint16}[a.itemsize])


def check(root):
    with open(os.path.join(root, "manifest_c.json")) as f:
        man = json.load(f)
    bad = 0
    for e in man["entries"]:
        path = os.path.join(root, e["file"])
        src = np.fromfile(os.path.join(root, e["source"]), "<f8")
        want = expected_bits(src, e["dtype"])
        if e["format"] == "safetensors":
            got = load_safetensors(path, e["tensor"], e["dtype"])
            if e["dtype"] != "BF16":
                with safe_open(path, framework="numpy") as f:
                    shape = list(f.get_tensor(e["tensor"]).shape)
            else:
                shape = e["shape"] if torch is None else list(load_shape_pt(path, e["tensor"]))
        else:
            a = np.load(path)
            if a.dtype.str != {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I32": "<i4",
                               "I64": "<i8"}[e["dtype"]] or np.isfortran(a) and a.ndim > 1:
                print("%s: dtype %s / order unexpected" % (path, a.dtype.str))
                bad += 1
                continue
            shape = list(a.shape)
            got = a.view({8: np.uint64, 4: np.uint32, 2: np.uint16}[a.itemsize])
        if shape != e["shape"]:
            print("%s %s: shape %s, C wrote %s" % (e["file"], e["tensor"], shape, e["shape"]))
            bad += 1
            continue
        got = np.asarray(got).ravel()
        if got.shape != want.shape or not np.array_equal(got, want):
            idx = int(np.argmax(got != want)) if got.shape == want.shape else -1
            print("%s %s (%s): bits differ at %d: python %s, C %s (source %r)" % (
                e["file"], e["tensor"], e["dtype"], idx,
                hex(int(want[idx])) if idx >= 0 else "?", hex(int(got[idx])) if idx >= 0 else "?",
                float(src[idx]) if idx >= 0 else None))
            bad += 1
    for fname, want in man.get("metadata", {}).items():
        with safe_open(os.path.join(root, fname), framework="numpy") as f:
            got = f.metadata()
        if got != want:
            print("%s: metadata %r, C wrote %r" % (fname, got, want))
            bad += 1
    print("interop check: %d entries, %d bad" % (len(man["entries"]), bad))
    return 1 if bad else 0


def load_shape_pt(path, name):
    with safe_open(path, framework="pt") as f:
        return f.get_slice(name).get_shape()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2]))
