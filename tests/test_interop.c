/* Interop with Python's `safetensors` and `numpy`, bit for bit, in both directions.
 *
 * python_to_c: tests/interop_fixtures.py writes tensors and traces with the Python packages
 * (all dtypes; every non-NaN f16 and bf16 bit pattern; bf16 through torch when importable and
 * always by hand; .npy versions 1-3) together with the float64 value NumPy gives each element;
 * every element read here (as_st_parse / as_npy_parse and, for traces, as_trace_open) must be
 * the same float64, bit for bit.
 * c_to_python: this file writes tensors with as_st_writer and as_npy_write from float64 sources
 * (ties, double-rounding cases, subnormals, overflow, integer extremes); the script reads them
 * with safetensors/numpy and compares every element with NumPy's own conversion (and an
 * independent bf16 rounding), bit for bit.
 * Both skip when python3 with numpy and safetensors is not available. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "as_fixtures.h"
#include "as_npy.h"
#include "as_testutil.h"
#include "as_trace.h"

/* Run `python3 interop_fixtures.py MODE DIR`; skips the test on exit 77. */
static void run_script(const char *mode, const char *dir)
{
    const char *src = getenv("AS_SRC");
    cr_assert(src, "AS_SRC not set");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/interop_fixtures.py' %s '%s' 2>&1", src, mode, dir);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    char out[8192] = "";
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc == 77) cr_skip_test("python3 with numpy and safetensors is not available: %s", out);
    if (rc == 127) cr_skip_test("python3 not found");
    cr_assert_eq(rc, 0, "interop_fixtures.py %s failed (%d):\n%s", mode, rc, out);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static const as_tensor *layer_tensor(const as_trace *tr, const char *name)
{
    int L;
    char part[16];
    if (sscanf(name, "layers.%d.%15s", &L, part) != 2) return NULL;
    const as_layer *l = as_trace_find_layer(tr, L);
    if (!l) return NULL;
    if (!strcmp(part, "q")) return l->q;
    if (!strcmp(part, "k")) return l->k;
    if (!strcmp(part, "v")) return l->v;
    if (!strcmp(part, "q_pos")) return l->q_pos;
    return NULL;
}

/* Compare t's elements (converted to float64 by attnscope) with the expected doubles. */
static void compare(const as_tensor *t, const cJSON *e, const char *root, const char *how)
{
    const char *name = cJSON_GetObjectItem(e, "tensor")->valuestring;
    const char *file = cJSON_GetObjectItem(e, "file")->valuestring;
    as_dtype want_dt;
    cr_assert_eq(as_dtype_parse(cJSON_GetObjectItem(e, "dtype")->valuestring, &want_dt), 0);
    cr_assert_eq(t->dtype, want_dt, "%s %s (%s): dtype", file, name, how);
    const cJSON *shape = cJSON_GetObjectItem(e, "shape");
    cr_assert_eq(t->ndim, cJSON_GetArraySize(shape), "%s %s: rank", file, name);
    for (int i = 0; i < t->ndim; i++)
        cr_assert_eq(t->shape[i], (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble, "%s %s: shape[%d]",
                     file, name, i);
    char *ep = join(root, cJSON_GetObjectItem(e, "expected")->valuestring);
    size_t len = 0;
    char *exp = fx_slurp(ep, &len);
    cr_assert(exp, "%s", ep);
    cr_assert_eq(len, t->numel * 8, "%s %s: %zu expected values for %llu elements", file, name,
                 len / 8, (unsigned long long)t->numel);
    double *got = malloc(t->numel * 8 + 8);
    as_tensor_read_f64(t, 0, t->numel, got);
    for (uint64_t i = 0; i < t->numel; i++) {
        uint64_t a, b;
        memcpy(&a, got + i, 8);
        memcpy(&b, exp + 8 * i, 8);
        if (a != b) {
            double x;
            memcpy(&x, &b, 8);
            cr_assert_fail("%s %s (%s) element %llu: attnscope %a, numpy %a", file, name, how,
                           (unsigned long long)i, got[i], x);
        }
    }
    free(got);
    free(exp);
    free(ep);
}

Test(interop, python_to_c_bit_for_bit, .timeout = 600)
{
    char *root = as_test_path("py2c");
    run_script("write", root);
    char *mp = join(root, "manifest.json");
    char *text = fx_slurp(mp, NULL);
    cr_assert(text, "%s", mp);
    cJSON *man = cJSON_Parse(text);
    cr_assert(man);
    const cJSON *e;
    int n = 0, n_trace = 0, n_bf16 = 0, n_npy = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "entries"))
    {
        const char *file = cJSON_GetObjectItem(e, "file")->valuestring;
        const char *fmt = cJSON_GetObjectItem(e, "format")->valuestring;
        const char *name = cJSON_GetObjectItem(e, "tensor")->valuestring;
        char *path = join(root, file);
        char err[AS_ERR_LEN];
        /* 1. the raw parsers */
        if (!strcmp(fmt, "safetensors")) {
            size_t len = 0;
            char *buf = fx_slurp(path, &len);
            as_st_file f;
            cr_assert_eq(as_st_parse((unsigned char *)buf, len, &f, err), AS_OK, "%s: %s", file, err);
            const as_tensor *t = as_st_find(&f, name);
            cr_assert(t, "%s: no tensor %s", file, name);
            compare(t, e, root, "as_st_parse");
            n_bf16 += t->dtype == AS_DT_BF16;
            as_st_file_clear(&f);
            free(buf);
        } else {
            char *np = malloc(strlen(path) + strlen(name) + 8);
            sprintf(np, "%s/%s.npy", path, name);
            size_t len = 0;
            char *buf = fx_slurp(np, &len);
            as_tensor t;
            cr_assert_eq(as_npy_parse((unsigned char *)buf, len, &t, err), AS_OK, "%s: %s", np, err);
            compare(&t, e, root, "as_npy_parse");
            n_npy++;
            free(buf);
            free(np);
        }
        /* 2. through the trace reader */
        if (cJSON_IsTrue(cJSON_GetObjectItem(e, "trace"))) {
            as_trace *tr = as_trace_open(path, err);
            cr_assert(tr, "%s", err);
            cr_assert_eq(as_trace_check_finite(tr, err), AS_OK, "%s", err);
            const as_tensor *t = layer_tensor(tr, name);
            cr_assert(t, "%s: trace has no %s", file, name);
            compare(t, e, root, "as_trace");
            const as_layer *l = as_trace_layer(tr, 0);
            cr_assert_eq(l->scale, strstr(file, "npy") ? 0.125 : 0.25);
            cr_assert(as_layer_is_causal(l));
            as_trace_free(tr);
            n_trace++;
        }
        free(path);
        n++;
    }
    cr_assert_geq(n, 40);
    cr_assert_geq(n_trace, 16);
    cr_assert_geq(n_bf16, 2);
    cr_assert_geq(n_npy, 24);
    cJSON_Delete(man);
    free(text);
    free(mp);
    free(root);
}

