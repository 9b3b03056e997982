/* Tests of the attnscope program's input handling (runs $AS_BIN): help, version, usage errors,
 * and every malformed trace class giving exactly one line on stderr that names the file (and
 * the tensor where there is one), exit status 2, no crash and nothing on stdout; good traces
 * exit 0; a command never writes over its input. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "as_fixtures.h"
#include "as_npy.h"
#include "as_testutil.h"
#include "as_trace.h"

static int run(const char *fmt, const char *a, const char *b, char **out, char **err)
{
    char args[4096];
    snprintf(args, sizeof args, fmt, a, b);
    return fx_run(args, out, err);
}

/* `attnscope CMD 'path'` must exit 2 with one stderr line naming `named` (and want). */
static void expect_bad_named(const char *cmd, const char *path, const char *named,
                             const char *want)
{
    char *out = NULL, *err = NULL;
    char fmt[128];
    snprintf(fmt, sizeof fmt, "%s '%%s'%%s", cmd);
    int rc = run(fmt, path, "", &out, &err);
    cr_expect_eq(rc, 2, "%s %s: exit %d, stderr '%s'", cmd, path, rc, err);
    cr_expect_eq(fx_count_lines(err), 1, "%s %s: stderr '%s'", cmd, path, err);
    cr_expect(strstr(err, named) != NULL, "stderr '%s' does not name %s", err, named);
    cr_expect(!want || strstr(err, want), "stderr '%s' lacks '%s'", err, want);
    cr_expect(strncmp(err, "attnscope ", 10) == 0, "%s", err);
    cr_expect_str_eq(out, "", "%s %s wrote to stdout", cmd, path);
    free(out);
    free(err);
}

static void expect_bad_all_named(const char *path, const char *named, const char *want)
{
    expect_bad_named("info", path, named, want);
    expect_bad_named("info --json", path, named, want);
    expect_bad_named("attend --json", path, named, want);
}

static void expect_bad_all(const char *path, const char *want)
{
    expect_bad_all_named(path, path, want);
}

Test(cli, help_version_usage)
{
    char *out = NULL, *err = NULL;
    cr_assert_eq(fx_run("help", &out, &err), 0);
    cr_assert(strstr(out, "usage: attnscope COMMAND") && strstr(out, "info") && strstr(out, "attend"),
              "%s", out);
    cr_assert_str_eq(err, "");
    free(out);
    free(err);
    cr_assert_eq(fx_run("--help", &out, NULL), 0);
    free(out);
    cr_assert_eq(fx_run("help info", &out, &err), 0);
    cr_assert(strstr(out, "usage: attnscope info TRACE"), "%s", out);
    free(out);
    free(err);
    cr_assert_eq(fx_run("help attend", &out, NULL), 0);
    cr_assert(strstr(out, "usage: attnscope attend TRACE"), "%s", out);
    free(out);
    cr_assert_eq(fx_run("info --help", &out, NULL), 0);
    cr_assert(strstr(out, "usage: attnscope info"), "%s", out);
    free(out);
    cr_assert_eq(fx_run("--version", &out, &err), 0);
    cr_assert_str_eq(out, "attnscope " AS_VERSION "\n");
    cr_assert_str_eq(err, "");
    free(out);
    free(err);

    /* usage errors: exit 2, one line on stderr, nothing on stdout */
    const char *bad[] = {"", "nosuchcommand", "help nosuchcommand", "info", "info a b",
                         "info --bogus x", "attend", "attend --query x t", "attend --layer -1 t"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = fx_run(bad[i], &out, &err);
        cr_expect_eq(rc, 2, "'%s': exit %d", bad[i], rc);
        if (bad[i][0]) { /* no arguments: the overview goes to stderr */
            cr_expect_eq(fx_count_lines(err), 1, "'%s': stderr '%s'", bad[i], err);
            cr_expect_str_eq(out, "", "'%s'", bad[i]);
        }
        free(out);
        free(err);
    }
    cr_assert_eq(fx_run("nosuchcommand", NULL, &err), 2);
    cr_assert(strstr(err, "'nosuchcommand' is not a command"), "%s", err);
    free(err);
}

