/* Tests of analysis/as_sparsity: selections, the exact identity and the deterministic bound,
 * the sampling estimator and its (epsilon, delta) guarantee (Monte-Carlo coverage), the sweep,
 * index files, and the `attnscope sparsity` command. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

#ifdef AS_HAVE_GSL
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#endif

/* ---- helpers -------------------------------------------------------------------------------- */

typedef struct {
    uint64_t seed;
    double qscale;  /* larger: more peaked attention */
    int needle;     /* plant key 'needle' aligned with every query */
} gen_ctx;

static double hnormal(uint64_t h)
{
    uint64_t s = h;
    return as_test_normal(&s);
}

static double gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    gen_ctx *c = vctx;
    uint64_t h = as_seed_mix(c->seed, (uint64_t)layer * 131 + (uint64_t)which);
    h = as_seed_mix(h, (uint64_t)head * 1000003 + (uint64_t)row);
    h = as_seed_mix(h, (uint64_t)col);
    double x = hnormal(h);
    if (which == 'q') return c->qscale * x + (c->needle ? 1.0 : 0.0);
    if (which == 'k' && c->needle && row == c->needle) return 4.0;
    return x;
}

static char *make_trace(const char *name, int causal, as_dtype dt, double qscale, int needle,
                        int64_t n, int64_t t)
{
    char *p = as_test_path(name);
    static gen_ctx ctxs[16]; /* the generator runs inside as_test_write_trace only */
    static int used;
    gen_ctx *c = &ctxs[used++ % 16];
    *c = (gen_ctx){1234, qscale, needle};
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = t, .n = n, .d = 16,
                             .dtype = dt, .causal = causal, .gen = gen, .ctx = c};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

typedef struct {
    as_sp_record *r;
    size_t n, cap;
} recs;

static int collect(void *ctx, const as_sp_record *r)
{
    recs *v = ctx;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->r = realloc(v->r, v->cap * sizeof *v->r);
    }
    v->r[v->n++] = *r;
    return 0;
}

static recs run(const as_trace *tr, const as_sp_method *m, size_t nm, const as_budget *b,
                size_t nb, int trials, size_t mem)
{
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.methods = m;
    cfg.n_methods = nm;
    cfg.budgets = b;
    cfg.n_budgets = nb;
    cfg.trials = trials;
    cfg.mem_limit = mem;
    cfg.eps_rel = 0.05;
    recs v = {0};
    char err[AS_ERR_LEN];
    as_status st = as_sp_run(tr, &cfg, collect, &v, err);
    cr_assert_eq(st, AS_OK, "%s", err);
    return v;
}

static const as_sp_method all_methods[] = {AS_SP_TOPK,    AS_SP_SINK_WINDOW, AS_SP_PAGE,
                                           AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
#define N_ALL ((int)(sizeof all_methods / sizeof all_methods[0]))

static const char *sample_trace(void)
{
    static char path[1024];
    const char *src = getenv("AS_SRC");
    snprintf(path, sizeof path, "%s/data/samples/smollm2-135m-needle-2k.safetensors",
             src ? src : "..");
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    return path;
}

/* ---- the checks hold on every head, query, method and budget ------------------------------- */

static void check_no_violation(char *path, int owned)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert(tr, "%s", err);
    as_budget b[] = {{0.02, 0}, {0.1, 0}, {0.5, 0}, {0, 7}, {1.0, 0}};
    recs v = run(tr, all_methods, N_ALL, b, 5, 3, 0);
    size_t want = 0;
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        const as_layer *l = as_trace_layer(tr, i);
        want += (size_t)(l->hq * l->t) * N_ALL * 5;
    }
    cr_assert_eq(v.n, want);
    for (size_t i = 0; i < v.n; i++) {
        const as_sp_record *r = &v.r[i];
        const as_sp_eval *e = &r->ev;
        cr_assert(e->identity_ok, "%s L%d h%lld q%lld: identity residual %g (tol %g)",
                  as_sp_method_name(r->method), r->layer, (long long)r->head,
                  (long long)r->query, e->identity_error, e->tol);
        if (as_sp_method_is_sampling(r->method))
            cr_assert(!e->subset_violated);
        else
            cr_assert(!e->violated, "%s: error %g > bound %g", as_sp_method_name(r->method),
                      e->abs_error, e->bound);
        cr_assert(e->captured_mass >= 0 && e->captured_mass <= 1 + 1e-12);
        cr_assert(e->k >= 1 && e->k <= e->n);
        if (r->budget_index == 4) { /* budget 1.0: every key, exact */
            cr_assert(e->abs_error <= e->tol, "%s full budget: %g", as_sp_method_name(r->method),
                      e->abs_error);
            cr_assert(e->bound <= e->tol);
        }
        if (!as_sp_method_is_sampling(r->method)) cr_assert(e->abs_error <= e->bound * (1 + 1e-9) + e->tol);
    }
    free(v.r);
    as_trace_free(tr);
    if (owned) free(path);
}

Test(sparsity, no_violation_causal_f64) { check_no_violation(make_trace("a.st", 1, AS_DT_F64, 1.0, 0, 300, 6), 1); }
Test(sparsity, no_violation_full_bf16_peaked)
{
    check_no_violation(make_trace("b.st", 0, AS_DT_BF16, 4.0, 0, 257, 5), 1);
}
Test(sparsity, no_violation_needle_f16) { check_no_violation(make_trace("c.st", 1, AS_DT_F16, 2.0, 77, 200, 4), 1); }

Test(sparsity, real_sample_no_violation)
{
    const char *p = sample_trace();
    if (!p) cr_skip_test("no sample trace");
    check_no_violation((char *)p, 0);
}

/* ---- the bound is attained when one key is left out ----------------------------------------- */

Test(sparsity, bound_exact_with_one_key_left_out)
{
    char *p = make_trace("d.st", 1, AS_DT_F64, 2.0, 0, 120, 3);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_sp_eval ev0;
    for (int64_t h = 0; h < l->hq; h++)
        for (int64_t qi = 0; qi < l->t; qi++) {
            int64_t n = as_layer_visible(l, qi);
            int64_t *S = malloc((size_t)n * sizeof *S);
            int64_t leave = (h * 31 + qi * 7) % n, k = 0;
            for (int64_t i = 0; i < n; i++)
                if (i != leave) S[k++] = i;
            as_sp_eval ev;
            cr_assert_eq(as_sp_check_subset(l, h, qi, S, k, NULL, 0, &ev, NULL, err), AS_OK, "%s", err);
            cr_assert(ev.abs_error > 0);
            cr_assert(fabs(ev.abs_error - ev.bound) <= 1e-9 * ev.bound + ev.tol,
                      "error %.17g bound %.17g", ev.abs_error, ev.bound);
            cr_assert(!ev.violated && ev.identity_ok);
            /* every key: exact */
            for (int64_t i = 0; i < n; i++) S[i] = i;
            cr_assert_eq(as_sp_check_subset(l, h, qi, S, n, NULL, 0, &ev, NULL, err), AS_OK);
            cr_assert(ev.abs_error <= ev.tol && ev.bound == 0 && !ev.violated);
            cr_assert(fabs(ev.captured_mass - 1) < 1e-12);
            free(S);
        }
    /* nothing read: o_hat = 0, the whole output is the error, still within the bound */
    cr_assert_eq(as_sp_check_subset(l, 1, 1, NULL, 0, NULL, 0, &ev0, NULL, err), AS_OK, "%s", err);
    cr_assert(ev0.captured_mass == 0 && fabs(ev0.abs_error - ev0.norm_o) <= ev0.tol);
    cr_assert(!ev0.violated && ev0.identity_ok && ev0.bound >= ev0.abs_error);
    /* a duplicate key is refused; o_hat far off is a violation */
    int64_t dup[] = {1, 2, 2};
    as_sp_eval ev;
    cr_assert_eq(as_sp_check_subset(l, 0, 0, dup, 3, NULL, 0, &ev, NULL, err), AS_ERR_VALUE);
    int64_t S[] = {0, 5, 9};
    double oS[16], bad[16];
    cr_assert_eq(as_sp_check_subset(l, 0, 0, S, 3, NULL, 0, &ev, oS, err), AS_OK);
    cr_assert(!ev.violated);
    for (int c = 0; c < 16; c++) bad[c] = oS[c];
    cr_assert_eq(as_sp_check_subset(l, 0, 0, S, 3, bad, 1e-6, &ev, NULL, err), AS_OK);
    cr_assert(!ev.violated);
    bad[3] += 10 * (ev.bound + 1);
    cr_assert_eq(as_sp_check_subset(l, 0, 0, S, 3, bad, 1e-6, &ev, NULL, err), AS_OK);
    cr_assert(ev.violated);
    as_trace_free(tr);
    free(p);
}

