/* Tests of analysis/as_sp_select: the keys each method reads (sink + window, Quest pages,
 * page-sample), the page width against the selections, and the page summaries. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

/* ---- selections ---------------------------------------------------------------------------- */

Test(sp_select, sink_window_and_page_selections)
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

Test(sp_select, page_finds_the_needle)
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

/* page-sample: its heavy set is the Quest selection of round(F k) keys (whole pages), its
 * samples come from the other keys; with pages of one key the heavy set is topk-sample's. */
Test(sp_select, page_sample_selection)
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

/* The page width rule (as_sp_budget) against the selections: when a query's budget covers all
 * its visible keys the page method reads every page (n keys, the last page partial when N is
 * not a multiple of the page size), more than the whole pages within the budget, floor(k / P) P;
 * as_sp_layer_width, the exported index's row width, is the widest selection of the layer. */
Test(sp_select, page_width_matches_selections)
{
    /* N = 100 = 6 x 16 + 4, causal: the queries see 98, 99 and 100 keys */
    as_trace *tr = make_open("w.st", 1, AS_DT_F64, 2.0, 0, 100, 3, NULL);
    char err[AS_ERR_LEN];
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
            for (int64_t j = 0; j < n; j++) cr_assert_eq(sel.det[j], j);
            cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, all[bi], &prm, n), n);
        }
        cr_assert_eq(as_sp_layer_width(l, AS_SP_PAGE, all[bi], &prm), 100);
    }
    /* a count that covers the shortest query but not the longest: the short one is the widest
     * (98 keys; the others read 6 whole pages, 96 keys or fewer) */
    cr_assert_eq(as_sp_layer_width(l, AS_SP_PAGE, (as_budget){0, 98}, &prm), 98);
    for (int64_t qi = 0; qi < l->t; qi++) {
        int64_t n = as_layer_visible(l, qi);
        cr_assert_eq(as_sp_select(l, 0, qi, AS_SP_PAGE, (as_budget){0, 98}, &prm, 0, NULL, &sel,
                                  err), AS_OK);
        cr_assert_eq(sel.n_det <= as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 98}, &prm, n), 1);
        cr_assert(qi > 0 || sel.n_det == 98);
    }
    /* every method: no selection is wider than the layer width */
    const as_budget some[] = {{0.05, 0}, {0.5, 0}, {0, 33}, {0, 99}};
    for (int m = 0; m < AS_SP_N_METHODS; m++) {
        if (m == AS_SP_INDEX) continue;
        for (size_t bi = 0; bi < 4; bi++) {
            int64_t w = as_sp_layer_width(l, (as_sp_method)m, some[bi], &prm);
            for (int64_t h = 0; h < l->hq; h++)
                for (int64_t qi = 0; qi < l->t; qi++) {
                    cr_assert_eq(as_sp_select(l, h, qi, (as_sp_method)m, some[bi], &prm, 0, NULL,
                                              &sel, err), AS_OK);
                    cr_assert(sel.n_det + sel.n_samp <= w, "%s: %lld keys > width %lld",
                              as_sp_method_name((as_sp_method)m),
                              (long long)(sel.n_det + sel.n_samp), (long long)w);
                }
        }
    }
    as_sp_sel_free(&sel);
    as_trace_free(tr);
}

/* Quest's page summaries: element-wise min/max of each full page's keys, read directly. */
Test(sp_select, page_summaries_are_key_min_max)
{
    as_trace *tr = make_open("pg.st", 0, AS_DT_F32, 1.0, 0, 70, 2, NULL); /* 70 = 4 x 16 + 6 */
    char err[AS_ERR_LEN];
    const as_layer *l = as_trace_layer(tr, 1);
    const int64_t d = l->d;
    double *K = malloc((size_t)(l->n * d) * sizeof *K);
    for (int64_t kvh = 0; kvh < l->hkv; kvh++) {
        as_sp_pages pg;
        cr_assert_eq(as_sp_pages_build(l, kvh, 16, AS_SP_BOUNDS_EXACT, &pg, err), AS_OK, "%s",
                     err);
        cr_assert_eq(pg.P, 16);
        cr_assert_eq(pg.n_full, 4);
        as_layer_read_k(l, kvh, 0, l->n, K);
        for (int64_t g = 0; g < 4; g++)
            for (int64_t c = 0; c < d; c++) {
                double mn = INFINITY, mx = -INFINITY;
                for (int64_t i = g * 16; i < (g + 1) * 16; i++) {
                    mn = fmin(mn, K[i * d + c]);
                    mx = fmax(mx, K[i * d + c]);
                }
                cr_assert_eq(pg.pmin[g * d + c], mn);
                cr_assert_eq(pg.pmax[g * d + c], mx);
            }
        as_sp_pages_free(&pg);
        cr_assert(pg.pmin == NULL && pg.pmax == NULL);
    }
    free(K);
    as_trace_free(tr);
}

