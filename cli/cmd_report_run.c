/* attnscope report: the analysis of every trace on the ranks (cmd_report.h). Unit order, trace
 * by trace: the checksum, then the trace's layers; rank 0 takes the results in that order. */
#ifdef AS_HAVE_REPORT
#include <stdlib.h>
#include <string.h>

#include "cli_par.h"
#include "cmd_report.h"

typedef struct {
    size_t trace;
    long li; /* layer position in the trace; -1: the trace's checksum */
} rep_unit;

typedef struct {
    as_cli_rep_trace *t;
    rep_unit *units;
    const double *cost;
    as_summary_opts so;
    as_par_prog prog;
    size_t hashing;        /* the trace whose checksum runs (its progress) */
    as_par_summary *ps;    /* rank 0: per trace, its layers' summaries joined */
} report_job;

static void on_hash(void *ctx, unsigned long long done)
{
    report_job *j = ctx;
    as_par_prog_inner(&j->prog, done, as_trace_file_bytes(j->t[j->hashing].tr));
}

static as_status report_work(void *vctx, size_t u, as_mpi_buf *out, char *err)
{
    report_job *j = vctx;
    const rep_unit *ru = &j->units[u];
    as_trace *tr = j->t[ru->trace].tr;
    if (ru->li < 0) {
        char hex[AS_SHA256_HEX] = "";
        char *per_file = NULL;
        as_par_prog_unit(&j->prog, 1);
        j->hashing = ru->trace;
        as_status st = as_trace_sha256(tr, hex, &per_file, on_hash, j, err);
        if (st == AS_OK) {
            as_mpi_put_str(out, hex);
            as_mpi_put_str(out, per_file);
        }
        free(per_file);
        return st;
    }
    as_par_prog_unit(&j->prog, j->cost[u]);
    return as_par_summary_work(tr, as_trace_layer(tr, (size_t)ru->li), &j->so, out, err);
}

static as_status report_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    report_job *j = vctx;
    as_cli_rep_trace *t = &j->t[j->units[u].trace];
    if (j->units[u].li >= 0) return as_par_summary_add(&j->ps[j->units[u].trace], in, err);
    const char *hex = as_mpi_get_str(in), *per_file = as_mpi_get_str(in);
    if (in->bad || !hex) return as_err_set(err, AS_ERR_IO, "the checksum was damaged in transit");
    snprintf(t->hex, sizeof t->hex, "%s", hex);
    if (per_file && !(t->per_file = strdup(per_file)))
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    return AS_OK;
}

/* The units and their costs: a layer's summary ~ hq t n (as_par_layer_units); the checksum
 * ~ bytes / 1000 on that scale. Returns the number of units (0: out of memory). */
static size_t plan_units(const as_cli_rep_trace *t, size_t ntr, int layer, rep_unit **units,
                         double **cost)
{
    as_trace *trs[AS_REPORT_MAX_TRACES];
    for (size_t k = 0; k < ntr; k++) trs[k] = t[k].tr;
    size_t nl = 0, n = 0;
    as_par_unit *lu = as_par_layer_units(trs, ntr, layer, NULL, NULL, &nl);
    *units = malloc((nl + ntr) * sizeof **units);
    *cost = malloc((nl + ntr) * sizeof **cost);
    if (lu && *units && *cost)
        for (size_t k = 0, i = 0; k < ntr; k++) {
            (*units)[n] = (rep_unit){k, -1};
            (*cost)[n++] = (double)as_trace_file_bytes(t[k].tr) / 1000.0 + 1;
            for (; i < nl && lu[i].trace == k; i++) {
                (*units)[n] = (rep_unit){k, (long)lu[i].li};
                (*cost)[n++] = lu[i].cost;
            }
        }
    free(lu);
    return n;
}

/* Rank 0, after the run: each trace's summary with its model-level sparsity. */
static as_status finish_all(report_job *j, size_t ntr, char *err)
{
    for (size_t k = 0; k < ntr; k++)
        if (!(j->t[k].s = as_par_summary_finish(&j->ps[k], err))) return AS_ERR_NOMEM;
    return AS_OK;
}

as_status as_cli_report_run(as_cli_rep_trace *t, size_t ntr, int layer, int witness, int quiet,
                            char *err)
{
    report_job rj;
    memset(&rj, 0, sizeof rj);
    rj.t = t;
    as_summary_opts_init(&rj.so);
    rj.so.witness = witness;
    rj.so.threads = as_mpi_size() > 1 ? 1 : 0; /* several ranks: one core each (docs/scale.md) */
    rj.so.progress = as_par_prog_inner;
    rj.so.ctx = &rj.prog;
    double *cost = NULL;
    size_t nu = plan_units(t, ntr, layer, &rj.units, &cost);
    rj.cost = cost;
    rj.ps = calloc(ntr, sizeof *rj.ps);
    as_status st = as_mpi_agree(nu && rj.ps ? 0 : 2) != 0
                       ? as_err_set(err, AS_ERR_NOMEM, "out of memory")
                       : AS_OK;
    if (st == AS_OK) {
        as_par_prog_start(&rj.prog, "report", quiet);
        as_mpi_job job = {nu, cost, report_work, report_consume, &rj, as_par_prog_engine,
                          &rj.prog};
        st = as_mpi_run(&job, NULL, err);
        if (st == AS_OK && as_mpi_rank() == 0) st = finish_all(&rj, ntr, err);
    }
    for (size_t k = 0; rj.ps && k < ntr; k++) as_par_summary_free(&rj.ps[k]);
    free(rj.ps);
    free(rj.units);
    free(cost);
    as_par_prog_end(&rj.prog);
    return st;
}

void as_cli_rep_free(as_cli_rep_trace *t)
{
    free(t->per_file);
    as_summary_free(t->s);
    t->per_file = NULL;
    t->s = NULL;
}
#else
/* PLplot or OpenSSL missing: `attnscope report` is not part of this build. */
typedef int as_cmd_report_run_not_built;
#endif