/* ---- tiny missed masses: 1 - P_S from the complement sum ------------------------------------ */

/* 60 keys at score 0 and 4 at -C (q = e_0, k_i = -c_i e_0, scale 1, F64): the top 60 miss the
 * mass 4 e^-C / (60 + 4 e^-C), here 1e-16 .. 1e-14, which log P_S cannot resolve. */
typedef struct {
    double C;
} tiny_ctx;

static double tiny_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    const tiny_ctx *c = vctx;
    (void)layer, (void)head;
    if (which == 'q') return col == 0 ? 1.0 : 0.0;
    if (which == 'k') return col == 0 && row >= 60 ? -c->C : 0.0;
    uint64_t h = as_seed_mix(77, (uint64_t)row * 16 + (uint64_t)col);
    return hnormal(h);
}

Test(sparsity, tiny_missed_mass_bound)
{
    static const double missed_want[] = {1e-16, 7e-17, 1e-15, 8e-15, 1e-14};
    for (size_t t = 0; t < sizeof missed_want / sizeof missed_want[0]; t++) {
        tiny_ctx c = {-log(15.0 * missed_want[t])};
        char *p = as_test_path("tiny.st");
        as_test_trace_spec sp = {.n_layers = 1, .hq = 1, .hkv = 1, .t = 1, .n = 64, .d = 4,
                                 .dtype = AS_DT_F64, .causal = 0, .gen = tiny_gen, .ctx = &c,
                                 .scale = 1.0};
        cr_assert_eq(as_test_write_trace(p, &sp), 0);
        char err[AS_ERR_LEN];
        as_trace *tr = as_trace_open(p, err);
        cr_assert(tr, "%s", err);
        const as_layer *l = as_trace_layer(tr, 0);
        /* reference in extended precision */
        double V[64 * 4];
        as_layer_read_v(l, 0, 0, 64, V);
        long double e = expl(-(long double)c.C), missed = 4 * e / (60 + 4 * e);
        long double oS[4] = {0}, orest[4] = {0}, maxd = 0;
        for (int i = 0; i < 64; i++)
            for (int k = 0; k < 4; k++) (i < 60 ? oS : orest)[k] += V[i * 4 + k];
        for (int k = 0; k < 4; k++) oS[k] /= 60, orest[k] /= 4;
        long double terr = 0;
        for (int k = 0; k < 4; k++) terr += (orest[k] - oS[k]) * (orest[k] - oS[k]);
        terr = missed * sqrtl(terr);
        for (int i = 60; i < 64; i++) {
            long double d2 = 0;
            for (int k = 0; k < 4; k++) d2 += (V[i * 4 + k] - oS[k]) * (V[i * 4 + k] - oS[k]);
            if (sqrtl(d2) > maxd) maxd = sqrtl(d2);
        }
        double bref = (double)(missed * maxd);
        int64_t S[60];
        for (int i = 0; i < 60; i++) S[i] = i;
        as_sp_eval ev[2];
        cr_assert_eq(as_sp_check_subset(l, 0, 0, S, 60, NULL, 0, &ev[0], NULL, err), AS_OK, "%s", err);
        as_sp_params prm;
        as_sp_params_init(&prm);
        cr_assert_eq(as_sp_eval_query(l, 0, 0, AS_SP_TOPK, (as_budget){0, 60}, &prm, 0, 0.05, &ev[1],
                                      err), AS_OK, "%s", err);
        for (int w = 0; w < 2; w++) {
            cr_assert_eq(ev[w].k, 60);
            cr_assert(fabs(ev[w].bound - bref) <= 1e-12 * bref,
                      "missed %.3g: bound %.17g, reference %.17g", (double)missed, ev[w].bound, bref);
            cr_assert(ev[w].bound >= (double)terr, "bound %.17g below the true error %.17g",
                      ev[w].bound, (double)terr);
            cr_assert(ev[w].identity_ok && !ev[w].violated);
            cr_assert(ev[w].captured_mass < 1.0 || missed < 0x1p-54);
            cr_assert(fabs((1.0 - ev[w].captured_mass) - (double)missed) <= 0x1p-53);
        }
        as_trace_free(tr);
        free(p);
    }
}

/* ---- large scores: the tolerance follows the scores' magnitude ------------------------------ */

/* s_i = X + (spread) g_i: q = (X, 1, 1, 1, 0...), k_i = (1, g_i1, g_i2, g_i3, ...), scale 1;
 * spread 0: all scores equal. */
typedef struct {
    double X, spread;
} big_ctx;

static double big_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    const big_ctx *c = vctx;
    uint64_t h = as_seed_mix(as_seed_mix(99, (uint64_t)layer * 7 + (uint64_t)which),
                             (uint64_t)head * 100003 + (uint64_t)row * 64 + (uint64_t)col);
    if (which == 'q') return col == 0 ? c->X : col < 4 ? 1.0 : 0.0;
    if (which == 'k') return col == 0 ? 1.0 : col < 4 ? c->spread * hnormal(h) : hnormal(h);
    return hnormal(h);
}

