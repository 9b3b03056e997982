/* as_sparsity: sparse approximations of decode attention and their error bounds.
 *
 * For one query (docs/theory.md, "Sparse attention: error and bounds"): weights a = softmax(s)
 * over the n visible keys, exact output o = V^T a. A *subset* method keeps a set S of keys and
 * outputs o_S = softmax restricted to S; then exactly
 *     o - o_S = (1 - P_S)(o_rest - o_S),   P_S = sum_{i in S} a_i,
 * hence ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||          (deterministic bound).
 * A *sampling* method keeps heavy hitters H and a uniform sample of the rest, reweighted, with
 * numerator and denominator estimated separately; its error obeys an (epsilon, delta) guarantee
 * (Bernstein / Chebyshev, docs/theory.md) computed here from the full trace.
 *
 * Methods: topk (oracle), sink-window (StreamingLLM), page (Quest), uniform (sampling,
 * self-normalised importance weights), topk-sample (vAttention-style), index (user's file).
 *
 * Three levels of API:
 *  - arrays (no trace): the estimator, the sampling statistics, epsilon and sample size;
 *  - one query of a trace: selection, exact subset check of any (S, o_hat) pair, evaluation;
 *  - a whole trace: as_sp_run, tiled: the queries of a kv-head group form blocks whose score
 *    rows fit a memory limit (never T x N beyond it); K is read once per block (one dgemm per
 *    tile for all its queries), V once for the dense outputs and once per (method, budget) for
 *    the complement sums and distances (BLAS over tiles); calls back once per record;
 *    as_sp_agg turns the records into per-head curves, crossing budgets, and layer/model
 *    summaries. */
#ifndef AS_SPARSITY_H
#define AS_SPARSITY_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_select.h"
#include "as_select_index.h"
#include "as_trace.h"

typedef enum {
    AS_SP_TOPK = 0,
    AS_SP_SINK_WINDOW,
    AS_SP_PAGE,
    AS_SP_UNIFORM,
    AS_SP_TOPK_SAMPLE,
    AS_SP_INDEX,
    AS_SP_PAGE_SAMPLE, /* after index: the numbers (and seeds) of the others stay */
    AS_SP_N_METHODS
} as_sp_method;

/* "topk", "sink-window", "page", "uniform", "topk-sample", "index", "page-sample". */
const char *as_sp_method_name(as_sp_method m);
/* Parse a name (also accepts "oracle", "streamingllm", "quest", "sample", "vattention");
 * returns 0 and sets *m, or -1. */
int as_sp_method_parse(const char *s, as_sp_method *m);
/* 1 for uniform, topk-sample and page-sample (random, with an (epsilon, delta) guarantee). */
int as_sp_method_is_sampling(as_sp_method m);

/* A budget: count > 0 keeps that many keys (clamped to n); otherwise frac in (0, 1] of the
 * query's visible keys, ceil(frac * n), at least 1. */
typedef struct {
    double frac;
    int64_t count;
} as_budget;

/* Keys a budget allows for n visible keys: a count as given, a fraction f gives
 * ceil(x - 1e-9 x), x = f n (the relative 1e-9 absorbs float64 rounding: 7% of 100 is 7), both
 * clamped to [1, n] (0 when n <= 0). The one budget rule of sparsity and bottleneck. */
int64_t as_budget_keys(as_budget b, int64_t n);
/* Parse "2%", "0.02", "1/50", "128" (a count: an integer >= 1 without '%' or '.') or, with
 * sparsity = 1, "50x" / "50" (keep 1/50), comma-separated, at most max entries. Returns
 * AS_ERR_USAGE with a message on a bad entry. */
as_status as_budget_parse_list(const char *s, int sparsity, as_budget *out, size_t max,
                               size_t *n_out, char *err);
/* The default sweep: sparsity 2x .. 100x (12 points). Returns the count written (<= max). */
size_t as_budget_default_sweep(as_budget *out, size_t max);

