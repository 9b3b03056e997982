/* Tests of analysis/as_sp_check: a kernel's outputs against the subset and the mixed (top-k +
 * sampling) bounds — the check path of `attnscope gpu replay`, run here on the CPU with the GPU
 * replaced by a sparse decode written in this file (float32 outputs, as the GPU returns them).
 * Every bound is compared with a brute-force float64 computation from the definitions. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_sp_check.h"
#include "as_testutil.h"
#include "as_trace.h"

enum { HQ = 4, HKV = 2, T = 6, N = 300, D = 16 };

static as_trace *open_trace(const char *name, uint64_t seed)
{
    char *p = as_test_path(name);
    as_test_trace_spec sp = {.n_layers = 1, .hq = HQ, .hkv = HKV, .t = T, .n = N, .d = D,
                             .dtype = AS_DT_F32, .causal = 1, .seed = seed};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    free(p);
    return tr;
}

/* brute force, float64: scores, probabilities, dense output of (h, t) */
typedef struct {
    int64_t n;
    double s[N], p[N], o[D];
    double v[N][D];
} qref;

static void ref_query(const as_layer *l, int64_t h, int64_t t, qref *r)
{
    const int64_t kvh = as_layer_kv_head(l, h);
    double q[D], k[D];
    r->n = as_layer_visible(l, t);
    as_layer_read_q(l, h, t, q);
    double mx = -INFINITY;
    for (int64_t j = 0; j < r->n; j++) {
        as_layer_read_k(l, kvh, j, 1, k);
        double s = 0;
        for (int c = 0; c < D; c++) s += q[c] * k[c];
        r->s[j] = s * l->scale;
        mx = fmax(mx, r->s[j]);
        as_layer_read_v(l, kvh, j, 1, r->v[j]);
    }
    double z = 0;
    for (int64_t j = 0; j < r->n; j++) z += (r->p[j] = exp(r->s[j] - mx));
    memset(r->o, 0, sizeof r->o);
    for (int64_t j = 0; j < r->n; j++) {
        r->p[j] /= z;
        for (int c = 0; c < D; c++) r->o[c] += r->p[j] * r->v[j][c];
    }
}

/* The CPU "kernel": weighted softmax over entries (weight w for samples), float32 output. */
static void sparse_decode(const qref *r, const int64_t *S, int64_t k, const int64_t *samp,
                          int64_t m, double w, float *o)
{
    double mx = -INFINITY, z = 0, acc[D] = {0};
    for (int64_t j = 0; j < k; j++) mx = fmax(mx, r->s[S[j]]);
    for (int64_t j = 0; j < m; j++) mx = fmax(mx, r->s[samp[j]]);
    for (int64_t e = 0; e < k + m; e++) {
        const int64_t j = e < k ? S[e] : samp[e - k];
        const double a = exp(r->s[j] - mx) * (e < k ? 1.0 : w);
        z += a;
        for (int c = 0; c < D; c++) acc[c] += a * r->v[j][c];
    }
    for (int c = 0; c < D; c++) o[c] = (float)(acc[c] / z);
}

/* brute-force bound ((1 - P_S) + share) max_{i not in S} ||v_i - o_S|| */
static double ref_bound(const qref *r, const int64_t *S, int64_t k, const int64_t *samp,
                        int64_t m, double w, double *ps_out)
{
    char in[N] = {0};
    double ps = 0, oS[D] = {0}, zm = 0;
    for (int64_t j = 0; j < k; j++) {
        in[S[j]] = 1;
        ps += r->p[S[j]];
    }
    for (int64_t j = 0; j < k; j++)
        for (int c = 0; c < D; c++) oS[c] += r->p[S[j]] * r->v[S[j]][c] / ps;
    double dev = 0;
    for (int64_t i = 0; i < r->n; i++) {
        if (in[i]) continue;
        double e = 0;
        for (int c = 0; c < D; c++) e += (r->v[i][c] - oS[c]) * (r->v[i][c] - oS[c]);
        dev = fmax(dev, sqrt(e));
    }
    for (int64_t j = 0; j < m; j++) zm += w * r->p[samp[j]];
    *ps_out = ps;
    return ((1 - ps) + zm / (ps + zm)) * dev;
}

/* the k keys of largest score (sorted by score, descending) */
static int64_t topk(const qref *r, int64_t k, int64_t *S)
{
    char used[N] = {0};
    if (k > r->n) k = r->n;
    for (int64_t e = 0; e < k; e++) {
        int64_t best = -1;
        for (int64_t j = 0; j < r->n; j++)
            if (!used[j] && (best < 0 || r->s[j] > r->s[best])) best = j;
        used[best] = 1;
        S[e] = best;
    }
    return k;
}

