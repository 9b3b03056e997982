#include "cli_par.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "as_limits.h"

as_par_unit *as_par_layer_units(as_trace *const *tr, size_t ntr, int layer,
                                double (*cost)(const as_layer *l, void *cctx), void *cctx,
                                size_t *n)
{
    size_t cap = 0;
    for (size_t t = 0; t < ntr; t++) cap += as_trace_n_layers(tr[t]);
    as_par_unit *u = malloc((cap ? cap : 1) * sizeof *u);
    *n = 0;
    if (!u) return NULL;
    for (size_t t = 0; t < ntr; t++)
        for (size_t li = 0; li < as_trace_n_layers(tr[t]); li++) {
            const as_layer *l = as_trace_layer(tr[t], li);
            if (layer >= 0 && l->index != layer) continue;
            double c = cost ? cost(l, cctx) : (double)l->hq * (double)l->t * (double)l->n;
            u[(*n)++] = (as_par_unit){t, li, c > 0 ? c : 1};
        }
    return u;
}

as_trace *as_par_open_trace(const char *cmd, const char *path, int *code)
{
    return as_cli_open_trace(cmd, path, as_mpi_size() == 1, code);
}

as_status as_par_check_layer(const as_trace *tr, const as_layer *l, char *err)
{
    if (as_mpi_size() == 1) return AS_OK;
    as_status st = as_layer_check_finite(tr, l, err);
    return st == AS_OK ? as_layer_check_limits(tr, l, err) : st;
}

void as_par_prog_start(as_par_prog *p, const char *label, int quiet)
{
    p->bar = as_progress_new(label, 1000, quiet || as_mpi_rank() != 0);
    p->base = p->span = 0;
    p->total = 1;
}

void as_par_prog_unit(as_par_prog *p, double cost) { p->span = cost; }

static void draw(as_par_prog *p, double at)
{
    if (p->total > 0) as_progress_update(p->bar, (uint64_t)(1000.0 * at / p->total));
}

void as_par_prog_engine(void *ctx, double done, double total)
{
    as_par_prog *p = ctx;
    p->base = done;
    p->total = total;
    draw(p, done);
}

void as_par_prog_inner(void *ctx, uint64_t done, uint64_t total)
{
    as_par_prog *p = ctx;
    double f = total ? (double)done / (double)total : 1.0;
    draw(p, p->base + (f > 1 ? 1 : f) * p->span);
}

void as_par_prog_end(as_par_prog *p)
{
    as_progress_free(p->bar);
    p->bar = NULL;
}

int as_par_fail(const char *cmd, as_status st, const char *err)
{
    if (as_mpi_rank() != 0) return as_status_exit_code(st);
    return as_cli_fail(cmd, st, err);
}

/* ---------------------------------------------------------------- summaries */
#include <math.h>
#include <string.h>

#include "as_sparsity.h"
#include "as_sweep.h"

static void put_arr(as_mpi_buf *b, const double *x, int64_t n)
{
    as_mpi_put_i64(b, x ? n : -1);
    if (x && n > 0) as_mpi_put(b, x, (size_t)n * sizeof *x);
}

/* An array written by put_arr, of the length the reader expects (-1: absent, NULL). */
static double *get_arr(as_mpi_rd *r, int64_t want, int *bad)
{
    int64_t n = as_mpi_get_i64(r);
    if (r->bad || n < -1 || (n >= 0 && n != want) ||
        (n > 0 && (uint64_t)n > (r->len - r->pos) / sizeof(double))) {
        *bad = 1;
        return NULL;
    }
    if (n < 0) return NULL;
    double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (!x) {
        *bad = 1;
        return NULL;
    }
    x[0] = NAN;
    if (n > 0) as_mpi_get(r, x, (size_t)n * sizeof *x);
    return x;
}

typedef struct {
    as_mpi_buf recs;
    int64_t n;
} sp_collect_t;

static int sp_collect(void *ctx, const void *rec)
{
    sp_collect_t *c = ctx;
    as_mpi_put(&c->recs, rec, sizeof(as_sp_record));
    c->n++;
    return c->recs.failed;
}

