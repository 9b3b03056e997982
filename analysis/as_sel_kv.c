#include "as_sel_kv.h"

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

as_status as_sel_page_bounds(const as_layer *l, int64_t kvh, const double *q, int64_t n,
                             int64_t P, double *ub, char *err)
{
    if (P < 1 || n < 1 || n > l->n || kvh < 0 || kvh >= l->hkv)
        return as_err_set(err, AS_ERR_USAGE, "page bounds: bad sizes (n=%lld, page %lld)",
                          (long long)n, (long long)P);
    const int64_t d = l->d, npg = (n + P - 1) / P;
    double *buf = malloc((size_t)P * (size_t)d * sizeof *buf);
    double *mn = malloc((size_t)d * sizeof *mn), *mx = malloc((size_t)d * sizeof *mx);
    if (!buf || !mn || !mx) {
        free(buf), free(mn), free(mx);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (int64_t pg = 0; pg < npg; pg++) {
        int64_t a = pg * P, e = a + P < n ? a + P : n;
        as_layer_read_k(l, kvh, a, e - a, buf);
        for (int64_t c = 0; c < d; c++) mn[c] = mx[c] = buf[c];
        for (int64_t r = 1; r < e - a; r++)
            for (int64_t c = 0; c < d; c++) {
                double v = buf[r * d + c];
                if (v < mn[c]) mn[c] = v;
                if (v > mx[c]) mx[c] = v;
            }
        double u = 0;
        for (int64_t c = 0; c < d; c++) u += q[c] >= 0 ? q[c] * mx[c] : q[c] * mn[c];
        ub[pg] = l->scale * u;
    }
    free(buf), free(mn), free(mx);
    return AS_OK;
}

/* Pages of one kv group ranked by the max of their bounds over the group's g query rows Q;
 * whole pages within the budget, as as_sp_select's page method counts them. */
static as_status kv_pages(const as_layer *l, int64_t kvh, const double *Q, int64_t g, int64_t n,
                          as_budget b, const as_sp_params *p, as_sp_sel *sel, char *err)
{
    const int64_t P = p->page_size > 0 ? p->page_size : 16, d = l->d;
    const int64_t npg = (n + P - 1) / P, k = as_budget_keys(b, n);
    int64_t want = k >= n ? npg : k / P;
    if (want < 1) want = 1;
    if (want > npg) want = npg;
    double *u = malloc((size_t)npg * sizeof *u), *ub = malloc((size_t)npg * sizeof *ub);
    int64_t *pick = malloc((size_t)want * sizeof *pick);
    int64_t *det = malloc((size_t)n * sizeof *det), *samp = malloc((size_t)n * sizeof *samp);
    as_status st = AS_OK;
    if (!u || !ub || !pick || !det || !samp) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int64_t pg = 0; pg < npg && st == AS_OK; pg++) u[pg] = -INFINITY;
    for (int64_t h = 0; h < g && st == AS_OK; h++) {
        st = as_sel_page_bounds(l, kvh, Q + h * d, n, P, ub, err);
        for (int64_t pg = 0; pg < npg && st == AS_OK; pg++)
            if (ub[pg] > u[pg]) u[pg] = ub[pg];
    }
    if (st == AS_OK) st = as_select_topk(u, npg, want, pick, err);
    if (st == AS_OK) {
        int64_t c = 0;
        for (int64_t j = 0; j < want; j++)
            for (int64_t i = pick[j] * P; i < (pick[j] + 1) * P && i < n; i++) det[c++] = i;
        as_sp_sel_free(sel);
        sel->n = n;
        sel->sampled = 0;
        sel->det = det;
        sel->n_det = c;
        sel->samp = samp;
        sel->n_samp = 0;
        sel->n_rest = n - c;
        sel->cap = n;
        det = samp = NULL;
    }
    free(u), free(ub), free(pick), free(det), free(samp);
    return st;
}

/* The m that sized sampling needs for scores s (n keys of kv head kvh, values V) against the heavy
 * set H: as_sp_sampling_size for the absolute target eps_rel * ||o||. */
static as_status needed_samples(const as_layer *l, int64_t kvh, const double *s, int64_t n,
                                const double *V, const int64_t *H, int64_t kh, double eps_rel,
                                double delta, double *pbuf, double *o, int64_t *m, char *err)
{
    memcpy(pbuf, s, (size_t)n * sizeof *pbuf);
    as_softmax_inplace(pbuf, n);
    as_status st = as_attn_output(l, kvh, pbuf, n, o, err);
    if (st != AS_OK) return st;
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
    if (m < 0 || m >= AS_SP_N_METHODS || m == AS_SP_INDEX)
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
    as_status st = AS_OK;
    if (!Q || !S || !rank || !o || (sized && (!V || !pbuf || !H)))
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    const int64_t k = as_budget_keys(b, n);
    int64_t kh = (int64_t)llround((double)k * p->heavy_frac);
    if (kh > k) kh = k;
    if (kh < 0) kh = 0;
    for (int64_t g = 0; g < l->hkv && st == AS_OK; g++) {
        const int64_t h0 = g * G;
        for (int64_t j = 0; j < G; j++) as_layer_read_q(l, h0 + j, qi, Q + j * d);
        /* scores row by row, as as_sp_select computes them for one query */
        for (int64_t j = 0; j < G && st == AS_OK; j++)
            st = as_attn_scores(l, g, Q + j * d, 1, n, l->scale, S + j * n, n, err);
        if (st == AS_OK && sized) as_layer_read_v(l, g, 0, n, V);
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
                    st = needed_samples(l, g, s, n, V, H, kh, eps_rel, p->delta, pbuf, o, &mm, err);
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
        if (m == AS_SP_PAGE) {
            st = kv_pages(l, g, Q, G, n, b, p, &sels[g], err);
            continue;
        }
        as_sel_kv_rank(S, G, n, n, rank);
        if (!sized) {
            st = as_sp_select_id(l, h0, qi, h0, seed_qi, m, b, p, trial, rank, &sels[g], err);
            continue;
        }
        st = as_select_topk(rank, n, kh, H, err);
        int64_t mg = 0;
        for (int64_t j = 0; j < G && st == AS_OK; j++) {
            int64_t mm = 0;
            st = needed_samples(l, g, S + j * n, n, V, H, kh, eps_rel, p->delta, pbuf, o, &mm,
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
    return st;
}