static char *tmp(const char *name) { return as_test_path(name); }

static char *write_st(const char *name, const fx_t *ts, int n, const char *meta)
{
    char *path = tmp(name);
    cr_assert_eq(fx_write_buf(path, fx_st_tensors(ts, n, meta)), 0);
    return path;
}

static char *write_raw(const char *name, fx_buf b)
{
    char *path = tmp(name);
    cr_assert_eq(fx_write_buf(path, b), 0);
    return path;
}

#define Q(shape, nb) {"layers.0.q", "F32", shape, nb, NULL}
#define K(shape, nb) {"layers.0.k", "F32", shape, nb, NULL}
#define V(shape, nb) {"layers.0.v", "F32", shape, nb, NULL}

Test(cli, malformed_safetensors_one_line_exit_2)
{
    static const unsigned char z[64];
    char *p;
    /* empty, truncated, header length past EOF, huge header length */
    p = write_raw("empty.safetensors", (fx_buf){NULL, 0});
    expect_bad_all(p, "0 bytes");
    free(p);
    fx_buf five = {0};
    fx_put(&five, "\x10\0\0\0\0", 5);
    p = write_raw("trunc.safetensors", five);
    expect_bad_all(p, "too short");
    free(p);
    p = write_raw("past.safetensors", fx_st_len(4096, "{}", NULL, 0));
    expect_bad_all(p, "runs past the end");
    free(p);
    p = write_raw("huge.safetensors", fx_st_len(UINT64_MAX, "{}", NULL, 0));
    expect_bad_all(p, "exceeds");
    free(p);
    /* bad JSON, unknown dtype, shape/bytes mismatch, offsets */
    p = write_raw("json.safetensors", fx_st("{\"layers.0.q\":", NULL, 0));
    expect_bad_all(p, "not valid JSON");
    free(p);
    p = write_raw("ctrl.safetensors", fx_st("{\"layers.0.q\nx\":1}", NULL, 0));
    expect_bad_all(p, "control character");
    free(p);
    fx_t dt[3] = {{"layers.0.q", "U8", "[2,1,4]", 8, NULL}, K("[1,3,4]", 48), V("[1,3,4]", 48)};
    p = write_st("dtype.safetensors", dt, 3, NULL);
    expect_bad_all(p, "tensor 'layers.0.q': unsupported dtype 'U8'");
    free(p);
    fx_t mm[3] = {Q("[2,1,4]", 28), K("[1,3,4]", 48), V("[1,3,4]", 48)};
    p = write_st("mismatch.safetensors", mm, 3, NULL);
    expect_bad_all(p, "tensor 'layers.0.q': shape needs 8 x 4 bytes but data_offsets span 28");
    free(p);
    const char *hdrs[][2] = {
        {"{\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"layers.0.k\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         "tensor 'layers.0.k': data overlaps"},
        {"{\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
         "tensor 'layers.0.q': data_offsets [0, 16) past the end"},
        {"{\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         "tensor 'layers.0.q': gap of 4 bytes"},
        {"{\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         "trailing bytes"},
        {"{\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"layers.0.q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         "duplicate key 'layers.0.q'"},
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
        p = write_raw("off.safetensors", fx_st(hdrs[i][0], z, 12));
        expect_bad_all(p, hdrs[i][1]);
        free(p);
    }
    /* a name holding a newline (escaped in JSON) still gives one line */
    p = write_raw("nl.safetensors",
                  fx_st("{\"layers.0.q\\nevil\":{\"dtype\":\"XX\",\"shape\":[1],\"data_offsets\":[0,4]}}", z, 4));
    expect_bad_all(p, "unsupported dtype 'XX'");
    free(p);
    /* a file name holding a newline */
    char *odd = tmp("odd\nname.safetensors");
    cr_assert_eq(fx_write(odd, "x", 1), 0);
    char *out = NULL, *err = NULL;
    char args[1024];
    snprintf(args, sizeof args, "info \"$(printf '%s/odd\\nname.safetensors')\"", as_test_tmpdir());
    cr_assert_eq(fx_run(args, &out, &err), 2);
    cr_assert_eq(fx_count_lines(err), 1, "%s", err);
    free(out);
    free(err);
    free(odd);
    /* not there, a directory without npy files */
    p = tmp("missing.safetensors");
    expect_bad_all(p, "cannot open");
    free(p);
    p = tmp("emptydir");
    cr_assert_eq(mkdir(p, 0755), 0);
    expect_bad_all(p, "no layers.*.npy files");
    free(p);
}

Test(cli, malformed_trace_structure_one_line_exit_2)
{
    static const struct {
        fx_t t[4];
        int n;
        const char *want;
    } cases[] = {
        {{Q("[2,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48)}, 3, "tensor 'layers.0.q' has rank 2"},
        {{Q("[2,1,4]", 32), K("[3,4]", 48), V("[1,3,4]", 48)}, 3, "tensor 'layers.0.k' has rank 2"},
        {{Q("[3,1,4]", 48), K("[2,3,4]", 96), V("[2,3,4]", 96)}, 3, "not a multiple of its 2 kv heads"},
        {{Q("[2,1,4]", 32), K("[1,3,2]", 24), V("[1,3,2]", 24)}, 3, "layers.0.k has head dim 2"},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,2,4]", 32)}, 3, "layers.0.v has shape [1, 2, 4]"},
        {{Q("[2,1,4]", 32), V("[1,3,4]", 48)}, 2, "no tensor 'layers.0.k'"},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48), {"layers.0.q_pos", "I32", "[2]", 8, NULL}},
         4, "layers.0.q_pos must have shape [1]"},
        {{Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48), {"layers.0.q_pos", "F32", "[1]", 4, NULL}},
         4, "layers.0.q_pos has dtype F32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = write_st("struct.safetensors", cases[i].t, cases[i].n, NULL);
        expect_bad_all(p, cases[i].want);
        free(p);
    }
    const int32_t pos[1] = {3};
    fx_t qp[4] = {Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48),
                  {"layers.0.q_pos", "I32", "[1]", 4, pos}};
    char *p = write_st("pos.safetensors", qp, 4, NULL);
    expect_bad_all(p, "layers.0.q_pos[0] = 3 is outside [0, 3)");
    free(p);
    fx_t ok[3] = {Q("[2,1,4]", 32), K("[1,3,4]", 48), V("[1,3,4]", 48)};
    p = write_st("scale.safetensors", ok, 3, "{\"scale\":\"-1\"}");
    expect_bad_all(p, "metadata 'scale' = '-1'");
    free(p);
}

