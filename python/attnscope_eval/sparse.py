"""Sparse decode inside a transformers model: an attention implementation, `attnscope_sparse`,
registered through transformers' AttentionInterface (as data/capture registers its capture
attention). Dense calls (prefill, layers kept dense, sliding-window layers) go to the model's own
`eager_attention_forward`; in sparse mode every query row of a chosen layer attends only to the
keys that `attnscope.select_heads` (the libattnscope binding: no second implementation of any
selection here) picks for it among the keys it may see:

    out_h = softmax(scale * q_h . K[S] + log_weights) V[S]

with S = Selection.indices and log_weights 0 for the deterministic keys and log(n_rest / m) for
the m sampled ones (the binding's estimator). Selection per kv head (shared by its query group,
mode "kv") or per query head (mode "q")."""
from __future__ import annotations

import sys
import time

ATTN_NAME = "attnscope_sparse"


class Config:
    """One sparse configuration: a method at a budget (fraction of visible keys kept), or
    topk-sample at a target eps (sample size from the (eps, delta) bound)."""

    def __init__(self, method: str, sparsity: float | None = None, eps: float | None = None,
                 budget: float | None = None):
        self.method = method
        self.sparsity = sparsity          # nominal N / k, None for eps configs
        self.eps = eps
        self.budget = budget if budget is not None else (1.0 / sparsity if sparsity else None)

    @property
    def key(self) -> str:
        if self.method == "dense":
            return "dense"
        if self.eps is not None:
            return f"{self.method}@eps={self.eps:g},b={self.budget:g}"
        return f"{self.method}@{self.sparsity:g}x"


class Controller:
    """Global switch read by the attention function: dense, or one sparse Config."""

    def __init__(self):
        self.cfg: Config | None = None  # None: dense
        self.sparse_layers: set[int] | None = None  # None: every full-attention layer
        self.mode = "kv"
        self.params = dict(sinks=4, page_size=16, heavy_frac=0.5, delta=0.05, seed=0)
        self.steps: dict[int, list] = {}  # query position -> [sum k, sum n, calls]
        self.t_select = 0.0
        self.t_attend = 0.0
        self.t_dense_attn = 0.0
        self.calls_sparse = 0
        self.calls_dense = 0
        self.time_dense = False  # time the dense decode attention (overhead benchmark)

    def reset_stats(self):
        self.steps.clear()
        self.t_select = self.t_attend = self.t_dense_attn = 0.0
        self.calls_sparse = self.calls_dense = 0


CTL = Controller()


def _eager_for(module):
    mod = sys.modules.get(type(module).__module__)
    eager = getattr(mod, "eager_attention_forward", None)
    if eager is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as eager
    return eager


def _sparse(module, query, key, value, scaling, softcap=None):
    """query [1, Hq, S, d]; key/value [1, Hkv, Lk, d] (the whole cache, this step included)."""
    import numpy as np
    import torch
    import attnscope
    ctl = CTL
    cfg = ctl.cfg
    L = int(module.layer_idx)
    _, hq, S, d = query.shape
    hkv, lk = key.shape[1], key.shape[2]
    g = hq // hkv
    qn = query[0].detach().to(torch.float32).cpu().numpy()
    kn = key[0].detach().to(torch.float32).cpu().numpy()
    vn = value[0].detach().to(torch.float32).cpu().numpy() if cfg.eps is not None else None
    out = torch.empty((1, S, hq, d), dtype=query.dtype, device=query.device)
    p = ctl.params
    for s in range(S):
        pos = lk - S + s  # absolute position of this query; it sees keys 0..pos
        n = pos + 1
        t0 = time.perf_counter()
        K = kn[:, :n, :] if n == lk else np.ascontiguousarray(kn[:, :n, :])
        kw = dict(mode=ctl.mode, scale=float(scaling), sinks=p["sinks"],
                  page_size=p["page_size"], heavy_frac=p["heavy_frac"], delta=p["delta"],
                  seed=p["seed"], layer=L, query=pos, trial=0)
        if cfg.eps is not None:
            V = vn[:, :n, :] if n == lk else np.ascontiguousarray(vn[:, :n, :])
            kw.update(V=V, eps_rel=cfg.eps)
        sels = attnscope.select_heads(np.ascontiguousarray(qn[:, s, :]), K, cfg.method,
                                      cfg.budget, **kw)
        t1 = time.perf_counter()
        st = ctl.steps.setdefault(pos, [0, 0, 0])
        # one gather per selection: a kv head's group shares it in mode "kv"
        for j, sel in enumerate(sels):
            heads = slice(j, j + 1) if ctl.mode == "q" else slice(j * g, (j + 1) * g)
            kvh = j // g if ctl.mode == "q" else j
            idx = torch.from_numpy(np.asarray(sel.indices, dtype=np.int64)).to(key.device)
            kh = key[0, kvh].index_select(0, idx)
            vh = value[0, kvh].index_select(0, idx)
            sc = (query[0, heads, s] @ kh.T) * scaling  # [heads, k]
            if softcap:  # Gemma 2 style logit soft-capping, as the model's eager applies it
                sc = torch.tanh(sc / softcap) * softcap
            if sel.sampled:
                sc = sc + torch.from_numpy(sel.log_weights).to(sc.device, sc.dtype)
            w = torch.softmax(sc.to(torch.float32), dim=-1).to(vh.dtype)
            out[0, s, heads] = w @ vh
            st[0] += len(idx)
            st[1] += n
            st[2] += 1
        ctl.t_select += t1 - t0
        ctl.t_attend += time.perf_counter() - t1
    ctl.calls_sparse += 1
    return out


def attnscope_sparse(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     **kwargs):
    ctl = CTL
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    L = int(getattr(module, "layer_idx", -1))
    local = kwargs.get("sliding_window") is not None
    sparse = (ctl.cfg is not None and not local and query.shape[0] == 1
              and (ctl.sparse_layers is None or L in ctl.sparse_layers))
    if not sparse:
        t0 = time.perf_counter()
        res = _eager_for(module)(module, query, key, value, attention_mask, scaling=scaling,
                                 dropout=dropout, **kwargs)
        if ctl.time_dense:
            ctl.t_dense_attn += time.perf_counter() - t0
            ctl.calls_dense += 1
        return res
    return _sparse(module, query, key, value, scaling, kwargs.get("softcap")), None


def register():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    AttentionInterface.register(ATTN_NAME, attnscope_sparse)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)
