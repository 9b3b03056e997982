/* Tests of analysis/as_entropy (entropy, top-k mass; streamed over key tiles) and of
 * `attnscope entropy`: closed forms (uniform, one-hot, two-level), exact degenerate cases, and the
 * streaming two-pass routine against the sort-based reference on traces built to stress it
 * (several tiles, a maximum that grows tile after tile, scores spread over hundreds of nats,
 * causal positions, GQA, BF16/F32/F64, head blocks). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_entropy.h"
#include "as_stats.h"
#include "as_testutil.h"
#include "as_trace.h"

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double hnormal(uint64_t h)
{
    uint64_t s = h;
    return as_test_normal(&s);
}

/* ---- closed forms on arrays --------------------------------------------------------------- */

Test(entropy_array, uniform_is_exactly_ln_n)
{
    char err[AS_ERR_LEN];
    for (int64_t n = 1; n <= 5000; n = n * 3 + 1) {
        double *s = malloc((size_t)n * sizeof *s);
        for (int64_t i = 0; i < n; i++) s[i] = 0.37; /* all-equal scores */
        as_entropy_q q;
        cr_assert_eq(as_entropy_of_scores(s, n, 1, &q, err), AS_OK, "%s", err);
        cr_assert_eq(q.entropy_nats, log((double)n), "n=%lld: H=%.17g", (long long)n,
                     q.entropy_nats);
        cr_assert_eq(q.entropy_norm, n > 1 ? 1.0 : 0.0);
        cr_assert_float_eq(q.eff_support, (double)n, 1e-12 * (double)n);
        cr_assert_eq(q.k50, (int64_t)ceil(0.5 * (double)n));
        cr_assert_eq(q.k90, (int64_t)ceil(0.9 * (double)n - 1e-9));
        cr_assert_eq(q.k99, (int64_t)ceil(0.99 * (double)n - 1e-9));
        cr_assert_float_eq(q.lse, 0.37 + log((double)n), 1e-14);
        free(s);
    }
}

Test(entropy_array, one_hot)
{
    char err[AS_ERR_LEN];
    double s[64];
    for (int i = 0; i < 64; i++) s[i] = -1000.0;
    s[17] = 5.0;
    as_entropy_q q;
    cr_assert_eq(as_entropy_of_scores(s, 64, 1, &q, err), AS_OK);
    cr_assert_eq(q.entropy_nats, 0.0);
    cr_assert_eq(q.entropy_norm, 0.0);
    cr_assert_eq(q.eff_support, 1.0);
    cr_assert_eq(q.k50, 1);
    cr_assert_eq(q.k90, 1);
    cr_assert_eq(q.k99, 1);
    cr_assert_float_eq(q.k99_frac, 1.0 / 64, 1e-15);
}

Test(entropy_array, two_level_closed_form)
{
    /* m keys at score x, n - m at 0: p_hi = e^x / Z, p_lo = 1 / Z, Z = m e^x + n - m */
    char err[AS_ERR_LEN];
    const int64_t n = 1000, m = 10;
    const double x = 3.0;
    double *s = calloc((size_t)n, sizeof *s);
    for (int64_t i = 0; i < m; i++) s[i * 97 % n] = x;
    double z = (double)m * exp(x) + (double)(n - m);
    double ph = exp(x) / z, pl = 1.0 / z;
    double h = -(double)m * ph * log(ph) - (double)(n - m) * pl * log(pl);
    as_entropy_q q;
    cr_assert_eq(as_entropy_of_scores(s, n, 1, &q, err), AS_OK);
    cr_assert_float_eq(q.entropy_nats, h, 1e-13 * h);
    cr_assert_float_eq(q.entropy_bits, h / log(2.0), 1e-13 * h);
    /* mass of the m heavy keys: m ph = 0.1687...: k50 = m + ceil((0.5 - m ph) / pl) */
    int64_t k50 = m + (int64_t)ceil((0.5 - (double)m * ph) / pl);
    int64_t k90 = m + (int64_t)ceil((0.9 - (double)m * ph) / pl);
    cr_assert_eq(q.k50, k50);
    cr_assert_eq(q.k90, k90);
    free(s);
}

