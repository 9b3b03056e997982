/* Tests of data/as_dtype: names and sizes, f16/bf16 decoding checked exhaustively over all 65536
 * bit patterns against an independent ldexp formula, f32/f64 -> f16/bf16 rounding (nearest,
 * ties to even) against a brute-force nearest-value reference, integer and float conversions. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "as_dtype.h"
#include "as_testutil.h"

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

/* Independent decoders: value = (-1)^s * ldexp(significand, exponent). */
static double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}
static double ref_bf16(uint16_t h)
{
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

Test(dtype, names_sizes_parse)
{
    static const char *names[] = {"F64", "F32", "F16", "BF16", "I32", "I64"};
    static const size_t sizes[] = {8, 4, 2, 2, 4, 8};
    for (int i = 0; i < AS_DT_COUNT; i++) {
        as_dtype t;
        cr_assert_str_eq(as_dtype_name((as_dtype)i), names[i]);
        cr_assert_eq(as_dtype_size((as_dtype)i), sizes[i]);
        cr_assert_eq(as_dtype_parse(names[i], &t), 0);
        cr_assert_eq(t, (as_dtype)i);
        cr_assert_eq(as_dtype_is_float((as_dtype)i), i <= AS_DT_BF16);
    }
    as_dtype t = AS_DT_F32;
    static const char *bad[] = {"U8", "f32", "F8", "BOOL", "", "F32 ", "I16", "F8_E4M3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(as_dtype_parse(bad[i], &t), -1, "%s", bad[i]);
    cr_assert_eq(as_dtype_size(AS_DT_COUNT), 0);
    cr_assert_str_eq(as_dtype_name(AS_DT_COUNT), "?");
}

Test(dtype, f16_decode_exhaustive)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = as_f16_to_f32((uint16_t)h);
        double r = ref_f16((uint16_t)h);
        if (isnan(r)) {
            cr_assert(isnan(f), "0x%04x", h);
            /* sign and payload kept: f32 bits = sign | exp all ones | mantissa << 13 */
            cr_assert_eq(fbits(f), ((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13));
        } else {
            cr_assert_eq(fbits(f), fbits((float)r), "0x%04x: %a vs %a", h, (double)f, r);
        }
    }
}

Test(dtype, bf16_decode_exhaustive)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = as_bf16_to_f32((uint16_t)h);
        double r = ref_bf16((uint16_t)h);
        if (isnan(r))
            cr_assert(isnan(f) && fbits(f) == h << 16, "0x%04x", h);
        else
            cr_assert_eq(fbits(f), fbits((float)r), "0x%04x", h);
    }
}

Test(dtype, bulk_conversion_matches_scalar_unaligned)
{
    unsigned char *raw = malloc(2 * 65536 + 1);
    double *d = malloc(65536 * sizeof *d);
    float *f = malloc(65536 * sizeof *f);
    for (uint32_t h = 0; h < 65536; h++) { /* start at an odd address */
        raw[1 + 2 * h] = (unsigned char)h;
        raw[2 + 2 * h] = (unsigned char)(h >> 8);
    }
    for (int pass = 0; pass < 2; pass++) {
        as_dtype t = pass ? AS_DT_BF16 : AS_DT_F16;
        as_dtype_to_f64(t, raw + 1, 65536, d);
        as_dtype_to_f32(t, raw + 1, 65536, f);
        for (uint32_t h = 0; h < 65536; h++) {
            float s = pass ? as_bf16_to_f32((uint16_t)h) : as_f16_to_f32((uint16_t)h);
            double r = pass ? ref_bf16((uint16_t)h) : ref_f16((uint16_t)h);
            if (isnan(r)) {
                cr_assert(isnan(d[h]) && isnan(f[h]));
                continue;
            }
            cr_assert_eq(fbits(f[h]), fbits(s));
            cr_assert_eq(dbits(d[h]), dbits(r), "%s 0x%04x", pass ? "bf16" : "f16", h);
        }
    }
    free(raw);
    free(d);
    free(f);
}