Test(cli, nan_inf_named_with_index)
{
    float k[24] = {0};
    k[13] = INFINITY;
    float q[8] = {0};
    q[5] = NAN;
    unsigned char kb[96], qb[32];
    fx_f32le(k, 24, kb);
    fx_f32le(q, 8, qb);
    fx_t ts[3] = {{"layers.0.q", "F32", "[2,1,4]", 32, NULL}, {"layers.0.k", "F32", "[2,3,4]", 96, kb},
                  {"layers.0.v", "F32", "[2,3,4]", 96, NULL}};
    char *p = write_st("inf.safetensors", ts, 3, NULL);
    expect_bad_all(p, "tensor 'layers.0.k' holds Inf at element 13 [head 1, row 0, col 1]");
    /* --no-check skips the scan: the structure is fine */
    char *out = NULL, *err = NULL;
    cr_assert_eq(run("info --no-check '%s'%s", p, "", &out, &err), 0, "%s", err);
    free(out);
    free(err);
    free(p);
    ts[0].data = qb;
    ts[1].data = NULL;
    p = write_st("nan.safetensors", ts, 3, NULL);
    expect_bad_all(p, "tensor 'layers.0.q' holds NaN at element 5 [head 1, row 0, col 1]");
    free(p);
}

Test(cli, malformed_npy_dirs_one_line_exit_2)
{
    static const unsigned char z[256];
    const struct {
        const char *dict;
        size_t dlen;
        int major;
        const char *want;
    } cases[] = {
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (1, 3, 4), }", 48, 1, "big-endian"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 4), }", 48, 1, "Fortran order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 4), }", 44, 2, "truncated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 4), }", 48, 4, "version 4.0"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (1, 3, 4), }", 96, 3, "not supported"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 48, 1, "tensor 'layers.0.k' has rank 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "npydir%zu", i);
        char *d = tmp(nm);
        cr_assert_eq(mkdir(d, 0755), 0);
        char path[1024];
        const char *dq = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 4), }";
        const char *dk = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 4), }";
        snprintf(path, sizeof path, "%s/layers.0.q.npy", d);
        fx_write_buf(path, fx_npy(1, dq, z, 32));
        snprintf(path, sizeof path, "%s/layers.0.v.npy", d);
        fx_write_buf(path, fx_npy(1, dk, z, 48));
        snprintf(path, sizeof path, "%s/layers.0.k.npy", d);
        fx_write_buf(path, fx_npy(cases[i].major, cases[i].dict, z, cases[i].dlen));
        /* the message names the .npy file itself for per-file problems, the dir otherwise */
        expect_bad_all_named(d, i == 5 ? d : path, cases[i].want);
        free(d);
    }
    /* malformed metadata.json */
    char *d = tmp("npymeta");
    cr_assert_eq(mkdir(d, 0755), 0);
    char path[1024];
    const char *dq = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 4), }";
    const char *dk = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3, 4), }";
    snprintf(path, sizeof path, "%s/layers.0.q.npy", d);
    fx_write_buf(path, fx_npy(1, dq, z, 32));
    snprintf(path, sizeof path, "%s/layers.0.k.npy", d);
    fx_write_buf(path, fx_npy(1, dk, z, 24));
    snprintf(path, sizeof path, "%s/layers.0.v.npy", d);
    fx_write_buf(path, fx_npy(3, dk, z, 24));
    char *out = NULL, *err = NULL;
    cr_assert_eq(run("info '%s'%s", d, "", &out, &err), 0, "%s", err); /* good without metadata */
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/metadata.json", d);
    fx_write(path, "{\"model\": \"x\",", 14);
    expect_bad_all_named(d, path, "not a JSON object");
    free(d);
}