Test(sparsity, large_scores_no_false_violation)
{
    for (double X = 1e2; X <= 1e5 * 1.01; X *= 10)
        for (int sp = 0; sp < 2; sp++) {
            big_ctx c = {X, sp ? 1.0 : 0.0};
            char *p = as_test_path("big.st");
            as_test_trace_spec ts = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 3, .n = 150, .d = 8,
                                     .dtype = AS_DT_F64, .causal = 1, .gen = big_gen, .ctx = &c,
                                     .scale = 1.0};
            cr_assert_eq(as_test_write_trace(p, &ts), 0);
            char err[AS_ERR_LEN];
            as_trace *tr = as_trace_open(p, err);
            cr_assert(tr, "%s", err);
            as_budget b[] = {{0.02, 0}, {0.1, 0}, {0.5, 0}, {0, 7}, {1.0, 0}};
            recs v = run(tr, all_methods, N_ALL, b, 5, 2, 0);
            for (size_t i = 0; i < v.n; i++) {
                const as_sp_eval *e = &v.r[i].ev;
                cr_assert(e->identity_ok, "X=%g spread %d %s: identity residual %g (tol %g)", X, sp,
                          as_sp_method_name(v.r[i].method), e->identity_error, e->tol);
                if (!as_sp_method_is_sampling(v.r[i].method))
                    cr_assert(!e->violated, "X=%g %s: error %g bound %g tol %g", X,
                              as_sp_method_name(v.r[i].method), e->abs_error, e->bound, e->tol);
                else
                    cr_assert(!e->subset_violated);
                /* the tolerance stays small: rounding of scores of size X, not more */
                cr_assert(e->tol <= 1e-9 * 5.0, "X=%g: tol %g", X, e->tol);
            }
            free(v.r);
            /* a real error is still caught: o_hat = o + 1e-8 e_0 with every key read (bound 0) */
            const as_layer *l = as_trace_layer(tr, 0);
            double pw[150], o[8];
            int64_t n;
            cr_assert_eq(as_attn_dense(l, 1, 2, pw, o, &n, NULL, err), AS_OK);
            int64_t S[150];
            for (int64_t i = 0; i < n; i++) S[i] = i;
            as_sp_eval ev;
            double oh[8];
            memcpy(oh, o, sizeof oh);
            cr_assert_eq(as_sp_check_subset(l, 1, 2, S, n, oh, 0, &ev, NULL, err), AS_OK, "%s", err);
            cr_assert(!ev.violated && ev.identity_ok, "X=%g: exact output flagged", X);
            oh[0] += 1e-8;
            cr_assert_eq(as_sp_check_subset(l, 1, 2, S, n, oh, 0, &ev, NULL, err), AS_OK, "%s", err);
            cr_assert(ev.violated, "X=%g: a planted error of 1e-8 is not caught (tol %g)", X, ev.tol);
            /* and one just above the bound when one key is left out */
            double oS[8];
            cr_assert_eq(as_sp_check_subset(l, 1, 2, S, n - 1, NULL, 0, &ev, oS, err), AS_OK);
            cr_assert(!ev.violated && ev.identity_ok && ev.bound > 0);
            double gap = 0;
            for (int k = 0; k < 8; k++) gap += (o[k] - oS[k]) * (o[k] - oS[k]);
            gap = sqrt(gap);
            for (int k = 0; k < 8; k++) oh[k] = o[k] + (o[k] - oS[k]) / gap * (ev.bound + 1e-8);
            cr_assert_eq(as_sp_check_subset(l, 1, 2, S, n - 1, oh, 0, &ev, NULL, err), AS_OK);
            cr_assert(ev.violated, "X=%g: error bound + 1e-8 not caught (tol %g)", X, ev.tol);
            as_trace_free(tr);
            free(p);
        }
}

/* F16 q = k = 60000 (scores ~ 1e10, all equal): no false violation */
static double f16_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    (void)vctx;
    if (which != 'v') return 60000.0;
    uint64_t h = as_seed_mix(5, (uint64_t)layer * 1000 + (uint64_t)head * 100 + (uint64_t)row * 16 + (uint64_t)col);
    return hnormal(h);
}

Test(sparsity, f16_huge_equal_scores)
{
    char *p = as_test_path("f16big.st");
    as_test_trace_spec ts = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 2, .n = 96, .d = 16,
                             .dtype = AS_DT_F16, .causal = 0, .gen = f16_gen};
    cr_assert_eq(as_test_write_trace(p, &ts), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_budget b[] = {{0.02, 0}, {0.1, 0}, {0.5, 0}, {1.0, 0}};
    recs v = run(tr, all_methods, N_ALL, b, 4, 1, 0);
    for (size_t i = 0; i < v.n; i++) {
        const as_sp_eval *e = &v.r[i].ev;
        cr_assert(e->identity_ok, "%s: identity residual %g (tol %g)",
                  as_sp_method_name(v.r[i].method), e->identity_error, e->tol);
        if (!as_sp_method_is_sampling(v.r[i].method))
            cr_assert(!e->violated, "%s: error %g bound %g tol %g", as_sp_method_name(v.r[i].method),
                      e->abs_error, e->bound, e->tol);
    }
    free(v.r);
    as_trace_free(tr);
    free(p);
}

/* ---- tiling and the one-query API agree with the whole-trace engine ------------------------- */

Test(sparsity, blocks_and_single_query_agree)
{
    char *p = make_trace("e.st", 1, AS_DT_F32, 2.0, 0, 333, 5);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_budget b[] = {{0.05, 0}, {0.3, 0}};
    recs big = run(tr, all_methods, N_ALL, b, 2, 2, 0);
    recs tiny = run(tr, all_methods, N_ALL, b, 2, 2, 1); /* one query per block */
    cr_assert_eq(big.n, tiny.n);
    size_t checked = 0;
    for (size_t i = 0; i < big.n; i++) {
        const as_sp_record *x = &big.r[i];
        const as_sp_record *y = NULL;
        for (size_t j = 0; j < tiny.n && !y; j++)
            if (tiny.r[j].layer == x->layer && tiny.r[j].head == x->head &&
                tiny.r[j].query == x->query && tiny.r[j].method == x->method &&
                tiny.r[j].budget_index == x->budget_index)
                y = &tiny.r[j];
        cr_assert(y);
        cr_assert_eq(x->ev.k, y->ev.k);
        cr_assert(fabs(x->ev.abs_error - y->ev.abs_error) <= 1e-12 * (1 + x->ev.abs_error));
        cr_assert(fabs(x->ev.bound - y->ev.bound) <= 1e-9 * (1 + x->ev.bound));
        if (i % 7 == 0) {
            const as_layer *l = as_trace_find_layer(tr, x->layer);
            as_sp_params prm;
            as_sp_params_init(&prm);
            as_sp_eval ev;
            /* the one-query API numbers its budget 0: compare deterministic methods */
            if (!as_sp_method_is_sampling(x->method)) {
                cr_assert_eq(as_sp_eval_query(l, x->head, x->query, x->method, b[x->budget_index],
                                              &prm, 0, 0.05, &ev, err), AS_OK, "%s", err);
                cr_assert_eq(ev.k, x->ev.k);
                cr_assert(fabs(ev.abs_error - x->ev.abs_error) <= 1e-12 * (1 + ev.abs_error));
                cr_assert(fabs(ev.bound - x->ev.bound) <= 1e-9 * (1 + ev.bound));
                checked++;
            }
        }
    }
    cr_assert(checked > 10);
    free(big.r), free(tiny.r);
    as_trace_free(tr);
    free(p);
}

/* ---- selections ---------------------------------------------------------------------------- */

