/* Tests of sim/as_simrng: the seeded generator is reproducible, the Gaussian draws have the
 * moments and the one-sigma mass of N(0, sd^2), the fill is the same stream as single draws, and
 * the symmetric Dirichlet draws lie on the simplex with mean 1/n and variance
 * (1/n)(1 - 1/n)/(n alpha + 1). Sample sizes make a 6-standard-error band fail with probability
 * below 1e-8 per check. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "as_simrng.h"

Test(simrng, seeded_streams)
{
    gsl_rng *a = as_sim_rng_new(42), *b = as_sim_rng_new(42), *c = as_sim_rng_new(43);
    cr_assert(a && b && c);
    int same = 1, differ = 0;
    for (int i = 0; i < 100; i++) {
        unsigned long x = gsl_rng_get(a), y = gsl_rng_get(b), z = gsl_rng_get(c);
        same &= x == y;
        differ |= x != z;
    }
    cr_assert(same && differ);
    gsl_rng_free(a), gsl_rng_free(b), gsl_rng_free(c);
}

Test(simrng, gaussian_moments_and_fill)
{
    const size_t n = 400000;
    const double sd = 2.0;
    gsl_rng *r = as_sim_rng_new(7), *r2 = as_sim_rng_new(7);
    double *x = malloc(n * sizeof *x);
    as_sim_gaussian_fill(r, sd, x, n);
    double m = 0, v = 0;
    size_t inside = 0;
    for (size_t i = 0; i < n; i++) m += x[i];
    m /= (double)n;
    for (size_t i = 0; i < n; i++) {
        v += (x[i] - m) * (x[i] - m);
        inside += fabs(x[i]) < sd;
    }
    v /= (double)(n - 1);
    const double se_m = sd / sqrt((double)n), se_v = sd * sd * sqrt(2.0 / (double)(n - 1));
    cr_assert(fabs(m) < 6 * se_m, "mean %g", m);
    cr_assert(fabs(v - sd * sd) < 6 * se_v, "variance %g", v);
    /* P(|X| < sd) = erf(1 / sqrt 2) */
    const double p1 = erf(1.0 / sqrt(2.0)), frac = (double)inside / (double)n;
    cr_assert(fabs(frac - p1) < 6 * sqrt(p1 * (1 - p1) / (double)n), "one-sigma mass %g", frac);
    /* the fill is the stream of single draws */
    for (size_t i = 0; i < 1000; i++) cr_assert_eq(as_sim_gaussian(r2, sd), x[i]);
    free(x);
    gsl_rng_free(r), gsl_rng_free(r2);
}

Test(simrng, dirichlet_on_the_simplex)
{
    enum { K = 5 };
    const double alpha = 0.5;
    const size_t draws = 200000;
    gsl_rng *r = as_sim_rng_new(11);
    double p[K], s1[K] = {0}, s2[K] = {0};
    for (size_t t = 0; t < draws; t++) {
        as_sim_dirichlet(r, K, alpha, p);
        double sum = 0;
        for (int i = 0; i < K; i++) {
            cr_assert(p[i] >= 0 && p[i] <= 1);
            sum += p[i];
            s1[i] += p[i];
            s2[i] += p[i] * p[i];
        }
        cr_assert(fabs(sum - 1.0) < 1e-12);
    }
    const double mean = 1.0 / K, var = mean * (1 - mean) / (K * alpha + 1);
    for (int i = 0; i < K; i++) {
        double m = s1[i] / (double)draws, v = s2[i] / (double)draws - m * m;
        cr_assert(fabs(m - mean) < 6 * sqrt(var / (double)draws), "E p_%d = %g", i, m);
        /* Var(p_i^2) <= E p_i^4 <= E p_i^2 (p_i in [0, 1]): a loose but valid standard error */
        double se_v = sqrt((var + mean * mean) / (double)draws);
        cr_assert(fabs(v - var) < 6 * se_v, "Var p_%d = %g (want %g)", i, v, var);
    }
    gsl_rng_free(r);
}
