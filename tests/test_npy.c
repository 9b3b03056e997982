/* Tests of data/as_npy: versions 1.0/2.0/3.0, every supported dtype and byte-order mark, the
 * refusals (big-endian, Fortran order, unsupported dtypes, malformed headers, size mismatch)
 * built by hand, and the atomic writer. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "as_fixtures.h"
#include "as_npy.h"
#include "as_outfile.h"
#include "as_testutil.h"

static as_status parse_buf(fx_buf b, as_tensor *t, char *err)
{
    /* exact-size copy so a read past the end is a real out-of-bounds read under ASan */
    unsigned char *cp = malloc(b.n ? b.n : 1);
    memcpy(cp, b.p, b.n);
    as_status st = as_npy_parse(cp, b.n, t, err);
    if (st == AS_OK) t->data = b.p + (t->data - cp); /* re-point into b */
    free(cp);
    return st;
}

static void expect_bad(int major, const char *dict, const void *data, size_t dlen,
                       const char *want)
{
    fx_buf b = fx_npy(major, dict, data, dlen);
    as_tensor t;
    char err[AS_ERR_LEN] = "";
    cr_expect_eq(parse_buf(b, &t, err), AS_ERR_FORMAT, "%s", dict);
    cr_expect(strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", dict, err, want);
    cr_expect(strchr(err, '\n') == NULL);
    free(b.p);
}

static const unsigned char zeros[256];

Test(npy, versions_dtypes_shapes)
{
    static const struct {
        const char *descr;
        as_dtype dt;
    } kinds[] = {{"<f8", AS_DT_F64}, {"<f4", AS_DT_F32}, {"<f2", AS_DT_F16}, {"<i4", AS_DT_I32},
                 {"<i8", AS_DT_I64}, {"=f4", AS_DT_F32}, {"|f2", AS_DT_F16}};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        for (int major = 1; major <= 3; major++) {
            char dict[128];
            snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3), }",
                     kinds[k].descr);
            size_t isz = as_dtype_size(kinds[k].dt);
            fx_buf b = fx_npy(major, dict, zeros, 6 * isz);
            cr_assert_eq((b.n - 6 * isz) % 64, 0);
            as_tensor t;
            char err[AS_ERR_LEN];
            cr_assert_eq(parse_buf(b, &t, err), AS_OK, "v%d %s: %s", major, kinds[k].descr, err);
            cr_assert_eq(t.dtype, kinds[k].dt);
            cr_assert_eq(t.ndim, 2);
            cr_assert(t.shape[0] == 2 && t.shape[1] == 3 && t.numel == 6);
            cr_assert_eq(t.nbytes, 6 * isz);
            cr_assert_eq(t.data, b.p + b.n - 6 * isz);
            cr_assert_null(t.name);
            free(b.p);
        }
    /* shapes: scalar, one-tuple, empty, python-2 longs, spacing, double quotes, key order */
    static const struct {
        const char *dict;
        int ndim;
        uint64_t numel;
    } sh[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0, 1},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", 1, 5},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 2, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }", 2, 2},
        {"{ 'shape' : ( 1 , 2 , 1 ) , 'fortran_order':False,'descr':'<f4' }", 3, 2},
        {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1,)}", 1, 1},
    };
    for (size_t k = 0; k < sizeof sh / sizeof *sh; k++) {
        fx_buf b = fx_npy(1, sh[k].dict, zeros, 4 * sh[k].numel);
        as_tensor t;
        char err[AS_ERR_LEN];
        cr_assert_eq(parse_buf(b, &t, err), AS_OK, "%s: %s", sh[k].dict, err);
        cr_assert_eq(t.ndim, sh[k].ndim, "%s", sh[k].dict);
        cr_assert_eq(t.numel, sh[k].numel);
        free(b.p);
    }
}

Test(npy, big_endian_and_fortran_refused)
{
    expect_bad(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", zeros, 8,
               "big-endian ('>f4')");
    expect_bad(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", zeros, 8,
               "newbyteorder");
    expect_bad(2, "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", zeros, 8,
               "big-endian");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", zeros, 16,
               "Fortran order");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", zeros, 16,
               "ascontiguousarray");
}

