/* Tests of analysis/as_select_index: index files (a user's key selection in the trace format). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_safetensors.h"
#include "as_select_index.h"
#include "as_testutil.h"
#include "as_trace.h"

static char *trace(void)
{
    char *p = as_test_path("t.st");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 4, .hkv = 2, .t = 3, .n = 20, .d = 8,
                             .dtype = AS_DT_F32, .causal = 1, .seed = 3};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

/* Write one raw tensor (and optional metadata format) with the real writer. */
static void write_raw(const char *path, const char *name, as_dtype dt, int ndim,
                      const int64_t *shape, const void *data, size_t nbytes, const char *format)
{
    as_st_spec sp = {name, dt, ndim, {0}};
    for (int i = 0; i < ndim; i++) sp.shape[i] = shape[i];
    as_meta meta[1] = {{"format", (char *)format}};
    char err[AS_ERR_LEN];
    as_st_writer *w = as_st_writer_open(path, &sp, 1, meta, format ? 1 : 0, err);
    cr_assert(w, "%s", err);
    cr_assert_eq(as_st_writer_write(w, data, nbytes, err), AS_OK, "%s", err);
    cr_assert_eq(as_st_writer_finish(w, err), AS_OK, "%s", err);
}

Test(select_index, write_open_get_per_head_and_shared)
{
    char *tp = trace(), *ip = as_test_path("i.st");
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(tp, err);
    cr_assert(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0); /* visible: 18, 19, 20 */
    int32_t idx[4 * 3 * 3];
    double out[4 * 3 * 8];
    for (int i = 0; i < 36; i++) idx[i] = (i % 3 == 0) ? -1 : (int32_t)((i * 7) % 17);
    for (int i = 0; i < 96; i++) out[i] = i * 0.5;
    as_index_layer_data L = {0, 4, 3, 3, 8, idx, out};
    as_meta m[1] = {{"method", "test"}};
    cr_assert_eq(as_index_write(ip, &L, 1, m, 1, err), AS_OK, "%s", err);
    as_status st;
    as_index *ix = as_index_open(ip, &st, err);
    cr_assert(ix, "%s", err);
    cr_assert_eq(as_index_check_layer(ix, l, err), AS_OK, "%s", err);
    cr_assert_eq(as_index_width(ix, 0), 3);
    cr_assert_eq(as_index_width(ix, 5), 0);
    cr_assert(as_index_has_output(ix, 0));
    int64_t got[3], k;
    for (int64_t h = 0; h < 4; h++)
        for (int64_t q = 0; q < 3; q++) {
            cr_assert_eq(as_index_get(ix, l, h, q, got, &k, err), AS_OK, "%s", err);
            cr_assert_eq(k, 2);
            int32_t *row = idx + (h * 3 + q) * 3;
            int64_t a = row[1] < row[2] ? row[1] : row[2], b = row[1] < row[2] ? row[2] : row[1];
            cr_assert(got[0] == a && got[1] == b);
            double o[8];
            as_index_get_output(ix, l, h, q, o);
            for (int c = 0; c < 8; c++) cr_assert_eq(o[c], out[(h * 3 + q) * 8 + c]);
        }
    /* the writer refuses to replace an open index */
    cr_assert_neq(as_index_write(ip, &L, 1, NULL, 0, err), AS_OK);
    as_index_free(ix);

    /* shared by the GQA group: [Hkv, T, K], I64 */
    int64_t shared[2 * 3 * 2] = {0, 5, 1, -1, 2, 17, 3, 4, 5, 6, -1, -1};
    int64_t shape[3] = {2, 3, 2};
    write_raw(ip, "layers.0.idx", AS_DT_I64, 3, shape, shared, sizeof shared, "attnscope-index");
    ix = as_index_open(ip, &st, err);
    cr_assert(ix, "%s", err);
    cr_assert_eq(as_index_check_layer(ix, l, err), AS_OK, "%s", err);
    cr_assert(!as_index_has_output(ix, 0));
    cr_assert_eq(as_index_get(ix, l, 3, 2, got, &k, err), AS_OK); /* head 3 -> kv head 1 */
    cr_assert_eq(k, 0);
    cr_assert_eq(as_index_get(ix, l, 1, 0, got, &k, err), AS_OK); /* kv head 0, query 0 */
    cr_assert(k == 2 && got[0] == 0 && got[1] == 5);
    cr_assert_eq(as_index_get(ix, l, 0, 2, got, &k, err), AS_OK);
    cr_assert(k == 2 && got[0] == 2 && got[1] == 17);
    as_index_free(ix);
    as_trace_free(tr);
    free(tp), free(ip);
}

