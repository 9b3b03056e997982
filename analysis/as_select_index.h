/* as_select_index: a user's own key selection (e.g. an external sparse kernel's), stored in
 * the trace format, so attnscope can check it against the exact output and the bound.
 *
 * An index file is a safetensors file (docs/trace-format.md, "Index files") holding, per layer L:
 *   layers.L.idx  [H, T, K]  I32 or I64   key positions selected for each (head, query);
 *                                          -1 = padding (anywhere in the row); H = Hq (one
 *                                          list per query head) or Hkv (shared by the GQA group)
 *   layers.L.out  [Hq, T, d] float        optional: the kernel's own approximate outputs
 * and `__metadata__` "format" = "attnscope-index" (checked when present), "format_version" "1".
 * Every listed position must be a key the query may see (0 <= i < as_layer_visible) and may
 * appear only once per row. */
#ifndef AS_SELECT_INDEX_H
#define AS_SELECT_INDEX_H

#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

#define AS_INDEX_FORMAT_NAME "attnscope-index"

typedef struct as_index as_index;

/* Open and validate (safetensors structure, tensor names, ranks, dtypes). NULL + err (one line
 * naming the file and tensor) on failure; *status (may be NULL) gets the code. */
as_index *as_index_open(const char *path, as_status *status, char *err);
void as_index_free(as_index *ix);
const char *as_index_path(const as_index *ix);

/* Check the entries for one trace layer: layers.L.idx present, H = Hq or Hkv, T equal, and
 * layers.L.out (if any) of shape [Hq, T, d]. */
as_status as_index_check_layer(const as_index *ix, const as_layer *l, char *err);
/* Row width K of layer L (0 if the layer is absent). */
int64_t as_index_width(const as_index *ix, int layer);
/* The selection of query qi of query head h: sorted positions written to out (room for K),
 * count in *k. AS_ERR_VALUE (naming tensor, head, query, entry) for a position outside
 * [0, visible) or a duplicate. */
as_status as_index_get(const as_index *ix, const as_layer *l, int64_t h, int64_t qi, int64_t *out,
                       int64_t *k, char *err);
/* 1 if layers.L.out is present; then as_index_get_output fills d doubles. */
int as_index_has_output(const as_index *ix, int layer);
void as_index_get_output(const as_index *ix, const as_layer *l, int64_t h, int64_t qi, double *o);

/* ---- writing: one entry per layer, written atomically (temp file + rename) ---- */
typedef struct {
    int layer;
    int64_t h, t, k, d;   /* idx is [h, t, k] int32 (-1 padded); out (may be NULL) [h, t, d] */
    const int32_t *idx;
    const double *out;    /* written as F64 */
} as_index_layer_data;

/* meta: n_meta extra key/value pairs (format and version are added). */
as_status as_index_write(const char *path, const as_index_layer_data *layers, size_t n_layers,
                         const as_meta *meta, size_t n_meta, char *err);

#endif