/* A record's seed depends on each of (seed, layer, head, query, k, method), and a draw of
 * as_sp_select_id as query (seed_h, seed_qi) is the draw of that query in the whole trace. */
Test(sp_select, record_seeds_and_select_id)
{
    as_sp_params prm;
    as_sp_params_init(&prm);
    uint64_t s0 = as_sp_record_seed(&prm, 1, 2, 3, 40, AS_SP_UNIFORM);
    cr_assert_eq(s0, as_sp_record_seed(&prm, 1, 2, 3, 40, AS_SP_UNIFORM));
    cr_assert_neq(s0, as_sp_record_seed(&prm, 0, 2, 3, 40, AS_SP_UNIFORM));
    cr_assert_neq(s0, as_sp_record_seed(&prm, 1, 1, 3, 40, AS_SP_UNIFORM));
    cr_assert_neq(s0, as_sp_record_seed(&prm, 1, 2, 2, 40, AS_SP_UNIFORM));
    cr_assert_neq(s0, as_sp_record_seed(&prm, 1, 2, 3, 41, AS_SP_UNIFORM));
    cr_assert_neq(s0, as_sp_record_seed(&prm, 1, 2, 3, 40, AS_SP_TOPK_SAMPLE));
    prm.seed = 1;
    cr_assert_neq(s0, as_sp_record_seed(&prm, 1, 2, 3, 40, AS_SP_UNIFORM));
    prm.seed = 0;
    /* non-causal: every query sees all keys, so query 2's draw can be asked as query 0 */
    as_trace *tr = make_open("sid.st", 0, AS_DT_F32, 1.0, 0, 200, 3, NULL);
    char err[AS_ERR_LEN];
    const as_layer *l = as_trace_layer(tr, 0);
    as_sp_sel a, b, c;
    as_sp_sel_init(&a);
    as_sp_sel_init(&b);
    as_sp_sel_init(&c);
    as_budget bu = {0.1, 0};
    cr_assert_eq(as_sp_select(l, 1, 2, AS_SP_UNIFORM, bu, &prm, 0, NULL, &a, err), AS_OK);
    cr_assert_eq(as_sp_select_id(l, 1, 2, 1, 2, AS_SP_UNIFORM, bu, &prm, 0, NULL, &b, err), AS_OK);
    cr_assert_eq(as_sp_select_id(l, 1, 2, 1, 0, AS_SP_UNIFORM, bu, &prm, 0, NULL, &c, err), AS_OK);
    cr_assert(a.n_samp == 20 && b.n_samp == 20 && c.n_samp == 20);
    cr_assert(memcmp(a.samp, b.samp, 20 * sizeof *a.samp) == 0);
    cr_assert(memcmp(a.samp, c.samp, 20 * sizeof *a.samp) != 0); /* another query's draw */
    /* trial 1 is another draw of the same record */
    cr_assert_eq(as_sp_select(l, 1, 2, AS_SP_UNIFORM, bu, &prm, 1, NULL, &b, err), AS_OK);
    cr_assert(memcmp(a.samp, b.samp, 20 * sizeof *a.samp) != 0);
    for (int64_t j = 1; j < b.n_samp; j++) cr_assert(b.samp[j] > b.samp[j - 1]);
    as_sp_sel_free(&a);
    as_sp_sel_free(&b);
    as_sp_sel_free(&c);
    as_trace_free(tr);
}

/* ---- page bounds in reduced precision (--page-bounds) -------------------------------------- */

/* The bfloat16 value next above v (a bfloat16): its bit pattern one step away from zero for
 * v > 0, toward zero for v < 0; above 0, the smallest subnormal 2^-133. */
