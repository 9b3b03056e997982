#include "as_spectrum.h"

#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"

void as_spectrum_opts_init(as_spectrum_opts *o)
{
    memset(o, 0, sizeof *o);
    o->hann = 1;
    o->min_period = 2.0;
    o->n_peaks = 5;
    o->pairs = AS_ROPE_HALF;
}

void as_spectrum_clear(as_spectrum *s)
{
    free(s->profile);
    free(s->count);
    free(s->power);
    free(s->amp);
    free(s->peaks);
    free(s->pair_amp);
    memset(s, 0, sizeof *s);
}

double as_rope_period(double base, int64_t d, int i)
{
    return 2.0 * M_PI * pow(base, 2.0 * (double)i / (double)d);
}

static int cmp_peak(const void *a, const void *b)
{
    double pa = ((const as_spectrum_peak *)a)->power, pb = ((const as_spectrum_peak *)b)->power;
    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

/* Power spectrum and peaks of s->profile[0..len). */
static as_status analyse(as_spectrum *s, const as_spectrum_opts *o, char *err)
{
    const int64_t L = s->len;
    s->n_bins = L / 2 + 1;
    s->power = calloc((size_t)s->n_bins, sizeof *s->power);
    s->amp = calloc((size_t)s->n_bins, sizeof *s->amp);
    double *in = fftw_malloc((size_t)L * sizeof *in);
    fftw_complex *X = fftw_malloc((size_t)s->n_bins * sizeof *X);
    if (!s->power || !s->amp || !in || !X) {
        fftw_free(in);
        fftw_free(X);
        return as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
    }
    fftw_plan plan = fftw_plan_dft_r2c_1d((int)L, in, X, FFTW_ESTIMATE);
    double mean = 0.0, wsum = 0.0;
    for (int64_t r = 0; r < L; r++) mean += s->profile[r];
    mean /= (double)L;
    for (int64_t r = 0; r < L; r++) {
        double w = (o->hann && L > 1) ? 0.5 - 0.5 * cos(2.0 * M_PI * (double)r / (double)L) : 1.0;
        in[r] = w * (s->profile[r] - mean);
        wsum += w;
    }
    fftw_execute(plan);
    fftw_destroy_plan(plan);
    double total = 0.0;
    for (int64_t k = 0; k < s->n_bins; k++) {
        double re = X[k][0], im = X[k][1];
        s->power[k] = re * re + im * im;
        s->amp[k] = 2.0 * sqrt(s->power[k]) / (wsum > 0 ? wsum : 1.0);
        if (k > 0) total += s->power[k];
    }
    fftw_free(in);
    fftw_free(X);
    /* peaks: local maxima within the period range */
    double maxp = o->max_period > 0 ? o->max_period : (double)L / 2.0;
    double minp = o->min_period > 0 ? o->min_period : 2.0;
    int cap = o->n_peaks > 0 ? o->n_peaks : 5, np = 0, alloc = 16;
    as_spectrum_peak *pk = malloc((size_t)alloc * sizeof *pk);
    if (!pk) return as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
    for (int64_t k = 1; k < s->n_bins; k++) {
        double per = (double)L / (double)k;
        if (per > maxp || per < minp) continue;
        double p = s->power[k], pl = s->power[k - 1], pr = k + 1 < s->n_bins ? s->power[k + 1] : -1;
        if (!(p > 0) || p < pl || p <= pr) continue;
        double delta = 0.0;
        if (k + 1 < s->n_bins && pl > 0 && pr > 0) {
            double a = log(pl), b = log(p), c = log(pr), den = a - 2 * b + c;
            if (den < 0) delta = 0.5 * (a - c) / den;
            if (delta > 0.5) delta = 0.5;
            if (delta < -0.5) delta = -0.5;
        }
        if (np == alloc) {
            as_spectrum_peak *t = realloc(pk, (size_t)(alloc *= 2) * sizeof *pk);
            if (!t) {
                free(pk);
                return as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
            }
            pk = t;
        }
        as_spectrum_peak *q = &pk[np++];
        q->bin = k;
        q->freq = ((double)k + delta) / (double)L;
        q->period = 1.0 / q->freq;
        q->power = p;
        q->power_frac = total > 0 ? p / total : 0.0;
        q->amplitude = s->amp[k];
        q->rope_i = -1;
        q->rope_period = NAN;
    }
    qsort(pk, (size_t)np, sizeof *pk, cmp_peak);
    s->n_peaks = np < cap ? np : cap;
    s->peaks = pk;
    return AS_OK;
}

as_status as_spectrum_profile(const double *A, int64_t len, const as_spectrum_opts *o,
                              as_spectrum *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (len < 4) return as_err_set(err, AS_ERR_USAGE, "spectrum: need at least 4 positions");
    out->len = len;
    out->profile = malloc((size_t)len * sizeof *out->profile);
    if (!out->profile) return as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
    memcpy(out->profile, A, (size_t)len * sizeof *A);
    out->rope_dom_i = -1;
    out->rope_dom_period = NAN;
    as_status st = analyse(out, o, err);
    if (st != AS_OK) as_spectrum_clear(out);
    return st;
}

/* Mean norm of each RoPE pair over rows X (cnt x d), added into acc[0..d/2). */
static void pair_norms(const double *X, int64_t cnt, int64_t d, as_rope_pairs pairs, double *acc)
{
    int64_t half = d / 2;
    for (int64_t r = 0; r < cnt; r++) {
        const double *x = X + r * d;
        for (int64_t i = 0; i < half; i++) {
            double a = pairs == AS_ROPE_HALF ? x[i] : x[2 * i];
            double b = pairs == AS_ROPE_HALF ? x[i + half] : x[2 * i + 1];
            acc[i] += sqrt(a * a + b * b);
        }
    }
}

as_status as_spectrum_head(const as_layer *l, int64_t h, const as_spectrum_opts *o,
                           as_spectrum *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (h < 0 || h >= l->hq)
        return as_err_set(err, AS_ERR_USAGE, "spectrum: head %lld out of range", (long long)h);
    int64_t L = 0;
    for (int64_t t = 0; t < l->t; t++)
        if (as_layer_visible(l, t) > L) L = as_layer_visible(l, t);
    if (o->max_lag > 0 && L > o->max_lag) L = o->max_lag;
    if (L < 4)
        return as_err_set(err, AS_ERR_USAGE, "spectrum: layer %d sees fewer than 4 keys", l->index);
    out->len = L;
    out->profile = calloc((size_t)L, sizeof *out->profile);
    out->count = calloc((size_t)L, sizeof *out->count);
    double *p = malloc((size_t)l->n * sizeof *p), *o_vec = malloc((size_t)l->d * sizeof *o_vec);
    double *q = malloc((size_t)l->d * sizeof *q);
    as_status st = AS_OK;
    if (!out->profile || !out->count || !p || !o_vec || !q)
        st = as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
    const int64_t kvh = as_layer_kv_head(l, h), d = l->d, half = d / 2;
    const int rope = o->rope_base > 0 && d >= 2;
    double *qn = rope ? calloc((size_t)half, sizeof *qn) : NULL;
    if (rope && !qn && st == AS_OK) st = as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
    for (int64_t t = 0; t < l->t && st == AS_OK; t++) {
        int64_t n;
        double lse;
        st = as_attn_dense(l, h, t, p, o_vec, &n, &lse, err);
        if (st != AS_OK) break;
        int64_t pos = n - 1; /* query sees keys 0..pos */
        int64_t m = n < L ? n : L;
        for (int64_t r = 0; r < m; r++) {
            out->profile[r] += p[pos - r];
            out->count[r]++;
        }
        out->n_queries++;
        if (rope) {
            as_layer_read_q(l, h, t, q);
            pair_norms(q, 1, d, o->pairs, qn);
        }
    }
    free(p);
    free(o_vec);
    free(q);
    for (int64_t r = 0; r < L && st == AS_OK; r++)
        if (out->count[r]) out->profile[r] /= (double)out->count[r];
    out->rope_dom_i = -1;
    out->rope_dom_period = NAN;
    if (rope && st == AS_OK) {
        /* mean pair norms of the keys, tiled */
        double *kn = calloc((size_t)half, sizeof *kn);
        int64_t tile = l->n < AS_ATTN_TILE ? l->n : AS_ATTN_TILE;
        double *kt = malloc((size_t)(tile * d) * sizeof *kt);
        out->pair_amp = calloc((size_t)half, sizeof *out->pair_amp);
        if (!kn || !kt || !out->pair_amp) {
            st = as_err_set(err, AS_ERR_NOMEM, "spectrum: out of memory");
        } else {
            for (int64_t j0 = 0; j0 < l->n; j0 += tile) {
                int64_t cnt = l->n - j0 < tile ? l->n - j0 : tile;
                as_layer_read_k(l, kvh, j0, cnt, kt);
                pair_norms(kt, cnt, d, o->pairs, kn);
            }
            double sum = 0.0, best = -1.0;
            out->n_pairs = (int)half;
            for (int64_t i = 0; i < half; i++) {
                out->pair_amp[i] = l->scale * (qn[i] / (double)out->n_queries) * (kn[i] / (double)l->n);
                sum += out->pair_amp[i];
                if (out->pair_amp[i] > best) {
                    best = out->pair_amp[i];
                    out->rope_dom_i = (int)i;
                }
            }
            out->rope_dom_period = as_rope_period(o->rope_base, d, out->rope_dom_i);
            out->rope_dom_share = sum > 0 ? best / sum : 0.0;
        }
        free(kn);
        free(kt);
    }
    free(qn);
    if (st == AS_OK) st = analyse(out, o, err);
    if (st == AS_OK && rope) {
        for (int k = 0; k < out->n_peaks; k++) {
            as_spectrum_peak *pk = &out->peaks[k];
            double best = INFINITY;
            for (int64_t i = 0; i < half; i++) {
                double dist = fabs(log(pk->period / as_rope_period(o->rope_base, d, (int)i)));
                if (dist < best) {
                    best = dist;
                    pk->rope_i = (int)i;
                }
            }
            pk->rope_period = as_rope_period(o->rope_base, d, pk->rope_i);
        }
    }
    if (st != AS_OK) as_spectrum_clear(out);
    return st;
}
