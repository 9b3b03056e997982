/* Tests of data/as_trace: opening safetensors files and .npy directories, the structural checks
 * (names, ranks, shapes, GQA, dtypes, positions, scale, metadata) on traces built by hand, the
 * NaN/Inf scan for every float dtype, row readers, GQA head mapping, causal visibility, scales,
 * and input registration. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_fixtures.h"
#include "as_npy.h"
#include "as_outfile.h"
#include "as_testutil.h"
#include "as_trace.h"

/* Small integers: exact in every float dtype (bf16 holds integers up to 256 exactly). */
static double gen_int(void *ctx, int layer, char which, int64_t h, int64_t r, int64_t c)
{
    int w = which == 'q' ? 0 : which == 'k' ? 1 : 2;
    return (double)((layer * 5 + w * 11 + h * 7 + r * 3 + c) % 37 - 18);
}

static as_trace *open_ok(const char *path)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert(tr, "%s", err);
    return tr;
}

/* Opening path must fail with status st and a one-line message naming `named` and holding
 * want1 and want2 (when not NULL). */
static void expect_fail_named(const char *path, const char *named, as_status st,
                              const char *want1, const char *want2)
{
    char err[AS_ERR_LEN] = "";
    as_status got = AS_OK;
    as_trace *tr = as_trace_open_status(path, &got, err);
    cr_expect_null(tr);
    if (tr) as_trace_free(tr);
    cr_expect_eq(got, st, "status %d, message '%s'", got, err);
    cr_expect(strstr(err, named) != NULL, "'%s' does not name %s", err, named);
    cr_expect(!want1 || strstr(err, want1), "'%s' lacks '%s'", err, want1);
    cr_expect(!want2 || strstr(err, want2), "'%s' lacks '%s'", err, want2);
    cr_expect(strchr(err, '\n') == NULL);
    cr_expect(!as_input_is_open(path), "a failed open must not register the input");
}

static void expect_open_fails(const char *path, as_status st, const char *want1, const char *want2)
{
    expect_fail_named(path, path, st, want1, want2);
}

static char *write_st(const char *name, const fx_t *ts, int n, const char *meta)
{
    char *path = as_test_path(name);
    cr_assert_eq(fx_write_buf(path, fx_st_tensors(ts, n, meta)), 0);
    return path;
}

/* q [2,1,4] k/v [1,3,4] F32 layer 0: the base every malformed case edits one thing of */
#define Q(shape, nb) {"layers.0.q", "F32", shape, nb, NULL}
#define K(shape, nb) {"layers.0.k", "F32", shape, nb, NULL}
#define V(shape, nb) {"layers.0.v", "F32", shape, nb, NULL}

Test(trace, values_gqa_causal_all_dtypes)
{
    for (int dt = AS_DT_F64; dt <= AS_DT_BF16; dt++)
        for (int causal = 0; causal < 2; causal++) {
            char nm[64];
            snprintf(nm, sizeof nm, "v%d_%d.safetensors", dt, causal);
            char *path = as_test_path(nm);
            as_test_trace_spec sp = {.n_layers = 2, .hq = 8, .hkv = 2, .t = 3, .n = 5, .d = 4,
                                     .dtype = (as_dtype)dt, .causal = causal, .gen = gen_int};
            cr_assert_eq(as_test_write_trace(path, &sp), 0);
            as_trace *tr = open_ok(path);
            char err[AS_ERR_LEN];
            cr_assert_eq(as_trace_check_finite(tr, err), AS_OK, "%s", err);
            cr_assert_str_eq(as_trace_kind(tr), "safetensors");
            cr_assert_str_eq(as_trace_path(tr), path);
            struct stat s;
            stat(path, &s);
            cr_assert_eq(as_trace_file_bytes(tr), (uint64_t)s.st_size);
            cr_assert_eq(as_trace_n_layers(tr), 2);
            for (size_t li = 0; li < 2; li++) {
                const as_layer *l = as_trace_layer(tr, li);
                cr_assert_eq(l->index, (int)li);
                cr_assert(l->hq == 8 && l->hkv == 2 && l->t == 3 && l->n == 5 && l->d == 4);
                cr_assert_eq(l->q->dtype, (as_dtype)dt);
                cr_assert_eq(l->scale, 1.0 / sqrt(4.0)); /* default 1/sqrt(d) */
                cr_assert_eq(as_layer_is_causal(l), causal);
                double row[5 * 4];
                for (int64_t h = 0; h < 2; h++) {
                    as_layer_read_k(l, h, 1, 4, row);
                    for (int64_t r = 0; r < 4; r++)
                        for (int64_t c = 0; c < 4; c++)
                            cr_assert_eq(row[r * 4 + c], gen_int(NULL, (int)li, 'k', h, r + 1, c));
                    as_layer_read_v(l, h, 0, 5, row);
                    for (int64_t r = 0; r < 5; r++)
                        for (int64_t c = 0; c < 4; c++)
                            cr_assert_eq(row[r * 4 + c], gen_int(NULL, (int)li, 'v', h, r, c));
                }
                for (int64_t h = 0; h < 8; h++) {
                    cr_assert_eq(as_layer_kv_head(l, h), h / 4); /* GQA: 4 query heads per kv */
                    for (int64_t qi = 0; qi < 3; qi++) {
                        as_layer_read_q(l, h, qi, row);
                        for (int64_t c = 0; c < 4; c++)
                            cr_assert_eq(row[c], gen_int(NULL, (int)li, 'q', h, qi, c));
                        /* causal: query qi at position n - t + qi sees keys 0..pos */
                        int64_t pos = causal ? 5 - 3 + qi : 4;
                        cr_assert_eq(as_layer_q_position(l, qi), pos);
                        cr_assert_eq(as_layer_visible(l, qi), causal ? pos + 1 : 5);
                    }
                }
                float f[4];
                as_tensor_read_f32(l->q, 4, 4, f);
                for (int c = 0; c < 4; c++) cr_assert_eq(f[c], (float)gen_int(NULL, (int)li, 'q', 0, 1, c));
            }
            cr_assert_null(as_trace_layer(tr, 2));
            cr_assert_null(as_trace_find_layer(tr, 5));
            cr_assert_eq(as_trace_find_layer(tr, 1), as_trace_layer(tr, 1));
            cr_assert_str_eq(as_trace_model(tr), "synthetic");
            cr_assert_eq(as_trace_rope_applied(tr), 0);
            cr_assert_str_eq(as_trace_meta(tr, "format"), AS_TRACE_FORMAT_NAME);
            cr_assert_null(as_trace_meta(tr, "nope"));
            cr_assert(as_input_is_open(path));
            as_trace_free(tr);
            cr_assert(!as_input_is_open(path));
            free(path);
        }
}

