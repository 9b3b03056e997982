#include "cli_job.h"

#include <stdlib.h>
#include <string.h>

#include "cli_par.h"

int as_cli_parse_opts(const char *cmd, int argc, char **argv, const struct option *opts,
                      const char *shortopts, as_cli_opt_fn fn, void *ctx, as_cli_common *c)
{
    char optstring[64] = ":";
    if (shortopts) snprintf(optstring, sizeof optstring, ":%s", shortopts);
    as_cli_common_init(c);
    optind = 1;
    opterr = 0;
    int opt, r;
    while ((opt = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(c, cmd, opt, optarg)) == 1) continue;
        if (r == 2) return 0; /* --help printed */
        if (r < 0) return 2;
        r = opt == ':' || opt == '?' || !fn ? -1 : fn(ctx, opt, optarg);
        if (r < 0) return as_cli_bad_option(cmd, opt, argv);
        if (r > 0) return r;
    }
    return AS_CLI_GO;
}

int as_cli_parse_trace(const char *cmd, int argc, char **argv, const struct option *opts,
                       const char *shortopts, as_cli_opt_fn fn, void *ctx, as_cli_common *c)
{
    int rc = as_cli_parse_opts(cmd, argc, argv, opts, shortopts, fn, ctx, c);
    if (rc != AS_CLI_GO) return rc;
    if (optind != argc - 1) return as_cli_usage(cmd, "expects exactly one TRACE");
    c->trace = argv[optind];
    return AS_CLI_GO;
}

/* The units of the selected layers (every check already passed). */
static int list_units(as_cli_job *j, as_cli_unit_kind kind)
{
    size_t nl = as_trace_n_layers(j->tr), cap = 0;
    for (size_t li = 0; li < nl; li++) {
        const as_layer *l = as_trace_layer(j->tr, li);
        if (j->c.layer >= 0 && l->index != j->c.layer) continue;
        j->n_layers++;
        cap += kind == AS_CLI_UNITS_HEAD && j->c.head < 0 ? (size_t)l->hq : 1;
    }
    if (kind == AS_CLI_UNITS_NONE) return 0;
    j->units = calloc(cap ? cap : 1, sizeof *j->units);
    if (!j->units) return as_cli_fail(j->cmd, AS_ERR_NOMEM, "out of memory");
    for (size_t li = 0; li < nl; li++) {
        const as_layer *l = as_trace_layer(j->tr, li);
        if (j->c.layer >= 0 && l->index != j->c.layer) continue;
        int64_t h0 = j->c.head, h1 = j->c.head;
        if (kind == AS_CLI_UNITS_HEAD && j->c.head < 0) h0 = 0, h1 = l->hq - 1;
        for (int64_t h = h0; h <= h1; h++)
            j->units[j->n_units++] = (as_cli_unit){li, l, h};
    }
    return 0;
}

int as_cli_job_open(as_cli_job *j, const char *cmd, const as_cli_common *c, int64_t query,
                    as_cli_unit_kind units)
{
    memset(j, 0, sizeof *j);
    j->cmd = cmd;
    j->c = *c;
    int code;
    /* several ranks: no scan of the whole file here (each rank reads only its units' layers) */
    j->check_layers = as_mpi_size() > 1;
    j->tr = as_cli_open_trace(cmd, c->trace, !j->check_layers, &code);
    if (!j->tr) return code;
    code = 0;
    if (c->layer >= 0 && !as_trace_find_layer(j->tr, c->layer))
        code = as_cli_usage(cmd, "%s has no layer %d", c->trace, c->layer);
    for (size_t li = 0; code == 0 && li < as_trace_n_layers(j->tr); li++) {
        const as_layer *l = as_trace_layer(j->tr, li);
        if (c->layer >= 0 && l->index != c->layer) continue;
        if (c->head >= l->hq || query >= l->t)
            code = as_cli_usage(cmd, "layer %d has %lld query heads and %lld queries", l->index,
                                (long long)l->hq, (long long)l->t);
    }
    if (code == 0) code = list_units(j, units);
    if (code != 0) as_cli_job_close(j);
    return code;
}

