/* Tests of page-is (Quest pages + importance sampling of the rest, docs/theory.md, "Pages +
 * importance sampling"): the proposal in closed form, the draws and their weights, the exact
 * denominator of the oracle proposal, unbiasedness and the Monte-Carlo coverage of its (epsilon,
 * delta) guarantee on problem instances, epsilon's monotonicity and the sample size for a target,
 * and the engine's tiled statistics, estimator and records against the array reference. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

/* a standard normal from the project's generator (Box-Muller) */
static double rnorm(as_rng *r)
{
    double u = as_rng_uniform(r), v = as_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(2.0 * M_PI * v);
}

/* q_j = (1 - beta) exp(tau (U_p - U*)) / W + beta / |R| outside H, 0 on H, in closed form */
Test(sp_page_is, proposal_closed_form)
{
    char err[AS_ERR_LEN];
    const int64_t n = 37, P = 8; /* pages 0..4, the last one of 5 keys */
    const double ub[] = {1.0, 3.0, -2.0, 0.5, 2.0};
    const int64_t H[] = {8, 9, 10, 11, 12, 13, 14, 15}; /* page 1, the top page, is heavy */
    double q[37], cq[37];
    const double taus[] = {1.0, 0.5, 0.0}, betas[] = {0.1, 1.0, 1e-3};
    for (int ti = 0; ti < 3; ti++)
        for (int bi = 0; bi < 3; bi++) {
            double tau = taus[ti], beta = betas[bi];
            cr_assert_eq(as_sp_is_proposal(ub, n, P, H, 8, tau, beta, q, cq, err), AS_OK);
            const int64_t r = n - 8;
            double W = 0;
            for (int64_t j = 0; j < n; j++)
                if (j / P != 1) W += exp(tau * (ub[j / P] - 2.0)); /* U* = 2: page 4 */
            double sum = 0;
            for (int64_t j = 0; j < n; j++) {
                double want = j / P == 1 ? 0.0
                                         : (1 - beta) * exp(tau * (ub[j / P] - 2.0)) / W + beta / r;
                cr_assert(fabs(q[j] - want) <= 1e-15, "tau %g beta %g key %lld: %.17g vs %.17g",
                          tau, beta, (long long)j, q[j], want);
                sum += q[j];
                cr_assert(fabs(cq[j] - sum) <= 1e-15);
                if (j / P != 1) cr_assert(q[j] >= beta / r * (1 - 1e-15));
            }
            cr_assert(fabs(sum - 1.0) <= 1e-14);
        }
    /* bad arguments */
    cr_assert_eq(as_sp_is_proposal(ub, n, P, H, 8, 1.0, 0.0, q, cq, err), AS_ERR_USAGE);
    cr_assert_eq(as_sp_is_proposal(ub, n, P, H, 8, -1.0, 0.1, q, cq, err), AS_ERR_USAGE);
}

/* the draws: distinct keys ascending, never in H, counts adding up to m (w_j m q_j = count) */
Test(sp_page_is, draws_and_weights)
{
    char err[AS_ERR_LEN];
    const int64_t n = 200, P = 16, m = 500;
    double ub[13], q[200], cq[200], w[500];
    int64_t H[32], keys[500];
    for (int p = 0; p < 13; p++) ub[p] = sin(p * 1.7) * 3;
    for (int64_t j = 0; j < 16; j++) H[j] = 16 + j, H[16 + j] = 96 + j;
    cr_assert_eq(as_sp_is_proposal(ub, n, P, H, 32, 1.0, 0.1, q, cq, err), AS_OK);
    as_rng r;
    as_rng_seed(&r, 7);
    long hits[200] = {0};
    for (int rep = 0; rep < 200; rep++) {
        int64_t ns = as_sp_is_draw(&r, q, cq, n, m, keys, w);
        cr_assert(ns >= 1 && ns <= m);
        double total = 0;
        for (int64_t j = 0; j < ns; j++) {
            cr_assert(j == 0 || keys[j] > keys[j - 1]);
            cr_assert(q[keys[j]] > 0, "key %lld of H drawn", (long long)keys[j]);
            double cnt = w[j] * (double)m * q[keys[j]];
            cr_assert(fabs(cnt - llround(cnt)) < 1e-9 && cnt >= 1 - 1e-9);
            total += cnt;
            hits[keys[j]] += llround(cnt);
        }
        cr_assert(fabs(total - (double)m) < 1e-6);
    }
    /* frequencies follow q (chi-square-like check per key: within 6 sd) */
    const double N = 200.0 * m;
    for (int64_t j = 0; j < n; j++) {
        double e = N * q[j], sd = sqrt(N * q[j] * (1 - q[j]));
        cr_assert(fabs((double)hits[j] - e) <= 6 * sd + 1e-9, "key %lld: %ld vs %g",
                  (long long)j, hits[j], e);
    }
}