Test(trace, gqa_mha_mqa_mapping)
{
    const int64_t cfg[3][2] = {{4, 4}, {6, 1}, {6, 3}};
    for (int i = 0; i < 3; i++) {
        char *path = as_test_path("gqa.safetensors");
        as_test_trace_spec sp = {.n_layers = 1, .hq = cfg[i][0], .hkv = cfg[i][1], .t = 1, .n = 2,
                                 .d = 2, .dtype = AS_DT_F32, .gen = gen_int};
        cr_assert_eq(as_test_write_trace(path, &sp), 0);
        as_trace *tr = open_ok(path);
        const as_layer *l = as_trace_layer(tr, 0);
        int64_t g = cfg[i][0] / cfg[i][1];
        for (int64_t h = 0; h < l->hq; h++) cr_assert_eq(as_layer_kv_head(l, h), h / g);
        as_trace_free(tr);
        free(path);
    }
}

Test(trace, metadata_scale_and_format)
{
    char *path = as_test_path("scale.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 1, .n = 3, .d = 16,
                             .dtype = AS_DT_F32, .scale = 0.0625, .model = "tiny-model"};
    cr_assert_eq(as_test_write_trace(path, &sp), 0);
    as_trace *tr = open_ok(path);
    cr_assert_eq(as_trace_layer(tr, 0)->scale, 0.0625);
    cr_assert_str_eq(as_trace_model(tr), "tiny-model");
    cr_assert_eq(as_trace_n_meta(tr), 5);
    cr_assert_str_eq(as_trace_meta_at(tr, 4)->key, "scale");
    cr_assert_null(as_trace_meta_at(tr, 5));
    as_trace_free(tr);

    fx_t base[3] = {Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48)};
    const char *bad_scales[] = {"abc", "-1", "0", "inf", "nan", "1e400", "", "0.5x", " "};
    for (size_t i = 0; i < sizeof bad_scales / sizeof *bad_scales; i++) {
        char meta[64];
        snprintf(meta, sizeof meta, "{\"scale\":\"%s\"}", bad_scales[i]);
        char *p = write_st("badscale.safetensors", base, 3, meta);
        expect_open_fails(p, AS_ERR_FORMAT, "metadata 'scale'", "not a positive number");
        free(p);
    }
    char *p = write_st("sc.safetensors", base, 3, "{\"scale\":\"2.5e-1\",\"rope_applied\":\"True\"}");
    tr = open_ok(p);
    cr_assert_eq(as_trace_layer(tr, 0)->scale, 0.25);
    cr_assert_eq(as_trace_rope_applied(tr), 1);
    cr_assert_str_eq(as_trace_model(tr), "unknown");
    as_trace_free(tr);
    free(p);
    p = write_st("rope.safetensors", base, 3, "{\"rope_applied\":\"maybe\"}");
    tr = open_ok(p);
    cr_assert_eq(as_trace_rope_applied(tr), -1);
    cr_assert_eq(as_trace_layer(tr, 0)->scale, 0.5); /* 1/sqrt(4) */
    as_trace_free(tr);
    free(p);
    p = write_st("fmt.safetensors", base, 3, "{\"format\":\"other-format\"}");
    expect_open_fails(p, AS_ERR_FORMAT, "metadata format is 'other-format'", "attnscope-trace");
    free(p);
    free(path);
}

