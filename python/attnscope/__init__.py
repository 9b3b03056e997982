"""attnscope: sparse-attention selections, exact subset checks and error bounds, from Python.

A ctypes binding of libattnscope (the C library of this repository): every function here calls
the library; none re-implements a selection, an estimator or a bound. Arrays are NumPy arrays or
torch CPU tensors (converted through NumPy; torch is never imported by this module). Docs:
docs/python.md; definitions: docs/theory.md.

One query:
    select(method, budget, q=..., K=...)            the keys `attnscope sparsity` selects
    check_subset(q, K, V, S, o_hat=...)             exact identity + deterministic bound of S
    sampling_stats / sampling_eps / sampling_size   the (epsilon, delta) guarantee of sampling
    estimate(scores, V, H, samp)                    the sampling estimator's output
    entropy(scores), topk_mass(scores, k)           entropy and top-k mass of a score row
One decode step of a layer (all heads):
    select_heads(q, K, method, budget, mode="q"|"kv", eps_rel=..., V=...)
"""
import ctypes
import math
import numbers

import numpy as np

from . import _lib
from ._lib import AttnscopeError, LibraryNotFoundError

__all__ = ["METHODS", "Selection", "AttnscopeError", "LibraryNotFoundError", "budget_keys",
           "select", "select_heads", "check_subset", "sampling_stats", "sampling_eps",
           "sampling_size", "estimate", "entropy", "topk_mass", "library_path"]
__version__ = "0.1.0"

METHODS = ("topk", "sink-window", "page", "uniform", "topk-sample")


def library_path():
    """Path of the libattnscope that was loaded (loading it if needed)."""
    return _lib.path()


# ---- conversions ------------------------------------------------------------------------------

def _np(x, name):
    """NumPy view of an array-like or a torch CPU tensor (torch is not imported here)."""
    if x is None:
        return None
    mod = type(x).__module__ or ""
    if mod.startswith("torch"):
        if getattr(x, "device", None) is not None and str(x.device) != "cpu":
            raise AttnscopeError("%s: a torch tensor on %s; move it to the CPU first" % (name, x.device))
        x = x.detach()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()  # exact: NumPy has no bfloat16
        x = x.numpy()
    return np.asarray(x)


def _f64(x, name, ndim):
    a = _np(x, name)
    if a is None:
        return None
    if a.ndim != ndim:
        raise AttnscopeError("%s: expected %d dimensions, got shape %s" % (name, ndim, a.shape))
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise AttnscopeError("%s: expected real numbers, got dtype %s" % (name, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float64)


def _idx(x, name, n):
    a = np.asarray(_np(x, name))
    if a.ndim != 1:
        raise AttnscopeError("%s: expected a 1-D list of key positions, got shape %s" % (name, a.shape))
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise AttnscopeError("%s: key positions must be integers" % name)
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise AttnscopeError("%s: key position outside [0, %d)" % (name, n))
    return a


def _float_views(arrays, names, ndims):
    """Arrays of one float dtype for a layer view: float32 or float16 kept as they are when they
    all share it, anything else as float64. Returns (as_dtype, [contiguous arrays])."""
    out = []
    for x, nm, nd in zip(arrays, names, ndims):
        a = _np(x, nm)
        if a.ndim != nd:
            raise AttnscopeError("%s: expected %d dimensions, got shape %s" % (nm, nd, a.shape))
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise AttnscopeError("%s: expected real numbers, got dtype %s" % (nm, a.dtype))
        out.append(a)
    kinds = {a.dtype for a in out}
    if kinds == {np.dtype(np.float32)}:
        return _lib.DT_F32, [np.ascontiguousarray(a) for a in out]
    if kinds == {np.dtype(np.float16)}:
        return _lib.DT_F16, [np.ascontiguousarray(a) for a in out]
    return _lib.DT_F64, [np.ascontiguousarray(a, dtype=np.float64) for a in out]


def _pd(a):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def _pi(a):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))


class _View:
    """A C layer view (data/as_trace.h as_layer_view) over arrays kept alive by this object."""

    def __init__(self, index, dtype, hq, hkv, n, d, scale, q, k, v):
        self._keep = (q, k, v)
        err = _lib.errbuf()
        self.ptr = _lib.lib().as_layer_view_new(int(index), dtype, hq, hkv, 1, n, d,
                                                 0.0 if scale is None else float(scale),
                                                 q.ctypes.data, k.ctypes.data, v.ctypes.data,
                                                 None, err)
        if not self.ptr:
            raise AttnscopeError(err.value.decode(errors="replace"))

    def close(self):
        if self.ptr:
            _lib.lib().as_layer_view_free(self.ptr)
            self.ptr = None

    def __del__(self):
        self.close()


