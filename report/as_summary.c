/* as_summary: gather the report's numbers from the analysis modules. */
#include "as_summary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_stats.h"
/* The analysis modules the report shows: each family is compiled in when its module is part
 * of the library (report/CMakeLists.txt defines AS_SUM_<MODULE> when analysis/as_<module>.c
 * exists). */
#ifdef AS_SUM_SPARSITY
#include "as_sparsity.h"
#include "as_sweep.h"
#endif
#ifdef AS_SUM_SPECTRUM
#include "as_spectrum.h"
#endif
#ifdef AS_SUM_ENTROPY
#include "as_entropy.h"
#endif
#ifdef AS_SUM_RANK
#include "as_rank.h"
#endif
#ifdef AS_SUM_BOTTLENECK
#include "as_bottleneck.h"
#endif

void as_summary_opts_init(as_summary_opts *o)
{
    memset(o, 0, sizeof *o);
    o->layer = -1;
    o->witness = 1;
}

/* An analysis family is in the summary: its flag set, its "missing" note cleared. */
static void present(int *have, char *missing)
{
    *have = 1;
    missing[0] = '\0';
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
        r = as_quantile_sorted(y, m, q); /* the library's (NumPy's default) definition */
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
    free(L->collision_frac);
    free(L->value_rank);
    free(L->absorption);
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

/* Progress in work units: per layer, each family costs about hq units (the dense pass,
 * entropy, the bottleneck, the spectrum and ranks together), the sparsity sweep 4 hq. */
typedef struct {
    const as_summary_opts *o;
    uint64_t done, total, span; /* span: units of the family in progress */
} prog_t;

static void prog_inner(void *ctx, uint64_t d, uint64_t t)
{
    prog_t *p = ctx;
    if (p->o->progress && t) p->o->progress(p->o->ctx, p->done + p->span * (d > t ? t : d) / t, p->total);
}

static void prog_step(prog_t *p, uint64_t units)
{
    p->done += units;
    if (p->o->progress) p->o->progress(p->o->ctx, p->done, p->total);
}

/* Dense attention of every query: the position profile and the sink mass. */
static as_status attention_profile(const as_layer *l, as_sum_layer *L, double *p, prog_t *pg,
                                   char *err)
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
            prog_inner(pg, (uint64_t)count, (uint64_t)(l->hq * l->t)); /* one query: long at large N */
        }
        L->sink_mass[h] = l->t > 0 ? sink / (double)l->t : NAN;
    }
    for (int64_t b = 0; b < nb; b++)
        L->profile[b] = count ? L->profile[b] / (double)count / L->bin_width : NAN;
    free(o);
    return AS_OK;
}

#ifdef AS_SUM_SPARSITY
/* ---- issue 5: every selection method over the default sweep (2x .. 100x) ---------------- */
typedef struct {
    as_summary *s;
    const as_summary_opts *o;
    uint64_t base, span, total;
} sp_prog_ctx;

static void sp_progress(void *ctx, uint64_t done, uint64_t total)
{
    sp_prog_ctx *c = ctx;
    if (c->o->progress && total)
        c->o->progress(c->o->ctx, c->base + c->span * done / total, c->total);
}

static as_sum_layer *find_layer(as_summary *s, int layer)
{
    for (size_t i = 0; i < s->n_layers; i++)
        if (s->layers[i].layer == layer) return &s->layers[i];
    return NULL;
}

static const as_sp_method sum_methods[] = {AS_SP_TOPK, AS_SP_SINK_WINDOW, AS_SP_PAGE,
                                           AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE};
enum { SUM_NM = sizeof sum_methods / sizeof sum_methods[0] };

int as_summary_sp_sweep(int *methods, void *budgets, size_t *n_budgets)
{
    as_budget b[AS_SUM_MAX_LEVELS];
    *n_budgets = as_budget_default_sweep(budgets ? (as_budget *)budgets : b, AS_SUM_MAX_LEVELS);
    for (int m = 0; methods && m < SUM_NM; m++) methods[m] = (int)sum_methods[m];
    return SUM_NM;
}

