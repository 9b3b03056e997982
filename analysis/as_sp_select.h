/* as_sp_select: the keys each sparse-attention method reads for one query of a trace (top-k,
 * sink + window, Quest pages, samples, an index file's rows), seeded so that a record's draws
 * depend only on (seed, layer, head, query, the budget's k, method). Part of the sparsity
 * analysis (as_sparsity.h); the block engine (as_sp_engine) calls as_sp_select_row with the
 * scores it has already computed. */
#ifndef AS_SP_SELECT_H
#define AS_SP_SELECT_H

#include <stdint.h>

#include "as_error.h"
#include "as_select.h"
#include "as_sp_budget.h"
#include "as_trace.h"

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
    /* page-is (importance sampling; NULL / 0 for the other methods): samp holds the distinct
     * keys drawn, samp_w their weights (count / (m q), or 1 / pi for Poisson sampling), q the
     * proposal over the n keys (0 on det; Poisson: the inclusion probabilities pi), cq its
     * running sums, m_draws the draws m (Poisson: the expected sample size) */
    double *samp_w, *q, *cq;
    int64_t m_draws;
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

/* ---- pieces shared with the block engine --------------------------------------------------- */

/* Room for n keys in det and samp. */
as_status as_sp_sel_reserve(as_sp_sel *sel, int64_t n, char *err);

/* x rounded toward -inf (as_sp_round_down) or +inf (as_sp_round_up) to the format f: the
 * largest float32 / bfloat16 value <= x (the smallest >= x), -inf / +inf past the format's
 * range; x itself for AS_SP_BOUNDS_EXACT, NaN and infinities. */
double as_sp_round_down(double x, as_sp_bounds f);
double as_sp_round_up(double x, as_sp_bounds f);
/* A page's d element-wise key minima rounded down and maxima rounded up to f (in place): the
 * summaries as a store in that format keeps them, still bounds of the page's keys. */
void as_sp_page_round(as_sp_bounds f, int64_t d, double *mn, double *mx);

/* Element-wise key min/max of the full pages of P keys of a kv head over the layer's n keys,
 * shared by the queries of a block (Quest's page summaries), stored as format f keeps them
 * (as_sp_page_round; AS_SP_BOUNDS_EXACT: the keys' own values). */
typedef struct {
    int64_t P;            /* page size */
    int64_t n_full;       /* full pages over the layer's n keys */
    as_sp_bounds bounds;  /* how pmin / pmax are rounded */
    double *pmin, *pmax;  /* n_full x d */
} as_sp_pages;

as_status as_sp_pages_build(const as_layer *l, int64_t kvh, int64_t P, as_sp_bounds f,
                            as_sp_pages *pg, char *err);
void as_sp_pages_free(as_sp_pages *pg);

/* The seed of one record's draws: (seed, layer, head, query, k, method), k the keys the budget
 * gives this query. */
uint64_t as_sp_record_seed(const as_sp_params *p, int layer, int64_t h, int64_t qi, int64_t k,
                           as_sp_method m);

/* Select the keys of query qi of head h (its first draw for sampling methods, from rng) given
 * its scaled scores sc over its n visible keys and its raw query q (page methods); pg may be
 * NULL (page summaries read on the fly; pages built with p->page_bounds otherwise). */
as_status as_sp_select_row(const as_layer *l, int64_t h, int64_t qi, const double *q,
                           const double *sc, int64_t n, as_sp_method m, as_budget b,
                           const as_sp_params *p, as_rng *rng, const as_sp_pages *pg,
                           as_sp_sel *sel, char *err);

#endif
