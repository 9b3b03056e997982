/* Tests of analysis/as_sel_kv: one decode step's selections over a layer view (data/as_trace.h).
 * Per query head they are as_sp_select's on the whole trace (same seeds: a step cut out of a
 * longer trace selects what the trace does for that query); per kv head they follow the rule
 * (max over the group of log-probabilities, of page bounds), checked against a brute-force
 * reference written here (long double, full sort); a group of one equals the per-head mode;
 * sized sampling draws the m that as_sp_sampling_size gives. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_sel_kv.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

typedef struct {
    int64_t hq, hkv, t, n, d;
    double *q, *k, *v; /* [hq, t, d], [hkv, n, d] */
    int64_t *pos;      /* [t] */
} arrays;

static arrays make(int64_t hq, int64_t hkv, int64_t t, int64_t n, int64_t d, uint64_t seed,
                   double qscale)
{
    arrays a = {hq, hkv, t, n, d, NULL, NULL, NULL, NULL};
    a.q = malloc((size_t)(hq * t * d) * sizeof(double));
    a.k = malloc((size_t)(hkv * n * d) * sizeof(double));
    a.v = malloc((size_t)(hkv * n * d) * sizeof(double));
    a.pos = malloc((size_t)t * sizeof(int64_t));
    uint64_t s = seed;
    for (int64_t i = 0; i < hq * t * d; i++) a.q[i] = qscale * as_test_normal(&s);
    for (int64_t i = 0; i < hkv * n * d; i++) a.k[i] = as_test_normal(&s);
    for (int64_t i = 0; i < hkv * n * d; i++) a.v[i] = as_test_normal(&s);
    for (int64_t i = 0; i < t; i++) a.pos[i] = n - t + i;
    return a;
}

static void release(arrays *a)
{
    free(a->q), free(a->k), free(a->v), free(a->pos);
}

/* The one-query view of query qi: q rows copied out, keys 0..pos[qi] (a prefix of K/V). */
typedef struct {
    as_layer_view vw;
    double *q, *k, *v;
} step;

static void cut_step(step *s, const arrays *a, int index, int64_t qi)
{
    const int64_t d = a->d, n = a->pos[qi] + 1;
    s->q = malloc((size_t)(a->hq * d) * sizeof(double));
    s->k = malloc((size_t)(a->hkv * n * d) * sizeof(double));
    s->v = malloc((size_t)(a->hkv * n * d) * sizeof(double));
    for (int64_t h = 0; h < a->hq; h++)
        memcpy(s->q + h * d, a->q + (h * a->t + qi) * d, (size_t)d * sizeof(double));
    for (int64_t g = 0; g < a->hkv; g++) {
        memcpy(s->k + g * n * d, a->k + g * a->n * d, (size_t)(n * d) * sizeof(double));
        memcpy(s->v + g * n * d, a->v + g * a->n * d, (size_t)(n * d) * sizeof(double));
    }
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_view_init(&s->vw, index, AS_DT_F64, a->hq, a->hkv, 1, n, d, 0, s->q,
                                    s->k, s->v, NULL, err),
                 AS_OK, "%s", err);
}

static void free_step(step *s) { free(s->q), free(s->k), free(s->v); }

static void same_sel(const as_sp_sel *x, const as_sp_sel *y, const char *what)
{
    cr_assert_eq(x->n, y->n, "%s: n", what);
    cr_assert_eq(x->n_det, y->n_det, "%s: n_det %lld vs %lld", what, (long long)x->n_det,
                 (long long)y->n_det);
    cr_assert_eq(x->n_samp, y->n_samp, "%s: n_samp", what);
    cr_assert_eq(x->sampled, y->sampled, "%s: sampled", what);
    for (int64_t j = 0; j < x->n_det; j++) cr_assert_eq(x->det[j], y->det[j], "%s: det[%lld]", what, (long long)j);
    for (int64_t j = 0; j < x->n_samp; j++)
        cr_assert_eq(x->samp[j], y->samp[j], "%s: samp[%lld]", what, (long long)j);
}

static const as_sp_method methods[] = {AS_SP_TOPK, AS_SP_SINK_WINDOW, AS_SP_PAGE, AS_SP_UNIFORM,
                                       AS_SP_TOPK_SAMPLE};