Test(trace, layer_names_order_and_foreign_tensors)
{
    /* layers 10, 9, 0 declared in that order; foreign tensors and unknown parts are ignored */
    fx_t ts[] = {{"layers.10.q", "F16", "[1,1,2]", 4, NULL}, {"layers.10.k", "F16", "[1,2,2]", 8, NULL},
                 {"layers.10.v", "F16", "[1,2,2]", 8, NULL}, {"embed.weight", "I32", "[3]", 12, NULL},
                 {"layers.9.q", "F32", "[1,1,2]", 8, NULL},  {"layers.9.k", "F32", "[1,2,2]", 16, NULL},
                 {"layers.9.v", "F32", "[1,2,2]", 16, NULL}, {"layers.0.q", "BF16", "[1,1,2]", 4, NULL},
                 {"layers.0.k", "BF16", "[1,2,2]", 8, NULL}, {"layers.0.v", "BF16", "[1,2,2]", 8, NULL},
                 {"layers.0.attn_mask", "I64", "[2]", 16, NULL},
                 {"layers.3.attn_mask", "I64", "[2]", 16, NULL}, /* must not create layer 3 */
                 {"layers.07.q", "F32", "[9]", 36, NULL},        /* leading zero: not a layer */
                 {"layers.+1.q", "F32", "[9]", 36, NULL},
                 {"layers. 1.q", "F32", "[9]", 36, NULL},
                 {"layers.-1.q", "F32", "[9]", 36, NULL},
                 {"layers.99999999999999999999.q", "F32", "[9]", 36, NULL}};
    char *p = write_st("order.safetensors", ts, (int)(sizeof ts / sizeof *ts), NULL);
    as_trace *tr = open_ok(p);
    cr_assert_eq(as_trace_n_layers(tr), 3);
    cr_assert_eq(as_trace_layer(tr, 0)->index, 0);
    cr_assert_eq(as_trace_layer(tr, 1)->index, 9);
    cr_assert_eq(as_trace_layer(tr, 2)->index, 10);
    cr_assert_eq(as_trace_layer(tr, 2)->q->dtype, AS_DT_F16);
    cr_assert_null(as_trace_find_layer(tr, 3));
    cr_assert_null(as_trace_find_layer(tr, 1));
    cr_assert_null(as_trace_find_layer(tr, 7));
    as_trace_free(tr);
    free(p);
    /* only non-trace tensors */
    fx_t none[] = {{"layers.+1.q", "F32", "[1]", 4, NULL}, {"x", "F32", "[1]", 4, NULL}};
    p = write_st("none.safetensors", none, 2, NULL);
    expect_open_fails(p, AS_ERR_FORMAT, "no 'layers.L.{q,k,v}' tensors found", NULL);
    free(p);
    p = write_st("empty_hdr.safetensors", NULL, 0, "{}");
    expect_open_fails(p, AS_ERR_FORMAT, "no 'layers.L.{q,k,v}'", NULL);
    free(p);
}

Test(trace, structure_errors)
{
    static const struct {
        fx_t t[4];
        int n;
        as_status st;
        const char *want1, *want2;
    } cases[] = {
        /* missing tensors */
        {{Q("[2,1,4]", 32), V("[1,3,4]", 48)}, 2, AS_ERR_FORMAT, "layer 0 has no tensor 'layers.0.k'", NULL},
        {{{"layers.2.q_pos", "I32", "[1]", 4, NULL}}, 1, AS_ERR_FORMAT, "no tensor 'layers.2.q'", NULL},
        /* wrong ranks */
        {{Q("[2,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48)}, 3, AS_ERR_FORMAT,
         "tensor 'layers.0.q' has rank 2, expected 3", "[Hq, T, d]"},
        {{Q("[2,1,4]", 32), K("[1,1,3,4]", 48), V("[1,3,4]", 48)}, 3, AS_ERR_FORMAT,
         "tensor 'layers.0.k' has rank 4, expected 3", "[Hkv, N, d]"},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[12]", 48)}, 3, AS_ERR_FORMAT,
         "tensor 'layers.0.v' has rank 1", NULL},
        /* integer q/k/v */
        {{{"layers.0.q", "I32", "[2,1,4]", 32, NULL}, K("[1,3,4]", 48), V("[1,3,4]", 48)}, 3,
         AS_ERR_FORMAT, "tensor 'layers.0.q' has dtype I32, expected a float", NULL},
        /* empty dimensions */
        {{Q("[2,0,4]", 0), K("[1,3,4]", 48), V("[1,3,4]", 48)}, 3, AS_ERR_FORMAT,
         "tensor 'layers.0.q' has an empty dimension", NULL},
        {{Q("[2,1,4]", 32), K("[1,0,4]", 0), V("[1,0,4]", 0)}, 3, AS_ERR_FORMAT,
         "'layers.0.k' has an empty dimension", NULL},
        /* GQA */
        {{Q("[3,1,4]", 48), K("[2,3,4]", 96), V("[2,3,4]", 96)}, 3, AS_ERR_FORMAT,
         "layer 0 has 3 query heads, not a multiple of its 2 kv heads", NULL},
        {{Q("[2,1,4]", 32), K("[4,3,4]", 192), V("[4,3,4]", 192)}, 3, AS_ERR_FORMAT,
         "not a multiple", NULL},
        /* head dims */
        {{Q("[2,1,4]", 32), K("[1,3,2]", 24), V("[1,3,2]", 24)}, 3, AS_ERR_FORMAT,
         "layers.0.k has head dim 2 but layers.0.q has 4", NULL},
        /* v shape != k shape */
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,2,4]", 32)}, 3, AS_ERR_FORMAT,
         "layers.0.v has shape [1, 2, 4], expected the shape of layers.0.k [1, 3, 4]", NULL},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,8]", 96)}, 3, AS_ERR_FORMAT,
         "layers.0.v has shape", NULL},
        /* q_pos: length, rank, dtype */
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48), {"layers.0.q_pos", "I32", "[2]", 8, NULL}},
         4, AS_ERR_FORMAT, "layers.0.q_pos must have shape [1]", NULL},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48), {"layers.0.q_pos", "I32", "[1,1]", 4, NULL}},
         4, AS_ERR_FORMAT, "layers.0.q_pos must have shape", NULL},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48), {"layers.0.q_pos", "F32", "[1]", 4, NULL}},
         4, AS_ERR_FORMAT, "layers.0.q_pos has dtype F32, expected I32 or I64", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = write_st("bad.safetensors", cases[i].t, cases[i].n, NULL);
        expect_open_fails(p, cases[i].st, cases[i].want1, cases[i].want2);
        free(p);
    }
}

