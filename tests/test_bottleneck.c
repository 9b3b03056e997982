/* Tests of analysis/as_bottleneck: the collision-space dimension (closed forms), the absorption
 * ratio (closed forms, bounds), the TV witness (feasibility, known optima: equal values give
 * 1 - min a, a point fibre gives 0), the layer routine against the array functions, and
 * `attnscope bottleneck`. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_bottleneck.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"
#include "fuzz/fuzz_lp.h"

static double *randn(int64_t count, uint64_t seed)
{
    double *x = malloc((size_t)count * sizeof *x);
    uint64_t s = seed;
    for (int64_t i = 0; i < count; i++) x[i] = as_test_normal(&s);
    return x;
}

/* softmax of random scores with a given spread */
static double *rand_dist(int64_t n, double spread, uint64_t seed)
{
    double *a = randn(n, seed), m = -INFINITY, z = 0;
    for (int64_t i = 0; i < n; i++) {
        a[i] *= spread;
        if (a[i] > m) m = a[i];
    }
    for (int64_t i = 0; i < n; i++) z += (a[i] = exp(a[i] - m));
    for (int64_t i = 0; i < n; i++) a[i] /= z;
    return a;
}

Test(bn_collision, closed_forms)
{
    char err[AS_ERR_LEN];
    int64_t r;
    double *V = randn(200 * 16, 1);
    cr_assert_eq(as_bn_value_rank(V, 200, 16, &r, err), AS_OK, "%s", err);
    cr_assert_eq(r, 17); /* generic V: rank d + 1, collision n - d - 1 */
    cr_assert_eq(as_bn_value_rank(V, 5, 16, &r, err), AS_OK);
    cr_assert_eq(r, 5); /* n <= d + 1: no collision */
    for (int64_t i = 0; i < 200; i++) memcpy(V + i * 16, V, 16 * sizeof *V);
    cr_assert_eq(as_bn_value_rank(V, 200, 16, &r, err), AS_OK);
    cr_assert_eq(r, 1); /* equal rows: [V^T; 1^T] has rank 1 */
    memset(V, 0, 200 * 16 * sizeof *V);
    cr_assert_eq(as_bn_value_rank(V, 200, 16, &r, err), AS_OK);
    cr_assert_eq(r, 1); /* only the ones row */
    /* values on a 3-dimensional affine subspace of R^16 */
    double *B = randn(3 * 16, 2), *c = randn(200 * 3, 3);
    for (int64_t i = 0; i < 200; i++)
        for (int j = 0; j < 16; j++) {
            double acc = 0.5;
            for (int k = 0; k < 3; k++) acc += c[i * 3 + k] * B[k * 16 + j];
            V[i * 16 + j] = acc;
        }
    cr_assert_eq(as_bn_value_rank(V, 200, 16, &r, err), AS_OK);
    cr_assert_eq(r, 4);
    free(B);
    free(c);
    free(V);
}

Test(bn_absorption, closed_forms)
{
    const int64_t n = 8;
    double a[8] = {0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02}, cap;
    /* equal values: a sparse change never reaches the output */
    double *V = randn(n * 4, 4);
    for (int64_t i = 1; i < n; i++) memcpy(V + i * 4, V, 4 * sizeof *V);
    cr_assert_float_eq(as_bn_absorption(V, a, n, 4, 3, &cap), 0.0, 1e-15);
    cr_assert_float_eq(cap, 0.65, 1e-15);
    /* V = identity (one-hot values): ||delta||_2 / ||delta||_1 */
    double I[64] = {0};
    for (int i = 0; i < 8; i++) I[i * 8 + i] = 1.0;
    int64_t k = 3;
    double p = 0.65, rest = 0.35, l2 = 0;
    for (int i = 0; i < 8; i++) {
        double dl = i < k ? a[i] - a[i] / p : a[i];
        l2 += dl * dl;
    }
    double want = sqrt(l2) / (2 * rest);
    cr_assert_float_eq(as_bn_absorption(I, a, n, 8, k, NULL), want, 1e-14);
    /* k = n: nothing missed, undefined */
    cr_assert(isnan(as_bn_absorption(I, a, n, 8, n, NULL)));
    /* always in [0, 1] */
    double *W = randn(300 * 6, 5), *b = rand_dist(300, 2.0, 6);
    for (int64_t kk = 1; kk < 300; kk += 37) {
        double x = as_bn_absorption(W, b, 300, 6, kk, NULL);
        cr_assert(x >= 0 && x <= 1, "k=%lld: %g", (long long)kk, x);
    }
    free(V);
    free(W);
    free(b);
}

