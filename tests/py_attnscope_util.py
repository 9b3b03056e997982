"""Shared set-up of the Python tests (tests/test_py_*.py, test_sparsity_numpy.py,
test_analysis_numpy.py): import `attnscope` from the checkout (python/) with the library of the
build under test ($AS_BUILD), a small reader of safetensors traces written by hand from the
format (NumPy has no bfloat16), and the independent NumPy float64 reference of the sparsity
analysis (softmax, top-k, the sampling statistics and epsilon of docs/theory.md), written once
here. NumPy is imported inside the functions, so a test can import this module and skip
cleanly without it. Not a test itself."""
import json
import math
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


def layer_tensors(tensors):
    """{L: {"q": .., "k": .., "v": .., "q_pos": ..}} from the names "layers.L.x" of a trace."""
    layers = {}
    for name, x in tensors.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "layers":
            layers.setdefault(int(parts[1]), {})[parts[2]] = x
    return layers


# ---- the NumPy float64 reference of the sparsity analysis ------------------------------------

def softmax(s):
    import numpy as np
    e = np.exp(s - s.max())
    return e / e.sum()


def topk_idx(x, k):
    """Indices of the k largest of x (ties: the lower index first), ascending."""
    import numpy as np
    order = np.lexsort((np.arange(len(x)), -x))
    return np.sort(order[:k])


def sampling_stats(s, V, H):
    """Population statistics of the rest R (keys not in H) for scores s and values V
    (docs/theory.md): y_j = a_j (v_j - o) over R. Returns (stats, o)."""
    import numpy as np
    a = softmax(s)
    o = a @ V
    n = len(s)
    R = np.setdiff1d(np.arange(n), H)
    y = a[R, None] * (V[R] - o)
    yb = y.mean(axis=0) if len(R) else np.zeros(V.shape[1])
    mr = a[R].sum()
    return {"n_rest": len(R), "p_heavy": a[H].sum(), "mass_rest": mr,
            "var_y": np.mean(np.sum((y - yb) ** 2, axis=1)) if len(R) else 0.0,
            "max_y": np.sqrt(np.max(np.sum((y - yb) ** 2, axis=1))) if len(R) else 0.0,
            "var_e": np.mean((a[R] - mr / len(R)) ** 2) if len(R) else 0.0,
            "dev_max": np.linalg.norm(V - o, axis=1).max()}, o


def sampling_eps(st, m, delta):
    """docs/theory.md, "Sampling: the (epsilon, delta) guarantee": Bernstein (Pinelis) and
    Chebyshev for the numerator, Bernstein and Cantelli for the denominator's lower deviation,
    for m samples drawn without replacement from the rest."""
    nr = st["n_rest"]
    if nr <= 0 or m >= nr:
        return 0.0
    fpc = (nr - m) / (nr - 1)

    def bern(b2, a, L):
        return a * L / 3 + math.sqrt(a * a * L * L / 9 + 2 * b2 * L)
    b2, aa = nr * nr * st["var_y"] / m, nr * st["max_y"] / m
    rY = min(bern(b2, aa, math.log(2 / (delta / 2))), math.sqrt(b2 * fpc / (delta / 2)))
    aD, b2D = st["mass_rest"] / m, nr * nr * st["var_e"] / m
    dD = delta / 2
    rD = min(bern(b2D, aD, math.log(1 / dD)), math.sqrt(b2D * fpc * (1 - dD) / dD))
    low = max(1 - rD, st["p_heavy"])
    eps = rY / low if low > 0 else math.inf
    return min(eps, st["dev_max"])
