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
        cr_assert_eq(as_sp_pages_build(l, kvh, 16, AS_SP_BOUNDS_EXACT, &pg, err), AS_OK, "%s", err);
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
