/* Tests of analysis/as_sp_sampling: the estimator, the population statistics and epsilon on
 * arrays (closed forms), the Monte-Carlo coverage of the (epsilon, delta) guarantee and the
 * binomial tail against GSL. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

#ifdef AS_HAVE_GSL
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#endif

#ifdef AS_HAVE_GSL
/* ---- Monte-Carlo coverage on problem instances drawn with GSL --------------------------------
 * For each instance the probability that ||o - o_hat|| exceeds the predicted epsilon must be at
 * most delta. The estimator's numerator and denominator must be unbiased. */
static void coverage_instance_h(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                                double delta, int kind, long trials, double *worst_frac,
                                int64_t pages);

static void coverage_instance(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                              double delta, int kind, long trials, double *worst_frac)
{
    coverage_instance_h(g, n, d, nh, m, delta, kind, trials, worst_frac, 0);
}

/* pages > 0: the heavy set is nh / pages whole pages of `pages` keys, those with the largest
 * maximum score (as page-sample's Quest pages: chosen without the sampled values) */
static void coverage_instance_h(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                                double delta, int kind, long trials, double *worst_frac,
                                int64_t pages)
{
    char err[AS_ERR_LEN];
    double *s = malloc((size_t)n * sizeof *s), *V = malloc((size_t)(n * d) * sizeof *V);
    for (int64_t i = 0; i < n; i++) {
        if (kind == 0) s[i] = gsl_ran_gaussian(g, 2.0);                  /* log-normal weights */
        else if (kind == 1) s[i] = -1.1 * log((double)(gsl_rng_uniform_int(g, (unsigned long)n) + 1)); /* Zipf-like */
        else s[i] = gsl_ran_gaussian(g, 0.5) + (i < 4 ? 6.0 : 0.0);      /* sinks */
        for (int64_t c = 0; c < d; c++) V[i * d + c] = gsl_ran_gaussian(g, 1.0) + (c == 0 ? 1.0 : 0.0);
    }
    int64_t *H = malloc((size_t)(nh + 1) * sizeof *H), *samp = malloc((size_t)n * sizeof *samp);
    if (pages > 0) {
        int64_t np = n / pages, want = nh / pages;
        double *pm = malloc((size_t)np * sizeof *pm);
        int64_t *pk = malloc((size_t)(want + 1) * sizeof *pk);
        for (int64_t q = 0; q < np; q++) {
            pm[q] = -INFINITY;
            for (int64_t i = q * pages; i < (q + 1) * pages; i++) pm[q] = fmax(pm[q], s[i]);
        }
        cr_assert_eq(as_select_topk(pm, np, want, pk, err), AS_OK);
        nh = 0;
        for (int64_t j = 0; j < want; j++)
            for (int64_t i = pk[j] * pages; i < (pk[j] + 1) * pages; i++) H[nh++] = i;
        as_select_sort_unique(H, nh);
        free(pm), free(pk);
    } else {
        cr_assert_eq(as_select_topk(s, n, nh, H, err), AS_OK);
    }
    as_sp_sstats st;
    cr_assert_eq(as_sp_sampling_stats(s, V, n, d, H, nh, &st, err), AS_OK);
    double eps = as_sp_sampling_eps(&st, m, delta);
    double *a = malloc((size_t)n * sizeof *a), *o = calloc((size_t)d, sizeof *o);
    memcpy(a, s, (size_t)n * sizeof *a);
    as_softmax_inplace(a, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) o[c] += a[i] * V[i * d + c];
    double *oh = malloc((size_t)d * sizeof *oh), *mean_num = calloc((size_t)d, sizeof *mean_num);
    double mean_den = 0;
    as_rng r;
    as_rng_seed(&r, gsl_rng_get(g));
    long exceed = 0;
    double w = (double)(n - nh) / (double)m;
    for (long t = 0; t < trials; t++) {
        int64_t got = as_select_sample(&r, n, H, nh, m, samp);
        cr_assert_eq(got, m);
        as_sp_estimate(s, V, n, d, H, nh, samp, m, oh);
        double e2 = 0;
        for (int64_t c = 0; c < d; c++) e2 += (oh[c] - o[c]) * (oh[c] - o[c]);
        exceed += sqrt(e2) > eps;
        double den = 0;
        for (int64_t j = 0; j < nh; j++) {
            den += a[H[j]];
            for (int64_t c = 0; c < d; c++) mean_num[c] += a[H[j]] * V[H[j] * d + c];
        }
        for (int64_t j = 0; j < m; j++) {
            den += w * a[samp[j]];
            for (int64_t c = 0; c < d; c++) mean_num[c] += w * a[samp[j]] * V[samp[j] * d + c];
        }
        mean_den += den;
    }
    double frac = (double)exceed / (double)trials;
    if (frac > *worst_frac) *worst_frac = frac;
    cr_assert(frac <= delta, "kind %d n %lld nh %lld m %lld: exceed %g > delta %g (eps %g)", kind,
              (long long)n, (long long)nh, (long long)m, frac, delta, eps);
    /* unbiased: |mean - truth| within 6 standard errors (sd from the population stats) */
    double se_den = sqrt((double)(n - nh) * (double)(n - nh) * st.var_e / (double)m / (double)trials);
    cr_assert(fabs(mean_den / trials - 1.0) <= 6 * se_den + 1e-12, "denominator biased");
    double dn = 0;
    for (int64_t c = 0; c < d; c++) dn += (mean_num[c] / trials - o[c]) * (mean_num[c] / trials - o[c]);
    /* numerator: its deviation norm is within a few of sqrt(E||.||^2 / trials) of the values
     * around o; use the (larger) spread of a (v - o) plus ||o|| a_j */
    double spread = 0;
    for (int64_t i = 0; i < n; i++) {
        double vn = 0;
        for (int64_t c = 0; c < d; c++) vn += V[i * d + c] * V[i * d + c];
        spread += a[i] * a[i] * vn;
    }
    spread = sqrt((double)(n - nh) * spread / (double)m / (double)trials);
    cr_assert(sqrt(dn) <= 8 * spread + 1e-12, "numerator biased: %g vs %g", sqrt(dn), spread);
    free(s), free(V), free(H), free(samp), free(a), free(o), free(oh), free(mean_num);
}