static const as_budget budgets[] = {{0.1, 0}, {0.02, 0}, {0, 37}, {0.5, 0}};

Test(sel_kv, rank_is_max_log_probability)
{
    /* two rows, closed form: row 0 = log(1,2,3,4) (probabilities 0.1 .. 0.4), row 1 uniform */
    const double S[2][4] = {{0, log(2.0), log(3.0), log(4.0)}, {5, 5, 5, 5}};
    double r[4];
    as_sel_kv_rank(&S[0][0], 2, 4, 4, r);
    const double want[4] = {log(0.25), log(0.25), log(0.3), log(0.4)};
    for (int i = 0; i < 4; i++) cr_assert_float_eq(r[i], want[i], 1e-14, "r[%d]", i);
}

Test(sel_kv, per_head_step_equals_whole_trace_selection)
{
    /* a causal trace of 5 queries; the view of query 3 alone, seeded as query 3 */
    arrays a = make(6, 2, 5, 300, 16, 11, 1.5);
    as_layer_view whole;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_view_init(&whole, 7, AS_DT_F64, a.hq, a.hkv, a.t, a.n, a.d, 0, a.q, a.k,
                                    a.v, a.pos, err),
                 AS_OK, "%s", err);
    step s;
    cut_step(&s, &a, 7, 3);
    as_sp_params p;
    as_sp_params_init(&p);
    p.seed = 99;
    as_sp_sel sels[6], ref;
    for (int h = 0; h < 6; h++) as_sp_sel_init(&sels[h]);
    as_sp_sel_init(&ref);
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++)
            for (uint64_t trial = 0; trial < 2; trial++) {
                cr_assert_eq(as_sel_step(&s.vw.layer, 0, AS_SEL_Q, methods[mi], budgets[bi], &p,
                                         trial, 3, 0, sels, NULL, err),
                             AS_OK, "%s", err);
                for (int64_t h = 0; h < 6; h++) {
                    cr_assert_eq(as_sp_select(&whole.layer, h, 3, methods[mi], budgets[bi], &p,
                                              trial, NULL, &ref, err),
                                 AS_OK, "%s", err);
                    cr_assert_eq(ref.n, 299);
                    same_sel(&sels[h], &ref, as_sp_method_name(methods[mi]));
                }
            }
    /* a different query number draws differently (sampling), the same keys otherwise */
    as_sp_sel other[6];
    for (int h = 0; h < 6; h++) as_sp_sel_init(&other[h]);
    cr_assert_eq(as_sel_step(&s.vw.layer, 0, AS_SEL_Q, AS_SP_UNIFORM, budgets[0], &p, 0, 3, 0,
                             sels, NULL, err), AS_OK);
    cr_assert_eq(as_sel_step(&s.vw.layer, 0, AS_SEL_Q, AS_SP_UNIFORM, budgets[0], &p, 0, 4, 0,
                             other, NULL, err), AS_OK);
    cr_assert_neq(memcmp(sels[0].samp, other[0].samp, (size_t)sels[0].n_samp * sizeof(int64_t)), 0);
    for (int h = 0; h < 6; h++) as_sp_sel_free(&sels[h]), as_sp_sel_free(&other[h]);
    as_sp_sel_free(&ref);
    free_step(&s);
    release(&a);
}

Test(sel_kv, group_of_one_equals_per_head)
{
    arrays a = make(3, 3, 1, 257, 8, 5, 2.0);
    as_layer_view vw;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, 3, 3, 1, a.n, a.d, 0, a.q, a.k, a.v, NULL,
                                    err), AS_OK, "%s", err);
    as_sp_params p;
    as_sp_params_init(&p);
    as_sp_sel x[3], y[3];
    for (int h = 0; h < 3; h++) as_sp_sel_init(&x[h]), as_sp_sel_init(&y[h]);
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
            cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, methods[mi], budgets[bi], &p, 0, 0, 0,
                                     x, NULL, err), AS_OK, "%s", err);
            cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, methods[mi], budgets[bi], &p, 0, 0,
                                     0, y, NULL, err), AS_OK, "%s", err);
            for (int h = 0; h < 3; h++) same_sel(&x[h], &y[h], as_sp_method_name(methods[mi]));
        }
    for (int h = 0; h < 3; h++) as_sp_sel_free(&x[h]), as_sp_sel_free(&y[h]);
    release(&a);
}

