#!/usr/bin/env python3
"""Benchmark of the analysis core (issue 4): `attnscope entropy` + `attnscope rank` against a
straightforward NumPy float64 implementation of the same numbers, side by side in one run.

Not a ctest test: run it by hand (docs/benchmarks.md, "Analysis (CPU)").

    python3 tests/bench/bench_analysis.py [--bin build/attnscope] [--n 131072] [--reps 2]
        [--rss-n 1048576] [--keep DIR] [--trace REAL.safetensors]

What it does:
1. writes a synthetic trace with `attnscope sim gen` (default N = 131072, T = 64, d = 128,
   8 kv heads, 32 query heads, BF16, causal, one score profile per kv head) unless it exists;
2. runs, alternately and --reps times each, (a) `attnscope entropy TRACE --json` then
   `attnscope rank TRACE --json` and (b) this script's NumPy implementation in a child
   process (the same per-query entropy, k50/k90/k99, and the spectra of K, V, Q, S = scale Q K^T
   and A, from the formed T x N matrices, np.sort / np.cumsum / np.linalg.svd); reports each
   side's median wall time, the ratio, and the peak memory of each process (VmHWM, and peak
   anonymous memory RssAnon sampled every 20 ms: VmHWM also counts the pages of the
   memory-mapped trace the kernel may drop at will);
3. checks that both sides computed the same numbers (mean entropy, k90, erank of K);
4. with --rss-n, writes a second trace of that size and reports attnscope's peak memory on it
   (the claim: memory is bounded by tiles, not by T x N).

"The same OpenBLAS": attnscope links the system OpenBLAS (libopenblas0-pthread on Debian); the
NumPy side runs under --python (default /usr/bin/python3, Debian's python3-numpy, whose BLAS and
LAPACK are the same libopenblas through libblas.so.3 / liblapack.so.3). The script prints the
BLAS library each process mapped. Both use the default OpenBLAS thread count.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


# ------------------------------------------------------------------------- NumPy implementation

def numpy_side(path, out_json):
    """The straightforward implementation (runs in a child process)."""
    import numpy as np

    blob = np.memmap(path, dtype=np.uint8, mode="r")  # like attnscope: mapped, not read
    hlen = int.from_bytes(bytes(blob[:8]), "little")
    header = json.loads(bytes(blob[8:8 + hlen]))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen

    def tensor(name):
        info = header[name]
        a, b = info["data_offsets"]
        raw = np.frombuffer(blob, dtype=np.uint8, count=b - a, offset=base + a)
        dt = info["dtype"]
        if dt == "BF16":
            x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = raw.view({"F64": "<f8", "F32": "<f4", "F16": "<f2", "I32": "<i4",
                          "I64": "<i8"}[dt])
        return x.reshape(info["shape"])

    layers = sorted({int(k.split(".")[1]) for k in header if k.startswith("layers.")})
    res = {"entropy_nats": [], "k90": [], "erank_k": [], "erank_attn": []}

    def erank(s):
        p = s / s.sum()
        p = p[p > 0]
        return float(np.exp(-(p * np.log(p)).sum()))

    for L in layers:
        q = tensor(f"layers.{L}.q")
        hq, T, d = q.shape
        k_all, v_all = tensor(f"layers.{L}.k"), tensor(f"layers.{L}.v")
        hkv, N, _ = k_all.shape
        pos_name = f"layers.{L}.q_pos"
        pos = tensor(pos_name).astype(np.int64) if pos_name in header else np.full(T, N - 1)
        scale = float(meta.get("scale", 1.0 / np.sqrt(d)))
        mask = np.arange(N)[None, :] > pos[:, None]  # keys a query may not see
        for g in range(hkv):
            K = k_all[g].astype(np.float64)
            V = v_all[g].astype(np.float64)
            for M in (K, V):  # spectra of keys and values
                s = np.linalg.svd(M, compute_uv=False)
                if M is K:
                    res["erank_k"].append(erank(s))
            for h in range(g * (hq // hkv), (g + 1) * (hq // hkv)):
                Q = q[h].astype(np.float64)
                S = scale * (Q @ K.T)                      # T x N
                np.linalg.svd(Q, compute_uv=False)
                np.linalg.svd(S, compute_uv=False)
                Sm = np.where(mask, -np.inf, S)
                P = np.exp(Sm - Sm.max(axis=1, keepdims=True))
                P /= P.sum(axis=1, keepdims=True)
                with np.errstate(divide="ignore", invalid="ignore"):
                    H = -np.where(P > 0, P * np.log(P), 0.0).sum(axis=1)
                C = np.cumsum(np.sort(P, axis=1)[:, ::-1], axis=1)
                ks = [(C < t).sum(axis=1) + 1 for t in (0.5, 0.9, 0.99)]
                res["entropy_nats"] += H.tolist()
                res["k90"] += ks[1].tolist()
                res["erank_attn"].append(erank(np.linalg.svd(P, compute_uv=False)))
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line or "lapack" in line})
    res["blas"] = blas
    res["numpy"] = np.__version__
    with open(out_json, "w") as f:
        json.dump(res, f)


# ------------------------------------------------------------------------------------ measuring

def run_measured(cmd, stdout=None, env=None):
    """Run cmd; return (wall seconds, VmHWM MiB, peak RssAnon MiB, returncode)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env)
    peak_anon = 0
    hwm = 0
    done = threading.Event()

    def sample():
        nonlocal peak_anon, hwm
        while not done.is_set():
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak_anon = max(peak_anon, int(line.split()[1]))
                        elif line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                pass
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {err}")
    return wall, max(hwm, ru.ru_maxrss) / 1024.0, peak_anon / 1024.0


