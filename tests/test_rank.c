/* Tests of analysis/as_rank (ranks from singular values and the streamed QR: test_tsqr.c): the
 * spectra of K/V (planted spectra from random orthogonal matrices drawn with GSL), Q, the score
 * matrix (d x d route against the formed T x N matrix) and the attention matrix (streamed
 * against the formed T x N matrix), the zero matrix, and `attnscope rank`. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_rank.h"
#include "as_testutil.h"
#include "as_trace.h"

#ifdef AS_HAVE_GSL
#include <gsl/gsl_linalg.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#endif

Test(rank_matrix, names)
{
    as_matrix m;
    unsigned mask;
    cr_assert_eq(as_matrix_parse("scores", &m), 0);
    cr_assert_eq(m, AS_MAT_SCORES);
    cr_assert_str_eq(as_matrix_name(AS_MAT_ATTN), "attn");
    cr_assert_eq(as_matrix_parse_list("k,attn", &mask), 0);
    cr_assert_eq(mask, (1u << AS_MAT_K) | (1u << AS_MAT_ATTN));
    cr_assert_eq(as_matrix_parse_list("all", &mask), 0);
    cr_assert_eq(mask, 31u);
    cr_assert_eq(as_matrix_parse_list("k,,v", &mask), -1);
    cr_assert_eq(as_matrix_parse_list("w", &mask), -1);
}

/* ---- traces ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t hkv, n, d, t, hq;
    double *k; /* [hkv][n][d] planted keys */
    uint64_t seed;
    int zero;  /* all of q, k, v zero */
} plant_ctx;

static double plant_gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    plant_ctx *c = vctx;
    if (c->zero) return 0.0;
    if (which == 'k') return c->k[(head * c->n + row) * c->d + col];
    uint64_t s = c->seed ^ ((uint64_t)which << 56) ^ ((uint64_t)head << 40) ^ ((uint64_t)row << 16) ^
                 (uint64_t)col ^ ((uint64_t)layer << 60);
    s *= 0x9E3779B97F4A7C15ull;
    return as_test_normal(&s);
}

#ifdef AS_HAVE_GSL
/* Haar-distributed orthonormal columns: QR of a Gaussian matrix with R's diagonal made
 * positive (Mezzadri, 2007). q is m x n row-major (m >= n). */
static void random_orthonormal(gsl_rng *r, int64_t m, int64_t n, double *q)
{
    gsl_matrix *a = gsl_matrix_alloc((size_t)m, (size_t)n);
    gsl_vector *tau = gsl_vector_alloc((size_t)n);
    gsl_matrix *Q = gsl_matrix_alloc((size_t)m, (size_t)m), *R = gsl_matrix_alloc((size_t)m, (size_t)n);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) gsl_matrix_set(a, (size_t)i, (size_t)j, gsl_ran_gaussian(r, 1.0));
    gsl_linalg_QR_decomp(a, tau);
    gsl_linalg_QR_unpack(a, tau, Q, R);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sg = gsl_matrix_get(R, (size_t)j, (size_t)j) < 0 ? -1.0 : 1.0;
            q[i * n + j] = sg * gsl_matrix_get(Q, (size_t)i, (size_t)j);
        }
    gsl_matrix_free(a);
    gsl_matrix_free(Q);
    gsl_matrix_free(R);
    gsl_vector_free(tau);
}
#endif