Test(sparsity, sink_window_and_page_selections)
{
    char *p = make_trace("f.st", 1, AS_DT_F64, 2.0, 0, 100, 3);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    const as_layer *l = as_trace_layer(tr, 1);
    as_sp_params prm;
    as_sp_params_init(&prm);
    as_sp_sel sel, s2;
    as_sp_sel_init(&sel);
    as_sp_sel_init(&s2);
    int64_t n = as_layer_visible(l, 0); /* 98 */
    cr_assert_eq(as_sp_select(l, 1, 0, AS_SP_SINK_WINDOW, (as_budget){0, 10}, &prm, 0, NULL, &sel, err), AS_OK);
    cr_assert_eq(sel.n_det, 10);
    for (int i = 0; i < 4; i++) cr_assert_eq(sel.det[i], i);
    for (int i = 0; i < 6; i++) cr_assert_eq(sel.det[4 + i], n - 6 + i);
    prm.sinks = 20;
    cr_assert_eq(as_sp_select(l, 1, 0, AS_SP_SINK_WINDOW, (as_budget){0, 10}, &prm, 0, NULL, &sel, err), AS_OK);
    for (int i = 0; i < 10; i++) cr_assert_eq(sel.det[i], i);
    cr_assert_eq(as_sp_select(l, 1, 0, AS_SP_SINK_WINDOW, (as_budget){0, 500}, &prm, 0, NULL, &sel, err), AS_OK);
    cr_assert_eq(sel.n_det, n);
    /* Quest with pages of one key: the upper bound is the score itself, so page == top-k */
    prm.page_size = 1;
    for (int64_t h = 0; h < l->hq; h++)
        for (int64_t qi = 0; qi < l->t; qi++) {
            as_budget b = {0.13, 0};
            cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE, b, &prm, 0, NULL, &sel, err), AS_OK);
            cr_assert_eq(as_sp_select(l, h, qi, AS_SP_TOPK, b, &prm, 0, NULL, &s2, err), AS_OK);
            cr_assert_eq(sel.n_det, s2.n_det);
            for (int64_t j = 0; j < sel.n_det; j++) cr_assert_eq(sel.det[j], s2.det[j]);
        }
    /* pages of 16: whole pages (the last visible one partial), floor(k/16) of them */
    prm.page_size = 16;
    cr_assert_eq(as_sp_select(l, 0, 2, AS_SP_PAGE, (as_budget){0, 40}, &prm, 0, NULL, &sel, err), AS_OK);
    cr_assert(sel.n_det <= 32 && sel.n_det >= 2);
    for (int64_t j = 0; j < sel.n_det; j++) cr_assert(sel.det[j] < as_layer_visible(l, 2));
    as_sp_sel_free(&sel);
    as_sp_sel_free(&s2);
    as_trace_free(tr);
    free(p);
}

Test(sparsity, page_finds_the_needle)
{
    /* key 50 is aligned with every query: the page holding it has the largest upper bound */
    char *p = make_trace("g.st", 1, AS_DT_F64, 0.5, 50, 160, 4);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_sp_params prm;
    as_sp_params_init(&prm);
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (size_t li = 0; li < 2; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        for (int64_t h = 0; h < l->hq; h++)
            for (int64_t qi = 0; qi < l->t; qi++) {
                cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE, (as_budget){0, 16}, &prm, 0, NULL,
                                          &sel, err), AS_OK);
                cr_assert_eq(sel.n_det, 16);
                cr_assert_eq(sel.det[0], 48);
                as_sp_eval ev;
                cr_assert_eq(as_sp_eval_query(l, h, qi, AS_SP_PAGE, (as_budget){0, 16}, &prm, 0, 0,
                                              &ev, err), AS_OK);
                cr_assert(ev.captured_mass > 0.5, "mass %g", ev.captured_mass);
            }
    }
    as_sp_sel_free(&sel);
    as_trace_free(tr);
    free(p);
}

/* ---- sampling: the tiled statistics equal the array reference; estimator; sample size ------- */

Test(sparsity, sampling_engine_matches_array_reference)
{
    char *p = make_trace("h.st", 1, AS_DT_F64, 3.0, 0, 400, 4);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_sp_method m[] = {AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE};
    as_budget b[] = {{0.05, 0}, {0.25, 0}};
    recs v = run(tr, m, 2, b, 2, 1, 0);
    as_sp_params prm;
    as_sp_params_init(&prm);
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (size_t i = 0; i < v.n; i++) {
        const as_sp_record *r = &v.r[i];
        const as_layer *l = as_trace_find_layer(tr, r->layer);
        int64_t n = as_layer_visible(l, r->query), d = l->d, kvh = as_layer_kv_head(l, r->head);
        double *K = malloc((size_t)(n * d) * sizeof *K), *V = malloc((size_t)(n * d) * sizeof *V);
        double *q = malloc((size_t)d * sizeof *q), *s = malloc((size_t)n * sizeof *s);
        double *oh = malloc((size_t)d * sizeof *oh), *o = calloc((size_t)d, sizeof *o);
        as_layer_read_k(l, kvh, 0, n, K);
        as_layer_read_v(l, kvh, 0, n, V);
        as_layer_read_q(l, r->head, r->query, q);
        for (int64_t j = 0; j < n; j++) {
            double t = 0;
            for (int64_t c = 0; c < d; c++) t += K[j * d + c] * q[c];
            s[j] = l->scale * t;
        }
        /* the engine numbers draws by budget index: reproduce the selection's heavy set */
        cr_assert_eq(as_sp_select(l, r->head, r->query, r->method, b[r->budget_index], &prm, 0, s,
                                  &sel, err), AS_OK);
        as_sp_sstats ss;
        cr_assert_eq(as_sp_sampling_stats(s, V, n, d, sel.det, sel.n_det, &ss, err), AS_OK);
        double eps = as_sp_sampling_eps(&ss, r->ev.samples, prm.delta);
        cr_assert(fabs(eps - r->ev.bound) <= 1e-8 * eps + 1e-14, "eps %.17g vs %.17g", eps,
                  r->ev.bound);
        cr_assert_eq(sel.n_det + r->ev.samples, r->ev.k);
        /* the estimator on the same heavy set and a fresh sample agrees with its definition */
        as_sp_estimate(s, V, n, d, sel.det, sel.n_det, sel.samp, sel.n_samp, oh);
        double a_sum = 0, *a = malloc((size_t)n * sizeof *a);
        memcpy(a, s, (size_t)n * sizeof *a);
        as_softmax_inplace(a, n);
        for (int64_t j = 0; j < n; j++) {
            a_sum += a[j];
            for (int64_t c = 0; c < d; c++) o[c] += a[j] * V[j * d + c];
        }
        double num[64] = {0}, den = 0, w = (double)(n - sel.n_det) / (double)sel.n_samp;
        for (int64_t j = 0; j < sel.n_det; j++) {
            den += a[sel.det[j]];
            for (int64_t c = 0; c < d; c++) num[c] += a[sel.det[j]] * V[sel.det[j] * d + c];
        }
        for (int64_t j = 0; j < sel.n_samp; j++) {
            den += w * a[sel.samp[j]];
            for (int64_t c = 0; c < d; c++) num[c] += w * a[sel.samp[j]] * V[sel.samp[j] * d + c];
        }
        for (int64_t c = 0; c < d; c++) cr_assert(fabs(num[c] / den - oh[c]) < 1e-12 * (1 + fabs(oh[c])));
        /* sample size for a target: monotone and tight */
        double target = 0.5 * eps;
        int64_t need = as_sp_sampling_size(&ss, target, prm.delta);
        cr_assert(as_sp_sampling_eps(&ss, need, prm.delta) <= target);
        if (need > 1) cr_assert(as_sp_sampling_eps(&ss, need - 1, prm.delta) > target);
        for (int64_t mm = 1; mm < ss.n_rest; mm += 7)
            cr_assert(as_sp_sampling_eps(&ss, mm + 7 < ss.n_rest ? mm + 7 : ss.n_rest, prm.delta) <=
                      as_sp_sampling_eps(&ss, mm, prm.delta) + 1e-15);
        cr_assert_eq(as_sp_sampling_eps(&ss, ss.n_rest, prm.delta), 0);
        free(K), free(V), free(q), free(s), free(oh), free(o), free(a);
    }
    as_sp_sel_free(&sel);
    free(v.r);
    as_trace_free(tr);
    free(p);
}

#ifdef AS_HAVE_GSL
/* ---- Monte-Carlo coverage on problem instances drawn with GSL --------------------------------
 * For each instance the probability that ||o - o_hat|| exceeds the predicted epsilon must be at
 * most delta. The estimator's numerator and denominator must be unbiased. */
static void coverage_instance_h(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                                double delta, int kind, long trials, double *worst_frac,
                                int64_t pages);

static void coverage_instance(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                              double delta, int kind, long trials, double *worst_frac)
{
    coverage_instance_h(g, n, d, nh, m, delta, kind, trials, worst_frac, 0);
}

