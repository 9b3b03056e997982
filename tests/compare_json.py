#!/usr/bin/env python3
"""Compare two JSON outputs of attnscope field by field: strings, booleans, nulls and integers
exactly, other numbers to a relative tolerance; print the largest relative difference of each
field and exit 1 if any field is out of tolerance or the structure differs.

    python3 tests/compare_json.py REF.json NEW.json [--rtol 1e-9] [--exact FIELD...]
        [--loose FIELD=RTOL...]

Used for the shared sweep (issue 18, docs/benchmarks.md): its sums run in another order than
as_sp_run's, so records agree with the reference build's to rounding, not bit for bit.
"""
import argparse
import json
import math
import sys


# differences of nearly equal outputs (||o - o_S|| with o_S close to o) carry an absolute
# rounding error of a few u ||o||: these fields are compared relative to max(|x|, FLOOR),
# FLOOR = 1e-6 ||o|| (the record's "norm") or 1e-6 for the relative fields
NORM_FLOOR = {"abs_error": 1e-6, "bound": 1e-6, "subset_bound": 1e-6}
PLAIN_FLOOR = {"rel_error": 1e-6, "rel_bound": 1e-6}


def walk(a, b, path, key, out, bad, norm=None):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            bad.append(f"{path}: keys {sorted(set(a) ^ set(b))}")
            return
        nrm = a.get("norm") if isinstance(a.get("norm"), (int, float)) else None
        for k in a:
            walk(a[k], b[k], f"{path}.{k}", k, out, bad, nrm)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            bad.append(f"{path}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", key, out, bad, norm)
    elif isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or \
            isinstance(a, str) or isinstance(b, str):
        if a != b:
            bad.append(f"{path}: {a!r} vs {b!r}")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b:
            r = 0.0
        elif math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
            r = math.inf
        else:
            floor = PLAIN_FLOOR.get(key, 0.0)
            if key in NORM_FLOOR and norm is not None:
                floor = NORM_FLOOR[key] * norm
            r = abs(a - b) / max(abs(a), abs(b), floor)
        cur = out.get(key)
        if cur is None or r > cur[0]:
            out[key] = (r, path, a, b)
    else:
        bad.append(f"{path}: {type(a).__name__} vs {type(b).__name__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("new")
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--exact", nargs="*", default=[])
    ap.add_argument("--loose", nargs="*", default=[])
    args = ap.parse_args()
    loose = {k: float(v) for k, v in (x.split("=") for x in args.loose)}
    out, bad = {}, []
    walk(json.load(open(args.ref)), json.load(open(args.new)), "$", None, out, bad)
    for key, (r, path, a, b) in sorted(out.items(), key=lambda x: -x[1][0]):
        tol = 0.0 if key in args.exact else loose.get(key, args.rtol)
        flag = "" if r <= tol else "  OUT OF TOLERANCE"
        if r > 0 or flag:
            print(f"{key:24s} max rel diff {r:.3g} (tol {tol:.3g}) at {path}: {a!r} vs {b!r}{flag}")
        if flag:
            bad.append(f"{path}: {a!r} vs {b!r} (rel {r:.3g})")
    for b in bad[:20]:
        print("DIFFERS", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
