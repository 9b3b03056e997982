/* cli_par: what the analysis commands share to run on the MPI engine (mpi/as_mpi.h, issue 19):
 * their units (one per selected layer of each trace, with a cost), the check of a unit's layer
 * on the rank that reads it, and one progress bar on rank 0 over every rank's units. */
#ifndef AS_CLI_PAR_H
#define AS_CLI_PAR_H

#include <stddef.h>
#include <stdint.h>

#include "as_mpi.h"
#include "as_trace.h"
#include "cli_util.h"

typedef struct {
    size_t trace; /* index into the command's traces */
    size_t li;    /* layer position in that trace (as_trace_layer) */
    double cost;
} as_par_unit;

/* The layers of traces tr[0..ntr) (only layer index `layer` when >= 0), trace by trace, each
 * costing cost(l, cctx) (NULL: hq * t * n, the work of a pass over the layer's scores).
 * Returns a malloc'd array (NULL: out of memory) and its length in *n. */
as_par_unit *as_par_layer_units(as_trace *const *tr, size_t ntr, int layer,
                                double (*cost)(const as_layer *l, void *cctx), void *cctx,
                                size_t *n);

/* Open a trace for a command: as as_cli_open_trace, except that with more than one rank the
 * values are not scanned here (every rank would read the whole file): each rank checks the
 * layers it reads with as_par_check_layer. */
as_trace *as_par_open_trace(const char *cmd, const char *path, int *code);

/* With more than one rank: NaN/Inf and the value limits of layer l (as the whole-trace check
 * at opening would report them); one rank: AS_OK (the trace was checked when opened). */
as_status as_par_check_layer(const as_trace *tr, const as_layer *l, char *err);

/* One progress bar on rank 0: the engine reports the cost done on every rank
 * (as_par_prog_engine), the analysis of rank 0's current unit its fraction
 * (as_par_prog_inner, after as_par_prog_unit names the unit's cost). */
typedef struct {
    as_progress *bar;
    double base, span, total;
} as_par_prog;

void as_par_prog_start(as_par_prog *p, const char *label, int quiet);
void as_par_prog_unit(as_par_prog *p, double cost);
void as_par_prog_engine(void *ctx, double done, double total);
void as_par_prog_inner(void *ctx, uint64_t done, uint64_t total);
void as_par_prog_end(as_par_prog *p);

/* "attnscope CMD: message" for the run's failure: rank 0 prints it (with the failing rank when
 * there are several); the others print nothing. Returns the exit code of st. */
int as_par_fail(const char *cmd, as_status st, const char *err);

#endif

/* ---- report and compare: a trace's summary (report/as_summary.h) computed layer by layer on
 * the ranks: one layer's part with its sparsity records, and their sum on rank 0. ---------- */
#include "as_summary.h"

typedef struct {
    as_summary *sum;  /* the joined summary */
    void *agg;        /* as_sp_agg over every layer's sparsity records, in layer order */
    int failed;       /* out of memory while joining */
} as_par_summary;

/* Unit work: the summary of layer l of tr (opts as given, layer and sp_record set here),
 * encoded into out with its sparsity records. err names the trace on failure. */
as_status as_par_summary_work(const as_trace *tr, const as_layer *l, const as_summary_opts *o,
                              as_mpi_buf *out, char *err);
/* Rank 0, units in order: add one layer's part. */
as_status as_par_summary_add(as_par_summary *ps, as_mpi_rd *in, char *err);
/* Rank 0, after the run: the model-level sparsity over every layer; returns the summary (owned
 * by the caller) or NULL with err. */
as_summary *as_par_summary_finish(as_par_summary *ps, char *err);
void as_par_summary_free(as_par_summary *ps);

/* ---- sparsity: as_sp_run over the layers of traces tr[0..ntr) on the ranks ----------------- */
#include "as_sparsity.h"

/* Called on rank 0 with each record, trace by trace and layer by layer in the order one
 * as_sp_run makes them; nonzero return stops passing records (as as_sp_run stops). */
typedef int (*as_par_sp_fn)(void *ctx, size_t trace, const as_sp_record *r);

/* cfg as for as_sp_run (its layer selects a layer index in every trace; its progress, if set,
 * receives the records done on every rank out of all); each layer runs on the shared sweep
 * (analysis/as_sweep.h, `threads` workers; < 1: every core) where it supports cfg, else on
 * as_sp_run. Returns AS_OK or the first failure;
 * rank 0's err says it as as_sp_run would (without the trace's name: the caller adds it), with
 * the failing rank when there are several. stats may be NULL. */
as_status as_par_sp_run(as_trace *const *tr, size_t ntr, const as_sp_config *cfg, int threads,
                        as_par_sp_fn fn, void *ctx, as_mpi_stats *stats, char *err);