/* ---- brute-force references of the kv rule ------------------------------------------------ */

typedef struct {
    long double v;
    int64_t i;
} vi;

static int cmp_vi(const void *pa, const void *pb)
{
    const vi *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

/* top k of x (ties: lower index), sorted by position */
static void ref_topk(const vi *x, int64_t n, int64_t k, int64_t *out)
{
    vi *c = malloc((size_t)n * sizeof *c);
    memcpy(c, x, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_vi);
    for (int64_t j = 0; j < k; j++) out[j] = c[j].i;
    qsort(out, (size_t)k, sizeof *out, cmp_i64);
    free(c);
}

Test(sel_kv, kv_topk_and_pages_match_brute_force)
{
    const int64_t hq = 8, hkv = 2, G = 4, n = 203, d = 12, P = 16;
    arrays a = make(hq, hkv, 1, n, d, 77, 2.5);
    as_layer_view vw;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_view_init(&vw, 2, AS_DT_F64, hq, hkv, 1, n, d, 0, a.q, a.k, a.v, NULL,
                                    err), AS_OK, "%s", err);
    const double scale = 1.0 / sqrt((double)d);
    as_sp_params p;
    as_sp_params_init(&p);
    as_sp_sel sels[2];
    as_sp_sel_init(&sels[0]), as_sp_sel_init(&sels[1]);
    vi *r = malloc((size_t)n * sizeof *r);
    int64_t *want = malloc((size_t)n * sizeof *want);
    const int64_t ks[] = {1, 10, 50, 120};
    for (size_t ki = 0; ki < 4; ki++) {
        as_budget b = {0, ks[ki]};
        cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_TOPK, b, &p, 0, 0, 0, sels, NULL,
                                 err), AS_OK, "%s", err);
        for (int64_t g = 0; g < hkv; g++) {
            for (int64_t i = 0; i < n; i++) r[i] = (vi){-INFINITY, i};
            for (int64_t h = g * G; h < (g + 1) * G; h++) {
                long double s[256], z = 0;
                for (int64_t i = 0; i < n; i++) {
                    long double dot = 0;
                    for (int64_t c = 0; c < d; c++) dot += (long double)a.q[h * d + c] * a.k[(g * n + i) * d + c];
                    s[i] = dot * scale;
                    z += expl(s[i]);
                }
                for (int64_t i = 0; i < n; i++)
                    if (s[i] - logl(z) > r[i].v) r[i].v = s[i] - logl(z);
            }
            ref_topk(r, n, ks[ki], want);
            cr_assert_eq(sels[g].n_det, ks[ki]);
            for (int64_t j = 0; j < ks[ki]; j++) cr_assert_eq(sels[g].det[j], want[j], "k %lld", (long long)ks[ki]);
        }
        /* pages: floor(k / P) pages (at least 1) by the max over the group of the bounds */
        cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_PAGE, b, &p, 0, 0, 0, sels, NULL,
                                 err), AS_OK, "%s", err);
        const int64_t npg = (n + P - 1) / P;
        int64_t want_pg = ks[ki] / P < 1 ? 1 : ks[ki] / P;
        for (int64_t g = 0; g < hkv; g++) {
            for (int64_t pg = 0; pg < npg; pg++) {
                r[pg] = (vi){-INFINITY, pg};
                for (int64_t h = g * G; h < (g + 1) * G; h++) {
                    long double ub = 0;
                    for (int64_t c = 0; c < d; c++) {
                        double mn = INFINITY, mx = -INFINITY;
                        for (int64_t i = pg * P; i < (pg + 1) * P && i < n; i++) {
                            mn = fmin(mn, a.k[(g * n + i) * d + c]);
                            mx = fmax(mx, a.k[(g * n + i) * d + c]);
                        }
                        ub += fmaxl((long double)a.q[h * d + c] * mn, (long double)a.q[h * d + c] * mx);
                    }
                    if (ub * scale > r[pg].v) r[pg].v = ub * scale;
                }
            }
            ref_topk(r, npg, want_pg, want);
            int64_t c = 0;
            for (int64_t j = 0; j < want_pg; j++)
                for (int64_t i = want[j] * P; i < (want[j] + 1) * P && i < n; i++) {
                    cr_assert_lt(c, sels[g].n_det);
                    cr_assert_eq(sels[g].det[c], i);
                    c++;
                }
            cr_assert_eq(c, sels[g].n_det);
            /* every key inside the bound: the page bound is at least the scores of its keys */
            double ub[16];
            cr_assert_eq(as_sel_page_bounds(&vw.layer, g, a.q + g * G * d, n, P, ub, err), AS_OK);
            for (int64_t i = 0; i < n; i++) {
                double s = 0;
                for (int64_t cc = 0; cc < d; cc++) s += a.q[g * G * d + cc] * a.k[(g * n + i) * d + cc];
                cr_assert_leq(s * scale, ub[i / P] + 1e-12);
            }
        }
    }
    /* sampling: the group's first head's draws; heavy hitters by the rank */
    as_sp_sel q[8];
    for (int h = 0; h < 8; h++) as_sp_sel_init(&q[h]);
    as_budget b = {0.2, 0};
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_UNIFORM, b, &p, 1, 4, 0, sels, NULL, err), AS_OK);
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, AS_SP_UNIFORM, b, &p, 1, 4, 0, q, NULL, err), AS_OK);
    same_sel(&sels[0], &q[0], "uniform group 0");
    same_sel(&sels[1], &q[4], "uniform group 1");
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_TOPK_SAMPLE, b, &p, 0, 0, 0, sels, NULL, err), AS_OK);
    as_sp_sel tk[2];
    as_sp_sel_init(&tk[0]), as_sp_sel_init(&tk[1]);
    as_budget bh = {0, llround(41 * 0.5)}; /* k = ceil(0.2 * 203) = 41, heavy share 0.5 */
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_TOPK, bh, &p, 0, 0, 0, tk, NULL, err), AS_OK);
    for (int g = 0; g < 2; g++) {
        cr_assert_eq(sels[g].n_det, tk[g].n_det);
        cr_assert_eq(memcmp(sels[g].det, tk[g].det, (size_t)tk[g].n_det * sizeof(int64_t)), 0);
        cr_assert_eq(sels[g].n_samp, 41 - tk[g].n_det);
    }
    for (int h = 0; h < 8; h++) as_sp_sel_free(&q[h]);
    as_sp_sel_free(&tk[0]), as_sp_sel_free(&tk[1]);
    as_sp_sel_free(&sels[0]), as_sp_sel_free(&sels[1]);
    free(r), free(want);
    release(&a);
}

