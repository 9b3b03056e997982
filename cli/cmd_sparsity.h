/* cmd_sparsity: what the two files of 'attnscope sparsity' share. cmd_sparsity.c parses the
 * command line, opens the inputs, runs the analysis and writes --export-index;
 * cmd_sparsity_out.c turns the run into records and tables (docs/cli.md). */
#ifndef AS_CMD_SPARSITY_H
#define AS_CMD_SPARSITY_H

#include <stdint.h>

#include "as_sparsity.h"
#include "as_trace.h"
#include "cli_util.h"

/* The 'sparsity' record of one layer x head x query x budget x method (tag: the trace's path
 * when a run has several traces, a field "trace" of every record; else NULL). */
cJSON *as_cli_sp_query_record(const as_sp_record *r, const char *tag);

/* What the 'check' record counts over the whole run. */
typedef struct {
    int64_t violations, identity_failures, coverage_failures;
} as_cli_sp_check;

/* The records of a finished aggregation: 'head_budget', 'head_sweep', 'layer_summary',
 * 'model_summary', 'coverage' (sampling methods, at the run's delta) and 'check' (its counts
 * also in *chk); tag as for as_cli_sp_query_record. */
void as_cli_sp_aggregates(as_out *o, const as_sp_agg *agg, double delta, const char *tag,
                          as_cli_sp_check *chk);

/* Several traces: one 'trace_summary' record per trace and method from the trace's model
 * summary (a study's table: models, prompts, lengths side by side) and its table. */
void as_cli_sp_across(as_out *o, as_trace *const *tr, const char *const *tpath,
                      const as_sp_agg *const *agg, size_t ntr, int layer);

/* The tables of every record kind (multi: a first column 'trace'); after the records. */
void as_cli_sp_tables(as_out *o, int multi);

#endif