static double bf16_next(double v)
{
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f == 0) return ldexp(1.0, -133);
    u = f > 0 ? u + 0x10000u : u - 0x10000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int is_bf16(double v)
{
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (double)f == v && (u & 0xFFFFu) == 0;
}

/* The nearest bfloat16 to the float32 value x (ties to even): what a store rounding to nearest
 * keeps. */
static double bf16_nearest(double x)
{
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void expect_rounding(double x, as_sp_bounds f, double down, double up)
{
    double d = as_sp_round_down(x, f), u = as_sp_round_up(x, f);
    cr_assert(d == down && u == up, "%s(%.17g): [%.17g, %.17g], expected [%.17g, %.17g]",
              as_sp_bounds_name(f), x, d, u, down, up);
}

/* Rounding toward -inf / +inf to float32 and bfloat16: named cases (exact values, ties to
 * neither side, past the range, subnormals, infinities, NaN) and random values of every
 * exponent: down <= x <= up, both in the format, adjacent in it unless x is. */
Test(sp_select, outward_rounding_to_f32_and_bf16)
{
    const as_sp_bounds F = AS_SP_BOUNDS_F32, B = AS_SP_BOUNDS_BF16;
    const double a = 1 + ldexp(1, -10), b = 1 + ldexp(1, -30), bfmax = ldexp(255, 120);
    expect_rounding(1.0, B, 1.0, 1.0);
    expect_rounding(1.0, F, 1.0, 1.0);
    expect_rounding(a, B, 1.0, 1 + ldexp(1, -7));
    expect_rounding(-a, B, -1 - ldexp(1, -7), -1.0);
    expect_rounding(a, F, a, a);
    expect_rounding(b, F, 1.0, 1 + ldexp(1, -23));
    expect_rounding(-b, F, -1 - ldexp(1, -23), -1.0);
    expect_rounding(b, B, 1.0, 1 + ldexp(1, -7));
    expect_rounding(0.1, AS_SP_BOUNDS_EXACT, 0.1, 0.1);
    expect_rounding(0.0, B, 0.0, 0.0);
    expect_rounding(1e39, F, FLT_MAX, INFINITY);
    expect_rounding(-1e39, F, -INFINITY, -FLT_MAX);
    expect_rounding(1e39, B, bfmax, INFINITY);
    expect_rounding(-1e39, B, -INFINITY, -bfmax);
    expect_rounding(FLT_MAX, B, bfmax, INFINITY);
    expect_rounding(1e-300, F, 0.0, ldexp(1, -149));
    expect_rounding(1e-300, B, 0.0, ldexp(1, -133));
    expect_rounding(-1e-300, B, -ldexp(1, -133), 0.0);
    expect_rounding(INFINITY, B, INFINITY, INFINITY);
    expect_rounding(-INFINITY, F, -INFINITY, -INFINITY);
    cr_assert(isnan(as_sp_round_down(NAN, B)) && isnan(as_sp_round_up(NAN, F)));
    uint64_t s = 77;
    for (int i = 0; i < 200000; i++) {
        double x = ldexp(as_test_normal(&s), (int)(as_test_uniform(&s) * 290) - 155);
        for (int fi = 0; fi < 2; fi++) {
            as_sp_bounds f = fi ? B : F;
            double d = as_sp_round_down(x, f), u = as_sp_round_up(x, f);
            cr_assert(d <= x && x <= u, "%.17g: [%.17g, %.17g]", x, d, u);
            cr_assert(fi ? is_bf16(d) && is_bf16(u) : (double)(float)d == d && (double)(float)u == u,
                      "%.17g: bounds not in %s", x, as_sp_bounds_name(f));
            if (d == x)
                cr_assert(u == x, "%.17g is in %s: up %.17g", x, as_sp_bounds_name(f), u);
            else
                cr_assert(u == (fi ? bf16_next(d) : (double)nextafterf((float)d, INFINITY)),
                          "%.17g: %.17g and %.17g not adjacent in %s", x, d, u,
                          as_sp_bounds_name(f));
        }
    }
    /* the names */
    as_sp_bounds f;
    cr_assert(as_sp_bounds_parse("bf16", &f) == 0 && f == B);
    cr_assert(as_sp_bounds_parse("bfloat16", &f) == 0 && f == B);
    cr_assert(as_sp_bounds_parse("f32", &f) == 0 && f == F);
    cr_assert(as_sp_bounds_parse("exact", &f) == 0 && f == AS_SP_BOUNDS_EXACT);
    cr_assert(as_sp_bounds_parse("f16", &f) == -1 && as_sp_bounds_parse("", &f) == -1);
    cr_assert_str_eq(as_sp_bounds_name(B), "bf16");
    as_sp_params prm;
    as_sp_params_init(&prm);
    cr_assert_eq(prm.page_bounds, AS_SP_BOUNDS_EXACT);
}

/* Keys on the grid 2^-20 in (-1, 1) (float32, mostly not bfloat16) and queries on the grid 2^-7
 * in (-1, 1): every product q_c k_c is a multiple of 2^-27 below 1 in size, and so is every
 * product with a page bound rounded outward to bfloat16 or float32 (a bound of a grid value is
 * a power-of-two multiple >= 2^-20 or the value itself, and at most 1); sums of 64 such terms
 * stay below 2^33 units of 2^-27, so every q.k and every Quest bound below is exact in float64. */
static double grid_gen(void *ctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    uint64_t h = as_seed_mix(*(uint64_t *)ctx, (uint64_t)layer * 131 + (uint64_t)which);
    h = as_seed_mix(h, (uint64_t)head * 1000003 + (uint64_t)row);
    h = as_seed_mix(h, (uint64_t)col);
    double u = as_test_uniform(&h);
    if (which == 'k') return ldexp(floor(u * (double)((1 << 21) - 1)) - ((1 << 20) - 1), -20);
    if (which == 'q') return ldexp(floor(u * 255) - 127, -7);
    return as_test_normal(&h);
}

/* Outward rounding keeps Quest's bound an upper bound: on random keys and queries, every full
 * page's stored f32 / bf16 min and max enclose the exact ones within one step of the format, and
 * sum_c max(q_c min_c, q_c max_c) >= q.k for every key of the page and every query, checked
 * exactly, with pages of 16 keys and of one key (there the exact bound is q.k itself, so a
 * rounding to nearest would break it for about half the keys); the page method's selection
 * ranks pages by those rounded bounds (the last, partial page rounded alike). */
Test(sp_select, outward_page_bounds_stay_upper_bounds)
{
    static uint64_t seed = 2024;
    const int64_t n = 16 * 12 + 5, d = 64; /* 12 full pages of 16 and one of 5 keys */
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = 8, .n = n, .d = d,
                             .dtype = AS_DT_F32, .gen = grid_gen, .ctx = &seed, .scale = 1.0};
    as_trace *tr = as_test_open_new_trace("grid.st", &sp);
    cr_assert(tr);
    char err[AS_ERR_LEN];
    double *K = malloc((size_t)(n * d) * sizeof *K), *q = malloc((size_t)d * sizeof *q);
    double *mn = malloc((size_t)d * sizeof *mn), *mx = malloc((size_t)d * sizeof *mx);
    double *ub = malloc(13 * sizeof *ub);
    int64_t pick[13], rounded = 0, checks = 0, tight = 0, nearest_broken = 0;
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        cr_assert_eq(l->scale, 1.0);
        for (int fi = 0; fi < 2; fi++) {
            const as_sp_bounds f = fi ? AS_SP_BOUNDS_BF16 : AS_SP_BOUNDS_F32;
            for (int64_t kvh = 0; kvh < l->hkv; kvh++)
            for (int64_t P = 1; P <= 16; P += 15) {
                as_sp_pages pg;
                cr_assert_eq(as_sp_pages_build(l, kvh, P, f, &pg, err), AS_OK, "%s", err);
                cr_assert(pg.n_full == n / P && pg.bounds == f);
                as_layer_read_k(l, kvh, 0, n, K);
                for (int64_t g = 0; g < pg.n_full; g++) {
                    const double *lo = pg.pmin + g * d, *hi = pg.pmax + g * d;
                    for (int64_t c = 0; c < d; c++) {
                        double emn = INFINITY, emx = -INFINITY;
                        for (int64_t i = g * P; i < (g + 1) * P; i++) {
                            emn = fmin(emn, K[i * d + c]);
                            emx = fmax(emx, K[i * d + c]);
                        }
                        cr_assert(lo[c] == as_sp_round_down(emn, f) &&
                                  hi[c] == as_sp_round_up(emx, f));
                        cr_assert(lo[c] <= emn && hi[c] >= emx && fabs(lo[c]) <= 1 &&
                                  fabs(hi[c]) <= 1);
                        /* on the grid 2^-20: the premise of exact arithmetic below */
                        cr_assert(ldexp(lo[c], 20) == floor(ldexp(lo[c], 20)) &&
                                  ldexp(hi[c], 20) == floor(ldexp(hi[c], 20)));
                        rounded += (lo[c] != emn) + (hi[c] != emx);
                    }
                    for (int64_t h = kvh * (l->hq / l->hkv); h < (kvh + 1) * (l->hq / l->hkv); h++)
                        for (int64_t qi = 0; qi < l->t; qi++) {
                            as_layer_read_q(l, h, qi, q);
                            double u = 0;
                            for (int64_t c = 0; c < d; c++)
                                u += fmax(q[c] * lo[c], q[c] * hi[c]);
                            for (int64_t i = g * P; i < (g + 1) * P; i++) {
                                double s = 0;
                                for (int64_t c = 0; c < d; c++) s += q[c] * K[i * d + c];
                                cr_assert(s <= u, "%s page %lld key %lld: q.k %.17g > bound %.17g",
                                          as_sp_bounds_name(f), (long long)g, (long long)i, s, u);
                                checks++;
                                tight += s == u;
                                if (P == 1 && f == AS_SP_BOUNDS_BF16) {
                                    /* the same bound from min/max rounded to nearest */
                                    double un = 0;
                                    for (int64_t c = 0; c < d; c++)
                                        un += q[c] * bf16_nearest(K[i * d + c]);
                                    nearest_broken += s > un;
                                }
                            }
                        }
                }
                /* the selection: the 4 pages of the largest rounded bounds, the partial page's
                 * min/max rounded as the full ones */
                if (P == 1) {
                    as_sp_pages_free(&pg);
                    continue;
                }
                as_sp_params prm;
                as_sp_params_init(&prm);
                prm.page_bounds = f;
                for (int64_t h = kvh * (l->hq / l->hkv); h < (kvh + 1) * (l->hq / l->hkv); h++)
                    for (int64_t qi = 0; qi < l->t; qi++) {
                        as_layer_read_q(l, h, qi, q);
                        for (int64_t g = 0; g < 13; g++) {
                            const double *lo = pg.pmin + g * d, *hi = pg.pmax + g * d;
                            if (g == 12) {
                                for (int64_t c = 0; c < d; c++) {
                                    mn[c] = mx[c] = K[192 * d + c];
                                    for (int64_t i = 193; i < n; i++) {
                                        mn[c] = fmin(mn[c], K[i * d + c]);
                                        mx[c] = fmax(mx[c], K[i * d + c]);
                                    }
                                }
                                as_sp_page_round(f, d, mn, mx);
                                lo = mn;
                                hi = mx;
                            }
                            double u = 0;
                            for (int64_t c = 0; c < d; c++)
                                u += q[c] >= 0 ? q[c] * hi[c] : q[c] * lo[c];
                            ub[g] = u;
                        }
                        cr_assert_eq(as_select_topk(ub, 13, 4, pick, err), AS_OK);
                        int64_t want[4 * 16], nw = 0;
                        int in[13] = {0};
                        for (int j = 0; j < 4; j++) in[pick[j]] = 1;
                        for (int64_t g = 0; g < 13; g++)
                            for (int64_t i = g * P; in[g] && i < (g + 1) * P && i < n; i++)
                                want[nw++] = i;
                        cr_assert_eq(as_sp_select(l, h, qi, AS_SP_PAGE, (as_budget){0, 64}, &prm,
                                                  0, NULL, &sel, err), AS_OK, "%s", err);
                        cr_assert_eq(sel.n_det, nw);
                        for (int64_t j = 0; j < nw; j++) cr_assert_eq(sel.det[j], want[j]);
                    }
                as_sp_pages_free(&pg);
            }
        }
    }
    cr_assert(rounded > 1000, "only %lld page bounds moved", (long long)rounded);
    /* layers x formats x kv heads x heads of the group x queries x keys of the full pages */
    cr_assert(checks == 2 * 2 * 2 * 2 * 8 * (192 + 197), "%lld checks", (long long)checks);
    cr_assert(tight > 0);
    /* rounding to nearest would not do: with pages of one key it breaks the bound often */
    cr_assert(nearest_broken > 1000, "nearest rounding broke %lld bounds",
              (long long)nearest_broken);
    as_sp_sel_free(&sel);
    free(K), free(q), free(mn), free(mx), free(ub);
    as_trace_free(tr);
}

