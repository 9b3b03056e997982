/* Tests of data/as_safetensors: the strict parser on every malformed class built by hand,
 * the streaming atomic writer (round trip, validation, temporary files) and the input
 * registry that keeps writers from replacing open inputs. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "as_fixtures.h"
#include "as_outfile.h"
#include "as_safetensors.h"
#include "as_testutil.h"

static as_status parse(fx_buf b, as_st_file *f, char *err)
{
    as_status st = as_st_parse(b.p, b.n, f, err);
    return st;
}

/* Parse json + data and expect a format error whose message contains want (and one line). */
static void expect_bad(const char *json, const void *data, size_t dlen, const char *want)
{
    fx_buf b = fx_st(json, data, dlen);
    as_st_file f;
    char err[AS_ERR_LEN] = "";
    as_status st = parse(b, &f, err);
    cr_expect_eq(st, AS_ERR_FORMAT, "%s: status %d", json, st);
    cr_expect(strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", json, err, want);
    cr_expect(strchr(err, '\n') == NULL);
    cr_expect(f.n_tensors == 0 && f.tensors == NULL && f.meta == NULL);
    free(b.p);
}

static const unsigned char zeros[64];

Test(safetensors, minimal_and_sorted)
{
    as_st_file f;
    char err[AS_ERR_LEN];
    fx_buf b = fx_st("{}", NULL, 0);
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 0);
    as_st_file_clear(&f);
    free(b.p);

    unsigned char data[24];
    for (int i = 0; i < 24; i++) data[i] = (unsigned char)i;
    /* declared out of offset order, with metadata, padded with spaces like the format does */
    b = fx_st("{\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
              "\"__metadata__\":{\"format\":\"x\",\"k\":\"\"},"
              "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
              "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[24,24]},"
              "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[24,24]}}   ",
              data, 24);
    /* a scalar (shape []) has one element: 8 bytes, but data_offsets span 0 */
    cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "tensor 's'") && strstr(err, "1 x 8 bytes"), "%s", err);
    free(b.p);
    b = fx_st("{\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
              "\"__metadata__\":{\"format\":\"x\",\"k\":\"\"},"
              "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
              "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[24,24]}}   ",
              data, 24);
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 3);
    cr_assert_str_eq(f.tensors[0].name, "a");
    cr_assert_str_eq(f.tensors[1].name, "b");
    cr_assert_str_eq(f.tensors[2].name, "e");
    const as_tensor *t = as_st_find(&f, "b");
    cr_assert(t && t->dtype == AS_DT_F32 && t->ndim == 2 && t->shape[1] == 2 && t->numel == 4);
    cr_assert_eq(t->data, b.p + 8 + (b.n - 8 - 24) + 8);
    cr_assert_eq(t->nbytes, 16);
    cr_assert_eq(as_st_find(&f, "e")->numel, 0);
    cr_assert_null(as_st_find(&f, "B"));
    cr_assert_eq(f.n_meta, 2);
    cr_assert_str_eq(f.meta[0].key, "format");
    cr_assert_str_eq(f.meta[1].value, "");
    as_st_file_clear(&f);
    as_st_file_clear(&f); /* idempotent */
    free(b.p);
}

Test(safetensors, truncated_and_header_length)
{
    as_st_file f;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_st_parse(NULL, 0, &f, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "0 bytes"), "%s", err);
    unsigned char five[5] = {2, 0, 0, 0, 0};
    cr_assert_eq(as_st_parse(five, 5, &f, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "too short"), "%s", err);

    /* header length past EOF */
    fx_buf b = fx_st_len(100, "{}", NULL, 0);
    cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "runs past the end"), "%s", err);
    free(b.p);
    /* huge header length: over the 100 MB bound, and near 2^64 (no overflow in the check) */
    uint64_t huge[] = {AS_ST_MAX_HEADER + 1ull, 1ull << 40, UINT64_MAX, UINT64_MAX - 7};
    for (int i = 0; i < 4; i++) {
        b = fx_st_len(huge[i], "{}", NULL, 0);
        cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
        cr_assert(strstr(err, "exceeds"), "%s", err);
        free(b.p);
    }
    /* a truncated valid file: every prefix is refused, none crashes */
    unsigned char data[8] = {0};
    b = fx_st("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 8);
    for (size_t n = 0; n < b.n; n++) {
        unsigned char *cp = malloc(n ? n : 1); /* exact size: ASan would catch an overread */
        memcpy(cp, b.p, n);
        cr_assert_eq(as_st_parse(cp, n, &f, err), AS_ERR_FORMAT, "prefix %zu", n);
        free(cp);
    }
    cr_assert_eq(parse(b, &f, err), AS_OK);
    as_st_file_clear(&f);
    free(b.p);
    /* header length 0 and 1 */
    b = fx_st_len(0, "", NULL, 0);
    cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
    free(b.p);
    b = fx_st_len(1, "{", NULL, 0);
    cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
    free(b.p);
}

