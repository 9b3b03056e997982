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
