/* libFuzzer harness for the .npy parser (as_npy_parse). On success the tensor must lie inside
 * the buffer, end exactly at its end and hold numel x item size bytes; its values are read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_npy.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c)) __builtin_trap();                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    as_tensor t;
    char err[AS_ERR_LEN];
    err[0] = '\0';
    as_status st = as_npy_parse(buf, size, &t, err);
    if (st != AS_OK) {
        CHECK(st == AS_ERR_FORMAT);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        free(buf);
        return 0;
    }
    CHECK(t.ndim >= 0 && t.ndim <= AS_MAX_DIMS);
    uint64_t numel = 1;
    for (int k = 0; k < t.ndim; k++) {
        CHECK(t.shape[k] >= 0);
        numel *= (uint64_t)t.shape[k];
    }
    CHECK(numel == t.numel);
    CHECK(t.nbytes == t.numel * as_dtype_size(t.dtype));
    CHECK(t.data >= buf + 10 && t.data + t.nbytes == buf + size);
    double v[64];
    size_t isz = as_dtype_size(t.dtype);
    for (uint64_t j = 0; j < t.numel; j += 64) {
        size_t cnt = t.numel - j < 64 ? (size_t)(t.numel - j) : 64;
        as_dtype_to_f64(t.dtype, t.data + j * isz, cnt, v);
    }
    free(buf);
    return 0;
}
