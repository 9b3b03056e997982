#include "as_sel_kv.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_select.h"

void as_sel_kv_rank(const double *S, int64_t g, int64_t n, int64_t lds, double *r)
{
    for (int64_t i = 0; i < n; i++) r[i] = -INFINITY;
    for (int64_t h = 0; h < g; h++) {
        const double *s = S + h * lds;
        double mx = -INFINITY, z = 0;
        for (int64_t i = 0; i < n; i++)
            if (s[i] > mx) mx = s[i];
        for (int64_t i = 0; i < n; i++) z += exp(s[i] - mx);
        const double lse = mx + log(z);
        for (int64_t i = 0; i < n; i++) {
            double v = s[i] - lse;
            if (v > r[i]) r[i] = v;
        }
    }
}

/* Element-wise min and max of the keys of each page of P keys over [0, n) of kv head kvh
 * (pmin, pmax: ceil(n / P) x d), reading rows in chunks of whole pages; branch-free. */
static void group_page_minmax(const as_layer *l, int64_t kvh, int64_t n, int64_t P, double *pmin,
                              double *pmax, double *buf, int64_t bufrows)
{
    const int64_t d = l->d, npg = (n + P - 1) / P;
    const int64_t chunk = bufrows / P > 0 ? bufrows / P : 1; /* pages per read */
    for (int64_t p0 = 0; p0 < npg; p0 += chunk) {
        int64_t p1 = p0 + chunk < npg ? p0 + chunk : npg;
        int64_t a = p0 * P, e = p1 * P < n ? p1 * P : n;
        as_layer_read_k(l, kvh, a, e - a, buf);
        for (int64_t pg = p0; pg < p1; pg++) {
            int64_t r0 = pg * P - a, r1 = (pg + 1) * P < n ? (pg + 1) * P - a : n - a;
            double *mn = pmin + pg * d, *mx = pmax + pg * d;
            const double *row = buf + r0 * d;
            for (int64_t c = 0; c < d; c++) mn[c] = mx[c] = row[c];
            for (int64_t r = r0 + 1; r < r1; r++) {
                row = buf + r * d;
                for (int64_t c = 0; c < d; c++) {
                    mn[c] = row[c] < mn[c] ? row[c] : mn[c];
                    mx[c] = row[c] > mx[c] ? row[c] : mx[c];
                }
            }
        }
    }
}

/* Quest bounds of query q from the pages' min/max; the same expression, in the same order, as
 * as_sp_select's page method. */
static void bounds_of(const double *q, const double *pmin, const double *pmax, int64_t npg,
                      int64_t d, double scale, double *ub)
{
    for (int64_t pg = 0; pg < npg; pg++) {
        const double *a = pmin + pg * d, *bb = pmax + pg * d;
        double u = 0;
        for (int64_t c = 0; c < d; c++) u += q[c] >= 0 ? q[c] * bb[c] : q[c] * a[c];
        ub[pg] = scale * u;
    }
}