/* Brute-force nearest representable value for a positive finite-or-inf x, ties to even:
 * vals[0..count) ascending, vals[count] = the value at which rounding overflows to infinity
 * (2^16 for f16), encoded by inf_code. Codes are the indices (positive half codes ascend). */
static uint16_t ref_round(double a, const double *vals, uint32_t count, uint16_t inf_code)
{
    if (a >= vals[count]) return inf_code;
    uint32_t lo = 0, hi = count; /* largest i with vals[i] <= a */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (vals[mid] <= a) lo = mid;
        else hi = mid;
    }
    double dl = a - vals[lo], du = vals[lo + 1] - a; /* exact: both are in f64 */
    if (dl < du) return (uint16_t)lo;
    if (du < dl) return lo + 1 == count ? inf_code : (uint16_t)(lo + 1);
    uint32_t even = (lo & 1) ? lo + 1 : lo;
    return even == count ? inf_code : (uint16_t)even;
}

static double f16_vals[0x7c01], bf16_vals[0x7f81];
static void tables(void)
{
    for (uint32_t h = 0; h < 0x7c00; h++) f16_vals[h] = ref_f16((uint16_t)h);
    f16_vals[0x7c00] = 65536.0; /* 2^16: where the next binade would start */
    for (uint32_t h = 0; h < 0x7f80; h++) bf16_vals[h] = ref_bf16((uint16_t)h);
    bf16_vals[0x7f80] = ldexp(1.0, 128);
}

static uint16_t ref_to_f16(double x)
{
    uint16_t s = signbit(x) ? 0x8000 : 0;
    return s | ref_round(fabs(x), f16_vals, 0x7c00, 0x7c00);
}
static uint16_t ref_to_bf16(double x)
{
    uint16_t s = signbit(x) ? 0x8000 : 0;
    return s | ref_round(fabs(x), bf16_vals, 0x7f80, 0x7f80);
}

static uint16_t from_f64(as_dtype t, double x)
{
    unsigned char b[2];
    as_dtype_from_f64(t, &x, 1, b);
    return (uint16_t)(b[0] | (b[1] << 8));
}

Test(dtype, f16_round_trip_ties_and_neighbours, .init = tables)
{
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaN: separate test */
        float f = as_f16_to_f32((uint16_t)h);
        cr_assert_eq(as_f32_to_f16(f), h, "round trip 0x%04x", h);
        cr_assert_eq(from_f64(AS_DT_F16, f), h);
    }
    /* every midpoint between neighbouring halves (incl. 65504 | 65536 -> inf) and the floats
     * and doubles just either side of it */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double mid = (f16_vals[h] + f16_vals[h + 1]) / 2; /* exact */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        for (int s = 0; s < 2; s++) {
            double m = s ? -mid : mid;
            uint16_t sg = s ? 0x8000 : 0;
            cr_assert_eq(as_f32_to_f16((float)m), sg | even, "tie after 0x%04x", h);
            cr_assert_eq(from_f64(AS_DT_F16, m), sg | even);
            float below = nextafterf((float)m, 0), above = nextafterf((float)m, s ? -INFINITY : INFINITY);
            cr_assert_eq(as_f32_to_f16(below), sg | h, "below tie after 0x%04x", h);
            cr_assert_eq(as_f32_to_f16(above), sg | (h + 1), "above tie after 0x%04x", h);
            cr_assert_eq(from_f64(AS_DT_F16, nextafter(m, 0)), sg | h);
            cr_assert_eq(from_f64(AS_DT_F16, nextafter(m, s ? -INFINITY : INFINITY)),
                         sg | (h + 1));
        }
    }
    cr_assert_eq(as_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(as_f32_to_f16(-INFINITY), 0xfc00);
    cr_assert_eq(as_f32_to_f16(FLT_MAX), 0x7c00);
    cr_assert_eq(as_f32_to_f16(65519.996f), 0x7bff);
    cr_assert_eq(as_f32_to_f16(0x1p-25f), 0x0000);                /* tie with 0 -> even 0 */
    cr_assert_eq(as_f32_to_f16(nextafterf(0x1p-25f, 1)), 0x0001); /* just above */
    cr_assert_eq(as_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(as_f32_to_f16(FLT_TRUE_MIN), 0x0000);
}

Test(dtype, bf16_round_trip_ties_and_neighbours, .init = tables)
{
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80u) == 0x7f80u && (h & 0x7fu)) continue;
        float f = as_bf16_to_f32((uint16_t)h);
        cr_assert_eq(as_f32_to_bf16(f), h, "round trip 0x%04x", h);
        cr_assert_eq(from_f64(AS_DT_BF16, f), h);
    }
    for (uint32_t h = 0; h < 0x7f80; h++) {
        double mid = (bf16_vals[h] + bf16_vals[h + 1]) / 2;
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        for (int s = 0; s < 2; s++) {
            double m = s ? -mid : mid;
            uint16_t sg = s ? 0x8000 : 0;
            if (h < 0x7f7f) { /* the last midpoint (2^128 - 2^119) is not a float */
                cr_assert_eq(as_f32_to_bf16((float)m), sg | even, "tie after 0x%04x", h);
                float below = nextafterf((float)m, 0),
                      above = nextafterf((float)m, s ? -INFINITY : INFINITY);
                cr_assert_eq(as_f32_to_bf16(below), sg | h);
                cr_assert_eq(as_f32_to_bf16(above), sg | (h + 1));
            }
            cr_assert_eq(from_f64(AS_DT_BF16, m), sg | even, "f64 tie after 0x%04x", h);
            cr_assert_eq(from_f64(AS_DT_BF16, nextafter(m, 0)), sg | h);
            cr_assert_eq(from_f64(AS_DT_BF16, nextafter(m, s ? -INFINITY : INFINITY)),
                         sg | (h + 1));
        }
    }
    cr_assert_eq(as_f32_to_bf16(FLT_MAX), 0x7f80); /* rounds up past the largest bf16 */
    cr_assert_eq(as_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(from_f64(AS_DT_BF16, 1e300), 0x7f80);
    cr_assert_eq(from_f64(AS_DT_BF16, -1e300), 0xff80);
    cr_assert_eq(from_f64(AS_DT_BF16, 1e-300), 0x0000);
}

