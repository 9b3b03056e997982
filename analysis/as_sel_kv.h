/* as_sel_kv: the key selections of one decode step of a whole layer (every query head at one
 * query), per query head or shared by the query heads of a kv head (GQA), and top-k + sampling
 * sized from an (epsilon, delta) target. What a sparse decode inside a model needs per layer
 * and step; the selections themselves are as_sp_select's (analysis/as_sparsity.h).
 *
 * Per query head (AS_SEL_Q): head h gets as_sp_select's keys, seeded as query seed_qi of head h
 * of layer l->index, so a step taken from a trace selects what `attnscope sparsity
 * --export-index` writes for that query. Cost: the kv head's keys are converted to double once
 * for its query heads (the same dgemm calls over them as as_sp_select's, so the same scores), page
 * min/max once per kv head (each head's page selection then equals as_sp_select's: a test), and
 * sink-window / uniform compute no scores.
 *
 * Per kv head (AS_SEL_KV): the G = hq / hkv query heads of kv head g share one selection, the
 * rule of the GPU module's as_gpu_select_topk / as_gpu_select_pages in mode KV:
 *   topk, topk-sample (heavy hitters)  keys ranked by r_i = max_{h in group} (s_{h,i} - lse_h),
 *                                      the largest log-probability any head of the group gives;
 *   page                               pages ranked by the max over the group of their Quest
 *                                      bounds ub_{h,p} = scale sum_c max(q_c min_c, q_c max_c);
 *   sink-window                        the same keys as every head (no data involved);
 *   uniform, topk-sample (samples)     drawn as the group's first query head's draws.
 * Count rules (budget keys, whole pages, heavy share round(F k)) are as_sp_select's.
 *
 * Sized sampling (topk-sample, eps_rel > 0): heavy hitters H = the top round(F k) keys of the
 * budget (by the head's scores, or by r for a group), then m = as_sp_sampling_size for the
 * absolute target eps_rel * ||o_h|| and delta (the `samples_needed` of `attnscope sparsity
 * --eps`); for a group, the largest m any of its heads needs. The m samples are drawn from the
 * rest exactly as as_sp_select draws them for a count budget of |H| + m. */
#ifndef AS_SEL_KV_H
#define AS_SEL_KV_H

#include <stdint.h>

#include "as_error.h"
#include "as_sparsity.h"
#include "as_trace.h"

typedef enum { AS_SEL_Q = 0, AS_SEL_KV = 1 } as_sel_mode;

/* The kv rule's rank: r[i] = max over the g rows of S (row r at S + r * lds, n scores each, any
 * shift) of S[r][i] - lse(S[r]). g >= 1, n >= 1. */
void as_sel_kv_rank(const double *S, int64_t g, int64_t n, int64_t lds, double *r);

/* Quest page bounds of query q (d doubles, unscaled) over keys [0, n) of kv head kvh of l, pages
 * of P keys (the last one partial): ub[p] = l->scale * sum_c max(q_c min_c, q_c max_c) for
 * p < ceil(n / P); ub[p] >= the largest score of page p. */
as_status as_sel_page_bounds(const as_layer *l, int64_t kvh, const double *q, int64_t n,
                             int64_t P, double *ub, char *err);

/* Select the keys of query qi of layer l for every query head (mode AS_SEL_Q: sels[0..hq)) or
 * every kv head (AS_SEL_KV: sels[0..hkv)), each initialised with as_sp_sel_init (reused).
 * Draws are seeded as query seed_qi (trial as in as_sp_select). eps_rel > 0 (topk-sample only)
 * sizes the samples from the bound; needed (may be NULL; hq or hkv entries) receives each
 * selection's m (-1 when not sized). Methods index and page-sample are refused (AS_ERR_USAGE). */
as_status as_sel_step(const as_layer *l, int64_t qi, as_sel_mode mode, as_sp_method m,
                      as_budget b, const as_sp_params *p, uint64_t trial, int64_t seed_qi,
                      double eps_rel, as_sp_sel *sels, int64_t *needed, char *err);

#endif