Test(trace, positions_out_of_range)
{
    const int32_t pos_bad[][2] = {{0, 3}, {-1, 0}, {2, 2147483647}};
    for (int i = 0; i < 3; i++) {
        fx_t ts[4] = {Q("[2,2,4]", 64), K("[1,3,4]", 48), V("[1,3,4]", 48),
                      {"layers.0.q_pos", "I32", "[2]", 8, pos_bad[i]}};
        char *p = write_st("pos.safetensors", ts, 4, NULL);
        char want[64];
        snprintf(want, sizeof want, "q_pos[%d] = %d is outside [0, 3)", pos_bad[i][0] >= 0 && pos_bad[i][0] < 3 ? 1 : 0,
                 pos_bad[i][0] >= 0 && pos_bad[i][0] < 3 ? pos_bad[i][1] : pos_bad[i][0]);
        expect_open_fails(p, AS_ERR_VALUE, want, "layers.0");
        free(p);
    }
    const int64_t big[1] = {INT64_MIN};
    fx_t ts[4] = {Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48),
                  {"layers.0.q_pos", "I64", "[1]", 8, big}};
    char *p = write_st("pos64.safetensors", ts, 4, NULL);
    expect_open_fails(p, AS_ERR_VALUE, "layers.0.q_pos[0]", "outside [0, 3)");
    free(p);
    /* in range (I64, any order): visibility follows each position */
    const int64_t ok[3] = {2, 0, 1};
    fx_t good[4] = {Q("[2,3,4]", 96), K("[1,3,4]", 48), V("[1,3,4]", 48),
                    {"layers.0.q_pos", "I64", "[3]", 24, ok}};
    p = write_st("posok.safetensors", good, 4, NULL);
    as_trace *tr = open_ok(p);
    const as_layer *l = as_trace_layer(tr, 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(as_layer_visible(l, i), ok[i] + 1);
    as_trace_free(tr);
    free(p);
}

/* Put one non-finite value at element idx of tensor k (the others zero) and check the scan. */
static void nonfinite_case(const char *dtype, size_t isz, const unsigned char *bits, size_t idx,
                           const char *what, const char *where)
{
    unsigned char kbuf[2 * 3 * 4 * 8] = {0};
    memcpy(kbuf + idx * isz, bits, isz);
    fx_t ts[3] = {{"layers.0.q", dtype, "[2,1,4]", 8 * isz, NULL},
                  {"layers.0.k", dtype, "[2,3,4]", 24 * isz, kbuf},
                  {"layers.0.v", dtype, "[2,3,4]", 24 * isz, NULL}};
    char *p = write_st("nf.safetensors", ts, 3, NULL);
    as_trace *tr = open_ok(p); /* structure is fine; values are checked by the scan */
    char err[AS_ERR_LEN], want[160];
    cr_assert_eq(as_trace_check_finite(tr, err), AS_ERR_VALUE, "%s %s", dtype, what);
    snprintf(want, sizeof want, "tensor 'layers.0.k' holds %s at element %zu %s", what, idx, where);
    cr_assert(strstr(err, want) && strstr(err, p), "'%s' lacks '%s'", err, want);
    /* one layer's check (a rank of the MPI engine) says the same */
    char err1[AS_ERR_LEN];
    cr_assert_eq(as_layer_check_finite(tr, as_trace_layer(tr, 0), err1), AS_ERR_VALUE);
    cr_assert_str_eq(err1, err);
    as_trace_free(tr);
    free(p);
}

Test(trace, nan_and_inf_reported_with_name_and_index)
{
    /* element 19 of [2,3,4]: head 1, row 1, col 3 */
    const char *where = "[head 1, row 1, col 3]";
    unsigned char f64nan[8] = {1, 0, 0, 0, 0, 0, 0xf8, 0x7f}, f64inf[8] = {0, 0, 0, 0, 0, 0, 0xf0, 0xff};
    unsigned char f32nan[4] = {0, 0, 0xc0, 0x7f}, f32inf[4] = {0, 0, 0x80, 0x7f},
                  f32snan[4] = {1, 0, 0x80, 0x7f};
    unsigned char f16nan[2] = {0x01, 0x7c}, f16inf[2] = {0x00, 0xfc};
    unsigned char bfnan[2] = {0xc0, 0x7f}, bfinf[2] = {0x80, 0x7f}, bfsnan[2] = {0x81, 0xff};
    nonfinite_case("F64", 8, f64nan, 19, "NaN", where);
    nonfinite_case("F64", 8, f64inf, 19, "Inf", where);
    nonfinite_case("F32", 4, f32nan, 19, "NaN", where);
    nonfinite_case("F32", 4, f32inf, 19, "Inf", where);
    nonfinite_case("F32", 4, f32snan, 0, "NaN", "[head 0, row 0, col 0]");
    nonfinite_case("F16", 2, f16nan, 19, "NaN", where);
    nonfinite_case("F16", 2, f16inf, 23, "Inf", "[head 1, row 2, col 3]");
    nonfinite_case("BF16", 2, bfnan, 19, "NaN", where);
    nonfinite_case("BF16", 2, bfinf, 19, "Inf", where);
    nonfinite_case("BF16", 2, bfsnan, 4, "NaN", "[head 0, row 1, col 0]");
}