# ---- budgets and methods ----------------------------------------------------------------------

def _budget(budget):
    """A C as_budget from "50x" / "2%" / "0.02" / "1/50" / "128", a float fraction in (0, 1]
    or an int count, parsed by the library (as_budget_parse_list)."""
    if isinstance(budget, bool):
        raise AttnscopeError("budget: expected a string, a fraction or a count, got %r" % budget)
    if isinstance(budget, numbers.Integral):
        s = str(int(budget))
    elif isinstance(budget, numbers.Real):
        s = repr(float(budget))
        if "inf" in s or "nan" in s:
            raise AttnscopeError("bad budget %r" % budget)
    elif isinstance(budget, str):
        s = budget.strip()
    else:
        raise AttnscopeError("budget: expected a string, a fraction or a count, got %r" % (budget,))
    if "," in s:
        raise AttnscopeError("budget: one budget, not a list ('%s')" % s)
    sparsity = 1 if s[-1:] in ("x", "X") else 0
    out = (_lib.Budget * 1)()
    n_out = ctypes.c_size_t(0)
    err = _lib.errbuf()
    st = _lib.lib().as_budget_parse_list(s.encode(), sparsity, out, 1, ctypes.byref(n_out), err)
    _lib.check(st, err)
    return out[0]


def budget_keys(budget, n):
    """Keys a budget allows for n visible keys (the C library's as_budget_keys): a count is
    clamped to n, a fraction f keeps ceil(f n) keys, at least 1."""
    return int(_lib.lib().as_budget_keys(_budget(budget), int(n)))


def _method(method):
    m = ctypes.c_int(0)
    if not isinstance(method, str) or _lib.lib().as_sp_method_parse(method.encode(), ctypes.byref(m)) != 0:
        raise AttnscopeError("unknown method %r (expected one of %s)" % (method, ", ".join(METHODS)))
    if _lib.lib().as_sp_method_name(m.value).decode() not in METHODS:
        raise AttnscopeError("method %r needs an index file: use check_subset on its keys" % method)
    return m.value


def _params(sinks, page_size, heavy_frac, delta, seed):
    p = _lib.Params()
    _lib.lib().as_sp_params_init(ctypes.byref(p))
    p.sinks = int(sinks)
    p.page_size = int(page_size)
    p.heavy_frac = float(heavy_frac)
    p.delta = float(delta)
    if int(seed) < 0 or int(seed) >= 2 ** 64:
        raise AttnscopeError("seed must be in [0, 2^64)")
    p.seed = int(seed)
    if p.page_size < 1:
        raise AttnscopeError("page_size must be >= 1")
    if p.sinks < 0:
        raise AttnscopeError("sinks must be >= 0")
    if not 0.0 <= p.heavy_frac <= 1.0:
        raise AttnscopeError("heavy_frac must be in [0, 1]")
    if not 0.0 < p.delta < 1.0:
        raise AttnscopeError("delta must be in (0, 1)")
    return p


# ---- selections -------------------------------------------------------------------------------

class Selection:
    """The keys a method reads for one query (or one kv head's group).

    n        visible keys;
    sampled  True for sampling methods (uniform, topk-sample);
    det      int64, sorted: the subset S (deterministic methods) or the heavy hitters H;
    samp     int64, sorted: the keys sampled uniformly without replacement from the rest;
    n_rest   n - len(det), the population the samples come from.

    `indices` is the sorted union of det and samp; `log_weights` (aligned with it) is 0 for det
    keys and log(n_rest / m) for sampled keys (m = len(samp)). Softmax attention over `indices`
    with these offsets added to the logits is exactly the library's sampling estimator
    (as_sp_estimate: heavy keys weighted exp(s_i), sampled ones (n_rest / m) exp(s_j), numerator
    and denominator alike); for a subset method it is the sparse softmax over S.
    """

    __slots__ = ("n", "sampled", "det", "samp", "n_rest")

    def __init__(self, n, sampled, det, samp, n_rest):
        self.n = int(n)
        self.sampled = bool(sampled)
        self.det = det
        self.samp = samp
        self.n_rest = int(n_rest)

    @property
    def indices(self):
        if not len(self.samp):
            return self.det.copy()
        return np.sort(np.concatenate([self.det, self.samp]))

    @property
    def log_weights(self):
        idx = self.indices
        w = np.zeros(len(idx), dtype=np.float64)
        m = len(self.samp)
        if m:
            w[np.isin(idx, self.samp, assume_unique=True)] = math.log(self.n_rest / m)
        return w

    @property
    def k(self):
        """Keys read: len(det) + len(samp)."""
        return len(self.det) + len(self.samp)

    def __len__(self):
        return self.k

    def __repr__(self):
        return "Selection(n=%d, k=%d, sampled=%s, det=%d keys, samp=%d keys)" % (
            self.n, self.k, self.sampled, len(self.det), len(self.samp))