Test(dtype, random_values_against_nearest_reference, .init = tables)
{
    uint64_t st = 12345;
    for (int i = 0; i < 2000000; i++) {
        uint64_t r = (uint64_t)(as_test_uniform(&st) * 0x1p53) ^ ((uint64_t)i << 40);
        /* floats with exponents from well below the subnormals to past the maxima */
        uint32_t fb = (uint32_t)(r & 0x807fffffu) | ((uint32_t)(0x50 + (r >> 32) % 0x60) << 23);
        float f = bitsf(fb);
        cr_assert_eq(as_f32_to_f16(f), ref_to_f16(f), "f16 of %a", (double)f);
        uint32_t gb = (uint32_t)r ^ (uint32_t)(r >> 29);
        float g = bitsf(gb);
        if (!isnan(g)) cr_assert_eq(as_f32_to_bf16(g), ref_to_bf16(g), "bf16 of %a", (double)g);
        /* doubles with low mantissa bits set: these are where rounding through float fails */
        double x = ldexp(1.0 + as_test_uniform(&st), -30 + (int)(r % 50)) * ((r >> 7) & 1 ? -1 : 1);
        cr_assert_eq(from_f64(AS_DT_F16, x), ref_to_f16(x), "f16 of %a", x);
        double y = ldexp(1.0 + as_test_uniform(&st), -140 + (int)(r % 270));
        cr_assert_eq(from_f64(AS_DT_BF16, y), ref_to_bf16(y), "bf16 of %a", y);
    }
}

/* Regression: converting f64 -> f16/bf16 through float rounded twice. */
Test(dtype, f64_conversion_rounds_once, .init = tables)
{
    double x = 1.0 + 0x1p-11 + 0x1p-40; /* just above the f16 tie between 1 and 1 + 2^-10 */
    cr_assert_eq(from_f64(AS_DT_F16, x), 0x3c01);
    cr_assert_eq(from_f64(AS_DT_F16, -x), 0xbc01);
    double y = 1.0 + 0x1p-8 + 0x1p-40; /* just above the bf16 tie between 1 and 1 + 2^-7 */
    cr_assert_eq(from_f64(AS_DT_BF16, y), 0x3f81);
    double z = 0x1p-25 + 0x1p-60; /* just above the tie between 0 and the smallest subnormal */
    cr_assert_eq(from_f64(AS_DT_F16, z), 0x0001);
}