Test(safetensors, bad_json)
{
    expect_bad("[1,2]", NULL, 0, "JSON object");
    expect_bad("{\"a\":", NULL, 0, "not valid JSON");
    expect_bad("{\"a\":{\"dtype\":\"F32\",}}", NULL, 0, "not valid JSON");
    expect_bad("{'a':1}", NULL, 0, "not valid JSON");
    expect_bad("{} {}", NULL, 0, "trailing garbage");
    expect_bad("{}x", NULL, 0, "trailing garbage");
    expect_bad("{\"a\":1}", NULL, 0, "tensor 'a': entry is not a JSON object");
    expect_bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4, "needs string 'dtype'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", zeros, 4,
               "array 'shape'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}", zeros, 4,
               "'data_offsets'");
    expect_bad("{\"__metadata__\":[1]}", NULL, 0, "__metadata__ is not a JSON object");
    expect_bad("{\"__metadata__\":{\"scale\":0.5}}", NULL, 0, "'scale' is not a string");
    /* strictness beyond cJSON: raw control characters, NUL escapes, invalid UTF-8 */
    expect_bad("{\"a\nb\":1}", NULL, 0, "control character");
    expect_bad("{\"a\\u0000b\":1}", NULL, 0, "\\u0000");
    expect_bad("{\x01}", NULL, 0, "control character");
    expect_bad("{\"\xff\":1}", NULL, 0, "UTF-8");
    expect_bad("{\"\xc0\xaf\":1}", NULL, 0, "UTF-8");         /* overlong '/' */
    expect_bad("{\"\xed\xa0\x80\":1}", NULL, 0, "UTF-8");     /* surrogate */
    expect_bad("{\"\xf4\x90\x80\x80\":1}", NULL, 0, "UTF-8"); /* > U+10FFFF */
    /* valid UTF-8 and escaped control characters are fine */
    fx_buf b = fx_st("{\"__metadata__\":{\"caf\xc3\xa9 \xf0\x9f\x98\x80\":\"a\\nb\\\\u0000\"}}\n\t\r ",
                     NULL, 0);
    as_st_file f;
    char err[AS_ERR_LEN];
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    cr_assert_str_eq(f.meta[0].value, "a\nb\\u0000");
    as_st_file_clear(&f);
    free(b.p);
    /* NUL padding after the JSON is tolerated */
    b = fx_st("{}", NULL, 0);
    b.p[0] = 4; /* header length 4: "{}" + 2 NULs */
    fx_put(&b, "\0\0", 2);
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    as_st_file_clear(&f);
    free(b.p);
    /* deep nesting: refused, no stack overflow */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 16);
    strcpy(deep, "{\"a\":");
    memset(deep + 5, '[', depth);
    memset(deep + 5 + depth, ']', depth);
    strcpy(deep + 5 + 2 * depth, "}");
    expect_bad(deep, NULL, 0, "JSON");
    free(deep);
}

