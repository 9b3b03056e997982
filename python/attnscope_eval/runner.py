"""The sweep of `attnscope eval`: per sample, one dense prefill, then every configuration decodes
from a copy of the prefilled KV cache (never recomputed). See docs/eval.md."""
from __future__ import annotations

import copy
import math
import os
import sys
import time

from . import sparse as sp
from . import tasks as tk


class EvalError(Exception):
    """Bad input: one line, exit status 2."""


def log(msg: str) -> None:
    print(f"attnscope eval: {msg}", file=sys.stderr, flush=True)


def _capture_module():
    sys.path.insert(0, tk.CAPTURE_DIR)
    import attnscope_capture as ac
    return ac


def load_model(spec: str, dtype_name: str = "f32", cache_dir: str | None = None,
               device: str = "cpu"):
    """(model, tokenizer or None, model id) through data/capture's resolver and loader, with
    the sparse attention implementation."""
    import torch
    ac = _capture_module()
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f64": torch.float64}
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "attnscope")
    sp.register()
    try:
        directory, gguf, mid = ac.resolve_model(spec, cache_dir)
        model, tok = ac.load_model(directory, gguf, dtypes[dtype_name], device, sp.ATTN_NAME)
    except ac.CaptureError as e:
        raise EvalError(str(e))
    return model, tok, mid


def model_info(model) -> dict:
    ac = _capture_module()
    cfg = ac.text_config(model)
    mods = ac.attention_modules(model)
    full = [L for L in sorted(mods) if ac.layer_window(cfg, mods[L], L) in (None, -1)
            or (ac.layer_window(cfg, mods[L], L) or 0) >= getattr(cfg, "max_position_embeddings", 0)]
    return dict(n_layers=len(mods), full_layers=full,
                context=int(getattr(cfg, "max_position_embeddings", 0) or 0),
                n_heads=int(cfg.num_attention_heads),
                n_kv_heads=int(getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)))


def _forward(model, x, cache, keep):
    ac = _capture_module()
    return ac._forward(model, x, cache, keep)


def _logprobs(logits):
    import torch
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


class Session:
    """One loaded model and the sweep settings."""

    def __init__(self, model, tok, chunk: int = 512, stop_blank: bool = True):
        self.model = model
        self.device = next(model.parameters()).device
        self.tok = tok
        self.chunk = chunk
        self.stop_blank = stop_blank
        self.eos = set()
        if tok is not None and tok.eos_token_id is not None:
            self.eos.add(int(tok.eos_token_id))
        gc = getattr(model, "generation_config", None)
        e = getattr(gc, "eos_token_id", None) if gc is not None else None
        for x in ([e] if isinstance(e, int) else (e or [])):
            self.eos.add(int(x))

    def decode(self, ids) -> str:
        if self.tok is None:
            return " ".join(str(i) for i in ids)
        return self.tok.decode(ids, skip_special_tokens=True)

    def _stop(self, gen) -> bool:
        if gen and gen[-1] in self.eos:
            return True
        if self.stop_blank and self.tok is not None:
            t = self.decode(gen).lstrip()
            return "\n\n" in t
        return False

    def prefill(self, ids):
        """Dense prefill of ids[:-1] (the last prompt token is the first decode step)."""
        import torch
        from transformers import DynamicCache
        sp.CTL.cfg = None
        cache = DynamicCache(config=self.model.config)
        x = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            for s in range(0, x.shape[1], self.chunk):
                _forward(self.model, x[:, s:s + self.chunk], cache, 1)
        return cache

    def generate(self, cache, first: int, max_new: int):
        """Greedy incremental decode from `first` with the current controller setting.
        Returns (tokens, list of per-step log-prob rows)."""
        import torch
        gen, rows = [], []
        x = first
        with torch.inference_mode():
            for _ in range(max_new):
                out = _forward(self.model, torch.tensor([[x]], device=self.device), cache, 1)
                lp = _logprobs(out.logits[0, -1])
                x = int(torch.argmax(lp))
                gen.append(x)
                rows.append(lp)
                if self._stop(gen):
                    break
        return gen, rows

    def teacher(self, cache, inputs):
        """One forward over `inputs` (teacher forcing); log-prob rows for every position."""
        import torch
        with torch.inference_mode():
            out = _forward(self.model, torch.tensor([inputs], device=self.device), cache,
                           len(inputs))
        return _logprobs(out.logits[0])


def _kl(lp_d, lp_s) -> float:
    import torch
    p = torch.exp(lp_d)
    return float(torch.sum(p * (lp_d - lp_s)))


def _steps_kept():
    st = sp.CTL.steps
    return [round(st[p][0] / st[p][1], 6) for p in sorted(st)] if st else []


