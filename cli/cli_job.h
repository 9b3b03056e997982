/* cli_job: the skeleton every trace command shares: parse the common options (and the
 * command's own through a callback), open the trace (NaN/Inf and limits checked), check that
 * --layer exists and that --head (and --query) fit every selected layer, then list the units
 * of work, one per selected layer or one per selected (layer, query head), and run a
 * command's function on each unit in order under one progress bar.
 *
 * The units are independent: a unit's function reads the trace and appends its records to an
 * as_out; aggregates over units are made from the records afterwards (spectrum's RoPE
 * summary), or from what a unit hands on when it is over, taken in unit order (sparsity's
 * as_sp_records, added to its aggregation at the end of each unit). So as_cli_job_run is the
 * one place a later change may spread the units over processes and gather, in unit order,
 * their records and what they hand on. */
#ifndef AS_CLI_JOB_H
#define AS_CLI_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "cli_util.h"

/* as_cli_parse*: go on with the command (any other value is the exit code to return now). */
#define AS_CLI_GO (-1)

/* A command's own option (opt from its getopt_long table, arg its value or NULL): returns 0
 * when taken, 2 on a bad value (message printed, e.g. by as_cli_parse_int), or -1 when opt is
 * not one of its options (reported as an unknown option). */
typedef int (*as_cli_opt_fn)(void *ctx, int opt, const char *arg);

/* getopt_long over argv[1..] with opts (shortopts: the short options after the leading ':'
 * that reports a missing value; NULL for none): the common options go into c (initialised
 * here), every other option to fn (NULL: a command without options of its own). Returns
 * AS_CLI_GO, or the exit code to return now: 0 after --help (printed), 2 after a usage
 * error (one line printed). optind is left at the first positional argument. */
int as_cli_parse_opts(const char *cmd, int argc, char **argv, const struct option *opts,
                      const char *shortopts, as_cli_opt_fn fn, void *ctx, as_cli_common *c);

/* as_cli_parse_opts, then exactly one positional argument, the TRACE (c->trace). */
int as_cli_parse_trace(const char *cmd, int argc, char **argv, const struct option *opts,
                       const char *shortopts, as_cli_opt_fn fn, void *ctx, as_cli_common *c);

/* ---- the job: an open trace and its units --------------------------------------------- */
typedef enum {
    AS_CLI_UNITS_NONE = 0, /* no units: the command runs its own loop (checks still made) */
    AS_CLI_UNITS_LAYER,    /* one unit per selected layer, head = --head or -1 (all heads) */
    AS_CLI_UNITS_HEAD      /* one unit per selected layer and query head (--head: that one) */
} as_cli_unit_kind;

typedef struct {
    size_t pos;            /* the layer's position in the trace: as_trace_layer(tr, pos) */
    const as_layer *layer; /* the layer (owned by the trace) */
    int64_t head;          /* the query head, or -1: every query head of the layer */
} as_cli_unit;

typedef struct as_cli_job {
    const char *cmd;
    as_cli_common c;       /* the parsed common options; c.trace is the trace's path */
    as_trace *tr;
    size_t n_layers;       /* layers selected (--layer: 1) */
    as_cli_unit *units;
    size_t n_units;
    /* as_cli_job_run's progress: the bar, the unit running */
    as_progress *bar;
    size_t unit_i;
    /* several ranks (mpi/as_mpi.h): the values were not scanned at open; each rank checks
     * the layers it reads before its units run */
    int check_layers;
} as_cli_job;

/* Open c->trace for cmd (NaN/Inf and overflowing scores refused: as_cli_open_trace), check
 * that --layer (c->layer) exists and that --head (c->head) and query (a --query, or -1 for
 * none) fit every selected layer, and list the units. Returns 0, or the exit code (one line
 * printed: the trace's own message, "TRACE has no layer L", "layer L has H query heads and T
 * queries"); on failure nothing is left to close. */
int as_cli_job_open(as_cli_job *j, const char *cmd, const as_cli_common *c, int64_t query,
                    as_cli_unit_kind units);
void as_cli_job_close(as_cli_job *j); /* frees the units and the trace; zeroed job allowed */

/* One unit's work: append its records to o. Returns 0, or an exit code (message printed). */
typedef int (*as_cli_unit_fn)(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o);

/* Run fn on every unit in order under a progress bar labelled progress (NULL: none; --quiet
 * and --progress as for every bar) that advances one unit at a time, and within a unit
 * through as_cli_job_progress; stops at the first failing unit. Returns 0 or its exit code.
 * Under mpirun (several ranks, mpi/as_mpi.h) the units are shared by the ranks by cost: each
 * rank runs fn on its own units into a unit buffer (as_out_new_unit) and rank 0 adds their
 * records to o in unit order, so o ends as in one process; a failing unit's message (its
 * as_cli_fail line) is printed once by rank 0 with the rank, and every rank returns the
 * exit code. Only rank 0's o holds records: the others' output goes nowhere. */
int as_cli_job_run(as_cli_job *j, const char *progress, as_cli_unit_fn fn, void *ctx,
                   as_out *o);

/* An analysis library's progress callback (ctx: the job) for the unit now running: draws
 * (unit + done/total) / units of the bar. */
void as_cli_job_progress(void *job, uint64_t done, uint64_t total);

#endif
