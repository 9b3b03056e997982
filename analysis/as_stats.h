/* as_stats: aggregates of per-query quantities over a head (mean, min, max, quantiles), the
 * summaries `attnscope entropy` and `attnscope bottleneck` print per head.
 *
 * Only finite values count (NaN/Inf are skipped); with none, every field is NaN and count 0.
 * Quantiles interpolate linearly between order statistics (Hyndman & Fan 1996, definition 7,
 * NumPy's default `np.quantile(x, q)`), so the NumPy cross-check reproduces them exactly. */
#ifndef AS_STATS_H
#define AS_STATS_H

#include <stdint.h>

#include "as_error.h"

#define AS_STATS_N 8 /* mean, min, q10, q25, median, q75, q90, max */

typedef struct {
    int64_t count; /* finite values used */
    double v[AS_STATS_N];
} as_stats;

/* Names of the statistics in v[] order: "mean", "min", "q10", "q25", "median", "q75", "q90",
 * "max" (the `stat` field of aggregate records). */
extern const char *const as_stats_names[AS_STATS_N];

/* Aggregate x[0..n) with element stride `stride` (1: contiguous). Allocates a scratch copy. */
as_status as_stats_compute(const double *x, int64_t n, int64_t stride, as_stats *s, char *err);

/* Quantile q in [0, 1] of sorted (ascending) finite values y[0..n), linear interpolation. */
double as_quantile_sorted(const double *y, int64_t n, double q);

#endif