/* q = 0: uniform softmax over the visible keys, so the output is the mean of their v rows. */
static double gen_v(void *ctx, int layer, char which, int64_t h, int64_t r, int64_t c)
{
    if (which == 'q') return 0.0;
    if (which == 'k') return (double)((h + r + c) % 5) - 2;
    return (double)(h * 100 + r * 10 + c); /* exact in f32 */
}

Test(cli, good_traces_exit_0_and_attend_closed_form)
{
    char *p = tmp("good.safetensors");
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = 3, .n = 6, .d = 2,
                             .dtype = AS_DT_F32, .causal = 1, .gen = gen_v, .model = "m1"};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char *out = NULL, *err = NULL;
    cr_assert_eq(run("info '%s'%s", p, "", &out, &err), 0, "%s", err);
    cr_assert(strstr(out, "m1"), "%s", out);
    free(out);
    free(err);
    cr_assert_eq(run("info '%s' --csv%s", p, "", &out, &err), 0, "%s", err);
    free(out);
    free(err);
    cr_assert_eq(run("info '%s' --json%s", p, "", &out, &err), 0, "%s", err);
    cJSON *doc = cJSON_Parse(out);
    cr_assert(doc, "%s", out);
    const cJSON *rec;
    int layers = 0;
    cJSON_ArrayForEach(rec, cJSON_GetObjectItem(doc, "records"))
    {
        const char *kind = cJSON_GetObjectItem(rec, "record")->valuestring;
        if (strcmp(kind, "layer") != 0) continue;
        layers++;
        cr_assert_eq(cJSON_GetObjectItem(rec, "hq")->valuedouble, 4);
        cr_assert_eq(cJSON_GetObjectItem(rec, "hkv")->valuedouble, 2);
        cr_assert_eq(cJSON_GetObjectItem(rec, "group")->valuedouble, 2);
        cr_assert_eq(cJSON_GetObjectItem(rec, "t")->valuedouble, 3);
        cr_assert_eq(cJSON_GetObjectItem(rec, "n")->valuedouble, 6);
        cr_assert_eq(cJSON_GetObjectItem(rec, "d")->valuedouble, 2);
        cr_assert_str_eq(cJSON_GetObjectItem(rec, "dtype_q")->valuestring, "F32");
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(rec, "causal")));
        cr_assert_eq(cJSON_GetObjectItem(rec, "scale")->valuedouble, 1.0 / sqrt(2.0));
        cr_assert_eq(cJSON_GetObjectItem(rec, "pos_first")->valuedouble, 3);
        cr_assert_eq(cJSON_GetObjectItem(rec, "pos_last")->valuedouble, 5);
    }
    cr_assert_eq(layers, 2);
    cJSON_Delete(doc);
    free(out);
    free(err);

    cr_assert_eq(run("attend '%s' --json%s", p, "", &out, &err), 0, "%s", err);
    doc = cJSON_Parse(out);
    cr_assert(doc);
    int n = 0;
    cJSON_ArrayForEach(rec, cJSON_GetObjectItem(doc, "records"))
    {
        int h = (int)cJSON_GetObjectItem(rec, "head")->valuedouble;
        int qi = (int)cJSON_GetObjectItem(rec, "query")->valuedouble;
        int kv = (int)cJSON_GetObjectItem(rec, "kv_head")->valuedouble;
        cr_assert_eq(kv, h / 2);
        int vis = 6 - 3 + qi + 1;
        cr_assert_eq(cJSON_GetObjectItem(rec, "n")->valuedouble, vis);
        cr_assert_eq(cJSON_GetObjectItem(rec, "position")->valuedouble, vis - 1);
        cr_assert(fabs(cJSON_GetObjectItem(rec, "lse")->valuedouble - log((double)vis)) < 1e-12);
        const cJSON *o = cJSON_GetObjectItem(rec, "output");
        for (int c = 0; c < 2; c++) {
            double want = kv * 100 + 10 * (vis - 1) / 2.0 + c; /* mean over r < vis of 10 r */
            cr_assert(fabs(cJSON_GetArrayItem(o, c)->valuedouble - want) < 1e-12, "h%d q%d c%d: %.17g vs %.17g",
                      h, qi, c, cJSON_GetArrayItem(o, c)->valuedouble, want);
        }
        n++;
    }
    cr_assert_eq(n, 2 * 4 * 3);
    cJSON_Delete(doc);
    free(out);
    free(err);
    free(p);
}

