/* Tests of analysis/as_select: PRNG, exact top-k, sampling without replacement, set helpers. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_select.h"
#include "as_testutil.h"

#ifdef AS_HAVE_GSL
#include <gsl/gsl_cdf.h>
#endif

Test(select, rng_deterministic_and_distinct_streams)
{
    as_rng a, b, c;
    as_rng_seed(&a, 42);
    as_rng_seed(&b, 42);
    as_rng_seed(&c, 43);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = as_rng_next(&a), y = as_rng_next(&b), z = as_rng_next(&c);
        cr_assert_eq(x, y);
        same_c += x == z;
    }
    cr_assert_eq(same_c, 0);
    cr_assert_neq(as_seed_mix(1, 2), as_seed_mix(2, 1));
    as_rng z;
    as_rng_seed(&z, 0); /* seed 0 must work */
    cr_assert_neq(as_rng_next(&z), 0);
}

Test(select, rng_uniform_moments_and_range)
{
    as_rng r;
    as_rng_seed(&r, 7);
    const int n = 200000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double u = as_rng_uniform(&r);
        cr_assert(u >= 0 && u < 1);
        s += u;
        s2 += u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    cr_assert(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12 / n), "mean %g", mean);
    cr_assert(fabs(var - 1.0 / 12) < 2e-3, "var %g", var);
    int cnt[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t k = as_rng_below(&r, 7);
        cr_assert(k < 7);
        cnt[k]++;
    }
    for (int k = 0; k < 7; k++) cr_assert(abs(cnt[k] - 10000) < 500, "bucket %d: %d", k, cnt[k]);
}

static const double *g_x;
static int cmp_desc(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    if (g_x[a] != g_x[b]) return g_x[a] > g_x[b] ? -1 : 1;
    return (a > b) - (a < b);
}
static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

Test(select, topk_matches_full_sort_with_ties)
{
    uint64_t st = 11;
    char err[AS_ERR_LEN];
    for (int trial = 0; trial < 60; trial++) {
        int64_t n = 1 + (int64_t)(as_test_uniform(&st) * 3000);
        double *x = malloc((size_t)n * sizeof *x);
        int ties = trial % 3;
        for (int64_t i = 0; i < n; i++)
            x[i] = ties == 0 ? as_test_normal(&st) : floor(as_test_uniform(&st) * (ties == 1 ? 10 : 2));
        int64_t *ord = malloc((size_t)n * sizeof *ord), *idx = malloc((size_t)n * sizeof *idx);
        for (int64_t i = 0; i < n; i++) ord[i] = i;
        g_x = x;
        qsort(ord, (size_t)n, sizeof *ord, cmp_desc);
        int64_t ks[] = {0, 1, n / 7, n / 2, n - 1, n};
        for (size_t u = 0; u < sizeof ks / sizeof ks[0]; u++) {
            int64_t k = ks[u];
            if (k < 0 || k > n) continue;
            cr_assert_eq(as_select_topk(x, n, k, idx, err), AS_OK);
            /* expected: first k of the (value desc, index asc) order, sorted by index */
            int64_t *exp = malloc((size_t)(k + 1) * sizeof *exp);
            memcpy(exp, ord, (size_t)k * sizeof *exp);
            qsort(exp, (size_t)k, sizeof *exp, cmp_i64);
            for (int64_t j = 0; j < k; j++)
                cr_assert_eq(idx[j], exp[j], "n=%lld k=%lld j=%lld", (long long)n, (long long)k,
                             (long long)j);
            if (k >= 1) cr_assert_eq(as_select_kth_largest(x, n, k, NULL), x[ord[k - 1]]);
            free(exp);
        }
        free(x), free(ord), free(idx);
    }
    cr_assert_eq(as_select_topk((double[]){1, 2}, 2, 3, (int64_t[3]){0}, err), AS_ERR_USAGE);
}

Test(select, sample_is_sorted_distinct_excludes_and_uniform)
{
    as_rng r;
    as_rng_seed(&r, 99);
    const int64_t n = 40, m = 7;
    int64_t ex[] = {0, 3, 4, 17, 39};
    const int64_t nex = 5;
    int64_t out[64];
    long cnt[40] = {0};
    const long draws = 60000;
    for (long t = 0; t < draws; t++) {
        int64_t got = as_select_sample(&r, n, ex, nex, m, out);
        cr_assert_eq(got, m);
        for (int64_t j = 0; j < got; j++) {
            cr_assert(out[j] >= 0 && out[j] < n);
            if (j) cr_assert(out[j] > out[j - 1]);
            for (int64_t e = 0; e < nex; e++) cr_assert_neq(out[j], ex[e]);
            cnt[out[j]]++;
        }
    }
    /* each eligible key is drawn with probability m / (n - nex) */
    double expct = (double)draws * (double)m / (double)(n - nex), chi2 = 0;
    int dof = 0;
    for (int64_t i = 0; i < n; i++) {
        int excluded = 0;
        for (int64_t e = 0; e < nex; e++) excluded |= ex[e] == i;
        if (excluded) {
            cr_assert_eq(cnt[i], 0);
            continue;
        }
        chi2 += (cnt[i] - expct) * (cnt[i] - expct) / expct;
        dof++;
    }
#ifdef AS_HAVE_GSL
    double p = gsl_cdf_chisq_Q(chi2, dof - 1);
    cr_assert(p > 1e-4, "chi2 %g dof %d p %g", chi2, dof - 1, p);
#else
    cr_assert(chi2 < 3.0 * dof, "chi2 %g", chi2);
#endif
    /* m larger than the pool: everything eligible */
    int64_t got = as_select_sample(&r, n, ex, nex, 1000, out);
    cr_assert_eq(got, n - nex);
    cr_assert_eq(as_select_sample(&r, n, ex, nex, 0, out), 0);
}

Test(select, pairs_are_uniform_too)
{
    /* all C(6,2) = 15 pairs equally likely: selection sampling is exactly uniform on subsets */
    as_rng r;
    as_rng_seed(&r, 5);
    long cnt[6][6] = {{0}};
    const long draws = 150000;
    int64_t out[2];
    for (long t = 0; t < draws; t++) {
        as_select_sample(&r, 6, NULL, 0, 2, out);
        cnt[out[0]][out[1]]++;
    }
    double e = draws / 15.0, chi2 = 0;
    for (int a = 0; a < 6; a++)
        for (int b = a + 1; b < 6; b++) chi2 += (cnt[a][b] - e) * (cnt[a][b] - e) / e;
#ifdef AS_HAVE_GSL
    cr_assert(gsl_cdf_chisq_Q(chi2, 14) > 1e-4, "chi2 %g", chi2);
#else
    cr_assert(chi2 < 45, "chi2 %g", chi2);
#endif
}

Test(select, sort_unique_and_merge)
{
    int64_t a[] = {5, 1, 5, 3, 1, 9};
    cr_assert_eq(as_select_sort_unique(a, 6), 4);
    int64_t want[] = {1, 3, 5, 9};
    for (int i = 0; i < 4; i++) cr_assert_eq(a[i], want[i]);
    int64_t x[] = {0, 4, 8}, y[] = {1, 2, 9, 10}, o[7];
    cr_assert_eq(as_select_merge(x, 3, y, 4, o), 7);
    int64_t w2[] = {0, 1, 2, 4, 8, 9, 10};
    for (int i = 0; i < 7; i++) cr_assert_eq(o[i], w2[i]);
    cr_assert_eq(as_select_sort_unique(a, 0), 0);
}
