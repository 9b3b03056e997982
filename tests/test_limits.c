/* Tests of data/as_limits (value limits of a trace: scores and norms that float64 can take) and
 * of every command's refusal of a trace whose scores or norms overflow (one line, exit 2), and
 * of `attnscope info`, which reports it without refusing. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_limits.h"
#include "as_testutil.h"
#include "as_trace.h"

typedef struct {
    double q, k, v; /* magnitude of every element (0: a standard normal element) */
} mag_ctx;

static double normal_at(int layer, char which, int64_t head, int64_t row, int64_t col)
{
    uint64_t s = ((uint64_t)(layer * 7919 + which) << 40) ^ ((uint64_t)head << 28) ^
                 ((uint64_t)row << 8) ^ (uint64_t)col;
    s = s * 0x9E3779B97F4A7C15ull + 12345;
    return as_test_normal(&s);
}

static double mag_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    const mag_ctx *c = vctx;
    double m = which == 'q' ? c->q : which == 'k' ? c->k : c->v;
    double x = normal_at(layer, which, head, row, col);
    return m == 0 ? x : m * (x < 0 ? -1.0 : 1.0) * (1.0 + 0.25 * fabs(x) / (1.0 + fabs(x)));
}

static char *make(const char *name, mag_ctx *c, as_dtype dt)
{
    char *p = as_test_path(name);
    as_test_trace_spec sp = {.n_layers = 2, .hq = 2, .hkv = 1, .t = 3, .n = 40, .d = 8,
                             .dtype = dt, .causal = 1, .gen = mag_gen, .ctx = c};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

/* The norms against a direct computation in long double. */
static long double max_row_norm(const as_tensor *t, int64_t rows_total, int64_t d)
{
    long double mx = 0;
    double *row = malloc((size_t)d * sizeof *row);
    for (int64_t r = 0; r < rows_total; r++) {
        as_tensor_read_f64(t, (uint64_t)(r * d), (uint64_t)d, row);
        long double s = 0;
        for (int64_t c = 0; c < d; c++) s += (long double)row[c] * row[c];
        if (sqrtl(s) > mx) mx = sqrtl(s);
    }
    free(row);
    return mx;
}

static void check_norms(const as_layer *l, const as_layer_limits *lim)
{
    long double q = max_row_norm(l->q, l->hq * l->t, l->d), k = max_row_norm(l->k, l->hkv * l->n, l->d),
                v = max_row_norm(l->v, l->hkv * l->n, l->d);
    cr_assert(fabsl(lim->q_max - q) <= 1e-14L * q, "q %.17g vs %.17Lg", lim->q_max, q);
    cr_assert(fabsl(lim->k_max - k) <= 1e-14L * k, "k %.17g vs %.17Lg", lim->k_max, k);
    cr_assert(fabsl(lim->v_max - v) <= 1e-14L * v, "v %.17g vs %.17Lg", lim->v_max, v);
}

Test(limits, ordinary_trace_within)
{
    mag_ctx c = {0, 0, 0};
    char *p = make("ok.st", &c, AS_DT_F32);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        const as_layer *l = as_trace_layer(tr, i);
        as_layer_limits lim;
        cr_assert_eq(as_layer_limits_get(l, &lim, err), AS_OK);
        cr_assert(lim.scores_ok && lim.q_ok && lim.k_ok && lim.v_ok);
        check_norms(l, &lim);
        double sc = l->scale > 1 ? l->scale : 1;
        cr_assert(fabs(lim.score_bound - sc * sqrt((double)l->d) * lim.q_max * lim.k_max) <=
                  1e-13 * lim.score_bound);
    }
    cr_assert_eq(as_trace_check_limits(tr, err), AS_OK, "%s", err);
    as_trace_free(tr);
    free(p);
}

