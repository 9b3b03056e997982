/* as_limits: the magnitudes of a trace that the float64 analyses can take without overflow
 * (docs/trace-format.md, "Value limits").
 *
 * Finite values are not enough: q and k of 1e200 are finite, their scores are not, and every
 * softmax over them is NaN. Before any pass, per layer, the largest row norms max||q||,
 * max||k||, max||v|| (computed without overflow) bound everything the analyses form:
 *   scores      |scale q.k| <= scale ||q|| ||k|| (Cauchy-Schwarz); BLAS forms q.k before the
 *               scale, Quest's page bound sum_c max(q_c M_c, q_c m_c) <= sqrt(d) ||q|| max||k||:
 *               S = max(1, scale) sqrt(d) max||q|| max||k|| must be at most AS_LIMIT_MAX;
 *   norms       sums of squares over the rows and columns of Q, K, V (Gram and Frobenius norms,
 *               ||v_i - o||^2, variances): (rows + d) max||x||^2 <= AS_LIMIT_MAX for x = q (rows
 *               T), k and v (rows N).
 * AS_LIMIT_MAX = 2^1000 (~1.07e301) leaves a factor 2^23 below DBL_MAX for the differences
 * and sums of a few such terms. One check for every command (as_trace_check_limits). */
#ifndef AS_LIMITS_H
#define AS_LIMITS_H

#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

#define AS_LIMIT_MAX 0x1p1000

typedef struct {
    int layer;
    double q_max, k_max, v_max; /* largest row norms (+Inf only if a norm itself overflows) */
    double score_bound;         /* max(1, scale) sqrt(d) max||q|| max||k|| (may be +Inf) */
    int scores_ok, q_ok, k_ok, v_ok;
} as_layer_limits;

/* Row norms and the bounds of one layer (reads every q, k, v row once); AS_ERR_NOMEM only. */
as_status as_layer_limits_get(const as_layer *l, as_layer_limits *out, char *err);

/* The same over the part of layer l that kv head kvh's units read: the q rows of its group's
 * query heads, its k and v rows. The layer's maxima are the largest of its kv heads' (the
 * MPI engine checks each (layer, kv head) unit's part before reading it and joins the parts'
 * maxima on rank 0: cli/cli_par.c). */
as_status as_layer_limits_get_kv(const as_layer *l, int64_t kvh, as_layer_limits *out,
                                 char *err);
/* score_bound and the flags of out from its q_max, k_max, v_max (l: scale, d, t, n). */
void as_layer_limits_eval(const as_layer *l, as_layer_limits *out);

/* 1 when every bound of the layer holds; else 0 and a one-line reason in why (may be NULL). */
int as_layer_limits_ok(const as_layer *l, const as_layer_limits *lim, char *why, size_t len);

/* Every layer of tr within the limits: AS_OK, or AS_ERR_VALUE with one line naming the file,
 * the layer and the bound that fails (e.g. "scores overflow float64"). Call after the finite
 * check (NaN/Inf). */
as_status as_trace_check_limits(const as_trace *tr, char *err);
/* The same for one layer of tr (the MPI engine: each rank checks the layers it reads). */
as_status as_layer_check_limits(const as_trace *tr, const as_layer *l, char *err);

#endif
