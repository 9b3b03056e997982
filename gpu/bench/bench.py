#!/usr/bin/env python3
"""gpu/bench/bench.py: attnscope's GPU kernels next to FlashInfer and PyTorch SDPA, one run.

1. `attnscope gpu bench --json` times attnscope's kernels and a device-to-device copy (the
   bandwidth ceiling) - CUDA events, warm-up, inputs rotating over > 4x L2, median of >= 20.
2. The same shapes through FlashInfer's batch decode (paged KV cache, HND layout, page size
   16, backend fa2 = its CUDA-core decode kernel; also with use_tensor_cores when its kernels
   load) and through torch.nn.functional.scaled_dot_product_attention (enable_gqa), timed the
   same way; FlashInfer's block-sparse decode (the same wrapper over 1/s of the pages) at each
   sparsity s; torch.topk over the same [B * HKV, N] f32 rows as attnscope's "topk_rows".
   "Fastest dense" is the fastest of FlashInfer fa2, FlashInfer tensor cores and SDPA at each
   shape (SDPA runs up to the same --max-gib as the rest).
3. A correctness cross-check on one shape: attnscope (through ctypes on libattnscope),
   FlashInfer and SDPA against a float64 reference of the same bf16 inputs.
Writes OUT/bench.json and OUT/bench.md; prints the headline tables last.
"""
import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HQ, HKV, PAGE = 32, 8, 16


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--attnscope", required=True)
    p.add_argument("--lib", default="", help="directory holding libattnscope.so (ctypes check)")
    p.add_argument("--out", default="out")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--max-gib", type=float, default=36.0)
    p.add_argument("--no-fi", action="store_true")
    p.add_argument("--no-sdpa", action="store_true")
    p.add_argument("--sdpa-max-gib", type=float, default=0.0,
                   help="skip SDPA above this KV size (GiB; 0: --max-gib)")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="seconds: start no baseline shape after this (0: no limit); the rows "
                        "so far are written after every shape")
    return p.parse_args()


def sweeps(quick):
    if quick:
        return [dict(d=128, batches=[1, 8], ns=[8192, 65536], sp=[1, 10, 50])]
    return [
        dict(d=128, batches=[1, 8, 32, 64], ns=[8192, 32768, 131072, 262144, 524288, 1048576],
             sp=[1, 10, 20, 50, 100]),
        dict(d=64, batches=[1, 8], ns=[32768, 262144], sp=[1, 10, 50]),
    ]


def run_attnscope(a, sw):
    cmd = [a.attnscope, "gpu", "bench", "--json", "--ds", str(sw["d"]),
           "--batches", ",".join(map(str, sw["batches"])), "--ns", ",".join(map(str, sw["ns"])),
           "--sparsities", ",".join(map(str, sw["sp"])), "--reps", str(a.reps),
           "--max-gib", str(a.max_gib)]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"attnscope gpu bench failed ({r.returncode})")
    doc = json.loads(r.stdout)
    print(f"attnscope gpu bench: {len(doc['records'])} rows in {time.time() - t:.0f} s", flush=True)
    return doc


GRAPH_FAILURES = []
SKIPPED = []  # baseline shapes left out by --time-limit
T0 = time.time()


def time_fn(fn, nrot, reps, warm=3, graphs=True):
    """Median microseconds of reps launches. Each rotation set is captured once into a CUDA
    graph (host overhead out of the numbers, as in attnscope's harness); eager if capture fails."""
    for i in range(max(warm, nrot)):
        fn(i % nrot)
    torch.cuda.synchronize()
    gs = None
    if graphs:
        try:
            pool = torch.cuda.graph_pool_handle()
            gs = []
            for i in range(nrot):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    fn(i)
                gs.append(g)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            GRAPH_FAILURES.append(str(e)[:200])
            gs = None
            torch.cuda.synchronize()
    run = (lambda i: gs[i % nrot].replay()) if gs else (lambda i: fn(i % nrot))
    for i in range(nrot):
        run(i)
    torch.cuda.synchronize()
    st = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    en = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        st[i].record()
        run(i)
        en[i].record()
    torch.cuda.synchronize()
    ts = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(st, en))
    n = len(ts)
    return ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])