Test(cli, never_writes_over_its_input)
{
    char *p = tmp("input.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 1, .n = 8, .d = 4,
                             .dtype = AS_DT_F32, .seed = 3};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    size_t len0 = 0;
    char *before = fx_slurp(p, &len0);
    struct stat s0 = {0}, s1 = {0};
    cr_assert_eq(stat(p, &s0), 0);
    char *out = NULL, *err = NULL;
    /* the safetensors writer (index export) refuses the trace it has open */
    int rc = run("sparsity '%s' --method topk --budget 2 --export-index '%s' --quiet", p, p, &out, &err);
    cr_expect_eq(rc, 2, "exit %d: %s", rc, err);
    cr_expect_eq(fx_count_lines(err), 1, "%s", err);
    cr_expect(strstr(err, "refusing to overwrite"), "%s", err);
    free(out);
    free(err);
    /* and through another name for the same file */
    char *link = tmp("input-link.safetensors");
    cr_assert_eq(symlink(p, link), 0);
    rc = run("sparsity '%s' --method topk --budget 2 --export-index '%s' --quiet", p, link, &out, &err);
    cr_expect_eq(rc, 2, "exit %d: %s", rc, err);
    free(out);
    free(err);
    /* the HTML writers too, when they are built */
    char *help = NULL;
    fx_run("help", &help, NULL);
    if (strstr(help, "  report ")) {
        rc = run("report '%s' -o '%s' --quiet", p, p, &out, &err);
        cr_expect_eq(rc, 2, "report: exit %d: %s", rc, err);
        cr_expect_eq(fx_count_lines(err), 1, "%s", err);
        free(out);
        free(err);
    }
    if (strstr(help, "  compare ")) {
        char args[4096];
        snprintf(args, sizeof args, "compare '%s' '%s' -o '%s' --quiet", p, p, p);
        rc = fx_run(args, &out, &err);
        free(out);
        free(err);
        cr_expect_eq(rc, 2, "compare: exit %d", rc);
    }
    free(help);
    size_t len1 = 0;
    char *after = fx_slurp(p, &len1);
    cr_assert_eq(stat(p, &s1), 0);
    cr_assert_eq(len0, len1);
    cr_assert_eq(memcmp(before, after, len0), 0, "the input changed");
    cr_assert_eq(s0.st_ino, s1.st_ino, "the input was replaced");
    struct stat ls;
    cr_assert_eq(lstat(link, &ls), 0);
    cr_assert(S_ISLNK(ls.st_mode), "the link was replaced");
    free(before);
    free(after);
    free(link);
    free(p);
}

