/* fuzz_lp.h: the input decoding and the checks of the TV witness harness (fuzz_lp.c), shared
 * with test_bottleneck, which replays the regression inputs (tests/data/fuzz/lp/) in every
 * build. See fuzz_lp.c for the input layout. */
#ifndef AS_FUZZ_LP_H
#define AS_FUZZ_LP_H
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_bottleneck.h"
#include "as_dtype.h"

#ifndef CHECK
#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c)) __builtin_trap();                                                          \
    } while (0)
#endif

/* Decode one input and run the witness; returns 1 when the input made an LP, 0 when too short.
 * Any failed check traps. */
static int fuzz_lp_one(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    static const as_dtype dts[] = {AS_DT_F64, AS_DT_F32, AS_DT_F16, AS_DT_BF16};
    as_dtype dt = dts[data[0] & 3];
    int peaked = (data[0] >> 2) & 1;
    int64_t d = 1 + data[1] % 12;
    size_t isz = as_dtype_size(dt);
    int shift = (int)(int8_t)data[3] * 5;
    const uint8_t *p = data + 4;
    size_t rest = size - 4;
    int64_t n = (int64_t)(rest / ((size_t)(d + 1) * isz));
    if (n > 160) n = 160;
    if (n < 1) return 0;
    int64_t keys = data[2] == 0 ? 0 : 1 + data[2] % n;
    double *V = malloc((size_t)(n * d) * sizeof *V), *a = malloc((size_t)n * sizeof *a);
    double *ap = malloc((size_t)n * sizeof *ap);
    if (!V || !a || !ap) abort();
    for (int64_t i = 0; i < n; i++) {
        as_dtype_to_f64(dt, p + (size_t)(i * (d + 1)) * isz, (size_t)d, V + i * d);
        as_dtype_to_f64(dt, p + (size_t)(i * (d + 1) + d) * isz, 1, a + i);
    }
    for (int64_t i = 0; i < n * d; i++) {
        double v = isfinite(V[i]) ? ldexp(V[i], shift) : 0.0;
        if (isinf(v)) v = copysign(DBL_MAX, v);
        V[i] = v;
    }
    double amax = 0.0;
    for (int64_t i = 0; i < n; i++) {
        a[i] = isfinite(a[i]) ? fabs(a[i]) : 0.0;
        if (peaked && i >= 3) a[i] *= 0x1p-60;
        amax = fmax(amax, a[i]);
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += amax > 0 ? a[i] / amax : 1.0;
    for (int64_t i = 0; i < n; i++) a[i] = (amax > 0 ? a[i] / amax : 1.0) / s;
    char err[AS_ERR_LEN];
    err[0] = '\0';
    double tv = -1, res = -1;
    as_status st = as_bn_witness(V, a, n, d, keys, &tv, ap, &res, err);
    CHECK(st == AS_OK || st == AS_ERR_VALUE);
    if (st != AS_OK) {
        CHECK(err[0] && !strchr(err, '\n'));
    } else {
        CHECK(tv >= 0 && tv <= 1 + 1e-9);
        double sum = 0, l1 = 0;
        for (int64_t i = 0; i < n; i++) {
            CHECK(ap[i] >= 0 && isfinite(ap[i]));
            sum += ap[i];
            l1 += fabs(ap[i] - a[i]);
        }
        CHECK(fabs(sum - 1) <= 1e-6);
        CHECK(fabs(0.5 * l1 - tv) <= 1e-9);
        CHECK(!isnan(res) && res >= 0);
    }
    free(V), free(a), free(ap);
    return 1;
}

#endif
