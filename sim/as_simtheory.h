/* as_simtheory: closed forms the experiments compare against (GSL special functions).
 * Derivations and citations: docs/theory.md ("Known answers"). */
#ifndef AS_SIMTHEORY_H
#define AS_SIMTHEORY_H

#include <stdint.h>

/* Generalised harmonic number H(k, s) = sum_{i=1}^{k} i^-s (k >= 0, s real).
 * s > 1: zeta(s) - zeta(s, k+1) (Hurwitz, gsl_sf_hzeta); s = 1: psi(k+1) + Euler's gamma;
 * otherwise direct summation up to 10^4 terms and the Euler-Maclaurin expansion
 * zeta(s) + k^(1-s)/(1-s) + k^-s/2 - s k^(-s-1)/12 + s(s+1)(s+2) k^(-s-3)/720 beyond. */
double as_harmonic(int64_t k, double s);

/* Top-k mass of Zipf(s) over n keys (a_r proportional to r^-s): H(k, s) / H(n, s). */
double as_zipf_topk_mass(int64_t k, int64_t n, double s);
/* Smallest k whose top-k Zipf mass is at least p (bisection on the closed form). */
int64_t as_zipf_k_for_mass(double p, int64_t n, double s);
/* Shannon entropy (nats) of Zipf(s) over n keys: ln H(n,s) + s * sum r^-s ln r / H(n,s). */
double as_zipf_entropy(int64_t n, double s);

/* Rank measures of a matrix with singular values sv[0..r) (any order, >= 0):
 * erank = exp(-sum p ln p), p = sv / sum sv (Roy & Vetterli 2007); stable rank sum sv^2 /
 * max sv^2; r90 / r99: the fewest largest sv whose squares hold 90% / 99% of the total. */
typedef struct {
    double erank, stable_rank;
    int64_t r90, r99;
} as_rank_closed;
as_rank_closed as_rank_closed_form(const double *sv, int64_t r);

/* Cover (1965): the probability that a uniformly random split of n points in general
 * position in R^d is NOT separable by an affine hyperplane, 1 - C(n, d+1) / 2^n with
 * C(n, m) = 2 sum_{k=0}^{m-1} binom(n-1, k): the probability that two distributions
 * supported on the two sides can have the same mean. Log-space, exact for n <= 10^6. */
double as_cover_collision_prob(int64_t n, int64_t d);

/* Fourier coefficients of exp(A cos x) = sum_{m in Z} I_|m|(A) e^(i m x): the amplitude of
 * harmonic k relative to the fundamental, I_k(A) / I_1(A) (modified Bessel functions). When
 * the profile is sampled at integer positions with integer period P (P >= 3; P <= 0: no
 * sampling), harmonics alias: C_k = sum_{m = k mod P} I_|m|(A), ratio C_k / C_1. */
double as_bessel_harmonic_ratio(int k, double A, int P);

#endif