Test(sel_kv, sized_sampling_draws_the_bound_s_m)
{
    const int64_t hq = 4, hkv = 2, n = 500, d = 8;
    arrays a = make(hq, hkv, 1, n, d, 3, 1.0);
    as_layer_view vw;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_layer_view_init(&vw, 1, AS_DT_F64, hq, hkv, 1, n, d, 0, a.q, a.k, a.v, NULL,
                                    err), AS_OK, "%s", err);
    as_sp_params p;
    as_sp_params_init(&p);
    as_sp_sel sels[4];
    int64_t need[4];
    for (int h = 0; h < 4; h++) as_sp_sel_init(&sels[h]);
    const double scale = 1.0 / sqrt((double)d);
    as_budget b = {0.1, 0}; /* k = 50, heavy 25 */
    const double epss[] = {0.5, 0.1, 1e-6};
    for (int e = 0; e < 3; e++) {
        cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, AS_SP_TOPK_SAMPLE, b, &p, 0, 0, epss[e],
                                 sels, need, err), AS_OK, "%s", err);
        for (int64_t h = 0; h < hq; h++) {
            const int64_t g = h / 2;
            /* independent: scores, o, stats from the arrays */
            double s[500], w[500], o[8] = {0}, z = 0, mx = -INFINITY;
            for (int64_t i = 0; i < n; i++) {
                s[i] = 0;
                for (int64_t c = 0; c < d; c++) s[i] += a.q[h * d + c] * a.k[(g * n + i) * d + c];
                s[i] *= scale;
                mx = fmax(mx, s[i]);
            }
            for (int64_t i = 0; i < n; i++) z += (w[i] = exp(s[i] - mx));
            for (int64_t i = 0; i < n; i++)
                for (int64_t c = 0; c < d; c++) o[c] += w[i] / z * a.v[(g * n + i) * d + c];
            double no = 0;
            for (int c = 0; c < d; c++) no += o[c] * o[c];
            cr_assert_eq(sels[h].n_det, 25);
            as_sp_sstats st;
            cr_assert_eq(as_sp_sampling_stats(s, a.v + g * n * d, n, d, sels[h].det, 25, &st, err), AS_OK);
            int64_t m = as_sp_sampling_size(&st, epss[e] * sqrt(no), p.delta);
            cr_assert_eq(need[h], m, "eps %g head %lld: %lld vs %lld", epss[e], (long long)h,
                         (long long)need[h], (long long)m);
            cr_assert_eq(sels[h].n_samp, m);
            cr_assert(sels[h].sampled);
            if (e == 2) cr_assert_eq(m, n - 25); /* only exhaustion reaches 1e-6 */
            /* the smallest m meeting the target */
            cr_assert_leq(as_sp_sampling_eps(&st, m, p.delta), epss[e] * sqrt(no));
            if (m > 1) cr_assert_gt(as_sp_sampling_eps(&st, m - 1, p.delta), epss[e] * sqrt(no));
        }
    }
    /* kv mode: the largest m of the group */
    int64_t needq[4];
    memcpy(needq, need, sizeof need);
    as_sp_sel kv[2];
    as_sp_sel_init(&kv[0]), as_sp_sel_init(&kv[1]);
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_TOPK_SAMPLE, b, &p, 0, 0, 0.1, kv,
                             need, err), AS_OK, "%s", err);
    for (int g = 0; g < 2; g++) {
        cr_assert_eq(kv[g].n_det, 25);
        cr_assert_geq(need[g], 1);
        cr_assert_eq(kv[g].n_samp, need[g]);
    }
    as_sp_sel_free(&kv[0]), as_sp_sel_free(&kv[1]);
    for (int h = 0; h < 4; h++) as_sp_sel_free(&sels[h]);
    release(&a);
}