def _from_c(sel):
    det = np.ctypeslib.as_array(sel.det, shape=(sel.n_det,)).copy() if sel.n_det else np.zeros(0, np.int64)
    samp = np.ctypeslib.as_array(sel.samp, shape=(sel.n_samp,)).copy() if sel.n_samp else np.zeros(0, np.int64)
    return Selection(sel.n, sel.sampled, det, samp, sel.n_rest)


def select(method, budget, *, q=None, K=None, scores=None, scale=None, sinks=4, page_size=16,
           heavy_frac=0.5, delta=0.05, seed=0, layer=0, head=0, query=0, trial=0):
    """The keys `method` selects at `budget` for one query, as `attnscope sparsity` selects them.

    q [d] and K [n, d] (the query's visible keys), or scores [n] (scaled: scale q.k_i) for the
    methods that need only scores (topk, topk-sample) or only n (sink-window, uniform); page needs
    q and K. Given both, scores are used as given and K only for the pages. scale defaults to
    1/sqrt(d). Sampling draws are seeded as query `query` of head `head` of layer `layer` with
    base `seed`, draw `trial` (as_sp_select_id): a query taken from a trace selects exactly what
    `attnscope sparsity TRACE --seed SEED --export-index` writes for it.
    """
    m = _method(method)
    b = _budget(budget)
    p = _params(sinks, page_size, heavy_frac, delta, seed)
    s = _f64(scores, "scores", 1)
    if q is None or K is None:
        if q is not None or K is not None:
            raise AttnscopeError("select: give q and K together")
        if METHODS[m] == "page":
            raise AttnscopeError("select: method page needs q and K")
        if s is None:
            raise AttnscopeError("select: give q and K, or scores")
        n = len(s)
        if n < 1:
            raise AttnscopeError("select: no keys")
        dt, (qa, ka) = _lib.DT_F64, (np.zeros(1), np.zeros((n, 1)))
    else:
        dt, (qa, ka) = _float_views([q, K], ["q", "K"], [1, 2])
        n, d = ka.shape
        if qa.shape[0] != d:
            raise AttnscopeError("select: q has %d dims but K rows have %d" % (qa.shape[0], d))
        if s is not None and len(s) != n:
            raise AttnscopeError("select: %d scores for %d keys" % (len(s), n))
    if int(head) < 0 or int(query) < 0 or int(trial) < 0 or int(layer) < 0:
        raise AttnscopeError("select: layer, head, query and trial must be >= 0")
    view = _View(layer, dt, 1, 1, n, qa.shape[0], scale, qa, ka, ka)
    sel = _lib.Sel()
    L = _lib.lib()
    L.as_sp_sel_init(ctypes.byref(sel))
    err = _lib.errbuf()
    try:
        st = L.as_sp_select_id(view.ptr, 0, 0, int(head), int(query), m, b, ctypes.byref(p),
                               int(trial), _pd(s), ctypes.byref(sel), err)
        _lib.check(st, err)
        return _from_c(sel)
    finally:
        L.as_sp_sel_free(ctypes.byref(sel))
        view.close()