/* The top-k set is the k heaviest keys, ties going to the lower index (values i+1 along e_i
 * tell which of the tied keys was taken). */
Test(bn_absorption, ties_go_to_the_lower_index)
{
    double a[6] = {0.1, 0.2, 0.2, 0.2, 0.2, 0.1}, V[36] = {0};
    for (int i = 0; i < 6; i++) V[i * 6 + i] = i + 1;
    /* S = {1, 2}: P_S = 0.4, rest = 0.6, delta = -a rest / P_S = -0.3 on S, a elsewhere */
    double dv[6] = {0.1 * 1, -0.3 * 2, -0.3 * 3, 0.2 * 4, 0.2 * 5, 0.1 * 6}, l2 = 0, cap;
    for (int i = 0; i < 6; i++) l2 += dv[i] * dv[i];
    cr_assert_float_eq(as_bn_absorption(V, a, 6, 6, 2, &cap), sqrt(l2) / (2 * 0.6 * 6), 1e-14);
    cr_assert_float_eq(cap, 0.4, 1e-15);
}

/* The order of the weights (a radix sort of their bits) against a comparison sort by (weight
 * descending, index ascending) on weights spanning hundreds of binades, with repeated values
 * and exact zeros, through the absorption of every budget. */
static const double *ref_w;
static int ref_cmp(const void *x, const void *y)
{
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    if (ref_w[i] != ref_w[j]) return ref_w[i] < ref_w[j] ? 1 : -1;
    return (i > j) - (i < j);
}

Test(bn_absorption, order_matches_a_comparison_sort)
{
    const int64_t n = 5000, d = 5;
    double *a = rand_dist(n, 30.0, 11), *V = randn(n * d, 12);
    for (int64_t i = 0; i < n; i += 7) a[i] = a[(i * 13) % n]; /* repeated weights */
    for (int64_t i = 3; i < n; i += 101) a[i] = i % 2 ? 0.0 : -0.0; /* zero weights, both signs */
    int64_t *ix = malloc((size_t)n * sizeof *ix);
    for (int64_t i = 0; i < n; i++) ix[i] = i;
    ref_w = a;
    qsort(ix, (size_t)n, sizeof *ix, ref_cmp);
    double vmax = 0;
    for (int64_t i = 0; i < n; i++) {
        double s2 = 0;
        for (int64_t c = 0; c < d; c++) s2 += V[i * d + c] * V[i * d + c];
        vmax = fmax(vmax, sqrt(s2));
    }
    for (int64_t k = 1; k < n; k += 97) {
        double ps = 0, rest = 0, o[5] = {0}, l2 = 0, cap;
        for (int64_t j = 0; j < n; j++) *(j < k ? &ps : &rest) += a[ix[j]];
        for (int64_t j = 0; j < n; j++) {
            double dl = j < k ? -a[ix[j]] * rest / ps : a[ix[j]];
            for (int64_t c = 0; c < d; c++) o[c] += V[ix[j] * d + c] * dl;
        }
        for (int64_t c = 0; c < d; c++) l2 += o[c] * o[c];
        double got = as_bn_absorption(V, a, n, d, k, &cap);
        cr_assert_float_eq(got, sqrt(l2) / (2 * rest * vmax), 1e-12 * (1 + got), "k=%lld", (long long)k);
        cr_assert_eq(cap, ps, "k=%lld", (long long)k);
    }
    free(ix);
    free(a);
    free(V);
}