Test(sp_check, mixed_bound_formula)
{
    cr_assert_float_eq(as_sp_mixed_bound(0.75, 0.0, 2.0), 0.5, 1e-15);
    cr_assert_float_eq(as_sp_mixed_bound(0.75, 0.1, 2.0), 0.7, 1e-15);
    cr_assert_eq(as_sp_mixed_bound(1.0 + 1e-16, 0.0, 3.0), 0.0); /* rounding above 1 */
}

Test(sp_check, subset_and_mixed_match_brute_force)
{
    as_trace *tr = open_trace("q.safetensors", 11);
    const as_layer *l = as_trace_layer(tr, 0);
    static qref r;
    char err[AS_ERR_LEN];
    uint64_t rng = 5;
    for (int64_t h = 0; h < HQ; h++)
        for (int64_t t = 0; t < T; t++) {
            ref_query(l, h, t, &r);
            int64_t S[N], samp[N];
            const int64_t k = topk(&r, 12, S);
            /* samples: keys outside S, uniform, with repeats */
            char in[N] = {0};
            for (int64_t j = 0; j < k; j++) in[S[j]] = 1;
            int64_t m = 0;
            while (m < 9) {
                int64_t j = (int64_t)(as_test_uniform(&rng) * (double)r.n);
                if (!in[j]) samp[m++] = j;
            }
            const double w = (double)r.n / (double)m;
            for (int mixed = 0; mixed < 2; mixed++) {
                const int64_t mm = mixed ? m : 0;
                float of[D];
                double oh[D];
                sparse_decode(&r, S, k, samp, mm, w, of);
                for (int c = 0; c < D; c++) oh[c] = of[c];
                as_sp_kcheck kc;
                cr_assert_eq(as_sp_check_kernel(l, h, t, S, k, samp, mm, w, oh, 1e-4, 1e-6, &kc, err),
                             AS_OK, "%s", err);
                double ps;
                const double b = ref_bound(&r, S, k, samp, mm, w, &ps);
                cr_assert(fabs(kc.bound - b) <= 1e-12 * (1 + b), "bound %g vs %g", kc.bound, b);
                cr_assert(fabs(kc.captured_mass - ps) <= 1e-12);
                double e2 = 0, no = 0;
                for (int c = 0; c < D; c++) {
                    e2 += (oh[c] - r.o[c]) * (oh[c] - r.o[c]);
                    no += r.o[c] * r.o[c];
                }
                cr_assert(fabs(kc.abs_error - sqrt(e2)) <= 1e-12);
                cr_assert(fabs(kc.norm_o - sqrt(no)) <= 1e-12);
                cr_assert(!kc.violated, "h %lld t %lld mixed %d: error %g bound %g", (long long)h,
                          (long long)t, mixed, kc.abs_error, kc.bound);
                cr_assert(mixed || kc.share == 0);
                cr_assert(!mixed || kc.share > 0);
                /* a kernel that is off by more than bound + tol is caught */
                oh[0] += 2 * (kc.bound + kc.tol) + 1e-3;
                cr_assert_eq(as_sp_check_kernel(l, h, t, S, k, samp, mm, w, oh, 1e-4, 1e-6, &kc, err),
                             AS_OK);
                cr_assert(kc.violated);
            }
        }
    as_trace_free(tr);
}