def run_sample(sess: Session, sample: dict, configs: list, meta: dict, done: set, emit,
               timing: dict | None = None):
    """Dense reference and every configuration (not in `done`) for one sample. emit(record)."""
    import torch
    ids = sample["ids"]
    t0 = time.perf_counter()
    pre = sess.prefill(ids)
    t_pre = time.perf_counter() - t0
    first = ids[-1]
    base = dict(meta, n=len(ids))
    ppl = sample["scoring"] == "nll"
    # dense reference
    sp.CTL.cfg = None
    t1 = time.perf_counter()
    if ppl:
        cont = sample["continuation"]
        lp_dense = sess.teacher(copy.deepcopy(pre), [first] + cont[:-1])
        nll_d = float(-torch.stack([lp_dense[i, t] for i, t in enumerate(cont)]).mean())
        dense_gen, dense_text, dense_ok = cont, None, None
        dense_path = cont
    else:
        dense_gen, rows = sess.generate(copy.deepcopy(pre), first, sample["max_new"])
        lp_dense = torch.stack(rows)
        dense_text = sess.decode(dense_gen)
        dense_ok = tk.score(dense_text, sample["answer"], sample["scoring"]) \
            if sample["answer"] is not None else None
        nll_d = None
        dense_path = dense_gen
    t_dense = time.perf_counter() - t1
    dense_key = "dense"
    if dense_key not in done:
        emit(dict(base, record="sample", config="dense", method="dense", sparsity=1.0,
                  budget=1.0, eps=None, answer=tk.answer_text(dense_text) if dense_text is not None
                  else None, tokens=None if ppl else list(dense_gen),
                  correct=dense_ok, agree_dense=True, steps=len(dense_path),
                  top1=1.0, kl_mean=0.0, kl_max=0.0, nll=nll_d, nll_dense=nll_d,
                  ppl_ratio=1.0 if ppl else None, diverged_at=None, kept_mean=1.0, kept=[],
                  realised_sparsity=1.0, select_s=0.0,
                  prefill_s=round(t_pre, 4), time_s=round(t_dense, 4)))
    inputs = [first] + list(dense_path[:-1])
    for cfg in configs:
        if cfg.key in done:
            continue
        sp.CTL.cfg = cfg
        sp.CTL.reset_stats()
        t2 = time.perf_counter()
        lp_s = sess.teacher(copy.deepcopy(pre), inputs)
        kept = _steps_kept()
        kls = [_kl(lp_dense[i], lp_s[i]) for i in range(len(dense_path))]
        am = [int(torch.argmax(lp_s[i])) for i in range(len(dense_path))]
        top_d = [int(torch.argmax(lp_dense[i])) for i in range(len(dense_path))]
        top1 = sum(a == t for a, t in zip(am, top_d)) / len(dense_path)
        rec = dict(base, record="sample", config=cfg.key, method=cfg.method,
                   sparsity=cfg.sparsity, budget=cfg.budget, eps=cfg.eps, steps=len(dense_path),
                   top1=top1, kl_mean=sum(kls) / len(kls), kl_max=max(kls))
        if ppl:
            nll = float(-torch.stack([lp_s[i, t] for i, t in enumerate(dense_path)]).mean())
            rec.update(answer=None, tokens=None, correct=None, agree_dense=None, nll=nll,
                       nll_dense=nll_d, ppl_ratio=math.exp(nll - nll_d), diverged_at=None)
        else:
            # the sparse greedy answer: the dense path up to the first step where the sparse
            # argmax differs; from there on, incremental sparse decoding
            j = next((i for i, (a, t) in enumerate(zip(am, dense_path)) if a != t), None)
            if j is None:
                gen = list(dense_path)
            else:
                gen = list(dense_path[:j]) + [am[j]]
                if not sess._stop(gen) and len(gen) < sample["max_new"]:
                    c = copy.deepcopy(pre)
                    sess.teacher(c, [first] + list(dense_path[:j]))  # the cache up to step j
                    more, _ = sess.generate(c, am[j], sample["max_new"] - len(gen))
                    gen += more
            text = sess.decode(gen)
            ok = tk.score(text, sample["answer"], sample["scoring"])
            rec.update(answer=tk.answer_text(text), tokens=gen, correct=ok,
                       agree_dense=tk.answer_text(text) == tk.answer_text(dense_text),
                       nll=None, nll_dense=None, ppl_ratio=None, diverged_at=j)
        all_kept = sp.CTL.steps
        ks = sum(v[0] for v in all_kept.values())
        ns = sum(v[1] for v in all_kept.values())
        rec.update(kept_mean=(ks / ns) if ns else None, kept=kept,
                   realised_sparsity=(ns / ks) if ks else None,
                   prefill_s=round(t_pre, 4), time_s=round(time.perf_counter() - t2, 4),
                   select_s=round(sp.CTL.t_select, 4))
        emit(rec)
    sp.CTL.cfg = None
    if timing is not None:
        timing["prefill_s"] = timing.get("prefill_s", 0.0) + t_pre
        timing["dense_s"] = timing.get("dense_s", 0.0) + t_dense
