#!/usr/bin/env python3
"""The developers' guide's rule "module foo = DIR/as_foo.h + DIR/as_foo.c, tested by
tests/test_foo.c" holds for every module of analysis/, data/, sim/, report/ and mpi/: each header
DIR/as_foo.h has its tests/test_foo.c, and each DIR/as_foo.c its header. Exceptions are named
here and in DEVELOPERS.md: analysis/as_sparsity.h (only includes the five as_sp_* modules; the
command's tests are tests/test_sparsity.c) and gpu/ (as_gpu.h over several .cu files, tested on
the device by tests/test_gpu_kernels.cu)."""
import os
import sys

SRC = os.environ.get("AS_SRC") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXCEPT_NO_C = {"analysis/as_sparsity.h"}
fails = []
for d in ("analysis", "data", "sim", "report", "mpi"):
    names = sorted(os.listdir(os.path.join(SRC, d)))
    for f in names:
        if not f.startswith("as_"):
            continue
        base, ext = os.path.splitext(f)
        mod = base[3:]
        rel = f"{d}/{f}"
        if ext == ".h":
            if not os.path.exists(os.path.join(SRC, "tests", f"test_{mod}.c")):
                fails.append(f"{rel}: no tests/test_{mod}.c")
            if rel not in EXCEPT_NO_C and base + ".c" not in names:
                fails.append(f"{rel}: no {d}/{base}.c")
        elif ext == ".c" and base + ".h" not in names:
            fails.append(f"{rel}: no {d}/{base}.h")
if not os.path.exists(os.path.join(SRC, "tests", "test_gpu_kernels.cu")):
    fails.append("gpu/as_gpu.h: no tests/test_gpu_kernels.cu")
for f in fails:
    print("FAIL:", f)
print(f"module tests: {len(fails)} missing" if fails else "module tests: every module has its test")
sys.exit(1 if fails else 0)