Test(rank_trace, planted_key_spectra)
{
#ifndef AS_HAVE_GSL
    cr_skip_test("needs GSL");
#else
    const int64_t hkv = 2, n = 300, d = 16, r = 10;
    plant_ctx c = {hkv, n, d, 4, 4, NULL, 99, 0};
    c.k = malloc((size_t)(hkv * n * d) * sizeof *c.k);
    double s[2][16];
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 2024);
    double *u = malloc((size_t)(n * d) * sizeof *u), *w = malloc((size_t)(d * d) * sizeof *w);
    for (int64_t g = 0; g < hkv; g++) {
        /* head 0: geometric decay, full rank; head 1: rank r (exact zeros) */
        for (int64_t i = 0; i < d; i++) s[g][i] = g == 0 ? 10.0 * pow(0.7, (double)i) : (i < r ? 3.0 + (double)(r - i) : 0.0);
        random_orthonormal(rng, n, d, u);
        random_orthonormal(rng, d, d, w);
        for (int64_t a = 0; a < n; a++)
            for (int64_t b = 0; b < d; b++) {
                double acc = 0;
                for (int64_t i = 0; i < d; i++) acc += u[a * d + i] * s[g][i] * w[b * d + i];
                c.k[(g * n + a) * d + b] = acc;
            }
    }
    gsl_rng_free(rng);
    char *path = as_test_path("r_plant.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 4, .hkv = hkv, .t = 4, .n = n, .d = d,
                             .dtype = AS_DT_F64, .gen = plant_gen, .ctx = &c};
    cr_assert_eq(as_test_write_trace(path, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    cr_assert_not_null(tr, "%s", err);
    const as_layer *l = as_trace_layer(tr, 0);
    for (int64_t g = 0; g < hkv; g++) {
        as_rank_info info, ref;
        double sv[16];
        cr_assert_eq(as_rank_kv(l, g, 'k', 64, &info, sv, NULL, NULL, err), AS_OK, "%s", err);
        for (int64_t i = 0; i < d; i++)
            cr_assert(fabs(sv[i] - s[g][i]) <= 1e-12 * s[g][0], "head %lld sv %lld: %.17g vs %.17g",
                      (long long)g, (long long)i, sv[i], s[g][i]);
        as_rank_from_sv(s[g], d, n, d, &ref);
        cr_assert_float_eq(info.erank, ref.erank, 1e-12 * ref.erank);
        cr_assert_float_eq(info.stable_rank, ref.stable_rank, 1e-12 * ref.stable_rank);
        cr_assert_eq(info.r90, ref.r90);
        cr_assert_eq(info.r99, ref.r99);
        cr_assert_eq(info.rank, g == 0 ? d : r);
        cr_assert_eq(info.rows, n);
        cr_assert_eq(info.cols, d);
    }
    as_trace_free(tr);
    free(path);
    free(u);
    free(w);
    free(c.k);
#endif
}

Test(rank_trace, zero_matrices_have_rank_zero)
{
    plant_ctx c = {1, 50, 8, 3, 2, NULL, 1, 1};
    char *path = as_test_path("r_zero.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 3, .n = 50, .d = 8,
                             .dtype = AS_DT_F32, .gen = plant_gen, .ctx = &c, .causal = 1};
    cr_assert_eq(as_test_write_trace(path, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_rank_rec *recs = NULL;
    size_t n = 0;
    cr_assert_eq(as_rank_layer(l, NULL, &recs, &n, err), AS_OK, "%s", err);
    cr_assert_eq(n, 2 + 2 * 3);
    for (size_t i = 0; i < n; i++) {
        const as_rank_info *x = &recs[i].info;
        if (recs[i].matrix == AS_MAT_ATTN) {
            /* zero scores: every row is uniform over the visible keys; A has full rank T */
            cr_assert_eq(x->rank, 3);
            cr_assert(isfinite(x->erank));
            continue;
        }
        cr_assert_eq(x->erank, 0.0, "%s", as_matrix_name(recs[i].matrix));
        cr_assert_eq(x->stable_rank, 0.0);
        cr_assert_eq(x->r90, 0);
        cr_assert_eq(x->r99, 0);
        cr_assert_eq(x->rank, 0);
    }
    as_rank_recs_free(recs, n);
    as_trace_free(tr);
    free(path);
}

/* The score and attention matrices formed whole (small N) against the streamed routes. */
Test(rank_trace, scores_and_attention_against_formed_matrices)
{
    const int64_t hq = 4, hkv = 2, t = 6, n = 900, d = 8;
    plant_ctx c = {hkv, n, d, t, hq, NULL, 7, 0};
    c.k = malloc((size_t)(hkv * n * d) * sizeof *c.k);
    uint64_t st = 3;
    for (int64_t i = 0; i < hkv * n * d; i++) c.k[i] = as_test_normal(&st);
    char *path = as_test_path("r_formed.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = hq, .hkv = hkv, .t = t, .n = n, .d = d,
                             .dtype = AS_DT_F64, .gen = plant_gen, .ctx = &c, .causal = 1};
    cr_assert_eq(as_test_write_trace(path, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(path, err);
    const as_layer *l = as_trace_layer(tr, 0);
    as_rank_opts o;
    as_rank_opts_init(&o);
    o.tile = 128;
    o.want_sv = 1;
    as_rank_rec *recs = NULL;
    size_t nr = 0;
    cr_assert_eq(as_rank_layer(l, &o, &recs, &nr, err), AS_OK, "%s", err);
    cr_assert_eq(nr, (size_t)(2 * hkv + 3 * hq));
    double *S = malloc((size_t)(t * n) * sizeof *S), *A = calloc((size_t)(t * n), sizeof *A);
    double *q = malloc((size_t)(t * d) * sizeof *q), *o_out = malloc((size_t)d * sizeof *o_out);
    double sv[8], svq[8];
    for (size_t i = 0; i < nr; i++) {
        const as_rank_rec *r = &recs[i];
        if (r->matrix == AS_MAT_K || r->matrix == AS_MAT_V) {
            cr_assert_eq(r->head, r->kv_head);
            continue;
        }
        int64_t h = r->head, g = as_layer_kv_head(l, h);
        cr_assert_eq(r->kv_head, g);
        for (int64_t qi = 0; qi < t; qi++) as_layer_read_q(l, h, qi, q + qi * d);
        if (r->matrix == AS_MAT_Q) {
            cr_assert_eq(as_svd_values(q, t, d, svq, err), AS_OK);
            for (int j = 0; j < 6; j++) cr_assert_float_eq(r->sv[j], svq[j], 1e-12 * svq[0]);
        } else if (r->matrix == AS_MAT_SCORES) {
            cr_assert_eq(as_attn_scores(l, g, q, t, n, l->scale, S, n, err), AS_OK);
            cr_assert_eq(as_svd_values(S, t, n, sv, err), AS_OK);
            cr_assert_eq(r->info.nsv, t);
            for (int j = 0; j < t; j++)
                cr_assert(fabs(r->sv[j] - sv[j]) <= 1e-12 * sv[0], "scores sv %d: %.17g vs %.17g",
                          j, r->sv[j], sv[j]);
        } else {
            memset(A, 0, (size_t)(t * n) * sizeof *A);
            for (int64_t qi = 0; qi < t; qi++) {
                int64_t nn;
                cr_assert_eq(as_attn_dense(l, h, qi, A + qi * n, o_out, &nn, NULL, err), AS_OK);
            }
            cr_assert_eq(as_svd_values(A, t, n, sv, err), AS_OK);
            for (int j = 0; j < t; j++)
                cr_assert(fabs(r->sv[j] - sv[j]) <= 1e-12 * sv[0], "attn sv %d: %.17g vs %.17g", j,
                          r->sv[j], sv[j]);
            as_rank_info ref;
            as_rank_from_sv(sv, t, t, n, &ref);
            cr_assert_float_eq(r->info.erank, ref.erank, 1e-11 * ref.erank);
        }
    }
    as_rank_recs_free(recs, nr);
    /* one head, some matrices */
    o.head = 3;
    o.mats = (1u << AS_MAT_V) | (1u << AS_MAT_ATTN);
    cr_assert_eq(as_rank_layer(l, &o, &recs, &nr, err), AS_OK);
    cr_assert_eq(nr, 2);
    cr_assert_eq(recs[0].matrix, AS_MAT_V);
    cr_assert_eq(recs[0].head, 1);
    cr_assert_eq(recs[1].matrix, AS_MAT_ATTN);
    cr_assert_eq(recs[1].head, 3);
    as_rank_recs_free(recs, nr);
    free(S);
    free(A);
    free(q);
    free(o_out);
    as_trace_free(tr);
    free(path);
    free(c.k);
}

Test(rank_cli, json_and_usage)
{
    const int64_t n = 200, d = 8;
    plant_ctx c = {1, n, d, 3, 2, NULL, 8, 0};
    c.k = malloc((size_t)(n * d) * sizeof *c.k);
    uint64_t st = 4;
    for (int64_t i = 0; i < n * d; i++) c.k[i] = as_test_normal(&st);
    char *path = as_test_path("r_cli.safetensors");
    as_test_trace_spec sp = {.n_layers = 2, .hq = 2, .hkv = 1, .t = 3, .n = n, .d = d,
                             .dtype = AS_DT_F32, .gen = plant_gen, .ctx = &c};
    cr_assert_eq(as_test_write_trace(path, &sp), 0);
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "rank %s --json --sv --quiet", path);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cJSON *doc = cJSON_Parse(out);
    cr_assert_not_null(doc);
    int counts[AS_MAT_COUNT] = {0}, layer_recs = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(doc, "records"))
    {
        const char *kind = cJSON_GetObjectItem(r, "record")->valuestring;
        if (strcmp(kind, "rank_layer") == 0) {
            layer_recs++;
            continue;
        }
        cr_assert_str_eq(kind, "rank");
        static const char *const f[] = {"layer", "head", "kv_head", "matrix", "erank",
                                        "stable_rank", "r90", "r99", "rank", "sv"};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            cr_assert_not_null(cJSON_GetObjectItem(r, f[i]), "missing %s", f[i]);
        as_matrix m;
        cr_assert_eq(as_matrix_parse(cJSON_GetObjectItem(r, "matrix")->valuestring, &m), 0);
        counts[m]++;
    }
    cr_assert_eq(counts[AS_MAT_K], 2);
    cr_assert_eq(counts[AS_MAT_V], 2);
    cr_assert_eq(counts[AS_MAT_Q], 4);
    cr_assert_eq(counts[AS_MAT_SCORES], 4);
    cr_assert_eq(counts[AS_MAT_ATTN], 4);
    cr_assert_eq(layer_recs, 2 * 5 * 8);
    cJSON_Delete(doc);
    free(out);
    snprintf(cmd, sizeof cmd, "rank %s --matrix k", path);
    cr_assert_eq(as_test_run_cli(cmd, &out), 0);
    cr_assert(strstr(out, "erank") != NULL);
    cr_assert(strstr(out, "scores") == NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "rank %s --matrix w 2>/dev/null", path);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "rank %s --head 2 2>/dev/null", path);
    cr_assert_eq(as_test_run_cli(cmd, NULL), 2);
    free(path);
    free(c.k);
}