Test(sp_sampling, sampling_coverage_monte_carlo)
{
    gsl_rng *g = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(g, 20260523);
    double worst = 0;
    const double deltas[] = {0.05, 0.2};
    for (int kind = 0; kind < 3; kind++)
        for (int di = 0; di < 2; di++) {
            coverage_instance(g, 1500, 16, 0, 150, deltas[di], kind, 1500, &worst);   /* uniform */
            coverage_instance(g, 1500, 16, 30, 60, deltas[di], kind, 1500, &worst);   /* topk+sample */
            coverage_instance(g, 1500, 16, 100, 400, deltas[di], kind, 1500, &worst);
            coverage_instance_h(g, 1504, 16, 64, 100, deltas[di], kind, 1500, &worst, 16); /* pages */
        }
    fprintf(stderr, "sampling coverage: worst exceedance fraction %.4f\n", worst);
    gsl_rng_free(g);
}

Test(sp_sampling, binomial_tail_matches_gsl)
{
    const int64_t ns[] = {1, 10, 200, 5000};
    const double ps[] = {0.01, 0.05, 0.3};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 3; j++)
            for (int64_t x = 0; x <= ns[i]; x += (ns[i] > 50 ? ns[i] / 37 : 1)) {
                double want = x == 0 ? 1.0 : gsl_cdf_binomial_Q((unsigned)(x - 1), ps[j], (unsigned)ns[i]);
                double got = as_binom_tail(ns[i], x, ps[j]);
                cr_assert(fabs(got - want) <= 1e-9 * want + 1e-300, "n %lld x %lld p %g: %g vs %g",
                          (long long)ns[i], (long long)x, ps[j], got, want);
            }
}
#endif