/* pages > 0: the heavy set is nh / pages whole pages of `pages` keys, those with the largest
 * maximum score (as page-sample's Quest pages: chosen without the sampled values) */
static void coverage_instance_h(gsl_rng *g, int64_t n, int64_t d, int64_t nh, int64_t m,
                                double delta, int kind, long trials, double *worst_frac,
                                int64_t pages)
{
    char err[AS_ERR_LEN];
    double *s = malloc((size_t)n * sizeof *s), *V = malloc((size_t)(n * d) * sizeof *V);
    for (int64_t i = 0; i < n; i++) {
        if (kind == 0) s[i] = gsl_ran_gaussian(g, 2.0);                  /* log-normal weights */
        else if (kind == 1) s[i] = -1.1 * log((double)(gsl_rng_uniform_int(g, (unsigned long)n) + 1)); /* Zipf-like */
        else s[i] = gsl_ran_gaussian(g, 0.5) + (i < 4 ? 6.0 : 0.0);      /* sinks */
        for (int64_t c = 0; c < d; c++) V[i * d + c] = gsl_ran_gaussian(g, 1.0) + (c == 0 ? 1.0 : 0.0);
    }
    int64_t *H = malloc((size_t)(nh + 1) * sizeof *H), *samp = malloc((size_t)n * sizeof *samp);
    if (pages > 0) {
        int64_t np = n / pages, want = nh / pages;
        double *pm = malloc((size_t)np * sizeof *pm);
        int64_t *pk = malloc((size_t)(want + 1) * sizeof *pk);
        for (int64_t q = 0; q < np; q++) {
            pm[q] = -INFINITY;
            for (int64_t i = q * pages; i < (q + 1) * pages; i++) pm[q] = fmax(pm[q], s[i]);
        }
        cr_assert_eq(as_select_topk(pm, np, want, pk, err), AS_OK);
        nh = 0;
        for (int64_t j = 0; j < want; j++)
            for (int64_t i = pk[j] * pages; i < (pk[j] + 1) * pages; i++) H[nh++] = i;
        as_select_sort_unique(H, nh);
        free(pm), free(pk);
    } else {
        cr_assert_eq(as_select_topk(s, n, nh, H, err), AS_OK);
    }
    as_sp_sstats st;
    cr_assert_eq(as_sp_sampling_stats(s, V, n, d, H, nh, &st, err), AS_OK);
    double eps = as_sp_sampling_eps(&st, m, delta);
    double *a = malloc((size_t)n * sizeof *a), *o = calloc((size_t)d, sizeof *o);
    memcpy(a, s, (size_t)n * sizeof *a);
    as_softmax_inplace(a, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) o[c] += a[i] * V[i * d + c];
    double *oh = malloc((size_t)d * sizeof *oh), *mean_num = calloc((size_t)d, sizeof *mean_num);
    double mean_den = 0;
    as_rng r;
    as_rng_seed(&r, gsl_rng_get(g));
    long exceed = 0;
    double w = (double)(n - nh) / (double)m;
    for (long t = 0; t < trials; t++) {
        int64_t got = as_select_sample(&r, n, H, nh, m, samp);
        cr_assert_eq(got, m);
        as_sp_estimate(s, V, n, d, H, nh, samp, m, oh);
        double e2 = 0;
        for (int64_t c = 0; c < d; c++) e2 += (oh[c] - o[c]) * (oh[c] - o[c]);
        exceed += sqrt(e2) > eps;
        double den = 0;
        for (int64_t j = 0; j < nh; j++) {
            den += a[H[j]];
            for (int64_t c = 0; c < d; c++) mean_num[c] += a[H[j]] * V[H[j] * d + c];
        }
        for (int64_t j = 0; j < m; j++) {
            den += w * a[samp[j]];
            for (int64_t c = 0; c < d; c++) mean_num[c] += w * a[samp[j]] * V[samp[j] * d + c];
        }
        mean_den += den;
    }
    double frac = (double)exceed / (double)trials;
    if (frac > *worst_frac) *worst_frac = frac;
    cr_assert(frac <= delta, "kind %d n %lld nh %lld m %lld: exceed %g > delta %g (eps %g)", kind,
              (long long)n, (long long)nh, (long long)m, frac, delta, eps);
    /* unbiased: |mean - truth| within 6 standard errors (sd from the population stats) */
    double se_den = sqrt((double)(n - nh) * (double)(n - nh) * st.var_e / (double)m / (double)trials);
    cr_assert(fabs(mean_den / trials - 1.0) <= 6 * se_den + 1e-12, "denominator biased");
    double dn = 0;
    for (int64_t c = 0; c < d; c++) dn += (mean_num[c] / trials - o[c]) * (mean_num[c] / trials - o[c]);
    /* numerator: its deviation norm is within a few of sqrt(E||.||^2 / trials) of the values
     * around o; use the (larger) spread of a (v - o) plus ||o|| a_j */
    double spread = 0;
    for (int64_t i = 0; i < n; i++) {
        double vn = 0;
        for (int64_t c = 0; c < d; c++) vn += V[i * d + c] * V[i * d + c];
        spread += a[i] * a[i] * vn;
    }
    spread = sqrt((double)(n - nh) * spread / (double)m / (double)trials);
    cr_assert(sqrt(dn) <= 8 * spread + 1e-12, "numerator biased: %g vs %g", sqrt(dn), spread);
    free(s), free(V), free(H), free(samp), free(a), free(o), free(oh), free(mean_num);
}

Test(sparsity, sampling_coverage_monte_carlo)
{
    gsl_rng *g = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(g, 20260523);
    double worst = 0;
    const double deltas[] = {0.05, 0.2};
    for (int kind = 0; kind < 3; kind++)
        for (int di = 0; di < 2; di++) {
            coverage_instance(g, 1500, 16, 0, 150, deltas[di], kind, 1500, &worst);   /* uniform */
            coverage_instance(g, 1500, 16, 30, 60, deltas[di], kind, 1500, &worst);   /* topk+sample */
            coverage_instance(g, 1500, 16, 100, 400, deltas[di], kind, 1500, &worst);
            coverage_instance_h(g, 1504, 16, 64, 100, deltas[di], kind, 1500, &worst, 16); /* pages */
        }
    fprintf(stderr, "sampling coverage: worst exceedance fraction %.4f\n", worst);
    gsl_rng_free(g);
}

Test(sparsity, binomial_tail_matches_gsl)
{
    const int64_t ns[] = {1, 10, 200, 5000};
    const double ps[] = {0.01, 0.05, 0.3};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 3; j++)
            for (int64_t x = 0; x <= ns[i]; x += (ns[i] > 50 ? ns[i] / 37 : 1)) {
                double want = x == 0 ? 1.0 : gsl_cdf_binomial_Q((unsigned)(x - 1), ps[j], (unsigned)ns[i]);
                double got = as_binom_tail(ns[i], x, ps[j]);
                cr_assert(fabs(got - want) <= 1e-9 * want + 1e-300, "n %lld x %lld p %g: %g vs %g",
                          (long long)ns[i], (long long)x, ps[j], got, want);
            }
}
#endif