def select_heads(q, K, method, budget, *, mode="q", scale=None, V=None, eps_rel=None, sinks=4,
                 page_size=16, heavy_frac=0.5, delta=0.05, seed=0, layer=0, query=0, trial=0):
    """The selections of one decode step of a layer: q [hq, d], K [hkv, n, d] (query head h
    reads kv head h // (hq // hkv)).

    mode "q": one Selection per query head (as select() for each head, seeded as head h);
    mode "kv": one per kv head, shared by its group: keys ranked by the max over the group of
    the log-probabilities s_h - lse_h (page: the max of the page bounds), draws those of the
    group's first head (analysis/as_sel_kv.h). With eps_rel (topk-sample only; V [hkv, n, d]
    needed): heavy hitters from the budget's heavy share, samples m = the smallest m whose
    (epsilon, delta) bound meets eps_rel * ||o|| (`samples_needed` of `attnscope sparsity`; in
    kv mode the largest m of the group); the realised k is then len(indices).
    """
    m = _method(method)
    b = _budget(budget)
    p = _params(sinks, page_size, heavy_frac, delta, seed)
    if mode not in ("q", "kv"):
        raise AttnscopeError("select_heads: mode must be 'q' or 'kv', not %r" % (mode,))
    sized = eps_rel is not None
    if sized:
        eps_rel = float(eps_rel)
        if METHODS[m] != "topk-sample":
            raise AttnscopeError("select_heads: eps_rel sizes topk-sample only (method %r)" % method)
        if not eps_rel > 0 or not math.isfinite(eps_rel):
            raise AttnscopeError("select_heads: eps_rel must be a positive number")
        if V is None:
            raise AttnscopeError("select_heads: eps_rel needs V [hkv, n, d]")
    arrs, names, dims = [q, K], ["q", "K"], [2, 3]
    if V is not None:
        arrs.append(V), names.append("V"), dims.append(3)
    dt, conv = _float_views(arrs, names, dims)
    qa, ka = conv[0], conv[1]
    va = conv[2] if V is not None else ka
    hq, d = qa.shape
    hkv, n, dk = ka.shape
    if dk != d:
        raise AttnscopeError("select_heads: q has head dim %d but K has %d" % (d, dk))
    if va.shape != ka.shape:
        raise AttnscopeError("select_heads: V has shape %s, K %s" % (va.shape, ka.shape))
    if hkv < 1 or hq % hkv:
        raise AttnscopeError("select_heads: %d query heads is not a multiple of %d kv heads" % (hq, hkv))
    if int(query) < 0 or int(trial) < 0 or int(layer) < 0:
        raise AttnscopeError("select_heads: layer, query and trial must be >= 0")
    view = _View(layer, dt, hq, hkv, n, d, scale, qa, ka, va)
    rows = hq if mode == "q" else hkv
    sels = (_lib.Sel * rows)()
    L = _lib.lib()
    for i in range(rows):
        L.as_sp_sel_init(ctypes.byref(sels[i]))
    err = _lib.errbuf()
    try:
        st = L.as_sel_step(view.ptr, 0, 0 if mode == "q" else 1, m, b, ctypes.byref(p), int(trial),
                           int(query), eps_rel if sized else 0.0, sels, None, err)
        _lib.check(st, err)
        return [_from_c(sels[i]) for i in range(rows)]
    finally:
        for i in range(rows):
            L.as_sp_sel_free(ctypes.byref(sels[i]))
        view.close()


# ---- checks and bounds ------------------------------------------------------------------------

def check_subset(q, K, V, S, *, scale=None, o_hat=None, out_tol=0.0):
    """Exact check of the subset S (key positions) for one query q [d] over K, V [n, d]
    (as_sp_check_subset, in float64): o = softmax(scale K q) V, o_S = the softmax restricted to
    S, the identity o - o_S = (1 - P_S)(o_rest - o_S) and the bound
    ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||. With o_hat (e.g. your kernel's
    output over S), abs_error is ||o - o_hat|| and `violated` means it exceeds the bound by more
    than out_tol * ||o|| (your kernel's arithmetic). Returns a dict: norm_o, captured_mass,
    abs_error, rel_error, bound, rel_bound, identity_error, identity_ok, violated, tol, n, k,
    o_S (the float64 sparse output)."""
    dt, (qa, ka, va) = _float_views([q, K, V], ["q", "K", "V"], [1, 2, 2])
    n, d = ka.shape
    if qa.shape[0] != d or va.shape != ka.shape:
        raise AttnscopeError("check_subset: shapes q %s, K %s, V %s do not agree" % (qa.shape, ka.shape, va.shape))
    Sa = _idx(S, "S", n)
    oh = _f64(o_hat, "o_hat", 1)
    if oh is not None and oh.shape[0] != d:
        raise AttnscopeError("check_subset: o_hat has %d entries, expected %d" % (oh.shape[0], d))
    view = _View(0, dt, 1, 1, n, d, scale, qa, ka, va)
    ev = _lib.Eval()
    o_S = np.zeros(d)
    err = _lib.errbuf()
    try:
        st = _lib.lib().as_sp_check_subset(view.ptr, 0, 0, _pi(Sa) if len(Sa) else None, len(Sa),
                                           _pd(oh), float(out_tol), ctypes.byref(ev), _pd(o_S), err)
        _lib.check(st, err)
    finally:
        view.close()
    return {"n": ev.n, "k": ev.k, "norm_o": ev.norm_o, "captured_mass": ev.captured_mass,
            "abs_error": ev.abs_error, "rel_error": ev.rel_error, "bound": ev.bound,
            "rel_bound": ev.rel_bound, "identity_error": ev.identity_error,
            "identity_ok": bool(ev.identity_ok), "violated": bool(ev.violated), "tol": ev.tol,
            "o_S": o_S}