/* Tiny entropies: one key at score 0, the rest at -c_i (c_i ~ 30..45), so Z = 1 + zeta with
 * zeta = sum e^{-c_i} ~ 1e-13..1e-18. Closed form H = log1p(zeta) + (sum c_i e^{-c_i}) / (1 + zeta),
 * evaluated from zeta itself: ln Z from a rounded Z loses up to 1e-16 / zeta of H's digits. */
static double tiny_c(int64_t i) { return 30.0 + (double)(i % 7) * 2.5; }

static double tiny_reference(int64_t n, int64_t top)
{
    long double zeta = 0.0L, cw = 0.0L; /* extended sums: 2^-64 per addition */
    for (int64_t i = 0; i < n; i++) {
        if (i == top) continue;
        long double w = expl(-(long double)tiny_c(i));
        zeta += w;
        cw += (long double)tiny_c(i) * w;
    }
    return (double)(log1pl(zeta) + cw / (1.0L + zeta));
}

Test(entropy_array, tiny_entropy_keeps_relative_precision)
{
    char err[AS_ERR_LEN];
    static const int64_t ns[] = {2, 3, 10, 100, 1000};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int64_t n = ns[t], top = n / 2;
        double *s = malloc((size_t)n * sizeof *s);
        for (int64_t i = 0; i < n; i++) s[i] = i == top ? 0.0 : -tiny_c(i);
        double h = tiny_reference(n, top);
        as_entropy_q q;
        cr_assert_eq(as_entropy_of_scores(s, n, 1, &q, err), AS_OK, "%s", err);
        cr_assert(fabs(q.entropy_nats - h) <= 4e-15 * h, "n=%lld: H=%.17g, closed form %.17g (rel %.2g)",
                  (long long)n, q.entropy_nats, h, fabs(q.entropy_nats - h) / h);
        /* shifted scores: the same distribution */
        for (int64_t i = 0; i < n; i++) s[i] += 7.0;
        cr_assert_eq(as_entropy_of_scores(s, n, 0, &q, err), AS_OK, "%s", err);
        cr_assert(fabs(q.entropy_nats - h) <= 4e-15 * h, "shifted n=%lld: rel %.2g", (long long)n,
                  fabs(q.entropy_nats - h) / h);
        free(s);
    }
}

Test(entropy_array, topk_mass_closed_form_and_thresholds)
{
    /* the two-level example: m keys at x hold m e^x / Z; k >= m adds (k - m) / Z */
    char err[AS_ERR_LEN];
    const int64_t n = 1000, m = 10;
    const double x = 3.0;
    double *s = calloc((size_t)n, sizeof *s);
    for (int64_t i = 0; i < m; i++) s[i * 97 % n] = x;
    /* any shift */
    for (int64_t i = 0; i < n; i++) s[i] += 7.0;
    double z = (double)m * exp(x) + (double)(n - m), mass;
    const int64_t ks[] = {0, 1, 10, 11, 500, 999, 1000, 5000};
    for (int j = 0; j < 8; j++) {
        int64_t k = ks[j], kh = k < m ? k : m, kl = k > n ? n - m : (k > m ? k - m : 0);
        double want = ((double)kh * exp(x) + (double)kl) / z;
        cr_assert_eq(as_entropy_topk_mass(s, n, k, &mass, err), AS_OK, "%s", err);
        cr_assert_float_eq(mass, want, 1e-13, "k %lld: %.17g vs %.17g", (long long)k, mass, want);
    }
    /* k50/k90/k99 are the smallest k reaching the thresholds */
    as_entropy_q q;
    cr_assert_eq(as_entropy_of_scores(s, n, 1, &q, err), AS_OK);
    const int64_t kk[3] = {q.k50, q.k90, q.k99};
    for (int t = 0; t < 3; t++) {
        cr_assert_eq(as_entropy_topk_mass(s, n, kk[t], &mass, err), AS_OK);
        cr_assert_geq(mass, as_entropy_thresholds[t] - 1e-12);
        cr_assert_eq(as_entropy_topk_mass(s, n, kk[t] - 1, &mass, err), AS_OK);
        cr_assert_lt(mass, as_entropy_thresholds[t]);
    }
    cr_assert_eq(as_entropy_topk_mass(s, 0, 1, &mass, err), AS_ERR_USAGE);
    cr_assert_eq(as_entropy_topk_mass(s, n, -1, &mass, err), AS_ERR_USAGE);
    s[3] = NAN;
    cr_assert_eq(as_entropy_topk_mass(s, n, 2, &mass, err), AS_ERR_VALUE);
    free(s);
}