Test(npy, malformed)
{
    as_tensor t;
    char err[AS_ERR_LEN];
    /* empty, short, bad magic, unknown versions */
    cr_assert_eq(as_npy_parse(NULL, 0, &t, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "bad magic"), "%s", err);
    cr_assert_eq(as_npy_parse((const unsigned char *)"\x93NUMPY\x01", 7, &t, err), AS_ERR_FORMAT);
    cr_assert_eq(as_npy_parse((const unsigned char *)"\x93NUMPX\x01\x00\x00\x00", 10, &t, err),
                 AS_ERR_FORMAT);
    fx_buf b = fx_npy(4, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", zeros, 4);
    cr_assert_eq(parse_buf(b, &t, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "version 4.0 is not supported"), "%s", err);
    free(b.p);
    cr_assert_eq(as_npy_parse((const unsigned char *)"\x93NUMPY\x02\x00\x10\x00", 10, &t, err),
                 AS_ERR_FORMAT); /* v2 needs 12 bytes */
    cr_assert(strstr(err, "truncated"), "%s", err);
    /* header length past the end */
    b = fx_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", NULL, 0);
    b.p[9] = 0x7f;
    cr_assert_eq(parse_buf(b, &t, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "runs past the end"), "%s", err);
    b.p[9] = 0;
    b.p[6] = 2; /* v2 reads a 4-byte length: the dict's first bytes make it huge */
    cr_assert_eq(parse_buf(b, &t, err), AS_ERR_FORMAT);
    free(b.p);
    /* data size mismatch: truncated and too long */
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", zeros, 8,
               "needs 12 data bytes but the file has 8 (truncated?)");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", zeros, 16,
               "needs 12 data bytes but the file has 16");
    /* every truncation of a good file is refused */
    b = fx_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", zeros, 16);
    for (size_t n = 0; n < b.n; n++) {
        fx_buf c = {b.p, n};
        cr_assert_eq(parse_buf(c, &t, err), AS_ERR_FORMAT, "prefix %zu", n);
    }
    free(b.p);
    /* dtypes */
    expect_bad(1, "{'descr': '<u1', 'fortran_order': False, 'shape': (1,), }", zeros, 1,
               "npy dtype '<u1' is not supported");
    expect_bad(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", zeros, 8,
               "not supported");
    expect_bad(1, "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }", zeros, 4,
               "has no byte order");
    expect_bad(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", zeros, 4,
               "structured dtypes are not supported");
    /* dict structure */
    expect_bad(1, "['descr', '<f4']", zeros, 4, "not a dict");
    expect_bad(1, "{'descr': '<f4', 'shape': (1,), }", zeros, 4,
               "must have 'descr', 'fortran_order' and 'shape'");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", zeros, 4,
               "unexpected key 'x'");
    expect_bad(1, "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", zeros,
               4, "duplicate key 'descr'");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", zeros, 4,
               "bad 'fortran_order'");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", zeros, 4, "bad 'shape'");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", zeros, 4,
               "bad shape entry");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", zeros, 4, "bad shape");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", zeros,
               4, "rank exceeds 8");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
               zeros, 4, "too large");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4)}",
               zeros, 4, "overflows");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) 'x'}", zeros, 4,
               "expected ',' or '}'");
    expect_bad(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,", zeros, 4, "shape");
    expect_bad(1, "{'descr': '<f4", zeros, 4, "descr");
}

/* The header's last bytes are digits and the file ends there: the shape parser must not read
 * past the header (strtoll did). */
Test(npy, shape_digits_at_buffer_end)
{
    const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (1";
    size_t dl = sizeof dict - 1, n = 10 + dl;
    unsigned char *cp = malloc(n);
    memcpy(cp, "\x93NUMPY\x01\x00", 8);
    cp[8] = (unsigned char)dl;
    cp[9] = 0;
    memcpy(cp + 10, dict, dl);
    as_tensor t;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_npy_parse(cp, n, &t, err), AS_ERR_FORMAT);
    free(cp);
}