/* pages of one key with U_p = s_p (the Quest bound of a one-key page is its score) and tau = 1:
 * the proposal is a_j / (1 - P_H) up to the defensive share, so every draw's weight a_J / q_J
 * is 1 - P_H and the estimated denominator is exactly 1 */
Test(sp_page_is, oracle_proposal_exact_denominator)
{
    char err[AS_ERR_LEN];
    const int64_t n = 300, d = 4, m = 25;
    double s[300], V[1200], q[300], cq[300], a[300], w[25];
    int64_t H[10], keys[25];
    as_rng r;
    as_rng_seed(&r, 11);
    for (int64_t i = 0; i < n; i++) {
        s[i] = 2.0 * rnorm(&r);
        for (int64_t c = 0; c < d; c++) V[i * d + c] = rnorm(&r);
    }
    cr_assert_eq(as_select_topk(s, n, 10, H, err), AS_OK);
    cr_assert_eq(as_sp_is_proposal(s, n, 1, H, 10, 1.0, 1e-12, q, cq, err), AS_OK);
    memcpy(a, s, sizeof a);
    as_softmax_inplace(a, n);
    double ph = 0;
    for (int j = 0; j < 10; j++) ph += a[H[j]];
    for (int rep = 0; rep < 50; rep++) {
        int64_t ns = as_sp_is_draw(&r, q, cq, n, m, keys, w);
        double den = ph;
        for (int64_t j = 0; j < ns; j++) den += w[j] * a[keys[j]];
        cr_assert(fabs(den - 1.0) <= 1e-9, "denominator %.17g", den);
    }
    as_sp_isstats st;
    cr_assert_eq(as_sp_is_stats(s, V, n, d, H, 10, q, 0, &st, err), AS_OK);
    cr_assert(fabs(st.sum_a2q - st.mass_rest * st.mass_rest) <= 1e-9 * st.mass_rest);
}

/* ---- Monte-Carlo: unbiased, and the guarantee holds in at least 1 - delta of the draws ------ */

