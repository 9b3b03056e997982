/* cmd_report: what the two files of 'attnscope report' share. cmd_report.c parses the command
 * line, opens the inputs and writes the page; cmd_report_run.c runs the analysis of every
 * trace on the ranks of the MPI engine (cli/cli_par.h, mpi/as_mpi.h). */
#ifndef AS_CMD_REPORT_H
#define AS_CMD_REPORT_H

#include <stddef.h>

#include "as_digest.h"
#include "as_summary.h"
#include "as_trace.h"

enum { AS_REPORT_MAX_TRACES = 64 };

/* One trace of the run; the results are rank 0's (other ranks: hex empty, s NULL). */
typedef struct {
    as_trace *tr;                /* opened by the caller */
    char hex[AS_SHA256_HEX];     /* the trace's SHA-256 (as_trace_sha256) */
    char *per_file;              /* an .npy directory's per-file checksums, or NULL */
    as_summary *s;               /* its summary, the model-level sparsity over its layers */
} as_cli_rep_trace;

/* Every trace's units in one run, so that all traces share the ranks: trace by trace, unit
 * "checksum" (cost: bytes / 1000) then one unit per selected layer (layer >= 0: that index
 * only; its summary and sparsity records, witness as --witness). One trace: the units of the
 * one-trace report, in its order. Returns AS_OK, or the first failure (rank 0's err says it,
 * with the failing rank when there are several); frees nothing of t (as_cli_rep_free). */
as_status as_cli_report_run(as_cli_rep_trace *t, size_t ntr, int layer, int witness, int quiet,
                            char *err);
void as_cli_rep_free(as_cli_rep_trace *t); /* per_file and s; not the trace */

#endif