def gen_trace(binary, path, n, args):
    if os.path.exists(path):
        return
    cmd = [binary, "sim", "gen", "-o", path, "--n", str(n), "--d", str(args.d), "--t",
           str(args.t), "--heads", str(args.hq), "--kv-heads", str(args.hkv), "--dtype",
           args.dtype, "--causal", "--seed", "7", "--quiet",
           "--profile", "zipf:s=1.1", "--profile", "needle", "--profile", "sink",
           "--profile", "window", "--profile", "none", "--profile", "periodic:period=64",
           "--profile", "zipf:s=0.8", "--profile", "none"]
    print("generating:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def attnscope_side(binary, trace, tmp):
    """entropy then rank, each a process; returns (wall, max VmHWM, max RssAnon, outputs)."""
    walls, hwms, anons = [], [], []
    outs = []
    for cmd in ("entropy", "rank"):
        out = os.path.join(tmp, f"{cmd}.json")
        with open(out, "w") as f:
            w, h, a = run_measured([binary, cmd, trace, "--json", "--quiet"], stdout=f)
        walls.append(w)
        hwms.append(h)
        anons.append(a)
        outs.append(out)
    return sum(walls), max(hwms), max(anons), walls, outs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "attnscope"))
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for the NumPy side (default: Debian's, system OpenBLAS)")
    ap.add_argument("--n", type=int, default=131072)
    ap.add_argument("--t", type=int, default=64)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--dtype", default="BF16")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rss-n", type=int, default=0, help="also measure attnscope's memory at N")
    ap.add_argument("--keep", default=os.path.join(SRC, "out", "bench"),
                    help="directory for the traces and outputs (kept for reuse)")
    ap.add_argument("--trace", default="",
                    help="benchmark this trace (e.g. a real capture) instead of a generated one")
    ap.add_argument("--numpy-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.numpy_child:
        numpy_side(*args.numpy_child)
        return 0

    os.makedirs(args.keep, exist_ok=True)
    if args.trace:
        trace = os.path.abspath(args.trace)
        info = json.loads(subprocess.run([args.bin, "info", trace, "--json"], check=True,
                                         capture_output=True, text=True).stdout)
        lay = [r for r in info["records"] if r.get("record") == "layer"]
        args.n, args.t, args.d = lay[0]["n"], lay[0]["t"], lay[0]["d"]
        args.hq, args.hkv, args.dtype = lay[0]["hq"], lay[0]["hkv"], lay[0]["dtype_kv"]
        print(f"trace {trace}: {len(lay)} layers", flush=True)
    else:
        tag = f"n{args.n}-t{args.t}-d{args.d}-h{args.hq}x{args.hkv}-{args.dtype}"
        trace = os.path.join(args.keep, f"bench-{tag}.safetensors")
        gen_trace(args.bin, trace, args.n, args)
    ldd = subprocess.run(["ldd", args.bin], capture_output=True, text=True).stdout
    libattn = [l.split("=>")[1].split()[0] for l in ldd.splitlines() if "libattnscope" in l]
    blas_c = []
    for lib in [args.bin] + libattn:
        out = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
        blas_c += [l.split("=>")[1].split()[0] for l in out.splitlines()
                   if "openblas" in l or "lapack" in l]
    blas_c = sorted({os.path.realpath(x) for x in blas_c})

    np_out = os.path.join(args.keep, "numpy.json")
    c_times, np_times, c_mem, np_mem = [], [], [], []
    for rep in range(args.reps):
        w, hwm, anon, parts, outs = attnscope_side(args.bin, trace, args.keep)
        c_times.append(w)
        c_mem.append((hwm, anon))
        print(f"rep {rep}: attnscope entropy {parts[0]:.2f} s + rank {parts[1]:.2f} s = {w:.2f} s, "
              f"VmHWM {hwm:.0f} MiB, peak RssAnon {anon:.0f} MiB", flush=True)
        w, hwm, anon = run_measured([args.python, os.path.abspath(__file__), "--numpy-child",
                                     trace, np_out])
        np_times.append(w)
        np_mem.append((hwm, anon))
        print(f"rep {rep}: numpy {w:.2f} s, VmHWM {hwm:.0f} MiB, peak RssAnon {anon:.0f} MiB",
              flush=True)

    if args.reps > 0:
        report(args, outs, np_out, blas_c, c_times, np_times, c_mem, np_mem)
    if args.rss_n:
        tag2 = f"n{args.rss_n}-t{args.t}-d{args.d}-h{args.hq}x{args.hkv}-{args.dtype}"
        big = os.path.join(args.keep, f"bench-{tag2}.safetensors")
        gen_trace(args.bin, big, args.rss_n, args)
        w, hwm, anon, parts, _ = attnscope_side(args.bin, big, args.keep)
        print(f"N={args.rss_n}: attnscope entropy {parts[0]:.2f} s + rank {parts[1]:.2f} s, "
              f"VmHWM {hwm:.0f} MiB, peak RssAnon {anon:.0f} MiB")
    return 0


def report(args, outs, np_out, blas_c, c_times, np_times, c_mem, np_mem):
    # same numbers?
    npres = json.load(open(np_out))
    ent = json.load(open(outs[0]))["records"]
    rnk = json.load(open(outs[1]))["records"]
    c_h = [r["entropy_nats"] for r in ent if r["record"] == "entropy"]
    c_k90 = [r["k90"] for r in ent if r["record"] == "entropy"]
    c_ek = [r["erank"] for r in rnk if r["record"] == "rank" and r["matrix"] == "k"]
    c_ea = [r["erank"] for r in rnk if r["record"] == "rank" and r["matrix"] == "attn"]

    def rel(a, b):
        return max(abs(x - y) / abs(y) for x, y in zip(a, b)) if a else float("nan")

    print(f"agreement: entropy max rel {rel(c_h, npres['entropy_nats']):.1e} "
          f"({len(c_h)} queries), k90 equal {sum(x == y for x, y in zip(c_k90, npres['k90']))}"
          f"/{len(c_k90)}, erank K max rel {rel(c_ek, npres['erank_k']):.1e}, "
          f"erank A max rel {rel(c_ea, npres['erank_attn']):.1e}")
    print(f"BLAS: attnscope {blas_c}; numpy {npres['numpy']} {npres['blas']}")
    ct, nt = statistics.median(c_times), statistics.median(np_times)
    print(f"\nN={args.n} T={args.t} d={args.d} heads {args.hq}/{args.hkv} {args.dtype}: "
          f"attnscope entropy+rank {ct:.2f} s, numpy {nt:.2f} s (medians of {args.reps}), "
          f"ratio numpy/attnscope = {nt / ct:.2f}x")
    print(f"peak memory: attnscope VmHWM {max(m[0] for m in c_mem):.0f} MiB, "
          f"RssAnon {max(m[1] for m in c_mem):.0f} MiB; numpy VmHWM "
          f"{max(m[0] for m in np_mem):.0f} MiB, RssAnon {max(m[1] for m in np_mem):.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