void as_summary_model_sparsity(as_summary *s, const void *vagg)
{
    const as_sp_agg *agg = vagg;
    int slot[AS_SP_N_METHODS];
    for (int m = 0; m < AS_SP_N_METHODS; m++) slot[m] = -1;
    for (int m = 0; m < SUM_NM; m++) slot[sum_methods[m]] = m;
    const as_sp_summary *sm;
    size_t nsm = as_sp_agg_summaries(agg, &sm);
    for (int m = 0; m < SUM_NM; m++) {
        s->m_sparsity_1[m] = s->m_sparsity_5[m] = s->m_slack[m] = NAN;
        s->m_sampling[m] = as_sp_method_is_sampling(sum_methods[m]);
        s->m_records[m] = s->m_violations[m] = s->m_dense_heads[m] = 0;
        s->m_draws[m] = s->m_exceed[m] = 0;
    }
    for (size_t i = 0; i < nsm; i++) {
        int m = slot[sm[i].method];
        if (sm[i].layer != -1 || m < 0) continue;
        s->m_sparsity_1[m] = sm[i].median_sparsity[0];
        s->m_sparsity_5[m] = sm[i].median_sparsity[1];
        s->m_slack[m] = sm[i].median_slack;
        s->m_records[m] = sm[i].records;
        s->m_violations[m] = sm[i].violations + sm[i].identity_failures;
        s->m_dense_heads[m] = sm[i].dense_heads[1];
        s->m_draws[m] = sm[i].draws;
        s->m_exceed[m] = sm[i].exceed;
    }
}

/* as_sp_run's records: into the aggregator, and to the caller's hook */
typedef struct {
    as_sp_agg *agg;
    const as_summary_opts *o;
} sp_tee_t;

static int sp_tee(void *ctx, const as_sp_record *r)
{
    sp_tee_t *t = ctx;
    if (as_sp_agg_add(t->agg, r) != 0) return 1;
    return t->o->sp_record ? t->o->sp_record(t->o->sp_ctx, r) : 0;
}