static void check_feasible(const double *V, const double *a, const double *ap, int64_t n, int64_t d,
                           double tv)
{
    double s = 0, t = 0, on = 0, rn = 0;
    for (int64_t i = 0; i < n; i++) {
        cr_assert(ap[i] >= 0, "a'[%lld] = %g", (long long)i, ap[i]);
        s += ap[i];
        t += fabs(ap[i] - a[i]);
    }
    cr_assert_float_eq(s, 1.0, 1e-9);
    cr_assert_float_eq(0.5 * t, tv, 1e-12);
    for (int64_t c = 0; c < d; c++) {
        double x = 0, y = 0;
        for (int64_t i = 0; i < n; i++) {
            x += V[i * d + c] * a[i];
            y += V[i * d + c] * ap[i];
        }
        on += x * x;
        rn += (x - y) * (x - y);
    }
    cr_assert(sqrt(rn) <= 1e-9 * sqrt(on) + 1e-12, "output moved by %g", sqrt(rn));
}

Test(bn_witness, known_optima_and_feasibility)
{
    if (!as_bn_have_lp()) cr_skip_test("built without GLPK");
    char err[AS_ERR_LEN];
    double tv, res;
    /* equal values: only 1^T a' = 1 binds; the farthest a' is the vertex at the lightest key */
    const int64_t n = 40;
    double *a = rand_dist(n, 1.5, 7), *ap = malloc((size_t)n * sizeof *ap);
    double *V = randn(n * 5, 8);
    for (int64_t i = 1; i < n; i++) memcpy(V + i * 5, V, 5 * sizeof *V);
    cr_assert_eq(as_bn_witness(V, a, n, 5, 0, &tv, ap, &res, err), AS_OK, "%s", err);
    double amin = 1;
    for (int64_t i = 0; i < n; i++)
        if (a[i] < amin) amin = a[i];
    cr_assert_float_eq(tv, 1.0 - amin, 1e-9);
    check_feasible(V, a, ap, n, 5, tv);
    free(V);
    /* generic V with n <= d + 1: the fibre is the single point a */
    V = randn(6 * 8, 9);
    /* a[0..6) renormalised */
    double b6[6], s = 0;
    for (int i = 0; i < 6; i++) s += a[i];
    for (int i = 0; i < 6; i++) b6[i] = a[i] / s;
    cr_assert_eq(as_bn_witness(V, b6, 6, 8, 0, &tv, ap, &res, err), AS_OK);
    cr_assert(tv < 1e-9, "tv = %g", tv);
    free(V);
    /* random values, n >> d: a nontrivial witness that keeps the output */
    const int64_t m = 300, d = 6;
    double *w = rand_dist(m, 2.0, 10), *wp = malloc((size_t)m * sizeof *wp);
    V = randn(m * d, 11);
    cr_assert_eq(as_bn_witness(V, w, m, d, 0, &tv, wp, &res, err), AS_OK);
    cr_assert(tv > 0.2 && tv <= 1.0, "tv = %g", tv);
    cr_assert(res < 1e-12, "residual %g", res);
    check_feasible(V, w, wp, m, d, tv);
    /* only the 50 heaviest keys may move: still feasible, not farther */
    double tv50;
    cr_assert_eq(as_bn_witness(V, w, m, d, 50, &tv50, wp, &res, err), AS_OK);
    check_feasible(V, w, wp, m, d, tv50);
    cr_assert(tv50 <= tv + 1e-9);
    free(V);
    free(w);
    free(wp);
    free(a);
    free(ap);
}

/* More than 1024 keys: the LP is solved by column generation (docs/theory.md, "TV witness").
 * Where the LP has several optimal vertices the one reached may differ from the simplex on all
 * keys at once, so the test checks what defines the witness, not its bytes: a distribution with
 * the same output, tv its distance, a vertex of the fibre (at most d + 1 nonzeros, hence
 * tv >= 1 - top_{d+1}(a), the bound of docs/theory.md), and the constraints met to rounding. */