Test(entropy_array, single_key_and_errors)
{
    char err[AS_ERR_LEN];
    double s = 2.5, bad = NAN;
    as_entropy_q q;
    cr_assert_eq(as_entropy_of_scores(&s, 1, 1, &q, err), AS_OK);
    cr_assert_eq(q.entropy_nats, 0.0);
    cr_assert_eq(q.entropy_norm, 0.0);
    cr_assert_eq(q.k50, 1);
    cr_assert_eq(q.k99, 1);
    cr_assert_eq(as_entropy_of_scores(&s, 0, 1, &q, err), AS_ERR_USAGE);
    cr_assert_eq(as_entropy_of_scores(&bad, 1, 1, &q, err), AS_ERR_VALUE);
}

Test(stats, quantiles_match_numpy_linear)
{
    char err[AS_ERR_LEN];
    double x[] = {5, 1, 4, 2, 3, NAN, 10};
    as_stats s;
    cr_assert_eq(as_stats_compute(x, 7, 1, &s, err), AS_OK);
    cr_assert_eq(s.count, 6);
    /* np.quantile([1,2,3,4,5,10], [.1,.25,.5,.75,.9]) = 1.5, 2.25, 3.5, 4.75, 7.5 */
    cr_assert_float_eq(s.v[0], 25.0 / 6, 1e-15);
    cr_assert_eq(s.v[1], 1.0);
    cr_assert_float_eq(s.v[2], 1.5, 1e-15);
    cr_assert_float_eq(s.v[3], 2.25, 1e-15);
    cr_assert_float_eq(s.v[4], 3.5, 1e-15);
    cr_assert_float_eq(s.v[5], 4.75, 1e-15);
    cr_assert_float_eq(s.v[6], 7.5, 1e-15);
    cr_assert_eq(s.v[7], 10.0);
    cr_assert_eq(as_stats_compute(x, 0, 1, &s, err), AS_OK);
    cr_assert_eq(s.count, 0);
    cr_assert(isnan(s.v[0]));
}

/* ---- the streaming routine against the reference ----------------------------------------- */

typedef struct {
    uint64_t seed;
    int mode; /* 0 normal; 1 zero queries (all-equal scores); 2 growing max; 3 wide spread;
                 4 needle + ties */
    double qscale;
} gen_ctx;

static double gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    gen_ctx *c = vctx;
    uint64_t h = mix(mix(mix(c->seed, (uint64_t)layer * 131 + (uint64_t)which), (uint64_t)head),
                     mix((uint64_t)row, (uint64_t)col));
    double x = hnormal(h);
    switch (c->mode) {
    case 1:
        return which == 'q' ? 0.0 : x;
    case 2: /* keys grow along the positions: the max moves up in every tile */
        if (which == 'q') return col == 0 ? 1.0 : 0.1 * x;
        if (which == 'k') return col == 0 ? 0.02 * (double)row : 0.3 * x;
        return x;
    case 3: /* scores spread over hundreds of nats: the underflow bin is used */
        if (which == 'q') return col == 0 ? 8.0 : 0.0;
        if (which == 'k') return col == 0 ? 40.0 * x : 0.0;
        return x;
    case 4: /* a needle and many exact ties (keys drawn from 3 values) */
        if (which == 'q') return col < 2 ? 1.0 : 0.0;
        if (which == 'k') return row == 77 ? 6.0 : (double)((h >> 7) % 3);
        return x;
    default:
        return which == 'q' ? c->qscale * x : x;
    }
}

