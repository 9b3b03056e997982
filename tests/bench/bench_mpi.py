#!/usr/bin/env python3
"""Benchmark of the MPI engine (issue 19): strong scaling of `attnscope sparsity` and
`attnscope report` on one trace, 1 vs 2 ranks, side by side in one run, against today's single
process. Not a ctest test: run it by hand (docs/benchmarks.md, "MPI engine"; docs/scale.md).

    python3 tests/bench/bench_mpi.py --bin build-rel/attnscope --ref /work/ref-build/attnscope \
        --trace /work/traces/needle-8k.safetensors [--reps 3] [--ranks 1,2] [--out FILE.json]

Each repetition runs, in turn: the reference program alone (today's single process), then this
program under `mpirun -n P` for every P of --ranks, first `sparsity TRACE --summary-only` then
`report TRACE -o FILE --witness last`; OPENBLAS_NUM_THREADS=1 everywhere. For each run: wall
time, CPU time (user + sys of the process tree, from the wait status), the machine's load
average before it, and with ATTNSCOPE_MPI_STATS=1 each rank's wall, work and merge time and
peak RSS (getrusage). Outputs are compared with the reference (tables byte for byte; the HTML
with its clock lines masked). Medians per configuration at the end, and everything as JSON.

--records: peak RSS against the number of records: `sparsity --json` with two methods on one
layer and on all layers (30x the records), the reference program and this one.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd, env, out_path=None):
    """Run cmd; wall, CPU and peak RSS of its process tree (wait4: this child's own usage)."""
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(out_path or os.devnull, "wb") as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        p.stderr = err.read()
    wall = time.monotonic() - t0
    cpu = ru.ru_utime + ru.ru_stime
    after = ru
    ranks = []
    for line in p.stderr.decode(errors="replace").splitlines():
        m = re.match(r"attnscope mpi: rank (\d+) of (\d+): wall ([\d.]+) s, work ([\d.]+) s, "
                     r"merge ([\d.]+) s .*most held (\d+), peak RSS (\d+) KiB(?:, cpu ([\d.]+) s)?",
                     line)
        if m:
            ranks.append({"rank": int(m[1]), "wall": float(m[3]), "work": float(m[4]),
                          "merge": float(m[5]), "held": int(m[6]), "rss_kib": int(m[7]),
                          "cpu": float(m[8]) if m[8] else None})
    return {"rc": p.returncode, "wall": wall, "cpu": cpu, "load": load,
            "maxrss_kib": after.ru_maxrss, "ranks": ranks,
            "stderr": p.stderr.decode(errors="replace")[-400:] if p.returncode else ""}


def masked(path):
    with open(path, "rb") as f:
        t = f.read().decode(errors="replace")
    t = re.sub(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC", "DATE", t)
    t = re.sub(r">[0-9]+\.[0-9]{2} s<", ">SECONDS<", t)
    return re.sub(r"<code>attnscope report [^<]*</code>", "<code>CMD</code>", t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--commands", default="sparsity,report", help="'' for --records alone")
    ap.add_argument("--records", action="store_true")
    ap.add_argument("--sparsity-args", default="",
                    help="extra options of the sparsity runs, e.g. '--budget 5%%,25%%'")
    ap.add_argument("--out")
    a = ap.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    envs = dict(env, ATTNSCOPE_MPI_STATS="1")
    launcher = [a.mpirun, "--oversubscribe", "-q"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    tmp = tempfile.mkdtemp(prefix="bench-mpi-")
    results = []

    def cmd_args(cmd, out):
        if cmd == "sparsity":
            return ["sparsity", a.trace, "--summary-only", "--quiet"] + a.sparsity_args.split()
        return ["report", a.trace, "-o", out, "--quiet"]

    for rep in range(a.reps if a.commands else 0):
        for cmd in a.commands.split(","):
            ref_out = os.path.join(tmp, f"ref-{cmd}.out")
            ref_file = os.path.join(tmp, "ref.html")
            r = run([a.ref] + cmd_args(cmd, ref_file), env, ref_out)
            r.update(rep=rep, cmd=cmd, config="today (1 process)")
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)
            for p in [int(x) for x in a.ranks.split(",")]:
                out = os.path.join(tmp, f"p{p}-{cmd}.out")
                html = os.path.join(tmp, f"p{p}.html")
                r = run(launcher + ["-n", str(p), a.bin] + cmd_args(cmd, html), envs, out)
                if cmd == "sparsity":
                    same = open(out, "rb").read() == open(ref_out, "rb").read()
                else:
                    same = masked(html) == masked(ref_file)
                r.update(rep=rep, cmd=cmd, config=f"mpirun -n {p}", identical=same)
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)
    if a.records:
        for prog, name in ((a.ref, "today (held)"), (a.bin, "streamed")):
            for layer in (["--layer", "0"], []):
                r = run([prog, "sparsity", a.trace, "--json", "--quiet", "--method",
                         "topk,sink-window"] + layer, env, None)
                r.update(cmd="sparsity --json records", config=name,
                         layers=1 if layer else "all")
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)
    print("\nmedians (wall s, cpu s) per command and configuration:")
    keys = sorted({(r["cmd"], r["config"]) for r in results if "rep" in r})
    for r in results:
        if "layers" in r:
            print(f"  {r['cmd']} {r['config']:14s} layers {r['layers']}: peak RSS "
                  f"{r['maxrss_kib'] / 1024:.0f} MiB, wall {r['wall']:.1f} s")
    for k in keys:
        rs = [r for r in results if (r.get("cmd"), r.get("config")) == k and "rep" in r]
        print(f"  {k[0]:9s} {k[1]:20s} wall {statistics.median(x['wall'] for x in rs):8.1f}  "
              f"cpu {statistics.median(x['cpu'] for x in rs):8.1f}  "
              f"load {statistics.median(x['load'] for x in rs):4.1f}  n={len(rs)}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
