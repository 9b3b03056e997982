#include "as_sp_agg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_sp_sampling.h"

const double as_sp_thresholds[AS_SP_N_THRESH] = {0.01, 0.05, 0.10};

typedef struct {
    int layer;
    int64_t head;
    int method;
    int sampling;
    size_t bi;
    double budget, kept, rel_error, mass, rel_bound, slack;
    int violated, identity_fail;
    int draws, exceed;
} agg_rec;

struct as_sp_agg {
    agg_rec *r;
    size_t n, cap;
    double delta;
    as_sp_head_budget *hb;
    size_t n_hb;
    as_sp_head_sweep *hs;
    size_t n_hs;
    as_sp_summary *sum;
    size_t n_sum;
    int failed_alloc;
};

as_sp_agg *as_sp_agg_new(const as_sp_config *cfg)
{
    as_sp_agg *a = calloc(1, sizeof *a);
    if (a) a->delta = cfg ? cfg->params.delta : 0.05;
    return a;
}

void as_sp_agg_free(as_sp_agg *a)
{
    if (!a) return;
    free(a->r), free(a->hb), free(a->hs), free(a->sum);
    free(a);
}

int as_sp_agg_add(void *agg, const as_sp_record *rec)
{
    as_sp_agg *a = agg;
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 1024;
        agg_rec *t = realloc(a->r, nc * sizeof *t);
        if (!t) {
            a->failed_alloc = 1;
            return 1;
        }
        a->r = t;
        a->cap = nc;
    }
    const as_sp_eval *ev = &rec->ev;
    agg_rec *x = &a->r[a->n++];
    x->layer = rec->layer;
    x->head = rec->head;
    x->method = rec->method;
    x->sampling = as_sp_method_is_sampling(rec->method);
    x->bi = rec->budget_index;
    x->budget = rec->budget;
    x->kept = ev->n > 0 ? (double)ev->k / (double)ev->n : 0;
    x->rel_error = ev->rel_error;
    x->mass = ev->captured_mass;
    x->rel_bound = ev->rel_bound;
    x->slack = ev->abs_error > 0 ? ev->bound / ev->abs_error : NAN;
    x->identity_fail = !ev->identity_ok;
    x->violated = x->sampling ? ev->subset_violated : ev->violated;
    x->draws = x->sampling ? rec->trials : 0;
    x->exceed = x->sampling ? rec->exceed : 0;
    return 0;
}

static int cmp_agg(const void *pa, const void *pb)
{
    const agg_rec *a = pa, *b = pb;
    if (a->method != b->method) return a->method - b->method;
    if (a->layer != b->layer) return a->layer - b->layer;
    if (a->head != b->head) return (a->head > b->head) - (a->head < b->head);
    return (a->bi > b->bi) - (a->bi < b->bi);
}

static int cmp_dbl(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* median of the non-NaN values of x[0..n) (sorted in place after compaction); NaN if none */
static double median(double *x, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) x[m++] = x[i];
    if (m == 0) return NAN;
    qsort(x, m, sizeof *x, cmp_dbl);
    return m % 2 ? x[m / 2] : 0.5 * (x[m / 2 - 1] + x[m / 2]);
}

static int cmp_hb_budget_desc(const void *pa, const void *pb)
{
    const as_sp_head_budget *a = pa, *b = pb;
    return (a->budget < b->budget) - (a->budget > b->budget);
}