/* Rows as the GPU writes them: per (query, kv head), -1 padding, a repeat, dropped samples. */
Test(sp_check, layer_rows_kv_mode_and_dense)
{
    as_trace *tr = open_trace("kv.safetensors", 3);
    const as_layer *l = as_trace_layer(tr, 0);
    static qref r;
    char err[AS_ERR_LEN];
    enum { KT = 10, M = 6, KCAP = KT + 2 + M };
    int32_t idx[T * HKV * KCAP], count[T * HKV];
    float logw[T * HKV * KCAP];
    static float o[T * HQ * 32], od[T * HQ * 32]; /* row stride 32 > D, as the GPU pads */
    uint64_t rng = 9;
    for (int64_t t = 0; t < T; t++)
        for (int64_t g = 0; g < HKV; g++) {
            /* S: the top-k of the group's first query head, then -1 and a repeat */
            ref_query(l, g * (HQ / HKV), t, &r);
            int64_t S[N];
            const int64_t k = topk(&r, KT, S);
            int32_t *row = idx + (t * HKV + g) * KCAP;
            float *lw = logw + (t * HKV + g) * KCAP;
            int e = 0;
            for (int64_t j = 0; j < k; j++) row[e++] = (int32_t)S[j];
            row[e++] = -1;
            row[e++] = (int32_t)S[0];
            const int ndet = e;
            for (int j = 0; j < M; j++) {
                row[e] = (int32_t)(as_test_uniform(&rng) * (double)r.n);
                lw[e] = j == 0 ? -INFINITY : logf((float)r.n / M); /* draw 0: dropped */
                e++;
            }
            for (int j = 0; j < ndet; j++) lw[j] = 0;
            count[t * HKV + g] = e;
            /* each query head of the group: the kernel's output over this row */
            for (int64_t h = g * (HQ / HKV); h < (g + 1) * (HQ / HKV); h++) {
                ref_query(l, h, t, &r);
                char in[N] = {0};
                int64_t SS[N], samp[M], kk = 0, m = 0;
                for (int j = 0; j < ndet; j++)
                    if (row[j] >= 0 && !in[row[j]]) in[SS[kk++] = row[j]] = 1;
                for (int j = ndet; j < e; j++)
                    if (lw[j] != -INFINITY && !in[row[j]]) samp[m++] = row[j];
                sparse_decode(&r, SS, kk, samp, m, (double)r.n / M, o + (t * HQ + h) * 32);
                for (int c = 0; c < D; c++) od[(t * HQ + h) * 32 + c] = (float)r.o[c];
            }
        }
    as_sp_ksel sel = {.per_query_head = 0, .idx = idx, .count = count, .logw = logw,
                      .kcap = KCAP, .n_det = KT + 2};
    as_sp_kstats st[HQ];
    cr_assert_eq(as_sp_check_kernel_layer(l, o, 32, &sel, 1e-4, 1e-6, st, err), AS_OK, "%s", err);
    for (int h = 0; h < HQ; h++) {
        cr_assert_eq(st[h].queries, T);
        cr_assert_eq(st[h].violations, 0, "head %d: worst ratio %g", h, st[h].worst_ratio);
        cr_assert(st[h].max_bound > 0 && st[h].min_captured_mass < 1);
        cr_assert(st[h].worst_ratio <= 1 && st[h].max_abs_error > 0);
    }
    /* dense: bound 0, the float32 rounding of o within the tolerance; a wrong one fails */
    cr_assert_eq(as_sp_check_kernel_layer(l, od, 32, NULL, 1e-4, 1e-6, st, err), AS_OK);
    for (int h = 0; h < HQ; h++) {
        cr_assert_eq(st[h].violations, 0);
        cr_assert_eq(st[h].max_bound, 0);
        cr_assert(st[h].max_rel_error < 1e-6);
        cr_assert(fabs(st[h].min_captured_mass - 1) < 1e-12);
    }
    od[(3 * HQ + 1) * 32 + 2] += 0.01f;
    cr_assert_eq(as_sp_check_kernel_layer(l, od, 32, NULL, 1e-4, 1e-6, st, err), AS_OK);
    cr_assert_eq(st[1].violations, 1);
    cr_assert_eq(st[0].violations + st[2].violations + st[3].violations, 0);
    as_trace_free(tr);
}

/* Rows as the GPU's pages + sampling writes them: the keys of whole pages (the last one past the
 * query's end written as -1, the heavy part padded with -1), then draws over the keys outside
 * the pages only, each standing for (n - |S|) / draws keys (sample_rest). The check must use
 * that weight: its bound is compared with the brute-force one at (n - |S|) / M, which differs
 * from the top-k + sampling weight n / M. */