static void put_summary(as_mpi_buf *b, const as_summary *s)
{
    const int NM = s->n_methods, NB = s->n_levels;
    as_mpi_put_i64(b, (int64_t)s->n_layers);
    const int flags[5] = {s->have_entropy, s->have_rank, s->have_bottleneck, s->have_sparsity,
                          s->have_spectrum};
    for (int i = 0; i < 5; i++) as_mpi_put_i64(b, flags[i]);
    as_mpi_put_i64(b, NM);
    as_mpi_put_i64(b, NB);
    for (int m = 0; m < NM; m++) as_mpi_put_str(b, s->method_names[m]);
    as_mpi_put(b, s->levels, sizeof s->levels);
    for (int i = 0; i < 5; i++) as_mpi_put_str(b, s->missing[i]);
    as_mpi_put_i64(b, s->n_spec_skipped);
    for (int i = 0; i < 8; i++) as_mpi_put_i64(b, s->spec_skipped[i]);
    for (size_t li = 0; li < s->n_layers; li++) {
        const as_sum_layer *L = &s->layers[li];
        const int64_t hq = L->hq, t = L->t;
        as_mpi_put_i64(b, L->layer);
        as_mpi_put_i64(b, L->hq), as_mpi_put_i64(b, L->hkv), as_mpi_put_i64(b, L->t);
        as_mpi_put_i64(b, L->n), as_mpi_put_i64(b, L->d);
        as_mpi_put_f64(b, L->scale);
        as_mpi_put_i64(b, L->nbins);
        as_mpi_put_f64(b, L->bin_width);
        put_arr(b, L->profile, L->nbins);
        put_arr(b, L->sink_mass, hq);
        put_arr(b, L->entropy_norm, hq * t);
        put_arr(b, L->entropy_bits, hq * t);
        put_arr(b, L->k90_frac, hq * t);
        put_arr(b, L->k99_frac, hq * t);
        put_arr(b, L->erank_k, L->hkv);
        put_arr(b, L->collision_dim, hq);
        put_arr(b, L->collision_frac, hq);
        put_arr(b, L->value_rank, hq);
        put_arr(b, L->tv_witness, hq);
        as_mpi_put_i64(b, L->n_absorb);
        as_mpi_put(b, L->absorb_budget, sizeof L->absorb_budget);
        put_arr(b, L->absorption, hq * (L->n_absorb ? L->n_absorb : 1));
        put_arr(b, L->rel_err, (int64_t)NM * NB * hq);
        put_arr(b, L->rel_bound, (int64_t)NM * NB * hq);
        put_arr(b, L->tol_1, (int64_t)NM * hq);
        put_arr(b, L->tol_5, (int64_t)NM * hq);
        as_mpi_put_i64(b, L->nfreq);
        put_arr(b, L->spec_period, L->nfreq);
        put_arr(b, L->spec_power, (int64_t)L->nfreq * hq);
        put_arr(b, L->periodicity, hq);
        put_arr(b, L->dominant_period, hq);
    }
}

