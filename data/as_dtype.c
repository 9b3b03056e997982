#include "as_dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[AS_DT_COUNT] = {
    [AS_DT_F64] = {"F64", 8}, [AS_DT_F32] = {"F32", 4}, [AS_DT_F16] = {"F16", 2},
    [AS_DT_BF16] = {"BF16", 2}, [AS_DT_I32] = {"I32", 4}, [AS_DT_I64] = {"I64", 8},
};

size_t as_dtype_size(as_dtype t) { return (unsigned)t < AS_DT_COUNT ? dtype_info[t].size : 0; }
const char *as_dtype_name(as_dtype t)
{
    return (unsigned)t < AS_DT_COUNT ? dtype_info[t].name : "?";
}

int as_dtype_parse(const char *s, as_dtype *out)
{
    for (int i = 0; i < AS_DT_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (as_dtype)i;
            return 0;
        }
    return -1;
}

int as_dtype_is_float(as_dtype t) { return t <= AS_DT_BF16; }

float as_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: value = man * 2^-24, exact in float */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* inline in the conversion loops: through the shared library's PLT the call cost more than the
 * conversion (a third of `attnscope report` on a BF16 trace) */
static inline float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float as_bf16_to_f32(uint16_t h) { return bf16_to_f32(h); }

uint16_t as_f32_to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40); /* quiet nan */
    b += 0x7fffu + ((b >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(b >> 16);
}

uint16_t as_f32_to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    uint32_t a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;        /* nan */
    if (a >= 0x477ff000u) return sign | 0x7c00u;       /* overflow (incl. rounding) -> inf */
    if (a < 0x38800000u) {                             /* subnormal or zero in half */
        float mag;
        memcpy(&mag, &a, 4);
        /* value / 2^-24, rounded to nearest even by the FPU's default mode */
        float m = nearbyintf(mag * 0x1p24f);
        return sign | (uint16_t)m;
    }
    uint32_t e = (a >> 23) - 112, man = a & 0x7fffffu;
    uint32_t h = (e << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return sign | (uint16_t)h;
}

/* double -> half / bfloat16 in one rounding step. Going through float first would round
 * twice: 1 + 2^-11 + 2^-40 becomes the float 1 + 2^-11, a tie that then rounds to 1 instead
 * of the correctly rounded 1 + 2^-10. */
static uint16_t f64_to_half_bits(double x, int man_bits, int bias, double overflow,
                                 double min_normal, double sub_scale, uint16_t nan, int sign_shift)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    uint16_t sign = (uint16_t)((u >> 63) << sign_shift);
    double a = fabs(x);
    if (isnan(x)) return sign | nan;
    uint16_t inf = (uint16_t)(((1u << (15 - man_bits)) - 1u) << man_bits);
    if (a >= overflow) return sign | inf; /* incl. values that round up to infinity */
    if (a < min_normal) return sign | (uint16_t)nearbyint(a * sub_scale); /* exact scaling */
    int e = (int)((u >> 52) & 0x7ff) - 1023;
    uint64_t man = u & 0xfffffffffffffull;
    int drop = 52 - man_bits;
    uint32_t h = ((uint32_t)(e + bias) << man_bits) | (uint32_t)(man >> drop);
    uint64_t rest = man & ((1ull << drop) - 1), half = 1ull << (drop - 1);
    if (rest > half || (rest == half && (h & 1u))) h++; /* a carry moves into the exponent */
    return sign | (uint16_t)h;
}

static uint16_t f64_to_f16(double x)
{
    /* max half 65504; 65520 is the tie with 2^16 and rounds (to even) to infinity */
    return f64_to_half_bits(x, 10, 15, 65520.0, 0x1p-14, 0x1p24, 0x7e00u, 15);
}

static uint16_t f64_to_bf16(double x)
{
    if (isnan(x)) return as_f32_to_bf16((float)x); /* keeps the sign, quiets */
    return f64_to_half_bits(x, 7, 127, 0x1.ffp127, 0x1p-126, 0x1p133, 0x7fc0u, 15);
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

#define CONVERT_LOOP(T)                                                                      \
    do {                                                                                     \
        switch (t) {                                                                         \
        case AS_DT_F64:                                                                      \
            for (size_t i = 0; i < count; i++) {                                             \
                uint64_t u = rd64(s + 8 * i);                                                \
                double x;                                                                    \
                memcpy(&x, &u, 8);                                                           \
                dst[i] = (T)x;                                                               \
            }                                                                                \
            break;                                                                           \
        case AS_DT_F32:                                                                      \
            for (size_t i = 0; i < count; i++) {                                             \
                uint32_t u = rd32(s + 4 * i);                                                \
                float x;                                                                     \
                memcpy(&x, &u, 4);                                                           \
                dst[i] = (T)x;                                                               \
            }                                                                                \
            break;                                                                           \
        case AS_DT_F16:                                                                      \
            for (size_t i = 0; i < count; i++) dst[i] = (T)as_f16_to_f32(rd16(s + 2 * i));   \
            break;                                                                           \
        case AS_DT_BF16:                                                                     \
            for (size_t i = 0; i < count; i++) dst[i] = (T)bf16_to_f32(rd16(s + 2 * i));     \
            break;                                                                           \
        case AS_DT_I32:                                                                      \
            for (size_t i = 0; i < count; i++) dst[i] = (T)(int32_t)rd32(s + 4 * i);         \
            break;                                                                           \
        case AS_DT_I64:                                                                      \
            for (size_t i = 0; i < count; i++) dst[i] = (T)(int64_t)rd64(s + 8 * i);         \
            break;                                                                           \
        default: break;                                                                      \
        }                                                                                    \
    } while (0)

void as_dtype_to_f64(as_dtype t, const void *src, size_t count, double *dst)
{
    const unsigned char *s = src;
    CONVERT_LOOP(double);
}

void as_dtype_to_f32(as_dtype t, const void *src, size_t count, float *dst)
{
    const unsigned char *s = src;
    CONVERT_LOOP(float);
}

static void wr(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

void as_dtype_from_f64(as_dtype t, const double *src, size_t count, void *dst)
{
    unsigned char *d = dst;
    for (size_t i = 0; i < count; i++) {
        double x = src[i];
        switch (t) {
        case AS_DT_F64: {
            uint64_t u;
            memcpy(&u, &x, 8);
            wr(d + 8 * i, u, 8);
        } break;
        case AS_DT_F32: {
            float f = (float)x;
            uint32_t u;
            memcpy(&u, &f, 4);
            wr(d + 4 * i, u, 4);
        } break;
        case AS_DT_F16: wr(d + 2 * i, f64_to_f16(x), 2); break;
        case AS_DT_BF16: wr(d + 2 * i, f64_to_bf16(x), 2); break;
        case AS_DT_I32: wr(d + 4 * i, (uint32_t)(int32_t)llround(x), 4); break;
        case AS_DT_I64: wr(d + 8 * i, (uint64_t)(int64_t)llround(x), 8); break;
        default: break;
        }
    }
}
