/* Tests of analysis/as_attn: scores, softmax and outputs against direct float64 loops over the
 * definitions, on a causal trace with more keys than one tile (AS_ATTN_TILE), so the tiled
 * paths cross a tile boundary; the softmax's stability at large scores against the closed form. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "as_attn.h"
#include "as_testutil.h"
#include "as_trace.h"

enum { HQ = 4, HKV = 2, T = 3, D = 8 };
#define N (AS_ATTN_TILE + 37)

Test(attn, softmax_stable_closed_form)
{
    double s[3] = {1000, 1001, -INFINITY};
    const double lse = as_softmax_inplace(s, 3);
    cr_assert_float_eq(lse, 1001 + log1p(exp(-1.0)), 1e-12);
    cr_assert_float_eq(s[0], 1 / (1 + exp(1.0)), 1e-15);
    cr_assert_float_eq(s[1], 1 / (1 + exp(-1.0)), 1e-15);
    cr_assert_eq(s[2], 0.0);
    double one[1] = {-5e300};
    cr_assert_eq(as_softmax_inplace(one, 1), -5e300);
    cr_assert_eq(one[0], 1.0);
}

/* a block row: the softmax of the first n scores, zeros to nm (poisoned first), and the
 * exponents' size max |s| + |lse| in closed form */
Test(attn, softmax_row_pads_and_scales)
{
    const double sc[5] = {-7.0, 1.0, 2.0, 99.0, -99.0}; /* the last two are past n */
    double p[5] = {NAN, NAN, NAN, NAN, NAN}, lam = NAN;
    const double lse = as_softmax_row(sc, p, 3, 5, &lam);
    const double z = exp(-7.0) + exp(1.0) + exp(2.0);
    cr_assert_float_eq(lse, log(z), 1e-15);
    for (int i = 0; i < 3; i++) cr_assert_float_eq(p[i], exp(sc[i]) / z, 1e-15);
    cr_assert(p[3] == 0.0 && p[4] == 0.0);
    cr_assert_float_eq(lam, 7.0 + fabs(log(z)), 1e-15);
}

Test(attn, scores_output_dense_match_loops, .timeout = 60)
{
    char *p = as_test_path("attn.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = HQ, .hkv = HKV, .t = T, .n = N, .d = D,
                             .dtype = AS_DT_F32, .causal = 1, .seed = 8};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    double *K = malloc((size_t)N * D * sizeof *K), *V = malloc((size_t)N * D * sizeof *V);
    double *S = malloc((size_t)2 * (N + 3) * sizeof *S), *pr = malloc((size_t)N * sizeof *pr);
    double *a = malloc((size_t)N * sizeof *a);
    double q[2 * D], o[D], oref[D];
    for (int64_t h = 0; h < HQ; h++) {
        const int64_t kvh = as_layer_kv_head(l, h);
        cr_assert_eq(kvh, h / (HQ / HKV));
        as_layer_read_k(l, kvh, 0, N, K);
        as_layer_read_v(l, kvh, 0, N, V);
        as_layer_read_q(l, h, 0, q);
        as_layer_read_q(l, h, T - 1, q + D);
        /* two query rows at once, row stride N + 3 */
        cr_assert_eq(as_attn_scores(l, kvh, q, 2, N, 0.3, S, N + 3, err), AS_OK, "%s", err);
        for (int r = 0; r < 2; r++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int c = 0; c < D; c++) s += q[r * D + c] * K[j * D + c];
                cr_assert_float_eq(S[r * (N + 3) + j], 0.3 * s, 1e-12 * (1 + fabs(s)));
            }
        for (int64_t t = 0; t < T; t++) {
            int64_t n = 0;
            double lse = 0;
            cr_assert_eq(as_attn_dense(l, h, t, pr, o, &n, &lse, err), AS_OK, "%s", err);
            cr_assert_eq(n, N - T + t + 1); /* causal: q_pos = N - T + t */
            as_layer_read_q(l, h, t, q);
            double mx = -INFINITY, z = 0;
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int c = 0; c < D; c++) s += q[c] * K[j * D + c];
                a[j] = s * l->scale;
                mx = fmax(mx, a[j]);
            }
            for (int64_t j = 0; j < n; j++) z += exp(a[j] - mx);
            cr_assert_float_eq(lse, mx + log(z), 1e-12 * (1 + fabs(lse)));
            for (int c = 0; c < D; c++) oref[c] = 0;
            for (int64_t j = 0; j < n; j++) {
                const double w = exp(a[j] - mx) / z;
                cr_assert_float_eq(pr[j], w, 1e-14);
                for (int c = 0; c < D; c++) oref[c] += w * V[j * D + c];
            }
            for (int c = 0; c < D; c++) cr_assert_float_eq(o[c], oref[c], 1e-12);
            /* as_attn_output over the same weights */
            double o2[D];
            cr_assert_eq(as_attn_output(l, kvh, pr, n, o2, err), AS_OK);
            for (int c = 0; c < D; c++) cr_assert_float_eq(o2[c], oref[c], 1e-12);
        }
    }
    free(K), free(V), free(S), free(pr), free(a);
    as_trace_free(tr);
    free(p);
}