as_status as_sel_page_bounds(const as_layer *l, int64_t kvh, const double *q, int64_t n,
                             int64_t P, double *ub, char *err)
{
    if (P < 1 || n < 1 || n > l->n || kvh < 0 || kvh >= l->hkv)
        return as_err_set(err, AS_ERR_USAGE, "page bounds: bad sizes (n=%lld, page %lld)",
                          (long long)n, (long long)P);
    const int64_t d = l->d, npg = (n + P - 1) / P, bufrows = P > 256 ? P : 256;
    double *pmin = malloc((size_t)(npg * d) * sizeof *pmin), *pmax = malloc((size_t)(npg * d) * sizeof *pmax);
    double *buf = malloc((size_t)(bufrows * d) * sizeof *buf);
    if (!pmin || !pmax || !buf) {
        free(pmin), free(pmax), free(buf);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    group_page_minmax(l, kvh, n, P, pmin, pmax, buf, bufrows);
    bounds_of(q, pmin, pmax, npg, d, l->scale, ub);
    free(pmin), free(pmax), free(buf);
    return AS_OK;
}

/* Pages ranked by the max of their bounds over the g query rows Q (g = 1: one head's own page
 * selection); whole pages within the budget, as as_sp_select's page method counts them. */
static as_status pick_pages(const as_layer *l, const double *Q, int64_t g, int64_t n, int64_t P,
                            const double *pmin, const double *pmax, as_budget b, as_sp_sel *sel,
                            double *u, double *ub, int64_t *pick, char *err)
{
    const int64_t d = l->d, npg = (n + P - 1) / P, k = as_budget_keys(b, n);
    int64_t want = k >= n ? npg : k / P;
    if (want < 1) want = 1;
    if (want > npg) want = npg;
    for (int64_t h = 0; h < g; h++) {
        bounds_of(Q + h * d, pmin, pmax, npg, d, l->scale, h ? ub : u);
        if (h)
            for (int64_t pg = 0; pg < npg; pg++) u[pg] = ub[pg] > u[pg] ? ub[pg] : u[pg];
    }
    as_status st = as_select_topk(u, npg, want, pick, err);
    if (st != AS_OK) return st;
    if (sel->cap < n) {
        int64_t *det = malloc((size_t)n * sizeof *det), *samp = malloc((size_t)n * sizeof *samp);
        if (!det || !samp) {
            free(det), free(samp);
            return as_err_set(err, AS_ERR_NOMEM, "out of memory");
        }
        as_sp_sel_free(sel);
        sel->det = det;
        sel->samp = samp;
        sel->cap = n;
    }
    int64_t c = 0;
    for (int64_t j = 0; j < want; j++)
        for (int64_t i = pick[j] * P; i < (pick[j] + 1) * P && i < n; i++) sel->det[c++] = i;
    sel->n = n;
    sel->sampled = 0;
    sel->n_det = c;
    sel->n_samp = 0;
    sel->n_rest = n - c;
    return AS_OK;
}

/* Scores of query q against the keys Kd (n x d doubles, the kv head's keys converted once for
 * all its query heads): the same dgemm calls over the same tiles of AS_ATTN_TILE keys as
 * as_attn_scores, on the same values, so the same bits as as_sp_select's scores (the tests
 * compare the selections with as_sp_select's and the program's). */
static void head_scores(const double *Kd, int64_t n, int64_t d, const double *q, double scale,
                        double *s)
{
    for (int64_t j0 = 0; j0 < n; j0 += AS_ATTN_TILE) {
        int64_t cnt = n - j0 < AS_ATTN_TILE ? n - j0 : AS_ATTN_TILE;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, (int)cnt, (int)d, scale, q, (int)d,
                    Kd + j0 * d, (int)d, 0.0, s + j0, (int)n);
    }
}

/* The m that sized sampling needs for scores s (n keys, the kv head's values V) against the heavy
 * set H: as_sp_sampling_size for the absolute target eps_rel * ||o||. */
static as_status needed_samples(const as_layer *l, const double *s, int64_t n,
                                const double *V, const int64_t *H, int64_t kh, double eps_rel,
                                double delta, double *pbuf, double *o, int64_t *m, char *err)
{
    memcpy(pbuf, s, (size_t)n * sizeof *pbuf);
    as_softmax_inplace(pbuf, n);
    /* o = V^T a on the kv head's values, already converted */
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)l->d, 1.0, V, (int)l->d, pbuf, 1, 0.0, o, 1);
    as_status st;
    double o2 = 0;
    for (int64_t c = 0; c < l->d; c++) o2 += o[c] * o[c];
    as_sp_sstats ss;
    st = as_sp_sampling_stats(s, V, n, l->d, H, kh, &ss, err);
    if (st != AS_OK) return st;
    *m = as_sp_sampling_size(&ss, eps_rel * sqrt(o2), delta);
    return AS_OK;
}