/* ---- closed forms on a four-key example (runs without GSL) ----------------------------------
 * weights a = (0.4, 0.3, 0.2, 0.1), values v = (1, 2, 3, 4) (d = 1): o = 2; heavy set H = {0}:
 * P_H = 0.4, R = {1, 2, 3}, y_j = a_j (v_j - o) = (0, 0.2, 0.2), ybar = 0.4 / 3 = 2/15,
 * var_y = ((2/15)^2 + 2 (1/15)^2) / 3 = 2/225, max_y = 2/15, abar = 0.2, var_e = 0.02 / 3,
 * mass_rest = 0.6, dev_max = max |v - o| = 2. */
Test(sp_sampling, four_keys_by_hand)
{
    const double a[4] = {0.4, 0.3, 0.2, 0.1}, V[4] = {1, 2, 3, 4};
    double s[4];
    for (int i = 0; i < 4; i++) s[i] = log(a[i]) + 7.0; /* any shift */
    const int64_t H[1] = {0};
    as_sp_sstats st;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_sp_sampling_stats(s, V, 4, 1, H, 1, &st, err), AS_OK, "%s", err);
    cr_assert_eq(st.n_rest, 3);
    cr_assert_float_eq(st.p_heavy, 0.4, 1e-15);
    cr_assert_float_eq(st.mass_rest, 0.6, 1e-15);
    cr_assert_float_eq(st.var_y, 2.0 / 225.0, 1e-15);
    cr_assert_float_eq(st.max_y, 2.0 / 15.0, 1e-15);
    cr_assert_float_eq(st.var_e, 0.02 / 3.0, 1e-15);
    cr_assert_float_eq(st.dev_max, 2.0, 1e-14);
    /* epsilon: 0 once the sample exhausts R, the deterministic cap without samples; below the
     * cap and not increasing in m in between */
    cr_assert_eq(as_sp_sampling_eps(&st, 3, 0.05), 0.0);
    cr_assert_eq(as_sp_sampling_eps(&st, 0, 0.05), st.dev_max);
    double e1 = as_sp_sampling_eps(&st, 1, 0.05), e2 = as_sp_sampling_eps(&st, 2, 0.05);
    cr_assert(e1 > 0 && e1 <= st.dev_max && e2 > 0 && e2 <= e1, "eps %g %g", e1, e2);
    cr_assert_eq(as_sp_sampling_size(&st, 0.0, 0.05), 3);
    cr_assert_eq(as_sp_sampling_size(&st, st.dev_max, 0.05), 1);
    cr_assert_eq(as_sp_sampling_size(&st, e2, 0.05), e1 <= e2 ? 1 : 2);
    /* the estimator: the whole rest sampled (weight 1) is exact; one sample {3} of three has
     * weight 3: (0.4 * 1 + 3 * 0.1 * 4) / (0.4 + 3 * 0.1) = 1.6 / 0.7 */
    const int64_t all[3] = {1, 2, 3}, one[1] = {3};
    double oh;
    as_sp_estimate(s, V, 4, 1, H, 1, all, 3, &oh);
    cr_assert_float_eq(oh, 2.0, 1e-14);
    as_sp_estimate(s, V, 4, 1, H, 1, one, 1, &oh);
    cr_assert_float_eq(oh, 1.6 / 0.7, 1e-14);
    /* no heavy set: uniform sampling of all four; every key sampled is exact again */
    const int64_t four[4] = {0, 1, 2, 3};
    as_sp_estimate(s, V, 4, 1, NULL, 0, four, 4, &oh);
    cr_assert_float_eq(oh, 2.0, 1e-14);
    cr_assert_eq(as_sp_sampling_stats(s, V, 4, 1, H, 5, &st, err), AS_ERR_USAGE);
    /* binomial tail: P(Bin(4, 0.05) >= x) */
    cr_assert_eq(as_binom_tail(4, 0, 0.05), 1.0);
    cr_assert_float_eq(as_binom_tail(4, 1, 0.05), 1.0 - pow(0.95, 4), 1e-14);
    cr_assert_float_eq(as_binom_tail(4, 4, 0.05), pow(0.05, 4), 1e-20);
    cr_assert_float_eq(as_binom_tail(4, 3, 0.05), 4 * pow(0.05, 3) * 0.95 + pow(0.05, 4), 1e-18);
    cr_assert_eq(as_binom_tail(4, 5, 0.05), 0.0);
}