Test(trace, extreme_finite_values_pass_the_scan)
{
    double f64s[24] = {DBL_MAX, -DBL_MAX, DBL_MIN, 0x1p-1074, -0.0};
    float f32s[24] = {FLT_MAX, -FLT_MAX, FLT_MIN, 0x1p-149f, -0.0f};
    uint16_t f16s[24] = {0x7bff, 0xfbff, 0x0001, 0x8000, 0x0400};
    uint16_t bfs[24] = {0x7f7f, 0xff7f, 0x0001, 0x8000, 0x0080};
    const void *data[4] = {f64s, f32s, f16s, bfs};
    const char *names[4] = {"F64", "F32", "F16", "BF16"};
    const size_t isz[4] = {8, 4, 2, 2};
    for (int i = 0; i < 4; i++) {
        fx_t ts[3] = {{"layers.0.q", names[i], "[2,1,4]", 8 * isz[i], NULL},
                      {"layers.0.k", names[i], "[2,3,4]", 24 * isz[i], data[i]},
                      {"layers.0.v", names[i], "[2,3,4]", 24 * isz[i], data[i]}};
        char *p = write_st("fin.safetensors", ts, 3, NULL);
        as_trace *tr = open_ok(p);
        char err[AS_ERR_LEN];
        cr_assert_eq(as_trace_check_finite(tr, err), AS_OK, "%s: %s", names[i], err);
        as_trace_free(tr);
        free(p);
    }
}

Test(trace, bad_files)
{
    char *p = as_test_path("empty.safetensors");
    cr_assert_eq(fx_write(p, "", 0), 0);
    expect_open_fails(p, AS_ERR_FORMAT, "0 bytes", NULL);
    free(p);
    p = as_test_path("does-not-exist.safetensors");
    expect_open_fails(p, AS_ERR_IO, "cannot open", NULL);
    free(p);
    /* parse errors carry the path and the tensor */
    p = as_test_path("trunc.safetensors");
    fx_t ts[3] = {Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48)};
    fx_buf b = fx_st_tensors(ts, 3, NULL);
    cr_assert_eq(fx_write(p, b.p, b.n - 10), 0);
    free(b.p);
    expect_open_fails(p, AS_ERR_FORMAT, "tensor 'layers.0.v'", "past the end of the data area");
    free(p);
    /* a FIFO is refused at once, not waited on */
    p = as_test_path("fifo");
    cr_assert_eq(mkfifo(p, 0600), 0);
    alarm(20);
    expect_open_fails(p, AS_ERR_IO, "not a regular file", NULL);
    alarm(0);
    free(p);
}

/* ---- .npy directories ------------------------------------------------------------------ */

