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
#include "as_select.h"

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
/* ---- importance sampling of the rest (page-is; docs/theory.md, "Pages + importance
 * sampling") ----------------------------------------------------------------------------------
 * m keys J_1..J_m drawn independently (with replacement) from a proposal q over R (q_j > 0 on R,
 * sum_R q_j = 1, q_j = 0 on H) fixed before the draws; the estimator is
 *   N = sum_H e_i v_i + (1/m) sum_t e_J v_J / q_J,   D = sum_H e_i + (1/m) sum_t e_J / q_J. */

/* The proposal of page-is over n keys in pages of P (page of key j: j / P) with page scores
 * x[j / P] (the box centre's score or Quest's bound): q_j = (1 - beta) exp(tau (x_p - X*)) / W
 * + beta / |R| for j outside the sorted heavy set H (X* the largest score of a key outside H,
 * W = sum over keys outside H of exp(tau (x_p - X*))), 0 on H. cq (may be NULL) receives the
 * running sums of q. */
as_status as_sp_is_proposal(const double *ub, int64_t n, int64_t P, const int64_t *H, int64_t nh,
                            double tau, double beta, double *q, double *cq, char *err);
/* m draws from q (cq its running sums over n keys): the distinct keys drawn, ascending, into
 * keys (room for m) and their weights count / (m q_j) into w; returns how many are distinct. */
int64_t as_sp_is_draw(as_rng *rng, const double *q, const double *cq, int64_t n, int64_t m,
                      int64_t *keys, double *w);

/* Poisson sampling (the default of page-is): inclusion probabilities pi_j = min(1, c q_j) with
 * sum_j pi_j = m (0 < m < number of keys with q_j > 0; c found by bisection over the runs of
 * equal q), 0 where q_j = 0. */
as_status as_sp_is_inclusion(const double *q, int64_t n, double m, double *pi, char *err);
/* One Poisson sample: key j (ascending) kept when a uniform draw is below pi_j (one draw per key
 * with 0 < pi_j < 1, in key order; pi_j = 1 always kept), its weight 1 / pi_j into w; returns
 * how many are kept. */
int64_t as_sp_is_draw_poisson(as_rng *rng, const double *pi, int64_t n, int64_t *keys, double *w);

/* Population statistics of the importance-sampling estimator (a normalised, y_j = a_j (v_j - o),
 * Ybar = sum_R y_j). With replacement the fields are as named; for Poisson sampling (poisson = 1)
 * sum_y2q = sum_R (1 - pi_j)/pi_j ||y_j||^2, sum_a2q = sum_R (1 - pi_j)/pi_j a_j^2, max_yq =
 * max over pi_j < 1 of ||y_j|| max(1/pi_j - 1, 1), max_a = max over pi_j < 1 of a_j, ybar2 = 0. */
typedef struct {
    int poisson;
    int64_t n_rest;     /* |R| */
    double p_heavy;     /* P_H */
    double mass_rest;   /* sum_R a_j = 1 - P_H */
    double sum_y2q;     /* sum_R ||y_j||^2 / q_j */
    double max_yq;      /* max_R ||y_j / q_j - Ybar|| */
    double sum_a2q;     /* sum_R a_j^2 / q_j */
    double ybar2;       /* ||Ybar||^2 */
    double dev_max;     /* max over all visible keys of ||v_i - o|| */
    double max_a;       /* Poisson: the denominator's range */
} as_sp_isstats;

/* q: the proposal (poisson = 0) or the inclusion probabilities pi (poisson = 1). */
as_status as_sp_is_stats(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                         int64_t nh, const double *q, int poisson, as_sp_isstats *st, char *err);
/* Absolute epsilon for m independent draws (Poisson: m is ignored, the sample is fixed by pi): with probability at least 1 - delta,
 * ||o - o_hat|| <= epsilon (Pinelis / Chebyshev for the numerator, Bernstein / Cantelli for the
 * denominator, as as_sp_sampling_eps but with the importance weights' range and variance). */
double as_sp_is_eps(const as_sp_isstats *st, int64_t m, double delta);
/* Smallest m with as_sp_is_eps(m) <= eps (at most 2^40; -1 when not reached). */
int64_t as_sp_is_size(const as_sp_isstats *st, double eps, double delta);
/* The estimator from distinct sampled keys samp[0..ns) with weights w (as_sp_is_draw). */
void as_sp_is_estimate(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                       int64_t nh, const int64_t *samp, const double *w, int64_t ns,
                       double *o_hat);

/* P(X >= x) for X ~ Binomial(n, p) (log-space sum; no GSL). */
double as_binom_tail(int64_t n, int64_t x, double p);

#endif
