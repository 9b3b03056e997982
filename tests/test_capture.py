#!/usr/bin/env python3
"""Test of data/capture/attnscope_capture.py on tiny randomly initialised models (no download).

Builds tiny models from transformers' config classes: Llama with GQA (4 query heads, 2 kv
heads), Qwen2 (q/k/v biases), Qwen3 (q-norm and k-norm before RoPE; when transformers has it),
Mistral (GQA; its sliding window larger than N, and a window smaller than N, which must be
refused) and GPT-2 (learned positions; per-layer scales), runs the capture tool on them (decode
and prefill modes, f32 and f64), and checks that each trace reproduces the model's own attention
output: softmax(scale q K[0..p]^T) V[0..p] computed in float64 NumPy from the trace (read with a
small independent safetensors parser) against the per-head outputs the tool recorded from inside
the model; negative controls (a 1.25x wrong scale, no causal mask) must be detected. With $AS_BIN
(set by ctest), the same comparison is made with `attnscope attend TRACE --json`, and `attnscope
info` must accept the trace. Also checks the bundled sample against its reference, when present.
The captures run the tool's main() in this process (one torch import); one runs the command line.

Exit 0: pass; 1: a check failed; 77: skipped (numpy missing, or torch/transformers/safetensors
missing, in which case only the bundled samples are checked, and a failure there still exits 1).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AS_SRC") or os.path.dirname(HERE)
TOOL = os.path.join(SRC, "data", "capture", "attnscope_capture.py")
SAMPLE = os.path.join(SRC, "data", "samples", "smollm2-135m-needle-2k.safetensors")

try:
    import numpy as np
except ImportError as e:
    print(f"SKIP: test_capture needs numpy ({e})")
    sys.exit(77)
try:
    import safetensors  # noqa: F401
    import torch
    import transformers  # noqa: F401
    MISSING = None
except ImportError as e:
    MISSING = e.name  # the capture part is skipped; the bundled samples are still checked

PASSED, FAILED = [], []


def check(name, ok, detail=""):
    (PASSED if ok else FAILED).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


# ---------------------------------------------------------------------------------------------
# independent reader (the format by hand: 8-byte LE header length, JSON header, raw data)

def read_safetensors(path):
    dt = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I32": np.int32,
          "I64": np.int64, "BF16": np.uint16}
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    data = blob[8 + hlen:]
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        x = np.frombuffer(data[a:b], dtype=np.dtype(dt[h["dtype"]]).newbyteorder("<"))
        if h["dtype"] == "BF16":
            x = (x.astype(np.uint32) << 16).view(np.float32)
        out[name] = x.reshape(h["shape"])
    return out, meta, header


def dense_reference(trace, meta, causal=True):
    """layer -> [Hq, T, d] float64 outputs computed from the trace (causal=False: every query
    sees all N keys, the negative control for a missing causal mask)."""
    scale = float(meta["scale"])
    res = {}
    for L in meta["layers"].split(","):
        q = trace[f"layers.{L}.q"].astype(np.float64)
        k = trace[f"layers.{L}.k"].astype(np.float64)
        v = trace[f"layers.{L}.v"].astype(np.float64)
        pos = trace[f"layers.{L}.q_pos"]
        g = q.shape[0] // k.shape[0]
        o = np.zeros_like(q)
        for h in range(q.shape[0]):
            for i, p in enumerate(pos):
                end = p + 1 if causal else k.shape[1]
                s = scale * (k[h // g, :end] @ q[h, i])
                w = np.exp(s - s.max())
                o[h, i] = (w / w.sum()) @ v[h // g, :end]
        res[int(L)] = o
    return res


def max_rel_err(ours, ref):
    """max over (layer, head, query) of ||o - o_ref||_inf / ||o_ref||_inf."""
    worst = 0.0
    for L, o in ours.items():
        r = ref[f"layers.{L}.out"].astype(np.float64)
        num = np.abs(o - r).max(axis=-1)
        den = np.maximum(np.abs(r).max(axis=-1), 1e-300)
        worst = max(worst, float((num / den).max()))
    return worst


# ---------------------------------------------------------------------------------------------

_TOOL_MODULE = None


def _tool_in_process(args):
    """Run the tool's main() in this process (saves the ~5 s torch/transformers import of a new
    interpreter per capture); returns a CompletedProcess like subprocess.run."""
    global _TOOL_MODULE
    import contextlib
    import importlib.util
    import io
    import traceback
    if _TOOL_MODULE is None:
        spec = importlib.util.spec_from_file_location("attnscope_capture", TOOL)
        _TOOL_MODULE = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_TOOL_MODULE)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = _TOOL_MODULE.main(list(args))
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
        except Exception:  # a crash of the tool is a failure, not an abort of the whole test
            traceback.print_exc()
            rc = 1
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def run_tool(args, expect=0, fresh=False):
    """fresh=True runs `python3 attnscope_capture.py ...` as its own process (the command line
    as users run it); otherwise main() runs in this process."""
    cmd = [sys.executable, TOOL] + args
    if fresh:
        p = subprocess.run(cmd, capture_output=True, text=True)
    else:
        p = _tool_in_process(args)
    if p.returncode != expect:
        print("command:", " ".join(cmd))
        print(p.stdout[-3000:], p.stderr[-3000:])
    return p


def as_bin_attend_available():
    b = os.environ.get("AS_BIN")
    if not b or not os.access(b, os.X_OK):
        return None, "AS_BIN is not set or not executable"
    p = run_as([b, "help", "attend"])
    if p.returncode != 0:
        return None, f"'{b} help attend' exited {p.returncode} (no attend command yet)"
    return b, ""


def attend_outputs(as_bin, trace_path, hq, t, d):
    p = run_as([as_bin, "attend", trace_path, "--json"])
    if p.returncode != 0:
        raise RuntimeError(f"attnscope attend exited {p.returncode}: {p.stderr.strip()[:300]}")
    doc = json.loads(p.stdout)
    recs = []

    def walk(x):
        if isinstance(x, dict):
            if x.get("record") == "attend" and "output" in x:
                recs.append(x)
            else:
                for v in x.values():
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(doc)
    out = {}
    for r in recs:
        o = out.setdefault(int(r["layer"]), np.full((hq, t, d), np.nan))
        o[int(r["head"]), int(r["query"])] = r["output"]
    return out


def run_as(args):
    try:
        return subprocess.run(args, capture_output=True, text=True)
    except OSError as e:  # the program vanished (rebuilt) under us
        return subprocess.CompletedProcess(args, 127, "", f"cannot run {args[0]}: {e}")


def verify_trace(label, path, bound, as_bin, nq, npy_dir=None):
    trace, meta, header = read_safetensors(path)
    ref, rmeta, _ = read_safetensors(path[:-len(".safetensors")] + ".ref.safetensors")
    L0 = meta["layers"].split(",")[0]
    hq, t, d = trace[f"layers.{L0}.q"].shape
    hkv, n, _ = trace[f"layers.{L0}.k"].shape
    check(f"{label}: metadata", meta.get("format") == "attnscope-trace" and
          meta.get("format_version") == "1" and float(meta["scale"]) > 0 and
          "rope_applied" in meta and meta.get("model"), json.dumps(
              {k: meta.get(k) for k in ("model", "scale", "rope_applied", "layers", "dtype")}))
    pos = trace[f"layers.{L0}.q_pos"]
    check(f"{label}: shapes and positions", t == nq and hq % hkv == 0 and
          header[f"layers.{L0}.q_pos"]["dtype"] == "I32" and int(pos[-1]) == n - 1 and
          list(pos) == list(range(n - t, n)), f"Hq={hq} Hkv={hkv} N={n} T={t} d={d}")
    ours = dense_reference(trace, meta)
    err = max_rel_err(ours, ref)
    check(f"{label}: NumPy float64 reproduces the model's attention output", err <= bound,
          f"max rel err {err:.3e} (bound {bound:.1e})")
    # negative controls: the check must notice a wrong scale or a missing causal mask
    bad = dict(meta, scale=repr(float(meta["scale"]) * 1.25))
    err_bad = max_rel_err(dense_reference(trace, bad), ref)
    check(f"{label}: a 1.25x wrong scale is detected", err_bad > max(10 * err, 2 * bound),
          f"max rel err {err_bad:.3e}")
    if t > 1:  # with one query (at N-1) the mask hides nothing
        err_nm = max_rel_err(dense_reference(trace, meta, causal=False), ref)
        check(f"{label}: a missing causal mask is detected", err_nm > max(10 * err, 2 * bound),
              f"max rel err {err_nm:.3e}")
    if npy_dir:
        same = all(np.array_equal(np.load(os.path.join(npy_dir, name + ".npy")),
                                  trace[name].astype(np.load(os.path.join(
                                      npy_dir, name + ".npy")).dtype)) for name in trace)
        with open(os.path.join(npy_dir, "metadata.json")) as f:
            md2 = json.load(f)
        check(f"{label}: .npy directory holds the same tensors and metadata",
              same and md2.get("scale") == meta["scale"] and md2.get("layers") == meta["layers"])
    if as_bin:
        p = run_as([as_bin, "info", path])
        check(f"{label}: attnscope info exits 0", p.returncode == 0,
              p.stderr.strip()[:200] if p.returncode else "")
        if npy_dir:
            p = run_as([as_bin, "info", npy_dir])
            check(f"{label}: attnscope info on the .npy directory exits 0", p.returncode == 0,
                  p.stderr.strip()[:200] if p.returncode else "")
        try:
            outs = attend_outputs(as_bin, path, hq, t, d)
            complete = set(outs) == set(ours) and all(not np.isnan(o).any() for o in outs.values())
            err_c = max_rel_err(outs, ref) if complete else float("inf")
            err_np = max(float(np.abs(outs[L] - ours[L]).max()) for L in ours) if complete else -1
            check(f"{label}: attnscope attend reproduces the model's attention output",
                  complete and err_c <= bound,
                  f"max rel err {err_c:.3e} (bound {bound:.1e}); vs NumPy max abs diff {err_np:.1e}")
        except (RuntimeError, ValueError, KeyError) as e:
            check(f"{label}: attnscope attend", False, str(e))
    return err


def check_samples(as_bin):
    """The bundled real samples (numpy only): the main one reproduces its model's outputs."""
    if os.path.exists(SAMPLE):
        err = verify_trace("bundled sample", SAMPLE, 0.15, as_bin, 16)
        print(f"note: bundled sample (bf16 storage) max rel err {err:.3e}; f32 captures of "
              "the same model reproduce to about 2e-5")
    else:
        print(f"note: {SAMPLE} absent: sample check skipped")
    other = os.path.join(os.path.dirname(SAMPLE), "smollm2-135m-code-1k.safetensors")
    if os.path.exists(other):
        tr, meta, _ = read_safetensors(other)
        finite = all(np.isfinite(x.astype(np.float64)).all() for x in tr.values())
        check("code sample: readable, finite, causal positions", finite and
              meta.get("format") == "attnscope-trace" and
              int(tr[f"layers.{meta['layers'].split(',')[0]}.q_pos"][-1]) ==
              int(meta["n_tokens"]) - 1)
        if as_bin:
            p = run_as([as_bin, "info", other])
            check("code sample: attnscope info exits 0", p.returncode == 0, p.stderr.strip()[:200])


