"""Finding and declaring libattnscope (ctypes). Internal: use the functions of `attnscope`.

The library is looked for, in this order, at
  1. $ATTNSCOPE_LIB: the library file itself, or a directory holding it;
  2. the build directories of the checkout this package sits in (build/, then any other
     build*/ directory, newest first): an editable install or PYTHONPATH=python;
  3. `pkg-config --variable=libdir attnscope` (after `cmake --install`);
  4. the system loader (ctypes.util.find_library, then "libattnscope.so").
The first place that holds a loadable library wins; none gives one LibraryNotFoundError that
lists every place tried. The structures below mirror the C headers (analysis/as_sparsity.h,
analysis/as_entropy.h, analysis/as_sel_kv.h, data/as_trace.h).
"""
import ctypes
import ctypes.util
import glob
import os
import subprocess

AS_ERR_LEN = 512
_NAMES = ("libattnscope.so", "libattnscope.dylib")


class LibraryNotFoundError(ImportError):
    """libattnscope could not be found or loaded; the message lists where it was looked for."""


class AttnscopeError(ValueError):
    """A libattnscope call refused its input (bad size, budget, method, index...) or failed;
    `status` is the C library's as_status name."""

    def __init__(self, msg, status="usage error"):
        super().__init__(msg)
        self.status = status


_i64 = ctypes.c_int64
_dbl = ctypes.c_double
_p_i64 = ctypes.POINTER(ctypes.c_int64)
_p_dbl = ctypes.POINTER(ctypes.c_double)


class Budget(ctypes.Structure):
    _fields_ = [("frac", _dbl), ("count", _i64)]


class Params(ctypes.Structure):
    _fields_ = [("sinks", ctypes.c_int), ("page_size", ctypes.c_int), ("heavy_frac", _dbl),
                ("delta", _dbl), ("seed", ctypes.c_uint64), ("index", ctypes.c_void_p),
                ("page_bounds", ctypes.c_int), ("is_temp", _dbl), ("is_mix", _dbl),
                ("is_score", ctypes.c_int), ("is_draw", ctypes.c_int)]


class Sel(ctypes.Structure):
    _fields_ = [("n", _i64), ("sampled", ctypes.c_int), ("det", _p_i64), ("n_det", _i64),
                ("samp", _p_i64), ("n_samp", _i64), ("n_rest", _i64), ("cap", _i64),
                ("samp_w", _p_dbl), ("q", _p_dbl), ("cq", _p_dbl), ("m_draws", _i64)]


class Eval(ctypes.Structure):
    _fields_ = [("n", _i64), ("k", _i64), ("norm_o", _dbl), ("captured_mass", _dbl),
                ("abs_error", _dbl), ("rel_error", _dbl), ("bound", _dbl), ("rel_bound", _dbl),
                ("identity_error", _dbl), ("tol", _dbl), ("identity_ok", ctypes.c_int),
                ("violated", ctypes.c_int), ("subset_bound", _dbl),
                ("subset_violated", ctypes.c_int), ("samples", _i64), ("samples_needed", _i64)]


class SStats(ctypes.Structure):
    _fields_ = [("n_rest", _i64), ("p_heavy", _dbl), ("var_y", _dbl), ("max_y", _dbl),
                ("var_e", _dbl), ("mass_rest", _dbl), ("dev_max", _dbl)]


class EntropyQ(ctypes.Structure):
    _fields_ = [("n", _i64), ("lse", _dbl), ("entropy_nats", _dbl), ("entropy_bits", _dbl),
                ("entropy_norm", _dbl), ("eff_support", _dbl), ("k50", _i64), ("k90", _i64),
                ("k99", _i64), ("k50_frac", _dbl), ("k90_frac", _dbl), ("k99_frac", _dbl)]


# as_dtype
DT_F64, DT_F32, DT_F16, DT_BF16 = 0, 1, 2, 3


def _candidates():
    """(description, path or None) pairs in search order."""
    out = []
    env = os.environ.get("ATTNSCOPE_LIB")
    if env:
        if os.path.isdir(env):
            for nm in _NAMES:
                out.append(("$ATTNSCOPE_LIB", os.path.join(env, nm)))
        else:
            out.append(("$ATTNSCOPE_LIB", env))
        return out  # an explicit choice: nothing else is tried
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))  # python/attnscope -> checkout root
    if os.path.exists(os.path.join(root, "CMakeLists.txt")):
        dirs = [os.path.join(root, "build")]
        others = [d for d in glob.glob(os.path.join(root, "build*")) if os.path.isdir(d)
                  and os.path.abspath(d) != os.path.abspath(dirs[0])]
        others.sort(key=lambda d: -os.path.getmtime(d))
        for d in dirs + others:
            for nm in _NAMES:
                out.append(("checkout build dir", os.path.join(d, nm)))
    try:
        r = subprocess.run(["pkg-config", "--variable=libdir", "attnscope"], capture_output=True,
                           text=True, timeout=10)
        libdir = r.stdout.strip()
        if r.returncode == 0 and libdir:
            for nm in _NAMES:
                out.append(("pkg-config libdir", os.path.join(libdir, nm)))
        else:
            out.append(("pkg-config (no attnscope.pc found)", None))
    except (OSError, subprocess.SubprocessError):
        out.append(("pkg-config (not available)", None))
    found = ctypes.util.find_library("attnscope")
    out.append(("system loader", found or "libattnscope.so"))
    return out


