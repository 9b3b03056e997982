#include "as_limits.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIM_ROWS 1024 /* rows per read */

/* ||x|| of d doubles without overflow or underflow: the plain sum of squares when it is a
 * normal number, else the sum of (x_c / max|x_c|)^2 times max|x_c|. */
static double row_norm(const double *x, int64_t d)
{
    double s = 0.0;
    for (int64_t c = 0; c < d; c++) s += x[c] * x[c];
    if (isfinite(s) && s >= 0x1p-900) return sqrt(s);
    double amax = 0.0;
    for (int64_t c = 0; c < d; c++) amax = fmax(amax, fabs(x[c]));
    if (amax == 0.0 || !isfinite(amax)) return amax;
    s = 0.0;
    for (int64_t c = 0; c < d; c++) {
        double y = x[c] / amax;
        s += y * y;
    }
    return amax * sqrt(s);
}

typedef void (*read_fn)(const as_layer *l, int64_t h, int64_t r0, int64_t cnt, double *out);

static void read_q_rows(const as_layer *l, int64_t h, int64_t r0, int64_t cnt, double *out)
{
    as_tensor_read_f64(l->q, (uint64_t)((h * l->t + r0) * l->d), (uint64_t)(cnt * l->d), out);
}

/* max row norm over heads [h0, h1) x rows of a [heads, rows, d] tensor */
static double max_norm(const as_layer *l, read_fn rd, int64_t h0, int64_t h1, int64_t rows,
                       double *buf)
{
    double mx = 0.0;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t r0 = 0; r0 < rows; r0 += LIM_ROWS) {
            int64_t cnt = rows - r0 < LIM_ROWS ? rows - r0 : LIM_ROWS;
            rd(l, h, r0, cnt, buf);
            for (int64_t i = 0; i < cnt; i++) mx = fmax(mx, row_norm(buf + i * l->d, l->d));
        }
    return mx;
}

as_status as_layer_limits_get(const as_layer *l, as_layer_limits *out, char *err)
{
    memset(out, 0, sizeof *out);
    out->layer = l->index;
    out->scores_ok = out->q_ok = out->k_ok = out->v_ok = 1;
    if (l->d <= 0) return AS_OK;
    double *buf = malloc((size_t)LIM_ROWS * (size_t)l->d * sizeof *buf);
    if (!buf) return as_err_set(err, AS_ERR_NOMEM, "value limits: out of memory");
    out->q_max = max_norm(l, read_q_rows, 0, l->hq, l->t, buf);
    out->k_max = max_norm(l, as_layer_read_k, 0, l->hkv, l->n, buf);
    out->v_max = max_norm(l, as_layer_read_v, 0, l->hkv, l->n, buf);
    free(buf);
    as_layer_limits_eval(l, out);
    return AS_OK;
}

as_status as_layer_limits_get_kv(const as_layer *l, int64_t kvh, as_layer_limits *out, char *err)
{
    memset(out, 0, sizeof *out);
    out->layer = l->index;
    out->scores_ok = out->q_ok = out->k_ok = out->v_ok = 1;
    if (l->d <= 0 || l->hkv <= 0) return AS_OK;
    double *buf = malloc((size_t)LIM_ROWS * (size_t)l->d * sizeof *buf);
    if (!buf) return as_err_set(err, AS_ERR_NOMEM, "value limits: out of memory");
    const int64_t group = l->hq / l->hkv;
    out->q_max = max_norm(l, read_q_rows, kvh * group, (kvh + 1) * group, l->t, buf);
    out->k_max = max_norm(l, as_layer_read_k, kvh, kvh + 1, l->n, buf);
    out->v_max = max_norm(l, as_layer_read_v, kvh, kvh + 1, l->n, buf);
    free(buf);
    as_layer_limits_eval(l, out);
    return AS_OK;
}

void as_layer_limits_eval(const as_layer *l, as_layer_limits *out)
{
    out->layer = l->index;
    /* products in logarithms: the bound itself may exceed DBL_MAX */
    double sc = l->scale > 1.0 ? l->scale : 1.0, dd = sqrt((double)l->d);
    const double lmax = log2(AS_LIMIT_MAX);
    if (out->q_max == 0.0 || out->k_max == 0.0) {
        out->score_bound = 0.0;
        out->scores_ok = 1;
    } else {
        double lb = log2(sc) + log2(dd) + log2(out->q_max) + log2(out->k_max);
        out->score_bound = lb < 1023.0 ? exp2(lb) : INFINITY;
        out->scores_ok = lb <= lmax;
    }
    /* (rows + d) x^2 <= 2^1000 */
    double rq = (double)(l->t + l->d), rk = (double)(l->n + l->d);
    out->q_ok = out->q_max == 0.0 || log2(rq) + 2.0 * log2(out->q_max) <= lmax;
    out->k_ok = out->k_max == 0.0 || log2(rk) + 2.0 * log2(out->k_max) <= lmax;
    out->v_ok = out->v_max == 0.0 || log2(rk) + 2.0 * log2(out->v_max) <= lmax;
}

int as_layer_limits_ok(const as_layer *l, const as_layer_limits *lim, char *why, size_t len)
{
    char tmp[2];
    if (!why) why = tmp, len = sizeof tmp;
    if (!lim->scores_ok)
        snprintf(why, len,
                 "layer %d: scores may overflow float64 (max(1, scale) sqrt(d) max|q| max|k| = "
                 "%.3g, above 2^1000; max|q| = %.3g, max|k| = %.3g)",
                 l->index, lim->score_bound, lim->q_max, lim->k_max);
    else if (!lim->q_ok)
        snprintf(why, len, "layer %d: query norms overflow float64 sums (max|q| = %.3g, above "
                           "2^500 / sqrt(T + d))", l->index, lim->q_max);
    else if (!lim->k_ok)
        snprintf(why, len, "layer %d: key norms overflow float64 sums (max|k| = %.3g, above "
                           "2^500 / sqrt(N + d))", l->index, lim->k_max);
    else if (!lim->v_ok)
        snprintf(why, len, "layer %d: value norms overflow float64 sums (max|v| = %.3g, above "
                           "2^500 / sqrt(N + d))", l->index, lim->v_max);
    else
        return 1;
    return 0;
}

as_status as_layer_check_limits(const as_trace *tr, const as_layer *l, char *err)
{
    as_layer_limits lim;
    as_status st = as_layer_limits_get(l, &lim, err);
    if (st != AS_OK) return st;
    char why[256];
    if (!as_layer_limits_ok(l, &lim, why, sizeof why))
        return as_err_set(err, AS_ERR_VALUE, "%s: %s", as_trace_path(tr), why);
    return AS_OK;
}

as_status as_trace_check_limits(const as_trace *tr, char *err)
{
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        as_status st = as_layer_check_limits(tr, as_trace_layer(tr, i), err);
        if (st != AS_OK) return st;
    }
    return AS_OK;
}
