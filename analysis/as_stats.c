#include "as_stats.h"

#include <math.h>
#include <stdlib.h>

const char *const as_stats_names[AS_STATS_N] = {"mean", "min",  "q10", "q25",
                                                "median", "q75", "q90", "max"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double as_quantile_sorted(const double *y, int64_t n, double q)
{
    if (n <= 0) return NAN;
    double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    if (lo >= n - 1) return y[n - 1];
    if (lo < 0) return y[0];
    double f = pos - (double)lo;
    /* NumPy's _lerp: a + (b - a) * f, and b - (b - a) * (1 - f) when f >= 0.5 */
    double a = y[lo], b = y[lo + 1], diff = b - a;
    return f >= 0.5 ? b - diff * (1.0 - f) : a + diff * f;
}

as_status as_stats_compute(const double *x, int64_t n, int64_t stride, as_stats *s, char *err)
{
    s->count = 0;
    for (int i = 0; i < AS_STATS_N; i++) s->v[i] = NAN;
    if (n <= 0) return AS_OK;
    double *y = malloc((size_t)n * sizeof *y);
    if (!y) return as_err_set(err, AS_ERR_NOMEM, "statistics: out of memory");
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i * stride];
        if (isfinite(v)) y[m++] = v;
    }
    if (m > 0) {
        qsort(y, (size_t)m, sizeof *y, cmp_double);
        double sum = 0.0;
        for (int64_t i = 0; i < m; i++) sum += y[i];
        static const double qs[AS_STATS_N] = {0, 0, 0.10, 0.25, 0.50, 0.75, 0.90, 1.0};
        s->v[0] = sum / (double)m;
        for (int i = 1; i < AS_STATS_N; i++) s->v[i] = as_quantile_sorted(y, m, qs[i]);
        s->count = m;
    }
    free(y);
    return AS_OK;
}
