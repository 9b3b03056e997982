#include "as_attn.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

as_status as_attn_scores(const as_layer *l, int64_t kvh, const double *Q, int64_t m, int64_t n,
                         double scale, double *S, int64_t lds, char *err)
{
    if (n < 0 || n > l->n || m < 0 || lds < n)
        return as_err_set(err, AS_ERR_USAGE, "attention scores: bad sizes (m=%lld n=%lld)",
                          (long long)m, (long long)n);
    const int64_t d = l->d;
    int64_t tile = n < AS_ATTN_TILE ? n : AS_ATTN_TILE;
    if (tile == 0 || m == 0) return AS_OK;
    double *kt = malloc((size_t)tile * (size_t)d * sizeof *kt);
    if (!kt) return as_err_set(err, AS_ERR_NOMEM, "attention scores: out of memory");
    for (int64_t j0 = 0; j0 < n; j0 += tile) {
        int64_t cnt = n - j0 < tile ? n - j0 : tile;
        as_layer_read_k(l, kvh, j0, cnt, kt);
        /* S[:, j0:j0+cnt] = scale * Q (m x d) * Kt^T (d x cnt) */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cnt, (int)d, scale, Q,
                    (int)d, kt, (int)d, 0.0, S + j0, (int)lds);
    }
    free(kt);
    return AS_OK;
}

double as_softmax_inplace(double *s, int64_t n)
{
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (s[i] > mx) mx = s[i];
    double z = 0.0;
    for (int64_t i = 0; i < n; i++) {
        s[i] = exp(s[i] - mx);
        z += s[i];
    }
    double inv = 1.0 / z;
    for (int64_t i = 0; i < n; i++) s[i] *= inv;
    return mx + log(z);
}

double as_softmax_row(const double *sc, double *p, int64_t n, int64_t nm, double *lam)
{
    memcpy(p, sc, (size_t)n * sizeof *p);
    const double lse = as_softmax_inplace(p, n);
    double smax = 0;
    for (int64_t i = 0; i < n; i++) smax = fmax(smax, fabs(sc[i]));
    *lam = smax + fabs(lse);
    for (int64_t i = n; i < nm; i++) p[i] = 0.0;
    return lse;
}

as_status as_attn_output(const as_layer *l, int64_t kvh, const double *p, int64_t n, double *o,
                         char *err)
{
    const int64_t d = l->d;
    for (int64_t c = 0; c < d; c++) o[c] = 0.0;
    int64_t tile = n < AS_ATTN_TILE ? n : AS_ATTN_TILE;
    if (tile == 0) return AS_OK;
    double *vt = malloc((size_t)tile * (size_t)d * sizeof *vt);
    if (!vt) return as_err_set(err, AS_ERR_NOMEM, "attention output: out of memory");
    for (int64_t j0 = 0; j0 < n; j0 += tile) {
        int64_t cnt = n - j0 < tile ? n - j0 : tile;
        as_layer_read_v(l, kvh, j0, cnt, vt);
        /* o += Vt^T (d x cnt) * p[j0:j0+cnt] */
        cblas_dgemv(CblasRowMajor, CblasTrans, (int)cnt, (int)d, 1.0, vt, (int)d, p + j0, 1, 1.0,
                    o, 1);
    }
    free(vt);
    return AS_OK;
}

as_status as_attn_dense(const as_layer *l, int64_t h, int64_t qi, double *p, double *o,
                        int64_t *n_out, double *lse, char *err)
{
    if (h < 0 || h >= l->hq || qi < 0 || qi >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "attention: head %lld / query %lld out of range",
                          (long long)h, (long long)qi);
    double *q = malloc((size_t)l->d * sizeof *q);
    if (!q) return as_err_set(err, AS_ERR_NOMEM, "attention: out of memory");
    as_layer_read_q(l, h, qi, q);
    int64_t kvh = as_layer_kv_head(l, h), n = as_layer_visible(l, qi);
    as_status st = as_attn_scores(l, kvh, q, 1, n, l->scale, p, n, err);
    free(q);
    if (st != AS_OK) return st;
    double z = as_softmax_inplace(p, n);
    if (lse) *lse = z;
    if (n_out) *n_out = n;
    return as_attn_output(l, kvh, p, n, o, err);
}