static void is_instance(as_rng *g, int kind, int64_t m, double tau, double beta, double delta,
                        int poisson, long trials, double *worst)
{
    char err[AS_ERR_LEN];
    const int64_t n = 1504, d = 16, P = 16, npg = n / P, nhp = 4;
    double *s = malloc((size_t)n * sizeof *s), *V = malloc((size_t)(n * d) * sizeof *V);
    double *a = malloc((size_t)n * sizeof *a), *q = malloc((size_t)n * sizeof *q);
    double *cq = malloc((size_t)n * sizeof *cq), *w = malloc((size_t)n * sizeof *w);
    double ub[94], o[16] = {0}, oh[16], mnum[16] = {0}, mden = 0;
    int64_t H[64], *keys = malloc((size_t)n * sizeof *keys), pk[4];
    cr_assert(s && V && a && q && cq && w && keys);
    for (int64_t i = 0; i < n; i++) {
        if (kind == 0) s[i] = 2.0 * rnorm(g);                                     /* log-normal */
        else if (kind == 1) s[i] = -1.1 * log((double)as_rng_below(g, (uint64_t)n) + 1); /* Zipf */
        else s[i] = 0.5 * rnorm(g) + (i < 4 ? 6.0 : 0.0) + (i % 97 == 5 ? 3.0 : 0.0); /* sinks */
        for (int64_t c = 0; c < d; c++) V[i * d + c] = rnorm(g) + (c == 0 ? 1.0 : 0.0);
    }
    /* page bounds: the page's largest score plus a slack (any upper bound fixed before the
     * draws), the heavy set the nhp pages of largest bound */
    for (int64_t p = 0; p < npg; p++) {
        ub[p] = -INFINITY;
        for (int64_t i = p * P; i < (p + 1) * P; i++) ub[p] = fmax(ub[p], s[i]);
        ub[p] += 2.0 * as_rng_uniform(g);
    }
    cr_assert_eq(as_select_topk(ub, npg, nhp, pk, err), AS_OK);
    int64_t nh = 0;
    for (int64_t j = 0; j < nhp; j++)
        for (int64_t i = pk[j] * P; i < (pk[j] + 1) * P; i++) H[nh++] = i;
    as_select_sort_unique(H, nh);
    cr_assert_eq(as_sp_is_proposal(ub, n, P, H, nh, tau, beta, q, cq, err), AS_OK);
    if (poisson) { /* q becomes the inclusion probabilities, sum m */
        cr_assert_eq(as_sp_is_inclusion(q, n, (double)m, q, err), AS_OK, "%s", err);
        double sp = 0;
        for (int64_t i = 0; i < n; i++) {
            sp += q[i];
            cr_assert(q[i] >= 0 && q[i] <= 1);
        }
        cr_assert(fabs(sp - (double)m) <= 1e-9 * m, "sum pi %.17g vs %lld", sp, (long long)m);
    }
    as_sp_isstats st;
    cr_assert_eq(as_sp_is_stats(s, V, n, d, H, nh, q, poisson, &st, err), AS_OK);
    double eps = as_sp_is_eps(&st, m, delta);
    memcpy(a, s, (size_t)n * sizeof *a);
    as_softmax_inplace(a, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) o[c] += a[i] * V[i * d + c];
    long exceed = 0;
    for (long t = 0; t < trials; t++) {
        int64_t ns = poisson ? as_sp_is_draw_poisson(g, q, n, keys, w)
                             : as_sp_is_draw(g, q, cq, n, m, keys, w);
        as_sp_is_estimate(s, V, n, d, H, nh, keys, w, ns, oh);
        double e2 = 0;
        for (int64_t c = 0; c < d; c++) e2 += (oh[c] - o[c]) * (oh[c] - o[c]);
        exceed += sqrt(e2) > eps;
        double den = 0;
        for (int64_t j = 0; j < nh + ns; j++) {
            int64_t i = j < nh ? H[j] : keys[j - nh];
            double f = j < nh ? 1.0 : w[j - nh];
            den += f * a[i];
            for (int64_t c = 0; c < d; c++) mnum[c] += f * a[i] * V[i * d + c];
        }
        mden += den;
    }
    double frac = (double)exceed / (double)trials;
    if (frac > *worst) *worst = frac;
    cr_assert(frac <= delta, "kind %d m %lld tau %g beta %g poisson %d: exceed %g > delta %g (eps %g)",
              kind, (long long)m, tau, beta, poisson, frac, delta, eps);
    /* unbiased: the means within 6 standard errors (exact variances under q, or pi) */
    double se_den = poisson ? sqrt(st.sum_a2q / trials)
                            : sqrt(fmax(st.sum_a2q - st.mass_rest * st.mass_rest, 0) / (double)m / trials);
    cr_assert(fabs(mden / trials - 1.0) <= 6 * se_den + 1e-12, "denominator biased: %g (se %g)",
              mden / trials - 1.0, se_den);
    double vn = 0, dn = 0, num_r[16] = {0};
    for (int64_t i = 0, ih = 0; i < n; i++) {
        if (ih < nh && H[ih] == i) {
            ih++;
            continue;
        }
        double v2 = 0;
        for (int64_t c = 0; c < d; c++) {
            v2 += V[i * d + c] * V[i * d + c];
            num_r[c] += a[i] * V[i * d + c];
        }
        vn += poisson ? (1 - q[i]) / q[i] * a[i] * a[i] * v2 : a[i] * a[i] * v2 / q[i];
    }
    for (int64_t c = 0; c < d; c++) {
        if (!poisson) vn -= num_r[c] * num_r[c];
        dn += (mnum[c] / trials - o[c]) * (mnum[c] / trials - o[c]);
    }
    double se_num = sqrt(fmax(vn, 0) / (poisson ? 1.0 : (double)m) / trials);
    cr_assert(sqrt(dn) <= 6 * se_num + 1e-12, "numerator biased: %g (se %g)", sqrt(dn), se_num);
    free(s), free(V), free(a), free(q), free(cq), free(w), free(keys);
}