Test(npy, regression_fuzz_inputs)
{
    const char *src = getenv("AS_SRC");
    cr_assert(src, "AS_SRC not set");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/fuzz/npy", src);
    DIR *d = opendir(dir);
    cr_assert(d, "%s", dir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len = 0;
        char *buf = fx_slurp(path, &len);
        cr_assert(buf);
        fx_buf b = {(unsigned char *)buf, len};
        as_tensor t;
        char err[AS_ERR_LEN] = "";
        if (parse_buf(b, &t, err) != AS_OK)
            cr_expect(err[0] && strchr(err, '\n') == NULL, "%s: '%s'", de->d_name, err);
        free(buf);
        n++;
    }
    closedir(d);
    cr_assert(n >= 1);
}

Test(npy, writer_round_trip)
{
    char err[AS_ERR_LEN];
    double src[24];
    for (int i = 0; i < 24; i++) src[i] = (i - 7) * 0.5;
    const int64_t shapes[4][3] = {{0}, {24}, {4, 6}, {2, 3, 4}};
    for (int dt = 0; dt < AS_DT_COUNT; dt++) {
        if (dt == AS_DT_BF16) continue;
        for (int nd = 0; nd <= 3; nd++) {
            unsigned char raw[24 * 8];
            as_dtype_from_f64((as_dtype)dt, src, 24, raw);
            char *path = as_test_path("w.npy");
            cr_assert_eq(as_npy_write(path, (as_dtype)dt, nd, shapes[nd], raw, err), AS_OK, "%s",
                         err);
            size_t len = 0;
            char *buf = fx_slurp(path, &len);
            as_tensor t;
            cr_assert_eq(as_npy_parse((unsigned char *)buf, len, &t, err), AS_OK, "%s", err);
            cr_assert_eq(t.dtype, (as_dtype)dt);
            cr_assert_eq(t.ndim, nd);
            for (int k = 0; k < nd; k++) cr_assert_eq(t.shape[k], shapes[nd][k]);
            cr_assert_eq(memcmp(t.data, raw, t.nbytes), 0);
            cr_assert_eq((size_t)(t.data - (unsigned char *)buf) % 64, 0, "header padded to 64");
            cr_assert_eq(buf[(t.data - (unsigned char *)buf) - 1], '\n');
            free(buf);
            free(path);
        }
    }
}

Test(npy, writer_refusals)
{
    char err[AS_ERR_LEN];
    char *path = as_test_path("r.npy");
    int64_t sh[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[1] = {-2};
    float x = 0;
    cr_assert_eq(as_npy_write(path, AS_DT_BF16, 1, sh, &x, err), AS_ERR_USAGE);
    cr_assert(strstr(err, "BF16 cannot be stored"), "%s", err);
    cr_assert_eq(as_npy_write(path, AS_DT_F32, 9, sh, &x, err), AS_ERR_USAGE);
    cr_assert_eq(as_npy_write(path, AS_DT_F32, -1, sh, &x, err), AS_ERR_USAGE);
    cr_assert_eq(as_npy_write(path, AS_DT_F32, 1, neg, &x, err), AS_ERR_USAGE);
    cr_assert_eq(as_npy_write(path, AS_DT_COUNT, 1, sh, &x, err), AS_ERR_USAGE);
    struct stat s;
    cr_assert_neq(stat(path, &s), 0);
    cr_assert_eq(fx_write(path, "keep", 4), 0);
    as_input_register(path);
    cr_assert_eq(as_npy_write(path, AS_DT_F32, 1, sh, &x, err), AS_ERR_USAGE);
    cr_assert(strstr(err, "refusing to overwrite"), "%s", err);
    char *now = fx_slurp(path, NULL);
    cr_assert_str_eq(now, "keep");
    free(now);
    as_input_unregister(path);
    cr_assert_eq(as_npy_write(path, AS_DT_F32, 1, sh, &x, err), AS_OK, "%s", err);
    cr_assert_eq(as_npy_write("/nonexistent-dir/a.npy", AS_DT_F32, 1, sh, &x, err), AS_ERR_IO);
    cr_assert(strstr(err, "/nonexistent-dir/a.npy"), "%s", err);
    free(path);
}