Test(safetensors, dtypes_shapes_offsets)
{
    expect_bad("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", zeros, 4,
               "tensor 'w': unsupported dtype 'U8'");
    expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4,
               "unsupported dtype");
    /* shape x item size != byte range */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': shape needs 3 x 4 bytes but data_offsets span 8");
    expect_bad("{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", zeros, 4,
               "shape needs");
    /* shapes: negative, fractional, string, too many dims, product overflow */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", zeros, 4,
               "shape[0] is not a non-negative integer");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", zeros, 4,
               "shape[0]");
    /* an integer, but above what a JSON number (a double) holds exactly: said so, not
     * "not a non-negative integer" */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,2305843009213693952],"
               "\"data_offsets\":[0,4]}}",
               zeros, 4, "shape[1] = 2305843009213693952 is too large (at most 2^53)");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[9007199254740994],"
               "\"data_offsets\":[0,4]}}",
               zeros, 4, "is too large");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,4]}}", zeros, 4,
               "shape[1]");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               zeros, 4, "rank 9 exceeds 8");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
               "\"data_offsets\":[0,4]}}",
               zeros, 4, "overflows");
    expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],"
               "\"data_offsets\":[0,0]}}",
               NULL, 0, "shape needs");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", zeros, 4,
               "shape[0]");
    /* offsets: out of range, reversed, wrong arity, negative, beyond 2^53 */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 4,
               "tensor 'w': data_offsets [0, 8) past the end of the data area (4 bytes");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,"
               "18446744073709551616]}}",
               zeros, 4, "data_offsets must be two non-negative integers");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", zeros, 4,
               "end 0 < begin 4");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", zeros, 4,
               "two non-negative integers");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", zeros, 4,
               "two non-negative integers");
    /* overlapping, gaps, not starting at 0, trailing bytes */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               zeros, 12, "tensor 'b': data overlaps the previous tensor");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               zeros, 8, "overlaps");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
               zeros, 8, "tensor 'z': data overlaps");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               zeros, 12, "tensor 'b': gap of 4 bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", zeros, 8,
               "tensor 'a': gap of 4 bytes");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 6,
               "data area is 6 bytes but tensors cover 4 (trailing bytes)");
    expect_bad("{}", zeros, 1, "trailing bytes");
    /* duplicates: tensor names, metadata keys, fields inside an entry */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               zeros, 8, "duplicate key 'a' in header");
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", NULL, 0, "duplicate key '__metadata__'");
    expect_bad("{\"__metadata__\":{\"m\":\"1\",\"m\":\"2\"}}", NULL, 0,
               "duplicate key 'm' in __metadata__");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               zeros, 4, "tensor 'a': duplicate field 'dtype'");
    /* zero-size tensors may share an offset; a scalar takes one element */
    fx_buf b = fx_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                     "\"b\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[0,0]},"
                     "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                     zeros, 4);
    as_st_file f;
    char err[AS_ERR_LEN];
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    cr_assert_eq(as_st_find(&f, "s")->numel, 1);
    cr_assert_eq(as_st_find(&f, "s")->ndim, 0);
    as_st_file_clear(&f);
    free(b.p);
}

/* The duplicate-key check must not be quadratic: 200k entries parse in well under a second. */
Test(safetensors, many_keys_fast)
{
    size_t n = 200000;
    char *j = malloc(n * 24 + 64), *p = j;
    p += sprintf(p, "{\"__metadata__\":{");
    for (size_t i = 0; i < n; i++) p += sprintf(p, "%s\"k%zu\":\"\"", i ? "," : "", i);
    strcpy(p, "}}");
    fx_buf b = fx_st(j, NULL, 0);
    as_st_file f;
    char err[AS_ERR_LEN];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(parse(b, &f, err), AS_OK, "%s", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(f.n_meta, n);
    as_st_file_clear(&f);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_expect(s < 10.0, "parse took %.1f s", s); /* quadratic: ~2e10 strcmp, minutes */
    /* same with the last key duplicated */
    strcpy(p, ",\"k7\":\"\"}}");
    free(b.p);
    b = fx_st(j, NULL, 0);
    cr_assert_eq(parse(b, &f, err), AS_ERR_FORMAT);
    cr_assert(strstr(err, "duplicate key 'k7'"), "%s", err);
    free(b.p);
    free(j);
}

Test(safetensors, regression_fuzz_inputs)
{
    const char *src = getenv("AS_SRC");
    cr_assert(src, "AS_SRC not set");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/fuzz/safetensors", src);
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
        unsigned char *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        as_st_file f;
        char err[AS_ERR_LEN] = "";
        as_status st = as_st_parse(exact, len, &f, err);
        if (st == AS_OK) as_st_file_clear(&f);
        else cr_expect(strchr(err, '\n') == NULL && err[0], "%s: '%s'", de->d_name, err);
        free(exact);
        free(buf);
        n++;
    }
    closedir(d);
    cr_assert(n >= 1);
}

/* ------------------------------------------------------------------ writer */

