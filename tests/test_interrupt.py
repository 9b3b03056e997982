#!/usr/bin/env python3
"""Long runs on large traces: the progress bar, Ctrl-C, and a file truncated while mapped.

A large trace of zeros (sparse file: no disk used, every value 0) keeps `report`, `compare`
and `sparsity` busy for many seconds. Then:
  - with --progress and stderr a pipe, a bar with an ETA appears on stderr; with --quiet (even
    with --progress) nothing does; without either, stderr not being a terminal, nothing does;
  - SIGINT (Ctrl-C) ends report / compare -o / sim gen (which streams its output into a
    temporary file): the process dies of SIGINT, and no output file and no temporary file
    remain;
  - the trace truncated by another process while attnscope has it mapped (SIGBUS when a page
    past the new end is touched): exit 2, one line naming the file, nothing on stdout, no
    output file and no temporary file.

Exit 0 pass, 1 a check failed, 77 attnscope not built.
"""
import json
import os
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

if not os.path.exists(BIN):
    print(f"SKIP: {BIN} not built")
    sys.exit(77)
HELP = subprocess.run([BIN, "help"], capture_output=True, text=True).stdout
HAVE_REPORT = "  report " in HELP
HAVE_SIM = "  sim " in HELP

FAILED = []


def check(name, ok, detail=""):
    if not ok:
        FAILED.append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def zeros_trace(path, n, hq=8, hkv=2, t=4, d=128):
    """A valid F32 trace of zeros: header, then a hole (a sparse file reads as zeros)."""
    shapes = [("layers.0.q", (hq, t, d)), ("layers.0.k", (hkv, n, d)), ("layers.0.v", (hkv, n, d))]
    h = {"__metadata__": {"format": "attnscope-trace", "format_version": "1", "model": "zeros"}}
    off = 0
    for name, shape in shapes:
        nb = 4
        for s in shape:
            nb *= s
        h[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        f.truncate(8 + len(hb) + off)


def leftovers(d, keep):
    return sorted(f for f in os.listdir(d) if f not in keep)


def start(args, cwd):
    return subprocess.Popen([BIN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def main():
    tmp = tempfile.mkdtemp(prefix="as_interrupt_")
    try:
        big = os.path.join(tmp, "zeros.safetensors")
        zeros_trace(big, 1 << 20)  # 2 GiB of zeros: minutes of work, no disk
        keep = {"zeros.safetensors"}

        # ---- the progress bar ------------------------------------------------------------
        p = start(["sparsity", big, "--progress"], tmp)
        time.sleep(3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        check("--progress draws a bar with an ETA on a pipe", b"ETA" in err and b"[" in err,
              repr(err[-300:]))
        check("SIGINT ends sparsity", p.returncode == -signal.SIGINT, f"exit {p.returncode}")
        check("sparsity interrupted: nothing on stdout", out == b"", repr(out[:200]))
        for extra in (["--quiet", "--progress"], []):
            p = start(["sparsity", big, *extra], tmp)
            time.sleep(2)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
            check(f"no bar with {extra or 'stderr not a terminal'}", b"ETA" not in err,
                  repr(err[-300:]))

        # ---- Ctrl-C leaves no partial output -----------------------------------------------
        runs = []
        if HAVE_REPORT:
            runs.append(("report", ["report", big, "-o", "out.html", "--progress"], 2.0))
            runs.append(("compare -o", ["compare", big, big, "-o", "cmp.html", "--quiet"], 2.0))
        if HAVE_SIM:  # SIGINT while the output streams into its temporary file
            runs.append(("sim gen", ["sim", "gen", "-o", "gen.safetensors", "--n", "2M", "--d",
                                     "64", "--heads", "2", "--quiet"], 1.5))
        for name, args, wait in runs:
            p = start(args, tmp)
            time.sleep(wait)
            running = p.poll() is None
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
            left = leftovers(tmp, keep)
            check(f"{name}: still running when interrupted", running)
            check(f"{name}: ended by SIGINT", p.returncode == -signal.SIGINT, f"exit {p.returncode}")
            check(f"{name}: no output or temporary file left", not left, str(left))
            for f in left:
                os.remove(os.path.join(tmp, f))

        # ---- a file truncated while mapped -------------------------------------------------
        # --progress tells the phase: truncate while the values are checked ("checking"), and
        # once the analysis has begun (the bar carries the command's name)
        cmds = [("sparsity", ["sparsity", "VICTIM", "--progress"])]
        if HAVE_REPORT:
            cmds.append(("report", ["report", "VICTIM", "-o", "out.html", "--progress"]))
        for name, args in cmds:
            for when in ("checking", name):
                victim = os.path.join(tmp, "victim.safetensors")
                zeros_trace(victim, 1 << 20)
                p = start([victim if a == "VICTIM" else a for a in args], tmp)
                err = b""
                t0 = time.monotonic()
                while when.encode() + b" " not in err and time.monotonic() - t0 < 120:
                    chunk = os.read(p.stderr.fileno(), 4096)
                    if not chunk:
                        break
                    err += chunk
                running = p.poll() is None
                os.truncate(victim, 4096)
                out, rest = p.communicate(timeout=120)
                os.remove(victim)
                # the bar's redraws end in '\r'; the message is the one line after them
                lines = [ln for ln in (err + rest).decode(errors="replace").replace("\r", "\n")
                         .splitlines() if ln.strip() and "ETA" not in ln]
                left = leftovers(tmp, keep)
                label = f"{name} truncated in phase '{when}'"
                check(f"{label}: still running when truncated", running)
                check(f"{label}: exit 2", p.returncode == 2, f"exit {p.returncode}")
                check(f"{label}: one line naming the file",
                      len(lines) == 1 and victim in lines[0], repr(lines))
                check(f"{label}: nothing on stdout", out == b"", repr(out[:200]))
                check(f"{label}: no output or temporary file left", not left, str(left))
                for f in left:
                    os.remove(os.path.join(tmp, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