Test(sparsity, coverage_on_real_sample)
{
    const char *p = sample_trace();
    if (!p) cr_skip_test("no sample trace");
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_sp_method m[] = {AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
    as_budget b[] = {{0.02, 0}, {0.1, 0}};
    recs v = run(tr, m, 3, b, 2, 200, 0);
    long draws[3] = {0}, exceed[3] = {0};
    for (size_t i = 0; i < v.n; i++) {
        int k = v.r[i].method == AS_SP_UNIFORM ? 0 : v.r[i].method == AS_SP_TOPK_SAMPLE ? 1 : 2;
        draws[k] += v.r[i].trials;
        exceed[k] += v.r[i].exceed;
        cr_assert(!v.r[i].ev.subset_violated);
        cr_assert(v.r[i].exceed <= v.r[i].trials);
    }
    for (int k = 0; k < 3; k++) {
        double frac = (double)exceed[k] / (double)draws[k];
        fprintf(stderr, "real sample coverage %s: %ld / %ld draws exceed epsilon (%.4f, delta 0.05)\n",
                as_sp_method_name(m[k]), exceed[k], draws[k], frac);
        cr_assert(frac <= 0.05);
        cr_assert(as_binom_tail(draws[k], exceed[k], 0.05) >= 1e-6);
    }
    free(v.r);
    as_trace_free(tr);
}

/* page-sample: its heavy set is the Quest selection of round(F k) keys (whole pages), its
 * samples come from the other keys; with pages of one key the heavy set is topk-sample's. */
Test(sparsity, page_sample_selection)
{
    char *p = make_trace("ps.st", 1, AS_DT_F32, 2.0, 0, 300, 3);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_sp_params prm;
    as_sp_params_init(&prm);
    as_sp_sel a, b;
    as_sp_sel_init(&a);
    as_sp_sel_init(&b);
    int64_t ks[] = {7, 31, 64, 100, 150};
    for (int64_t h = 0; h < l->hq; h++)
        for (int64_t qi = 0; qi < l->t; qi++)
            for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
                int64_t k = ks[t], kh = llround(0.5 * (double)k);
                prm.page_size = 16;
                cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE_SAMPLE, (as_budget){0, k}, &prm, 0, NULL,
                                          &a, err), AS_OK, "%s", err);
                cr_assert(a.sampled);
                cr_assert_eq(a.n_det + a.n_samp, k);
                cr_assert_eq(a.n_det, (kh / 16) * 16);
                if (kh >= 16) {
                    cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE, (as_budget){0, kh}, &prm, 0, NULL,
                                              &b, err), AS_OK);
                    cr_assert_eq(b.n_det, a.n_det);
                    for (int64_t j = 0; j < a.n_det; j++) cr_assert_eq(a.det[j], b.det[j]);
                }
                for (int64_t j = 0; j < a.n_samp; j++) {
                    cr_assert(a.samp[j] >= 0 && a.samp[j] < a.n);
                    for (int64_t i = 0; i < a.n_det; i++) cr_assert_neq(a.samp[j], a.det[i]);
                }
                prm.page_size = 1;
                cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE_SAMPLE, (as_budget){0, k}, &prm, 0, NULL,
                                          &a, err), AS_OK);
                cr_assert_eq(as_sp_select(l, h, qi, AS_SP_TOPK_SAMPLE, (as_budget){0, k}, &prm, 0, NULL,
                                          &b, err), AS_OK);
                cr_assert_eq(a.n_det, b.n_det);
                for (int64_t j = 0; j < a.n_det; j++) cr_assert_eq(a.det[j], b.det[j]);
            }
    as_sp_sel_free(&a);
    as_sp_sel_free(&b);
    as_trace_free(tr);
    free(p);
}

/* ---- budgets and aggregation ----------------------------------------------------------------- */

Test(sparsity, budget_parsing)
{
    as_budget b[8];
    size_t n;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_budget_parse_list("2%,0.5,128,1/50,1.0", 0, b, 8, &n, err), AS_OK, "%s", err);
    cr_assert_eq(n, 5);
    cr_assert(fabs(b[0].frac - 0.02) < 1e-15 && b[0].count == 0);
    cr_assert(b[1].frac == 0.5 && b[2].count == 128 && fabs(b[3].frac - 0.02) < 1e-15);
    cr_assert(b[4].frac == 1.0 && b[4].count == 0);
    cr_assert_eq(as_budget_parse_list("50x,2x,100", 1, b, 8, &n, err), AS_OK);
    cr_assert(n == 3 && fabs(b[0].frac - 0.02) < 1e-15 && b[1].frac == 0.5 && b[2].frac == 0.01);
    const char *bad[] = {"0", "150%", "-1", "0.0", "abc", "1/0", "2%%", ",", "3,", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(as_budget_parse_list(bad[i], 0, b, 8, &n, err), AS_ERR_USAGE, "%s", bad[i]);
    cr_assert_eq(as_budget_parse_list("0.5x", 1, b, 8, &n, err), AS_ERR_USAGE);
    cr_assert_eq(as_budget_keys((as_budget){0.02, 0}, 2048), 41);
    cr_assert_eq(as_budget_keys((as_budget){0.5, 0}, 10), 5);
    cr_assert_eq(as_budget_keys((as_budget){0.001, 0}, 10), 1);
    cr_assert_eq(as_budget_keys((as_budget){0, 500}, 10), 10);
    cr_assert_eq(as_budget_default_sweep(b, 8), 8);
}

/* A budget's draws depend on the budget, not on its place in the list: --sparsity 50x alone,
 * the default sweep and 100x,50x give identical sampled records at 50x. */
static const as_sp_record *find_rec(const recs *v, const as_sp_record *x, double budget)
{
    for (size_t j = 0; j < v->n; j++) {
        const as_sp_record *y = &v->r[j];
        if (y->layer == x->layer && y->head == x->head && y->query == x->query &&
            y->method == x->method && y->budget == budget)
            return y;
    }
    return NULL;
}