typedef struct {
    int sinks;              /* sink-window: first positions kept (StreamingLLM: 4) */
    int page_size;          /* page: keys per page (Quest: 16) */
    double heavy_frac;      /* topk-sample, page-sample: share of the budget for the heavy set */
    double delta;           /* sampling methods: failure probability of the guarantee */
    uint64_t seed;          /* sampling methods: base seed */
    const as_index *index;  /* index method: the user's selection */
} as_sp_params;

void as_sp_params_init(as_sp_params *p); /* 4, 16, 0.5, 0.05, 0, NULL */

/* The page width rule, the one place it lives (the page method's selection and the index
 * exporter both use it). Pages of P keys the page method reads for a query with n visible keys
 * at budget b: every page, ceil(n / P), when the budget covers all n keys (k = n); otherwise the
 * whole pages within it, floor(k / P), at least one. */
int64_t as_sp_page_count(as_budget b, int64_t n, int64_t P);
/* The most keys the selection of method m at budget b holds for a query with n visible keys:
 * page: min(n, pages x P) (the last page may be partial); the other methods: the budget's k
 * (index: 0, its file fixes the keys). */
int64_t as_sp_sel_width(as_sp_method m, as_budget b, const as_sp_params *p, int64_t n);
/* The width of an index row holding every selection of m at b over the queries of layer l: the
 * largest as_sp_sel_width over its queries (index: the index file's width for the layer). */
int64_t as_sp_layer_width(const as_layer *l, as_sp_method m, as_budget b, const as_sp_params *p);

/* ---- the sampling estimator and its guarantee, on arrays --------------------------------- */

/* Population statistics of the rest R (visible keys not in H) for weights a (sum 1), values V
 * and exact output o; y_j = a_j (v_j - o). docs/theory.md defines each. */
typedef struct {
    int64_t n_rest;     /* |R| */
    double p_heavy;     /* P_H = sum_{i in H} a_i */
    double var_y;       /* (1/|R|) sum_R ||y_j - ybar||^2 */
    double max_y;       /* max_R ||y_j - ybar|| */
    double var_e;       /* (1/|R|) sum_R (a_j - abar)^2 */
    double mass_rest;   /* sum_R a_j = 1 - P_H */
    double dev_max;     /* max over all visible keys of ||v_i - o|| (deterministic cap) */
} as_sp_sstats;

/* From arrays: scores s[0..n) (any shift), values V (n x d row-major), heavy set H sorted. */
as_status as_sp_sampling_stats(const double *s, const double *V, int64_t n, int64_t d,
                               const int64_t *H, int64_t nh, as_sp_sstats *st, char *err);
/* Predicted absolute epsilon for m samples drawn without replacement from R: with probability
 * at least 1 - delta, ||o - o_hat|| <= epsilon. 0 when m >= |R| (the estimator is exact). */
double as_sp_sampling_eps(const as_sp_sstats *st, int64_t m, double delta);
/* Smallest m with as_sp_sampling_eps(m) <= eps (|R| when only exhaustion achieves it). */
int64_t as_sp_sampling_size(const as_sp_sstats *st, double eps, double delta);
/* The estimator: o_hat = (sum_H e_i v_i + w sum_samp e_j v_j) / (sum_H e_i + w sum_samp e_j),
 * e = exp(s - max), w = n_rest / m. samp sorted, disjoint from H. */
void as_sp_estimate(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                    int64_t nh, const int64_t *samp, int64_t m, double *o_hat);
/* P(X >= x) for X ~ Binomial(n, p) (log-space sum; no GSL). */
double as_binom_tail(int64_t n, int64_t x, double p);

/* ---- one query of a trace ----------------------------------------------------------------- */

/* The keys a method reads for one query. */
typedef struct {
    int64_t n;          /* visible keys */
    int sampled;        /* 1 for sampling methods */
    int64_t *det;       /* sorted: the subset S, or the heavy hitters H of a sampling method */
    int64_t n_det;
    int64_t *samp;      /* sorted sampled keys, drawn from the rest (sampling methods) */
    int64_t n_samp;
    int64_t n_rest;     /* n - n_det */
    int64_t cap;        /* room in det and samp */
} as_sp_sel;