static char *mkdir_in_tmp(const char *name)
{
    char *d = as_test_path(name);
    cr_assert_eq(mkdir(d, 0755), 0, "%s", d);
    return d;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void npy_put(const char *dir, const char *name, as_dtype dt, int nd, const int64_t *sh,
                    const double *vals)
{
    uint64_t n = 1;
    for (int i = 0; i < nd; i++) n *= (uint64_t)sh[i];
    unsigned char *raw = malloc(n * 8 + 1);
    as_dtype_from_f64(dt, vals, n, raw);
    char *p = join(dir, name), err[AS_ERR_LEN];
    cr_assert_eq(as_npy_write(p, dt, nd, sh, raw, err), AS_OK, "%s", err);
    free(p);
    free(raw);
}

static void text_put(const char *dir, const char *name, const char *text)
{
    char *p = join(dir, name);
    cr_assert_eq(fx_write(p, text, strlen(text)), 0);
    free(p);
}

/* A good npy dir: q [2,2,3] f16, k/v [1,4,3] f32, q_pos i64 [2]; values v[i] = i - 5. */
static char *good_npy_dir(const char *name)
{
    char *d = mkdir_in_tmp(name);
    double vals[64];
    for (int i = 0; i < 64; i++) vals[i] = i - 5;
    const int64_t qs[3] = {2, 2, 3}, ks[3] = {1, 4, 3}, ps[1] = {2};
    npy_put(d, "layers.0.q.npy", AS_DT_F16, 3, qs, vals);
    npy_put(d, "layers.0.k.npy", AS_DT_F32, 3, ks, vals);
    npy_put(d, "layers.0.v.npy", AS_DT_F64, 3, ks, vals + 1);
    const double pos[2] = {2, 3};
    npy_put(d, "layers.0.q_pos.npy", AS_DT_I64, 1, ps, pos);
    text_put(d, "README.txt", "not a trace file");
    text_put(d, "other.npy", "not parsed: not a layers.* name");
    return d;
}

Test(trace, npy_dir_good)
{
    char *d = good_npy_dir("npydir");
    text_put(d, "metadata.json",
             "{\"format\": \"attnscope-trace\", \"model\": \"npy-model\", \"scale\": 0.5,\n"
             " \"rope_applied\": true, \"layers\": 1}\n");
    as_trace *tr = open_ok(d);
    cr_assert_str_eq(as_trace_kind(tr), "npy-dir");
    cr_assert_eq(as_trace_n_layers(tr), 1);
    const as_layer *l = as_trace_layer(tr, 0);
    cr_assert(l->hq == 2 && l->hkv == 1 && l->t == 2 && l->n == 4 && l->d == 3);
    cr_assert_eq(l->scale, 0.5);
    cr_assert_str_eq(as_trace_model(tr), "npy-model");
    cr_assert_eq(as_trace_rope_applied(tr), 1);
    cr_assert_str_eq(as_trace_meta(tr, "layers"), "1");
    cr_assert_eq(as_layer_visible(l, 1), 4);
    double row[12];
    as_layer_read_v(l, 0, 0, 4, row);
    for (int i = 0; i < 12; i++) cr_assert_eq(row[i], i + 1 - 5);
    as_layer_read_q(l, 1, 1, row);
    for (int i = 0; i < 3; i++) cr_assert_eq(row[i], 9 + i - 5);
    char err[AS_ERR_LEN];
    cr_assert_eq(as_trace_check_finite(tr, err), AS_OK, "%s", err);
    /* every .npy file is registered: writers refuse to replace one while the trace is open */
    char *q = join(d, "layers.0.q.npy");
    cr_assert(as_input_is_open(d));
    cr_assert(as_input_is_open(q));
    const int64_t sh[1] = {1};
    float x = 0;
    cr_assert_eq(as_npy_write(q, AS_DT_F32, 1, sh, &x, err), AS_ERR_USAGE);
    as_st_spec sp = {"x", AS_DT_F32, 1, {1}};
    cr_assert_null(as_st_writer_open(q, &sp, 1, NULL, 0, err));
    as_trace_free(tr);
    cr_assert(!as_input_is_open(q));
    cr_assert(!as_input_is_open(d));
    free(q);
    free(d);
}

Test(trace, npy_dir_versions_and_nan)
{
    char *d = mkdir_in_tmp("npyv");
    const int64_t qs[3] = {1, 1, 2}, ks[3] = {1, 2, 2};
    float v[4] = {1, 2, 3, 4};
    unsigned char raw[16];
    fx_f32le(v, 4, raw);
    const char *dq = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2), }";
    const char *dk = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }";
    char *p = join(d, "layers.4.q.npy");
    cr_assert_eq(fx_write_buf(p, fx_npy(2, dq, raw, 8)), 0);
    free(p);
    p = join(d, "layers.4.k.npy");
    cr_assert_eq(fx_write_buf(p, fx_npy(3, dk, raw, 16)), 0);
    free(p);
    double vals[4] = {1, 2, 3, NAN};
    npy_put(d, "layers.4.v.npy", AS_DT_F64, 3, ks, vals);
    (void)qs;
    as_trace *tr = open_ok(d);
    cr_assert_eq(as_trace_layer(tr, 0)->index, 4);
    char err[AS_ERR_LEN];
    cr_assert_eq(as_trace_check_finite(tr, err), AS_ERR_VALUE);
    cr_assert(strstr(err, "tensor 'layers.4.v' holds NaN at element 3 [head 0, row 1, col 1]"), "%s",
              err);
    as_trace_free(tr);
    free(d);
}

Test(trace, npy_dir_errors)
{
    /* no npy files at all, and only foreign ones */
    char *d = mkdir_in_tmp("npy-empty");
    expect_open_fails(d, AS_ERR_FORMAT, "directory holds no layers.*.npy files", NULL);
    text_put(d, "x.npy", "");
    text_put(d, "layers.npy", "");
    expect_open_fails(d, AS_ERR_FORMAT, "no layers.*.npy", NULL);
    free(d);

    /* malformed metadata.json */
    const char *bad_meta[] = {"", "{", "[1, 2]", "{\"a\": {}}", "{\"a\": null}", "{\"a\": [1]}",
                              "{} trailing", "{\"a\": \"1\", \"a\": \"2\"}", "\"str\"",
                              "{\"scale\": \"-2\"}"};
    const char *want[] = {"not a JSON object", "not a JSON object", "not a JSON object",
                          "value of 'a' must be a string or number",
                          "must be a string or number", "must be a string or number",
                          "not a JSON object", "duplicate key 'a'", "not a JSON object",
                          "metadata 'scale'"};
    for (size_t i = 0; i < sizeof bad_meta / sizeof *bad_meta; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "npy-meta%zu", i);
        d = good_npy_dir(nm);
        text_put(d, "metadata.json", bad_meta[i]);
        char err[AS_ERR_LEN] = "";
        as_status st;
        as_trace *tr = as_trace_open_status(d, &st, err);
        cr_expect_null(tr, "%s", bad_meta[i]);
        cr_expect_eq(st, AS_ERR_FORMAT);
        cr_expect(strstr(err, want[i]), "%s: '%s' lacks '%s'", bad_meta[i], err, want[i]);
        cr_expect(strstr(err, d), "%s", err);
        if (i < 9) cr_expect(strstr(err, "metadata.json"), "%s", err);
        free(d);
    }
    /* metadata.json that is a directory */
    d = good_npy_dir("npy-metadir");
    char *m = join(d, "metadata.json");
    cr_assert_eq(mkdir(m, 0755), 0);
    expect_open_fails(d, AS_ERR_IO, "metadata.json", "not a regular file");
    free(m);
    free(d);

    /* a bad .npy inside is named: big-endian, Fortran order, truncated, a directory */
    static const struct {
        const char *dict;
        size_t dlen;
        const char *want;
    } bad_npy[] = {
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (1, 4, 3), }", 48, "big-endian"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (1, 4, 3), }", 48, "Fortran order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 3), }", 40, "truncated"},
        {"{'descr': '<u2', 'fortran_order': False, 'shape': (1, 4, 3), }", 24, "not supported"},
    };
    static const unsigned char zeros[64];
    for (size_t i = 0; i < sizeof bad_npy / sizeof *bad_npy; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "npy-bad%zu", i);
        d = good_npy_dir(nm);
        char *k = join(d, "layers.0.k.npy");
        cr_assert_eq(fx_write_buf(k, fx_npy(1, bad_npy[i].dict, zeros, bad_npy[i].dlen)), 0);
        expect_fail_named(d, k, AS_ERR_FORMAT, bad_npy[i].want, NULL); /* names the file */
        cr_expect(!as_input_is_open(k));
        free(k);
        free(d);
    }
    d = good_npy_dir("npy-subdir");
    char *k = join(d, "layers.0.k.npy");
    cr_assert_eq(unlink(k), 0);
    cr_assert_eq(mkdir(k, 0755), 0);
    expect_open_fails(d, AS_ERR_IO, "layers.0.k.npy", "not a regular file");
    free(k);
    free(d);
    /* an empty .npy file */
    d = good_npy_dir("npy-emptyfile");
    text_put(d, "layers.0.v.npy", "");
    expect_open_fails(d, AS_ERR_FORMAT, "layers.0.v.npy", "bad magic");
    free(d);
    /* structure errors in a dir name the directory */
    d = good_npy_dir("npy-gqa");
    const int64_t ks[3] = {3, 4, 3};
    double vals[36] = {0};
    npy_put(d, "layers.0.k.npy", AS_DT_F32, 3, ks, vals);
    npy_put(d, "layers.0.v.npy", AS_DT_F32, 3, ks, vals);
    expect_open_fails(d, AS_ERR_FORMAT, "2 query heads, not a multiple of its 3 kv heads", NULL);
    free(d);
}