Test(bn_witness, column_generation_vertex)
{
    if (!as_bn_have_lp()) cr_skip_test("built without GLPK");
    char err[AS_ERR_LEN];
    const int64_t n = 3000, d = 16;
    for (uint64_t seed = 0; seed < 3; seed++) {
        double *a = rand_dist(n, 1.0 + seed, 40 + seed), *ap = malloc((size_t)n * sizeof *ap);
        double *V = randn(n * d, 50 + seed), tv, res;
        cr_assert_eq(as_bn_witness(V, a, n, d, 0, &tv, ap, &res, err), AS_OK, "%s", err);
        check_feasible(V, a, ap, n, d, tv);
        cr_assert(res < 1e-12, "residual %g", res);
        int64_t nnz = 0;
        for (int64_t i = 0; i < n; i++) nnz += ap[i] > 0;
        cr_assert(nnz <= d + 1, "seed %llu: %lld nonzeros, not a vertex", (unsigned long long)seed,
                  (long long)nnz);
        /* 1 - top_{d+1}(a) */
        double *srt = malloc((size_t)n * sizeof *srt), top = 0;
        memcpy(srt, a, (size_t)n * sizeof *srt);
        for (int64_t r = 0; r <= d; r++) { /* d + 1 largest by selection */
            int64_t m = r;
            for (int64_t i = r + 1; i < n; i++)
                if (srt[i] > srt[m]) m = i;
            double x = srt[r];
            srt[r] = srt[m];
            srt[m] = x;
            top += srt[r];
        }
        cr_assert(tv >= 1.0 - top - 1e-12, "tv %g below the vertex bound %g", tv, 1.0 - top);
        /* the 2048 heaviest keys only: the others keep their weight, still a witness */
        double tv2;
        cr_assert_eq(as_bn_witness(V, a, n, d, 2048, &tv2, ap, &res, err), AS_OK, "%s", err);
        check_feasible(V, a, ap, n, d, tv2);
        cr_assert(res < 1e-12, "residual %g", res);
        free(srt);
        free(V);
        free(a);
        free(ap);
    }
}

/* Extreme but finite values: the witness is invariant to scaling V (the fibre V^T a' = V^T a
 * does not change), so V times 1e200, 1e-300, or one coordinate at 1e-300 and another at 1e150,
 * must give the same TV as V itself -- and never end the process inside GLPK (it aborted with
 * "invalid scale factor" before). */
