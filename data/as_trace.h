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

#endif
