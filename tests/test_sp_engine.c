/* Tests of analysis/as_sp_engine: the exact identity and the deterministic bound on every head,
 * query, method and budget, their tolerances (tiny missed masses, large scores, f16), tiling,
 * the one-query API, the tiled sampling statistics against the array reference, coverage on the
 * real sample, and seeds that do not depend on the budget list. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

/* ---- the checks hold on every head, query, method and budget ------------------------------- */

static void check_no_violation(char *path, int owned)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert(tr, "%s", err);
    as_budget b[] = {{0.02, 0}, {0.1, 0}, {0.5, 0}, {0, 7}, {1.0, 0}};
    recs v = run(tr, engine_methods, N_ENGINE, b, 5, 3, 0);
    size_t want = 0;
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        const as_layer *l = as_trace_layer(tr, i);
        want += (size_t)(l->hq * l->t) * N_ENGINE * 5;
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

Test(sp_engine, no_violation_causal_f64) { check_no_violation(make_trace("a.st", 1, AS_DT_F64, 1.0, 0, 300, 6), 1); }
Test(sp_engine, no_violation_full_bf16_peaked)
{
    check_no_violation(make_trace("b.st", 0, AS_DT_BF16, 4.0, 0, 257, 5), 1);
}
Test(sp_engine, no_violation_needle_f16) { check_no_violation(make_trace("c.st", 1, AS_DT_F16, 2.0, 77, 200, 4), 1); }

Test(sp_engine, real_sample_no_violation)
{
    const char *p = sample_trace();
    if (!p) cr_skip_test("no sample trace");
    check_no_violation((char *)p, 0);
}

/* ---- the bound is attained when one key is left out ----------------------------------------- */

Test(sp_engine, bound_exact_with_one_key_left_out)
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

Test(sp_engine, tiny_missed_mass_bound)
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

Test(sp_engine, large_scores_no_false_violation)
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
            recs v = run(tr, engine_methods, N_ENGINE, b, 5, 2, 0);
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

Test(sp_engine, f16_huge_equal_scores)
{
    char *p = as_test_path("f16big.st");
    as_test_trace_spec ts = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 2, .n = 96, .d = 16,
                             .dtype = AS_DT_F16, .causal = 0, .gen = f16_gen};
    cr_assert_eq(as_test_write_trace(p, &ts), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_budget b[] = {{0.02, 0}, {0.1, 0}, {0.5, 0}, {1.0, 0}};
    recs v = run(tr, engine_methods, N_ENGINE, b, 4, 1, 0);
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

Test(sp_engine, blocks_and_single_query_agree)
{
    char *p = make_trace("e.st", 1, AS_DT_F32, 2.0, 0, 333, 5);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_budget b[] = {{0.05, 0}, {0.3, 0}};
    recs big = run(tr, engine_methods, N_ENGINE, b, 2, 2, 0);
    recs tiny = run(tr, engine_methods, N_ENGINE, b, 2, 2, 1); /* one query per block */
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

/* ---- sampling: the tiled statistics equal the array reference; estimator; sample size ------- */

Test(sp_engine, sampling_engine_matches_array_reference)
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

Test(sp_engine, coverage_on_real_sample)
{
    const char *p = sample_trace();
    if (!p) cr_skip_test("no sample trace");
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_sp_method m[] = {AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE, AS_SP_PAGE_IS};
    as_budget b[] = {{0.02, 0}, {0.1, 0}};
    recs v = run(tr, m, 4, b, 2, 200, 0);
    long draws[4] = {0}, exceed[4] = {0};
    for (size_t i = 0; i < v.n; i++) {
        int k = 0;
        while (m[k] != v.r[i].method) k++;
        draws[k] += v.r[i].trials;
        exceed[k] += v.r[i].exceed;
        cr_assert(!v.r[i].ev.subset_violated);
        cr_assert(v.r[i].exceed <= v.r[i].trials);
    }
    for (int k = 0; k < 4; k++) {
        double frac = (double)exceed[k] / (double)draws[k];
        fprintf(stderr, "real sample coverage %s: %ld / %ld draws exceed epsilon (%.4f, delta 0.05)\n",
                as_sp_method_name(m[k]), exceed[k], draws[k], frac);
        cr_assert(frac <= 0.05);
        cr_assert(as_binom_tail(draws[k], exceed[k], 0.05) >= 1e-6);
    }
    free(v.r);
    as_trace_free(tr);
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

Test(sp_engine, seeds_do_not_depend_on_budget_order)
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
