/* as_trace: an attention trace (decode queries + KV cache per layer), opened read-only.
 *
 * Layout (docs/trace-format.md): per captured layer L
 *   layers.L.q      [Hq, T, d]   decode queries (after RoPE)
 *   layers.L.k      [Hkv, N, d]  keys as cached (after RoPE)
 *   layers.L.v      [Hkv, N, d]  values
 *   layers.L.q_pos  [T] int      optional absolute positions: query at p sees keys 0..p
 * from one safetensors file, or a directory of layers.L.{q,k,v,q_pos}.npy + metadata.json.
 * Tensors are memory-mapped; nothing is copied until read through as_tensor_read_*. */
#ifndef AS_TRACE_H
#define AS_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_safetensors.h"

#define AS_TRACE_FORMAT_NAME "attnscope-trace"
#define AS_TRACE_FORMAT_VERSION "1"

typedef struct {
    int index;                 /* L, as in the tensor names */
    int64_t hq, hkv, t, n, d;  /* query heads, kv heads, queries, keys, head dim */
    double scale;              /* softmax scale (metadata or 1/sqrt(d)) */
    const as_tensor *q, *k, *v;
    const as_tensor *q_pos;    /* NULL: every query sees all n keys */
} as_layer;

typedef struct as_trace as_trace;

/* Open a safetensors file or an .npy directory and validate its structure:
 * names, ranks, shapes agreeing across q/k/v, Hq % Hkv == 0, dtypes, positions in range.
 * Returns NULL and fills err (one line, naming the tensor) on failure. */
as_trace *as_trace_open(const char *path, char *err);
/* Same, with the status code of the failure in *status (may be NULL). */
as_trace *as_trace_open_status(const char *path, as_status *status, char *err);
void as_trace_free(as_trace *tr);

const char *as_trace_path(const as_trace *tr);
const char *as_trace_kind(const as_trace *tr);      /* "safetensors" or "npy-dir" */
uint64_t as_trace_file_bytes(const as_trace *tr);   /* total bytes of the input file(s) */
size_t as_trace_n_layers(const as_trace *tr);       /* layers sorted by index */
const as_layer *as_trace_layer(const as_trace *tr, size_t i);
const as_layer *as_trace_find_layer(const as_trace *tr, int index); /* NULL if absent */

/* Metadata (`__metadata__` or metadata.json, all values as strings). NULL if absent. */
const char *as_trace_meta(const as_trace *tr, const char *key);
size_t as_trace_n_meta(const as_trace *tr);
const as_meta *as_trace_meta_at(const as_trace *tr, size_t i);
const char *as_trace_model(const as_trace *tr);    /* "model" or "unknown" */
int as_trace_rope_applied(const as_trace *tr);     /* 1, 0, or -1 when not stated */

/* Scan every tensor for NaN/Inf; AS_ERR_VALUE naming the first bad tensor and index. */
as_status as_trace_check_finite(const as_trace *tr, char *err);
/* The same, calling progress(ctx, values checked, values in all) every few million values
 * (the scan of a multi-GB trace takes seconds). */
/* Only one layer's q, k and v (a rank of the MPI engine reads no other layer); the same
 * message as the whole-file check. */
as_status as_layer_check_finite(const as_trace *tr, const as_layer *l, char *err);
/* Only the part of layer l that kv head kvh's units read: the q of its group's query heads,
 * its k and v; the message names the element's place in the whole tensor, as above. */
as_status as_layer_check_finite_kv(const as_trace *tr, const as_layer *l, int64_t kvh,
                                   char *err);
as_status as_trace_check_finite_progress(const as_trace *tr,
                                         void (*progress)(void *ctx, uint64_t done,
                                                          uint64_t total),
                                         void *ctx, char *err);

/* Read count elements starting at flat element offset first, converting to double/float.
 * The caller guarantees first + count <= t->numel (checked with assert in debug builds). */
void as_tensor_read_f64(const as_tensor *t, uint64_t first, uint64_t count, double *out);
void as_tensor_read_f32(const as_tensor *t, uint64_t first, uint64_t count, float *out);

/* Rows of one head: K/V rows [n0, n0+count) of kv head h, or query row qi of query head h,
 * as count x d doubles (row-major). */
void as_layer_read_k(const as_layer *l, int64_t h, int64_t n0, int64_t count, double *out);
void as_layer_read_v(const as_layer *l, int64_t h, int64_t n0, int64_t count, double *out);
void as_layer_read_q(const as_layer *l, int64_t h, int64_t qi, double *out);

/* kv head of query head h under GQA: h / (hq / hkv). */
int64_t as_layer_kv_head(const as_layer *l, int64_t h);
/* Absolute position of query qi (q_pos, or n - 1 when absent). */
int64_t as_layer_q_position(const as_layer *l, int64_t qi);
/* Number of keys query qi may attend to: q_pos[qi] + 1, or n when q_pos is absent. */
int64_t as_layer_visible(const as_layer *l, int64_t qi);
/* 1 if the layer has positions (causal masking applies). */
int as_layer_is_causal(const as_layer *l);

/* ---- a layer over the caller's memory ---------------------------------------------------- */

/* A layer whose tensors are the caller's contiguous C-order arrays rather than a file (for
 * bindings such as the Python module, and for kernels' own buffers): q [hq, t, d], k and v
 * [hkv, n, d], all of one float dtype (F64, F32, F16 or BF16, native little-endian), and
 * q_pos [t] int64 (NULL: every query sees all n keys). Nothing is copied: the arrays must
 * outlive the view. index is the layer's number L (the sparsity module seeds its draws with
 * it); scale <= 0 or NaN means 1/sqrt(d). Every reader of this header (as_layer_read_*,
 * as_layer_visible, ...) works on &view->layer as on a trace's layer. */
typedef struct {
    as_layer layer; /* first member: a pointer to the view is a pointer to its layer */
    as_tensor q, k, v, q_pos;
} as_layer_view;

/* Fill *vw. AS_ERR_USAGE (one line) for a size below 1, hq not a multiple of hkv, a non-float
 * dtype, a NULL array, an element count overflowing; AS_ERR_VALUE for a position outside
 * [0, n). */
as_status as_layer_view_init(as_layer_view *vw, int index, as_dtype dtype, int64_t hq,
                             int64_t hkv, int64_t t, int64_t n, int64_t d, double scale,
                             const void *q, const void *k, const void *v, const int64_t *q_pos,
                             char *err);
/* The same on the heap (for callers that cannot size the struct, e.g. ctypes); NULL + err on
 * failure. Free with as_layer_view_free. */
as_layer_view *as_layer_view_new(int index, as_dtype dtype, int64_t hq, int64_t hkv, int64_t t,
                                 int64_t n, int64_t d, double scale, const void *q, const void *k,
                                 const void *v, const int64_t *q_pos, char *err);
void as_layer_view_free(as_layer_view *vw);

#endif
