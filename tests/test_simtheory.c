/* Tests of sim/as_simtheory: the closed forms against brute force. */
#include <criterion/criterion.h>
#include <gsl/gsl_sf_bessel.h>
#include <gsl/gsl_sf_gamma.h>
#include <math.h>
#include <stdlib.h>

#include "as_simtheory.h"

static long double brute_harmonic(int64_t k, double s)
{
    long double sum = 0;
    for (int64_t i = k; i >= 1; i--) sum += powl((long double)i, -(long double)s);
    return sum;
}

Test(simtheory, harmonic_numbers_all_branches)
{
    static const double ss[] = {0.3, 0.8, 1.0, 1.2, 2.0, 3.5};
    static const int64_t ks[] = {1, 7, 10000, 10001, 54321, 300000};
    for (size_t a = 0; a < sizeof ss / sizeof ss[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            double got = as_harmonic(ks[b], ss[a]);
            double want = (double)brute_harmonic(ks[b], ss[a]);
            cr_assert_float_eq(got, want, 1e-11 * want, "H(%lld, %g) = %.17g, want %.17g",
                               (long long)ks[b], ss[a], got, want);
        }
    cr_assert_eq(as_harmonic(0, 1.5), 0.0);
}

Test(simtheory, zipf_mass_and_quantiles)
{
    cr_assert_float_eq(as_zipf_topk_mass(1, 2, 1.0), 2.0 / 3.0, 1e-15);
    cr_assert_eq(as_zipf_topk_mass(5, 5, 1.0), 1.0);
    cr_assert_eq(as_zipf_topk_mass(0, 5, 1.0), 0.0);
    for (double p = 0.1; p < 1.0; p += 0.2) {
        int64_t k = as_zipf_k_for_mass(p, 100000, 1.1);
        cr_assert_geq(as_zipf_topk_mass(k, 100000, 1.1), p);
        cr_assert_lt(as_zipf_topk_mass(k - 1, 100000, 1.1), p);
    }
    /* entropy: s = 0 is uniform, ln n */
    cr_assert_float_eq(as_zipf_entropy(1000, 0.0), log(1000.0), 1e-12);
}

Test(simtheory, rank_closed_forms)
{
    double flat[6] = {2, 2, 2, 2, 2, 2};
    as_rank_closed r = as_rank_closed_form(flat, 6);
    cr_assert_float_eq(r.erank, 6.0, 1e-12);
    cr_assert_float_eq(r.stable_rank, 6.0, 1e-12);
    cr_assert_eq(r.r90, 6); /* 5/6 < 0.9 */
    cr_assert_eq(r.r99, 6);
    double one[3] = {0, 5, 0};
    r = as_rank_closed_form(one, 3);
    cr_assert_float_eq(r.erank, 1.0, 1e-15);
    cr_assert_eq(r.r90, 1);
    double zero[2] = {0, 0};
    r = as_rank_closed_form(zero, 2);
    cr_assert_eq(r.erank, 0.0);
    cr_assert_eq(r.r99, 0);
}

Test(simtheory, cover_counting)
{
    /* n <= d + 1: affinely independent points, every split separable */
    cr_assert_eq(as_cover_collision_prob(5, 4), 0.0);
    /* n = 2(d+1): exactly one half (the binomial median) */
    for (int d = 1; d < 40; d += 7) cr_assert_float_eq(as_cover_collision_prob(2 * (d + 1), d), 0.5, 1e-12);
    /* brute force 1 - 2^(1-n) sum_{k<=d} C(n-1, k) */
    for (int n = 3; n < 60; n += 5)
        for (int d = 1; d < n; d += 3) {
            double s = 0;
            for (int k = 0; k <= d && k <= n - 1; k++) s += gsl_sf_choose((unsigned)(n - 1), (unsigned)k);
            double want = n <= d + 1 ? 0.0 : 1.0 - s * pow(2.0, 1 - n);
            cr_assert_float_eq(as_cover_collision_prob(n, d), want, 1e-12, "n=%d d=%d", n, d);
        }
}

Test(simtheory, bessel_harmonics)
{
    for (double A = 0.5; A < 10; A *= 2) {
        double r2 = gsl_sf_bessel_In(2, A) / gsl_sf_bessel_In(1, A);
        cr_assert_float_eq(as_bessel_harmonic_ratio(2, A, 0), r2, 1e-13);
        /* aliasing with period 8: harmonic 2 collects orders 2, -6, 10, -14, ... */
        double c2 = 0, c1 = 0;
        for (int j = -20; j <= 20; j++) {
            c2 += gsl_sf_bessel_In(abs(2 + 8 * j), A);
            c1 += gsl_sf_bessel_In(abs(1 + 8 * j), A);
        }
        cr_assert_float_eq(as_bessel_harmonic_ratio(2, A, 8), c2 / c1, 1e-12);
    }
    /* the DFT of exp(A cos(2 pi r / P)) over one period, directly */
    const int P = 6;
    const double A = 3.0;
    double re[4] = {0};
    for (int k = 1; k <= 3; k++)
        for (int r = 0; r < P; r++) re[k] += exp(A * cos(2 * M_PI * r / P)) * cos(2 * M_PI * k * r / P);
    cr_assert_float_eq(as_bessel_harmonic_ratio(2, A, P), re[2] / re[1], 1e-12);
}