Test(safetensors, writer_round_trip_all_dtypes)
{
    char *path = as_test_path("rt.safetensors");
    as_st_spec specs[6];
    const char *names[6] = {"t.f64", "t.f32", "t.f16", "t.bf16", "t.i32", "t.i64"};
    double src[3] = {1.5, -0.25, 3.0};
    unsigned char raw[6][24];
    for (int i = 0; i < 6; i++) {
        specs[i] = (as_st_spec){names[i], (as_dtype)i, 2, {1, 3}};
        as_dtype_from_f64((as_dtype)i, src, 3, raw[i]);
    }
    specs[5].ndim = 0; /* a scalar I64 */
    as_meta meta[2] = {{"model", "m \"quoted\" \\ ok"}, {"scale", "0.125"}};
    char err[AS_ERR_LEN];
    as_st_writer *w = as_st_writer_open(path, specs, 6, meta, 2, err);
    cr_assert(w, "%s", err);
    for (int i = 0; i < 5; i++) {
        size_t nb = 3 * as_dtype_size((as_dtype)i);
        /* stream in uneven pieces */
        cr_assert_eq(as_st_writer_write(w, raw[i], 1, err), AS_OK);
        cr_assert_eq(as_st_writer_write(w, raw[i] + 1, nb - 1, err), AS_OK);
    }
    cr_assert_eq(as_st_writer_write(w, raw[5], 8, err), AS_OK);
    struct stat s;
    cr_assert_neq(stat(path, &s), 0, "nothing at PATH before finish");
    cr_assert_eq(as_test_count_tmp_files(), 1);
    cr_assert_eq(as_st_writer_finish(w, err), AS_OK, "%s", err);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    cr_assert_eq(stat(path, &s), 0);
    cr_assert_eq(s.st_mode & 0777, 0644);

    size_t len = 0;
    char *buf = fx_slurp(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)buf[i];
    cr_assert_eq((8 + hlen) % 8, 0, "data area aligned to 8 bytes");
    as_st_file f;
    cr_assert_eq(as_st_parse((unsigned char *)buf, len, &f, err), AS_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 6);
    for (int i = 0; i < 6; i++) {
        const as_tensor *t = as_st_find(&f, names[i]);
        cr_assert(t);
        cr_assert_eq(t->dtype, (as_dtype)i);
        cr_assert_eq(memcmp(t->data, raw[i], t->nbytes), 0);
        double back[3];
        as_dtype_to_f64(t->dtype, t->data, (size_t)t->numel, back);
        cr_assert_eq(back[0], i >= 4 ? 2.0 : 1.5); /* llround(1.5) = 2 */
    }
    cr_assert_eq(as_st_find(&f, "t.i64")->numel, 1);
    cr_assert_str_eq(f.meta[0].value, "m \"quoted\" \\ ok");
    as_st_file_clear(&f);
    free(buf);
    free(path);
}

Test(safetensors, writer_byte_accounting_and_abort)
{
    char *path = as_test_path("acct.safetensors");
    as_st_spec sp = {"x", AS_DT_F32, 1, {4}};
    char err[AS_ERR_LEN];
    unsigned char b[32] = {0};
    as_st_writer *w = as_st_writer_open(path, &sp, 1, NULL, 0, err);
    cr_assert(w);
    cr_assert_eq(as_st_writer_write(w, b, 17, err), AS_ERR_USAGE); /* more than declared */
    cr_assert(strstr(err, "more data"), "%s", err);
    cr_assert_eq(as_st_writer_write(w, b, 12, err), AS_OK);
    cr_assert_eq(as_st_writer_finish(w, err), AS_ERR_USAGE); /* 12 of 16 */
    cr_assert(strstr(err, "12 of 16"), "%s", err);
    struct stat s;
    cr_assert_neq(stat(path, &s), 0);
    cr_assert_eq(as_test_count_tmp_files(), 0);

    w = as_st_writer_open(path, &sp, 1, NULL, 0, err);
    cr_assert(w);
    as_st_writer_abort(w);
    as_st_writer_abort(NULL);
    cr_assert_neq(stat(path, &s), 0);
    cr_assert_eq(as_test_count_tmp_files(), 0);

    /* an existing file stays as it was until finish replaces it whole */
    cr_assert_eq(fx_write(path, "old", 3), 0);
    w = as_st_writer_open(path, &sp, 1, NULL, 0, err);
    as_st_writer_write(w, b, 16, err);
    size_t len = 0;
    char *old = fx_slurp(path, &len);
    cr_assert_str_eq(old, "old");
    free(old);
    cr_assert_eq(as_st_writer_finish(w, err), AS_OK);
    old = fx_slurp(path, &len);
    cr_assert_gt(len, 16);
    free(old);
    /* unwritable directory */
    w = as_st_writer_open("/nonexistent-dir/x.safetensors", &sp, 1, NULL, 0, err);
    cr_assert_null(w);
    cr_assert(strstr(err, "/nonexistent-dir/x.safetensors"), "%s", err);
    free(path);
}

