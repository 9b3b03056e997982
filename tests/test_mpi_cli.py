#!/usr/bin/env python3
"""The MPI engine through the program (issue 19, docs/scale.md), with `mpirun -n 1/2/3`
(--oversubscribe; --allow-run-as-root when run as root):

  - every case of tests/compare_outputs.sh (entropy, rank, bottleneck, sparsity, spectrum,
    report, compare; tables, JSON, CSV, HTML; the bundled samples and a synthetic trace) gives
    the recorded single-process digests at 1, 2 and 3 ranks;
  - a trace with a NaN in its last layer: every rank stops, exit 2, exactly one line on stderr
    naming the file and the failing rank (rank 1 of 2: a worker's failure; rank 0 of 3: rank
    0's own), nothing on stdout, no report file and no temporary file left, within a timeout;
  - a rank killed (SIGKILL) in the middle of a run: the run ends within a timeout with a
    failure status and writes nothing;
  - sparsity's (layer, kv head) units (one worker a rank): byte-identical to the one-process
    run at 2 and 3 ranks (JSON, CSV, tables; --head, --query, several traces; --threads 2's
    layer units); the value limits of a layer whose overflow only a query of one kv group
    with a key of another shows: the one-process failure, found on rank 0;
  - several traces in one run: `sparsity A B --summary-only` gives, for each trace, the
    model summaries of the run on that trace alone, and a cross-trace summary; `report A B`
    (both traces' units on the ranks, one page) byte-identical at 1, 2 and 3 ranks to the
    one-process page (its clock aside, as in tests/compare_outputs.sh).

Exit 0 pass, 1 a check failed, 77 skipped (no MPI in this build, or attnscope not built).
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AS_SRC") or os.path.dirname(HERE)
BUILD = os.environ.get("AS_BUILD") or os.path.join(SRC, "build")
BIN = os.environ.get("AS_BIN") or os.path.join(BUILD, "attnscope")
MPIEXEC = os.environ.get("AS_MPIEXEC", "")

if not os.path.exists(BIN):
    print(f"SKIP: {BIN} not built")
    sys.exit(77)
if not MPIEXEC or not shutil.which(MPIEXEC):
    print("SKIP: this build has no MPI (AS_MPIEXEC unset)")
    sys.exit(77)
HELP = subprocess.run([BIN, "help"], capture_output=True, text=True).stdout
HAVE_REPORT = "  report " in HELP
S = os.path.join(SRC, "data", "samples", "smollm2-135m-needle-2k.safetensors")
C = os.path.join(SRC, "data", "samples", "smollm2-135m-code-1k.safetensors")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", LC_ALL="C")
ENV.setdefault("OPENBLAS_CORETYPE", "Haswell")
FAILED = []


def check(name, ok, detail=""):
    if not ok:
        FAILED.append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def launcher(p):
    cmd = [MPIEXEC, "--oversubscribe", "-q", "-n", str(p)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def run(p, args, timeout=300, cwd=None):
    t0 = time.monotonic()
    try:
        r = subprocess.run(launcher(p) + [BIN] + args, capture_output=True, text=True,
                           timeout=timeout, env=ENV, cwd=cwd)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return r, time.monotonic() - t0


def poisoned(src, dst, tensor):
    """A copy of src with a bf16 NaN at element 5 of tensor."""
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
        f.seek(8 + n + h[tensor]["data_offsets"][0] + 2 * 5)
        f.write(b"\xc0\x7f")


def byte_identical_outputs():
    golden = os.path.join(HERE, "data", "golden", "outputs.sha256")
    for p in (1, 2, 3):
        env = dict(ENV, RUNNER=" ".join(launcher(p)))
        r = subprocess.run(["bash", os.path.join(HERE, "compare_outputs.sh"), "check", BIN, golden],
                           capture_output=True, text=True, env=env, timeout=1500)
        check(f"compare_outputs under mpirun -n {p}", r.returncode == 0,
              (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else "")


def failing_rank(tmp):
    bad = os.path.join(tmp, "bad.safetensors")
    poisoned(S, bad, "layers.29.k")  # the last of the sample's 4 layers (0, 10, 19, 29)
    want_line = f"{bad}: tensor 'layers.29.k' holds NaN at element 5"
    cases = [["entropy", bad, "--json"], ["sparsity", bad, "--json", "--quiet"],
             ["spectrum", bad]]
    if HAVE_REPORT:
        cases.append(["report", bad, "--witness", "none", "-o", os.path.join(tmp, "r.html"),
                      "--quiet"])
    for p, layer_rank in ((2, 1), (3, 0)):  # layer 29 is unit 3: rank 1 of 2, rank 0 of 3
        for args in cases:
            name = f"{args[0]} with a NaN, {p} ranks"
            # spectrum's units are (layer, head): the ranks sharing layer 29 race to say it
            rank = None if args[0] == "spectrum" else layer_rank
            if args[0] == "report":  # unit 0 is the checksum: layer 29 is unit 4
                rank = {2: 0, 3: 1}[p]
            r, secs = run(p, args, timeout=120, cwd=tmp)
            if not check(name + ": ends within 120 s", r is not None, f"{secs:.0f} s"):
                continue
            lines = r.stderr.strip().splitlines()
            check(name + ": exit 2", r.returncode == 2, f"exit {r.returncode}")
            check(name + ": one line on stderr", len(lines) == 1, repr(r.stderr[:400]))
            suffix = f"(rank {rank} of {p})" if rank is not None else f" of {p})"
            check(name + ": names the file and the rank",
                  len(lines) == 1 and want_line in lines[0] and lines[0].endswith(suffix),
                  lines[0] if lines else "")
            check(name + ": nothing on stdout", r.stdout == "", repr(r.stdout[:200]))
            left = [f for f in os.listdir(tmp) if f != "bad.safetensors"]
            check(name + ": no file left behind", not left, repr(left))


def descends(pid, root):
    """pid is root or one of its descendants (our mpirun's ranks, not another run's)."""
    for _ in range(16):
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


def killed_rank(tmp):
    """SIGKILL rank 1 of 2 a moment into a run: the run ends, nothing is written."""
    args = launcher(2) + [BIN, "sparsity", S, "--method", "all", "--trials", "20", "--json",
                          "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            cwd=tmp, start_new_session=True)
    victim = None
    while victim is None and time.monotonic() - t0 < 60 and proc.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if (cmd and os.path.basename(cmd[0]) == b"attnscope" and
                    b"OMPI_COMM_WORLD_RANK=1" in env and descends(int(pid), proc.pid)):
                victim = int(pid)
                break
        time.sleep(0.2)
    if not check("killed rank: found rank 1", victim is not None):
        proc.kill()
        return
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        check("killed rank: the run ends within 120 s", False)
        return
    check("killed rank: the run ends within 120 s", True, f"{time.monotonic() - t0:.0f} s")
    check("killed rank: failure status", proc.returncode != 0, f"exit {proc.returncode}")
    check("killed rank: nothing on stdout", out == b"", repr(out[:200]))


def multi_trace():
    """sparsity A B --summary-only: each trace's model summaries as in its own run."""
    common = ["--summary-only", "--json", "--quiet", "--budget", "5%,25%", "--layer", "29"]
    single = {}
    for t in (S, C):
        r = subprocess.run([BIN, "sparsity", t] + common, capture_output=True, text=True, env=ENV)
        check(f"sparsity {os.path.basename(t)} alone", r.returncode == 0, r.stderr.strip())
        single[t] = [x for x in json.loads(r.stdout)["records"] if x["record"] == "model_summary"]
    for p in (1, 2, 3):
        r, _ = run(p, ["sparsity", S, C] + common)
        if not check(f"sparsity A B, {p} ranks", r is not None and r.returncode == 0,
                     r.stderr.strip() if r else "timeout"):
            continue
        recs = json.loads(r.stdout)["records"]
        for t in (S, C):
            got = [{k: v for k, v in x.items() if k != "trace"} for x in recs
                   if x["record"] == "model_summary" and x.get("trace") == t]
            check(f"sparsity A B, {p} ranks: {os.path.basename(t)}'s model summary as alone",
                  got == single[t] and got, f"{len(got)} records")
        across = [x for x in recs if x["record"] == "trace_summary"]
        check(f"sparsity A B, {p} ranks: a cross-trace summary per trace and method",
              len(across) == 2 * len(single[S]) and
              [x["trace"] for x in across[:1]] == [S], f"{len(across)} records")


