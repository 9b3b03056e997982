#!/usr/bin/env python3
"""Rebuild .dev/gpu/whl/fi-trim.tar.xz: FlashInfer, trimmed, with bench's decode kernels prebuilt.

bench.py compares against FlashInfer's BatchDecodeWithPagedKVCacheWrapper (HND, fa2, bf16,
int32 indptr, no RoPE/window/soft-cap), with and without tensor cores, head_dim 64 and 128.
The GPU machine has no network and little time, so those JIT modules are compiled here (no
GPU needed) with FLASHINFER_CUDA_ARCH_LIST=9.0 (FlashInfer maps it to sm_90a), as
gpu/run_device.sh's fi_setup sets it. There (FLASHINFER_WORKSPACE_BASE=/tmp/fi/fiws) FlashInfer
looks for /tmp/fi/fiws/.cache/flashinfer/<version>/90a/cached_ops/<uri>/<uri>.so, and
bench.py's fi_import skips the rebuild when it exists. The tarball holds flashinfer/ minus
the CUDA headers/sources only compiling needs (the few templates and host sources that the
module generators read at run time are kept) and fiws/ with just the .so files.

Needs nvcc 13 (PATH or CUDA_HOME), ninja, torch, jinja2, filelock, requests, nvidia-ml-py, the
flashinfer wheel (pip download --no-deps flashinfer-python==0.7.2.post1), an apache-tvm-ffi wheel
for *this* Python (keep the cp312 one in .dev for the device; the .so files use neither the
Python nor the torch ABI). About 6 min on 2 cores. It wipes --work and /tmp/fi, then tests
a fresh /tmp/fi made like fi_setup (import + load of each module, no GPU). Run from the repo:
  nice -n 10 python3 gpu/bench/fi_prebuild.py \
      --fi-whl DIR/flashinfer_python-0.7.2.post1-py3-none-any.whl \
      --tvm-whl DIR/apache_tvm_ffi-0.1.15.post2-cp311-*.whl
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile

FIWS = "/tmp/fi/fiws"  # fi_setup's FLASHINFER_WORKSPACE_BASE (paths below it are relative)
HEAD_DIMS = (64, 128)
# data/csrc files read at run time by the module generators (templates, host sources)
CSRC_KEEP = ("batch_decode_customize_config.jinja", "batch_decode_kernel_inst.jinja",
             "batch_decode.cu", "batch_decode_jit_binding.cu",
             "batch_prefill_customize_config.jinja", "batch_prefill_paged_kernel_inst.jinja",
             "batch_prefill_ragged_kernel_inst.jinja", "batch_prefill.cu",
             "batch_prefill_jit_binding.cu", "batch_prefill_paged.cuh",
             "batch_prefill_paged.cu", "batch_prefill_paged_jit_binding.cu")
DROP_DATA = ("csrc", "cutlass", "cccl", "include", "spdlog")


def specs():
    """The JitSpecs plan() builds for bench.py's FIDecode (same generators, same args)."""
    import torch
    from flashinfer.jit.attention.modules import (_gen_batch_prefill_primary_module,
                                                  gen_batch_decode_module)
    bf, i32 = torch.bfloat16, torch.int32
    out = []
    for d in HEAD_DIMS:
        # decode.py plan(), use_tensor_cores=False -> get_batch_decode_module(...)
        out.append(gen_batch_decode_module(bf, bf, bf, i32, d, d, 0, False, False))
        # use_tensor_cores=True, backend fa2 -> get_batch_prefill_module("fa2", ...) primary
        # (equal K/V strides; the lazy independent-stride module is never loaded by bench)
        out.append(_gen_batch_prefill_primary_module("fa2", bf, bf, bf, i32, d, d, 0,
                                                     False, False, False))
    return out


def child_build():
    from flashinfer.jit.core import build_jit_specs
    sp = specs()
    build_jit_specs(sp, verbose=True, skip_prebuilt=True)
    for s in sp:
        print("built", s.jit_library_path, flush=True)