static char *make_trace(const char *name, gen_ctx *ctx, int64_t hq, int64_t hkv, int64_t t,
                        int64_t n, int64_t d, as_dtype dt, int causal)
{
    char *p = as_test_path(name);
    as_test_trace_spec sp = {.n_layers = 2, .hq = hq, .hkv = hkv, .t = t, .n = n, .d = d,
                             .dtype = dt, .causal = causal, .gen = gen, .ctx = ctx};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

static void rel_close(double a, double b, double tol, const char *what, int64_t h, int64_t qi)
{
    double sc = fabs(b) > 1e-300 ? fabs(b) : 1.0;
    cr_assert(fabs(a - b) <= tol * sc || (a == b), "%s head %lld query %lld: %.17g vs %.17g",
              what, (long long)h, (long long)qi, a, b);
}

/* Compare as_entropy_layer with as_entropy_of_scores on every query of every layer. */
static void check_trace_cap(const char *path, int64_t tile, size_t mem, int64_t head, int64_t cap)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert_not_null(tr, "%s", err);
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        as_entropy_opts o;
        as_entropy_opts_init(&o);
        o.tile = tile;
        o.mem = mem;
        o.head = head;
        o.gather_cap = cap;
        as_entropy_layer_res res;
        cr_assert_eq(as_entropy_layer(l, &o, &res, err), AS_OK, "%s", err);
        double *p = malloc((size_t)l->n * sizeof *p), *out = malloc((size_t)l->d * sizeof *out);
        double *q = malloc((size_t)l->d * sizeof *q);
        for (int64_t h = 0; h < l->hq; h++) {
            for (int64_t qi = 0; qi < l->t; qi++) {
                const as_entropy_q *e = &res.q[h * l->t + qi];
                if (head >= 0 && h != head) {
                    cr_assert_eq(e->n, 0);
                    continue;
                }
                int64_t n = as_layer_visible(l, qi);
                as_layer_read_q(l, h, qi, q);
                cr_assert_eq(as_attn_scores(l, as_layer_kv_head(l, h), q, 1, n, l->scale, p, n,
                                            err), AS_OK);
                as_entropy_q ref;
                cr_assert_eq(as_entropy_of_scores(p, n, 1, &ref, err), AS_OK);
                cr_assert_eq(e->n, n);
                rel_close(e->entropy_nats, ref.entropy_nats, 1e-11, "entropy", h, qi);
                rel_close(e->entropy_norm, ref.entropy_norm, 1e-11, "entropy_norm", h, qi);
                rel_close(e->lse, ref.lse, 1e-13, "lse", h, qi);
                cr_assert_eq(e->k50, ref.k50, "k50 head %lld q %lld: %lld vs %lld", (long long)h,
                             (long long)qi, (long long)e->k50, (long long)ref.k50);
                cr_assert_eq(e->k90, ref.k90, "k90 head %lld q %lld: %lld vs %lld", (long long)h,
                             (long long)qi, (long long)e->k90, (long long)ref.k90);
                cr_assert_eq(e->k99, ref.k99, "k99 head %lld q %lld: %lld vs %lld", (long long)h,
                             (long long)qi, (long long)e->k99, (long long)ref.k99);
            }
        }
        free(p);
        free(out);
        free(q);
        as_entropy_layer_res_free(&res);
    }
    as_trace_free(tr);
}

static void check_trace(const char *path, int64_t tile, size_t mem, int64_t head)
{
    check_trace_cap(path, tile, mem, head, 0);
}