Test(dtype, nan_stays_nan_with_sign)
{
    float qn = NAN, sn = bitsf(0x7f800001u), nsn = bitsf(0xff800001u);
    uint16_t h = as_f32_to_f16(qn);
    cr_assert((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
    h = as_f32_to_f16(sn); /* the payload would be lost by a plain shift: must not become inf */
    cr_assert((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
    h = as_f32_to_bf16(sn);
    cr_assert((h & 0x7f80) == 0x7f80 && (h & 0x7f), "0x%04x", h);
    h = as_f32_to_bf16(nsn);
    cr_assert((h & 0xff80) == 0xff80 && (h & 0x7f));
    for (int t = AS_DT_F16; t <= AS_DT_BF16; t++) {
        uint16_t b = from_f64((as_dtype)t, -NAN);
        double back;
        as_dtype_to_f64((as_dtype)t, &b, 1, &back);
        cr_assert(isnan(back) && signbit(back));
    }
}

Test(dtype, float_and_int_round_trips)
{
    const double xs[] = {0.0, -0.0, 1.0, -2.5, 0x1p-1074, DBL_MAX, -DBL_MIN, INFINITY,
                         -INFINITY, 3.141592653589793, 1e-310, 0x1.fffffffffffffp-1};
    const size_t n = sizeof xs / sizeof *xs;
    unsigned char b[8 * 16];
    double back[16];
    as_dtype_from_f64(AS_DT_F64, xs, n, b);
    as_dtype_to_f64(AS_DT_F64, b, n, back);
    for (size_t i = 0; i < n; i++) cr_assert_eq(dbits(back[i]), dbits(xs[i]));
    cr_assert_eq(b[2 * 8 + 7], 0x3f); /* xs[2] = 1.0, little-endian: last byte 0x3f */
    as_dtype_from_f64(AS_DT_F32, xs, n, b);
    as_dtype_to_f64(AS_DT_F32, b, n, back);
    for (size_t i = 0; i < n; i++) cr_assert_eq(dbits(back[i]), dbits((double)(float)xs[i]));
    float fb[16];
    as_dtype_to_f32(AS_DT_F64, (as_dtype_from_f64(AS_DT_F64, xs, n, b), b), n, fb);
    for (size_t i = 0; i < n; i++) cr_assert_eq(fbits(fb[i]), fbits((float)xs[i]));

    const double is[] = {0, -1, 2147483647.0, -2147483648.0, 2.5, -2.5, 7.49, 1e6};
    const int32_t i32[] = {0, -1, INT32_MAX, INT32_MIN, 3, -3, 7, 1000000};
    as_dtype_from_f64(AS_DT_I32, is, 8, b);
    as_dtype_to_f64(AS_DT_I32, b, 8, back);
    for (int i = 0; i < 8; i++) {
        int32_t v;
        memcpy(&v, b + 4 * i, 4); /* little-endian host */
        cr_assert_eq(v, i32[i]);
        cr_assert_eq(back[i], (double)i32[i]);
    }
    const double ls[] = {0x1p53, -0x1p62, -1, 123456789012.0};
    as_dtype_from_f64(AS_DT_I64, ls, 4, b);
    as_dtype_to_f64(AS_DT_I64, b, 4, back);
    for (int i = 0; i < 4; i++) cr_assert_eq(back[i], ls[i]);
    unsigned char m1[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    as_dtype_to_f64(AS_DT_I64, m1, 1, back);
    cr_assert_eq(back[0], 0x1p63); /* INT64_MAX rounds to 2^63 in double */
    float ff;
    unsigned char m2[4] = {0, 0, 0, 0x80};
    as_dtype_to_f32(AS_DT_I32, m2, 1, &ff);
    cr_assert_eq(ff, -2147483648.0f);
}
