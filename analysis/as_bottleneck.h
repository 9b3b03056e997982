/* as_bottleneck: the d-dimensional bottleneck of attention (docs/theory.md, "The bottleneck").
 *
 * The output o = V^T a lies in R^d while the weights a lie on the (n-1)-simplex of the n keys a
 * query sees. Per query (and aggregated per head):
 *   collision_dim  n - rank([V^T; 1^T]): the dimension of the space of changes c (1^T c = 0)
 *                  that leave o unchanged (V^T c = 0). rank from a streamed QR of the n x (d+1)
 *                  matrix [V, 1] (as_tsqr), NumPy's matrix_rank tolerance.
 *   tv_witness     a second distribution a' (a' >= 0, 1^T a' = 1, V^T a' = V^T a) far from a in
 *                  total variation, found by linear programs (GLPK simplex): for a set S,
 *                  minimise a'(S) over the fibre; TV(a, a') >= a(S) - a'(S); S is improved to
 *                  {i : a_i > a'_i} until TV stops growing, from several starting sets. It is a
 *                  lower bound on the largest TV in the fibre (maximising a norm over a polytope
 *                  is NP-hard in general). Only the witness_keys heaviest keys may change
 *                  (a' = a elsewhere), which keeps the LP small on long contexts.
 *   absorption     for oracle top-k at budget k: ||V^T (a - a_k)||_2 / (||a - a_k||_1 max_i ||v_i||)
 *                  with a_k the top-k weights renormalised (what a sparse kernel computes):
 *                  the share of a sparse change of the weights that reaches the output; in [0, 1]. */
#ifndef AS_BOTTLENECK_H
#define AS_BOTTLENECK_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

#define AS_BN_MAX_BUDGETS 16

/* 1 when the library was built with GLPK (the TV witness), else 0. */
int as_bn_have_lp(void);

/* ---- on arrays (V: n x d row-major, a: n weights summing to 1) --------------------------- */

/* rank([V^T; 1^T]) with NumPy's matrix_rank tolerance; collision dimension = n - rank. */
as_status as_bn_value_rank(const double *V, int64_t n, int64_t d, int64_t *rank, char *err);

/* TV witness over all n keys (or the `keys` heaviest, keys <= 0: all). a_out (n, may be NULL)
 * receives a'. *resid: ||V^T (a' - a)||_2 / ||V^T a||_2 + |1^T (a' - a)| (scale-free). V may hold
 * any finite values (the LP is scaled per coordinate by powers of two); AS_ERR_VALUE for a
 * non-finite value or a negative weight, or when the LP solver fails (GLPK's errors never end
 * the process); AS_ERR_USAGE when built without GLPK. */
as_status as_bn_witness(const double *V, const double *a, int64_t n, int64_t d, int64_t keys,
                        double *tv, double *a_out, double *resid, char *err);

/* Absorption of oracle top-k (k >= 1): returns the ratio (NaN when a_k = a), and the captured
 * mass P_S in *captured (may be NULL). */
double as_bn_absorption(const double *V, const double *a, int64_t n, int64_t d, int64_t k,
                        double *captured);

/* ---- a layer -------------------------------------------------------------------------------- */
typedef struct {
    int64_t head;            /* query head (-1: all) */
    int64_t query;           /* query index (-1: all) */
    double budgets[AS_BN_MAX_BUDGETS]; /* fractions of n for the absorption ratio */
    size_t n_budgets;        /* default 4: 1%, 5%, 10%, 25% */
    int witness;             /* solve the LPs (default 1 when GLPK is present) */
    int64_t witness_keys;    /* keys the witness may change (default 2048; <= 0: all) */
    int64_t tile;            /* keys per tile (0: AS_ATTN_TILE) */
    void (*progress)(void *ctx, uint64_t done, uint64_t total); /* units: queries */
    void *ctx;
} as_bn_opts;

void as_bn_opts_init(as_bn_opts *o);

typedef struct {
    int64_t head, kv_head, query, n, d;
    int64_t value_rank;        /* rank([V_n^T; 1^T]) over the n visible keys */
    int64_t collision_dim;     /* n - value_rank */
    double v_max_norm;         /* max over visible keys of ||v_i||_2 */
    double tv_witness;         /* NaN when not computed */
    int64_t witness_keys;      /* LP variables */
    double witness_residual;
    size_t n_budgets;
    double budget[AS_BN_MAX_BUDGETS];
    int64_t k[AS_BN_MAX_BUDGETS];
    double captured_mass[AS_BN_MAX_BUDGETS];
    double absorption[AS_BN_MAX_BUDGETS];
} as_bn_query;

/* One record per selected query head x query, ordered by head then query; free(*out). */
as_status as_bn_layer(const as_layer *l, const as_bn_opts *o, as_bn_query **out, size_t *n_out,
                      char *err);

#endif
