/* as_sparsity: sparse approximations of decode attention and their error bounds.
 *
 * For one query (docs/theory.md, "Sparse attention: error and bounds"): weights a = softmax(s)
 * over the n visible keys, exact output o = V^T a. A *subset* method keeps a set S of keys and
 * outputs o_S = softmax restricted to S; then exactly
 *     o - o_S = (1 - P_S)(o_rest - o_S),   P_S = sum_{i in S} a_i,
 * hence ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||          (deterministic bound).
 * A *sampling* method keeps heavy hitters H and a uniform sample of the rest, reweighted, with
 * numerator and denominator estimated separately; its error obeys an (epsilon, delta) guarantee
 * (Bernstein / Chebyshev, docs/theory.md) computed here from the full trace.
 *
 * Methods: topk (oracle), sink-window (StreamingLLM), page (Quest), uniform (sampling,
 * self-normalised importance weights), topk-sample (vAttention-style), index (user's file).
 *
 * Three levels of API:
 *  - arrays (no trace): the estimator, the sampling statistics, epsilon and sample size;
 *  - one query of a trace: selection, exact subset check of any (S, o_hat) pair, evaluation;
 *  - a whole trace: as_sp_run, tiled: the queries of a kv-head group form blocks whose score
 *    rows fit a memory limit (never T x N beyond it); K is read once per block (one dgemm per
 *    tile for all its queries), V once for the dense outputs and once per (method, budget) for
 *    the complement sums and distances (BLAS over tiles); calls back once per record;
 *    as_sp_agg turns the records into per-head curves, crossing budgets, and layer/model
 *    summaries.
 *
 * This header gathers the five modules of the analysis, one per concern:
 *   as_sp_budget    method names, budgets, parameters, the page width rule;
 *   as_sp_sampling  the sampling estimator and its guarantee, on arrays;
 *   as_sp_select    the keys each method reads for one query;
 *   as_sp_engine    the block engine: exact checks of one query or of a whole trace;
 *   as_sp_agg       aggregation of the records: curves, crossings, summaries. */
#ifndef AS_SPARSITY_H
#define AS_SPARSITY_H

#include "as_sp_agg.h"
#include "as_sp_budget.h"
#include "as_sp_engine.h"
#include "as_sp_sampling.h"
#include "as_sp_select.h"

#endif
