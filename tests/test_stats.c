/* Tests of analysis/as_stats: the per-head aggregates against values computed by hand with
 * NumPy's default quantile (linear interpolation, Hyndman & Fan definition 7): np.quantile(
 * [1, 2, 3, 4, 10], [0.1, 0.25, 0.5, 0.75, 0.9]) = [1.4, 2, 3, 4, 7.6]; non-finite values
 * skipped, strides, the empty case. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "as_stats.h"

Test(stats, numpy_quantiles_and_nonfinite)
{
    /* stride 2: the odd slots hold noise that must not be read */
    const double x[14] = {10, -99, NAN, -99, 3, -99, 1, -99, INFINITY, -99, 4, -99, 2, -99};
    as_stats s;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_stats_compute(x, 7, 2, &s, err), AS_OK);
    cr_assert_eq(s.count, 5);
    const double want[AS_STATS_N] = {4.0, 1.0, 1.4, 2.0, 3.0, 4.0, 7.6, 10.0};
    for (int i = 0; i < AS_STATS_N; i++)
        cr_assert_float_eq(s.v[i], want[i], 1e-14, "%s: %g", as_stats_names[i], s.v[i]);
    cr_assert_str_eq(as_stats_names[0], "mean");
    cr_assert_str_eq(as_stats_names[4], "median");
    cr_assert_str_eq(as_stats_names[AS_STATS_N - 1], "max");
}

Test(stats, empty_and_single)
{
    const double nan3[3] = {NAN, NAN, -INFINITY};
    as_stats s;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_stats_compute(nan3, 3, 1, &s, err), AS_OK);
    cr_assert_eq(s.count, 0);
    for (int i = 0; i < AS_STATS_N; i++) cr_assert(isnan(s.v[i]));
    cr_assert_eq(as_stats_compute(nan3, 0, 1, &s, err), AS_OK);
    cr_assert_eq(s.count, 0);
    const double one = 2.5;
    cr_assert_eq(as_stats_compute(&one, 1, 1, &s, err), AS_OK);
    for (int i = 0; i < AS_STATS_N; i++) cr_assert_eq(s.v[i], 2.5);
}

Test(stats, quantile_sorted)
{
    const double y[4] = {0, 1, 2, 4};
    cr_assert_float_eq(as_quantile_sorted(y, 4, 0.5), 1.5, 1e-15);
    cr_assert_float_eq(as_quantile_sorted(y, 4, 1.0 / 3.0), 1.0, 1e-15);
    cr_assert_float_eq(as_quantile_sorted(y, 4, 0.9), 3.4, 1e-14);
    cr_assert_eq(as_quantile_sorted(y, 4, 0.0), 0.0);
    cr_assert_eq(as_quantile_sorted(y, 4, 1.0), 4.0);
    cr_assert_eq(as_quantile_sorted(y, 1, 0.7), 0.0);
}
