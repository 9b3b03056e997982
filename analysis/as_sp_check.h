/* as_sp_check: check a sparse attention kernel's outputs against the bounds of as_sparsity.
 *
 * A kernel (the GPU decode of `attnscope gpu replay`, or any other) computes, for each query
 * head and query of a layer, an output o_hat from the keys it selected. Two kinds of output are
 * checked (docs/theory.md, "Sparse attention: error and bounds"):
 *  - a subset S (top-k, Quest pages, dense = every visible key): o_hat approximates o_S, the
 *    softmax restricted to S, and ||o - o_hat|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||;
 *  - S plus samples outside S reweighted by w (top-k + sampling, numerator and denominator
 *    estimated separately): with 1 - lam = w Z_smp / (Z_S + w Z_smp) the samples' estimated
 *    share of the mass (Z the sums of exp of the scores), o - o_hat = (1 - P_S)(o_rest - o_S)
 *    - (1 - lam)(o_smp - o_S), hence the mixed bound
 *        ||o - o_hat|| <= ((1 - P_S) + (1 - lam)) max_{i not in S} ||v_i - o_S||
 *    for any draw (deterministic; docs/theory.md, (2')).
 * P_S, o, o_S and ||o - o_hat|| come from as_sp_check_subset; one more pass over the query's
 * visible values gives max_{i not in S} ||v_i - o_S|| and max ||v_i||, and the sampled keys'
 * scores give 1 - lam. Memory per query is O(n + d): nothing of size T x N is formed.
 *
 * A check fails when ||o - o_hat|| > bound + rel_tol ||o|| + v_tol max_i ||v_i|| (the kernel's
 * own arithmetic: float32 accumulation, half-precision storage), or when the float64 identity
 * of as_sp_check_subset does not hold. */
#ifndef AS_SP_CHECK_H
#define AS_SP_CHECK_H

#include <stdint.h>

#include "as_error.h"
#include "as_sparsity.h"
#include "as_trace.h"

/* The mixed bound ((1 - P_S) + share) dev_max; share = 0 for a plain subset. */
double as_sp_mixed_bound(double p_s, double share, double dev_max);

/* One query's check. */
typedef struct {
    as_sp_eval subset;     /* as_sp_check_subset's evaluation of S with o_hat */
    double captured_mass;  /* P_S */
    double share;          /* 1 - lam: the samples' estimated share of the mass (0: none) */
    double dev_max;        /* max_{i not in S} ||v_i - o_S|| (0 when S holds every key) */
    double v_max;          /* max_i ||v_i|| over the visible keys */
    double bound;          /* as_sp_mixed_bound(captured_mass, share, dev_max) */
    double abs_error, rel_error, norm_o;
    double tol;            /* rel_tol ||o|| + v_tol v_max */
    int violated;
} as_sp_kcheck;

/* Check o_hat (d doubles) of query qi of query head h: S (k distinct visible keys, any order),
 * samp (m keys outside S, repeats allowed) with weight w each (m = 0: a subset). */
as_status as_sp_check_kernel(const as_layer *l, int64_t h, int64_t qi, const int64_t *S,
                             int64_t k, const int64_t *samp, int64_t m, double w,
                             const double *o_hat, double rel_tol, double v_tol,
                             as_sp_kcheck *out, char *err);

/* ---- a whole layer, as a batched kernel reports it ----------------------------------------- */

/* A kernel's selection for the T queries of a layer: one row of int32 key positions per
 * (query, kv head) (per_query_head = 0: shared by the group's query heads) or per (query, query
 * head). Row r holds count[r] entries at idx + r * kcap. The first n_det entries of a row form
 * S (n_det < 0: every entry); entries < 0 or outside the query's visible keys and repeats are
 * skipped. The entries after them are samples: with sample_rest = 0 (top-k + sampling) drawn
 * from the query's n visible keys, each standing for n / (count - n_det) keys; with
 * sample_rest = 1 (pages + sampling) drawn from the n - |S| visible keys outside S, each
 * standing for (n - |S|) / (count - n_det) keys (|S|: the distinct visible keys of S). A sample
 * that is in S or whose log-weight (logw, optional) is -inf was dropped by the kernel and is
 * skipped. */
typedef struct {
    int per_query_head;
    const int32_t *idx;
    const int32_t *count;
    const float *logw;
    int32_t kcap;
    int32_t n_det;
    int sample_rest;
} as_sp_ksel;

/* What a layer's check found for one query head. */
typedef struct {
    int64_t queries, violations;
    double min_captured_mass, max_rel_error, max_abs_error, max_bound;
    double worst_ratio;     /* max over queries of error / (bound + tol) */
    double bound_at_worst;  /* the bound at that query */
} as_sp_kstats;

/* Check a kernel's outputs o[t][h][c] (float32, row stride ldo >= d per (t, h)) for every
 * query head of layer l against sel (NULL: dense, S = every visible key). stats: l->hq
 * entries. Errors are input / allocation problems; violations are counted, not errors. */
as_status as_sp_check_kernel_layer(const as_layer *l, const float *o, int64_t ldo,
                                   const as_sp_ksel *sel, double rel_tol, double v_tol,
                                   as_sp_kstats *stats, char *err);

#endif