Test(entropy_layer, matches_reference_normal_causal_gqa)
{
    gen_ctx c = {11, 0, 1.0};
    char *p = make_trace("e_normal.safetensors", &c, 6, 2, 5, 3000, 16, AS_DT_F32, 1);
    check_trace(p, 512, 0, -1);
    check_trace(p, 0, 0, 4);
    check_trace(p, 700, 1, -1);      /* tiny memory: one query per block */
    check_trace(p, 512, 120000, -1); /* two queries per block (blocks of 2, 2, 1) */
    free(p);
}

Test(entropy_layer, matches_reference_peaked_bf16)
{
    gen_ctx c = {12, 0, 6.0};
    char *p = make_trace("e_peaked.safetensors", &c, 4, 4, 3, 2500, 32, AS_DT_BF16, 0);
    check_trace(p, 256, 0, -1);
    free(p);
}

Test(entropy_layer, all_equal_scores_exact)
{
    gen_ctx c = {13, 1, 0.0};
    char *p = make_trace("e_equal.safetensors", &c, 2, 1, 4, 2049, 8, AS_DT_F64, 1);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_entropy_opts o;
    as_entropy_opts_init(&o);
    o.tile = 300;
    as_entropy_layer_res res;
    cr_assert_eq(as_entropy_layer(l, &o, &res, err), AS_OK, "%s", err);
    for (int64_t i = 0; i < l->hq * l->t; i++) {
        const as_entropy_q *e = &res.q[i];
        cr_assert_eq(e->entropy_nats, log((double)e->n), "H %.17g n %lld", e->entropy_nats,
                     (long long)e->n);
        cr_assert_eq(e->entropy_norm, 1.0);
        cr_assert_eq(e->k50, (int64_t)ceil(0.5 * (double)e->n));
        cr_assert_eq(e->k99, (int64_t)ceil(0.99 * (double)e->n));
    }
    as_entropy_layer_res_free(&res);
    as_trace_free(tr);
    free(p);
}

Test(entropy_layer, growing_max_and_wide_spread)
{
    gen_ctx c2 = {14, 2, 0.0}, c3 = {15, 3, 0.0};
    char *p2 = make_trace("e_grow.safetensors", &c2, 2, 1, 3, 4000, 8, AS_DT_F64, 1);
    char *p3 = make_trace("e_wide.safetensors", &c3, 2, 2, 3, 3000, 8, AS_DT_F64, 0);
    check_trace(p2, 128, 0, -1);
    check_trace(p3, 200, 0, -1);
    free(p2);
    free(p3);
}

Test(entropy_layer, needle_and_ties)
{
    gen_ctx c = {16, 4, 0.0};
    char *p = make_trace("e_ties.safetensors", &c, 3, 1, 2, 1500, 8, AS_DT_F32, 1);
    check_trace(p, 100, 0, -1);
    free(p);
}

Test(entropy_layer, refinement_levels)
{
    /* a tiny gather cap: crowded bins are split by sub-histograms, one pass per level,
     * including the equal-weight shortcut (ties) and the underflow bin */
    gen_ctx c0 = {21, 0, 0.3}, c3 = {22, 3, 0.0}, c4 = {23, 4, 0.0};
    char *p0 = make_trace("e_ref0.safetensors", &c0, 2, 1, 3, 5000, 16, AS_DT_F64, 1);
    char *p3 = make_trace("e_ref3.safetensors", &c3, 2, 2, 3, 3000, 8, AS_DT_F64, 0);
    char *p4 = make_trace("e_ref4.safetensors", &c4, 3, 1, 2, 1500, 8, AS_DT_F32, 1);
    for (int64_t cap = 1; cap <= 64; cap *= 8) {
        check_trace_cap(p0, 333, 0, -1, cap);
        check_trace_cap(p3, 200, 0, -1, cap);
        check_trace_cap(p4, 100, 0, -1, cap);
    }
    free(p0);
    free(p3);
    free(p4);
}