Test(sparsity, seeds_do_not_depend_on_budget_order)
{
    char *p = make_trace("seed.st", 1, AS_DT_F32, 2.0, 0, 400, 4);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    static const as_sp_method sm[] = {AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
    as_budget alone[1], pair[2], sweep[16];
    size_t n1, n2, ns = as_budget_default_sweep(sweep, 16);
    cr_assert_eq(as_budget_parse_list("50x", 1, alone, 1, &n1, err), AS_OK);
    cr_assert_eq(as_budget_parse_list("100x,50x", 1, pair, 2, &n2, err), AS_OK);
    recs a = run(tr, sm, 3, alone, n1, 3, 0);
    recs b = run(tr, sm, 3, pair, n2, 3, 0);
    recs c = run(tr, sm, 3, sweep, ns, 3, 0);
    const double f = alone[0].frac;
    size_t compared = 0;
    for (size_t i = 0; i < a.n; i++) {
        const as_sp_record *x = &a.r[i];
        const as_sp_record *ys[2] = {find_rec(&b, x, f), find_rec(&c, x, f)};
        for (int t = 0; t < 2; t++) {
            const as_sp_record *y = ys[t];
            cr_assert(y, "record L%d h%lld q%lld missing", x->layer, (long long)x->head,
                      (long long)x->query);
            cr_assert_eq(x->ev.k, y->ev.k);
            cr_assert_eq(x->ev.samples, y->ev.samples);
            cr_assert_eq(x->exceed, y->exceed);
            cr_assert(x->ev.abs_error == y->ev.abs_error,
                      "%s L%d h%lld q%lld: draw differs with the budget list (%.17g vs %.17g)",
                      as_sp_method_name(x->method), x->layer, (long long)x->head,
                      (long long)x->query, x->ev.abs_error, y->ev.abs_error);
            cr_assert(x->ev.bound == y->ev.bound);
            compared++;
        }
    }
    cr_assert_eq(compared, 2 * a.n);
    cr_assert(a.n == 3 * 2 * 4 * 4);
    free(a.r), free(b.r), free(c.r);
    as_trace_free(tr);
    free(p);
}

Test(sparsity, sweep_crossings)
{
    char *p = make_trace("i.st", 1, AS_DT_F64, 3.0, 0, 256, 4);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_budget b[16];
    size_t nb = as_budget_default_sweep(b, 16);
    b[nb++] = (as_budget){1.0, 0};
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    as_sp_method m = AS_SP_TOPK;
    cfg.methods = &m;
    cfg.n_methods = 1;
    cfg.budgets = b;
    cfg.n_budgets = nb;
    as_sp_agg *agg = as_sp_agg_new(&cfg);
    cr_assert_eq(as_sp_run(tr, &cfg, as_sp_agg_add, agg, err), AS_OK);
    cr_assert_eq(as_sp_agg_finish(agg, err), AS_OK);
    const as_sp_head_budget *hb;
    size_t nhb = as_sp_agg_head_budgets(agg, &hb);
    cr_assert_eq(nhb, 2 * 4 * nb);
    const as_sp_head_sweep *hs;
    size_t nhs = as_sp_agg_head_sweeps(agg, &hs);
    cr_assert_eq(nhs, 8);
    for (size_t i = 0; i < nhs; i++) {
        /* recompute from the head-budget table: largest sparsity with every denser budget ok */
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            double best = NAN;
            for (double x = 1.0; x > 0.001;) { /* budgets in decreasing order */
                double next = -1, err_at = NAN;
                for (size_t j = 0; j < nhb; j++)
                    if (hb[j].layer == hs[i].layer && hb[j].head == hs[i].head) {
                        if (fabs(hb[j].budget - x) < 1e-12) err_at = hb[j].mean_rel_error;
                        if (hb[j].budget < x - 1e-12 && hb[j].budget > next) next = hb[j].budget;
                    }
                if (!(err_at <= as_sp_thresholds[t])) break;
                best = x;
                if (next < 0) break;
                x = next;
            }
            cr_assert(isnan(best) ? isnan(hs[i].budget_at[t]) : fabs(best - hs[i].budget_at[t]) < 1e-12);
            if (t > 0) cr_assert(hs[i].sparsity_at[t] >= hs[i].sparsity_at[t - 1]);
        }
    }
    const as_sp_summary *sm;
    size_t ns = as_sp_agg_summaries(agg, &sm);
    cr_assert_eq(ns, 3); /* two layers + the model */
    cr_assert_eq(sm[2].layer, -1);
    cr_assert_eq(sm[2].n_heads, 8);
    cr_assert_eq(sm[2].violations, 0);
    cr_assert(sm[2].median_slack >= 1.0);
    as_sp_agg_free(agg);
    as_trace_free(tr);
    free(p);
}

/* ---- index files and the command ------------------------------------------------------------ */

static cJSON *run_json(const char *args, int want_rc)
{
    char *out = NULL;
    int rc = as_test_run_cli(args, &out);
    cr_assert_eq(rc, want_rc, "attnscope %s: exit %d", args, rc);
    cJSON *doc = cJSON_Parse(out);
    free(out);
    return doc;
}

static cJSON *find_records(cJSON *doc, const char *kind, int *count)
{
    cJSON *recs_ = cJSON_GetObjectItem(doc, "records"), *r, *first = NULL;
    *count = 0;
    cJSON_ArrayForEach(r, recs_)
    {
        if (strcmp(cJSON_GetObjectItem(r, "record")->valuestring, kind) == 0) {
            if (!first) first = r;
            (*count)++;
        }
    }
    return first;
}

Test(sparsity, cli_json_schema_and_exit_codes)
{
    char *p = make_trace("j.st", 1, AS_DT_F32, 2.0, 0, 128, 3);
    char args[2048];
    snprintf(args, sizeof args, "sparsity '%s' --budget 5%%,25%% --json --quiet", p);
    cJSON *doc = run_json(args, 0);
    cr_assert(doc);
    int cnt;
    cJSON *r = find_records(doc, "sparsity", &cnt);
    cr_assert_eq(cnt, 2 * 4 * 3 * 2 * 5);
    const char *fields[] = {"layer", "head", "query", "method", "budget", "k", "captured_mass",
                            "abs_error", "rel_error", "bound", "rel_bound", "violated"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_assert(cJSON_GetObjectItem(r, fields[i]), "missing %s", fields[i]);
    cr_assert(cJSON_IsBool(cJSON_GetObjectItem(r, "violated")));
    const char *kinds[] = {"head_budget", "head_sweep", "layer_summary", "model_summary",
                           "coverage", "check"};
    for (size_t i = 0; i < 6; i++) {
        find_records(doc, kinds[i], &cnt);
        cr_assert(cnt > 0, "no %s records", kinds[i]);
    }
    cJSON *chk = find_records(doc, "check", &cnt);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(chk, "pass")));
    cJSON_Delete(doc);
    /* CSV: a header with the record fields */
    char *out = NULL;
    snprintf(args, sizeof args, "sparsity '%s' --method topk --sparsity 10x --csv --quiet", p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert(strncmp(out, "record,layer,head", 17) == 0, "%.80s", out);
    cr_assert(strstr(out, "captured_mass,abs_error,rel_error,bound,rel_bound,violated"));
    free(out);
    /* usage errors */
    const char *bad[] = {"--method nope", "--budget 0", "--budget 150%", "--sparsity 0.5x",
                         "--method index", "--budget 1% --sparsity 2x", "--delta 1",
                         "--trials 0", "--method topk --budget 1%,2% --export-index x.st"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "sparsity '%s' %s 2>/dev/null", p, bad[i]);
        cr_assert_eq(as_test_run_cli(args, NULL), 2, "%s", bad[i]);
    }
    cr_assert_eq(as_test_run_cli("sparsity /nonexistent.st 2>/dev/null", NULL), 2);
    cr_assert_eq(as_test_run_cli("help sparsity >/dev/null", NULL), 0);
    free(p);
}