Test(bn_witness, scale_invariant_at_extreme_magnitudes)
{
    if (!as_bn_have_lp()) cr_skip_test("built without GLPK");
    char err[AS_ERR_LEN];
    const int64_t m = 120, d = 5;
    double *w = rand_dist(m, 2.0, 21), *wp = malloc((size_t)m * sizeof *wp);
    double *V = randn(m * d, 22), *W = malloc((size_t)(m * d) * sizeof *W);
    double tv0, res0, tv2 = -1;
    cr_assert_eq(as_bn_witness(V, w, m, d, 0, &tv0, wp, &res0, err), AS_OK, "%s", err);
    cr_assert(tv0 > 0.1);
    /* V's magnitudes are ordinary: its LP is solved as it is. Scaled by powers of two beyond
     * 2^+-64, every coordinate is brought back to [-1, 1] exactly: one and the same LP, the same
     * witness for every such factor. That LP differs from V's by powers of two per row, and
     * GLPK's tolerances are not scale-free, so its simplex may end at another vertex: a valid
     * witness of the same size (a lower bound found by a heuristic); likewise decimal factors,
     * the same fibre up to rounding. */
    static const double f[][2] = {{0x1p700, 0x1p700},   {0x1p-1000, 0x1p-1000}, {0x1p-990, 0x1p500},
                                  {1e200, 1e200},       {1e-300, 1e-300},       {1e-300, 1e150},
                                  {0x1p-1070, 1.0},     {1e300, 1e-300}};
    for (size_t t = 0; t < sizeof f / sizeof f[0]; t++) {
        for (int64_t i = 0; i < m * d; i++) W[i] = V[i] * (i % d == 0 ? f[t][0] : f[t][1]);
        double tv, res;
        as_status st = as_bn_witness(W, w, m, d, 0, &tv, wp, &res, err);
        cr_assert_eq(st, AS_OK, "scale %g/%g: %s", f[t][0], f[t][1], err);
        if (f[t][0] == 0x1p-1070) {
            /* the first coordinate is almost all subnormal zeros: a different fibre; the
             * witness must still be a distribution */
            cr_assert(tv >= 0 && tv <= 1);
            continue;
        }
        if (t == 0) tv2 = tv;
        if (t < 3) /* the powers of two */
            cr_assert(tv == tv2, "scale %g/%g: tv %.17g, at 2^700 %.17g", f[t][0], f[t][1], tv,
                      tv2);
        cr_assert(fabs(tv - tv0) <= 0.05 * tv0, "scale %g/%g: tv %.17g, unscaled %.17g", f[t][0],
                  f[t][1], tv, tv0);
        cr_assert(res <= 1e-9, "scale %g/%g: residual %g", f[t][0], f[t][1], res);
        double s = 0;
        for (int64_t i = 0; i < m; i++) {
            cr_assert(wp[i] >= 0);
            s += wp[i];
        }
        cr_assert(fabs(s - 1) <= 1e-9);
    }
    /* bad input is a status, not a crash */
    double tv, res;
    W[3] = NAN;
    cr_assert_eq(as_bn_witness(W, w, m, d, 0, &tv, wp, &res, err), AS_ERR_VALUE);
    cr_assert(strchr(err, '\n') == NULL && strlen(err) > 0);
    w[0] = -w[0];
    cr_assert_eq(as_bn_witness(V, w, m, d, 0, &tv, wp, &res, err), AS_ERR_VALUE);
    free(V), free(W), free(w), free(wp);
}

/* The LP fuzz harness's seeds and regression inputs (tests/data/fuzz/lp: an LP on which GLPK's
 * primal simplex cycled until the iteration limit was set) through the harness's own decoding
 * and checks, in every build. */
Test(bn_witness, fuzz_regression_inputs, .timeout = 120)
{
    if (!as_bn_have_lp()) cr_skip_test("built without GLPK");
    const char *src = getenv("AS_SRC");
    cr_assert(src, "AS_SRC not set");
    static const char *const dirs[] = {"tests/data/fuzz/lp", "tests/fuzz/seeds/lp"};
    int n = 0;
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", src, dirs[k]);
        DIR *d = opendir(dir);
        cr_assert(d, "%s", dir);
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            FILE *f = fopen(path, "rb");
            cr_assert(f, "%s", path);
            uint8_t buf[65536];
            size_t len = fread(buf, 1, sizeof buf, f);
            fclose(f);
            cr_assert_eq(fuzz_lp_one(buf, len), 1, "%s made no LP", de->d_name);
            n++;
        }
        closedir(d);
    }
    cr_assert(n >= 2);
}

/* ---- the layer routine ----------------------------------------------------------------------- */

static double gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    uint64_t s = (uint64_t)(which * 7919 + layer) * 0x9E3779B97F4A7C15ull ^
                 ((uint64_t)head << 48) ^ ((uint64_t)row << 12) ^ (uint64_t)col;
    s *= 0xBF58476D1CE4E5B9ull;
    double x = as_test_normal(&s);
    return which == 'q' ? 2.0 * x : x;
}