Test(sp_page_is, coverage_and_unbiased_monte_carlo)
{
    as_rng g;
    as_rng_seed(&g, 20261205);
    double worst = 0;
    const int64_t ms[] = {20, 120};
    const double taus[] = {1.0, 0.5}, betas[] = {0.1, 1.0}, deltas[] = {0.05, 0.2};
    for (int kind = 0; kind < 3; kind++)
        for (int mi = 0; mi < 2; mi++)
            for (int ti = 0; ti < 2; ti++)
                for (int bi = 0; bi < 2; bi++)
                    for (int di = 0; di < 2; di++)
                        for (int pois = 0; pois < 2; pois++)
                            is_instance(&g, kind, ms[mi], taus[ti], betas[bi], deltas[di], pois,
                                        1500, &worst);
    fprintf(stderr, "page-is coverage: worst exceedance fraction %.4f\n", worst);
}

/* epsilon does not grow with m and tends to 0; the sample size for a target is the smallest */
Test(sp_page_is, eps_monotone_and_size)
{
    as_sp_isstats st = {.n_rest = 1000, .p_heavy = 0.4, .mass_rest = 0.6, .sum_y2q = 3.0,
                        .max_yq = 40.0, .sum_a2q = 0.9, .ybar2 = 0.2, .dev_max = 5.0};
    double prev = INFINITY;
    for (int64_t m = 1; m < 5000; m += 13) {
        double e = as_sp_is_eps(&st, m, 0.05);
        cr_assert(e <= prev + 1e-15 && e >= 0);
        prev = e;
    }
    cr_assert(as_sp_is_eps(&st, 1 << 30, 0.05) < 1e-3);
    cr_assert_eq(as_sp_is_eps(&st, 0, 0.05), st.dev_max);
    const double targets[] = {0.5, 0.1, 0.02};
    for (int i = 0; i < 3; i++) {
        int64_t need = as_sp_is_size(&st, targets[i], 0.05);
        cr_assert(need >= 1);
        cr_assert(as_sp_is_eps(&st, need, 0.05) <= targets[i]);
        if (need > 1) cr_assert(as_sp_is_eps(&st, need - 1, 0.05) > targets[i]);
    }
    as_sp_isstats none = {.n_rest = 0};
    cr_assert_eq(as_sp_is_eps(&none, 5, 0.05), 0);
}

/* ---- the engine against the arrays ----------------------------------------------------------- */

/* Every page-is record of as_sp_run: its epsilon equals as_sp_is_eps of the array statistics of
 * the same selection (same heavy set, proposal and draws: as_sp_select seeds by the same
 * record), its error that of as_sp_is_estimate, its k |H| + the distinct keys drawn. */
