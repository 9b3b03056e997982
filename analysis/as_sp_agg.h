/* as_sp_agg: aggregation of the sparsity records (as_sp_engine) into per-head curves, the
 * budgets at which each head crosses the error thresholds, and layer/model summaries. Part of
 * the sparsity analysis (as_sparsity.h). */
#ifndef AS_SP_AGG_H
#define AS_SP_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_sp_engine.h"

#define AS_SP_N_THRESH 3
extern const double as_sp_thresholds[AS_SP_N_THRESH]; /* 0.01, 0.05, 0.10 */

typedef struct {
    int layer;
    int64_t head;
    as_sp_method method;
    size_t budget_index;
    double budget;            /* nominal fraction (mean kept fraction for count budgets) */
    int64_t n_queries;
    double mean_kept;         /* mean k / n */
    double mean_rel_error, median_rel_error, max_rel_error;
    double mean_captured_mass;
    double mean_rel_bound;
    double median_slack;      /* median of bound / abs_error over queries with abs_error > 0 */
    int64_t violations;       /* deterministic violations + identity failures */
    int64_t draws, exceed;    /* sampling: Monte-Carlo draws and exceedances of epsilon */
} as_sp_head_budget;

typedef struct {
    int layer;
    int64_t head;
    as_sp_method method;
    /* per threshold: the smallest budget of the sweep whose mean relative error is at or below
     * it, with every larger budget also at or below it (NaN: none); sparsity = 1 / budget
     * (1 = needs dense attention). censored: the smallest budget tried still passes. */
    double budget_at[AS_SP_N_THRESH], sparsity_at[AS_SP_N_THRESH];
    int censored[AS_SP_N_THRESH];
} as_sp_head_sweep;

typedef struct {
    int layer;               /* -1 for the model-level summary */
    as_sp_method method;
    int64_t n_heads;
    double median_sparsity[AS_SP_N_THRESH], min_sparsity[AS_SP_N_THRESH];
    int64_t dense_heads[AS_SP_N_THRESH]; /* heads tolerating no sparsity of the sweep */
    double median_slack;
    double median_rel_error;
    int64_t records, violations, identity_failures;
    int64_t draws, exceed;   /* sampling */
    double coverage_p;       /* P(Bin(draws, delta) >= exceed); NaN if not sampling */
} as_sp_summary;

typedef struct as_sp_agg as_sp_agg;

as_sp_agg *as_sp_agg_new(const as_sp_config *cfg);
void as_sp_agg_free(as_sp_agg *a);
/* Record callback (ctx = the aggregator). */
int as_sp_agg_add(void *agg, const as_sp_record *r);
/* Compute the results (call once after the run). Arrays stay owned by the aggregator. */
as_status as_sp_agg_finish(as_sp_agg *a, char *err);
size_t as_sp_agg_head_budgets(const as_sp_agg *a, const as_sp_head_budget **out);
size_t as_sp_agg_head_sweeps(const as_sp_agg *a, const as_sp_head_sweep **out);
/* Layer summaries followed by one model-level summary (layer = -1) per method. */
size_t as_sp_agg_summaries(const as_sp_agg *a, const as_sp_summary **out);

#endif
