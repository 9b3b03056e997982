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

/* Fill the head-budget row hb from its records x[0..q) (one method, layer, head, budget). */
static void head_budget(const agg_rec *x, size_t q, as_sp_head_budget *hb, double *tmp, double *tmp2)
{
    hb->layer = x[0].layer;
    hb->head = x[0].head;
    hb->method = (as_sp_method)x[0].method;
    hb->budget_index = x[0].bi;
    hb->n_queries = (int64_t)q;
    double sb = 0, sk = 0, se = 0, sm = 0, srb = 0, mx = 0;
    size_t nrb = 0, nse = 0;
    for (size_t t = 0; t < q; t++) {
        sb += x[t].budget;
        sk += x[t].kept;
        if (!isnan(x[t].rel_error)) {
            se += x[t].rel_error;
            nse++;
            if (x[t].rel_error > mx) mx = x[t].rel_error;
        }
        sm += x[t].mass;
        if (!isnan(x[t].rel_bound)) {
            srb += x[t].rel_bound;
            nrb++;
        }
        hb->violations += x[t].violated || x[t].identity_fail;
        hb->draws += x[t].draws;
        hb->exceed += x[t].exceed;
        tmp[t] = x[t].rel_error;
        tmp2[t] = x[t].slack;
    }
    double nq = (double)q;
    hb->budget = sb / nq;
    hb->mean_kept = sk / nq;
    hb->mean_rel_error = nse ? se / (double)nse : NAN;
    hb->max_rel_error = nse ? mx : NAN;
    hb->median_rel_error = median(tmp, q);
    hb->mean_captured_mass = sm / nq;
    hb->mean_rel_bound = nrb ? srb / (double)nrb : NAN;
    hb->median_slack = median(tmp2, q);
}

/* Fill the sweep hs of one (method, layer, head) from its head-budget rows sorted by budget,
 * largest first: per threshold, the smallest budget with it and every larger one at or below
 * the threshold. */
static void head_sweep(const as_sp_head_budget *sorted, size_t nb, as_sp_head_sweep *hs)
{
    hs->layer = sorted[0].layer;
    hs->head = sorted[0].head;
    hs->method = sorted[0].method;
    for (int t = 0; t < AS_SP_N_THRESH; t++) {
        double best = NAN;
        size_t u = 0;
        for (; u < nb; u++) {
            if (!(sorted[u].mean_rel_error <= as_sp_thresholds[t])) break;
            best = sorted[u].budget;
        }
        hs->budget_at[t] = best;
        hs->sparsity_at[t] = isnan(best) ? 1.0 : 1.0 / best;
        hs->censored[t] = u == nb;
    }
}

/* The head-level part of a summary from the sweeps hs[0..nh) of its heads. */
static void summary_heads(const as_sp_head_sweep *hs, size_t nh, as_sp_summary *s, double *tmp)
{
    s->n_heads = (int64_t)nh;
    for (int t = 0; t < AS_SP_N_THRESH; t++) {
        double mn = INFINITY;
        for (size_t u = 0; u < nh; u++) {
            tmp[u] = hs[u].sparsity_at[t];
            if (tmp[u] < mn) mn = tmp[u];
            s->dense_heads[t] += hs[u].sparsity_at[t] <= 1.0;
        }
        s->median_sparsity[t] = median(tmp, nh);
        s->min_sparsity[t] = mn;
    }
}

/* The record-level part of a summary from its records x[0..nr) (contiguous in the sorted
 * records) and the coverage of a sampling method's draws. */
static void summary_records(const agg_rec *x, size_t nr, double delta, as_sp_summary *s,
                            double *tmp, double *tmp2)
{
    for (size_t u = 0; u < nr; u++) {
        tmp[u] = x[u].slack;
        tmp2[u] = x[u].rel_error;
        s->violations += x[u].violated;
        s->identity_failures += x[u].identity_fail;
        s->draws += x[u].draws;
        s->exceed += x[u].exceed;
    }
    s->records = (int64_t)nr;
    s->median_slack = median(tmp, nr);
    s->median_rel_error = median(tmp2, nr);
    s->coverage_p = as_sp_method_is_sampling(s->method) ? as_binom_tail(s->draws, s->exceed, delta)
                                                        : NAN;
}

/* Layer summaries (per method and layer), then model summaries (per method, layer -1). Records,
 * head-budget rows and sweeps are all sorted by (method, layer, head[, budget]), so a summary's
 * heads and records are contiguous runs: one pass over the sweeps and the records per level. */
static as_status summaries(as_sp_agg *a, double *tmp, double *tmp2, char *err)
{
    a->sum = calloc(a->n_hs + AS_SP_N_METHODS + 1, sizeof *a->sum);
    if (!a->sum) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int model = 0; model < 2; model++) {
        size_t u = 0; /* the first record of the group */
        for (size_t i = 0; i < a->n_hs;) {
            const as_sp_head_sweep *h0 = &a->hs[i];
            size_t j = i, v = u;
            while (j < a->n_hs && a->hs[j].method == h0->method &&
                   (model || a->hs[j].layer == h0->layer))
                j++;
            while (v < a->n && a->r[v].method == (int)h0->method &&
                   (model || a->r[v].layer == h0->layer))
                v++;
            as_sp_summary *s = &a->sum[a->n_sum++];
            s->layer = model ? -1 : h0->layer;
            s->method = h0->method;
            summary_heads(h0, j - i, s, tmp);
            summary_records(a->r + u, v - u, a->delta, s, tmp, tmp2);
            i = j;
            u = v;
        }
    }
    return AS_OK;
}

as_status as_sp_agg_finish(as_sp_agg *a, char *err)
{
    if (a->failed_alloc) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    qsort(a->r, a->n, sizeof *a->r, cmp_agg);
    double *tmp = malloc((a->n + 1) * sizeof *tmp), *tmp2 = malloc((a->n + 1) * sizeof *tmp2);
    as_sp_head_budget *sorted = malloc((a->n + 1) * sizeof *sorted);
    a->hb = calloc(a->n + 1, sizeof *a->hb);
    a->hs = calloc(a->n + 1, sizeof *a->hs);
    as_status st = AS_OK;
    if (!tmp || !tmp2 || !sorted || !a->hb || !a->hs) {
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* head x budget rows: runs of records with the same (method, layer, head, budget) */
    for (size_t i = 0, j; i < a->n; i = j) {
        for (j = i + 1; j < a->n && cmp_agg(&a->r[j], &a->r[i]) == 0;) j++;
        head_budget(a->r + i, j - i, &a->hb[a->n_hb++], tmp, tmp2);
    }
    /* sweeps: runs of rows with the same (method, layer, head), by budget largest first */
    for (size_t i = 0, j; i < a->n_hb; i = j) {
        for (j = i + 1; j < a->n_hb && a->hb[j].method == a->hb[i].method &&
                        a->hb[j].layer == a->hb[i].layer && a->hb[j].head == a->hb[i].head;)
            j++;
        memcpy(sorted, a->hb + i, (j - i) * sizeof *sorted);
        qsort(sorted, j - i, sizeof *sorted, cmp_hb_budget_desc);
        head_sweep(sorted, j - i, &a->hs[a->n_hs++]);
    }
    st = summaries(a, tmp, tmp2, err);
out:
    free(tmp), free(tmp2), free(sorted);
    return st;
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