def main():
    as_bin, why = as_bin_attend_available()
    if not as_bin:
        print(f"note: {why}: checking with NumPy only, not with attnscope attend/info")
    if MISSING:
        check_samples(as_bin)
        print(f"capture: {len(PASSED)} passed, {len(FAILED)} failed")
        if FAILED:
            return 1
        print(f"SKIP: the capture part needs torch, transformers and safetensors "
              f"({MISSING} is missing); only the bundled samples were checked")
        return 77
    tmp = tempfile.mkdtemp(prefix="attnscope-capture-test-")
    try:
        import transformers as tf
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(1234)
        # initializer_range 0.3 makes the scores spread over several units, so that attention is
        # far from uniform and a wrong scale, mask or key would show.
        rotary = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=512, initializer_range=0.3, rope_theta=50000.0)
        # name -> (config class, model class, extra config); a family this transformers lacks
        # is reported and skipped (Qwen3 is newer than the others)
        families = {
            "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
            "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
            "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
            "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4096}),
            "mistral-swa": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 64}),
        }
        have = set()
        for name, (cc, mc, extra) in families.items():
            if not (hasattr(tf, cc) and hasattr(tf, mc)):
                print(f"note: transformers {tf.__version__} has no {cc}: {name} not tested")
                continue
            model = getattr(tf, mc)(getattr(tf, cc)(**dict(rotary, **extra)))
            model.save_pretrained(os.path.join(tmp, name))
            have.add(name)
        gpt2 = GPT2Config(vocab_size=96, n_embd=64, n_layer=3, n_head=4, n_positions=512,
                          initializer_range=0.3, bos_token_id=0, eos_token_id=0)
        GPT2LMHeadModel(gpt2).save_pretrained(os.path.join(tmp, "gpt2"))
        gpt2i = GPT2Config(vocab_size=96, n_embd=64, n_layer=3, n_head=4, n_positions=512,
                           initializer_range=0.3, scale_attn_by_inverse_layer_idx=True,
                           bos_token_id=0, eos_token_id=0)
        GPT2LMHeadModel(gpt2i).save_pretrained(os.path.join(tmp, "gpt2i"))
        ids = os.path.join(tmp, "ids.npy")
        np.save(ids, np.random.default_rng(7).integers(0, 96, 400).astype(np.int64))

        cases = [
            # label, model, extra args, T, bound, expected scale
            ("llama-gqa f32 decode", "llama", ["--tokens", "300"], 8, 1e-5, 16 ** -0.5),
            ("qwen2 f32 decode", "qwen2", ["--tokens", "200"], 6, 1e-5, 16 ** -0.5),
            ("qwen3 q/k-norm f32 decode", "qwen3", ["--tokens", "200"], 6, 1e-5, 16 ** -0.5),
            ("mistral-gqa f32 decode", "mistral", ["--tokens", "200"], 6, 1e-5, 16 ** -0.5),
            # float64 model: Llama's eager attention still takes its softmax in float32, so the
            # model's own output is only f32-accurate; the case checks the F64 path end to end.
            ("llama-gqa f64 prefill", "llama", ["--tokens", "257", "--mode", "prefill",
                                                "--chunk", "64", "--compute-dtype", "float64",
                                                "--dtype", "f64"], 5, 1e-5, 16 ** -0.5),
            ("gpt2 f32 decode", "gpt2", ["--tokens", "200"], 6, 1e-5, 16 ** -0.5),
            ("gpt2 inverse-layer scale, layer 2", "gpt2i", ["--tokens", "150", "--layers", "2"],
             4, 1e-5, 16 ** -0.5 / 3),
        ]
        traces = {}
        for i, (label, model, extra, t, bound, scale) in enumerate(cases):
            if model not in have and not model.startswith("gpt2"):
                continue
            out = os.path.join(tmp, label.replace(" ", "_").replace(",", "").replace("/", "")
                               + ".safetensors")
            npy = out[:-len(".safetensors")] + "_npy"
            p = run_tool(["--model", os.path.join(tmp, model), "--prompt-ids", ids, "-T", str(t),
                          "-o", out, "--npy-dir", npy, "--answer-tokens", "3"] + extra,
                         fresh=(i == 0))
            if not check(f"{label}: capture tool exits 0", p.returncode == 0):
                continue
            traces[label] = out
            _, meta, _ = read_safetensors(out)
            check(f"{label}: scale is the model's", abs(float(meta["scale"]) - scale) < 1e-15,
                  f"{meta['scale']} (expected {scale!r})")
            check(f"{label}: rope_applied", meta["rope_applied"] ==
                  ("false" if model.startswith("gpt2") else "true"))
            check(f"{label}: rope_theta is the config's",
                  meta.get("rope_theta") == (None if model.startswith("gpt2") else "50000"),
                  str(meta.get("rope_theta")))
            want_type = "gpt2" if model.startswith("gpt2") else model
            check(f"{label}: model_type is {want_type}", meta.get("model_type") == want_type,
                  meta.get("model_type", "(none)"))
            verify_trace(label, out, bound, as_bin, t, npy_dir=npy)

        # decode steps and a single causal prefill give the same queries and keys
        a = read_safetensors(traces["llama-gqa f32 decode"])[0] \
            if "llama-gqa f32 decode" in traces else {}
        pre = os.path.join(tmp, "llama_prefill.safetensors")
        p = run_tool(["--model", os.path.join(tmp, "llama"), "--prompt-ids", ids, "-T", "8",
                      "--tokens", "300", "--mode", "prefill", "--chunk", "100", "-o", pre])
        if check("llama prefill capture exits 0", p.returncode == 0) and a:
            b, _, _ = read_safetensors(pre)
            diff = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
            check("decode-step and prefill captures agree", diff < 1e-4, f"max abs diff {diff:.2e}")

        # refusals: one line, exit 2
        p = run_tool(["--model", os.path.join(tmp, "gpt2i"), "--prompt-ids", ids, "--tokens",
                      "100", "-o", os.path.join(tmp, "x.safetensors")], expect=2)
        check("per-layer scales in one trace are refused (exit 2)", p.returncode == 2 and
              "scale" in p.stderr, p.stderr.strip()[-160:])
        p = run_tool(["--model", os.path.join(tmp, "llama"), "--prompt-ids", ids, "--tokens",
                      "399", "-T", "4", "--layers", "7", "-o", os.path.join(tmp, "y.safetensors")],
                     expect=2)
        check("an out-of-range layer is refused (exit 2)", p.returncode == 2)
        if "mistral-swa" in have:
            p = run_tool(["--model", os.path.join(tmp, "mistral-swa"), "--prompt-ids", ids,
                          "--tokens", "100", "-T", "4", "-o", os.path.join(tmp, "w.safetensors")],
                         expect=2)
            last = (p.stderr.strip().splitlines() or [""])[-1]
            check("a sliding window smaller than N is refused (exit 2)", p.returncode == 2 and
                  "sliding" in last, last[-160:])
            p = run_tool(["--model", os.path.join(tmp, "mistral-swa"), "--prompt-ids", ids,
                          "--tokens", "100", "-T", "4", "--layers", "full", "-o",
                          os.path.join(tmp, "w.safetensors")], expect=2)
            last = (p.stderr.strip().splitlines() or [""])[-1]
            check("--layers full with no full-attention layer is refused (exit 2)",
                  p.returncode == 2 and "sliding" in last and
                  not os.path.exists(os.path.join(tmp, "w.safetensors")), last[-160:])
        p = run_tool(["--model", os.path.join(tmp, "nope"), "--prompt-ids", ids, "-o",
                      os.path.join(tmp, "z.safetensors")], expect=2, fresh=True)
        check("a missing model is refused (exit 2, command line)", p.returncode == 2 and
              p.stderr.count("\n") == 1, p.stderr.strip()[-160:])

        # the bundled real sample reproduces its model's outputs (bf16 storage: loose bound)
        check_samples(as_bin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not as_bin:
        print(f"note: NumPy check only ({why})")
    print(f"capture: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
