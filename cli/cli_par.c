#include "cli_par.h"

#include <stdio.h>
#include <stdlib.h>

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
