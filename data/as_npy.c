#include "as_npy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_outfile.h"

/* The header is a Python dict literal:
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * parsed with a tiny tokenizer that accepts exactly these value forms. */
typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static int eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int read_str(cursor *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap) return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

static as_status parse_header(cursor *c, as_tensor *t, char *err)
{
    char key[64], descr[32] = "";
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    if (!eat(c, '{')) return as_err_set(err, AS_ERR_FORMAT, "npy header is not a dict");
    for (;;) {
        if (eat(c, '}')) break;
        if (read_str(c, key, sizeof key) != 0 || !eat(c, ':'))
            return as_err_set(err, AS_ERR_FORMAT, "npy header: malformed key");
        skip_ws(c);
        if ((strcmp(key, "descr") == 0 && have_descr) ||
            (strcmp(key, "fortran_order") == 0 && have_order) ||
            (strcmp(key, "shape") == 0 && have_shape))
            return as_err_set(err, AS_ERR_FORMAT, "npy header: duplicate key '%s'", key);
        if (strcmp(key, "descr") == 0) {
            if (read_str(c, descr, sizeof descr) != 0)
                return as_err_set(err, AS_ERR_FORMAT,
                                  "npy header: 'descr' must be a simple dtype string "
                                  "(structured dtypes are not supported)");
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if ((size_t)(c->end - c->p) >= 4 && strncmp(c->p, "True", 4) == 0) {
                fortran = 1;
                c->p += 4;
            } else if ((size_t)(c->end - c->p) >= 5 && strncmp(c->p, "False", 5) == 0) {
                c->p += 5;
            } else {
                return as_err_set(err, AS_ERR_FORMAT, "npy header: bad 'fortran_order'");
            }
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!eat(c, '(')) return as_err_set(err, AS_ERR_FORMAT, "npy header: bad 'shape'");
            t->ndim = 0;
            while (!eat(c, ')')) {
                skip_ws(c);
                if (t->ndim >= AS_MAX_DIMS)
                    return as_err_set(err, AS_ERR_FORMAT, "npy header: rank exceeds %d",
                                      AS_MAX_DIMS);
                /* digits only, bounded by the header (strtoll could read past its end) */
                int64_t v = 0;
                const char *d0 = c->p;
                while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
                    if (v > (INT64_MAX - 9) / 10)
                        return as_err_set(err, AS_ERR_FORMAT, "npy header: shape entry too large");
                    v = 10 * v + (*c->p++ - '0');
                }
                if (c->p == d0)
                    return as_err_set(err, AS_ERR_FORMAT, "npy header: bad shape entry");
                if (c->p < c->end && *c->p == 'L') c->p++; /* Python 2 long: (3L, 4L) */
                t->shape[t->ndim++] = v;
                if (eat(c, ',')) continue;
                if (!eat(c, ')')) return as_err_set(err, AS_ERR_FORMAT, "npy header: bad shape");
                break;
            }
            have_shape = 1;
        } else {
            return as_err_set(err, AS_ERR_FORMAT, "npy header: unexpected key '%s'", key);
        }
        if (eat(c, ',')) continue;
        if (eat(c, '}')) break;
        return as_err_set(err, AS_ERR_FORMAT, "npy header: expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape)
        return as_err_set(err, AS_ERR_FORMAT,
                          "npy header must have 'descr', 'fortran_order' and 'shape'");
    if (fortran)
        return as_err_set(err, AS_ERR_FORMAT,
                          "npy array is in Fortran order; save it C-contiguous "
                          "(numpy.ascontiguousarray)");
    if (descr[0] == '>')
        return as_err_set(err, AS_ERR_FORMAT,
                          "npy array is big-endian ('%s'); convert it to little-endian "
                          "(arr.astype(arr.dtype.newbyteorder('<')))",
                          descr);
    if (descr[0] != '<' && descr[0] != '=' && descr[0] != '|')
        return as_err_set(err, AS_ERR_FORMAT, "npy dtype '%s' has no byte order", descr);
    const char *k = descr + 1;
    if (strcmp(k, "f8") == 0) t->dtype = AS_DT_F64;
    else if (strcmp(k, "f4") == 0) t->dtype = AS_DT_F32;
    else if (strcmp(k, "f2") == 0) t->dtype = AS_DT_F16;
    else if (strcmp(k, "i4") == 0) t->dtype = AS_DT_I32;
    else if (strcmp(k, "i8") == 0) t->dtype = AS_DT_I64;
    else
        return as_err_set(err, AS_ERR_FORMAT,
                          "npy dtype '%s' is not supported (f8, f4, f2, i4, i8)", descr);
    return AS_OK;
}