def copy_gbps(reps):
    n = 2 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    us = time_fn(lambda i: dst.copy_(src), 1, reps, graphs=False)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (us * 1e3)


def rotation(kv_bytes, l2):
    target = 4 * l2
    return 1 if kv_bytes >= target else min(64, math.ceil(target / kv_bytes))


# ---- FlashInfer ---------------------------------------------------------------------------
def fi_import():
    import flashinfer
    from flashinfer.jit.core import JitSpecNvcc
    orig = JitSpecNvcc.build

    def build(self, *args, **kw):  # kernels carried prebuilt: load them, don't recompile
        if self.jit_library_path.exists():
            return None
        return orig(self, *args, **kw)

    JitSpecNvcc.build = build
    return flashinfer


class FIDecode:
    def __init__(self, fi, B, N, d, pages_keep=None, tensor_cores=False):
        self.ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        kw = dict(kv_layout="HND", backend="fa2")
        if tensor_cores:
            kw["use_tensor_cores"] = True
        self.w = fi.BatchDecodeWithPagedKVCacheWrapper(self.ws, **kw)
        pps = N // PAGE
        if pages_keep is None:
            indptr = torch.arange(B + 1, dtype=torch.int32) * pps
            indices = torch.arange(B * pps, dtype=torch.int32)
        else:
            g = torch.Generator().manual_seed(5)
            idx = [torch.sort(torch.randperm(pps, generator=g)[:pages_keep])[0] + b * pps
                   for b in range(B)]
            indices = torch.cat(idx).to(torch.int32)
            indptr = torch.arange(B + 1, dtype=torch.int32) * pages_keep
        last = torch.full((B,), PAGE, dtype=torch.int32)
        self.w.plan(indptr.cuda(), indices.cuda(), last.cuda(), HQ, HKV, d, PAGE,
                    q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)

    def run(self, q, cache):
        return self.w.run(q, cache)


# ---- attnscope through ctypes (correctness cross-check) -----------------------------------
class Attn(ctypes.Structure):
    _fields_ = [("batch", ctypes.c_int32), ("hq", ctypes.c_int32), ("hkv", ctypes.c_int32),
                ("d", ctypes.c_int32), ("kv_dtype", ctypes.c_int), ("k", ctypes.c_void_p),
                ("v", ctypes.c_void_p), ("stride_b", ctypes.c_int64),
                ("stride_h", ctypes.c_int64), ("stride_n", ctypes.c_int64),
                ("lens", ctypes.c_void_p), ("nmax", ctypes.c_int32), ("q", ctypes.c_void_p),
                ("scale", ctypes.c_float)]