void as_cli_job_close(as_cli_job *j)
{
    free(j->units);
    as_trace_free(j->tr);
    memset(j, 0, sizeof *j);
}

/* The bar counts thousandths of the whole run. */
enum { BAR_STEPS = 1000 };

void as_cli_job_progress(void *job, uint64_t done, uint64_t total)
{
    as_cli_job *j = job;
    double f = total ? (double)done / (double)total : 1.0;
    as_progress_update(j->bar, (uint64_t)(BAR_STEPS * ((double)j->unit_i + f) /
                                          (double)(j->n_units ? j->n_units : 1)));
}

/* ---- the units on the ranks of the MPI engine ---- */
typedef struct {
    as_cli_job *j;
    as_cli_unit_fn fn;
    void *ctx;
    as_out *o;
    unsigned char *checked; /* [layers] this rank checked the layer's values */
} job_par;

static as_status par_work(void *vctx, size_t u, as_mpi_buf *buf, char *err)
{
    job_par *p = vctx;
    as_cli_job *j = p->j;
    const as_cli_unit *cu = &j->units[u];
    if (j->check_layers && !p->checked[cu->pos]) {
        as_status st = as_par_check_layer(j->tr, cu->layer, err);
        if (st != AS_OK) return st;
        p->checked[cu->pos] = 1;
    }
    j->unit_i = u;
    as_out *uo = as_out_new_unit(j->c.fmt, buf);
    as_cli_fail_capture(1);
    int rc = p->fn(p->ctx, j, cu, uo);
    as_status st = as_cli_fail_captured(rc, err);
    as_out_free(uo);
    as_cli_job_progress(j, 1, 1);
    return st;
}

static as_status par_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    job_par *p = vctx;
    (void)u;
    if (as_out_add_unit(p->o, in) != 0)
        return as_err_set(err, AS_ERR_IO, "a unit's records were damaged in transit");
    return AS_OK;
}

static int run_ranks(as_cli_job *j, as_cli_unit_fn fn, void *ctx, as_out *o)
{
    job_par p = {j, fn, ctx, o, calloc(as_trace_n_layers(j->tr) + 1, 1)};
    double *cost = malloc((j->n_units ? j->n_units : 1) * sizeof *cost);
    int code = as_mpi_agree(p.checked && cost ? 0 : as_cli_fail(j->cmd, AS_ERR_NOMEM, "out of memory"));
    if (code == 0) {
        for (size_t u = 0; u < j->n_units; u++) { /* a pass over the unit's scores */
            const as_layer *l = j->units[u].layer;
            cost[u] = (double)(j->units[u].head >= 0 ? 1 : l->hq) * (double)l->t * (double)l->n + 1;
        }
        as_mpi_job job = {j->n_units, cost, par_work, par_consume, &p, NULL, NULL};
        char err[AS_ERR_LEN];
        as_status st = as_mpi_run(&job, NULL, err);
        if (st != AS_OK) code = as_par_fail(j->cmd, st, err);
    }
    free(cost);
    free(p.checked);
    return code;
}

int as_cli_job_run(as_cli_job *j, const char *progress, as_cli_unit_fn fn, void *ctx,
                   as_out *o)
{
    j->bar = progress ? as_progress_new(progress, BAR_STEPS, j->c.quiet || as_mpi_rank() != 0)
                      : NULL;
    if (as_mpi_size() > 1) {
        int code = run_ranks(j, fn, ctx, o);
        as_progress_free(j->bar);
        j->bar = NULL;
        return code;
    }
    int rc = 0;
    for (j->unit_i = 0; j->unit_i < j->n_units && rc == 0; j->unit_i++) {
        rc = fn(ctx, j, &j->units[j->unit_i], o);
        as_cli_job_progress(j, 1, 1);
    }
    as_progress_free(j->bar);
    j->bar = NULL;
    return rc;
}