/* A writer's temporary file is tracked while it exists: a signal handler would remove it. */
Test(safetensors, writer_temp_is_tracked)
{
    char *path = as_test_path("tracked.safetensors");
    as_st_spec sp = {"x", AS_DT_F32, 1, {4}};
    char err[AS_ERR_LEN];
    as_st_writer *w = as_st_writer_open(path, &sp, 1, NULL, 0, err);
    cr_assert(w, "%s", err);
    cr_assert_eq(as_test_count_tmp_files(), 1);
    as_tmp_remove_all(); /* what SIGINT does */
    cr_expect_eq(as_test_count_tmp_files(), 0);
    as_st_writer_abort(w); /* unlinks a file already gone: harmless */
    struct stat s;
    cr_expect_neq(stat(path, &s), 0);
    free(path);
}

Test(safetensors, writer_refuses_bad_specs)
{
    char *path = as_test_path("bad.safetensors");
    char err[AS_ERR_LEN];
    as_st_spec neg = {"x", AS_DT_F32, 1, {-1}};
    cr_assert_null(as_st_writer_open(path, &neg, 1, NULL, 0, err));
    cr_assert(strstr(err, "'x'") && strstr(err, "negative"), "%s", err);
    as_st_spec big = {"x", AS_DT_F64, 3, {1LL << 40, 1LL << 40, 1LL << 40}};
    cr_assert_null(as_st_writer_open(path, &big, 1, NULL, 0, err));
    as_st_spec rank = {"x", AS_DT_F32, 9, {1}};
    cr_assert_null(as_st_writer_open(path, &rank, 1, NULL, 0, err));
    as_st_spec dt = {"x", AS_DT_COUNT, 1, {1}};
    cr_assert_null(as_st_writer_open(path, &dt, 1, NULL, 0, err));
    as_st_spec two[2] = {{"x", AS_DT_F32, 1, {1}}, {"x", AS_DT_F32, 1, {1}}};
    cr_assert_null(as_st_writer_open(path, two, 2, NULL, 0, err));
    cr_assert(strstr(err, "twice"), "%s", err);
    as_st_spec meta_name = {"__metadata__", AS_DT_F32, 1, {1}};
    cr_assert_null(as_st_writer_open(path, &meta_name, 1, NULL, 0, err));
    as_meta dup[2] = {{"a", "1"}, {"a", "2"}};
    cr_assert_null(as_st_writer_open(path, NULL, 0, dup, 2, err));
    cr_assert(strstr(err, "'a'"), "%s", err);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    struct stat s;
    cr_assert_neq(stat(path, &s), 0);
    free(path);
}

Test(safetensors, writer_refuses_registered_input)
{
    char *path = as_test_path("input.safetensors");
    cr_assert_eq(fx_write(path, "original", 8), 0);
    as_input_register(path);
    cr_assert(as_input_is_open(path));
    as_st_spec sp = {"x", AS_DT_F32, 1, {1}};
    char err[AS_ERR_LEN];
    cr_assert_null(as_st_writer_open(path, &sp, 1, NULL, 0, err));
    cr_assert(strstr(err, "refusing to overwrite"), "%s", err);
    /* another name for the same file */
    char *link = as_test_path("link.safetensors");
    cr_assert_eq(symlink(path, link), 0);
    cr_assert(as_input_is_open(link));
    cr_assert_null(as_st_writer_open(link, &sp, 1, NULL, 0, err));
    as_input_unregister(path);
    cr_assert(!as_input_is_open(path));
    /* registered while a writer is open: finish refuses, the input is untouched */
    as_st_writer *w = as_st_writer_open(path, &sp, 1, NULL, 0, err);
    cr_assert(w);
    as_st_writer_write(w, "abcd", 4, err);
    as_input_register(path);
    cr_assert_eq(as_st_writer_finish(w, err), AS_ERR_USAGE);
    char *now = fx_slurp(path, NULL);
    cr_assert_str_eq(now, "original");
    free(now);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    as_input_unregister(path);
    free(link);
    free(path);
}