def child_load():
    """Get each module through the wrapper's own getters, with bench.py's fi_import patch."""
    import torch
    from flashinfer.decode import get_batch_decode_module
    from flashinfer.jit.core import JitSpecNvcc
    from flashinfer.prefill import get_batch_prefill_module

    def build(self, *args, **kw):  # as bench.py, but fail instead of compiling
        if not self.jit_library_path.exists():
            raise RuntimeError(f"not prebuilt: {self.jit_library_path}")

    JitSpecNvcc.build = build
    bf, i32 = torch.bfloat16, torch.int32
    for d in HEAD_DIMS:
        m = get_batch_decode_module(bf, bf, bf, i32, d, d, 0, False, False)
        p = get_batch_prefill_module("fa2", bf, bf, bf, i32, d, d, 0, False, False, False)
        print(f"d={d} loaded: decode {sorted(vars(m))}, fa2 prefill {sorted(vars(p))}",
              flush=True)


def env_for(pydir, ws):
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=ws, FLASHINFER_CUDA_ARCH_LIST="9.0")
    env["PYTHONPATH"] = pydir + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MAX_JOBS", "2")
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fi-whl", required=True)
    ap.add_argument("--tvm-whl", required=True, help="apache-tvm-ffi wheel for this Python")
    ap.add_argument("--work", default="/tmp/fiwork/build")
    ap.add_argument("--out", default=".dev/gpu/whl/fi-trim.tar.xz")
    ap.add_argument("--keep-build", action="store_true", help="reuse --work (incremental)")
    ap.add_argument("--child", choices=("build", "load"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child_build() if a.child == "build" else child_load()
    me = os.path.abspath(__file__)
    full, ws, trim = (os.path.join(a.work, n) for n in ("full", "fiws", "trim"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    if not a.keep_build:
        shutil.rmtree(a.work, ignore_errors=True)
    # 1. full flashinfer + tvm-ffi in a target dir; 2. compile the modules (the workspace
    # base is free: FlashInfer's paths below it, and the .so files, do not depend on it)
    if not os.path.isdir(full):
        subprocess.run(pip + ["--target", full, a.fi_whl, a.tvm_whl], check=True)
    subprocess.run([sys.executable, me, "--fi-whl", "-", "--tvm-whl", "-", "--child", "build"],
                   env=env_for(full, ws), check=True)
    # 3. trimmed tree: flashinfer minus headers/sources, fiws with only the .so files
    shutil.rmtree(trim, ignore_errors=True)
    shutil.copytree(os.path.join(full, "flashinfer"), os.path.join(trim, "flashinfer"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    data = os.path.join(trim, "flashinfer", "data")
    for d in DROP_DATA:
        shutil.rmtree(os.path.join(data, d), ignore_errors=True)
    for f in CSRC_KEEP:
        src = os.path.join(full, "flashinfer", "data", "csrc", f)
        if os.path.exists(src):
            os.makedirs(os.path.join(data, "csrc"), exist_ok=True)
            shutil.copy2(src, os.path.join(data, "csrc", f))
    for so in glob.glob(ws + "/.cache/flashinfer/*/*/cached_ops/*/*.so"):
        dst = os.path.join(trim, "fiws", os.path.relpath(so, ws))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(so, dst)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with tarfile.open(a.out, "w:xz", preset=9) as t:
        for top in ("flashinfer", "fiws"):
            t.add(os.path.join(trim, top), arcname=top)
    print(a.out, os.path.getsize(a.out) >> 20, "MiB")
    # check: fresh /tmp/fi as fi_setup makes it (with this Python's tvm-ffi), import + load
    shutil.rmtree("/tmp/fi", ignore_errors=True)
    os.makedirs("/tmp/fi")
    subprocess.run(["tar", "-xJf", a.out, "-C", "/tmp/fi"], check=True)
    subprocess.run(pip + ["--target", "/tmp/fi", a.tvm_whl], check=True)
    subprocess.run([sys.executable, me, "--fi-whl", "-", "--tvm-whl", "-", "--child", "load"],
                   env=env_for("/tmp/fi", FIWS), check=True)


if __name__ == "__main__":
    main()
