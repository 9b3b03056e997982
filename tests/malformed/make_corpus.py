#!/usr/bin/env python3
"""Write the malformed-input corpus: traces, .npy directories and index files that are
truncated, whose header lies (length, JSON, dtype, shape, offsets), that hold NaN/Inf,
extreme finite values or scores that overflow, tiny valid traces (N < 4), and the valid
traces the bad index files and bad command lines are run against.

Pure Python (struct + json): no NumPy, so the corpus exists wherever Python does.

usage: make_corpus.py DIR      writes DIR/<case> files and DIR/manifest.json

The manifest lists every case: {"name", "path", "expect"} where expect is
  "bad"     every command must refuse it (exit 2)
  "valid"   every command must succeed (exit 0), except what "except" lists
  "extreme" / "overflow": cases whose fix is issue 15 items 1 and 9 (exit 2, or 0 where the
            command can answer; never a signal, never 1)
and "except": {command: allowed exit codes} for the commands that differ.
"""
import json
import math
import os
import struct
import sys

F64, F32, F16, BF16, I32, I64 = "F64", "F32", "F16", "BF16", "I32", "I64"
SIZE = {F64: 8, F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8}


def pack(dtype, values):
    if dtype == F64:
        return struct.pack(f"<{len(values)}d", *values)
    if dtype == F32:
        return struct.pack(f"<{len(values)}f", *values)
    if dtype == F16:
        return struct.pack(f"<{len(values)}e", *values)
    if dtype == BF16:  # the top 16 bits of the f32 (round toward zero: fine for a corpus)
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]
                        for v in values)
    if dtype == I32:
        return struct.pack(f"<{len(values)}i", *values)
    if dtype == I64:
        return struct.pack(f"<{len(values)}q", *values)
    raise ValueError(dtype)


