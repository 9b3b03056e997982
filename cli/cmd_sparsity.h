/* cmd_sparsity: what the two files of 'attnscope sparsity' share. cmd_sparsity.c parses the
 * command line, opens the inputs, runs the analysis and writes --export-index;
 * cmd_sparsity_out.c turns the run into records and tables (docs/cli.md). */
#ifndef AS_CMD_SPARSITY_H
#define AS_CMD_SPARSITY_H

#include <stdint.h>

#include "as_sparsity.h"
#include "cli_util.h"

/* The 'sparsity' record of one layer x head x query x budget x method. */
cJSON *as_cli_sp_query_record(const as_sp_record *r);

/* What the 'check' record counts over the whole run. */
typedef struct {
    int64_t violations, identity_failures, coverage_failures;
} as_cli_sp_check;

/* The records of a finished aggregation: 'head_budget', 'head_sweep', 'layer_summary',
 * 'model_summary', 'coverage' (sampling methods, at the run's delta) and 'check' (its counts
 * also in *chk); then the tables of every kind. */
void as_cli_sp_aggregates(as_out *o, const as_sp_agg *agg, double delta, as_cli_sp_check *chk);

#endif
