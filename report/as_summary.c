/* as_summary: gather the report's numbers from the analysis modules. */
#include "as_summary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"

void as_summary_opts_init(as_summary_opts *o)
{
    memset(o, 0, sizeof *o);
    o->layer = -1;
}

static double *nan_array(size_t n)
{
    double *x = malloc((n ? n : 1) * sizeof *x);
    if (x)
        for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double as_sum_mean(const double *x, int64_t n)
{
    double s = 0;
    int64_t m = 0;
    for (int64_t i = 0; x && i < n; i++)
        if (isfinite(x[i])) s += x[i], m++;
    return m ? s / (double)m : NAN;
}

double as_sum_quantile(const double *x, int64_t n, double q)
{
    if (!x || n <= 0) return NAN;
    double *y = malloc((size_t)n * sizeof *y);
    if (!y) return NAN;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) y[m++] = x[i];
    double r = NAN;
    if (m > 0) {
        qsort(y, (size_t)m, sizeof *y, cmp_d);
        double h = (double)(m - 1) * q;
        int64_t i = (int64_t)floor(h);
        r = i >= m - 1 ? y[m - 1] : y[i] + (h - (double)i) * (y[i + 1] - y[i]);
    }
    free(y);
    return r;
}

static void free_layer(as_sum_layer *L)
{
    free(L->profile);
    free(L->sink_mass);
    free(L->entropy_norm);
    free(L->entropy_bits);
    free(L->k90_frac);
    free(L->k99_frac);
    free(L->erank_k);
    free(L->collision_dim);
    free(L->tv_witness);
    free(L->rel_err);
    free(L->rel_bound);
    free(L->tol_1);
    free(L->tol_5);
    free(L->spec_period);
    free(L->spec_power);
    free(L->periodicity);
    free(L->dominant_period);
}

void as_summary_free(as_summary *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_layers; i++) free_layer(&s->layers[i]);
    free(s->layers);
    free(s);
}

/* Dense attention of every query: the position profile and the sink mass. */
static as_status attention_profile(const as_layer *l, as_sum_layer *L, double *p, char *err)
{
    int64_t nb = l->n < AS_SUM_PROFILE_BINS ? l->n : AS_SUM_PROFILE_BINS;
    L->nbins = (int)nb;
    L->bin_width = (double)l->n / (double)nb;
    L->profile = calloc((size_t)nb, sizeof *L->profile);
    L->sink_mass = nan_array((size_t)l->hq);
    double *o = malloc((size_t)l->d * sizeof *o);
    if (!L->profile || !L->sink_mass || !o) {
        free(o);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    int64_t count = 0;
    for (int64_t h = 0; h < l->hq; h++) {
        double sink = 0;
        for (int64_t qi = 0; qi < l->t; qi++) {
            int64_t n;
            double lse;
            as_status st = as_attn_dense(l, h, qi, p, o, &n, &lse, err);
            if (st != AS_OK) {
                free(o);
                return st;
            }
            for (int64_t j = 0; j < n; j++) {
                int64_t b = (int64_t)((double)j / L->bin_width);
                if (b >= nb) b = nb - 1;
                L->profile[b] += p[j];
            }
            sink += p[0];
            count++;
        }
        L->sink_mass[h] = l->t > 0 ? sink / (double)l->t : NAN;
    }
    for (int64_t b = 0; b < nb; b++)
        L->profile[b] = count ? L->profile[b] / (double)count / L->bin_width : NAN;
    free(o);
    return AS_OK;
}

as_summary *as_summary_compute(const as_trace *tr, const as_summary_opts *o, char *err)
{
    as_summary_opts def;
    if (!o) {
        as_summary_opts_init(&def);
        o = &def;
    }
    as_summary *s = calloc(1, sizeof *s);
    if (!s) {
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    size_t nl = as_trace_n_layers(tr);
    s->layers = calloc(nl ? nl : 1, sizeof *s->layers);
    if (!s->layers) {
        free(s);
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(s->missing[0], sizeof s->missing[0],
             "entropy and top-k mass need the analysis core (issue 4: analysis/as_entropy.h), "
             "not in this build yet");
    snprintf(s->missing[1], sizeof s->missing[1],
             "effective rank needs analysis/as_rank.h (issue 4), not in this build yet");
    snprintf(s->missing[2], sizeof s->missing[2],
             "the bottleneck needs analysis/as_bottleneck.h (issue 4), not in this build yet");
    snprintf(s->missing[3], sizeof s->missing[3],
             "error-versus-sparsity needs analysis/as_sparsity.h (issue 5), not in this build "
             "yet");
    snprintf(s->missing[4], sizeof s->missing[4],
             "the positional spectrum needs analysis/as_spectrum.h (issue 6), not in this "
             "build yet");

    /* work units: one per layer x query head (dense pass) */
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < nl; i++) {
        const as_layer *l = as_trace_layer(tr, i);
        if (o->layer >= 0 && l->index != o->layer) continue;
        total += (uint64_t)l->hq;
    }
    for (size_t i = 0; i < nl; i++) {
        const as_layer *l = as_trace_layer(tr, i);
        if (o->layer >= 0 && l->index != o->layer) continue;
        as_sum_layer *L = &s->layers[s->n_layers++];
        L->layer = l->index;
        L->hq = l->hq, L->hkv = l->hkv, L->t = l->t, L->n = l->n, L->d = l->d;
        L->scale = l->scale;
        size_t hqt = (size_t)(l->hq * l->t);
        L->entropy_norm = nan_array(hqt);
        L->entropy_bits = nan_array(hqt);
        L->k90_frac = nan_array(hqt);
        L->k99_frac = nan_array(hqt);
        L->erank_k = nan_array((size_t)l->hkv);
        L->collision_dim = nan_array((size_t)l->hq);
        L->tv_witness = nan_array((size_t)l->hq);
        L->periodicity = nan_array((size_t)l->hq);
        L->dominant_period = nan_array((size_t)l->hq);
        double *p = malloc((size_t)(l->n ? l->n : 1) * sizeof *p);
        if (!L->entropy_norm || !L->entropy_bits || !L->k90_frac || !L->k99_frac ||
            !L->erank_k || !L->collision_dim || !L->tv_witness || !L->periodicity ||
            !L->dominant_period || !p) {
            free(p);
            as_summary_free(s);
            as_err_set(err, AS_ERR_NOMEM, "out of memory");
            return NULL;
        }
        as_status st = attention_profile(l, L, p, err);
        free(p);
        if (st != AS_OK) {
            as_summary_free(s);
            return NULL;
        }
        done += (uint64_t)l->hq;
        if (o->progress) o->progress(o->ctx, done, total);
    }
    return s;
}