/* A layer view over the caller's arrays reads what a trace of the same values reads: F64, F32
 * and F16 arrays (small integers, exact in each), GQA mapping, positions, scale; bad input is
 * refused with one line. */
Test(trace, layer_view_reads_caller_arrays)
{
    enum { HQ = 6, HKV = 2, T = 3, N = 5, D = 4 };
    double q[HQ * T * D], k[HKV * N * D], v[HKV * N * D];
    float qf[HQ * T * D], kf[HKV * N * D], vf[HKV * N * D];
    uint16_t qh[HQ * T * D], kh[HKV * N * D], vh[HKV * N * D];
    for (int h = 0; h < HQ; h++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < D; c++) q[(h * T + t) * D + c] = gen_int(NULL, 3, 'q', h, t, c);
    for (int h = 0; h < HKV; h++)
        for (int r = 0; r < N; r++)
            for (int c = 0; c < D; c++) {
                k[(h * N + r) * D + c] = gen_int(NULL, 3, 'k', h, r, c);
                v[(h * N + r) * D + c] = gen_int(NULL, 3, 'v', h, r, c);
            }
    as_dtype_from_f64(AS_DT_F32, q, HQ * T * D, qf);
    as_dtype_from_f64(AS_DT_F32, k, HKV * N * D, kf);
    as_dtype_from_f64(AS_DT_F32, v, HKV * N * D, vf);
    as_dtype_from_f64(AS_DT_F16, q, HQ * T * D, qh);
    as_dtype_from_f64(AS_DT_F16, k, HKV * N * D, kh);
    as_dtype_from_f64(AS_DT_F16, v, HKV * N * D, vh);
    const void *arr[3][3] = {{q, k, v}, {qf, kf, vf}, {qh, kh, vh}};
    const as_dtype dts[3] = {AS_DT_F64, AS_DT_F32, AS_DT_F16};
    const int64_t pos[T] = {2, 3, 4};
    char err[AS_ERR_LEN];
    for (int i = 0; i < 3; i++)
        for (int causal = 0; causal < 2; causal++) {
            as_layer_view vw;
            cr_assert_eq(as_layer_view_init(&vw, 3, dts[i], HQ, HKV, T, N, D, causal ? 0.5 : 0,
                                            arr[i][0], arr[i][1], arr[i][2], causal ? pos : NULL,
                                            err),
                         AS_OK, "%s", err);
            const as_layer *l = &vw.layer;
            cr_assert_eq((const void *)l, (const void *)&vw);
            cr_assert(l->index == 3 && l->hq == HQ && l->hkv == HKV && l->t == T && l->n == N &&
                      l->d == D);
            cr_assert_eq(l->scale, causal ? 0.5 : 0.5 /* 1/sqrt(4) */);
            cr_assert_eq(as_layer_is_causal(l), causal);
            double row[N * D];
            for (int64_t h = 0; h < HKV; h++) {
                as_layer_read_k(l, h, 1, 3, row);
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < D; c++)
                        cr_assert_eq(row[r * D + c], gen_int(NULL, 3, 'k', h, r + 1, c));
                as_layer_read_v(l, h, 0, N, row);
                for (int r = 0; r < N; r++)
                    for (int c = 0; c < D; c++)
                        cr_assert_eq(row[r * D + c], gen_int(NULL, 3, 'v', h, r, c));
            }
            for (int64_t h = 0; h < HQ; h++) {
                cr_assert_eq(as_layer_kv_head(l, h), h / 3);
                for (int64_t t = 0; t < T; t++) {
                    as_layer_read_q(l, h, t, row);
                    for (int c = 0; c < D; c++) cr_assert_eq(row[c], gen_int(NULL, 3, 'q', h, t, c));
                    cr_assert_eq(as_layer_visible(l, t), causal ? pos[t] + 1 : N);
                }
            }
        }
    as_layer_view *hv = as_layer_view_new(1, AS_DT_F32, HQ, HKV, T, N, D, 2.0, qf, kf, vf, NULL, err);
    cr_assert_not_null(hv, "%s", err);
    cr_assert_eq(hv->layer.scale, 2.0);
    as_layer_view_free(hv);
    /* refusals */
    as_layer_view vw;
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, 5, 2, T, N, D, 0, q, k, v, NULL, err),
                 AS_ERR_USAGE);
    cr_assert(strstr(err, "not a multiple"), "%s", err);
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, HQ, HKV, T, 0, D, 0, q, k, v, NULL, err),
                 AS_ERR_USAGE);
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_I32, HQ, HKV, T, N, D, 0, q, k, v, NULL, err),
                 AS_ERR_USAGE);
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, HQ, HKV, T, N, D, 0, q, NULL, v, NULL, err),
                 AS_ERR_USAGE);
    const int64_t bad[T] = {0, 5, 1};
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, HQ, HKV, T, N, D, 0, q, k, v, bad, err),
                 AS_ERR_VALUE);
    cr_assert(strstr(err, "q_pos[1] = 5"), "%s", err);
    cr_assert_null(as_layer_view_new(0, AS_DT_F64, HQ, HKV, T, N, D, 0, q, k, v, bad, err));
}

