/* as_npy: strict parser for NumPy .npy files (format versions 1.0, 2.0, 3.0).
 * Accepts little-endian (or byte-order-free) C-order arrays of f8, f4, f2, i4, i8 and
 * bfloat16 stored as '<V2' is not supported (NumPy has no bf16); refuses big-endian and
 * Fortran-order arrays with a clear message. */
#ifndef AS_NPY_H
#define AS_NPY_H

#include <stddef.h>

#include "as_safetensors.h"

/* Parse buf[0..len) as one .npy array; fills t (t->name is set to NULL; data points into buf). */
as_status as_npy_parse(const unsigned char *buf, size_t len, as_tensor *t, char *err);

/* Write one array atomically as .npy version 1.0 (or 2.0 if the header needs it). */
as_status as_npy_write(const char *path, as_dtype dtype, int ndim, const int64_t *shape,
                       const void *data, char *err);

#endif
