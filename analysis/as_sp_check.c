/* as_sp_check: a kernel's outputs against the subset and mixed bounds (as_sp_check.h). */
#include "as_sp_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_select.h"

enum { KC_TILE = 1024 };

double as_sp_mixed_bound(double p_s, double share, double dev_max)
{
    double rest = 1.0 - p_s;
    if (rest < 0) rest = 0;
    return (rest + share) * dev_max;
}

/* scale <q, k_j> for the keys j of one kv head, one row read at a time */
static void key_scores(const as_layer *l, int64_t kvh, const double *q, const int64_t *keys,
                       int64_t n, double *krow, double *out)
{
    for (int64_t j = 0; j < n; j++) {
        as_layer_read_k(l, kvh, keys[j], 1, krow);
        double s = 0;
        for (int64_t c = 0; c < l->d; c++) s += q[c] * krow[c];
        out[j] = l->scale * s;
    }
}

/* 1 - lam = w Z_smp / (Z_S + w Z_smp), from the scores of S and of the samples */
static as_status sample_share(const as_layer *l, int64_t h, int64_t qi, const int64_t *S,
                              int64_t k, const int64_t *samp, int64_t m, double w, double *share,
                              char *err)
{
    *share = 0;
    if (m <= 0 || !(w > 0)) return AS_OK;
    const int64_t d = l->d, kvh = as_layer_kv_head(l, h);
    double *q = malloc((size_t)d * sizeof *q), *krow = malloc((size_t)d * sizeof *krow);
    double *s = malloc((size_t)(k + m) * sizeof *s);
    if (!q || !krow || !s) {
        free(q), free(krow), free(s);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    as_layer_read_q(l, h, qi, q);
    key_scores(l, kvh, q, S, k, krow, s);
    key_scores(l, kvh, q, samp, m, krow, s + k);
    double mx = -INFINITY;
    for (int64_t j = 0; j < k + m; j++) mx = fmax(mx, s[j]);
    double zs = 0, zm = 0;
    for (int64_t j = 0; j < k; j++) zs += exp(s[j] - mx);
    for (int64_t j = 0; j < m; j++) zm += exp(s[k + j] - mx);
    zm *= w;
    *share = zs + zm > 0 ? zm / (zs + zm) : 0;
    free(q), free(krow), free(s);
    return AS_OK;
}

/* max_{i not in S} ||v_i - o_S|| and max_i ||v_i|| over the n visible keys (S sorted) */
static as_status value_maxima(const as_layer *l, int64_t kvh, int64_t n, const int64_t *S,
                              int64_t k, const double *oS, double *dev_max, double *v_max,
                              char *err)
{
    const int64_t d = l->d, tile = n < KC_TILE ? (n > 0 ? n : 1) : KC_TILE;
    double *vt = malloc((size_t)tile * (size_t)d * sizeof *vt);
    if (!vt) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    double dev2 = 0, v2 = 0;
    int64_t ps = 0;
    for (int64_t j0 = 0; j0 < n; j0 += tile) {
        const int64_t cnt = n - j0 < tile ? n - j0 : tile;
        as_layer_read_v(l, kvh, j0, cnt, vt);
        for (int64_t i = 0; i < cnt; i++) {
            const double *v = vt + i * d;
            double a = 0;
            for (int64_t c = 0; c < d; c++) a += v[c] * v[c];
            v2 = fmax(v2, a);
            while (ps < k && S[ps] < j0 + i) ps++;
            if (ps < k && S[ps] == j0 + i) continue;
            double b = 0;
            for (int64_t c = 0; c < d; c++) b += (v[c] - oS[c]) * (v[c] - oS[c]);
            dev2 = fmax(dev2, b);
        }
    }
    free(vt);
    *dev_max = sqrt(dev2);
    *v_max = sqrt(v2);
    return AS_OK;
}

as_status as_sp_check_kernel(const as_layer *l, int64_t h, int64_t qi, const int64_t *S,
                             int64_t k, const int64_t *samp, int64_t m, double w,
                             const double *o_hat, double rel_tol, double v_tol,
                             as_sp_kcheck *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (m < 0 || (m > 0 && !samp) || !o_hat)
        return as_err_set(err, AS_ERR_USAGE, "kernel check: bad sample list or output");
    const int64_t d = l->d, n = as_layer_visible(l, qi);
    double *oS = malloc((size_t)d * sizeof *oS);
    int64_t *Ss = malloc((size_t)(k > 0 ? k : 1) * sizeof *Ss);
    if (!oS || !Ss) {
        free(oS), free(Ss);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    as_status st = as_sp_check_subset(l, h, qi, S, k, o_hat, rel_tol, &out->subset, oS, err);
    for (int64_t j = 0; st == AS_OK && j < m; j++)
        if (samp[j] < 0 || samp[j] >= n)
            st = as_err_set(err, AS_ERR_VALUE, "sampled key %lld outside 0..%lld",
                            (long long)samp[j], (long long)(n - 1));
    if (st == AS_OK) {
        if (k > 0) memcpy(Ss, S, (size_t)k * sizeof *Ss);
        as_select_sort_unique(Ss, k);
        st = value_maxima(l, as_layer_kv_head(l, h), n, Ss, k, oS, &out->dev_max, &out->v_max,
                          err);
    }
    if (st == AS_OK) st = sample_share(l, h, qi, S, k, samp, m, w, &out->share, err);
    if (st == AS_OK) {
        const as_sp_eval *ev = &out->subset;
        out->captured_mass = ev->captured_mass;
        out->norm_o = ev->norm_o;
        out->abs_error = ev->abs_error;
        out->rel_error = ev->norm_o > 0 ? ev->abs_error / ev->norm_o : ev->abs_error;
        out->bound = as_sp_mixed_bound(out->captured_mass, out->share, out->dev_max);
        out->tol = rel_tol * out->norm_o + v_tol * out->v_max;
        out->violated = !(out->abs_error <= out->bound + out->tol) || !ev->identity_ok;
    }
    free(oS), free(Ss);
    return st;
}

/* ---- a whole layer ---------------------------------------------------------------------------- */

/* S and the samples of one row, as the kernel used them for a query seeing n keys. */
static void row_sets(const as_sp_ksel *sel, int64_t row, int64_t n, unsigned char *inS,
                     int64_t *S, int64_t *k, int64_t *samp, int64_t *m, double *w)
{
    const int32_t *ids = sel->idx + row * sel->kcap;
    const int32_t cnt = sel->count[row];
    int64_t ndet = sel->n_det < 0 ? cnt : (sel->n_det < n ? sel->n_det : n);
    if (ndet > cnt) ndet = cnt;
    *k = *m = 0;
    for (int64_t e = 0; e < ndet; e++) {
        const int32_t j = ids[e];
        if (j >= 0 && j < n && !inS[j]) {
            inS[j] = 1;
            S[(*k)++] = j;
        }
    }
    /* each sample stands for (the pool it was drawn from) / (the draws) keys */
    const int64_t pool = sel->sample_rest ? n - *k : n;
    *w = cnt > ndet ? (double)pool / (double)(cnt - ndet) : 0;
    for (int64_t e = ndet; e < cnt; e++) {
        const int32_t j = ids[e];
        const float lw = sel->logw ? sel->logw[row * sel->kcap + e] : 0.f;
        if (j >= 0 && j < n && !inS[j] && lw != -INFINITY) samp[(*m)++] = j;
    }
    for (int64_t e = 0; e < *k; e++) inS[S[e]] = 0;
}

static void stats_add(as_sp_kstats *s, const as_sp_kcheck *c)
{
    s->queries++;
    s->violations += c->violated;
    const double ratio = c->abs_error / (c->bound + c->tol);
    if (ratio > s->worst_ratio) {
        s->worst_ratio = ratio;
        s->bound_at_worst = c->bound;
    }
    s->max_rel_error = fmax(s->max_rel_error, c->rel_error);
    s->max_abs_error = fmax(s->max_abs_error, c->abs_error);
    s->max_bound = fmax(s->max_bound, c->bound);
    s->min_captured_mass = fmin(s->min_captured_mass, c->captured_mass);
}

as_status as_sp_check_kernel_layer(const as_layer *l, const float *o, int64_t ldo,
                                   const as_sp_ksel *sel, double rel_tol, double v_tol,
                                   as_sp_kstats *stats, char *err)
{
    const int64_t d = l->d, n = l->n, group = l->hq / l->hkv;
    if (ldo < d) return as_err_set(err, AS_ERR_USAGE, "kernel check: output stride %lld < d", (long long)ldo);
    if (sel && (!sel->idx || !sel->count || sel->kcap < 0))
        return as_err_set(err, AS_ERR_USAGE, "kernel check: incomplete selection");
    const size_t nn = (size_t)(n > 0 ? n : 1);
    unsigned char *inS = calloc(nn, 1);
    int64_t *S = malloc(nn * sizeof *S), *samp = malloc(((size_t)(sel ? sel->kcap : 0) + 1) * sizeof *samp);
    double *oh = malloc((size_t)d * sizeof *oh);
    as_status st = AS_OK;
    if (!inS || !S || !samp || !oh) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int64_t h = 0; h < l->hq; h++) {
        memset(&stats[h], 0, sizeof stats[h]);
        stats[h].min_captured_mass = 1;
    }
    for (int64_t h = 0; st == AS_OK && h < l->hq; h++)
        for (int64_t t = 0; st == AS_OK && t < l->t; t++) {
            const int64_t nv = as_layer_visible(l, t);
            int64_t k = 0, m = 0;
            double w = 0;
            if (sel) {
                const int64_t row = sel->per_query_head ? t * l->hq + h : t * l->hkv + h / group;
                row_sets(sel, row, nv, inS, S, &k, samp, &m, &w);
            } else {
                for (k = 0; k < nv; k++) S[k] = k;
            }
            const float *og = o + (size_t)(t * l->hq + h) * (size_t)ldo;
            for (int64_t c = 0; c < d; c++) oh[c] = og[c];
            as_sp_kcheck kc;
            st = as_sp_check_kernel(l, h, t, S, k, samp, m, w, oh, rel_tol, v_tol, &kc, err);
            if (st == AS_OK) stats_add(&stats[h], &kc);
        }
    free(inS), free(S), free(samp), free(oh);
    return st;
}