def crosscheck(a, fi, out):
    """Same bf16 inputs through attnscope, FlashInfer, SDPA and float64; max rel errors."""
    B, N, d = 3, 4099 - 4099 % PAGE, 128
    torch.manual_seed(0)
    q = torch.randn(B, HQ, d, device="cuda").to(torch.bfloat16)
    k = torch.randn(B, HKV, N, d, device="cuda").to(torch.bfloat16)
    v = torch.randn(B, HKV, N, d, device="cuda").to(torch.bfloat16)
    k[:, :, 17] *= 4  # a heavy key
    scale = 1 / math.sqrt(d)
    G = HQ // HKV
    kk = k.double().repeat_interleave(G, 1)
    vv = v.double().repeat_interleave(G, 1)
    s = torch.einsum("bhd,bhnd->bhn", q.double(), kk) * scale
    ref = torch.einsum("bhn,bhnd->bhd", torch.softmax(s, -1), vv)

    def rel(x):
        e = (x.double() - ref).flatten(2).norm(dim=-1) / ref.flatten(2).norm(dim=-1)
        return float(e.max())

    res = {}
    res["sdpa"] = rel(F.scaled_dot_product_attention(q.unsqueeze(2), k, v, enable_gqa=True)
                      .squeeze(2))
    if fi is not None:
        try:
            cache = (k.view(B, HKV, N // PAGE, PAGE, d).transpose(1, 2).contiguous()
                     .view(B * N // PAGE, HKV, PAGE, d),
                     v.view(B, HKV, N // PAGE, PAGE, d).transpose(1, 2).contiguous()
                     .view(B * N // PAGE, HKV, PAGE, d))
            res["flashinfer"] = rel(FIDecode(fi, B, N, d).run(q, cache))
        except Exception as e:  # noqa: BLE001
            res["flashinfer"] = f"error: {e}"
    if a.lib:
        try:
            lib = ctypes.CDLL(os.path.join(a.lib, "libattnscope.so"))
            lib.as_gpu_ctx_new.restype = ctypes.c_void_p
            err = ctypes.create_string_buffer(512)
            ctx = lib.as_gpu_ctx_new(0, err)
            if not ctx:
                raise RuntimeError(err.value.decode())
            qf = q.float().contiguous()
            lens = torch.full((B,), N, dtype=torch.int32, device="cuda")
            o = torch.full((B, HQ, d), float("nan"), device="cuda")
            lse = torch.empty(B, HQ, device="cuda")
            at = Attn(B, HQ, HKV, d, 2, k.data_ptr(), v.data_ptr(), HKV * N * d, N * d, d,
                      lens.data_ptr(), N, qf.data_ptr(), scale)
            torch.cuda.synchronize()
            for name, fn, extra in (("attnscope", lib.as_gpu_decode_dense, ()),):
                rc = fn(ctypes.c_void_p(ctx), ctypes.byref(at), ctypes.c_void_p(o.data_ptr()),
                        ctypes.c_void_p(lse.data_ptr()), 0, err)
                rc = rc or lib.as_gpu_sync(ctypes.c_void_p(ctx), err)
                res[name] = rel(o) if rc == 0 else f"error: {err.value.decode()}"
            lib.as_gpu_ctx_free(ctypes.c_void_p(ctx))
        except Exception as e:  # noqa: BLE001
            res["attnscope"] = f"error: {e}"
    print("cross-check (B=3, N=4096, d=128, bf16 KV; max rel error vs float64):", res, flush=True)
    out["crosscheck"] = res


def bench_baselines(a, fi, sw, l2, out_rows, checkpoint):
    d = sw["d"]
    for B in sw["batches"]:
        for N in sw["ns"]:
            kv_bytes = 2 * B * HKV * N * d * 2
            if kv_bytes > a.max_gib * 2**30:
                continue
            if a.time_limit > 0 and time.time() - T0 > a.time_limit:
                print(f"baselines B={B} N={N} d={d} skipped: --time-limit reached", flush=True)
                SKIPPED.append(dict(batch=B, n=N, d=d))
                continue
            R = rotation(kv_bytes, l2)
            base = dict(batch=B, d=d, n=N)
            qs = [torch.randn(B, HQ, d, device="cuda").to(torch.bfloat16) for _ in range(R)]
            qo = 2 * B * HQ * d * 2
            if fi is not None:
                try:
                    caches = [(torch.randn(B * N // PAGE, HKV, PAGE, d, device="cuda",
                                           dtype=torch.bfloat16),
                               torch.randn(B * N // PAGE, HKV, PAGE, d, device="cuda",
                                           dtype=torch.bfloat16)) for _ in range(R)]
                    # both of FlashInfer's dense decodes at every d (fi_prebuild.py builds the
                    # tensor-core modules for d = 64 and 128)
                    variants = [("fi_dense", False), ("fi_dense_tc", True)]
                    for name, tc in variants:
                        try:
                            w = FIDecode(fi, B, N, d, tensor_cores=tc)
                            us = time_fn(lambda i: w.run(qs[i], caches[i]), R, a.reps)
                            out_rows.append(dict(base, method=name, sparsity=1, us=us,
                                                 bytes=kv_bytes + qo))
                        except Exception as e:  # noqa: BLE001
                            print(f"FlashInfer {name} B={B} N={N} d={d}: {e}", flush=True)
                    for sp in sw["sp"]:
                        if sp <= 1:
                            continue
                        keep = max(1, (N // PAGE) // sp)
                        w = FIDecode(fi, B, N, d, pages_keep=keep)
                        us = time_fn(lambda i: w.run(qs[i], caches[i]), R, a.reps)
                        out_rows.append(dict(base, method="fi_pages", sparsity=sp, us=us,
                                             bytes=2 * B * HKV * keep * PAGE * d * 2 + qo))
                    del caches
                except Exception as e:  # noqa: BLE001
                    print(f"FlashInfer B={B} N={N} d={d}: {e}", flush=True)
                torch.cuda.empty_cache()
            if not a.no_sdpa and kv_bytes <= (a.sdpa_max_gib or a.max_gib) * 2**30:
                try:
                    ks = [torch.randn(B, HKV, N, d, device="cuda", dtype=torch.bfloat16)
                          for _ in range(R)]
                    vs = [torch.randn(B, HKV, N, d, device="cuda", dtype=torch.bfloat16)
                          for _ in range(R)]
                    q4 = [x.unsqueeze(2) for x in qs]
                    us = time_fn(lambda i: F.scaled_dot_product_attention(
                        q4[i], ks[i], vs[i], enable_gqa=True), R, a.reps)
                    out_rows.append(dict(base, method="sdpa", sparsity=1, us=us,
                                         bytes=kv_bytes + qo))
                    del ks, vs
                except Exception as e:  # noqa: BLE001
                    print(f"SDPA B={B} N={N} d={d}: {type(e).__name__}: {str(e)[:200]}",
                          flush=True)
                torch.cuda.empty_cache()
            # torch.topk over [B * HKV, N] f32 rows (attnscope's topk_rows), rotated over > 4x L2
            try:
                tb = B * HKV * N * 4
                TR = 1 if tb >= 4 * l2 else min(64, math.ceil(4 * l2 / tb))
                xs = [torch.randn(B * HKV, N, device="cuda") * 4 for _ in range(TR)]
                for sp in sw["sp"]:
                    if sp <= 1:
                        continue
                    k = max(1, int(N / sp))
                    us = time_fn(lambda i: torch.topk(xs[i], k, dim=-1, sorted=False), TR, a.reps)
                    out_rows.append(dict(base, method="torch_topk", sparsity=sp, us=us,
                                         bytes=tb + B * HKV * k * 12))
                del xs
            except Exception as e:  # noqa: BLE001
                print(f"torch.topk B={B} N={N}: {type(e).__name__}: {str(e)[:200]}", flush=True)
            torch.cuda.empty_cache()
            print(f"baselines B={B} N={N} d={d} done", flush=True)
            checkpoint()


def fmt_us(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def tables(rows, copy, read):
    key = lambda r: (r["d"], r["batch"], r["n"])  # noqa: E731
    shapes = sorted({key(r) for r in rows if r["method"] == "dense"})

    def get(method, shp, sp=1):
        for r in rows:
            if r["method"] == method and key(r) == shp and abs(r["sparsity"] - sp) < 1e-9:
                return r
        return None

    def fastest(shp):
        """fastest dense baseline: FlashInfer fa2, FlashInfer tensor cores, SDPA (cuDNN)"""
        c = [(x["us"], n) for n, x in (("fa2", get("fi_dense", shp)),
                                       ("tc", get("fi_dense_tc", shp)),
                                       ("sdpa", get("sdpa", shp))) if x]
        return min(c) if c else (None, "-")

    sps = sorted({r["sparsity"] for r in rows if r["method"] == "sparse_idx"})
    lines = []
    h = ("| d | B | N | KV GiB | attnscope dense us | FlashInfer dense us (fa2 / tc) | SDPA us |"
         " fastest / attnscope | attnscope % copy | % read |")
    lines += ["### Dense decode", "", h, "|" + "---|" * 10]
    for shp in shapes:
        m = get("dense", shp)
        f1, f2, sd = get("fi_dense", shp), get("fi_dense_tc", shp), get("sdpa", shp)
        fb, fn = fastest(shp)
        ratio = f"{fb / m['us']:.2f} ({fn})" if fb else "-"
        gib = 2 * shp[1] * HKV * shp[2] * shp[0] * 2 / 2**30
        lines.append(f"| {shp[0]} | {shp[1]} | {shp[2]} | {gib:.2f} | {fmt_us(m['us'])} | "
                     f"{fmt_us(f1 and f1['us'])} / {fmt_us(f2 and f2['us'])} | "
                     f"{fmt_us(sd and sd['us'])} | {ratio} | {m['pct_copy']:.1f} | "
                     f"{m.get('pct_read', 0):.1f} |")
    lines += ["", "### Sparse decode over given indices (index sets rotated with K/V): speedup "
              "over the fastest dense (attnscope us / speedup; FlashInfer block-sparse us)", ""]
    hdr = "| d | B | N |" + "".join(f" {s:.0f}x |" for s in sps)
    lines += [hdr, "|" + "---|" * (3 + len(sps))]
    for shp in shapes:
        fb, _ = fastest(shp)
        cells = []
        for s in sps:
            r, fp = get("sparse_idx", shp, s), get("fi_pages", shp, s)
            if not r:
                cells.append(" - |")
                continue
            spd = f"{fb / r['us']:.1f}x" if fb else "-"
            cells.append(f" {fmt_us(r['us'])} / {spd}; FI {fmt_us(fp and fp['us'])} |")
        lines.append(f"| {shp[0]} | {shp[1]} | {shp[2]} |" + "".join(cells))
    lines += ["", "### Exact top-k alone over [B x 8, N] f32 rows: attnscope vs torch.topk "
              "(us; % of one read of the rows at the read-only stream bandwidth)", ""]
    lines += ["| d | B | N | sparsity | k | attnscope topk_rows | % read | torch.topk | torch / attnscope |",
              "|" + "---|" * 9]
    for shp in shapes:
        for s in sps:
            t, tt = get("topk_rows", shp, s), get("torch_topk", shp, s)
            if not t:
                continue
            k = max(1, int(shp[2] / s))
            one_read = shp[1] * HKV * shp[2] * 4 / (read * 1e3)  # us
            rr = f"{tt['us'] / t['us']:.2f}" if tt else "-"
            lines.append(f"| {shp[0]} | {shp[1]} | {shp[2]} | {s:.0f}x | {k} | {fmt_us(t['us'])} | "
                         f"{100 * one_read / t['us']:.0f} | {fmt_us(tt and tt['us'])} | {rr} |")
    lines += ["", "### Selection and end to end (KV-head selection, GQA group 4), us "
              "(speedup of end-to-end over the fastest dense)", ""]
    lines += ["| d | B | N | sparsity | select top-k | select pages 16 / 32 | top-k + attention |"
              " pages 16 + attention | pages 32 + attention | pages + sampling 16 / 32 + attention |",
              "|" + "---|" * 10]
    for shp in shapes:
        fb, _ = fastest(shp)
        for s in sps:
            st, sp_, sp32, et, ep, ep32, es, es32 = (get(m, shp, s) for m in (
                "select_topk", "select_pages", "select_pages32", "e2e_topk", "e2e_pages",
                "e2e_pages32", "e2e_page_sample", "e2e_page_sample32"))
            if not st:
                continue
            sx = lambda r: f" ({fb / r['us']:.1f}x)" if (r and fb) else ""  # noqa: E731
            lines.append(f"| {shp[0]} | {shp[1]} | {shp[2]} | {s:.0f}x | {fmt_us(st['us'])} | "
                         f"{fmt_us(sp_ and sp_['us'])} / {fmt_us(sp32 and sp32['us'])} | "
                         f"{fmt_us(et and et['us'])}{sx(et)} | "
                         f"{fmt_us(ep and ep['us'])}{sx(ep)} | {fmt_us(ep32 and ep32['us'])}{sx(ep32)} | "
                         f"{fmt_us(es and es['us'])}{sx(es)} / {fmt_us(es32 and es32['us'])}{sx(es32)} |")
    return "\n".join(lines)


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    l2 = props.L2_cache_size
    out = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__,
               cuda=torch.version.cuda, sms=props.multi_processor_count, l2=l2)
    fi = None
    if not a.no_fi:
        try:
            fi = fi_import()
            out["flashinfer"] = fi.__version__
        except Exception as e:  # noqa: BLE001
            print("FlashInfer unavailable:", e, flush=True)
            out["flashinfer"] = f"unavailable: {e}"
    rows = []
    as_docs = []
    for sw in sweeps(a.quick):
        doc = run_attnscope(a, sw)
        as_docs.append(doc)
        for r in doc["records"]:
            rows.append({k: r[k] for k in ("method", "batch", "d", "n", "sparsity", "us",
                                           "bytes", "gbps", "pct_copy", "pct_read", "graphed")
                         if k in r})
    copy_rows = [r for r in rows if r["method"] == "copy"]
    out["copy_gbps_attnscope"] = [r["gbps"] for r in copy_rows]
    out["copy_gbps_torch"] = copy_gbps(a.reps)
    copy = copy_rows[0]["gbps"]
    eager = [r["method"] for r in rows if r.get("graphed") == 0 and r["method"] != "copy"]
    if eager:
        print(f"attnscope rows timed eagerly (CUDA graph capture failed): {len(eager)}, e.g. "
              f"{sorted(set(eager))[:6]}", flush=True)
    read_rows = [r for r in rows if r["method"] == "read"]
    read = read_rows[0]["gbps"] if read_rows else copy
    out["read_gbps_attnscope"] = [r["gbps"] for r in read_rows]
    print(f"device-to-device copy: {copy:.0f} GB/s (attnscope run), "
          f"{out['copy_gbps_torch']:.0f} GB/s (torch), read + write bytes", flush=True)
    crosscheck(a, fi, out)
    base_rows = []

    def save():
        """bench.json / bench.md from the rows so far (after every baseline shape, so that a
        run cut short still leaves its tables)."""
        for r in base_rows:
            r["gbps"] = r["bytes"] / (r["us"] * 1e3)
            r["pct_copy"] = 100 * r["gbps"] / copy
            r["pct_read"] = 100 * r["gbps"] / read
        out["rows"] = rows + base_rows
        out["attnscope_device"] = as_docs[0].get("device")
        out["graph_failures"] = GRAPH_FAILURES
        out["baselines_skipped"] = SKIPPED
        md = tables([r for r in out["rows"] if r["method"] not in ("copy", "read")], copy, read)
        head = (f"Device: {out['device']} ({out['sms']} SMs, {l2 / 1e6:.0f} MB L2); torch "
                f"{out['torch']} (CUDA {out['cuda']}); FlashInfer {out.get('flashinfer')}; copy "
                f"bandwidth {copy:.0f} GB/s (read+write), read-only stream {read:.0f} GB/s.\n")
        for name, text in (("bench.json", json.dumps(out, indent=1)), ("bench.md", head + "\n" + md + "\n")):
            tmp = os.path.join(a.out, name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(a.out, name))
        return head, md

    for sw in sweeps(a.quick):
        bench_baselines(a, fi, sw, l2, base_rows, save)
    head, md = save()
    if GRAPH_FAILURES:
        print(f"CUDA graph capture failed {len(GRAPH_FAILURES)} times (eager timing there):",
              GRAPH_FAILURES[0])
    if SKIPPED:
        print(f"{len(SKIPPED)} baseline shapes skipped by --time-limit", flush=True)
    print(head)
    print(md)


if __name__ == "__main__":
    main()