static as_status sparsity_family(const as_trace *tr, as_summary *s, const as_summary_opts *o,
                                 uint64_t base, uint64_t span, uint64_t total, char *err)
{
    const as_sp_method *methods = sum_methods;
    enum { NM = SUM_NM };
    as_budget budgets[AS_SUM_MAX_LEVELS];
    size_t nb = as_budget_default_sweep(budgets, AS_SUM_MAX_LEVELS);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.layer = o->layer;
    cfg.methods = methods;
    cfg.n_methods = NM;
    cfg.budgets = budgets;
    cfg.n_budgets = nb;
    cfg.trials = 1;
    sp_prog_ctx pc = {s, o, base, span, total};
    cfg.progress = sp_progress;
    cfg.progress_ctx = &pc;
    s->n_methods = NM;
    s->n_levels = (int)nb;
    for (int m = 0; m < NM; m++) s->method_names[m] = as_sp_method_name(methods[m]);
    for (size_t b = 0; b < nb; b++) s->levels[b] = 1.0 / budgets[b].frac;
    for (size_t i = 0; i < s->n_layers; i++) {
        as_sum_layer *L = &s->layers[i];
        size_t hq = (size_t)L->hq;
        L->rel_err = nan_array(NM * nb * hq);
        L->rel_bound = nan_array(NM * nb * hq);
        L->tol_1 = nan_array(NM * hq);
        L->tol_5 = nan_array(NM * hq);
        if (!L->rel_err || !L->rel_bound || !L->tol_1 || !L->tol_5)
            return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    as_sp_agg *agg = as_sp_agg_new(&cfg);
    if (!agg) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    sp_tee_t tee = {agg, o};
    /* the shared sweep (o->threads workers), as_sp_run's records */
    as_status st = as_sweep_supports(&cfg) ? as_sweep_run(tr, &cfg, o->threads, sp_tee, &tee, err)
                                           : as_sp_run(tr, &cfg, sp_tee, &tee, err);
    if (st == AS_OK) st = as_sp_agg_finish(agg, err);
    if (st != AS_OK) {
        as_sp_agg_free(agg);
        return st;
    }
    int slot[AS_SP_N_METHODS];
    for (int m = 0; m < AS_SP_N_METHODS; m++) slot[m] = -1;
    for (int m = 0; m < NM; m++) slot[methods[m]] = m;
    const as_sp_head_budget *hb;
    size_t nhb = as_sp_agg_head_budgets(agg, &hb);
    for (size_t i = 0; i < nhb; i++) {
        as_sum_layer *L = find_layer(s, hb[i].layer);
        int m = slot[hb[i].method];
        if (!L || m < 0 || hb[i].budget_index >= nb || hb[i].head < 0 || hb[i].head >= L->hq)
            continue;
        size_t k = ((size_t)m * nb + hb[i].budget_index) * (size_t)L->hq + (size_t)hb[i].head;
        L->rel_err[k] = hb[i].median_rel_error;
        L->rel_bound[k] = hb[i].mean_rel_bound;
    }
    const as_sp_head_sweep *hs;
    size_t nhs = as_sp_agg_head_sweeps(agg, &hs);
    for (size_t i = 0; i < nhs; i++) {
        as_sum_layer *L = find_layer(s, hs[i].layer);
        int m = slot[hs[i].method];
        if (!L || m < 0 || hs[i].head < 0 || hs[i].head >= L->hq) continue;
        /* the sparsity each threshold tolerates; 1 (dense) and NaN (none) both mean that
         * no sparsity of the sweep keeps the error under it */
        double t1 = hs[i].sparsity_at[0], t5 = hs[i].sparsity_at[1];
        L->tol_1[(size_t)m * L->hq + hs[i].head] = t1 > 1 ? t1 : NAN;
        L->tol_5[(size_t)m * L->hq + hs[i].head] = t5 > 1 ? t5 : NAN;
    }
    as_summary_model_sparsity(s, agg);
    as_sp_agg_free(agg);
    present(&s->have_sparsity, s->missing[3]);
    return AS_OK;
}
#endif

#ifdef AS_SUM_SPECTRUM
/* ---- issue 6: the positional spectrum of every query head -------------------------------- */
/* as_spectrum_head transforms the attention profile over relative positions 0 .. L-1, L the
 * most keys a query of the layer sees; it needs L >= 4. */
#define AS_SUM_SPECTRUM_MIN_KEYS 4
static int64_t spectrum_len(const as_layer *l)
{
    int64_t lmax = 0;
    for (int64_t qi = 0; qi < l->t; qi++)
        if (as_layer_visible(l, qi) > lmax) lmax = as_layer_visible(l, qi);
    return lmax;
}

/* Layers whose spectrum is left out: the first few listed, then a count. */
typedef struct {
    int first[8];
    int n;
} skipped_t;

static void skipped_note(const skipped_t *k, char *b, size_t cap)
{
    if (k->n == 0) return;
    int len = snprintf(b, cap, "the positional spectrum is left out of layer%s ", k->n > 1 ? "s" : "");
    for (int i = 0; i < k->n && i < 8 && len > 0 && (size_t)len < cap; i++)
        len += snprintf(b + len, cap - (size_t)len, "%s%d", i ? ", " : "", k->first[i]);
    if (k->n > 8 && len > 0 && (size_t)len < cap)
        len += snprintf(b + len, cap - (size_t)len, " and %d more", k->n - 8);
    if (len > 0 && (size_t)len < cap)
        snprintf(b + len, cap - (size_t)len, " (%s queries see fewer than %d keys)",
                 k->n > 1 ? "their" : "its", AS_SUM_SPECTRUM_MIN_KEYS);
}

static as_status spectrum_layer(const as_layer *l, as_sum_layer *L, char *err)
{
    as_spectrum_opts so;
    as_spectrum_opts_init(&so);
    /* periodic = repeating at least 8 times within the visible context: longer periods are
     * the slow recency trend every head has, not periodicity */
    int64_t lmax = spectrum_len(l);
    so.max_period = lmax / 8.0 > so.min_period ? lmax / 8.0 : 0;
    for (int64_t h = 0; h < l->hq; h++) {
        as_spectrum sp;
        memset(&sp, 0, sizeof sp);
        as_status st = as_spectrum_head(l, h, &so, &sp, err);
        if (st != AS_OK) return st;
        int64_t nf = sp.n_bins - 1; /* bins 1 .. L/2: periods L/k */
        if (h == 0) {
            L->nfreq = (int)(nf > 0 ? nf : 0);
            L->spec_period = nan_array((size_t)L->nfreq);
            L->spec_power = nan_array((size_t)L->nfreq * (size_t)l->hq);
            if (!L->spec_period || !L->spec_power) {
                as_spectrum_clear(&sp);
                return as_err_set(err, AS_ERR_NOMEM, "out of memory");
            }
            for (int64_t k = 0; k < L->nfreq; k++)
                L->spec_period[k] = (double)sp.len / (double)(k + 1);
        }
        if (nf == L->nfreq && nf > 0) {
            double tot = 0;
            for (int64_t k = 1; k <= nf; k++) tot += sp.power[k];
            for (int64_t k = 1; k <= nf; k++)
                L->spec_power[h * L->nfreq + k - 1] = tot > 0 ? sp.power[k] / tot : NAN;
        }
        if (sp.n_peaks > 0) {
            L->periodicity[h] = sp.peaks[0].power_frac;
            L->dominant_period[h] = sp.peaks[0].period;
        }
        as_spectrum_clear(&sp);
    }
    return AS_OK;
}
#endif

#ifdef AS_SUM_ENTROPY
/* ---- issue 4: entropy and top-k mass of every query ------------------------------------- */
static as_status entropy_layer(const as_layer *l, as_sum_layer *L, prog_t *pg, char *err)
{
    as_entropy_opts eo;
    as_entropy_opts_init(&eo);
    eo.topk = 1;
    eo.progress = prog_inner;
    eo.ctx = pg;
    pg->span = (uint64_t)l->hq;
    as_entropy_layer_res res;
    memset(&res, 0, sizeof res);
    as_status st = as_entropy_layer(l, &eo, &res, err);
    if (st != AS_OK) return st;
    for (int64_t h = 0; h < l->hq && h < res.hq; h++)
        for (int64_t qi = 0; qi < l->t && qi < res.t; qi++) {
            const as_entropy_q *q = &res.q[h * res.t + qi];
            size_t k = (size_t)(h * l->t + qi);
            if (q->n <= 0) continue;
            L->entropy_norm[k] = q->entropy_norm;
            L->entropy_bits[k] = q->entropy_bits;
            L->k90_frac[k] = q->k90 >= 0 ? q->k90_frac : NAN;
            L->k99_frac[k] = q->k99 >= 0 ? q->k99_frac : NAN;
        }
    as_entropy_layer_res_free(&res);
    return AS_OK;
}
#endif

#ifdef AS_SUM_RANK
/* ---- issue 4: effective rank of each kv head's keys ------------------------------------- */
static as_status rank_layer(const as_layer *l, as_sum_layer *L, char *err)
{
    as_rank_opts ro;
    as_rank_opts_init(&ro);
    ro.mats = 1u << AS_MAT_K;
    as_rank_rec *recs = NULL;
    size_t n = 0;
    as_status st = as_rank_layer(l, &ro, &recs, &n, err);
    if (st != AS_OK) return st;
    for (size_t i = 0; i < n; i++)
        if (recs[i].matrix == AS_MAT_K && recs[i].head >= 0 && recs[i].head < l->hkv)
            L->erank_k[recs[i].head] = recs[i].info.erank;
    as_rank_recs_free(recs, n);
    return AS_OK;
}
#endif

#ifdef AS_SUM_BOTTLENECK
/* ---- issue 4: the bottleneck (collision space, TV witness, absorption) per head ---------- */
static as_status bottleneck_layer(const as_layer *l, as_sum_layer *L, int witness, prog_t *pg,
                                  char *err)
{
    /* collision space and absorption on every query (cheap); the TV witness (a linear
     * program per query) on the last decode query of each head only, unless asked for all */
    as_bn_opts bo;
    as_bn_opts_init(&bo);
    int lp = bo.witness && witness != 0;
    bo.witness = lp && witness == 2;
    bo.progress = prog_inner;
    bo.ctx = pg;
    pg->span = (uint64_t)l->hq / 2;
    as_bn_query *q = NULL, *w = NULL;
    size_t nq = 0, nw = 0;
    as_status st = as_bn_layer(l, &bo, &q, &nq, err);
    if (st != AS_OK) return st;
    if (lp && witness == 1 && l->t > 0) {
        uint64_t done0 = pg->done;
        pg->done += pg->span;
        pg->span = (uint64_t)l->hq - pg->span;
        bo.witness = 1;
        bo.query = l->t - 1;
        st = as_bn_layer(l, &bo, &w, &nw, err);
        pg->done = done0;
        if (st != AS_OK) {
            free(q);
            return st;
        }
        for (size_t i = 0; i < nw; i++)
            if (w[i].head >= 0 && w[i].head < l->hq) L->tv_witness[w[i].head] = w[i].tv_witness;
        free(w);
    }
    int nb = (int)(bo.n_budgets < 16 ? bo.n_budgets : 16);
    L->n_absorb = nb;
    for (int b = 0; b < nb; b++) L->absorb_budget[b] = bo.budgets[b];
    L->absorption = nan_array((size_t)l->hq * (size_t)(nb ? nb : 1));
    double *acc = calloc((size_t)l->hq * (size_t)(5 + nb), sizeof *acc); /* sums, counts */
    if (!L->absorption || !acc) {
        free(q);
        free(acc);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < nq; i++) {
        int64_t h = q[i].head;
        if (h < 0 || h >= l->hq || q[i].n <= 0) continue;
        double *a = acc + (size_t)h * (size_t)(5 + nb);
        a[4 + nb] += (double)q[i].value_rank;
        a[0] += (double)q[i].collision_dim;
        a[1] += (double)q[i].collision_dim / (double)q[i].n;
        a[3] += 1;
        if (witness == 2 && isfinite(q[i].tv_witness)) {
            L->tv_witness[h] = isnan(L->tv_witness[h]) ? q[i].tv_witness
                                                       : L->tv_witness[h] + q[i].tv_witness;
            a[2] += 1;
        }
        for (int b = 0; b < nb && b < (int)q[i].n_budgets; b++)
            if (isfinite(q[i].absorption[b])) {
                double *ab = &L->absorption[(size_t)h * nb + b];
                *ab = isnan(*ab) ? q[i].absorption[b] : *ab + q[i].absorption[b];
                a[4 + b] += 1;
            }
    }
    for (int64_t h = 0; h < l->hq; h++) {
        const double *a = acc + (size_t)h * (size_t)(5 + nb);
        if (a[3] > 0) {
            L->value_rank[h] = a[4 + nb] / a[3];
            L->collision_dim[h] = a[0] / a[3];
            L->collision_frac[h] = a[1] / a[3];
        }
        if (witness == 2 && a[2] > 0) L->tv_witness[h] /= a[2];
        for (int b = 0; b < nb; b++)
            if (a[4 + b] > 0) L->absorption[(size_t)h * nb + b] /= a[4 + b];
    }
    free(acc);
    free(q);
    return AS_OK;
}
#endif

as_summary *as_summary_compute(const as_trace *tr, const as_summary_opts *o, char *err)
{
    as_status st;
    return as_summary_compute_st(tr, o, &st, err);
}

as_summary *as_summary_compute_st(const as_trace *tr, const as_summary_opts *o, as_status *stp,
                                  char *err)
{
    *stp = AS_ERR_NOMEM;
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

    uint64_t heads = 0;
    for (size_t i = 0; i < nl; i++) {
        const as_layer *l = as_trace_layer(tr, i);
        if (o->layer >= 0 && l->index != o->layer) continue;
        heads += (uint64_t)l->hq;
    }
    prog_t pg = {o, 0, heads * 4, 0};
#ifdef AS_SUM_SPARSITY
    pg.total += heads * 4;
#endif
    as_status st = AS_OK;
#ifdef AS_SUM_SPECTRUM
    skipped_t skipped = {{0}, 0};
#endif
    for (size_t i = 0; i < nl && st == AS_OK; i++) {
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
        L->collision_frac = nan_array((size_t)l->hq);
        L->value_rank = nan_array((size_t)l->hq);
        L->tv_witness = nan_array((size_t)l->hq);
        L->periodicity = nan_array((size_t)l->hq);
        L->dominant_period = nan_array((size_t)l->hq);
        double *p = malloc((size_t)(l->n ? l->n : 1) * sizeof *p);
        if (!L->entropy_norm || !L->entropy_bits || !L->k90_frac || !L->k99_frac ||
            !L->erank_k || !L->collision_dim || !L->collision_frac || !L->value_rank || !L->tv_witness || !L->periodicity ||
            !L->dominant_period || !p) {
            free(p);
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            break;
        }
        pg.span = (uint64_t)l->hq;
        st = attention_profile(l, L, p, &pg, err);
        free(p);
        prog_step(&pg, (uint64_t)l->hq);
#ifdef AS_SUM_ENTROPY
        if (st == AS_OK) st = entropy_layer(l, L, &pg, err);
        prog_step(&pg, (uint64_t)l->hq);
#else
        prog_step(&pg, (uint64_t)l->hq);
#endif
#ifdef AS_SUM_RANK
        if (st == AS_OK) st = rank_layer(l, L, err);
#endif
#ifdef AS_SUM_SPECTRUM
        if (st == AS_OK && spectrum_len(l) < AS_SUM_SPECTRUM_MIN_KEYS) {
            if (skipped.n < 8) skipped.first[skipped.n] = l->index; /* spectrum stays NaN */
            skipped.n++;
        } else if (st == AS_OK)
            st = spectrum_layer(l, L, err);
#endif
        prog_step(&pg, (uint64_t)l->hq);
#ifdef AS_SUM_BOTTLENECK
        if (st == AS_OK) st = bottleneck_layer(l, L, o->witness, &pg, err);
#endif
        prog_step(&pg, (uint64_t)l->hq);
    }
#ifdef AS_SUM_SPARSITY
    if (st == AS_OK) st = sparsity_family(tr, s, o, pg.done, heads * 4, pg.total, err);
#endif
    *stp = st;
    if (st != AS_OK) {
        as_summary_free(s);
        return NULL;
    }
#ifdef AS_SUM_ENTROPY
    present(&s->have_entropy, s->missing[0]);
#endif
#ifdef AS_SUM_RANK
    present(&s->have_rank, s->missing[1]);
#endif
#ifdef AS_SUM_BOTTLENECK
    present(&s->have_bottleneck, s->missing[2]);
#endif
#ifdef AS_SUM_SPECTRUM
    present(&s->have_spectrum, s->missing[4]);
    skipped_note(&skipped, s->left_out, sizeof s->left_out);
    s->n_spec_skipped = skipped.n;
    memcpy(s->spec_skipped, skipped.first, sizeof s->spec_skipped);
#endif
    return s;
}

as_summary *as_summary_empty(void) { return calloc(1, sizeof(as_summary)); }

void as_summary_join(as_summary *into, as_summary *part)
{
    if (!part) return;
    if (into->n_layers == 0 && !into->layers) { /* the first part: what it says of the build */
        as_sum_layer *keep = into->layers;
        *into = *part;
        into->layers = keep;
        into->n_layers = 0;
        into->n_spec_skipped = 0;
        into->left_out[0] = '\0';
    }
    as_sum_layer *nl = realloc(into->layers, (into->n_layers + part->n_layers + 1) * sizeof *nl);
    if (nl) {
        into->layers = nl;
        memcpy(nl + into->n_layers, part->layers, part->n_layers * sizeof *nl);
        into->n_layers += part->n_layers;
        part->n_layers = 0;
    }
#ifdef AS_SUM_SPECTRUM
    for (int i = 0; i < part->n_spec_skipped; i++) {
        if (into->n_spec_skipped < 8) into->spec_skipped[into->n_spec_skipped] = part->spec_skipped[i];
        into->n_spec_skipped++;
    }
    skipped_t k = {{0}, into->n_spec_skipped};
    memcpy(k.first, into->spec_skipped, sizeof k.first);
    into->left_out[0] = '\0';
    skipped_note(&k, into->left_out, sizeof into->left_out);
#endif
    as_summary_free(part);
}

/* ---- per-layer aggregates (compare) ---- */
const char *const as_sum_qnames[AS_SUM_NQ] = {"sink_mass",  "entropy_norm",   "k90_frac", "k99_frac",
                                       "erank_k",    "collision_frac", "tv_witness", "tol_1",
                                       "tol_5",      "max_periodicity"};
const char *const as_sum_qtitles[AS_SUM_NQ] = {
    "mean weight on position 0",       "mean H / ln n",
    "median k90 / n",                  "median k99 / n",
    "mean effective rank of K",        "collision-space dim. / n",
    "mean TV witness",                 "sparsity N / k, error < 1%",
    "sparsity N / k, error < 5%",      "largest power share of a peak"};

static double median_tol(const as_sum_layer *L, const double *tol)
{
    if (!tol) return NAN;
    double *v = malloc(sizeof(double) * (size_t)(L->hq ? L->hq : 1));
    if (!v) return NAN;
    for (int64_t h = 0; h < L->hq; h++)
        v[h] = isnan(tol[h]) ? 1 : tol[h]; /* method 0; no sparsity of the sweep: 1 (dense) */
    double m = L->hq > 0 ? as_sum_quantile(v, L->hq, 0.5) : NAN;
    free(v);
    return m;
}

void as_summary_layer_quantities(const as_summary *s, const as_sum_layer *L, double q[AS_SUM_NQ])
{
    int64_t hqt = L->hq * L->t;
    q[0] = as_sum_mean(L->sink_mass, L->hq);
    q[1] = s->have_entropy ? as_sum_mean(L->entropy_norm, hqt) : NAN;
    q[2] = s->have_entropy ? as_sum_quantile(L->k90_frac, hqt, 0.5) : NAN;
    q[3] = s->have_entropy ? as_sum_quantile(L->k99_frac, hqt, 0.5) : NAN;
    q[4] = s->have_rank ? as_sum_mean(L->erank_k, L->hkv) : NAN;
    q[5] = s->have_bottleneck ? as_sum_mean(L->collision_frac, L->hq) : NAN;
    q[6] = s->have_bottleneck ? as_sum_mean(L->tv_witness, L->hq) : NAN;
    q[7] = s->have_sparsity ? median_tol(L, L->tol_1) : NAN;
    q[8] = s->have_sparsity ? median_tol(L, L->tol_5) : NAN;
    q[9] = NAN;
    if (s->have_spectrum && L->periodicity)
        for (int64_t h = 0; h < L->hq; h++)
            if (isfinite(L->periodicity[h]) && !(L->periodicity[h] <= q[9]))
                q[9] = L->periodicity[h];
}