Test(select_index, refusals)
{
    char *tp = trace(), *ip = as_test_path("bad.st");
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(tp, err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_status st;
    int64_t got[8], k;
    /* float indices */
    float f[4 * 3 * 2] = {0};
    int64_t sh[3] = {4, 3, 2};
    write_raw(ip, "layers.0.idx", AS_DT_F32, 3, sh, f, sizeof f, NULL);
    cr_assert_null(as_index_open(ip, &st, err));
    cr_assert_eq(st, AS_ERR_FORMAT);
    cr_assert(strstr(err, "layers.0.idx") && strstr(err, "dtype"), "%s", err);
    /* wrong rank */
    int32_t r2[12] = {0};
    int64_t sh2[2] = {4, 3};
    write_raw(ip, "layers.0.idx", AS_DT_I32, 2, sh2, r2, sizeof r2, NULL);
    cr_assert_null(as_index_open(ip, &st, err));
    cr_assert(strstr(err, "rank"), "%s", err);
    /* another format */
    int32_t r3[24] = {0};
    write_raw(ip, "layers.0.idx", AS_DT_I32, 3, sh, r3, sizeof r3, "attnscope-trace");
    cr_assert_null(as_index_open(ip, &st, err));
    cr_assert(strstr(err, "format"), "%s", err);
    /* outputs without indices; no index tensor at all */
    double o[4 * 3 * 8] = {0};
    int64_t sho[3] = {4, 3, 8};
    write_raw(ip, "layers.0.out", AS_DT_F64, 3, sho, o, sizeof o, NULL);
    cr_assert_null(as_index_open(ip, &st, err));
    write_raw(ip, "something.else", AS_DT_I32, 3, sh, r3, sizeof r3, NULL);
    cr_assert_null(as_index_open(ip, &st, err));
    cr_assert(strstr(err, "no 'layers.L.idx'"), "%s", err);
    /* missing, truncated */
    cr_assert_null(as_index_open("/nonexistent/x.st", &st, err));
    cr_assert_eq(st, AS_ERR_IO);
    FILE *fp = fopen(ip, "wb");
    fwrite("\x10\0\0\0\0\0\0\0{}", 1, 10, fp);
    fclose(fp);
    cr_assert_null(as_index_open(ip, &st, err));
    cr_assert_eq(st, AS_ERR_FORMAT);
    /* shape: H neither Hq nor Hkv; T off */
    int64_t sh3[3] = {3, 3, 2};
    write_raw(ip, "layers.0.idx", AS_DT_I32, 3, sh3, r3, 3 * 3 * 2 * 4, NULL);
    as_index *ix = as_index_open(ip, &st, err);
    cr_assert(ix);
    cr_assert_eq(as_index_check_layer(ix, l, err), AS_ERR_FORMAT);
    as_index_free(ix);
    /* values: past the visible keys (query 0 sees 18), negative other than -1, duplicates */
    int32_t r4[24];
    for (int i = 0; i < 24; i++) r4[i] = i % 2;
    r4[1] = 18;
    write_raw(ip, "layers.0.idx", AS_DT_I32, 3, sh, r4, sizeof r4, NULL);
    ix = as_index_open(ip, &st, err);
    cr_assert_eq(as_index_get(ix, l, 0, 0, got, &k, err), AS_ERR_VALUE);
    cr_assert(strstr(err, "[0, 0, 1] = 18"), "%s", err);
    cr_assert_eq(as_index_get(ix, l, 0, 1, got, &k, err), AS_OK); /* query 1 sees 19 */
    as_index_free(ix);
    r4[1] = -2;
    write_raw(ip, "layers.0.idx", AS_DT_I32, 3, sh, r4, sizeof r4, NULL);
    ix = as_index_open(ip, &st, err);
    cr_assert_eq(as_index_get(ix, l, 0, 0, got, &k, err), AS_ERR_VALUE);
    as_index_free(ix);
    r4[1] = 0;
    write_raw(ip, "layers.0.idx", AS_DT_I32, 3, sh, r4, sizeof r4, NULL);
    ix = as_index_open(ip, &st, err);
    cr_assert_eq(as_index_get(ix, l, 0, 0, got, &k, err), AS_ERR_VALUE);
    cr_assert(strstr(err, "more than once"), "%s", err);
    as_index_free(ix);
    as_trace_free(tr);
    free(tp), free(ip);
}