/* Keys that are bfloat16 values (a bf16 trace, the format of the real traces): their min and
 * max are bfloat16 values too, so storing them in f32 or bf16 changes no bound, no selection and
 * no record of page or page-sample, on as_sp_run as on the per-query path. */
Test(sp_select, bf16_keys_make_bf16_bounds_change_nothing)
{
    as_trace *tr = make_open("flat16.st", 1, AS_DT_BF16, 0.3, 0, 300, 5, NULL);
    char err[AS_ERR_LEN];
    const as_budget bud[] = {{0, 1}, {0, 20}, {0, 48}, {0.1, 0}, {0.02, 0}, {0.5, 0}, {1.0, 0}};
    const size_t nb = sizeof bud / sizeof bud[0];
    as_sp_sel s0, s1;
    as_sp_sel_init(&s0);
    as_sp_sel_init(&s1);
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        for (int64_t kvh = 0; kvh < l->hkv; kvh++) {
            as_sp_pages e, b;
            cr_assert_eq(as_sp_pages_build(l, kvh, 16, AS_SP_BOUNDS_EXACT, &e, err), AS_OK);
            cr_assert_eq(as_sp_pages_build(l, kvh, 16, AS_SP_BOUNDS_BF16, &b, err), AS_OK);
            size_t sz = (size_t)(e.n_full * l->d) * sizeof(double);
            cr_assert(memcmp(e.pmin, b.pmin, sz) == 0 && memcmp(e.pmax, b.pmax, sz) == 0);
            as_sp_pages_free(&e);
            as_sp_pages_free(&b);
        }
        for (int64_t h = 0; h < l->hq; h++)
            for (int64_t qi = 0; qi < l->t; qi++)
                for (size_t bi = 0; bi < nb; bi++)
                    for (int mi = 0; mi < 2; mi++) {
                        as_sp_method m = mi ? AS_SP_PAGE_SAMPLE : AS_SP_PAGE;
                        as_sp_params pe, pb;
                        as_sp_params_init(&pe);
                        as_sp_params_init(&pb);
                        pb.page_bounds = AS_SP_BOUNDS_BF16;
                        cr_assert_eq(as_sp_select(l, h, qi, m, bud[bi], &pe, 0, NULL, &s0, err),
                                     AS_OK);
                        cr_assert_eq(as_sp_select(l, h, qi, m, bud[bi], &pb, 0, NULL, &s1, err),
                                     AS_OK);
                        cr_assert(s0.n_det == s1.n_det && s0.n_samp == s1.n_samp);
                        cr_assert(memcmp(s0.det, s1.det, (size_t)s0.n_det * sizeof *s0.det) == 0);
                        cr_assert(memcmp(s0.samp, s1.samp, (size_t)s0.n_samp * sizeof *s0.samp) ==
                                  0);
                    }
    }
    /* the engine's records, bit for bit */
    const as_sp_method ms[] = {AS_SP_PAGE, AS_SP_PAGE_SAMPLE};
    recs v[3];
    for (int fi = 0; fi < 3; fi++) {
        as_sp_config cfg;
        as_sp_config_init(&cfg);
        cfg.methods = ms;
        cfg.n_methods = 2;
        cfg.budgets = bud;
        cfg.n_budgets = nb;
        cfg.eps_rel = 0.05;
        cfg.params.page_bounds = fi;
        v[fi] = (recs){0};
        cr_assert_eq(as_sp_run(tr, &cfg, collect, &v[fi], err), AS_OK, "%s", err);
    }
    for (int fi = 1; fi < 3; fi++) {
        cr_assert_eq(v[fi].n, v[0].n);
        for (size_t i = 0; i < v[0].n; i++)
            cr_assert(memcmp(&v[fi].r[i].ev, &v[0].r[i].ev, sizeof v[0].r[i].ev) == 0,
                      "record %zu differs under %s bounds", i, as_sp_bounds_name(fi));
    }
    for (int fi = 0; fi < 3; fi++) free(v[fi].r);
    as_sp_sel_free(&s0);
    as_sp_sel_free(&s1);
    as_trace_free(tr);
}