static char *make_trace(const char *name)
{
    char *p = as_test_path(name);
    as_test_trace_spec sp = {.n_layers = 1, .hq = 4, .hkv = 2, .t = 3, .n = 120, .d = 8,
                             .dtype = AS_DT_F32, .causal = 1, .gen = gen};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

Test(bn_layer, matches_array_functions)
{
    char *path = make_trace("b_layer.safetensors");
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert_not_null(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_bn_opts o;
    as_bn_opts_init(&o);
    o.tile = 50;
    as_bn_query *qs = NULL;
    size_t nq = 0;
    cr_assert_eq(as_bn_layer(l, &o, &qs, &nq, err), AS_OK, "%s", err);
    cr_assert_eq(nq, 12);
    double *V = malloc((size_t)(l->n * l->d) * sizeof *V), *p = malloc((size_t)l->n * sizeof *p);
    double out[8];
    for (size_t i = 0; i < nq; i++) {
        const as_bn_query *b = &qs[i];
        cr_assert_eq(b->head, (int64_t)i / 3);
        cr_assert_eq(b->query, (int64_t)i % 3);
        int64_t n, rank;
        cr_assert_eq(as_attn_dense(l, b->head, b->query, p, out, &n, NULL, err), AS_OK);
        cr_assert_eq(b->n, n);
        cr_assert_eq(n, l->n - 3 + b->query + 1);
        as_layer_read_v(l, b->kv_head, 0, n, V);
        cr_assert_eq(as_bn_value_rank(V, n, l->d, &rank, err), AS_OK);
        cr_assert_eq(b->value_rank, rank);
        cr_assert_eq(b->collision_dim, n - rank);
        cr_assert_eq(b->collision_dim, n - l->d - 1);
        for (size_t k = 0; k < b->n_budgets; k++) {
            double cap, x = as_bn_absorption(V, p, n, l->d, b->k[k], &cap);
            cr_assert_eq(b->k[k], as_budget_keys((as_budget){o.budgets[k], 0}, n));
            cr_assert_float_eq(b->absorption[k], x, 1e-12 * x);
            cr_assert_float_eq(b->captured_mass[k], cap, 1e-14);
        }
        if (as_bn_have_lp()) {
            double tv, res;
            cr_assert_eq(as_bn_witness(V, p, n, l->d, o.witness_keys, &tv, NULL, &res, err), AS_OK);
            cr_assert_float_eq(b->tv_witness, tv, 1e-12);
            cr_assert(b->witness_residual < 1e-12);
        } else {
            cr_assert(isnan(b->tv_witness));
        }
    }
    free(qs);
    /* one head, one query, no witness */
    o.head = 2;
    o.query = 1;
    o.witness = 0;
    cr_assert_eq(as_bn_layer(l, &o, &qs, &nq, err), AS_OK);
    cr_assert_eq(nq, 1);
    cr_assert_eq(qs[0].head, 2);
    cr_assert_eq(qs[0].kv_head, 1);
    cr_assert(isnan(qs[0].tv_witness));
    free(qs);
    o.query = 3;
    cr_assert_eq(as_bn_layer(l, &o, &qs, &nq, err), AS_ERR_USAGE);
    free(V);
    free(p);
    as_trace_free(tr);
    free(path);
}

/* One budget rule for bottleneck and sparsity (as_budget_keys): 7% of 100 keys is 7 keys even
 * though 0.07 * 100 = 7.000000000000001 in float64 (the naive ceil gives 8). */
Test(bn_layer, budget_rule_is_the_sparsity_rule)
{
    char *p = as_test_path("b_budget.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 2, .n = 100, .d = 8,
                             .dtype = AS_DT_F64, .causal = 0, .gen = gen};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    as_bn_opts o;
    as_bn_opts_init(&o);
    o.witness = 0;
    static const double f[] = {0.07, 0.14, 0.29, 0.57, 0.001, 1.0};
    static const int64_t want[] = {7, 14, 29, 57, 1, 100};
    o.n_budgets = sizeof f / sizeof f[0];
    memcpy(o.budgets, f, sizeof f);
    as_bn_query *qs = NULL;
    size_t nq = 0;
    cr_assert_eq(as_bn_layer(as_trace_layer(tr, 0), &o, &qs, &nq, err), AS_OK, "%s", err);
    cr_assert_eq(nq, 4);
    for (size_t i = 0; i < nq; i++)
        for (size_t k = 0; k < o.n_budgets; k++) {
            cr_assert_eq(qs[i].n, 100);
            cr_assert_eq(qs[i].k[k], want[k], "budget %g: k = %lld, want %lld", f[k],
                         (long long)qs[i].k[k], (long long)want[k]);
            cr_assert_eq(qs[i].k[k], as_budget_keys((as_budget){f[k], 0}, 100));
        }
    free(qs);
    as_trace_free(tr);
    free(p);
}

Test(bn_cli, json_and_usage)
{
    char *path = make_trace("b_cli.safetensors");
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "bottleneck %s --json --quiet --budget 5%%,0.2", path);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cJSON *doc = cJSON_Parse(out);
    cr_assert_not_null(doc);
    int nb = 0, na = 0, nh = 0, nah = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(doc, "records"))
    {
        const char *kind = cJSON_GetObjectItem(r, "record")->valuestring;
        if (strcmp(kind, "bottleneck") == 0) {
            nb++;
            static const char *const f[] = {"layer", "head", "kv_head", "query", "collision_dim",
                                            "tv_witness", "value_rank", "n"};
            for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
                cr_assert_not_null(cJSON_GetObjectItem(r, f[i]), "missing %s", f[i]);
            cr_assert_eq((int)cJSON_GetObjectItem(r, "collision_dim")->valuedouble,
                         (int)cJSON_GetObjectItem(r, "n")->valuedouble - 9);
        } else if (strcmp(kind, "absorption") == 0) {
            na++;
            cr_assert_not_null(cJSON_GetObjectItem(r, "absorption"));
            double b = cJSON_GetObjectItem(r, "budget")->valuedouble;
            cr_assert(b == 0.05 || b == 0.2);
        } else if (strcmp(kind, "bottleneck_head") == 0) {
            nh++;
        } else if (strcmp(kind, "absorption_head") == 0) {
            nah++;
        }
    }
    cr_assert_eq(nb, 12);
    cr_assert_eq(na, 24);
    cr_assert_eq(nh, 4 * 8);
    cr_assert_eq(nah, 4 * 2 * 8);
    cJSON_Delete(doc);
    free(out);
    /* the witness is opt-in: null by default, a number with --witness, and the other fields
     * the same either way */
    snprintf(cmd, sizeof cmd, "bottleneck %s --json --quiet --head 1 --query 0", path);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    char *w_out = NULL;
    snprintf(cmd, sizeof cmd, "bottleneck %s --json --quiet --head 1 --query 0 --witness", path);
    cr_assert_eq(as_test_run_cli(cmd, &w_out), 0);
    cJSON *d0 = cJSON_Parse(out), *d1 = cJSON_Parse(w_out);
    cr_assert(d0 && d1);
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "records"), 0);
    const cJSON *r1 = cJSON_GetArrayItem(cJSON_GetObjectItem(d1, "records"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(r0, "record")->valuestring, "bottleneck");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(r0, "tv_witness")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(r0, "witness_keys")));
    if (as_bn_have_lp()) {
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(r1, "tv_witness")));
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(r1, "witness_keys")));
    }
    static const char *const same[] = {"n", "value_rank", "collision_dim", "v_max_norm"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        cr_assert_eq(cJSON_GetObjectItem(r0, same[i])->valuedouble,
                     cJSON_GetObjectItem(r1, same[i])->valuedouble, "%s", same[i]);
    cJSON_Delete(d0);
    cJSON_Delete(d1);
    free(out);
    free(w_out);
    snprintf(cmd, sizeof cmd, "bottleneck %s --no-witness --head 1", path);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cr_assert(strstr(out, "collision dim") != NULL);
    cr_assert(strstr(out, "absorption") != NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "bottleneck %s --budget 0 2>/dev/null", path);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "bottleneck %s --budget 150%% 2>/dev/null", path);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "bottleneck %s --query 3 2>/dev/null", path);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    free(path);
}