/* Usage slips (issue 15): each refused with exit 2 and one line that names the option, before
 * any analysis (nothing on stdout). */
static void expect_usage2(const char *args_fmt, const char *path, const char *path2,
                          const char *want)
{
    char *out = NULL, *err = NULL;
    int rc = run(args_fmt, path, path2, &out, &err);
    cr_expect_eq(rc, 2, "%s: exit %d, stderr '%s'", args_fmt, rc, err);
    cr_expect_eq(fx_count_lines(err), 1, "%s: stderr '%s'", args_fmt, err);
    cr_expect(strstr(err, want) != NULL, "%s: stderr '%s' lacks '%s'", args_fmt, err, want);
    cr_expect_str_eq(out, "", "%s wrote to stdout", args_fmt);
    free(out);
    free(err);
}

static void expect_usage(const char *args_fmt, const char *path, const char *want)
{
    expect_usage2(args_fmt, path, "", want);
}

Test(cli, option_slips_refused_with_the_option_named)
{
    char *p = tmp("slips.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 2, .n = 16, .d = 4,
                             .dtype = AS_DT_F32, .seed = 5};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    expect_usage("sparsity '%s' --delta 0%s", p, "--delta expects a number in (0, 1), got '0'");
    expect_usage("sparsity '%s' --delta 1.5%s", p, "--delta");
    expect_usage("sparsity '%s' --heavy-frac 2%s", p, "--heavy-frac expects a number in [0, 1]");
    expect_usage("sparsity '%s' --eps 0%s", p, "--eps expects a number > 0");
    expect_usage("sparsity '%s' --seed -1%s", p, "--seed expects an integer in [0, 2^64-1]");
    expect_usage("sparsity '%s' --seed 18446744073709551616%s", p, "--seed");
    expect_usage("sparsity '%s' --seed ' 7'%s", p, "--seed");
    expect_usage("sparsity '%s' --page-bounds f16%s", p,
                 "--page-bounds 'f16': expected exact, f32 or bf16");
    expect_usage("sparsity '%s' --page-bounds BF16%s", p, "--page-bounds 'BF16'");
    expect_usage("sparsity '%s' --page-bounds ''%s", p, "--page-bounds ''");
    expect_usage("sparsity '%s' --page-bounds%s", p, "option '--page-bounds' needs a value");
    expect_usage("entropy '%s' --json --csv%s", p, "--json and --csv exclude each other");
    expect_usage("spectrum '%s' --min-period 100 --max-period 10%s", p,
                 "--max-period 10 is below --min-period 100");
    expect_usage("spectrum '%s' --peaks%s", p, "option '--peaks' needs a value");
    /* an export over the input, or into a missing folder: refused before the analysis */
    expect_usage2("sparsity '%s' --method topk --budget 2 --export-index '%s'", p, p,
                  "refusing to overwrite an input file");
    expect_usage("sparsity '%s' --method topk --budget 2 --export-index /nonexistent-dir/x%s", p,
                 "folder '/nonexistent-dir' does not exist");
    /* the largest seed is a seed; 0x hex too */
    char *out = NULL, *err = NULL;
    int rc = run("sparsity '%s' --method uniform --budget 2 --seed 18446744073709551615 "
                 "--quiet%s", p, "", &out, &err);
    cr_expect_eq(rc, 0, "%s", err);
    free(out);
    free(err);
    rc = run("sparsity '%s' --method uniform --budget 2 --seed 0xff --quiet%s", p, "", &out, &err);
    cr_expect_eq(rc, 0, "%s", err);
    free(out);
    free(err);
    free(p);
}