Test(trace, kv_check_reads_only_its_part)
{
    /* 2 query heads over 2 kv heads, 3000 keys: a bf16 NaN in kv head 1's keys past the first
     * blocks of the word scan; kv head 0's part passes, kv head 1's and the whole-file scan
     * name the same element */
    enum { N = 3000, D = 4 };
    static uint16_t kbuf[2 * N * D];
    memset(kbuf, 0, sizeof kbuf);
    const size_t bad = (size_t)N * D + 4097; /* head 1, row 1024, col 1 */
    kbuf[bad] = 0x7fc0;
    fx_t ts[3] = {{"layers.0.q", "BF16", "[2,1,4]", 2 * D * 2, NULL},
                  {"layers.0.k", "BF16", "[2,3000,4]", sizeof kbuf, kbuf},
                  {"layers.0.v", "BF16", "[2,3000,4]", sizeof kbuf, NULL}};
    char *p = write_st("kvnf.safetensors", ts, 3, NULL);
    as_trace *tr = open_ok(p);
    const as_layer *l = as_trace_layer(tr, 0);
    char err[AS_ERR_LEN], err1[AS_ERR_LEN];
    cr_assert_eq(as_trace_check_finite(tr, err), AS_ERR_VALUE);
    cr_assert(strstr(err, "tensor 'layers.0.k' holds NaN at element 16097 [head 1, row 1024, "
                          "col 1]"), "%s", err);
    cr_assert_eq(as_layer_check_finite_kv(tr, l, 0, err1), AS_OK, "%s", err1);
    cr_assert_eq(as_layer_check_finite_kv(tr, l, 1, err1), AS_ERR_VALUE);
    cr_assert_str_eq(err1, err);
    /* at the last element of a block and the first of the next */
    kbuf[bad] = 0;
    kbuf[4095] = 0xff80; /* -Inf */
    kbuf[4096] = 0x7f80;
    free(p);
    as_trace_free(tr);
    p = write_st("kvnf2.safetensors", ts, 3, NULL);
    tr = open_ok(p);
    l = as_trace_layer(tr, 0);
    cr_assert_eq(as_layer_check_finite_kv(tr, l, 0, err), AS_ERR_VALUE);
    cr_assert(strstr(err, "holds Inf at element 4095 [head 0, row 1023, col 3]"), "%s", err);
    cr_assert_eq(as_layer_check_finite_kv(tr, l, 1, err), AS_OK, "%s", err);
    as_trace_free(tr);
    free(p);
}

Test(trace, layer_check_reads_only_its_layer)
{
    /* a NaN in layer 1's values: layer 0's check passes, layer 1's names the tensor */
    unsigned char vbuf[1 * 3 * 4 * 8] = {0};
    const unsigned char f64nan[8] = {1, 0, 0, 0, 0, 0, 0xf8, 0x7f};
    memcpy(vbuf + 5 * 8, f64nan, 8);
    fx_t ts[6] = {{"layers.0.q", "F64", "[1,1,4]", 32, NULL}, {"layers.0.k", "F64", "[1,3,4]", 96, NULL},
                  {"layers.0.v", "F64", "[1,3,4]", 96, NULL}, {"layers.1.q", "F64", "[1,1,4]", 32, NULL},
                  {"layers.1.k", "F64", "[1,3,4]", 96, NULL}, {"layers.1.v", "F64", "[1,3,4]", 96, vbuf}};
    char *p = write_st("nf2.safetensors", ts, 6, NULL);
    as_trace *tr = open_ok(p);
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_check_finite(tr, as_trace_find_layer(tr, 0), err), AS_OK, "%s", err);
    cr_assert_eq(as_layer_check_finite(tr, as_trace_find_layer(tr, 1), err), AS_ERR_VALUE);
    cr_assert(strstr(err, "tensor 'layers.1.v' holds NaN at element 5"), "%s", err);
    as_trace_free(tr);
    free(p);
}
