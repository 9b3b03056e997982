#include "as_sp_select.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sp_sampling.h"

/* ---- selection sets ------------------------------------------------------------------------- */

void as_sp_sel_init(as_sp_sel *sel) { memset(sel, 0, sizeof *sel); }

void as_sp_sel_free(as_sp_sel *sel)
{
    free(sel->det);
    free(sel->samp);
    free(sel->samp_w);
    free(sel->q);
    free(sel->cq);
    memset(sel, 0, sizeof *sel);
}

as_status as_sp_sel_reserve(as_sp_sel *sel, int64_t n, char *err)
{
    if (sel->cap >= n) return AS_OK;
    int64_t *a = realloc(sel->det, (size_t)n * sizeof *a);
    if (a) sel->det = a;
    int64_t *b = a ? realloc(sel->samp, (size_t)n * sizeof *b) : NULL;
    if (b) sel->samp = b;
    double *c = b ? realloc(sel->samp_w, (size_t)n * sizeof *c) : NULL;
    if (c) sel->samp_w = c;
    double *e = c ? realloc(sel->q, (size_t)n * sizeof *e) : NULL;
    if (e) sel->q = e;
    double *f = e ? realloc(sel->cq, (size_t)n * sizeof *f) : NULL;
    if (f) sel->cq = f;
    if (!a || !b || !c || !e || !f) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    sel->cap = n;
    return AS_OK;
}

/* ---- page bounds in reduced precision ------------------------------------------------------ */

/* The largest float32 <= x (x finite or not; -inf below -FLT_MAX). */
static float f32_down(double x)
{
    if (isnan(x) || isinf(x)) return (float)x;
    if (x > FLT_MAX) return FLT_MAX;
    if (x < -FLT_MAX) return -INFINITY;
    float f = (float)x; /* nearest: at most one float away */
    if ((double)f > x) f = nextafterf(f, -INFINITY);
    return f;
}

/* The largest bfloat16 <= f (a bfloat16 is a float32 whose low 16 bits are zero): dropping the
 * low bits rounds toward zero, down for f >= 0; for f < 0 a nonzero remainder moves the kept
 * bits one step away from zero (past -max: the pattern of -inf). */
static float bf16_down(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (isnan(f) || (u & 0xFFFFu) == 0) return f;
    u = (u & 0xFFFF0000u) + ((u >> 31) ? 0x10000u : 0u);
    memcpy(&f, &u, sizeof f);
    return f;
}

double as_sp_round_down(double x, as_sp_bounds f)
{
    switch (f) {
    case AS_SP_BOUNDS_F32: return f32_down(x);
    case AS_SP_BOUNDS_BF16: return bf16_down(f32_down(x));
    default: return x;
    }
}

double as_sp_round_up(double x, as_sp_bounds f)
{
    return f == AS_SP_BOUNDS_EXACT ? x : -as_sp_round_down(-x, f);
}

void as_sp_page_round(as_sp_bounds f, int64_t d, double *mn, double *mx)
{
    if (f == AS_SP_BOUNDS_EXACT) return;
    for (int64_t c = 0; c < d; c++) {
        mn[c] = as_sp_round_down(mn[c], f);
        mx[c] = as_sp_round_up(mx[c], f);
    }
}

/* Per-page element-wise min/max of keys [p*P, min((p+1)*P, n)) of kv head kvh, for pages
 * p in [p0, p1), stored as format f keeps them. */
static void page_minmax(const as_layer *l, int64_t kvh, int64_t P, int64_t n, int64_t p0,
                        int64_t p1, as_sp_bounds f, double *pmin, double *pmax, double *buf)
{
    const int64_t d = l->d;
    for (int64_t pg = p0; pg < p1; pg++) {
        int64_t a = pg * P, b = a + P < n ? a + P : n;
        as_layer_read_k(l, kvh, a, b - a, buf);
        double *mn = pmin + (pg - p0) * d, *mx = pmax + (pg - p0) * d;
        for (int64_t c = 0; c < d; c++) mn[c] = mx[c] = buf[c];
        for (int64_t r = 1; r < b - a; r++)
            for (int64_t c = 0; c < d; c++) {
                double v = buf[r * d + c];
                if (v < mn[c]) mn[c] = v;
                if (v > mx[c]) mx[c] = v;
            }
        as_sp_page_round(f, d, mn, mx);
    }
}