Test(entropy_layer, all_equal_with_refinement)
{
    gen_ctx c = {24, 1, 0.0};
    char *p = make_trace("e_eqref.safetensors", &c, 2, 1, 4, 3001, 8, AS_DT_F64, 1);
    check_trace_cap(p, 256, 0, -1, 2);
    free(p);
}

/* The streamed pass at tiny entropies: scores q.k with q = (1, 0), k_j = (-c_j, 0) and scale 1;
 * key 700 has score 0 (the maximum arrives in a later tile), key 5 has -20 (an earlier, smaller
 * maximum the pass must rescale). */
static double tiny_gen(void *ctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    (void)ctx, (void)layer, (void)head;
    if (col != 0) return 0.0;
    if (which == 'q') return 1.0;
    if (which == 'v') return (double)(row % 5);
    return row == 700 ? 0.0 : row == 5 ? -20.0 : -tiny_c(row);
}

Test(entropy_layer, tiny_entropy_streamed)
{
    const int64_t n = 1000;
    char *p = as_test_path("e_tiny.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 1, .hkv = 1, .t = 1, .n = n, .d = 2,
                             .dtype = AS_DT_F64, .causal = 0, .gen = tiny_gen, .scale = 1.0};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    /* extended sums (a double accumulator that starts at e^-20 loses 1e-14 of the tiny terms) */
    long double zeta = expl(-20.0L), cw = 20.0L * expl(-20.0L);
    for (int64_t i = 0; i < n; i++) {
        if (i == 700 || i == 5) continue;
        zeta += expl(-(long double)tiny_c(i));
        cw += (long double)tiny_c(i) * expl(-(long double)tiny_c(i));
    }
    double h = (double)(log1pl(zeta) + cw / (1.0L + zeta));
    /* mpmath at 50 digits: 4.373650342016663291e-8 */
    cr_assert(fabs(h - 4.373650342016663291e-8) <= 2e-16 * h, "reference %.17g", h);
    for (int64_t tile = 64; tile <= 4096; tile *= 8) {
        as_entropy_opts o;
        as_entropy_opts_init(&o);
        o.tile = tile;
        as_entropy_layer_res res;
        cr_assert_eq(as_entropy_layer(as_trace_layer(tr, 0), &o, &res, err), AS_OK, "%s", err);
        double got = res.q[0].entropy_nats;
        cr_assert(fabs(got - h) <= 4e-15 * h, "tile %lld: H=%.17g, closed form %.17g (rel %.2g)",
                  (long long)tile, got, h, fabs(got - h) / h);
        cr_assert(fabs(res.q[0].lse - (double)log1pl(zeta)) <= 4e-15 * (double)log1pl(zeta));
        as_entropy_layer_res_free(&res);
    }
    as_trace_free(tr);
    free(p);
}

Test(entropy_layer, bad_head)
{
    gen_ctx c = {17, 0, 1.0};
    char *p = make_trace("e_bad.safetensors", &c, 2, 1, 2, 64, 8, AS_DT_F32, 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    as_entropy_opts o;
    as_entropy_opts_init(&o);
    o.head = 5;
    as_entropy_layer_res res;
    cr_assert_eq(as_entropy_layer(as_trace_layer(tr, 0), &o, &res, err), AS_ERR_USAGE);
    as_trace_free(tr);
    free(p);
}

/* ---- the command ---------------------------------------------------------------------------- */

static cJSON *find_rec(cJSON *recs, const char *kind, int layer, int head, int query,
                       const char *stat)
{
    cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        cJSON *k = cJSON_GetObjectItem(r, "record");
        if (strcmp(k->valuestring, kind) != 0) continue;
        if ((int)cJSON_GetObjectItem(r, "layer")->valuedouble != layer) continue;
        cJSON *h = cJSON_GetObjectItem(r, "head");
        if (head >= 0 && (!h || (int)h->valuedouble != head)) continue;
        cJSON *q = cJSON_GetObjectItem(r, "query");
        if (query >= 0 && (!q || (int)q->valuedouble != query)) continue;
        cJSON *s = cJSON_GetObjectItem(r, "stat");
        if (stat && (!s || strcmp(s->valuestring, stat) != 0)) continue;
        return r;
    }
    return NULL;
}

