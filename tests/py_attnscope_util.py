"""Shared set-up of the Python binding's tests (tests/test_py_*.py): import `attnscope` from the
checkout (python/) with the library of the build under test ($AS_BUILD), and a small reader of
the bundled safetensors traces (NumPy has no bfloat16). Not a test itself."""
import json
import os
import struct
import sys

SRC = os.environ.get("AS_SRC", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("AS_BUILD", os.path.join(SRC, "build"))
BIN = os.environ.get("AS_BIN", os.path.join(BUILD, "attnscope"))
SAMPLES = [os.path.join(SRC, "data", "samples", f) for f in
           ("smollm2-135m-code-1k.safetensors", "smollm2-135m-needle-2k.safetensors")]


def skip(why):
    print("skip: " + why)
    sys.exit(77)


def import_attnscope():
    try:
        import numpy  # noqa: F401
    except ImportError:
        skip("numpy not installed")
    lib = os.path.join(BUILD, "libattnscope.so")
    if not os.path.exists(lib):
        skip("%s not built (BUILD_SHARED_LIBS=OFF?)" % lib)
    os.environ["ATTNSCOPE_LIB"] = lib
    sys.path.insert(0, os.path.join(SRC, "python"))
    import attnscope
    return attnscope


def load_safetensors(path):
    """name -> float64 / int64 array, and the metadata dict."""
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    out = {}
    for name, e in header.items():
        b0, b1 = e["data_offsets"]
        buf = raw[base + b0: base + b1]
        dt = e["dtype"]
        if dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8", "I32": "<i4",
                                          "I64": "<i8"}[dt])
        a = a.astype(np.int64 if dt.startswith("I") else np.float64)
        out[name] = a.reshape(e["shape"])
    return out, meta


def trace_layers(path):
    """[(L, q [Hq,T,d], k [Hkv,N,d], v, q_pos [T] or None, scale)] of a trace file."""
    import math
    t, meta = load_safetensors(path)
    layers = sorted({int(k.split(".")[1]) for k in t if k.startswith("layers.")})
    out = []
    for L in layers:
        q = t["layers.%d.q" % L]
        scale = float(meta["scale"]) if "scale" in meta else 1.0 / math.sqrt(q.shape[2])
        out.append((L, q, t["layers.%d.k" % L], t["layers.%d.v" % L], t.get("layers.%d.q_pos" % L),
                    scale))
    return out
