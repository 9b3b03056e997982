#!/usr/bin/env python3
"""gpu/bench/slowmode.py: is the dense decode's slow mode a matter of where K and V live?

On some leases attnscope's dense decode at N = 8k, B = 32/64 ran ~12% slower than on others
(gpu/bench/NOTES.md), while cuDNN's SDPA did not. attnscope's bench keeps K and V in one
allocation (V right after K), SDPA's inputs are two tensors. This runs, alternating, on the same
lease: attnscope dense with K/V in one allocation and in two (`gpu bench --split-kv`), and SDPA
with K and V as two tensors and as two halves of one tensor, ROUNDS times, and prints the median
microseconds of each (each a median of 30 CUDA-graph replays). If the allocation is the cause,
the one-allocation rows of both are slow together, or the two-allocation rows fast together.
A third attnscope row per round ("after 32 GiB") times B = 32, N = 8k in a process that first
allocated, timed and freed the B = 8, N = 1M shape (32 GiB), as the full bench sweep does: the
allocation-history hypothesis of gpu/bench/NOTES.md (2026-12-05).

  python3 gpu/bench/slowmode.py --attnscope /tmp/asb/attnscope [--rounds 3]
"""
import argparse
import json
import statistics
import subprocess

import torch
import torch.nn.functional as F

HQ, HKV, D = 32, 8, 128


def attnscope(binary, batches, ns, split):
    cmd = [binary, "gpu", "bench", "--json", "--quiet", "--ds", str(D), "--batches",
           ",".join(map(str, batches)), "--ns", ",".join(map(str, ns)), "--sparsities", "1",
           "--no-selection", "--reps", "30", "--max-gib", "36"] + (["--split-kv"] if split else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {(x["batch"], x["n"]): x["us"] for x in json.loads(r.stdout)["records"]
            if x["method"] == "dense"}


def sdpa(b, n, one_alloc, reps=30):
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    kvb = 2 * b * HKV * n * D * 2
    nrot = max(1, -(-4 * l2 // kvb))
    sets = []
    for _ in range(nrot):
        if one_alloc:
            kv = torch.randn(2, b, HKV, n, D, device="cuda", dtype=torch.bfloat16)
            k, v = kv[0], kv[1]
        else:
            k = torch.randn(b, HKV, n, D, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, HKV, n, D, device="cuda", dtype=torch.bfloat16)
        q = torch.randn(b, HQ, 1, D, device="cuda", dtype=torch.bfloat16)
        sets.append((q, k, v))

    def fn(i):
        q, k, v = sets[i % nrot]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    for i in range(max(3, nrot)):
        fn(i)
    torch.cuda.synchronize()
    pool = torch.cuda.graph_pool_handle()
    gs = []
    for i in range(nrot):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            fn(i)
        gs.append(g)
    for i in range(nrot):
        gs[i].replay()
    torch.cuda.synchronize()
    st = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    en = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        st[i].record()
        gs[i % nrot].replay()
        en[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(st, en))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attnscope", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--ns", default="8192,32768")
    ap.add_argument("--json")
    ap.add_argument("--no-history", dest="history", action="store_false",
                    help="leave out the B = 32, N = 8k row timed after the 32 GiB shape")
    a = ap.parse_args()
    bs = [int(x) for x in a.batches.split(",")]
    ns = [int(x) for x in a.ns.split(",")]
    res = {}
    for rnd in range(a.rounds):
        for split in (0, 1):
            for k, us in attnscope(a.attnscope, bs, ns, split).items():
                res.setdefault(("attnscope", "two" if split else "one") + k, []).append(us)
        if a.history:
            # batches loop outside ns: (8, 1M), (8, 8k), (32, 1M: over --max-gib, skipped), (32, 8k)
            us = attnscope(a.attnscope, [8, 32], [1048576, 8192], 0).get((32, 8192))
            if us is not None:
                res.setdefault(("attnscope", "one, after 32 GiB", 32, 8192), []).append(us)
        for b in bs:
            for n in ns:
                for one in (0, 1):
                    res.setdefault(("sdpa", "one" if one else "two", b, n), []).append(
                        sdpa(b, n, one))
        print(f"round {rnd + 1} done", flush=True)
    print("\n| kernel | K/V allocations | B | N | median us | rounds (us) |")
    print("|---|---|---|---|---|---|")
    for key in sorted(res):
        v = res[key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {statistics.median(v):.1f} | "
              f"{', '.join(f'{x:.1f}' for x in v)} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([{"kernel": k[0], "alloc": k[1], "batch": k[2], "n": k[3], "us": v}
                       for k, v in sorted(res.items())], fh, indent=1)


if __name__ == "__main__":
    main()
