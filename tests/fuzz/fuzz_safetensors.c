/* libFuzzer harness for the safetensors parser (as_st_parse).
 * On success the parser's promises are checked: every tensor lies inside the buffer, its byte
 * count is numel x item size, and sorted by offset the tensors tile the data area. Every value
 * is then converted (as the readers do), so a bad range would be caught by ASan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_safetensors.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c)) __builtin_trap();                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copy into an exact-size heap block so ASan sees every read past the end */
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    as_st_file f;
    char err[AS_ERR_LEN];
    err[0] = '\0';
    as_status st = as_st_parse(buf, size, &f, err);
    if (st != AS_OK) {
        CHECK(st == AS_ERR_FORMAT || st == AS_ERR_NOMEM);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        CHECK(f.n_tensors == 0 && f.tensors == NULL && f.meta == NULL);
        free(buf);
        return 0;
    }
    const unsigned char *end = buf + size, *prev_end = NULL;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const as_tensor *t = &f.tensors[i];
        CHECK(t->name != NULL);
        CHECK(t->ndim >= 0 && t->ndim <= AS_MAX_DIMS);
        uint64_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            CHECK(t->shape[k] >= 0);
            numel *= (uint64_t)t->shape[k];
        }
        CHECK(numel == t->numel);
        CHECK(t->nbytes == t->numel * as_dtype_size(t->dtype));
        CHECK(t->data >= buf + 8 && t->data <= end && t->nbytes <= (uint64_t)(end - t->data));
        if (prev_end) CHECK(t->data == prev_end);
        prev_end = t->data + t->nbytes;
        CHECK(as_st_find(&f, t->name) != NULL);
        double v[64];
        size_t isz = as_dtype_size(t->dtype);
        for (uint64_t j = 0; j < t->numel; j += 64) {
            size_t cnt = t->numel - j < 64 ? (size_t)(t->numel - j) : 64;
            as_dtype_to_f64(t->dtype, t->data + j * isz, cnt, v);
        }
    }
    if (f.n_tensors) CHECK(prev_end == end);
    for (size_t i = 0; i < f.n_meta; i++) CHECK(f.meta[i].key && f.meta[i].value);
    as_st_file_clear(&f);
    free(buf);
    return 0;
}