as_status as_sel_step(const as_layer *l, int64_t qi, as_sel_mode mode, as_sp_method m,
                      as_budget b, const as_sp_params *p, uint64_t trial, int64_t seed_qi,
                      double eps_rel, as_sp_sel *sels, int64_t *needed, char *err)
{
    if (qi < 0 || qi >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "query %lld out of range", (long long)qi);
    /* index needs a file; page-sample's and page-is's heavy set would need the group's page bound (a kv
     * head's selection), which this step does not compute for it */
    if (m < 0 || m >= AS_SP_N_METHODS || m == AS_SP_INDEX || m == AS_SP_PAGE_SAMPLE ||
        m == AS_SP_PAGE_IS)
        return as_err_set(err, AS_ERR_USAGE, "step selection: method must be one of topk, "
                                             "sink-window, page, uniform, topk-sample");
    if (mode != AS_SEL_Q && mode != AS_SEL_KV)
        return as_err_set(err, AS_ERR_USAGE, "step selection: unknown mode %d", (int)mode);
    const int sized = eps_rel > 0;
    if (sized && m != AS_SP_TOPK_SAMPLE)
        return as_err_set(err, AS_ERR_USAGE, "an (eps, delta) target sizes topk-sample only");
    if (sized && !(p->delta > 0 && p->delta < 1))
        return as_err_set(err, AS_ERR_USAGE, "delta must be in (0, 1)");
    const int64_t n = as_layer_visible(l, qi), d = l->d, G = l->hq / l->hkv;
    const int64_t nrows = mode == AS_SEL_Q ? l->hq : l->hkv;
    if (needed)
        for (int64_t r = 0; r < nrows; r++) needed[r] = -1;
    double *Q = malloc((size_t)G * (size_t)d * sizeof *Q);
    double *S = malloc((size_t)G * (size_t)n * sizeof *S);
    double *rank = malloc((size_t)n * sizeof *rank);
    double *V = sized ? malloc((size_t)n * (size_t)d * sizeof *V) : NULL;
    double *pbuf = sized ? malloc((size_t)n * sizeof *pbuf) : NULL;
    double *o = malloc((size_t)d * sizeof *o);
    int64_t *H = sized ? malloc((size_t)n * sizeof *H) : NULL;
    /* pages: per kv head the pages' key min/max (shared by its query heads), bounds per head */
    const int page = m == AS_SP_PAGE;
    const int64_t P = p->page_size > 0 ? p->page_size : 16, npg = (n + P - 1) / P;
    const int64_t bufrows = P > 256 ? P : 256;
    double *pmin = NULL, *pmax = NULL, *pu = NULL, *pub = NULL, *kbuf = NULL;
    int64_t *pick = NULL;
    if (page) {
        pmin = malloc((size_t)(npg * d) * sizeof *pmin);
        pmax = malloc((size_t)(npg * d) * sizeof *pmax);
        pu = malloc((size_t)npg * sizeof *pu);
        pub = malloc((size_t)npg * sizeof *pub);
        pick = malloc((size_t)npg * sizeof *pick);
        kbuf = malloc((size_t)(bufrows * d) * sizeof *kbuf);
    }
    /* topk and topk-sample rank keys by scores; sink-window and uniform read none, so a
     * placeholder row (zeros) keeps as_sp_select_id from computing them */
    const int scored = m == AS_SP_TOPK || m == AS_SP_TOPK_SAMPLE;
    double *Kd = scored ? malloc((size_t)n * (size_t)d * sizeof *Kd) : NULL;
    as_status st = AS_OK;
    if (!Q || !S || !rank || !o || (sized && (!V || !pbuf || !H)) || (scored && !Kd) ||
        (page && (!pmin || !pmax || !pu || !pub || !pick || !kbuf)))
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    if (st == AS_OK && !scored)
        for (int64_t i = 0; i < G * n; i++) S[i] = 0.0;
    const int64_t k = as_budget_keys(b, n);
    int64_t kh = (int64_t)llround((double)k * p->heavy_frac);
    if (kh > k) kh = k;
    if (kh < 0) kh = 0;
    for (int64_t g = 0; g < l->hkv && st == AS_OK; g++) {
        const int64_t h0 = g * G;
        for (int64_t j = 0; j < G; j++) as_layer_read_q(l, h0 + j, qi, Q + j * d);
        if (page) {
            group_page_minmax(l, g, n, P, pmin, pmax, kbuf, bufrows);
            if (mode == AS_SEL_Q)
                for (int64_t j = 0; j < G && st == AS_OK; j++)
                    st = pick_pages(l, Q + j * d, 1, n, P, pmin, pmax, b, &sels[h0 + j], pu, pub,
                                    pick, err);
            else
                st = pick_pages(l, Q, G, n, P, pmin, pmax, b, &sels[g], pu, pub, pick, err);
            continue;
        }
        /* scores row by row, as as_sp_select computes them for one query */
        if (scored) {
            as_layer_read_k(l, g, 0, n, Kd);
            for (int64_t j = 0; j < G; j++) head_scores(Kd, n, d, Q + j * d, l->scale, S + j * n);
        }
        if (sized) as_layer_read_v(l, g, 0, n, V);
        if (st != AS_OK) break;
        if (mode == AS_SEL_Q) {
            for (int64_t j = 0; j < G && st == AS_OK; j++) {
                const int64_t h = h0 + j;
                const double *s = S + j * n;
                if (!sized) {
                    st = as_sp_select_id(l, h, qi, h, seed_qi, m, b, p, trial, s, &sels[h], err);
                    continue;
                }
                int64_t mm = 0;
                st = as_select_topk(s, n, kh, H, err);
                if (st == AS_OK)
                    st = needed_samples(l, s, n, V, H, kh, eps_rel, p->delta, pbuf, o, &mm, err);
                if (st != AS_OK) break;
                as_sp_params pp = *p;
                pp.heavy_frac = kh + mm > 0 ? (double)kh / (double)(kh + mm) : 0;
                st = as_sp_select_id(l, h, qi, h, seed_qi, m, (as_budget){0, kh + mm}, &pp, trial,
                                     s, &sels[h], err);
                if (st == AS_OK && (sels[h].n_det != kh || sels[h].n_samp != mm))
                    st = as_err_set(err, AS_ERR_CHECK, "sized sampling drew %lld + %lld keys, "
                                    "expected %lld + %lld", (long long)sels[h].n_det,
                                    (long long)sels[h].n_samp, (long long)kh, (long long)mm);
                if (needed) needed[h] = mm;
            }
            continue;
        }
        /* one selection for the group */
        if (scored)
            as_sel_kv_rank(S, G, n, n, rank);
        else
            memcpy(rank, S, (size_t)n * sizeof *rank);
        if (!sized) {
            st = as_sp_select_id(l, h0, qi, h0, seed_qi, m, b, p, trial, rank, &sels[g], err);
            continue;
        }
        st = as_select_topk(rank, n, kh, H, err);
        int64_t mg = 0;
        for (int64_t j = 0; j < G && st == AS_OK; j++) {
            int64_t mm = 0;
            st = needed_samples(l, S + j * n, n, V, H, kh, eps_rel, p->delta, pbuf, o, &mm,
                                err);
            if (mm > mg) mg = mm;
        }
        if (st != AS_OK) break;
        as_sp_params pp = *p;
        pp.heavy_frac = kh + mg > 0 ? (double)kh / (double)(kh + mg) : 0;
        st = as_sp_select_id(l, h0, qi, h0, seed_qi, m, (as_budget){0, kh + mg}, &pp, trial, rank,
                             &sels[g], err);
        if (st == AS_OK && (sels[g].n_det != kh || sels[g].n_samp != mg))
            st = as_err_set(err, AS_ERR_CHECK, "sized sampling drew %lld + %lld keys, expected "
                            "%lld + %lld", (long long)sels[g].n_det, (long long)sels[g].n_samp,
                            (long long)kh, (long long)mg);
        if (needed) needed[g] = mg;
    }
    free(Q), free(S), free(rank), free(V), free(pbuf), free(o), free(H);
    free(pmin), free(pmax), free(pu), free(pub), free(pick), free(kbuf), free(Kd);
    return st;
}