Test(entropy_cli, json_records_and_usage)
{
    gen_ctx c = {18, 0, 2.0};
    char *p = make_trace("e_cli.safetensors", &c, 4, 2, 3, 700, 16, AS_DT_F32, 1);
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "entropy %s --json --quiet", p);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cJSON *doc = cJSON_Parse(out);
    cr_assert_not_null(doc);
    cJSON *recs = cJSON_GetObjectItem(doc, "records");
    /* every per-query record carries the documented fields */
    static const char *const fields[] = {"layer", "head", "kv_head", "query", "entropy_nats",
                                         "entropy_bits", "entropy_norm", "eff_support", "k50",
                                         "k90", "k99", "k50_frac", "k90_frac", "k99_frac"};
    int nq = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        if (strcmp(cJSON_GetObjectItem(r, "record")->valuestring, "entropy") != 0) continue;
        nq++;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            cr_assert_not_null(cJSON_GetObjectItem(r, fields[i]), "missing %s", fields[i]);
    }
    cr_assert_eq(nq, 2 * 4 * 3);
    /* values agree with the library; the head mean is the mean of the queries */
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    const as_layer *l = as_trace_layer(tr, 1);
    as_entropy_layer_res res;
    cr_assert_eq(as_entropy_layer(l, NULL, &res, err), AS_OK);
    double mean = 0;
    for (int qi = 0; qi < 3; qi++) {
        cJSON *x = find_rec(recs, "entropy", 1, 3, qi, NULL);
        cr_assert_not_null(x);
        double v = cJSON_GetObjectItem(x, "entropy_nats")->valuedouble;
        /* cJSON 1.7.15 prints %1.15g when it reads back within DBL_EPSILON relative (its
         * compare_double), so the JSON may be one ulp off the library's double */
        cr_assert(fabs(v - res.q[3 * 3 + qi].entropy_nats) <= DBL_EPSILON * fabs(v), "%.17g vs %.17g",
                  v, res.q[3 * 3 + qi].entropy_nats);
        cr_assert_eq((int64_t)cJSON_GetObjectItem(x, "k90")->valuedouble, res.q[3 * 3 + qi].k90);
        cr_assert_eq((int)cJSON_GetObjectItem(x, "kv_head")->valuedouble, 1);
        mean += v / 3;
    }
    cJSON *hm = find_rec(recs, "entropy_head", 1, 3, -1, "mean");
    cr_assert_not_null(hm);
    cr_assert_float_eq(cJSON_GetObjectItem(hm, "entropy_nats")->valuedouble, mean, 1e-14);
    cr_assert_not_null(find_rec(recs, "entropy_head", 1, 3, -1, "q90"));
    cr_assert_not_null(find_rec(recs, "entropy_layer", 0, -1, -1, "median"));
    as_entropy_layer_res_free(&res);
    as_trace_free(tr);
    cJSON_Delete(doc);
    free(out);

    /* table and CSV */
    snprintf(cmd, sizeof cmd, "entropy %s --layer 0 --head 1", p);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cr_assert(strstr(out, "H/ln n") != NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "entropy %s --csv --no-topk --query 2", p);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cr_assert(strncmp(out, "record,layer,head", 17) == 0);
    cr_assert(strstr(out, "k50") == NULL);
    free(out);
    /* usage errors: exit 2 */
    snprintf(cmd, sizeof cmd, "entropy %s --head 4 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "entropy %s --layer 7 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    cr_assert_eq(as_test_run_cli("entropy /nonexistent.safetensors 2>/dev/null", NULL), 2);
    cr_assert_eq(as_test_run_cli("entropy 2>/dev/null", NULL), 2);
    free(p);
}