as_status as_sp_agg_finish(as_sp_agg *a, char *err)
{
    if (a->failed_alloc) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    qsort(a->r, a->n, sizeof *a->r, cmp_agg);
    double *tmp = malloc((a->n + 1) * sizeof *tmp), *tmp2 = malloc((a->n + 1) * sizeof *tmp2);
    a->hb = calloc(a->n + 1, sizeof *a->hb);
    a->hs = calloc(a->n + 1, sizeof *a->hs);
    if (!tmp || !tmp2 || !a->hb || !a->hs) {
        free(tmp), free(tmp2);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    /* head x budget groups */
    for (size_t i = 0; i < a->n;) {
        size_t j = i;
        while (j < a->n && a->r[j].method == a->r[i].method && a->r[j].layer == a->r[i].layer &&
               a->r[j].head == a->r[i].head && a->r[j].bi == a->r[i].bi)
            j++;
        as_sp_head_budget *hb = &a->hb[a->n_hb++];
        hb->layer = a->r[i].layer;
        hb->head = a->r[i].head;
        hb->method = (as_sp_method)a->r[i].method;
        hb->budget_index = a->r[i].bi;
        hb->n_queries = (int64_t)(j - i);
        double sb = 0, sk = 0, se = 0, sm = 0, srb = 0, mx = 0;
        size_t nrb = 0, nse = 0;
        for (size_t t = i; t < j; t++) {
            const agg_rec *x = &a->r[t];
            sb += x->budget;
            sk += x->kept;
            if (!isnan(x->rel_error)) {
                se += x->rel_error;
                nse++;
                if (x->rel_error > mx) mx = x->rel_error;
            }
            sm += x->mass;
            if (!isnan(x->rel_bound)) {
                srb += x->rel_bound;
                nrb++;
            }
            hb->violations += x->violated || x->identity_fail;
            hb->draws += x->draws;
            hb->exceed += x->exceed;
            tmp[t - i] = x->rel_error;
            tmp2[t - i] = x->slack;
        }
        double q = (double)(j - i);
        hb->budget = sb / q;
        hb->mean_kept = sk / q;
        hb->mean_rel_error = nse ? se / (double)nse : NAN;
        hb->max_rel_error = nse ? mx : NAN;
        hb->median_rel_error = median(tmp, j - i);
        hb->mean_captured_mass = sm / q;
        hb->mean_rel_bound = nrb ? srb / (double)nrb : NAN;
        hb->median_slack = median(tmp2, j - i);
        i = j;
    }
    /* sweeps per (method, layer, head) */
    for (size_t i = 0; i < a->n_hb;) {
        size_t j = i;
        while (j < a->n_hb && a->hb[j].method == a->hb[i].method &&
               a->hb[j].layer == a->hb[i].layer && a->hb[j].head == a->hb[i].head)
            j++;
        as_sp_head_budget *sorted = malloc((j - i) * sizeof *sorted);
        if (!sorted) {
            free(tmp), free(tmp2);
            return as_err_set(err, AS_ERR_NOMEM, "out of memory");
        }
        memcpy(sorted, a->hb + i, (j - i) * sizeof *sorted);
        qsort(sorted, j - i, sizeof *sorted, cmp_hb_budget_desc);
        as_sp_head_sweep *hs = &a->hs[a->n_hs++];
        hs->layer = a->hb[i].layer;
        hs->head = a->hb[i].head;
        hs->method = a->hb[i].method;
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            double best = NAN;
            size_t u = 0;
            for (; u < j - i; u++) {
                if (!(sorted[u].mean_rel_error <= as_sp_thresholds[t])) break;
                best = sorted[u].budget;
            }
            hs->budget_at[t] = best;
            hs->sparsity_at[t] = isnan(best) ? 1.0 : 1.0 / best;
            hs->censored[t] = u == j - i;
        }
        free(sorted);
        i = j;
    }
    /* summaries: per (method, layer) and per method (layer = -1) */
    size_t cap = a->n_hs + 64;
    a->sum = calloc(cap, sizeof *a->sum);
    if (!a->sum) {
        free(tmp), free(tmp2);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < a->n_hs;) {
            size_t j = i;
            while (j < a->n_hs && a->hs[j].method == a->hs[i].method &&
                   (pass == 1 || a->hs[j].layer == a->hs[i].layer))
                j++;
            if (a->n_sum >= cap) break;
            as_sp_summary *s = &a->sum[a->n_sum++];
            s->layer = pass == 0 ? a->hs[i].layer : -1;
            s->method = a->hs[i].method;
            s->n_heads = (int64_t)(j - i);
            for (int t = 0; t < AS_SP_N_THRESH; t++) {
                double mn = INFINITY;
                for (size_t u = i; u < j; u++) {
                    tmp[u - i] = a->hs[u].sparsity_at[t];
                    if (tmp[u - i] < mn) mn = tmp[u - i];
                    s->dense_heads[t] += a->hs[u].sparsity_at[t] <= 1.0;
                }
                s->median_sparsity[t] = median(tmp, j - i);
                s->min_sparsity[t] = mn;
            }
            /* record-level statistics */
            size_t c = 0;
            for (size_t u = 0; u < a->n; u++) {
                const agg_rec *x = &a->r[u];
                if (x->method != (int)s->method || (pass == 0 && x->layer != s->layer)) continue;
                tmp[c] = x->slack;
                tmp2[c] = x->rel_error;
                c++;
                s->records++;
                s->violations += x->violated;
                s->identity_failures += x->identity_fail;
                s->draws += x->draws;
                s->exceed += x->exceed;
            }
            s->median_slack = median(tmp, c);
            s->median_rel_error = median(tmp2, c);
            s->coverage_p = as_sp_method_is_sampling(s->method)
                                ? as_binom_tail(s->draws, s->exceed, a->delta)
                                : NAN;
            i = j;
        }
    }
    free(tmp), free(tmp2);
    return AS_OK;
}

size_t as_sp_agg_head_budgets(const as_sp_agg *a, const as_sp_head_budget **out)
{
    *out = a->hb;
    return a->n_hb;
}

size_t as_sp_agg_head_sweeps(const as_sp_agg *a, const as_sp_head_sweep **out)
{
    *out = a->hs;
    return a->n_hs;
}

size_t as_sp_agg_summaries(const as_sp_agg *a, const as_sp_summary **out)
{
    *out = a->sum;
    return a->n_sum;
}