_SSTATS = ("n_rest", "p_heavy", "var_y", "max_y", "var_e", "mass_rest", "dev_max")


def _sv(scores, V, name="sampling"):
    s = _f64(scores, "scores", 1)
    Va = _f64(V, "V", 2)
    if s.shape[0] != Va.shape[0]:
        raise AttnscopeError("%s: %d scores for %d value rows" % (name, s.shape[0], Va.shape[0]))
    if s.shape[0] < 1:
        raise AttnscopeError("%s: no keys" % name)
    return s, Va


def _sorted_set(x, name, n):
    a = _idx(x, name, n)
    if len(a) > 1 and not np.all(np.diff(a) > 0):
        raise AttnscopeError("%s: key positions must be sorted and distinct" % name)
    return a


def sampling_stats(scores, V, H):
    """Population statistics of the rest R (keys not in the sorted heavy set H) that the
    sampling guarantee uses (as_sp_sampling_stats; docs/theory.md): dict with n_rest, p_heavy,
    var_y, max_y, var_e, mass_rest, dev_max."""
    s, Va = _sv(scores, V, "sampling_stats")
    Ha = _sorted_set(H, "H", len(s))
    st = _lib.SStats()
    err = _lib.errbuf()
    rc = _lib.lib().as_sp_sampling_stats(_pd(s), _pd(Va), len(s), Va.shape[1],
                                         _pi(Ha) if len(Ha) else None, len(Ha), ctypes.byref(st), err)
    _lib.check(rc, err)
    return {k: getattr(st, k) for k in _SSTATS}


def _stats_c(stats):
    st = _lib.SStats()
    for k in _SSTATS:
        setattr(st, k, stats[k])
    return st


def sampling_eps(stats, m, delta):
    """Absolute epsilon that m samples (without replacement from R) guarantee with probability
    at least 1 - delta (as_sp_sampling_eps); 0 when m >= n_rest."""
    st = _stats_c(stats)
    return float(_lib.lib().as_sp_sampling_eps(ctypes.byref(st), int(m), float(delta)))


def sampling_size(stats, eps, delta):
    """Smallest m with sampling_eps(stats, m, delta) <= eps (as_sp_sampling_size)."""
    st = _stats_c(stats)
    return int(_lib.lib().as_sp_sampling_size(ctypes.byref(st), float(eps), float(delta)))


def estimate(scores, V, H, samp):
    """The sampling estimator (as_sp_estimate): heavy keys H with weight exp(s_i), the sampled
    keys samp (sorted, disjoint from H) with weight (n - |H|) / m exp(s_j), normalised."""
    s, Va = _sv(scores, V, "estimate")
    n = len(s)
    Ha = _sorted_set(H, "H", n)
    Sa = _sorted_set(samp, "samp", n)
    if len(np.intersect1d(Ha, Sa)):
        raise AttnscopeError("estimate: samp and H overlap")
    o = np.zeros(Va.shape[1])
    _lib.lib().as_sp_estimate(_pd(s), _pd(Va), n, Va.shape[1], _pi(Ha) if len(Ha) else None,
                              len(Ha), _pi(Sa) if len(Sa) else None, len(Sa), _pd(o))
    return o


# ---- entropy ------------------------------------------------------------------------------------

def entropy(scores):
    """Entropy of softmax(scores) (as_entropy_of_scores): dict with n, lse, entropy_nats,
    entropy_bits, entropy_norm, eff_support (= exp(entropy_nats)), and k50, k90, k99 (the fewest
    keys whose largest weights hold 50/90/99% of the mass) with k50_frac... = k / n."""
    s = _f64(scores, "scores", 1)
    q = _lib.EntropyQ()
    err = _lib.errbuf()
    _lib.check(_lib.lib().as_entropy_of_scores(_pd(s), len(s), 1, ctypes.byref(q), err), err)
    return {k: getattr(q, k) for k, _ in _lib.EntropyQ._fields_}


def topk_mass(scores, k):
    """Sum of the k largest softmax weights of scores (as_entropy_topk_mass)."""
    s = _f64(scores, "scores", 1)
    out = ctypes.c_double(0)
    err = _lib.errbuf()
    _lib.check(_lib.lib().as_entropy_topk_mass(_pd(s), len(s), int(k), ctypes.byref(out), err), err)
    return out.value