static as_summary *get_summary(as_mpi_rd *r)
{
    as_summary *s = as_summary_empty();
    int bad = s == NULL;
    int64_t nl = as_mpi_get_i64(r);
    if (bad || r->bad || nl < 0 || (uint64_t)nl > r->len) {
        free(s);
        return NULL;
    }
    s->layers = calloc((size_t)(nl ? nl : 1), sizeof *s->layers);
    bad = !s->layers;
    int *flags[5] = {&s->have_entropy, &s->have_rank, &s->have_bottleneck, &s->have_sparsity,
                     &s->have_spectrum};
    for (int i = 0; i < 5; i++) *flags[i] = (int)as_mpi_get_i64(r);
    int64_t NM = as_mpi_get_i64(r), NB = as_mpi_get_i64(r);
    if (NM < 0 || NM > AS_SUM_MAX_METHODS || NB < 0 || NB > AS_SUM_MAX_LEVELS) bad = 1;
    s->n_methods = bad ? 0 : (int)NM;
    s->n_levels = bad ? 0 : (int)NB;
    for (int m = 0; m < s->n_methods; m++) {
        const char *name = as_mpi_get_str(r);
        as_sp_method sm;
        if (!name || as_sp_method_parse(name, &sm) != 0) bad = 1;
        else s->method_names[m] = as_sp_method_name(sm); /* static storage */
    }
    as_mpi_get(r, s->levels, sizeof s->levels);
    for (int i = 0; i < 5; i++) {
        const char *m = as_mpi_get_str(r);
        snprintf(s->missing[i], sizeof s->missing[i], "%s", m ? m : "");
    }
    s->n_spec_skipped = (int)as_mpi_get_i64(r);
    for (int i = 0; i < 8; i++) s->spec_skipped[i] = (int)as_mpi_get_i64(r);
    for (int64_t li = 0; li < nl && !bad && !r->bad; li++) {
        as_sum_layer *L = &s->layers[s->n_layers++];
        L->layer = (int)as_mpi_get_i64(r);
        L->hq = as_mpi_get_i64(r), L->hkv = as_mpi_get_i64(r), L->t = as_mpi_get_i64(r);
        L->n = as_mpi_get_i64(r), L->d = as_mpi_get_i64(r);
        L->scale = as_mpi_get_f64(r);
        L->nbins = (int)as_mpi_get_i64(r);
        L->bin_width = as_mpi_get_f64(r);
        const int64_t hq = L->hq, t = L->t;
        if (r->bad || hq < 0 || t < 0 || L->hkv < 0 || L->nbins < 0 || hq > (1 << 24) ||
            t > (1 << 30)) {
            bad = 1;
            break;
        }
        L->profile = get_arr(r, L->nbins, &bad);
        L->sink_mass = get_arr(r, hq, &bad);
        L->entropy_norm = get_arr(r, hq * t, &bad);
        L->entropy_bits = get_arr(r, hq * t, &bad);
        L->k90_frac = get_arr(r, hq * t, &bad);
        L->k99_frac = get_arr(r, hq * t, &bad);
        L->erank_k = get_arr(r, L->hkv, &bad);
        L->collision_dim = get_arr(r, hq, &bad);
        L->collision_frac = get_arr(r, hq, &bad);
        L->value_rank = get_arr(r, hq, &bad);
        L->tv_witness = get_arr(r, hq, &bad);
        L->n_absorb = (int)as_mpi_get_i64(r);
        as_mpi_get(r, L->absorb_budget, sizeof L->absorb_budget);
        if (L->n_absorb < 0 || L->n_absorb > 16) {
            bad = 1;
            break;
        }
        L->absorption = get_arr(r, hq * (L->n_absorb ? L->n_absorb : 1), &bad);
        L->rel_err = get_arr(r, NM * NB * hq, &bad);
        L->rel_bound = get_arr(r, NM * NB * hq, &bad);
        L->tol_1 = get_arr(r, NM * hq, &bad);
        L->tol_5 = get_arr(r, NM * hq, &bad);
        L->nfreq = (int)as_mpi_get_i64(r);
        if (L->nfreq < 0) {
            bad = 1;
            break;
        }
        L->spec_period = get_arr(r, L->nfreq, &bad);
        L->spec_power = get_arr(r, (int64_t)L->nfreq * hq, &bad);
        L->periodicity = get_arr(r, hq, &bad);
        L->dominant_period = get_arr(r, hq, &bad);
    }
    if (bad || r->bad) {
        as_summary_free(s);
        return NULL;
    }
    return s;
}

as_status as_par_summary_work(const as_trace *tr, const as_layer *l, const as_summary_opts *o,
                              as_mpi_buf *out, char *err)
{
    char e[AS_ERR_LEN];
    as_status st = as_par_check_layer(tr, l, err);
    if (st != AS_OK) return st;
    as_summary_opts so = *o;
    sp_collect_t col;
    as_mpi_buf_init(&col.recs);
    col.n = 0;
    so.layer = l->index;
    so.sp_record = sp_collect;
    so.sp_ctx = &col;
    as_summary *s = as_summary_compute_st(tr, &so, &st, e);
    if (!s) {
        as_mpi_buf_free(&col.recs);
        return as_err_set(err, st, "%s: %s", as_trace_path(tr), e);
    }
    put_summary(out, s);
    as_summary_free(s);
    as_mpi_put_i64(out, col.n);
    as_mpi_put(out, col.recs.p, col.recs.len);
    st = col.recs.failed ? as_err_set(err, AS_ERR_NOMEM, "out of memory") : AS_OK;
    as_mpi_buf_free(&col.recs);
    return st;
}