class Rng:
    """A small LCG: reproducible values without NumPy."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFFFFFFFFFF

    def uniform(self):
        self.s = (6364136223846793005 * self.s + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return ((self.s >> 11) + 0.5) / float(1 << 53)

    def normal(self):
        u, v = self.uniform(), self.uniform()
        return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * v)

    def normals(self, n, scale=1.0):
        return [scale * self.normal() for _ in range(n)]


def safetensors_bytes(tensors, metadata=None, header_hook=None, pad=True):
    """tensors: list of (name, dtype, shape, data bytes). header_hook(dict) may edit the
    header before it is written (to make it lie)."""
    header, off, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    if header_hook:
        header_hook(header)
    h = header if isinstance(header, (bytes, str)) else json.dumps(header, separators=(",", ":"))
    h = h.encode() if isinstance(h, str) else h
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def trace_tensors(rng, layers=(0,), hq=2, hkv=1, t=2, n=16, d=8, dtype=F32, qpos=None,
                  qscale=1.0, kscale=1.0, vscale=1.0, qv=None, kv=None, vv=None):
    out = []
    for L in layers:
        q = qv if qv is not None else rng.normals(hq * t * d, qscale)
        k = kv if kv is not None else rng.normals(hkv * n * d, kscale)
        v = vv if vv is not None else rng.normals(hkv * n * d, vscale)
        out.append((f"layers.{L}.q", dtype, (hq, t, d), pack(dtype, q)))
        out.append((f"layers.{L}.k", dtype, (hkv, n, d), pack(dtype, k)))
        out.append((f"layers.{L}.v", dtype, (hkv, n, d), pack(dtype, v)))
        if qpos is not None:
            out.append((f"layers.{L}.q_pos", I64, (t,), pack(I64, qpos)))
    return out


META = {"format": "attnscope-trace", "format_version": "1", "model": "corpus"}


def npy_bytes(descr, shape, data, fortran=False, version=1, header_override=None):
    h = header_override or ("{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }"
                            % (descr, "True" if fortran else "False",
                               "".join(f"{s}," for s in shape)))
    h = h.encode()
    pre = 10 if version == 1 else 12
    h += b" " * (-(pre + len(h) + 1) % 64) + b"\n"
    lenf = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + lenf + h + data


def main(root):
    os.makedirs(root, exist_ok=True)
    cases = []

    def add(name, data, expect, note, exc=None):
        path = os.path.join(root, name)
        if isinstance(data, dict):  # a directory of files
            os.makedirs(path, exist_ok=True)
            for fn, b in data.items():
                with open(os.path.join(path, fn), "wb") as f:
                    f.write(b)
        else:
            with open(path, "wb") as f:
                f.write(data)
        cases.append({"name": name, "path": path, "expect": expect, "note": note,
                      "except": exc or {}})

    rng = Rng(15)
    good = trace_tensors(rng)
    good_bytes = safetensors_bytes(good, META)

    # ---- valid traces (exit 0 everywhere) ----------------------------------------------
    add("valid_f32.safetensors", good_bytes, "valid", "a small valid F32 trace")
    add("valid_f64_qpos.safetensors",
        safetensors_bytes(trace_tensors(Rng(1), dtype=F64, t=3, qpos=[5, 10, 15]), META),
        "valid", "F64 with query positions")
    add("valid_f16_gqa.safetensors",
        safetensors_bytes(trace_tensors(Rng(2), dtype=F16, hq=4, hkv=2), META), "valid",
        "F16, grouped-query attention")
    add("valid_bf16_2layers.safetensors",
        safetensors_bytes(trace_tensors(Rng(3), dtype=BF16, layers=(0, 7)), META), "valid",
        "BF16, two layers (0 and 7)")
    add("valid_zeros.safetensors",
        safetensors_bytes(trace_tensors(Rng(4), qscale=0, kscale=0, vscale=0), META), "valid",
        "all zeros: uniform attention, zero outputs")
    for n in (1, 2, 3):
        add(f"valid_small_n{n}.safetensors",
            safetensors_bytes(trace_tensors(Rng(10 + n), n=n, t=1), META), "valid",
            f"N = {n} keys: analyses that need more keys are left out, not failed",
            {"spectrum": [2]})
    add("valid_small_qpos.safetensors",
        safetensors_bytes(trace_tensors(Rng(20), n=16, t=2, qpos=[0, 2]), META), "valid",
        "queries that see 1 and 3 keys", {"spectrum": [2]})
    add("valid_npydir", {
        "layers.0.q.npy": npy_bytes("<f4", (2, 2, 8), pack(F32, Rng(5).normals(32))),
        "layers.0.k.npy": npy_bytes("<f4", (1, 16, 8), pack(F32, Rng(6).normals(128))),
        "layers.0.v.npy": npy_bytes("<f4", (1, 16, 8), pack(F32, Rng(7).normals(128))),
        "metadata.json": json.dumps({"model": "corpus", "rope_applied": False}).encode(),
    }, "valid", "a valid .npy directory")
    add("valid_large_scores.safetensors",
        safetensors_bytes(trace_tensors(Rng(8), dtype=F64, qscale=30, kscale=30), META),
        "valid", "scores of a few hundred: nearly one-hot attention")

    # ---- truncated / header lies (exit 2) ------------------------------------------------
    add("empty.safetensors", b"", "bad", "0 bytes")
    add("seven_bytes.safetensors", b"\x10\x00\x00\x00\x00\x00\x00", "bad", "shorter than the length field")
    add("truncated_data.safetensors", good_bytes[:-5], "bad", "data cut short by 5 bytes")
    add("truncated_header.safetensors", good_bytes[:40], "bad", "cut inside the JSON header")
    add("trailing_bytes.safetensors", good_bytes + b"\0" * 8, "bad", "8 bytes after the last tensor")
    add("header_len_huge.safetensors", struct.pack("<Q", 1 << 62) + good_bytes[8:], "bad",
        "header length 2^62")
    add("header_len_past_end.safetensors", struct.pack("<Q", len(good_bytes)) + good_bytes[8:],
        "bad", "header length larger than the file")
    add("header_not_json.safetensors", struct.pack("<Q", 16) + b"not json!       ", "bad",
        "header is not JSON")
    add("header_array.safetensors", struct.pack("<Q", 8) + b"[1,2,3] ", "bad", "header is an array")
    add("header_nul.safetensors", struct.pack("<Q", 8) + b'{"a\x00":1}', "bad", "raw NUL in the header")

    def raw_header(h):
        hb = h.encode()
        hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb

    qd = good[0][3]
    add("duplicate_key.safetensors",
        raw_header('{"layers.0.q":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                   '"layers.0.q":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}') + qd[:4],
        "bad", "a tensor named twice")

    def hook_set(name, field, value):
        def h(hdr):
            hdr[name][field] = value
        return h

    add("dtype_lie.safetensors", safetensors_bytes(good, META, hook_set("layers.0.k", "dtype", F64)),
        "bad", "k says F64, holds F32 bytes")
    add("dtype_unknown.safetensors", safetensors_bytes(good, META, hook_set("layers.0.k", "dtype", "F8_E4M3")),
        "bad", "an unknown dtype")
    add("dtype_int_q.safetensors",
        safetensors_bytes([("layers.0.q", I32, (2, 2, 8), pack(I32, list(range(32))))] + good[1:], META),
        "bad", "integer queries")
    add("shape_lie.safetensors", safetensors_bytes(good, META, hook_set("layers.0.v", "shape", [1, 8, 8])),
        "bad", "v's shape does not match its bytes")
    add("shape_2p61.safetensors",
        safetensors_bytes(good, META, hook_set("layers.0.k", "shape", [1, 1 << 61, 8])), "bad",
        "a shape entry of 2^61")
    add("shape_negative.safetensors",
        safetensors_bytes(good, META, hook_set("layers.0.k", "shape", [1, -16, 8])), "bad",
        "a negative shape entry")
    add("shape_float.safetensors",
        safetensors_bytes(good, META, hook_set("layers.0.k", "shape", [1, 16.5, 8])), "bad",
        "a fractional shape entry")
    add("shape_rank.safetensors",
        safetensors_bytes([("layers.0.q", F32, (4, 8), good[0][3])] + good[1:], META), "bad",
        "q of rank 2")
    add("offsets_overlap.safetensors",
        safetensors_bytes(good, META, hook_set("layers.0.k", "data_offsets", [0, 512])), "bad",
        "k overlaps q")
    add("offsets_reversed.safetensors",
        safetensors_bytes(good, META, hook_set("layers.0.q", "data_offsets", [256, 0])), "bad",
        "begin after end")
    add("d_mismatch.safetensors",
        safetensors_bytes(trace_tensors(Rng(9), d=8)[:1] + trace_tensors(Rng(9), d=4)[1:], META),
        "bad", "q has d = 8, k and v d = 4")
    add("hq_not_multiple.safetensors",
        safetensors_bytes(trace_tensors(Rng(9), hq=3, hkv=2), META), "bad", "Hq = 3, Hkv = 2")
    add("v_shape_differs.safetensors",
        safetensors_bytes(good[:2] + [("layers.0.v", F32, (1, 8, 8), pack(F32, [0.0] * 64))], META),
        "bad", "v has 8 keys, k 16")
    add("missing_v.safetensors", safetensors_bytes(good[:2], META), "bad", "layer 0 without v")
    add("no_layers.safetensors", safetensors_bytes([("other", F32, (2,), pack(F32, [1, 2]))], META),
        "bad", "no trace tensors")
    add("layer_leading_zero.safetensors",
        safetensors_bytes([(n.replace("layers.0.", "layers.00."), dt, s, b) for n, dt, s, b in good], META),
        "bad", "layer index 00")
    add("qpos_out_of_range.safetensors",
        safetensors_bytes(trace_tensors(Rng(9), qpos=[3, 16]), META), "bad", "q_pos = N")
    add("qpos_negative.safetensors",
        safetensors_bytes(trace_tensors(Rng(9), qpos=[-1, 3]), META), "bad", "q_pos = -1")
    add("qpos_float.safetensors",
        safetensors_bytes(trace_tensors(Rng(9))
                          + [("layers.0.q_pos", F32, (2,), pack(F32, [1.0, 2.0]))], META),
        "bad", "float positions")
    for key, val in (("scale", "0"), ("scale", "-1"), ("scale", "nan"), ("scale", "abc"),
                     ("format", "something-else")):
        add(f"meta_{key}_{val.replace('-', 'm')}.safetensors",
            safetensors_bytes(good, dict(META, **{key: val})), "bad", f"metadata {key} = '{val}'")
    add("meta_not_string.safetensors",
        safetensors_bytes(good, META, lambda h: h["__metadata__"].update(model=5)), "bad",
        "a metadata value that is not a string")

    # ---- NaN / Inf ---------------------------------------------------------------------
    for where, idx in (("q", 0), ("k", 1), ("v", 2)):
        for bad, label in ((float("nan"), "nan"), (float("inf"), "inf")):
            vals = list(struct.unpack(f"<{len(good[idx][3]) // 4}f", good[idx][3]))
            vals[5] = bad
            t = list(good)
            t[idx] = (t[idx][0], F32, t[idx][2], pack(F32, vals))
            add(f"{label}_in_{where}.safetensors", safetensors_bytes(t, META), "bad",
                f"{label} in {where}")
    f16_over = trace_tensors(Rng(9), dtype=F16, qv=[float("inf")] + [1.0] * 31)
    add("f16_inf_q.safetensors", safetensors_bytes(f16_over, META), "bad", "F16 inf in q")

    # ---- extreme finite values, overflowing scores (issue 15 items 1 and 9) ----------------
    add("extreme_v_1e200.safetensors",
        safetensors_bytes(trace_tensors(Rng(30), dtype=F64, vscale=1e200), META), "extreme",
        "V around 1e200 (finite)")
    add("extreme_v_1em300.safetensors",
        safetensors_bytes(trace_tensors(Rng(31), dtype=F64, vscale=1e-300), META), "extreme",
        "V around 1e-300 (finite)")
    add("overflow_scores_1e200.safetensors",
        safetensors_bytes(trace_tensors(Rng(32), dtype=F64, qscale=1e200, kscale=1e200), META),
        "overflow", "q and k around 1e200: q.k overflows")
    cases[-1]["may_answer"] = ["info"]
    add("overflow_v_norm.safetensors",
        safetensors_bytes(trace_tensors(Rng(33), dtype=F64, vscale=1e307), META), "overflow",
        "V around 1e307: its norms overflow")
    cases[-1]["may_answer"] = ["info", "entropy", "spectrum"]  # they never read V

    # ---- .npy directories ----------------------------------------------------------------
    qn = npy_bytes("<f4", (2, 2, 8), pack(F32, Rng(5).normals(32)))
    kn = npy_bytes("<f4", (1, 16, 8), pack(F32, Rng(6).normals(128)))
    vn = npy_bytes("<f4", (1, 16, 8), pack(F32, Rng(7).normals(128)))
    add("npy_truncated", {"layers.0.q.npy": qn, "layers.0.k.npy": kn[:-7], "layers.0.v.npy": vn},
        "bad", ".npy data cut short")
    add("npy_fortran", {"layers.0.q.npy": qn,
                        "layers.0.k.npy": npy_bytes("<f4", (1, 16, 8), kn[128:], fortran=True),
                        "layers.0.v.npy": vn}, "bad", "Fortran-ordered keys")
    add("npy_bigendian", {"layers.0.q.npy": qn,
                          "layers.0.k.npy": npy_bytes(">f4", (1, 16, 8), kn[128:]),
                          "layers.0.v.npy": vn}, "bad", "big-endian keys")
    add("npy_bad_magic", {"layers.0.q.npy": b"\x93NUMPX" + qn[6:], "layers.0.k.npy": kn,
                          "layers.0.v.npy": vn}, "bad", "bad magic")
    add("npy_header_lie", {"layers.0.q.npy": qn,
                           "layers.0.k.npy": npy_bytes("<f4", (1, 32, 8), kn[128:]),
                           "layers.0.v.npy": vn}, "bad", "shape says 32 keys, data holds 16")
    add("npy_bad_meta", {"layers.0.q.npy": qn, "layers.0.k.npy": kn, "layers.0.v.npy": vn,
                         "metadata.json": b"[not an object"}, "bad", "metadata.json not JSON")
    add("not_a_trace.txt", b"hello, world\n" * 10, "bad", "a text file")
    add("empty_dir", {}, "bad", "an empty directory")

    # ---- index files (run with the valid F32 trace: sparsity --method index) --------------
    def ix(rows, dtype=I32, shape=(2, 2, 3), meta=None, extra=None, name="layers.0.idx"):
        t = [(name, dtype, shape, pack(dtype, rows))] + (extra or [])
        return safetensors_bytes(t, meta or {"format": "attnscope-index", "format_version": "1"})

    ok_rows = [0, 1, 2, 3, 4, -1, 5, 6, 7, 15, 14, 13]
    index_cases = [
        ("index_valid.safetensors", ix(ok_rows), 0, "a valid per-query-head index"),
        ("index_out_of_range.safetensors", ix([16] + ok_rows[1:]), 2, "position N"),
        ("index_negative.safetensors", ix([-2] + ok_rows[1:]), 2, "position -2"),
        ("index_duplicate.safetensors", ix([3, 3] + ok_rows[2:]), 2, "a position twice"),
        ("index_wrong_t.safetensors", ix(ok_rows[:6] * 1, shape=(2, 1, 3)), 2, "T = 1, trace has 2"),
        ("index_wrong_h.safetensors", ix(ok_rows + ok_rows[:6], shape=(3, 2, 3)), 2, "H = 3"),
        ("index_float.safetensors", ix([float(x) for x in ok_rows], dtype=F32), 2, "float positions"),
        ("index_missing_layer.safetensors", ix(ok_rows, name="layers.3.idx"), 2, "no layers.0.idx"),
        ("index_truncated.safetensors", ix(ok_rows)[:-3], 2, "cut short"),
        ("index_wrong_format.safetensors", ix(ok_rows, meta={"format": "attnscope-trace"}), 2,
         "format says trace"),
        ("index_out_shape.safetensors",
         ix(ok_rows, extra=[("layers.0.out", F32, (2, 2, 4), pack(F32, [0.0] * 16))]), 2,
         "outputs of the wrong d"),
        ("index_out_nan.safetensors",
         ix(ok_rows, extra=[("layers.0.out", F32, (2, 2, 8), pack(F32, [float("nan")] * 32))]), 2,
         "NaN outputs"),
    ]
    for name, data, code, note in index_cases:
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        cases.append({"name": name, "path": path, "expect": "index", "code": code, "note": note,
                      "except": {}})

    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump({"cases": cases, "valid_trace": os.path.join(root, "valid_f32.safetensors")},
                  f, indent=1)
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py DIR")
    print(f"{len(main(sys.argv[1]))} cases in {sys.argv[1]}")