Test(limits, kv_parts_join_to_the_layer)
{
    /* the largest row norms of the (layer, kv head) parts are the layer's */
    mag_ctx c = {0, 0, 0};
    char *p = as_test_path("kv.st");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 6, .hkv = 3, .t = 3, .n = 40, .d = 8,
                             .dtype = AS_DT_F64, .causal = 1, .gen = mag_gen, .ctx = &c};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_layer_limits all, part, join;
    cr_assert_eq(as_layer_limits_get(l, &all, err), AS_OK);
    memset(&join, 0, sizeof join);
    for (int64_t g = 0; g < 3; g++) {
        cr_assert_eq(as_layer_limits_get_kv(l, g, &part, err), AS_OK);
        cr_assert(part.q_max <= all.q_max && part.k_max <= all.k_max && part.v_max <= all.v_max);
        join.q_max = fmax(join.q_max, part.q_max);
        join.k_max = fmax(join.k_max, part.k_max);
        join.v_max = fmax(join.v_max, part.v_max);
    }
    as_layer_limits_eval(l, &join);
    cr_assert(join.q_max == all.q_max && join.k_max == all.k_max && join.v_max == all.v_max);
    cr_assert(join.score_bound == all.score_bound && join.scores_ok == all.scores_ok &&
              join.q_ok == all.q_ok && join.k_ok == all.k_ok && join.v_ok == all.v_ok);
    as_trace_free(tr);
    free(p);
}

Test(limits, extreme_magnitudes)
{
    static const struct {
        mag_ctx c;
        int ok;
        const char *what; /* in the message */
    } cases[] = {
        {{1e200, 1e200, 0}, 0, "scores may overflow"},
        {{1e150, 1e150, 0}, 0, "scores may overflow"},
        {{1e-200, 1e140, 0}, 1, NULL},   /* tiny queries: scores ~1e-60, key norms fine */
        {{0, 0, 1e200}, 0, "value norms"},
        {{0, 0, 1e-300}, 1, NULL},       /* underflowing squares: norms still exact */
        {{0, 1e160, 0}, 0, "key norms"}, /* scores ~1e161 fine, 48 |k|^2 is not */
        {{1e-160, 1e155, 0}, 0, "key norms"},
        {{1e100, 1e100, 1e100}, 1, NULL},
    };
    char err[AS_ERR_LEN];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mag_ctx c = cases[i].c;
        char *p = make("x.st", &c, AS_DT_F64);
        as_trace *tr = as_trace_open(p, err);
        cr_assert_not_null(tr, "%s", err);
        cr_assert_eq(as_trace_check_finite(tr, err), AS_OK, "case %zu: values are finite", i);
        as_layer_limits lim;
        cr_assert_eq(as_layer_limits_get(as_trace_layer(tr, 0), &lim, err), AS_OK);
        check_norms(as_trace_layer(tr, 0), &lim);
        as_status st = as_trace_check_limits(tr, err);
        char err1[AS_ERR_LEN] = "";
        cr_assert_eq(as_layer_check_limits(tr, as_trace_layer(tr, 0), err1), st, "case %zu", i);
        if (st != AS_OK) cr_assert_str_eq(err1, err);
        if (cases[i].ok) {
            cr_assert_eq(st, AS_OK, "case %zu: %s", i, err);
        } else {
            cr_assert_eq(st, AS_ERR_VALUE, "case %zu accepted", i);
            cr_assert(strstr(err, cases[i].what), "case %zu: '%s'", i, err);
            cr_assert(strstr(err, p) && strstr(err, "layer 0") && !strchr(err, '\n'), "%s", err);
        }
        as_trace_free(tr);
        free(p);
    }
}

/* The rule at its edge: q = 2^a e_0, k = 2^b e_0, scale 1, d = 4: bound = 2 * 2^(a+b). */
typedef struct {
    double q0, k0;
} edge_ctx;

static double edge_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    const edge_ctx *c = vctx;
    (void)layer, (void)head, (void)row;
    if (col != 0) return 0.0;
    return which == 'q' ? c->q0 : which == 'k' ? c->k0 : 1.0;
}

Test(limits, score_bound_edge)
{
    char err[AS_ERR_LEN];
    const double k0[] = {0x1p499, 0x1p499 * 1.0001};
    for (int i = 0; i < 2; i++) {
        edge_ctx c = {0x1p500, k0[i]};
        char *p = as_test_path("edge.st");
        as_test_trace_spec sp = {.n_layers = 1, .hq = 1, .hkv = 1, .t = 1, .n = 4, .d = 4,
                                 .dtype = AS_DT_F64, .causal = 0, .gen = edge_gen, .ctx = &c,
                                 .scale = 1.0};
        cr_assert_eq(as_test_write_trace(p, &sp), 0);
        as_trace *tr = as_trace_open(p, err);
        cr_assert_not_null(tr, "%s", err);
        as_layer_limits lim;
        cr_assert_eq(as_layer_limits_get(as_trace_layer(tr, 0), &lim, err), AS_OK);
        cr_assert_eq(lim.scores_ok, i == 0, "k0 = %g: bound %g", k0[i], lim.score_bound);
        cr_assert(fabs(lim.score_bound - 2.0 * 0x1p500 * k0[i]) <= 1e-12 * lim.score_bound);
        as_trace_free(tr);
        free(p);
    }
}

