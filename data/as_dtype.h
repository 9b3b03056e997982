/* as_dtype: element types of trace tensors and their conversion to float/double.
 * Stored data is little-endian; conversions read unaligned bytes safely. */
#ifndef AS_DTYPE_H
#define AS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    AS_DT_F64 = 0,
    AS_DT_F32,
    AS_DT_F16,
    AS_DT_BF16,
    AS_DT_I32,
    AS_DT_I64,
    AS_DT_COUNT
} as_dtype;

/* Bytes per element. */
size_t as_dtype_size(as_dtype t);
/* safetensors spelling: "F64", "F32", "F16", "BF16", "I32", "I64". */
const char *as_dtype_name(as_dtype t);
/* Parse a safetensors dtype string; returns 0 and sets *out, or -1 if unknown. */
int as_dtype_parse(const char *s, as_dtype *out);
/* 1 for F64/F32/F16/BF16. */
int as_dtype_is_float(as_dtype t);

/* Convert count elements starting at src (raw little-endian bytes of type t) to double/float.
 * Integer types convert exactly where representable. */
void as_dtype_to_f64(as_dtype t, const void *src, size_t count, double *dst);
void as_dtype_to_f32(as_dtype t, const void *src, size_t count, float *dst);
/* Convert doubles to raw little-endian bytes of type t (round to nearest even for f16/bf16). */
void as_dtype_from_f64(as_dtype t, const double *src, size_t count, void *dst);

/* Scalar half-precision helpers (IEEE binary16, bfloat16). */
float as_f16_to_f32(uint16_t h);
float as_bf16_to_f32(uint16_t h);
uint16_t as_f32_to_f16(float f);
uint16_t as_f32_to_bf16(float f);

#endif
