/* as_sweep: the sparsity sweep (every method at every budget) with its work shared across
 * budgets and methods; the same records as as_sp_run (as_sp_engine.h). Order: per unit (layer,
 * kv head), method, budget, row: as_sp_run's order where a unit is one block (its order is per
 * block), and one order whatever the memory limit and the threads.
 *
 * as_sp_run evaluates one (method, budget) at a time and reads V once or twice per pair. Here,
 * per block of queries of a kv head (docs/benchmarks.md, "Where the sweep's time goes"):
 *  - the sets of every budget of a method are nested, so one multi-threshold selection per
 *    query (one for the scores, one for the Quest page bounds, computed once, from page min/max
 *    stored as cfg->params.page_bounds says, as as_sp_run stores them) gives every key
 *    the smallest budget whose set holds it: its *shell*; the sampling draws (seeded per
 *    budget exactly as as_sp_run draws them) mark their keys in a bit mask;
 *  - one pass over V accumulates, per shell and per sample, the mass sum a_i and the weighted
 *    values sum a_i v_i, and the exact distance ||v_i - o||^2 of every key; o_S, P_S, the
 *    complement sum o_rest, the estimator and the sampling statistics of every (method, budget)
 *    are then prefix sums of shells (d numbers each, no pass over V);
 *  - the bound's max_{i not in S} ||v_i - o_S|| is exact: keys in decreasing ||v_i - o|| are
 *    examined until ||v_i - o|| + ||o - o_S|| (an upper bound on ||v_i - o_S||, triangle
 *    inequality) falls below the best distance found; the same for max ||a_i (v_i - o) - ybar||.
 * Floating point: the sums run in another order than as_sp_run's, so the fields that carry
 * them agree with as_sp_run's to a few units in the last place, not bit for bit (docs/
 * benchmarks.md lists each field and the tolerance test_sweep checks).
 *
 * The unit of work is one kv head of one layer (as_sweep_unit); as_sweep_run spreads the units
 * over threads (BLAS single-threaded inside) and hands the records to the callback in order. */
#ifndef AS_SWEEP_H
#define AS_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_sp_engine.h"
#include "as_trace.h"

/* 1 when as_sweep runs cfg: every method but index and page-is, and (with a sampling method) at most
 * AS_SWEEP_MAX_BUDGETS budgets. Otherwise use as_sp_run. */
#define AS_SWEEP_MAX_BUDGETS 21
int as_sweep_supports(const as_sp_config *cfg);

/* One unit: kv head kvh of layer l, every selected query head of its group and every selected
 * query, in blocks whose rows fit mem bytes; the records (kept until the unit ends: O(T), not
 * O(N)) by method, budget, row. cfg->progress (if set) is told after each block. A nonzero return of fn sets
 * *stop and ends the unit. */
as_status as_sweep_unit(const as_layer *l, int64_t kvh, const as_sp_config *cfg, size_t mem,
                        as_sp_record_fn fn, void *ctx, int *stop, char *err);

/* The checks as_sweep_run makes of cfg (l NULL) and of each layer l it runs (with cfg's):
 * AS_OK, or AS_ERR_USAGE and the message as_sweep_run gives. For a caller that runs
 * as_sweep_unit itself (the MPI engine's (layer, kv head) units, cli/cli_par.c). */
as_status as_sweep_check(const as_sp_config *cfg, const as_layer *l, char *err);

/* The memory limit of one of `threads` workers (as_sweep_run's): cfg->mem_limit (0: 512 MiB)
 * shared by the threads. */
size_t as_sweep_worker_mem(const as_sp_config *cfg, int threads);

/* The whole trace, as as_sp_run (same checks of cfg, same records), over threads
 * workers (< 1: one per online core) taking (layer, kv head) units; each worker gets mem_limit / threads; fn
 * and cfg->progress are called from one thread at a time. */
as_status as_sweep_run(const as_trace *tr, const as_sp_config *cfg, int threads,
                       as_sp_record_fn fn, void *ctx, char *err);

#endif