as_status as_par_summary_add(as_par_summary *ps, as_mpi_rd *in, char *err)
{
    if (!ps->sum) ps->sum = as_summary_empty();
    if (!ps->agg) ps->agg = as_sp_agg_new(NULL);
    if (!ps->sum || !ps->agg) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_summary *part = get_summary(in);
    if (!part) return as_err_set(err, AS_ERR_IO, "a layer's summary was damaged in transit");
    as_summary_join(ps->sum, part);
    int64_t n = as_mpi_get_i64(in);
    if (in->bad || n < 0 || (uint64_t)n > (in->len - in->pos) / sizeof(as_sp_record))
        return as_err_set(err, AS_ERR_IO, "a layer's records were damaged in transit");
    for (int64_t i = 0; i < n; i++) {
        as_sp_record rec;
        as_mpi_get(in, &rec, sizeof rec);
        if (as_sp_agg_add(ps->agg, &rec) != 0) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    return AS_OK;
}

as_summary *as_par_summary_finish(as_par_summary *ps, char *err)
{
    if (!ps->sum) ps->sum = as_summary_empty();
    if (!ps->sum) {
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (ps->sum->have_sparsity && ps->agg) {
        as_status st = as_sp_agg_finish(ps->agg, err);
        if (st != AS_OK) return NULL;
        as_summary_model_sparsity(ps->sum, ps->agg);
    }
    as_summary *s = ps->sum;
    ps->sum = NULL;
    return s;
}

void as_par_summary_free(as_par_summary *ps)
{
    as_summary_free(ps->sum);
    as_sp_agg_free(ps->agg);
    ps->sum = NULL;
    ps->agg = NULL;
}

/* ---------------------------------------------------------------- sparsity */
typedef struct {
    as_trace *const *tr;
    const as_sp_config *cfg;
    as_par_unit *units;
    size_t n_units;
    double *records; /* per unit: the records it makes */
    double total;    /* records of all units */
    double base;     /* records done before rank 0's current unit */
    as_par_sp_fn fn;
    void *ctx;
    int stopped;
    int threads;     /* the shared sweep's workers (as_sweep_run) */
    size_t trace;    /* one rank: the trace running */
    /* (layer, kv head) units (kvh NULL: layer units): kvh[u] the unit's kv head, slot[u] its
     * layer among the units' layers (trace, li); on rank 0 per slot: its units (nkv), those
     * consumed (seen) and the largest q, k, v row norms of their parts (vmax, 3 a slot) */
    int64_t *kvh;
    size_t *slot;
    size_t *nkv, *seen;
    double *vmax;
} sp_job;

static void sp_inner(void *vctx, uint64_t done, uint64_t total)
{
    sp_job *j = vctx;
    (void)total;
    if (j->cfg->progress)
        j->cfg->progress(j->cfg->progress_ctx, (uint64_t)(j->base + (double)done),
                         (uint64_t)j->total);
}

static void sp_engine(void *vctx, double done, double total)
{
    sp_job *j = vctx;
    /* the engine counts cost; the bar counts records: the same fraction */
    j->base = total > 0 ? j->total * done / total : 0;
    if (j->cfg->progress)
        j->cfg->progress(j->cfg->progress_ctx, (uint64_t)j->base, (uint64_t)j->total);
}

static int sp_put(void *vctx, const as_sp_record *r)
{
    as_mpi_buf *b = vctx;
    as_mpi_put(b, r, sizeof *r);
    return b->failed;
}

/* A (layer, kv head) unit reads only its part of the layer (its group's q, its k and v), and
 * checks only that before reading it: NaN/Inf (the message names the element in the whole
 * tensor, as the whole-file check does), then the value limits with the part's largest row
 * norms (*lim). A part can only fail where its layer fails (the layer's norms are the largest
 * of its parts'); the layer's own check then gives the message of the one-process run.
 * What a part cannot see, the score bound of one part's q with another's k, rank 0 checks
 * when it has every part's norms (sp_consume). */
static as_status sp_check_kv(const as_trace *tr, const as_layer *l, int64_t kvh,
                             as_layer_limits *lim, char *err)
{
    as_status st = as_layer_check_finite_kv(tr, l, kvh, err);
    if (st == AS_OK) st = as_layer_limits_get_kv(l, kvh, lim, err);
    if (st != AS_OK) return st;
    char why[256];
    if (as_layer_limits_ok(l, lim, why, sizeof why)) return AS_OK;
    st = as_layer_check_finite(tr, l, err);
    if (st == AS_OK) st = as_layer_check_limits(tr, l, err);
    return st != AS_OK ? st : as_err_set(err, AS_ERR_VALUE, "%s: %s", as_trace_path(tr), why);
}

static as_status sp_work(void *vctx, size_t u, as_mpi_buf *out, char *err)
{
    sp_job *j = vctx;
    const as_par_unit *pu = &j->units[u];
    const as_trace *tr = j->tr[pu->trace];
    const as_layer *l = as_trace_layer(tr, pu->li);
    as_layer_limits lim;
    as_status st = j->kvh ? sp_check_kv(tr, l, j->kvh[u], &lim, err)
                          : as_par_check_layer(tr, l, err);
    if (st != AS_OK) { /* the caller names the trace, as for as_sp_run's messages */
        size_t k = strlen(as_trace_path(tr));
        if (strncmp(err, as_trace_path(tr), k) == 0 && strncmp(err + k, ": ", 2) == 0)
            memmove(err, err + k + 2, strlen(err + k + 2) + 1);
        return st;
    }
    as_sp_config c = *j->cfg;
    c.layer = l->index;
    c.progress = sp_inner;
    c.progress_ctx = j;
    if (j->kvh) { /* one kv head of the layer: as_sweep_run's unit, its records in its order */
        if ((st = as_sweep_check(&c, NULL, err)) != AS_OK ||
            (st = as_sweep_check(&c, l, err)) != AS_OK)
            return st;
        const double mx[3] = {lim.q_max, lim.k_max, lim.v_max};
        as_mpi_put(out, mx, sizeof mx); /* for rank 0's check of the whole layer */
        int stop = 0;
        st = as_sweep_unit(l, j->kvh[u], &c, as_sweep_worker_mem(&c, 1), sp_put, out, &stop,
                           err);
        if (st == AS_OK && stop) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return st;
    }
    return as_sweep_supports(&c) ? as_sweep_run(tr, &c, j->threads, sp_put, out, err)
                                 : as_sp_run(tr, &c, sp_put, out, err);
}

/* The (layer, kv head) units of the layer units j->units[0..nl): each layer's kv heads that
 * hold a selected query head, in as_sweep_run's order; replaces j->units. */
static as_status sp_kv_units(sp_job *j, size_t nl, size_t *nu, char *err)
{
    size_t cap = 0;
    for (size_t u = 0; u < nl; u++)
        cap += (size_t)as_trace_layer(j->tr[j->units[u].trace], j->units[u].li)->hkv;
    as_par_unit *units = malloc((cap ? cap : 1) * sizeof *units);
    j->kvh = malloc((cap ? cap : 1) * sizeof *j->kvh);
    j->slot = malloc((cap ? cap : 1) * sizeof *j->slot);
    j->nkv = calloc(nl ? nl : 1, sizeof *j->nkv);
    j->seen = calloc(nl ? nl : 1, sizeof *j->seen);
    j->vmax = calloc(3 * (nl ? nl : 1), sizeof *j->vmax);
    if (!units || !j->kvh || !j->slot || !j->nkv || !j->seen || !j->vmax) {
        free(units);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t u = 0; u < nl; u++) {
        const as_layer *l = as_trace_layer(j->tr[j->units[u].trace], j->units[u].li);
        const int64_t group = l->hkv > 0 ? l->hq / l->hkv : 0;
        for (int64_t g = 0; g < l->hkv; g++) {
            if (j->cfg->head >= 0 && (j->cfg->head < g * group || j->cfg->head >= (g + 1) * group))
                continue;
            units[n] = j->units[u];
            j->kvh[n] = g;
            j->slot[n] = u;
            j->nkv[u]++;
            n++;
        }
    }
    free(j->units);
    j->units = units;
    *nu = n;
    return AS_OK;
}

/* One rank: each trace's records straight to fn, the sweep's threads over all its (layer, kv
 * head) units at once (a layer as a unit would leave threads idle at its end). */
static int sp_direct(void *vctx, const as_sp_record *r)
{
    sp_job *j = vctx;
    return j->fn(j->ctx, j->trace, r);
}

static as_status sp_one_rank(sp_job *j, size_t ntr, char *err)
{
    for (size_t t = 0; t < ntr; t++) {
        as_sp_config c = *j->cfg;
        c.progress = sp_inner;
        c.progress_ctx = j;
        j->trace = t;
        as_status st = as_sweep_run(j->tr[t], &c, j->threads, sp_direct, j, err);
        if (st != AS_OK) return st;
        for (size_t u = 0; u < j->n_units; u++)
            if (j->units[u].trace == t) j->base += j->records[u];
    }
    return AS_OK;
}

static as_status sp_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    sp_job *j = vctx;
    if (j->kvh) { /* the part's row norms: the layer's check once all its parts are in */
        double mx[3];
        if (as_mpi_get(in, mx, sizeof mx) != 0)
            return as_err_set(err, AS_ERR_IO, "a unit's records were damaged in transit");
        const size_t sl = j->slot[u];
        for (int i = 0; i < 3; i++) j->vmax[3 * sl + i] = fmax(j->vmax[3 * sl + i], mx[i]);
        if (++j->seen[sl] == j->nkv[sl]) {
            const as_layer *l = as_trace_layer(j->tr[j->units[u].trace], j->units[u].li);
            as_layer_limits lim;
            memset(&lim, 0, sizeof lim);
            lim.q_max = j->vmax[3 * sl], lim.k_max = j->vmax[3 * sl + 1];
            lim.v_max = j->vmax[3 * sl + 2];
            as_layer_limits_eval(l, &lim);
            char why[256];
            if (l->d > 0 && !as_layer_limits_ok(l, &lim, why, sizeof why))
                return as_err_set(err, AS_ERR_VALUE, "%s", why);
        }
    }
    if ((in->len - in->pos) % sizeof(as_sp_record) != 0)
        return as_err_set(err, AS_ERR_IO, "a unit's records were damaged in transit");
    while (!as_mpi_rd_end(in) && !j->stopped) {
        as_sp_record r;
        as_mpi_get(in, &r, sizeof r);
        if (j->fn(j->ctx, j->units[u].trace, &r) != 0) j->stopped = 1;
    }
    return AS_OK;
}

as_status as_par_sp_run(as_trace *const *tr, size_t ntr, const as_sp_config *cfg, int threads,
                        as_par_sp_fn fn, void *ctx, as_mpi_stats *stats, char *err)
{
    size_t combos = 0;
    for (size_t i = 0; i < cfg->n_methods; i++)
        combos += cfg->methods[i] == AS_SP_INDEX ? 1 : cfg->n_budgets;
    sp_job j;
    memset(&j, 0, sizeof j);
    j.tr = tr;
    j.cfg = cfg;
    j.fn = fn;
    j.ctx = ctx;
    /* several ranks, --threads not given: the node's cores shared by its ranks */
    if (threads < 1 && as_mpi_size() > 1) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        int local = as_mpi_local_size();
        threads = nc > local ? (int)(nc / local) : 1;
    }
    j.threads = threads;
    size_t nu = 0;
    j.units = as_par_layer_units(tr, ntr, cfg->layer, NULL, NULL, &nu);
    as_status st = AS_OK;
    /* one worker per rank: (layer, kv head) units, as as_sweep_run's; more: a layer per unit
     * and its kv heads over the rank's threads */
    if (j.units && as_mpi_size() > 1 && threads == 1 && as_sweep_supports(cfg))
        st = sp_kv_units(&j, nu, &nu, err);
    j.records = malloc((nu ? nu : 1) * sizeof *j.records);
    double *cost = malloc((nu ? nu : 1) * sizeof *cost);
    if (st == AS_OK && (!j.units || !j.records || !cost))
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    if (st == AS_OK) {
        for (size_t u = 0; u < nu; u++) {
            const as_layer *l = as_trace_layer(tr[j.units[u].trace], j.units[u].li);
            double heads = cfg->head >= 0 ? 1 : j.kvh ? (double)(l->hq / l->hkv) : (double)l->hq;
            double rows = heads * (double)(cfg->query >= 0 ? 1 : l->t);
            j.records[u] = rows * (double)combos;
            j.total += j.records[u];
            cost[u] = j.records[u] * (double)l->n + 1; /* a record reads the query's keys */
        }
        j.n_units = nu;
        if (as_mpi_size() == 1 && as_sweep_supports(cfg) && !stats) {
            st = sp_one_rank(&j, ntr, err);
        } else {
            as_mpi_job job = {nu, cost, sp_work, sp_consume, &j, sp_engine, &j};
            st = as_mpi_run(&job, stats, err);
        }
    }
    free(cost);
    free(j.records);
    free(j.units);
    free(j.kvh);
    free(j.slot);
    free(j.nkv);
    free(j.seen);
    free(j.vmax);
    return st;
}
