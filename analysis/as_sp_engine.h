/* as_sp_engine: the block engine of the sparsity analysis (as_sparsity.h): exact checks of any
 * subset of keys, one query at a time or over a whole trace.
 *
 * For one query (docs/theory.md, "Sparse attention: error and bounds"): weights a = softmax(s)
 * over the n visible keys, exact output o = V^T a. A subset S gives o_S (softmax restricted to
 * S) and exactly o - o_S = (1 - P_S)(o_rest - o_S), P_S = sum_{i in S} a_i, hence
 * ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S|| (deterministic bound); a sampling
 * method is checked against its epsilon (as_sp_sampling).
 *
 * as_sp_run is tiled: the queries of a kv-head group form blocks whose score rows fit a memory
 * limit (never T x N beyond it); K is read once per block (one dgemm per tile for all its
 * queries), V once for the dense outputs and once per (method, budget) for the complement sums
 * and distances (BLAS over tiles); it calls back once per record. */
#ifndef AS_SP_ENGINE_H
#define AS_SP_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_sp_budget.h"
#include "as_sp_select.h"
#include "as_trace.h"

/* Result of checking one approximation of one query. */
typedef struct {
    int64_t n, k;            /* visible keys, keys read (|S|, or |H| + samples) */
    double norm_o;           /* ||o|| */
    double captured_mass;    /* mass of the keys read */
    double abs_error;        /* ||o - o_hat|| */
    double rel_error;        /* abs_error / ||o|| (NaN when o = 0) */
    double bound;            /* deterministic bound (subsets) or epsilon (sampling) */
    double rel_bound;
    double identity_error;   /* residual of the exact identity (subsets: o - o_S vs
                                (1 - P_S)(o_rest - o_S); sampling: the ratio identity) */
    double tol;              /* floating-point tolerance used for the checks */
    int identity_ok;
    int violated;            /* deterministic: a bug; sampling: an exceedance (prob <= delta) */
    double subset_bound;     /* uniform: a-posteriori subset bound of the realised sample */
    int subset_violated;
    int64_t samples;         /* sampling: m */
    int64_t samples_needed;  /* sampling: m for the target epsilon (-1 when not asked) */
} as_sp_eval;

/* Exact check of any subset S (k keys, sorted or not, duplicates refused) of query qi of head
 * h: o, o_S, P_S, the identity, the bound. If o_hat is given (e.g. a GPU kernel's output over
 * S), abs_error is ||o - o_hat|| and 'violated' means abs_error > bound + out_tol * ||o||
 * (out_tol covers the kernel's arithmetic); otherwise o_hat = o_S and the float64 tolerance
 * applies. o_S_out (may be NULL) receives o_S (d doubles). */
as_status as_sp_check_subset(const as_layer *l, int64_t h, int64_t qi, const int64_t *S,
                             int64_t k, const double *o_hat, double out_tol, as_sp_eval *ev,
                             double *o_S_out, char *err);

/* Evaluate one method at one budget on one query (selection + estimate + checks).
 * eps_rel > 0 also fills samples_needed for a relative target eps_rel * ||o||. */
as_status as_sp_eval_query(const as_layer *l, int64_t h, int64_t qi, as_sp_method m,
                           as_budget b, const as_sp_params *p, uint64_t trial, double eps_rel,
                           as_sp_eval *ev, char *err);

typedef struct {
    int layer;               /* -1: all */
    int64_t head;            /* query head, -1: all */
    int64_t query;           /* -1: all */
    const as_sp_method *methods;
    size_t n_methods;
    const as_budget *budgets; /* ignored by the index method (its file fixes the keys) */
    size_t n_budgets;
    as_sp_params params;
    int trials;              /* Monte-Carlo draws per query for sampling methods (>= 1) */
    double eps_rel;          /* > 0: report samples_needed for this relative epsilon */
    double out_tol;          /* index files with outputs: tolerance relative to ||o|| */
    size_t mem_limit;        /* bytes for a block of score rows (0: 512 MiB) */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
} as_sp_config;

void as_sp_config_init(as_sp_config *c);

/* A selected layer against cfg: --head and --query within it, N within the index type.
 * AS_OK, or AS_ERR_USAGE with err (as_sp_run and as_sweep_run check every layer so). */
as_status as_sp_config_check_layer(const as_sp_config *cfg, const as_layer *l, char *err);

typedef struct {
    int layer;
    int64_t head, kv_head, query;
    as_sp_method method;
    size_t budget_index;     /* into cfg->budgets (0 for index) */
    double budget;           /* nominal fraction kept (a count budget: k / n) */
    as_sp_eval ev;
    int trials;              /* draws made (sampling methods; 1 otherwise) */
    int exceed;              /* draws whose error exceeded epsilon (sampling methods) */
    int has_kernel;          /* index file with outputs: ev.abs_error is the kernel's error */
    double delta;
} as_sp_record;

/* Called once per layer x head x query x budget x method; nonzero return stops the run. */
typedef int (*as_sp_record_fn)(void *ctx, const as_sp_record *r);

/* Run every selected method and budget on every selected layer/head/query. Returns AS_OK even
 * when bounds are violated (the records say so); errors are input/alloc problems. */
as_status as_sp_run(const as_trace *tr, const as_sp_config *cfg, as_sp_record_fn fn, void *ctx,
                    char *err);

#endif