def sparsity_kv_units(tmp):
    """sparsity with one worker a rank runs (layer, kv head) units (cli/cli_par.c): JSON, CSV
    and the tables byte-identical to the one-process run at 2 and 3 ranks, with --head,
    --query, several traces, and with --threads 2 (a layer a unit, its kv heads over the
    rank's threads)."""
    cases = [
        ["sparsity", S, "--threads", "1", "--json", "--quiet"],
        ["sparsity", C, "--threads", "1", "--method", "all", "--budget", "3%,25%", "--trials",
         "3", "--csv", "--quiet"],
        ["sparsity", S, "--threads", "1", "--head", "4", "--query", "3", "--json", "--quiet"],
        ["sparsity", S, "--threads", "1", "--layer", "19", "--head", "8", "--quiet"],
        ["sparsity", S, C, "--threads", "1", "--summary-only", "--json", "--quiet"],
        ["sparsity", S, "--threads", "2", "--budget", "5%,25%", "--json", "--quiet"],
    ]
    for args in cases:
        one = subprocess.run([BIN] + args, capture_output=True, env=ENV, timeout=600)
        name = " ".join(os.path.basename(a) for a in args)
        if not check(f"{name}: one process", one.returncode == 0, one.stderr.decode()[-300:]):
            continue
        for p in (2, 3):
            r, _ = run(p, args, timeout=600)
            ok = r is not None and r.returncode == 0
            check(f"{name}, {p} ranks: byte-identical to one process",
                  ok and r.stdout.encode() == one.stdout,
                  r.stderr.strip()[-300:] if r else "timeout")