/* Every command refuses overflowing scores with one line and exit 2; info reports them. */
static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

Test(limits_cli, commands_refuse_overflowing_scores)
{
    mag_ctx bad = {1e200, 1e200, 0}, badv = {0, 0, 1e200}, good = {0, 0, 0};
    char *pb = make("cli_bad.st", &bad, AS_DT_F64), *pv = make("cli_badv.st", &badv, AS_DT_F64),
         *pg = make("cli_good.st", &good, AS_DT_F64);
    char *html = as_test_path("r.html");
    const char *cmds[] = {"entropy %s", "attend %s", "bottleneck %s --quiet", "rank %s --quiet",
                          "sparsity %s --quiet", "spectrum %s", "report %s -o %s --quiet",
                          "compare %s %s --json --quiet"};
    for (int which = 0; which < 2; which++) {
        const char *bp = which == 0 ? pb : pv;
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            char args[4200], line[4096], *out = NULL;
            if (strstr(cmds[i], "report"))
                snprintf(line, sizeof line, cmds[i], bp, html);
            else if (strstr(cmds[i], "compare"))
                snprintf(line, sizeof line, cmds[i], pg, bp);
            else
                snprintf(line, sizeof line, cmds[i], bp);
            snprintf(args, sizeof args, "%s 2>&1 >/dev/null", line);
            int rc = as_test_run_cli(args, &out);
            cr_assert_eq(rc, 2, "'%s': exit %d, stderr: %s", line, rc, out);
            cr_assert_eq(count_lines(out), 1, "'%s': %s", line, out);
            cr_assert(strstr(out, which == 0 ? "scores may overflow" : "value norms"), "'%s': %s",
                      line, out);
            free(out);
        }
    }
    FILE *f = fopen(html, "rb");
    cr_assert_null(f, "a report was written for a refused trace");
    /* info: exit 0, and it does not call the values simply "all finite" */
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "info %s", pb);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert(strstr(out, "scores may overflow"), "%s", out);
    cr_assert_null(strstr(out, "all finite\n"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "info %s --json", pb);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert(strstr(out, "\"within_limits\":\tfalse") || strstr(out, "\"within_limits\": false"),
              "%s", out);
    free(out);
    snprintf(args, sizeof args, "info %s", pg);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert(strstr(out, "all finite"), "%s", out);
    cr_assert_null(strstr(out, "overflow"), "%s", out);
    free(out);
    free(pb), free(pv), free(pg), free(html);
}

/* Tiny values are within the limits, and the commands that solve the witness LP run on them
 * (GLPK aborted the process with "invalid scale factor" on V of 1e-300 before). */
Test(limits_cli, tiny_values_run)
{
    mag_ctx tiny = {0, 0, 1e-300}, good = {0, 0, 0};
    char *pt = make("cli_tiny.st", &tiny, AS_DT_F64), *pg = make("cli_good2.st", &good, AS_DT_F64);
    char *html = as_test_path("tiny.html");
    char args[4200], *out = NULL;
    snprintf(args, sizeof args, "bottleneck %s --witness --json --quiet", pt);
    cr_assert_eq(as_test_run_cli(args, &out), 0, "%s", out);
    cr_assert(strstr(out, "\"tv_witness\":"), "%s", out);
    cr_assert_null(strstr(out, "\"tv_witness\":\tnull"));
    free(out);
    snprintf(args, sizeof args, "report %s -o %s --quiet 2>&1", pt, html);
    cr_assert_eq(as_test_run_cli(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "compare %s %s --json --quiet 2>&1 >/dev/null", pg, pt);
    cr_assert_eq(as_test_run_cli(args, &out), 0, "%s", out);
    free(out);
    free(pt), free(pg), free(html);
}