as_status as_npy_parse(const unsigned char *buf, size_t len, as_tensor *t, char *err)
{
    memset(t, 0, sizeof *t);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return as_err_set(err, AS_ERR_FORMAT, "not a .npy file (bad magic)");
    unsigned major = buf[6];
    size_t hlen, pre;
    if (major == 1) {
        hlen = (size_t)buf[8] | ((size_t)buf[9] << 8);
        pre = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) return as_err_set(err, AS_ERR_FORMAT, "truncated .npy header");
        hlen = (size_t)buf[8] | ((size_t)buf[9] << 8) | ((size_t)buf[10] << 16) |
               ((size_t)buf[11] << 24);
        pre = 12;
    } else {
        return as_err_set(err, AS_ERR_FORMAT, ".npy format version %u.%u is not supported",
                          major, buf[7]);
    }
    if (hlen > len - pre)
        return as_err_set(err, AS_ERR_FORMAT, ".npy header length %zu runs past the end (%zu bytes)",
                          hlen, len);
    cursor c = {(const char *)buf + pre, (const char *)buf + pre + hlen};
    as_status st = parse_header(&c, t, err);
    if (st != AS_OK) return st;
    uint64_t numel = 1, isz = as_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        uint64_t s = (uint64_t)t->shape[i];
        if (s && numel > UINT64_MAX / s)
            return as_err_set(err, AS_ERR_FORMAT, ".npy shape product overflows");
        numel *= s;
    }
    if (numel > UINT64_MAX / isz)
        return as_err_set(err, AS_ERR_FORMAT, ".npy shape product overflows");
    uint64_t need = numel * isz, have = len - pre - hlen;
    if (need != have)
        return as_err_set(err, AS_ERR_FORMAT,
                          ".npy shape needs %llu data bytes but the file has %llu%s",
                          (unsigned long long)need, (unsigned long long)have,
                          have < need ? " (truncated?)" : "");
    t->numel = numel;
    t->data = buf + pre + hlen;
    t->nbytes = need;
    return AS_OK;
}

as_status as_npy_write(const char *path, as_dtype dtype, int ndim, const int64_t *shape,
                       const void *data, char *err)
{
    static const char *descr[AS_DT_COUNT] = {"<f8", "<f4", "<f2", NULL, "<i4", "<i8"};
    if ((unsigned)dtype >= AS_DT_COUNT || !descr[dtype])
        return as_err_set(err, AS_ERR_USAGE, "%s: dtype %s cannot be stored in .npy", path,
                          as_dtype_name(dtype));
    if (ndim < 0 || ndim > AS_MAX_DIMS)
        return as_err_set(err, AS_ERR_USAGE, "%s: rank %d is outside [0, %d]", path, ndim,
                          AS_MAX_DIMS);
    uint64_t check = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t s = (uint64_t)shape[i];
        if (shape[i] < 0 || (s && check > (SIZE_MAX / as_dtype_size(dtype)) / s))
            return as_err_set(err, AS_ERR_USAGE, "%s: bad shape (negative or too large)", path);
        check *= s;
    }
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr[dtype]);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld,%s", (long long)shape[i],
                      (ndim > 1 && i < ndim - 1) ? " " : "");
        numel *= (uint64_t)shape[i];
    }
    if (ndim > 1) n--; /* "(2, 3,)" -> "(2, 3)" keeps the one-tuple comma only for ndim 1 */
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    char head[10 + sizeof dict + 64];
    memcpy(head, pre, 10);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', pad);
    head[10 + (size_t)n + pad] = '\n';
    as_outfile *f;
    as_status st = as_outfile_open(path, &f, err);
    if (st != AS_OK) return st;
    const size_t nb = (size_t)numel * as_dtype_size(dtype);
    st = as_outfile_write(f, head, 10 + hlen, err);
    if (st == AS_OK && nb) st = as_outfile_write(f, data, nb, err);
    if (st != AS_OK) {
        as_outfile_abort(f);
        return st;
    }
    return as_outfile_commit(f, err);
}