/* ---- C -> Python ---------------------------------------------------------------------- */

static void put_f64(const char *root, const char *name, const double *x, size_t n)
{
    char *p = join(root, name);
    cr_assert_eq(fx_write(p, x, n * 8), 0);
    free(p);
}

static cJSON *entry(const char *file, const char *fmt, const char *tensor, as_dtype dt, int nd,
                    const int64_t *shape, const char *source)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "file", file);
    cJSON_AddStringToObject(e, "format", fmt);
    cJSON_AddStringToObject(e, "tensor", tensor);
    cJSON_AddStringToObject(e, "dtype", as_dtype_name(dt));
    cJSON *s = cJSON_AddArrayToObject(e, "shape");
    for (int i = 0; i < nd; i++) cJSON_AddItemToArray(s, cJSON_CreateNumber((double)shape[i]));
    cJSON_AddStringToObject(e, "source", source);
    return e;
}

/* Float sources: special values, every rounding hazard, and random doubles over the ranges
 * of all float dtypes (NaN excluded: its payload has no single right answer). */
static size_t float_sources(double *x, size_t cap)
{
    size_t n = 0;
    const double special[] = {0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, -65520.0, 1e5,
                              INFINITY, -INFINITY, DBL_MAX, -DBL_MAX, DBL_MIN, 0x1p-1074,
                              0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 0x1p-14, 0x1.ff8p-15,
                              FLT_MAX, 0x1.fffffep127, 0x1.ff8p127, 0x1.ffp127, 0x1p-126,
                              0x1p-133, 0x1p-134, 0x1.8p-134, FLT_TRUE_MIN, 0x1p-150,
                              1.0 + 0x1p-11, 1.0 + 0x1p-11 + 0x1p-40, 1.0 + 3 * 0x1p-11,
                              1.0 + 0x1p-8, 1.0 + 0x1p-8 + 0x1p-40, 1.0 + 3 * 0x1p-8,
                              1.0 + 0x1p-24, 1.0 + 0x1p-24 + 0x1p-60, 3.141592653589793,
                              -2.718281828459045, 1.0 / 3.0};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[n++] = special[i];
    /* ties of f16 and bf16 spacing at many binades, and their neighbours */
    for (int e = -30; e <= 20 && n + 6 < cap; e++) {
        x[n++] = ldexp(1.0 + 0x1p-11, e);
        x[n++] = ldexp(1.0 + 3 * 0x1p-11, e);
        x[n++] = nextafter(ldexp(1.0 + 0x1p-11, e), 0);
        x[n++] = ldexp(1.0 + 0x1p-8, e * 6);
        x[n++] = ldexp(1.0 + 3 * 0x1p-8, e * 6);
        x[n++] = nextafter(ldexp(1.0 + 0x1p-8, e * 6), INFINITY);
    }
    uint64_t st = 99;
    while (n < cap) {
        double m = 1.0 + as_test_uniform(&st);
        int e = (int)(as_test_uniform(&st) * 330) - 160;
        x[n++] = (as_test_uniform(&st) < 0.5 ? -1 : 1) * ldexp(m, e);
    }
    return n;
}