void as_sp_sel_init(as_sp_sel *sel);
void as_sp_sel_free(as_sp_sel *sel);

/* Select keys for query qi of query head h at one budget. scores: the query's scaled scores
 * over its visible keys (NULL: computed here). trial numbers independent Monte-Carlo draws. */
as_status as_sp_select(const as_layer *l, int64_t h, int64_t qi, as_sp_method m, as_budget b,
                       const as_sp_params *p, uint64_t trial, const double *scores,
                       as_sp_sel *sel, char *err);
/* The same for data that is one piece of a larger trace (a layer view over one decode step's
 * arrays, data/as_trace.h): keys of query qi of head h of l, drawn as query seed_qi of head
 * seed_h of layer l->index would be in the whole trace (as_sp_select: seed_h = h, seed_qi = qi).
 * Deterministic methods ignore the seed. */
as_status as_sp_select_id(const as_layer *l, int64_t h, int64_t qi, int64_t seed_h,
                          int64_t seed_qi, as_sp_method m, as_budget b, const as_sp_params *p,
                          uint64_t trial, const double *scores, as_sp_sel *sel, char *err);

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

/* ---- a whole trace ------------------------------------------------------------------------- */

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

/* ---- aggregation: curves, crossings, summaries -------------------------------------------- */

#define AS_SP_N_THRESH 3
extern const double as_sp_thresholds[AS_SP_N_THRESH]; /* 0.01, 0.05, 0.10 */

typedef struct {
    int layer;
    int64_t head;
    as_sp_method method;
    size_t budget_index;
    double budget;            /* nominal fraction (mean kept fraction for count budgets) */
    int64_t n_queries;
    double mean_kept;         /* mean k / n */
    double mean_rel_error, median_rel_error, max_rel_error;
    double mean_captured_mass;
    double mean_rel_bound;
    double median_slack;      /* median of bound / abs_error over queries with abs_error > 0 */
    int64_t violations;       /* deterministic violations + identity failures */
    int64_t draws, exceed;    /* sampling: Monte-Carlo draws and exceedances of epsilon */
} as_sp_head_budget;

typedef struct {
    int layer;
    int64_t head;
    as_sp_method method;
    /* per threshold: the smallest budget of the sweep whose mean relative error is at or below
     * it, with every larger budget also at or below it (NaN: none); sparsity = 1 / budget
     * (1 = needs dense attention). censored: the smallest budget tried still passes. */
    double budget_at[AS_SP_N_THRESH], sparsity_at[AS_SP_N_THRESH];
    int censored[AS_SP_N_THRESH];
} as_sp_head_sweep;

typedef struct {
    int layer;               /* -1 for the model-level summary */
    as_sp_method method;
    int64_t n_heads;
    double median_sparsity[AS_SP_N_THRESH], min_sparsity[AS_SP_N_THRESH];
    int64_t dense_heads[AS_SP_N_THRESH]; /* heads tolerating no sparsity of the sweep */
    double median_slack;
    double median_rel_error;
    int64_t records, violations, identity_failures;
    int64_t draws, exceed;   /* sampling */
    double coverage_p;       /* P(Bin(draws, delta) >= exceed); NaN if not sampling */
} as_sp_summary;

typedef struct as_sp_agg as_sp_agg;

as_sp_agg *as_sp_agg_new(const as_sp_config *cfg);
void as_sp_agg_free(as_sp_agg *a);
/* Record callback (ctx = the aggregator). */
int as_sp_agg_add(void *agg, const as_sp_record *r);
/* Compute the results (call once after the run). Arrays stay owned by the aggregator. */
as_status as_sp_agg_finish(as_sp_agg *a, char *err);
size_t as_sp_agg_head_budgets(const as_sp_agg *a, const as_sp_head_budget **out);
size_t as_sp_agg_head_sweeps(const as_sp_agg *a, const as_sp_head_sweep **out);
/* Layer summaries followed by one model-level summary (layer = -1) per method. */
size_t as_sp_agg_summaries(const as_sp_agg *a, const as_sp_summary **out);

#endif
