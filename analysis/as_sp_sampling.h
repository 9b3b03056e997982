/* as_sp_sampling: the sampling estimator of decode attention and its (epsilon, delta) guarantee,
 * on arrays. Part of the sparsity analysis (as_sparsity.h).
 *
 * A sampling method keeps heavy hitters H and a uniform sample (without replacement) of the rest
 * R, reweighted, with numerator and denominator estimated separately; its error obeys an
 * (epsilon, delta) guarantee (Bernstein / Chebyshev, docs/theory.md) computed from the
 * population statistics of R. */
#ifndef AS_SP_SAMPLING_H
#define AS_SP_SAMPLING_H

#include <stdint.h>

#include "as_error.h"

/* Population statistics of the rest R (visible keys not in H) for weights a (sum 1), values V
 * and exact output o; y_j = a_j (v_j - o). docs/theory.md defines each. */
typedef struct {
    int64_t n_rest;     /* |R| */
    double p_heavy;     /* P_H = sum_{i in H} a_i */
    double var_y;       /* (1/|R|) sum_R ||y_j - ybar||^2 */
    double max_y;       /* max_R ||y_j - ybar|| */
    double var_e;       /* (1/|R|) sum_R (a_j - abar)^2 */
    double mass_rest;   /* sum_R a_j = 1 - P_H */
    double dev_max;     /* max over all visible keys of ||v_i - o|| (deterministic cap) */
} as_sp_sstats;

/* From arrays: scores s[0..n) (any shift), values V (n x d row-major), heavy set H sorted. */
as_status as_sp_sampling_stats(const double *s, const double *V, int64_t n, int64_t d,
                               const int64_t *H, int64_t nh, as_sp_sstats *st, char *err);
/* Predicted absolute epsilon for m samples drawn without replacement from R: with probability
 * at least 1 - delta, ||o - o_hat|| <= epsilon. 0 when m >= |R| (the estimator is exact). */
double as_sp_sampling_eps(const as_sp_sstats *st, int64_t m, double delta);
/* Smallest m with as_sp_sampling_eps(m) <= eps (|R| when only exhaustion achieves it). */
int64_t as_sp_sampling_size(const as_sp_sstats *st, double eps, double delta);
/* The estimator: o_hat = (sum_H e_i v_i + w sum_samp e_j v_j) / (sum_H e_i + w sum_samp e_j),
 * e = exp(s - max), w = n_rest / m. samp sorted, disjoint from H. */
void as_sp_estimate(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                    int64_t nh, const int64_t *samp, int64_t m, double *o_hat);
/* P(X >= x) for X ~ Binomial(n, p) (log-space sum; no GSL). */
double as_binom_tail(int64_t n, int64_t x, double p);

#endif