Test(sparsity, index_files_round_trip_and_refusals)
{
    char *p = make_trace("k.st", 1, AS_DT_F64, 2.0, 0, 96, 3);
    char *ix = as_test_path("k.idx.st"), *ixo = as_test_path("k.idxo.st");
    char args[4096];
    /* export top-k at 10%, read it back as an index: the same numbers */
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 10%% --export-index '%s' --quiet >/dev/null", p, ix);
    cr_assert_eq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 10%% --json --quiet", p);
    cJSON *a = run_json(args, 0);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, ix);
    cJSON *b = run_json(args, 0);
    cJSON *ra = cJSON_GetObjectItem(a, "records"), *rb = cJSON_GetObjectItem(b, "records");
    int na = 0, matched = 0;
    cJSON *x, *y;
    cJSON_ArrayForEach(x, ra)
    {
        if (strcmp(cJSON_GetObjectItem(x, "record")->valuestring, "sparsity")) continue;
        na++;
        cJSON_ArrayForEach(y, rb)
        {
            if (strcmp(cJSON_GetObjectItem(y, "record")->valuestring, "sparsity")) continue;
            if (cJSON_GetObjectItem(x, "layer")->valueint != cJSON_GetObjectItem(y, "layer")->valueint ||
                cJSON_GetObjectItem(x, "head")->valueint != cJSON_GetObjectItem(y, "head")->valueint ||
                cJSON_GetObjectItem(x, "query")->valueint != cJSON_GetObjectItem(y, "query")->valueint)
                continue;
            cr_assert_eq(cJSON_GetObjectItem(x, "k")->valueint, cJSON_GetObjectItem(y, "k")->valueint);
            cr_assert_eq(cJSON_GetObjectItem(x, "abs_error")->valuedouble,
                         cJSON_GetObjectItem(y, "abs_error")->valuedouble);
            cr_assert_eq(cJSON_GetObjectItem(x, "bound")->valuedouble,
                         cJSON_GetObjectItem(y, "bound")->valuedouble);
            matched++;
        }
    }
    cr_assert(na > 0 && matched == na);
    cJSON_Delete(a);
    cJSON_Delete(b);
    /* with the float64 sparse outputs as the 'kernel' outputs: passes, and says so */
    snprintf(args, sizeof args, "sparsity '%s' --method page --budget 32 --export-index '%s' --export-outputs --quiet >/dev/null", p, ixo);
    cr_assert_eq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet --out-tol 0", p, ixo);
    cJSON *c = run_json(args, 0);
    int cnt;
    cJSON *r = find_records(c, "sparsity", &cnt);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "kernel_output")));
    cJSON_Delete(c);

    /* hand-written files: GQA-shared rows [Hkv, T, K], -1 padding anywhere */
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    const as_layer *l0 = as_trace_layer(tr, 0), *l1 = as_trace_layer(tr, 1);
    int64_t T = l0->t, K = 5, d = l0->d;
    int32_t *idx = malloc((size_t)(l0->hkv * T * K) * sizeof *idx);
    for (int64_t i = 0; i < l0->hkv * T * K; i++) idx[i] = (i % K == 1) ? -1 : (int32_t)(i % K) * 3;
    as_index_layer_data L2[2] = {{0, l0->hkv, T, K, d, idx, NULL}, {1, l1->hkv, T, K, d, idx, NULL}};
    char *gq = as_test_path("gqa.idx.st");
    cr_assert_eq(as_index_write(gq, L2, 2, NULL, 0, err), AS_OK, "%s", err);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, gq);
    c = run_json(args, 0);
    r = find_records(c, "sparsity", &cnt);
    cr_assert_eq(cnt, 2 * l0->hq * T);
    cr_assert_eq(cJSON_GetObjectItem(r, "k")->valueint, 4);
    cJSON_Delete(c);
    /* refusals: out of range, duplicate, a missing layer, wrong T, not a safetensors file */
    char *bad = as_test_path("bad.idx.st");
    int64_t hq = l0->hq;
    int32_t *row = malloc((size_t)(hq * T * 2) * sizeof *row);
    for (int64_t i = 0; i < hq * T * 2; i++) row[i] = (int32_t)(i % 2);
    row[3] = (int32_t)l0->n; /* past the visible keys */
    as_index_layer_data B2[2] = {{0, hq, T, 2, d, row, NULL}, {1, hq, T, 2, d, row, NULL}};
    cr_assert_eq(as_index_write(bad, B2, 2, NULL, 0, err), AS_OK);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --quiet 2>/dev/null", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    row[3] = 0; /* duplicate of row[2] */
    cr_assert_eq(as_index_write(bad, B2, 2, NULL, 0, err), AS_OK);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    row[3] = 1;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK); /* layer 1 missing */
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --layer 0 --quiet >/dev/null", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 0); /* fine when only layer 0 is asked */
    B2[0].t = T - 1;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    FILE *f = fopen(bad, "wb");
    fputs("not a safetensors file", f);
    fclose(f);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    /* a kernel whose outputs are wrong: the run fails with exit 1 */
    B2[0].t = T;
    double *outs = calloc((size_t)(hq * T * d), sizeof *outs);
    for (int64_t i = 0; i < hq * T * d; i++) outs[i] = 100.0;
    B2[0].out = outs;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --layer 0 --quiet >/dev/null 2>&1", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 1);
    /* the writer refuses to write over the trace it reads */
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 1%% --export-index '%s' --quiet >/dev/null 2>&1", p, p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    free(outs), free(row), free(idx), free(bad), free(gq), free(ix), free(ixo);
    as_trace_free(tr);
    free(p);
}

/* The page method's selection width: when a query's budget covers all its visible keys, it reads
 * every page (n keys, the last page partial when N is not a multiple of the page size), which is
 * more than the whole pages within the budget, floor(k / P) P. The exported index row must be as
 * wide as the widest selection (the exporter once re-derived floor(k_N / P) P and refused it). */
Test(sparsity, page_width_when_budget_covers_all_keys)
{
    /* N = 100 = 6 x 16 + 4, causal: the queries see 98, 99 and 100 keys */
    char *p = make_trace("w.st", 1, AS_DT_F64, 2.0, 0, 100, 3);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_sp_params prm;
    as_sp_params_init(&prm);
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    const as_budget all[] = {{0, 100}, {1.0, 0}, {0, 500}};
    for (size_t bi = 0; bi < 3; bi++) {
        for (int64_t qi = 0; qi < l->t; qi++) {
            int64_t n = as_layer_visible(l, qi);
            cr_assert_eq(n, 98 + qi);
            cr_assert_eq(as_sp_select(l, 0, qi, AS_SP_PAGE, all[bi], &prm, 0, NULL, &sel, err),
                         AS_OK, "%s", err);
            cr_assert_eq(sel.n_det, n); /* every visible key, 7 pages */
            cr_assert_eq(as_sp_page_count(all[bi], n, 16), 7);
            cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, all[bi], &prm, n), n);
        }
        cr_assert_eq(as_sp_layer_width(l, AS_SP_PAGE, all[bi], &prm), 100);
    }
    /* a budget below the keys: whole pages only (40 keys -> 2 pages of 16) */
    cr_assert_eq(as_sp_page_count((as_budget){0, 40}, 100, 16), 2);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 40}, &prm, 100), 32);
    cr_assert_eq(as_sp_page_count((as_budget){0, 5}, 100, 16), 1); /* at least one page */
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 5}, &prm, 100), 16);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 5}, &prm, 10), 10);
    /* a count that covers a short query but not the longest: the short one is the widest */
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 98}, &prm, 98), 98);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 98}, &prm, 100), 96);
    cr_assert_eq(as_sp_layer_width(l, AS_SP_PAGE, (as_budget){0, 98}, &prm), 98);
    for (int64_t qi = 0; qi < l->t; qi++) {
        cr_assert_eq(as_sp_select(l, 0, qi, AS_SP_PAGE, (as_budget){0, 98}, &prm, 0, NULL, &sel,
                                  err), AS_OK);
        cr_assert(sel.n_det <= 98);
    }
    /* other methods: the budget's keys */
    cr_assert_eq(as_sp_sel_width(AS_SP_TOPK, (as_budget){0.1, 0}, &prm, 100), 10);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE_SAMPLE, (as_budget){0, 40}, &prm, 100), 40);
    as_sp_sel_free(&sel);
    as_trace_free(tr);

    /* the exporter: every key of every query, read back as an index, is exact */
    char *ix = as_test_path("w.idx.st");
    char args[4096];
    snprintf(args, sizeof args, "sparsity '%s' --method page --budget 100 --export-index '%s' --quiet >/dev/null", p, ix);
    cr_assert_eq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, ix);
    cJSON *doc = run_json(args, 0);
    cJSON *r;
    int seen = 0;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(doc, "records"))
    {
        if (strcmp(cJSON_GetObjectItem(r, "record")->valuestring, "sparsity")) continue;
        int q = cJSON_GetObjectItem(r, "query")->valueint;
        cr_assert_eq(cJSON_GetObjectItem(r, "k")->valueint, 98 + q);
        cr_assert_eq(cJSON_GetObjectItem(r, "captured_mass")->valuedouble, 1.0);
        seen++;
    }
    cr_assert_eq(seen, 2 * 4 * 3);
    cJSON_Delete(doc);
    free(ix);
    free(p);
}