def f64_trace(path, q_big, k_big, scale):
    """An F64 trace of 2 layers (4 query heads, 2 kv heads, 2 queries, 64 keys, d 8) of small
    values; in layer 0 a row of query head 0 (kv group 0) of norm q_big and a row of kv head 1
    of norm k_big."""
    hq, hkv, t, n, d = 4, 2, 2, 64, 8
    seed = [12345]

    def small():
        seed[0] = (seed[0] * 1103515245 + 12345) % 2**31
        return seed[0] / 2**31 - 0.5

    tensors = []
    for layer in range(2):
        q = [small() for _ in range(hq * t * d)]
        k = [small() for _ in range(hkv * n * d)]
        v = [small() for _ in range(hkv * n * d)]
        if layer == 0:
            q[0:d] = [q_big / d ** 0.5] * d                        # head 0, row 0
            k[(1 * n + 3) * d:(1 * n + 4) * d] = [k_big / d ** 0.5] * d  # kv head 1, row 3
        tensors += [(f"layers.{layer}.q", (hq, t, d), q), (f"layers.{layer}.k", (hkv, n, d), k),
                    (f"layers.{layer}.v", (hkv, n, d), v)]
    h = {"__metadata__": {"format": "attnscope-trace", "format_version": "1", "model": "limits",
                          "scale": scale}}
    off, blob = 0, b""
    for name, shape, vals in tensors:
        data = struct.pack(f"<{len(vals)}d", *vals)
        h[name] = {"dtype": "F64", "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blob += data
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + blob)