Test(interop, c_to_python_bit_for_bit, .timeout = 600)
{
    char *root = as_test_path("c2py");
    cr_assert_eq(mkdir(root, 0755), 0);
    enum { NF = 60000, NI = 1000 };
    double *fs = malloc(NF * sizeof *fs), i32s[NI], i64s[NI];
    cr_assert_eq(float_sources(fs, NF), NF);
    uint64_t st = 7;
    const double i32x[] = {0, -1, 1, 2147483647.0, -2147483648.0}, i64x[] = {0, -1, 0x1p62, -0x1p63, 0x1p53 + 2};
    for (int i = 0; i < NI; i++) {
        i32s[i] = i < 5 ? i32x[i] : floor((as_test_uniform(&st) - 0.5) * 0x1p32);
        i64s[i] = i < 5 ? i64x[i] : floor((as_test_uniform(&st) - 0.5) * 0x1p63) * 2;
    }
    put_f64(root, "src_float.f64", fs, NF);
    put_f64(root, "src_i32.f64", i32s, NI);
    put_f64(root, "src_i64.f64", i64s, NI);
    cJSON *man = cJSON_CreateObject(), *ents = cJSON_AddArrayToObject(man, "entries");

    /* one safetensors file with every dtype; the float tensors 2-D to check C order */
    as_st_spec specs[AS_DT_COUNT];
    static const char *names[AS_DT_COUNT] = {"x.f64", "x.f32", "x.f16", "x.bf16", "x.i32", "x.i64"};
    for (int dt = 0; dt < AS_DT_COUNT; dt++) {
        specs[dt] = (as_st_spec){names[dt], (as_dtype)dt, 2, {0, 0}};
        if (dt < AS_DT_I32) {
            specs[dt].shape[0] = 300;
            specs[dt].shape[1] = NF / 300;
        } else {
            specs[dt].shape[0] = NI;
            specs[dt].ndim = 1;
        }
    }
    as_meta meta[3] = {{"format", AS_TRACE_FORMAT_NAME},
                       {"note", "caf\xc3\xa9 \"quoted\" back\\slash\nnewline"},
                       {"empty", ""}};
    char err[AS_ERR_LEN];
    char *path = join(root, "c_all.safetensors");
    as_st_writer *w = as_st_writer_open(path, specs, AS_DT_COUNT, meta, 3, err);
    cr_assert(w, "%s", err);
    unsigned char *buf = malloc(NF * 8);
    for (int dt = 0; dt < AS_DT_COUNT; dt++) {
        const double *src = dt < AS_DT_I32 ? fs : dt == AS_DT_I32 ? i32s : i64s;
        size_t cnt = dt < AS_DT_I32 ? NF : NI;
        as_dtype_from_f64((as_dtype)dt, src, cnt, buf);
        cr_assert_eq(as_st_writer_write(w, buf, cnt * as_dtype_size((as_dtype)dt), err), AS_OK, "%s", err);
        cJSON_AddItemToArray(ents, entry("c_all.safetensors", "safetensors", names[dt], (as_dtype)dt,
                                         specs[dt].ndim, specs[dt].shape,
                                         dt < AS_DT_I32 ? "src_float.f64" : dt == AS_DT_I32 ? "src_i32.f64" : "src_i64.f64"));
    }
    cr_assert_eq(as_st_writer_finish(w, err), AS_OK, "%s", err);
    cJSON *md = cJSON_AddObjectToObject(man, "metadata"), *m1 = cJSON_AddObjectToObject(md, "c_all.safetensors");
    for (int i = 0; i < 3; i++) cJSON_AddStringToObject(m1, meta[i].key, meta[i].value);
    free(path);

    /* .npy files, one per dtype NumPy has, 3-D */
    for (int dt = 0; dt < AS_DT_COUNT; dt++) {
        if (dt == AS_DT_BF16) continue;
        const double *src = dt < AS_DT_I32 ? fs : dt == AS_DT_I32 ? i32s : i64s;
        size_t cnt = dt < AS_DT_I32 ? NF : NI;
        int64_t shape[3] = {dt < AS_DT_I32 ? 3 : 10, 10, dt < AS_DT_I32 ? NF / 30 : NI / 100};
        as_dtype_from_f64((as_dtype)dt, src, cnt, buf);
        char nm[32];
        snprintf(nm, sizeof nm, "c_%s.npy", as_dtype_name((as_dtype)dt));
        path = join(root, nm);
        cr_assert_eq(as_npy_write(path, (as_dtype)dt, 3, shape, buf, err), AS_OK, "%s", err);
        cJSON_AddItemToArray(ents, entry(nm, "npy", "", (as_dtype)dt, 3, shape,
                                         dt < AS_DT_I32 ? "src_float.f64" : dt == AS_DT_I32 ? "src_i32.f64" : "src_i64.f64"));
        free(path);
    }
    char *mtext = cJSON_Print(man);
    path = join(root, "manifest_c.json");
    cr_assert_eq(fx_write(path, mtext, strlen(mtext)), 0);
    free(path);
    free(mtext);
    cJSON_Delete(man);
    free(buf);
    free(fs);

    run_script("check", root);
    free(root);
}