void as_sp_pages_free(as_sp_pages *pg)
{
    free(pg->pmin);
    free(pg->pmax);
    memset(pg, 0, sizeof *pg);
}

as_status as_sp_pages_build(const as_layer *l, int64_t kvh, int64_t P, as_sp_bounds f,
                            as_sp_pages *pg, char *err)
{
    memset(pg, 0, sizeof *pg);
    pg->P = P;
    pg->bounds = f;
    pg->n_full = l->n / P;
    size_t sz = (size_t)(pg->n_full > 0 ? pg->n_full : 1) * (size_t)l->d * sizeof(double);
    pg->pmin = malloc(sz);
    pg->pmax = malloc(sz);
    double *buf = malloc((size_t)P * (size_t)l->d * sizeof *buf);
    if (!pg->pmin || !pg->pmax || !buf) {
        free(buf);
        as_sp_pages_free(pg);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    page_minmax(l, kvh, P, l->n, 0, pg->n_full, f, pg->pmin, pg->pmax, buf);
    free(buf);
    return AS_OK;
}

/* The `want` pages (of P keys; the last one partial) of query q with the largest Quest bound
 * U_p = scale sum_c max(q_c M_c, q_c m_c), their keys ascending into det (*nd of them), the
 * min/max stored as format f keeps them. pg may be NULL (min/max read on the fly). */
static as_status select_pages(const as_layer *l, int64_t h, const double *q, int64_t n, int64_t P,
                              as_sp_bounds f, int64_t want, const as_sp_pages *pg, int64_t *det,
                              int64_t *nd, double *ub_out, double *ctr_out, char *err)
{
    const int64_t d = l->d;
    const int64_t kvh = as_layer_kv_head(l, h);
    int64_t npg = (n + P - 1) / P, nfull = n / P;
    *nd = 0;
    if (want > npg) want = npg;
    if (want <= 0 && !ub_out) return AS_OK;
    double *ub = ub_out ? ub_out : malloc((size_t)npg * sizeof *ub);
    double *mn = malloc((size_t)d * sizeof *mn), *mx = malloc((size_t)d * sizeof *mx);
    double *buf = malloc((size_t)P * (size_t)d * sizeof *buf);
    int64_t *pick = malloc((size_t)(want > 0 ? want : 1) * sizeof *pick);
    if (!ub || !mn || !mx || !buf || !pick) {
        if (!ub_out) free(ub);
        free(mn), free(mx), free(buf), free(pick);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (int64_t pgi = 0; pgi < npg; pgi++) {
        const double *a, *bb;
        if (pg && pg->bounds == f && pgi < nfull && pgi < pg->n_full) {
            a = pg->pmin + pgi * d;
            bb = pg->pmax + pgi * d;
        } else {
            page_minmax(l, kvh, P, n, pgi, pgi + 1, f, mn, mx, buf);
            a = mn;
            bb = mx;
        }
        double u = 0;
        for (int64_t c = 0; c < d; c++) u += q[c] >= 0 ? q[c] * bb[c] : q[c] * a[c];
        ub[pgi] = l->scale * u;
        if (ctr_out) { /* the score of the box centre, (U_p + L_p) / 2 */
            double cu = 0;
            for (int64_t c = 0; c < d; c++) cu += q[c] * (0.5 * (a[c] + bb[c]));
            ctr_out[pgi] = l->scale * cu;
        }
    }
    as_status st = want > 0 ? as_select_topk(ub, npg, want, pick, err) : AS_OK;
    int64_t c = 0;
    for (int64_t j = 0; j < want && st == AS_OK; j++)
        for (int64_t i = pick[j] * P; i < (pick[j] + 1) * P && i < n; i++) det[c++] = i;
    *nd = c;
    if (!ub_out) free(ub);
    free(mn), free(mx), free(buf), free(pick);
    return st;
}

/* Select the keys of one query (trial 0 draw for sampling methods, from rng). scores over the
 * n visible keys; q the raw query (page method); pg may be NULL (built on the fly). */
as_status as_sp_select_row(const as_layer *l, int64_t h, int64_t qi, const double *q,
                           const double *sc, int64_t n, as_sp_method m, as_budget b,
                           const as_sp_params *p, as_rng *rng, const as_sp_pages *pg,
                           as_sp_sel *sel, char *err)
{
    as_status st = as_sp_sel_reserve(sel, n, err);
    if (st != AS_OK) return st;
    sel->n = n;
    sel->sampled = as_sp_method_is_sampling(m);
    sel->n_det = sel->n_samp = 0;
    sel->m_draws = 0;
    int64_t k = as_budget_keys(b, n);
    switch (m) {
    case AS_SP_TOPK:
        st = as_select_topk(sc, n, k, sel->det, err);
        sel->n_det = k;
        break;
    case AS_SP_SINK_WINDOW: {
        int64_t s0 = p->sinks < k ? p->sinks : k, w = k - s0, c = 0;
        if (s0 < 0) s0 = 0;
        for (int64_t i = 0; i < s0; i++) sel->det[c++] = i;
        int64_t start = n - w > s0 ? n - w : s0;
        for (int64_t i = start; i < n; i++) sel->det[c++] = i;
        sel->n_det = c;
        break;
    }
    case AS_SP_PAGE: {
        const int64_t P = as_sp_page_size(p);
        st = select_pages(l, h, q, n, P, (as_sp_bounds)p->page_bounds,
                          as_sp_page_count(b, n, P), pg, sel->det, &sel->n_det, NULL, NULL, err);
        break;
    }
    case AS_SP_UNIFORM:
    case AS_SP_TOPK_SAMPLE: {
        int64_t kh = m == AS_SP_UNIFORM ? 0 : (int64_t)llround((double)k * p->heavy_frac);
        if (kh > k) kh = k;
        if (kh < 0) kh = 0;
        st = as_select_topk(sc, n, kh, sel->det, err);
        sel->n_det = kh;
        sel->n_samp = as_select_sample(rng, n, sel->det, kh, k - kh, sel->samp);
        break;
    }
    case AS_SP_PAGE_SAMPLE: {
        /* heavy set: the whole Quest pages within round(F k) keys (none when that is below one
         * page), chosen from q and the keys' page min/max only; the rest of the budget is a
         * uniform sample of the other keys */
        const int64_t P = as_sp_page_size(p);
        int64_t kh = (int64_t)llround((double)k * p->heavy_frac);
        if (kh > k) kh = k;
        if (kh < 0) kh = 0;
        st = select_pages(l, h, q, n, P, (as_sp_bounds)p->page_bounds, kh / P, pg, sel->det,
                          &sel->n_det, NULL, NULL, err);
        if (st == AS_OK)
            sel->n_samp = as_select_sample(rng, n, sel->det, sel->n_det, k - sel->n_det, sel->samp);
        break;
    }
    case AS_SP_PAGE_IS: {
        /* heavy set as page-sample's (Quest's bound U_p ranks the pages); the rest of the
         * budget, m = k - |H| draws with replacement from the proposal of the page scores
         * x_p (box centre or U_p, as_sp_is_proposal); all of the rest when m >= |R| (exact) */
        const int64_t P = as_sp_page_size(p);
        int64_t kh = (int64_t)llround((double)k * p->heavy_frac);
        if (kh > k) kh = k;
        if (kh < 0) kh = 0;
        const size_t npg = (size_t)((n + P - 1) / P);
        double *ub = malloc(2 * npg * sizeof *ub), *ctr = ub ? ub + npg : NULL;
        if (!ub) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
        st = select_pages(l, h, q, n, P, (as_sp_bounds)p->page_bounds, kh / P, pg, sel->det,
                          &sel->n_det, ub, ctr, err);
        int64_t draws = k - sel->n_det;
        if (st == AS_OK && draws >= n - sel->n_det) {
            for (int64_t i = 0; i < n; i++) sel->det[i] = i;
            sel->n_det = n;
        } else if (st == AS_OK && draws > 0) {
            const double *x = p->is_score == AS_SP_IS_BOUND ? ub : ctr;
            st = as_sp_is_proposal(x, n, P, sel->det, sel->n_det, p->is_temp, p->is_mix, sel->q,
                                   sel->cq, err);
            sel->m_draws = draws;
            if (st == AS_OK && p->is_draw == AS_SP_IS_REPLACE) {
                sel->n_samp = as_sp_is_draw(rng, sel->q, sel->cq, n, draws, sel->samp,
                                            sel->samp_w);
            } else if (st == AS_OK) { /* Poisson: q becomes the inclusion probabilities */
                st = as_sp_is_inclusion(sel->q, n, (double)draws, sel->q, err);
                if (st == AS_OK)
                    sel->n_samp = as_sp_is_draw_poisson(rng, sel->q, n, sel->samp, sel->samp_w);
            }
        }
        free(ub);
        break;
    }
    case AS_SP_INDEX:
        if (!p->index) return as_err_set(err, AS_ERR_USAGE, "method 'index' needs an index file");
        st = as_index_get(p->index, l, h, qi, sel->det, &sel->n_det, err);
        break;
    default:
        return as_err_set(err, AS_ERR_USAGE, "unknown method %d", (int)m);
    }
    sel->n_rest = n - sel->n_det;
    return st;
}


/* The seed of one record's draws: (seed, layer, head, query, k, method), k the keys the budget
 * gives this query. Seeding by the budget's value (its k), not its place in the list, makes a
 * budget's records the same whatever other budgets are run with it. */
uint64_t as_sp_record_seed(const as_sp_params *p, int layer, int64_t h, int64_t qi, int64_t k,
                           as_sp_method m)
{
    uint64_t s = as_seed_mix(p->seed, (uint64_t)layer + 1);
    s = as_seed_mix(s, (uint64_t)h + 1);
    s = as_seed_mix(s, (uint64_t)qi + 1);
    s = as_seed_mix(s, (uint64_t)k + 1);
    return as_seed_mix(s, (uint64_t)m + 1);
}


/* ---- one query ----------------------------------------------------------------------------- */

as_status as_sp_select(const as_layer *l, int64_t h, int64_t qi, as_sp_method m, as_budget b,
                       const as_sp_params *p, uint64_t trial, const double *scores,
                       as_sp_sel *sel, char *err)
{
    return as_sp_select_id(l, h, qi, h, qi, m, b, p, trial, scores, sel, err);
}

as_status as_sp_select_id(const as_layer *l, int64_t h, int64_t qi, int64_t seed_h,
                          int64_t seed_qi, as_sp_method m, as_budget b, const as_sp_params *p,
                          uint64_t trial, const double *scores, as_sp_sel *sel, char *err)
{
    if (h < 0 || h >= l->hq || qi < 0 || qi >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "head %lld / query %lld out of range", (long long)h,
                          (long long)qi);
    int64_t n = as_layer_visible(l, qi), kvh = as_layer_kv_head(l, h);
    double *q = malloc((size_t)l->d * sizeof *q), *sc = NULL;
    if (!q) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_layer_read_q(l, h, qi, q);
    as_status st = AS_OK;
    if (!scores) {
        sc = malloc((size_t)n * sizeof *sc);
        if (!sc) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        if (st == AS_OK) st = as_attn_scores(l, kvh, q, 1, n, l->scale, sc, n, err);
        scores = sc;
    }
    if (st == AS_OK) {
        /* seeded as query seed_qi of head seed_h, by the budget's k (as_sp_record_seed) */
        uint64_t seed = as_sp_record_seed(p, l->index, seed_h, seed_qi, as_budget_keys(b, n), m);
        as_rng rng;
        as_rng_seed(&rng, as_seed_mix(seed, 0));
        st = as_sp_select_row(l, h, qi, q, scores, n, m, b, p, &rng, NULL, sel, err);
        if (st == AS_OK && trial > 0 && sel->sampled) {
            as_rng_seed(&rng, as_seed_mix(seed, trial));
            if (m == AS_SP_PAGE_IS && p->is_draw == AS_SP_IS_POISSON)
                sel->n_samp = as_sp_is_draw_poisson(&rng, sel->q, n, sel->samp, sel->samp_w);
            else if (m == AS_SP_PAGE_IS)
                sel->n_samp = as_sp_is_draw(&rng, sel->q, sel->cq, n, sel->m_draws, sel->samp,
                                            sel->samp_w);
            else
                sel->n_samp = as_select_sample(&rng, n, sel->det, sel->n_det, sel->n_samp,
                                               sel->samp);
        }
    }
    free(q);
    free(sc);
    return st;
}