Test(sp_page_is, engine_matches_arrays)
{
    char *p = make_trace("pis.st", 1, AS_DT_F32, 2.0, 0, 400, 5);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_sp_method ms[] = {AS_SP_PAGE_IS};
    as_budget b[] = {{0.05, 0}, {0.1, 0}, {0.3, 0}, {0, 40}};
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (int pois = 0; pois < 2; pois++) {
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.methods = ms;
    cfg.n_methods = 1;
    cfg.budgets = b;
    cfg.n_budgets = 4;
    cfg.trials = 3;
    cfg.eps_rel = 0.05;
    cfg.params.is_draw = pois ? AS_SP_IS_POISSON : AS_SP_IS_REPLACE;
    recs v = {0};
    cr_assert_eq(as_sp_run(tr, &cfg, collect, &v, err), AS_OK, "%s", err);
    const as_sp_params prm = cfg.params;
    size_t drawn = 0;
    for (size_t i = 0; i < v.n; i++) {
        const as_sp_record *r = &v.r[i];
        const as_layer *l = as_trace_find_layer(tr, r->layer);
        int64_t n = as_layer_visible(l, r->query), d = l->d, kvh = as_layer_kv_head(l, r->head);
        double *K = malloc((size_t)(n * d) * sizeof *K), *V = malloc((size_t)(n * d) * sizeof *V);
        double *q = malloc((size_t)d * sizeof *q), *s = malloc((size_t)n * sizeof *s);
        double *oh = malloc((size_t)d * sizeof *oh), *o = calloc((size_t)d, sizeof *o);
        double *a = malloc((size_t)n * sizeof *a);
        as_layer_read_k(l, kvh, 0, n, K);
        as_layer_read_v(l, kvh, 0, n, V);
        as_layer_read_q(l, r->head, r->query, q);
        for (int64_t j = 0; j < n; j++) {
            double t = 0;
            for (int64_t c = 0; c < d; c++) t += K[j * d + c] * q[c];
            s[j] = l->scale * t;
        }
        memcpy(a, s, (size_t)n * sizeof *a);
        as_softmax_inplace(a, n);
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < d; c++) o[c] += a[j] * V[j * d + c];
        cr_assert_eq(as_sp_select(l, r->head, r->query, AS_SP_PAGE_IS, b[r->budget_index], &prm,
                                  0, s, &sel, err), AS_OK, "%s", err);
        cr_assert_eq(r->ev.k, sel.n_det + sel.n_samp);
        cr_assert_eq(r->ev.samples, pois ? sel.n_samp : sel.m_draws);
        cr_assert_eq(r->trials, 3);
        if (sel.m_draws > 0) {
            drawn++;
            cr_assert_eq(sel.n_det + sel.m_draws, as_budget_keys(b[r->budget_index], n));
            as_sp_isstats ss;
            cr_assert_eq(as_sp_is_stats(s, V, n, d, sel.det, sel.n_det, sel.q, pois, &ss, err),
                         AS_OK);
            double eps = as_sp_is_eps(&ss, sel.m_draws, prm.delta);
            cr_assert(fabs(eps - r->ev.bound) <= 1e-8 * eps + 1e-14, "eps %.17g vs %.17g", eps,
                      r->ev.bound);
            as_sp_is_estimate(s, V, n, d, sel.det, sel.n_det, sel.samp, sel.samp_w, sel.n_samp,
                              oh);
            double e2 = 0;
            for (int64_t c = 0; c < d; c++) e2 += (oh[c] - o[c]) * (oh[c] - o[c]);
            cr_assert(fabs(sqrt(e2) - r->ev.abs_error) <= 1e-9 * (1 + sqrt(e2)),
                      "error %.17g vs %.17g", sqrt(e2), r->ev.abs_error);
        } else {
            /* no draws: the heavy set is every key (exact) or the whole budget */
            cr_assert(sel.n_det == n || sel.n_det == as_budget_keys(b[r->budget_index], n));
            if (sel.n_det == n) cr_assert(r->ev.bound == 0 && r->ev.abs_error <= r->ev.tol);
        }
        cr_assert(!r->ev.subset_violated && r->ev.identity_ok);
        free(K), free(V), free(q), free(s), free(oh), free(o), free(a);
    }
    cr_assert(drawn > v.n / 2);
    free(v.r);
    }
    as_sp_sel_free(&sel);
    as_trace_free(tr);
    free(p);
}

/* the command line: page-is only when named, its options checked */
Test(sp_page_is, cli)
{
    const char *p = sample_trace();
    if (!p) cr_skip_test("no sample trace");
    char args[2048];
    snprintf(args, sizeof args,
             "sparsity '%s' --layer 19 --method page-is --sparsity 20x --is-temp 0.5 "
             "--is-mix 0.3 --is-score bound --trials 20 --json --quiet", p);
    cJSON *doc = run_json(args, 0);
    int cnt = 0;
    cJSON *r0 = find_records(doc, "sparsity", &cnt);
    cr_assert(r0 && cnt > 0);
    cr_assert_str_eq(cJSON_GetObjectItem(r0, "method")->valuestring, "page-is");
    cJSON_Delete(doc);
    snprintf(args, sizeof args, "sparsity '%s' --layer 19 --is-mix 0 --quiet", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sparsity '%s' --layer 19 --is-temp -1 --quiet", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sparsity '%s' --layer 19 --is-score middle --quiet", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    /* not in --method all */
    snprintf(args, sizeof args,
             "sparsity '%s' --layer 19 --method all --sparsity 20x --json --quiet", p);
    doc = run_json(args, 0);
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(doc, "records"))
    {
        cJSON *m = cJSON_GetObjectItem(r, "method");
        if (m && cJSON_IsString(m)) cr_assert(strcmp(m->valuestring, "page-is") != 0);
    }
    cJSON_Delete(doc);
}