def _load():
    tried = []
    for what, path in _candidates():
        if path is None:
            tried.append(what)
            continue
        if os.path.sep in path and not os.path.exists(path):
            tried.append("%s: %s (absent)" % (what, path))
            continue
        try:
            lib = ctypes.CDLL(path)
            lib.as_layer_view_new  # a library of this version
            lib.as_sel_step
            return lib, path
        except (OSError, AttributeError) as e:
            tried.append("%s: %s (%s)" % (what, path, e))
    raise LibraryNotFoundError(
        "libattnscope not found; build it (cmake -S . -B build && cmake --build build) or set "
        "ATTNSCOPE_LIB to the library file. Tried: " + "; ".join(tried))


def _declare(lib):
    c_int, c_char_p, c_void_p, c_size_t = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
    P = ctypes.POINTER
    sig = {
        "as_status_name": (c_char_p, [c_int]),
        "as_sp_method_parse": (c_int, [c_char_p, P(c_int)]),
        "as_sp_method_name": (c_char_p, [c_int]),
        "as_budget_keys": (_i64, [Budget, _i64]),
        "as_budget_parse_list": (c_int, [c_char_p, c_int, P(Budget), c_size_t, P(c_size_t),
                                         c_char_p]),
        "as_sp_params_init": (None, [P(Params)]),
        "as_sp_sel_init": (None, [P(Sel)]),
        "as_sp_sel_free": (None, [P(Sel)]),
        "as_layer_view_new": (c_void_p, [c_int, c_int, _i64, _i64, _i64, _i64, _i64, _dbl,
                                         c_void_p, c_void_p, c_void_p, _p_i64, c_char_p]),
        "as_layer_view_free": (None, [c_void_p]),
        "as_sp_select_id": (c_int, [c_void_p, _i64, _i64, _i64, _i64, c_int, Budget, P(Params),
                                    ctypes.c_uint64, _p_dbl, P(Sel), c_char_p]),
        "as_sel_step": (c_int, [c_void_p, _i64, c_int, c_int, Budget, P(Params), ctypes.c_uint64,
                                _i64, _dbl, P(Sel), _p_i64, c_char_p]),
        "as_sp_check_subset": (c_int, [c_void_p, _i64, _i64, _p_i64, _i64, _p_dbl, _dbl, P(Eval),
                                       _p_dbl, c_char_p]),
        "as_sp_sampling_stats": (c_int, [_p_dbl, _p_dbl, _i64, _i64, _p_i64, _i64, P(SStats),
                                         c_char_p]),
        "as_sp_sampling_eps": (_dbl, [P(SStats), _i64, _dbl]),
        "as_sp_sampling_size": (_i64, [P(SStats), _dbl, _dbl]),
        "as_sp_estimate": (None, [_p_dbl, _p_dbl, _i64, _i64, _p_i64, _i64, _p_i64, _i64, _p_dbl]),
        "as_entropy_of_scores": (c_int, [_p_dbl, _i64, c_int, P(EntropyQ), c_char_p]),
        "as_entropy_topk_mass": (c_int, [_p_dbl, _i64, _i64, _p_dbl, c_char_p]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


_LIB = None
_PATH = None


def lib():
    """The loaded library (loaded and declared on first use)."""
    global _LIB, _PATH
    if _LIB is None:
        l, p = _load()
        _LIB = _declare(l)
        _PATH = p
    return _LIB


def path():
    lib()
    return _PATH


def check(status, err):
    """Raise AttnscopeError for a nonzero as_status, with the library's one-line message."""
    if status != 0:
        name = lib().as_status_name(status).decode()
        msg = err.value.decode(errors="replace") if err is not None else ""
        if status == 5:  # AS_ERR_NOMEM
            raise MemoryError(msg or name)
        raise AttnscopeError(msg or name, name)


def errbuf():
    return ctypes.create_string_buffer(AS_ERR_LEN)
