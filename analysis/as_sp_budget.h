/* as_sp_budget: the names and parameters of the sparse-attention methods, budgets (how many keys
 * a method may read) and the page width rule. Part of the sparsity analysis (as_sparsity.h).
 *
 * Methods: topk (oracle), sink-window (StreamingLLM), page (Quest), uniform (sampling,
 * self-normalised importance weights), topk-sample (vAttention-style), index (user's file),
 * page-sample (Quest pages + sampling), page-is (Quest pages + importance sampling of the rest
 * with a proposal from the page bounds); docs/theory.md, "Sparse attention: error and bounds". */
#ifndef AS_SP_BUDGET_H
#define AS_SP_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
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
    AS_SP_PAGE_IS,     /* Quest pages + importance sampling of the rest (after page-sample) */
    AS_SP_N_METHODS
} as_sp_method;

/* "topk", "sink-window", "page", "uniform", "topk-sample", "index", "page-sample", "page-is". */
const char *as_sp_method_name(as_sp_method m);
/* Parse a name (also accepts "oracle", "streamingllm", "quest", "sample", "vattention");
 * returns 0 and sets *m, or -1. */
int as_sp_method_parse(const char *s, as_sp_method *m);
/* 1 for uniform, topk-sample, page-sample and page-is (random, with an (epsilon, delta)
 * guarantee). */
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

/* How Quest's per-page key min/max are stored (page and page-sample): exact (the keys' own
 * values, float64; the default), or rounded outward to float32 or bfloat16 (min toward -inf,
 * max toward +inf, so sum_c max(q_c min_c, q_c max_c) stays an upper bound of q.k over the
 * page; docs/theory.md, "Page bounds in reduced precision"). */
typedef enum { AS_SP_BOUNDS_EXACT = 0, AS_SP_BOUNDS_F32, AS_SP_BOUNDS_BF16 } as_sp_bounds;

/* "exact", "f32", "bf16". */
const char *as_sp_bounds_name(as_sp_bounds f);
/* Parse a name (also "f64" for exact, "float32", "bfloat16"); returns 0 and sets *f, or -1. */
int as_sp_bounds_parse(const char *s, as_sp_bounds *f);

/* The page score x_p of page-is's proposal (docs/theory.md, "Pages + importance sampling"):
 * the score of the centre of the page's key box, c_p = scale sum_c q_c (m_c + M_c) / 2 =
 * (U_p + L_p) / 2 (default), or Quest's upper bound U_p itself. */
typedef enum { AS_SP_IS_CENTER = 0, AS_SP_IS_BOUND } as_sp_is_score;
/* How page-is samples the rest: each key independently with probability pi_j = min(1, c q_j),
 * sum pi_j = k - |H| (Poisson sampling, Horvitz-Thompson weights 1 / pi_j; the default), or
 * k - |H| draws with replacement from q (weights count / (m q_j)). */
typedef enum { AS_SP_IS_POISSON = 0, AS_SP_IS_REPLACE } as_sp_is_drawing;

typedef struct {
    int sinks;              /* sink-window: first positions kept (StreamingLLM: 4) */
    int page_size;          /* page: keys per page (Quest: 16) */
    double heavy_frac;      /* topk-sample, page-sample: share of the budget for the heavy set */
    double delta;           /* sampling methods: failure probability of the guarantee */
    uint64_t seed;          /* sampling methods: base seed */
    const as_index *index;  /* index method: the user's selection */
    int page_bounds;        /* page, page-sample: an as_sp_bounds, how page min/max are stored */
    double is_temp;         /* page-is: proposal temperature tau, page weight |p| exp(tau x_p) */
    double is_mix;          /* page-is: defensive share beta in (0, 1] of uniform draws over R */
    int is_score;           /* page-is: an as_sp_is_score, the page score x_p of the proposal */
    int is_draw;            /* page-is: an as_sp_is_drawing, how the rest is sampled */
} as_sp_params;

/* 4, 16, 0.5, 0.05, 0, NULL, exact, 1, 0.1, center, poisson */
void as_sp_params_init(as_sp_params *p);
/* The page size in force: p->page_size, or 16 when it is not positive. */
int64_t as_sp_page_size(const as_sp_params *p);

/* The page width rule, the one place it lives (the page method's selection and the index
 * exporter both use it). Pages of P keys the page method reads for a query with n visible keys
 * at budget b: every page, ceil(n / P), when the budget covers all n keys (k = n); otherwise the
 * whole pages within it, floor(k / P), at least one. */
int64_t as_sp_page_count(as_budget b, int64_t n, int64_t P);
/* The most keys the selection of method m at budget b holds for a query with n visible keys:
 * page: min(n, pages x P) (the last page may be partial); page-is with Poisson sampling: n (it
 * keeps k on average); the other methods: the budget's k (index: 0, its file fixes the keys). */
int64_t as_sp_sel_width(as_sp_method m, as_budget b, const as_sp_params *p, int64_t n);
/* The width of an index row holding every selection of m at b over the queries of layer l: the
 * largest as_sp_sel_width over its queries (index: the index file's width for the layer). */
int64_t as_sp_layer_width(const as_layer *l, as_sp_method m, as_budget b, const as_sp_params *p);

#endif