Test(sp_check, layer_rows_page_sample)
{
    as_trace *tr = open_trace("ps.safetensors", 21);
    const as_layer *l = as_trace_layer(tr, 0);
    static qref r;
    char err[AS_ERR_LEN];
    enum { PG = 16, NP = 3, KDET = NP * PG + 5, M = 20, KCAP = KDET + M };
    int32_t idx[T * HKV * KCAP], count[T * HKV];
    float logw[T * HKV * KCAP];
    static float o[T * HQ * 32];
    double want_bound[HQ] = {0};
    uint64_t rng = 17;
    for (int64_t t = 0; t < T; t++)
        for (int64_t g = 0; g < HKV; g++) {
            ref_query(l, g * (HQ / HKV), t, &r);
            /* pages: the one holding the top key, the last (partial) page, and page 1 */
            int64_t top[1] = {0};
            topk(&r, 1, top);
            const int64_t last = (r.n - 1) / PG;
            int64_t pages[NP] = {top[0] / PG, last, 1};
            if (pages[0] == last || pages[0] == 1) pages[0] = (last + 1) / 2 == 1 ? 2 : (last + 1) / 2;
            cr_assert(pages[0] != last && pages[0] != 1 && last > 2);
            int32_t *row = idx + (t * HKV + g) * KCAP;
            float *lw = logw + (t * HKV + g) * KCAP;
            char in[N] = {0};
            int64_t SS[N], kk = 0, e = 0;
            for (int p = 0; p < NP; p++)
                for (int64_t i = pages[p] * PG; i < (pages[p] + 1) * PG; i++) {
                    row[e] = i < r.n ? (int32_t)i : -1;
                    lw[e++] = 0;
                    if (i < r.n) in[SS[kk++] = i] = 1;
                }
            while (e < KDET) {
                row[e] = -1;
                lw[e++] = 0;
            }
            const double w = (double)(r.n - kk) / M;
            int64_t samp[M];
            for (int j = 0; j < M; j++) {
                int64_t x;
                do x = (int64_t)(as_test_uniform(&rng) * (double)r.n);
                while (in[x]);
                samp[j] = x;
                row[e] = (int32_t)x;
                lw[e++] = logf((float)w);
            }
            count[t * HKV + g] = (int32_t)e;
            for (int64_t h = g * (HQ / HKV); h < (g + 1) * (HQ / HKV); h++) {
                ref_query(l, h, t, &r);
                sparse_decode(&r, SS, kk, samp, M, w, o + (t * HQ + h) * 32);
                double ps;
                want_bound[h] = fmax(want_bound[h], ref_bound(&r, SS, kk, samp, M, w, &ps));
                /* the top-k + sampling weight gives another bound: the test can tell them apart */
                const double other = ref_bound(&r, SS, kk, samp, M, (double)r.n / M, &ps);
                cr_assert(fabs(other - ref_bound(&r, SS, kk, samp, M, w, &ps)) > 1e-9);
            }
        }
    as_sp_ksel sel = {.per_query_head = 0, .idx = idx, .count = count, .logw = logw,
                      .kcap = KCAP, .n_det = KDET, .sample_rest = 1};
    as_sp_kstats st[HQ];
    cr_assert_eq(as_sp_check_kernel_layer(l, o, 32, &sel, 1e-4, 1e-6, st, err), AS_OK, "%s", err);
    for (int h = 0; h < HQ; h++) {
        cr_assert_eq(st[h].queries, T);
        cr_assert_eq(st[h].violations, 0, "head %d: worst ratio %g", h, st[h].worst_ratio);
        cr_assert(fabs(st[h].max_bound - want_bound[h]) <= 1e-12 * (1 + want_bound[h]),
                  "head %d: bound %.17g, brute force %.17g", h, st[h].max_bound, want_bound[h]);
        cr_assert(st[h].min_captured_mass < 1 && st[h].max_abs_error > 0);
    }
    /* read as top-k + sampling rows (weight n / M), the same outputs give other bounds */
    sel.sample_rest = 0;
    cr_assert_eq(as_sp_check_kernel_layer(l, o, 32, &sel, 1e-4, 1e-6, st, err), AS_OK, "%s", err);
    int differ = 0;
    for (int h = 0; h < HQ; h++) differ += fabs(st[h].max_bound - want_bound[h]) > 1e-9;
    cr_assert_gt(differ, 0);
    as_trace_free(tr);
}

Test(sp_check, bad_input)
{
    as_trace *tr = open_trace("bad.safetensors", 1);
    const as_layer *l = as_trace_layer(tr, 0);
    char err[AS_ERR_LEN];
    as_sp_kcheck kc;
    double oh[D] = {0};
    int64_t S[2] = {1, 1}, samp[1] = {N + 5};
    cr_assert_neq(as_sp_check_kernel(l, 0, 0, S, 2, NULL, 0, 0, oh, 1e-4, 0, &kc, err), AS_OK);
    S[1] = 2;
    cr_assert_neq(as_sp_check_kernel(l, 0, 0, S, 2, samp, 1, 1, oh, 1e-4, 0, &kc, err), AS_OK);
    float o[T * HQ * D] = {0};
    as_sp_kstats st[HQ];
    cr_assert_neq(as_sp_check_kernel_layer(l, o, D - 1, NULL, 1e-4, 0, st, err), AS_OK);
    as_trace_free(tr);
}