Test(sel_kv, bad_input)
{
    arrays a = make(4, 2, 1, 50, 4, 1, 1.0);
    as_layer_view vw;
    char err[AS_ERR_LEN] = "";
    cr_assert_eq(as_layer_view_init(&vw, 0, AS_DT_F64, 4, 2, 1, 50, 4, 0, a.q, a.k, a.v, NULL,
                                    err), AS_OK);
    as_sp_params p;
    as_sp_params_init(&p);
    as_sp_sel sels[4];
    for (int h = 0; h < 4; h++) as_sp_sel_init(&sels[h]);
    as_budget b = {0.1, 0};
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, AS_SP_INDEX, b, &p, 0, 0, 0, sels, NULL, err), AS_ERR_USAGE);
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_KV, AS_SP_PAGE_SAMPLE, b, &p, 0, 0, 0, sels, NULL, err), AS_ERR_USAGE);
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, AS_SP_TOPK, b, &p, 0, 0, 0.1, sels, NULL, err), AS_ERR_USAGE);
    cr_assert(strstr(err, "topk-sample"), "%s", err);
    cr_assert_eq(as_sel_step(&vw.layer, 1, AS_SEL_Q, AS_SP_TOPK, b, &p, 0, 0, 0, sels, NULL, err), AS_ERR_USAGE);
    cr_assert_eq(as_sel_step(&vw.layer, 0, (as_sel_mode)7, AS_SP_TOPK, b, &p, 0, 0, 0, sels, NULL, err), AS_ERR_USAGE);
    p.delta = 0;
    cr_assert_eq(as_sel_step(&vw.layer, 0, AS_SEL_Q, AS_SP_TOPK_SAMPLE, b, &p, 0, 0, 0.1, sels, NULL, err), AS_ERR_USAGE);
    for (int h = 0; h < 4; h++) as_sp_sel_free(&sels[h]);
    release(&a);
}