def limits_across_kv_heads(tmp):
    """The score bound of one kv group's query with another kv head's key: no (layer, kv head)
    unit sees both, rank 0 checks the layer from the units' norms; the run fails as the
    one-process run does (same line, with the rank), and a trace within the limits runs."""
    tmp = os.path.join(tmp, "limits")
    os.makedirs(tmp, exist_ok=True)
    bad = os.path.join(tmp, "limits.safetensors")
    f64_trace(bad, 5e149, 1e149, "10000")
    args = ["sparsity", bad, "--threads", "1", "--json", "--quiet"]
    one = subprocess.run([BIN] + args, capture_output=True, text=True, env=ENV, timeout=120)
    line = one.stderr.strip()
    check("limits across kv heads, one process: exit 2, scores may overflow",
          one.returncode == 2 and "layer 0: scores may overflow" in line, line)
    # and a part over the limits on its own (kv group 0's query norms): its unit fails
    alone = os.path.join(tmp, "limits-alone.safetensors")
    f64_trace(alone, 1e151, 1.0, "1")
    a_args = args[:1] + [alone] + args[2:]
    a_one = subprocess.run([BIN] + a_args, capture_output=True, text=True, env=ENV, timeout=120)
    a_line = a_one.stderr.strip()
    check("limits of one part, one process: exit 2, query norms overflow",
          a_one.returncode == 2 and "layer 0: query norms overflow" in a_line, a_line)
    for what, ar, want in (("across kv heads", args, line), ("of one part", a_args, a_line)):
        for p in (2, 3):
            r, secs = run(p, ar, timeout=120)
            if not check(f"limits {what}, {p} ranks: ends within 120 s", r is not None,
                         f"{secs:.0f} s"):
                continue
            got = r.stderr.strip()
            check(f"limits {what}, {p} ranks: exit 2, the one-process line and the rank",
                  r.returncode == 2 and got.startswith(want + " (rank ") and r.stdout == "",
                  f"exit {r.returncode}: {got}")
    ok = os.path.join(tmp, "limits-ok.safetensors")
    f64_trace(ok, 5e149, 1e149, "1")  # the same norms at scale 1: within the bound
    one = subprocess.run([BIN] + args[:1] + [ok] + args[2:], capture_output=True, env=ENV,
                         timeout=120)
    check("limits within, one process", one.returncode == 0, one.stderr.decode()[-300:])
    for p in (2, 3):
        r, _ = run(p, args[:1] + [ok] + args[2:], timeout=120)
        check(f"limits within, {p} ranks: byte-identical to one process",
              r is not None and r.returncode == 0 and r.stdout.encode() == one.stdout,
              r.stderr.strip() if r else "timeout")
    shutil.rmtree(tmp, ignore_errors=True)


def unclocked(path):
    """A report's bytes without its clock (when it was made, how long it took), as
    compare_outputs.sh compares them."""
    with open(path, encoding="utf-8") as f:
        h = f.read()
    h = re.sub(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC", "DATE", h)
    return re.sub(r">[0-9]+\.[0-9]{2} s<", ">SECONDS<", h)


def multi_trace_report(tmp):
    """report A B: the page of 2 and 3 ranks byte-identical to the one-process run's."""
    if not HAVE_REPORT:
        print("SKIP report A B: no report in this build")
        return
    # each run in a folder of its own, -o the same name: the command line shown is the same
    args = ["report", S, C, "--witness", "none", "--quiet", "-o", "study.html"]
    dirs = {p: os.path.join(tmp, f"study-{p}") for p in (0, 1, 2, 3)}
    for d in dirs.values():
        os.makedirs(d)
    r = subprocess.run([BIN] + args, capture_output=True, text=True, env=ENV, timeout=600,
                       cwd=dirs[0])
    if not check("report A B, one process", r.returncode == 0, r.stderr.strip()):
        return
    one = unclocked(os.path.join(dirs[0], "study.html"))
    for p in (1, 2, 3):
        out = os.path.join(dirs[p], "study.html")
        r, _ = run(p, args, timeout=600, cwd=dirs[p])
        ok = r is not None and r.returncode == 0 and os.path.exists(out)
        if check(f"report A B, {p} ranks", ok, r.stderr.strip() if r else "timeout"):
            check(f"report A B, {p} ranks: the page byte-identical to the one-process run's",
                  unclocked(out) == one)
    # a NaN in the second trace's last layer: one line naming it and the rank, no page
    bad = os.path.join(tmp, "bad-code.safetensors")
    poisoned(C, bad, "layers.29.k")
    out = os.path.join(tmp, "bad-study.html")
    r, _ = run(2, ["report", S, bad, "--witness", "none", "--quiet", "-o", out], timeout=300)
    ok = r is not None and r.returncode == 2 and r.stderr.count("\n") == 1 and \
        f"{bad}: tensor 'layers.29.k' holds NaN" in r.stderr and "of 2)" in r.stderr
    check("report A B, B with a NaN, 2 ranks: exit 2, one line naming B and the rank, no page",
          ok and not os.path.exists(out), r.stderr.strip() if r else "timeout")


def main():
    tmp = tempfile.mkdtemp(prefix="attnscope-mpi-")
    try:
        failing_rank(tmp)
        killed_rank(tmp)
        sparsity_kv_units(tmp)
        limits_across_kv_heads(tmp)
        multi_trace()
        multi_trace_report(tmp)
        byte_identical_outputs()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
