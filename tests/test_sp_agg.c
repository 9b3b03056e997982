/* Tests of analysis/as_sp_agg: head-budget curves, threshold crossings and summaries. */
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

Test(sp_agg, sweep_crossings)
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

/* ---- summaries from hand-made records: every number worked out by hand ---------------------- */

static as_sp_record mkrec(as_sp_method m, int layer, int64_t head, int64_t q, size_t bi,
                          double budget, double rel_error, double slack)
{
    as_sp_record r;
    memset(&r, 0, sizeof r);
    r.layer = layer;
    r.head = head;
    r.kv_head = head;
    r.query = q;
    r.method = m;
    r.budget_index = bi;
    r.budget = budget;
    r.trials = 1;
    r.delta = 0.05;
    r.ev.n = 100;
    r.ev.k = (int64_t)(budget * 100);
    r.ev.norm_o = 1.0;
    r.ev.abs_error = rel_error;
    r.ev.rel_error = rel_error;
    r.ev.bound = slack * rel_error;
    r.ev.rel_bound = slack * rel_error;
    r.ev.captured_mass = 1.0 - rel_error;
    r.ev.identity_ok = 1;
    return r;
}

Test(sp_agg, summaries_by_hand)
{
    /* topk: layers 0-1 x heads 0-1 x budgets 0.5, 0.1 x queries 0-2; slack 2 in layer 0, 4 in
     * layer 1 (NaN where the error is 0) */
    static const double e[2][2][2][3] = {
        {{{0.001, 0.002, 0.003}, {0.02, 0.03, 0.04}},    /* L0 h0: 1% at 0.5, 5% and 10% at 0.1 */
         {{0.2, 0.2, 0.2}, {0.001, 0.001, 0.001}}},      /* L0 h1: dense (0.5 already fails) */
        {{{0.03, 0.04, 0.05}, {0.2, 0.3, 0.4}},          /* L1 h0: 5% and 10% at 0.5 */
         {{0.0, 0.0, 0.0}, {0.005, 0.006, 0.007}}}};     /* L1 h1: every threshold at 0.1 */
    static const double bud[2] = {0.5, 0.1};
    as_sp_config cfg;
    as_sp_config_init(&cfg); /* delta 0.05 */
    as_sp_agg *agg = as_sp_agg_new(&cfg);
    cr_assert(agg);
    /* added in a scrambled order: the aggregator sorts */
    for (int q = 2; q >= 0; q--)
        for (int bi = 0; bi < 2; bi++)
            for (int layer = 1; layer >= 0; layer--)
                for (int h = 0; h < 2; h++) {
                    as_sp_record r = mkrec(AS_SP_TOPK, layer, h, q, (size_t)bi, bud[bi],
                                           e[layer][h][bi][q], layer ? 4.0 : 2.0);
                    if (layer == 1 && h == 0 && bi == 1 && q == 2) r.ev.violated = 1;
                    if (layer == 0 && h == 1 && bi == 0 && q == 1) r.ev.identity_ok = 0;
                    cr_assert_eq(as_sp_agg_add(agg, &r), 0);
                }
    /* uniform: layer 0 head 0, budget 0.1, two queries of two draws, one exceedance */
    for (int q = 0; q < 2; q++) {
        as_sp_record r = mkrec(AS_SP_UNIFORM, 0, 0, q, 0, 0.1, 0.01 * (q + 1), 3.0);
        r.trials = 2;
        r.exceed = q;
        cr_assert_eq(as_sp_agg_add(agg, &r), 0);
    }
    char err[AS_ERR_LEN];
    cr_assert_eq(as_sp_agg_finish(agg, err), AS_OK, "%s", err);

    const as_sp_head_budget *hb;
    cr_assert_eq(as_sp_agg_head_budgets(agg, &hb), 9);
    /* sorted by method, layer, head, budget index: hb[0] is topk L0 h0 at 0.5 */
    cr_assert(hb[0].layer == 0 && hb[0].head == 0 && hb[0].budget_index == 0);
    cr_assert_eq(hb[0].n_queries, 3);
    cr_assert_float_eq(hb[0].mean_rel_error, 0.002, 1e-15);
    cr_assert_float_eq(hb[0].median_rel_error, 0.002, 1e-15);
    cr_assert_float_eq(hb[0].max_rel_error, 0.003, 1e-15);
    cr_assert_float_eq(hb[0].mean_kept, 0.5, 1e-15);
    cr_assert_float_eq(hb[0].mean_captured_mass, 0.998, 1e-15);
    cr_assert_float_eq(hb[0].mean_rel_bound, 0.004, 1e-15);
    cr_assert_float_eq(hb[0].median_slack, 2.0, 1e-15);
    cr_assert_eq(hb[2].violations, 1); /* L0 h1 at 0.5: the identity failure */
    cr_assert(hb[6].layer == 1 && hb[6].head == 1 && isnan(hb[6].median_slack));
    cr_assert_eq(hb[5].violations, 1); /* L1 h0 at 0.1 */
    cr_assert(hb[8].method == AS_SP_UNIFORM && hb[8].draws == 4 && hb[8].exceed == 1);

    const as_sp_head_sweep *hs;
    cr_assert_eq(as_sp_agg_head_sweeps(agg, &hs), 5);
    static const double want_sp[4][3] = {{2, 10, 10}, {1, 1, 1}, {1, 2, 2}, {10, 10, 10}};
    static const int want_cens[4][3] = {{0, 1, 1}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1}};
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            cr_assert_float_eq(hs[i].sparsity_at[t], want_sp[i][t], 1e-12, "head %d t %d", i, t);
            cr_assert_eq(hs[i].censored[t], want_cens[i][t], "head %d t %d", i, t);
        }
    cr_assert(isnan(hs[1].budget_at[0]) && isnan(hs[2].budget_at[0]));

    const as_sp_summary *s;
    cr_assert_eq(as_sp_agg_summaries(agg, &s), 5);
    /* order: topk L0, topk L1, uniform L0, then the model: topk, uniform */
    const int want_layer[5] = {0, 1, 0, -1, -1};
    const as_sp_method want_m[5] = {AS_SP_TOPK, AS_SP_TOPK, AS_SP_UNIFORM, AS_SP_TOPK, AS_SP_UNIFORM};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(s[i].layer, want_layer[i]);
        cr_assert_eq(s[i].method, want_m[i]);
    }
    static const double med[3][3] = {{1.5, 5.5, 5.5}, {5.5, 6, 6}, {1.5, 6, 6}};
    static const double mn[3][3] = {{1, 1, 1}, {1, 2, 2}, {1, 1, 1}};
    static const int64_t dense[3][3] = {{1, 1, 1}, {1, 0, 0}, {2, 1, 1}};
    const int at[3] = {0, 1, 3};
    for (int g = 0; g < 3; g++) {
        const as_sp_summary *x = &s[at[g]];
        cr_assert_eq(x->n_heads, g == 2 ? 4 : 2);
        cr_assert_eq(x->records, g == 2 ? 24 : 12);
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            cr_assert_float_eq(x->median_sparsity[t], med[g][t], 1e-12, "g %d t %d", g, t);
            cr_assert_float_eq(x->min_sparsity[t], mn[g][t], 1e-12);
            cr_assert_eq(x->dense_heads[t], dense[g][t]);
        }
        cr_assert(isnan(x->coverage_p));
    }
    /* layer 0 errors sorted: 0.001 x4, 0.002, 0.003 | 0.02, 0.03, 0.04, 0.2 x3 */
    cr_assert_float_eq(s[0].median_rel_error, 0.5 * (0.003 + 0.02), 1e-15);
    cr_assert_float_eq(s[0].median_slack, 2.0, 1e-15);
    cr_assert(s[0].violations == 0 && s[0].identity_failures == 1);
    /* layer 1: 0 x3, 0.005, 0.006, 0.007 | 0.03, 0.04, 0.05, 0.2, 0.3, 0.4; slack 4 (9 of 12) */
    cr_assert_float_eq(s[1].median_rel_error, 0.5 * (0.007 + 0.03), 1e-15);
    cr_assert_float_eq(s[1].median_slack, 4.0, 1e-15);
    cr_assert(s[1].violations == 1 && s[1].identity_failures == 0);
    /* model: 21 slacks (12 of 2, 9 of 4): the 11th is 2; errors: 0 x3, 0.001 x4, 0.002, 0.003,
     * 0.005, 0.006, 0.007 | 0.02, ...: the 12th and 13th of 24 */
    cr_assert_float_eq(s[3].median_slack, 2.0, 1e-15);
    cr_assert_float_eq(s[3].median_rel_error, 0.5 * (0.007 + 0.02), 1e-15);
    cr_assert(s[3].violations == 1 && s[3].identity_failures == 1);
    /* uniform: 4 draws, 1 exceedance: P(Bin(4, 0.05) >= 1) = 1 - 0.95^4 */
    for (int i = 2; i <= 4; i += 2) {
        cr_assert(s[i].draws == 4 && s[i].exceed == 1 && s[i].records == 2 && s[i].n_heads == 1);
        cr_assert_float_eq(s[i].coverage_p, 1.0 - pow(0.95, 4), 1e-12);
        cr_assert_float_eq(s[i].median_rel_error, 0.015, 1e-15);
        cr_assert_float_eq(s[i].median_slack, 3.0, 1e-12);
    }
    as_sp_agg_free(agg);
}