/* Every trace command checks --layer, --head and --query through one skeleton (cli/cli_job)
 * before any analysis: one line, exit 2, nothing on stdout, the same words. */
Test(cli, layer_head_query_checked_alike_before_the_analysis)
{
    char *p = tmp("ranges.safetensors");
    as_test_trace_spec sp = {.n_layers = 2, .hq = 2, .hkv = 1, .t = 3, .n = 16, .d = 4,
                             .dtype = AS_DT_F32, .causal = 1, .seed = 9};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    static const char *const cmds[] = {"attend", "entropy", "rank", "bottleneck", "spectrum",
                                       "sparsity"};
    static const int takes_query[] = {1, 1, 0, 1, 0, 1};
    char fmt[128];
    for (int i = 0; i < 6; i++) {
        snprintf(fmt, sizeof fmt, "%s '%%s' --layer 7%%s", cmds[i]);
        expect_usage(fmt, p, "has no layer 7");
        snprintf(fmt, sizeof fmt, "%s '%%s' --head 2%%s", cmds[i]);
        expect_usage(fmt, p, "layer 0 has 2 query heads and 3 queries");
        snprintf(fmt, sizeof fmt, "%s '%%s' --layer 1 --head 5%%s", cmds[i]);
        expect_usage(fmt, p, "layer 1 has 2 query heads and 3 queries");
        if (!takes_query[i]) continue;
        snprintf(fmt, sizeof fmt, "%s '%%s' --query 3%%s", cmds[i]);
        expect_usage(fmt, p, "layer 0 has 2 query heads and 3 queries");
    }
    /* the last head and query are taken */
    char *out = NULL, *err = NULL;
    int rc = run("attend '%s' --layer 1 --head 1 --query 2 --json%s", p, "", &out, &err);
    cr_expect_eq(rc, 0, "%s", err);
    cr_expect(strstr(out, "\"head\":\t1,") && strstr(out, "\"query\":\t2,"), "%s", out);
    free(out);
    free(err);
    free(p);
}

Test(cli, sim_gen_names_the_output_once)
{
    char *help = NULL;
    fx_run("help", &help, NULL);
    int have_sim = strstr(help, "  sim ") != NULL;
    free(help);
    if (!have_sim) return; /* no GSL: no sim */
    char *out = NULL, *err = NULL;
    int rc = fx_run("sim gen -o /nonexistent-dir/x.safetensors --n 64", &out, &err);
    cr_expect_eq(rc, 2);
    cr_expect_eq(fx_count_lines(err), 1, "%s", err);
    const char *first = strstr(err, "/nonexistent-dir/x.safetensors");
    cr_expect(first && !strstr(first + 1, "/nonexistent-dir/x.safetensors"), "%s", err);
    free(out);
    free(err);
}
