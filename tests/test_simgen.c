/* Tests of sim/as_simgen: reproducibility, streaming, and that every planted quantity is in the
 * written trace exactly (spectrum, rank, logits of each profile, positions, GQA). */
#include <criterion/criterion.h>
#include <gsl/gsl_eigen.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_sort_vector.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_simgen.h"
#include "as_testutil.h"
#include "as_trace.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static char *gen(const as_sim_spec *s, const char *name)
{
    char *p = as_test_path(name), err[AS_ERR_LEN];
    as_status st = as_sim_generate(s, p, NULL, NULL, err);
    cr_assert_eq(st, AS_OK, "%s", err);
    return p;
}

static as_trace *open_ok(const char *p)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    return tr;
}

/* Scaled scores of query qi of head h against all visible keys (caller frees). */
static double *scores(const as_layer *l, int64_t h, int64_t qi, int64_t *n)
{
    double *q = malloc((size_t)l->d * sizeof *q), *s = malloc((size_t)l->n * sizeof *s);
    char err[AS_ERR_LEN];
    as_layer_read_q(l, h, qi, q);
    *n = as_layer_visible(l, qi);
    cr_assert_eq(as_attn_scores(l, as_layer_kv_head(l, h), q, 1, *n, l->scale, s, *n, err), AS_OK);
    free(q);
    return s;
}

Test(simgen, reproducible_and_chunk_independent)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 1000;
    s.d = 24;
    s.hq = 4;
    s.hkv = 2;
    s.rank = 10;
    s.decay = AS_SIM_DECAY_EXP;
    s.decay_param = 3;
    s.n_plans = 2;
    s.plans[0] = as_sim_head_default(AS_SIM_ZIPF);
    s.plans[1] = as_sim_head_default(AS_SIM_NEEDLE);
    s.seed = 5;
    char *a = gen(&s, "a.safetensors");
    s.chunk = 37; /* a chunk size that does not divide n */
    char *b = gen(&s, "b.safetensors");
    s.chunk = 0;
    s.seed = 6;
    char *c = gen(&s, "c.safetensors");
    size_t la, lb, lc;
    char *A = slurp(a, &la), *B = slurp(b, &lb), *C = slurp(c, &lc);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(A, B, la), 0, "same seed, different chunking: bytes differ");
    cr_assert(la != lc || memcmp(A, C, la) != 0, "another seed gives the same trace");
    free(A), free(B), free(C), free(a), free(b), free(c);
}

Test(simgen, permutation_is_a_bijection)
{
    static const uint64_t ns[] = {1, 2, 3, 1000, 1024, 4099};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        as_sim_perm p;
        as_sim_perm_init(&p, ns[k], 99 + k);
        char *seen = calloc(ns[k], 1);
        for (uint64_t x = 0; x < ns[k]; x++) {
            uint64_t y = as_sim_perm_apply(&p, x);
            cr_assert_lt(y, ns[k]);
            cr_assert_eq(seen[y], 0, "n=%llu: %llu hit twice", (unsigned long long)ns[k],
                         (unsigned long long)y);
            seen[y] = 1;
        }
        free(seen);
    }
}

/* Singular values of K (kv head h) from the eigenvalues of K^T K (d x d). */
static void key_singular_values(const as_layer *l, int64_t h, double *sv)
{
    const int64_t n = l->n, d = l->d;
    double *K = malloc((size_t)(n * d) * sizeof *K);
    as_layer_read_k(l, h, 0, n, K);
    gsl_matrix *G = gsl_matrix_calloc((size_t)d, (size_t)d);
    for (int64_t j = 0; j < n; j++)
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++)
                *gsl_matrix_ptr(G, (size_t)a, (size_t)b) += K[j * d + a] * K[j * d + b];
    gsl_vector *ev = gsl_vector_alloc((size_t)d);
    gsl_eigen_symm_workspace *w = gsl_eigen_symm_alloc((size_t)d);
    gsl_eigen_symm(G, ev, w);
    gsl_sort_vector(ev);
    for (int64_t i = 0; i < d; i++) {
        double e = gsl_vector_get(ev, (size_t)(d - 1 - i));
        sv[i] = e > 0 ? sqrt(e) : 0.0;
    }
    gsl_eigen_symm_free(w);
    gsl_vector_free(ev);
    gsl_matrix_free(G);
    free(K);
}

Test(simgen, planted_spectrum_and_rank_are_exact)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 2048;
    s.d = 32;
    s.rank = 8;
    s.decay = AS_SIM_DECAY_POWER;
    s.decay_param = 1.0;
    s.key_sd = 0.5;
    s.dtype = AS_DT_F64;
    char *p = gen(&s, "spec.safetensors");
    as_trace *tr = open_ok(p);
    double sv[32], want[32];
    key_singular_values(as_trace_layer(tr, 0), 0, sv);
    cr_assert_eq(as_sim_background_sv(&s, &s.plans[0], want), 8);
    for (int i = 0; i < 8; i++) /* sqrt(n) key_sd (i+1)^-1 */
        cr_assert_float_eq(sv[i], sqrt(2048.0) * 0.5 / (i + 1), 1e-9 * sv[0], "sv[%d] = %g, want %g",
                           i, sv[i], want[i]);
    for (int i = 8; i < 32; i++) cr_assert_lt(sv[i], 1e-6 * sv[0], "sv[%d] = %g not zero", i, sv[i]); /* Gram route: sqrt(eps) */
    as_trace_free(tr);
    free(p);
}

Test(simgen, gaussian_basis_spectrum_in_expectation)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 8192;
    s.d = 16;
    s.rank = 4;
    s.gaussian_basis = 1;
    s.dtype = AS_DT_F64;
    char *p = gen(&s, "gauss.safetensors");
    as_trace *tr = open_ok(p);
    double sv[16];
    key_singular_values(as_trace_layer(tr, 0), 0, sv);
    /* flat: sv_i ~ sqrt(n) (1 +- O(sqrt(r/n))): within 5% at n = 8192, r = 4 */
    for (int i = 0; i < 4; i++) cr_assert_float_eq(sv[i] / sqrt(8192.0), 1.0, 0.05);
    cr_assert_lt(sv[4], 1e-6 * sv[0]);
    as_trace_free(tr);
    free(p);
}

Test(simgen, zipf_logits_are_a_permutation_of_the_profile)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 3000;
    s.d = 16;
    s.t = 2;
    s.rank = 5;
    s.dtype = AS_DT_F64;
    s.plans[0] = as_sim_head_default(AS_SIM_ZIPF);
    s.plans[0].zipf_s = 1.3;
    char *p = gen(&s, "zipf.safetensors");
    as_trace *tr = open_ok(p);
    int64_t n;
    double *sc = scores(as_trace_layer(tr, 0), 0, 1, &n);
    cr_assert_eq(n, 3000);
    char *seen = calloc(3001, 1);
    for (int64_t j = 0; j < n; j++) {
        double r = exp(-sc[j] / 1.3); /* rank */
        long ri = lround(r);
        cr_assert(ri >= 1 && ri <= 3000 && fabs(r - (double)ri) < 1e-6 * r, "logit %g", sc[j]);
        cr_assert_eq(seen[ri], 0);
        seen[ri] = 1;
    }
    free(seen);
    free(sc);
    as_trace_free(tr);
    free(p);
}

Test(simgen, needle_is_aligned_and_has_its_gap)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 4096;
    s.d = 32;
    s.rank = 12;
    s.dtype = AS_DT_F64;
    s.causal = 1;
    s.plans[0] = as_sim_head_default(AS_SIM_NEEDLE);
    s.plans[0].needle_pos = 1234;
    s.plans[0].needle_gap = 9.0;
    char *p = gen(&s, "needle.safetensors");
    as_trace *tr = open_ok(p);
    const as_layer *l = as_trace_layer(tr, 0);
    cr_assert(as_layer_is_causal(l));
    cr_assert_eq(as_layer_q_position(l, 0), 4096 - 16);
    for (int64_t t = 0; t < l->t; t += 5) {
        int64_t n;
        double *sc = scores(l, 0, t, &n);
        cr_assert_eq(n, 4096 - 16 + t + 1);
        cr_assert_float_eq(sc[1234], 9.0, 1e-10);
        double m = 0, v = 0;
        for (int64_t j = 0; j < n; j++)
            if (j != 1234) m += sc[j];
        m /= (double)(n - 1);
        for (int64_t j = 0; j < n; j++)
            if (j != 1234) v += (sc[j] - m) * (sc[j] - m);
        v /= (double)(n - 2);
        cr_assert_lt(fabs(m), 0.1); /* haystack: N(0, 1) logits */
        cr_assert_float_eq(sqrt(v), 1.0, 0.05);
        free(sc);
    }
    /* the needle key is parallel to every query's score direction: cos = 1 */
    double k[32], q[32], kq = 0, kk = 0, qq = 0;
    as_layer_read_k(l, 0, 1234, 1, k);
    as_layer_read_q(l, 0, 0, q);
    /* queries may have noise in free dims keys never see; compare k with q projected */
    for (int c = 0; c < 32; c++) kk += k[c] * k[c];
    for (int c = 0; c < 32; c++) kq += k[c] * q[c];
    double proj[32];
    for (int c = 0; c < 32; c++) proj[c] = kq / kk * k[c];
    for (int c = 0; c < 32; c++) qq += proj[c] * proj[c];
    cr_assert_float_eq(kq / sqrt(kk * qq), 1.0, 1e-12);
    as_trace_free(tr);
    free(p);
}

Test(simgen, sink_window_and_periodic_logits)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 1000;
    s.d = 16;
    s.t = 4;
    s.hq = 6;
    s.hkv = 3; /* GQA: query heads 2k, 2k+1 read kv head k */
    s.rank = 6;
    s.causal = 1;
    s.dtype = AS_DT_F64;
    s.n_plans = 3;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_sim_parse_head("sink:k=3,logit=7,noise=0", &s.plans[0], err), AS_OK, "%s", err);
    cr_assert_eq(as_sim_parse_head("window:w=10,logit=5,noise=0", &s.plans[1], err), AS_OK);
    cr_assert_eq(as_sim_parse_head("periodic:period=12.5,amp=3", &s.plans[2], err), AS_OK);
    char *p = gen(&s, "mix.safetensors");
    as_trace *tr = open_ok(p);
    const as_layer *l = as_trace_layer(tr, 0);
    for (int64_t h = 0; h < 6; h++) {
        int64_t n;
        double *sc = scores(l, h, 3, &n);
        int64_t pos = as_layer_q_position(l, 3);
        for (int64_t j = 0; j < n; j++) {
            double want = h < 2 ? (j < 3 ? 7.0 : 0.0)
                          : h < 4 ? (j >= 1000 - 10 ? 5.0 : 0.0)
                                  : 3.0 * cos(2 * M_PI * (double)(pos - j) / 12.5);
            cr_assert_float_eq(sc[j], want, 1e-10, "head %lld key %lld: %g want %g", (long long)h,
                               (long long)j, sc[j], want);
            if (h >= 4) cr_assert_float_eq(as_sim_planted_logit(&s.plans[2], pos, j), want, 1e-12);
        }
        free(sc);
    }
    as_trace_free(tr);
    free(p);
}

Test(simgen, dtypes_scale_and_metadata)
{
    as_sim_spec s;
    as_sim_spec_init(&s);
    s.n = 300;
    s.d = 8;
    s.layers = 2;
    s.dtype = AS_DT_BF16;
    s.scale = 0.25;
    char *p = gen(&s, "bf16.safetensors");
    as_trace *tr = open_ok(p);
    cr_assert_eq(as_trace_n_layers(tr), 2);
    cr_assert_eq(as_trace_layer(tr, 1)->k->dtype, AS_DT_BF16);
    cr_assert_float_eq(as_trace_layer(tr, 0)->scale, 0.25, 1e-15);
    cr_assert_str_eq(as_trace_model(tr), "attnscope-sim");
    cr_assert_not_null(as_trace_meta(tr, "sim_spec"));
    cr_assert_eq(as_trace_rope_applied(tr), 0);
    char e2[AS_ERR_LEN];
    cr_assert_eq(as_trace_check_finite(tr, e2), AS_OK);
    as_trace_free(tr);
    free(p);
}

Test(simgen, bad_specs_are_refused)
{
    as_sim_spec s;
    char err[AS_ERR_LEN];
    as_sim_spec_init(&s);
    s.hq = 3;
    s.hkv = 2;
    cr_assert_eq(as_sim_spec_check(&s, err), AS_ERR_USAGE);
    as_sim_spec_init(&s);
    s.rank = 1;
    s.plans[0] = as_sim_head_default(AS_SIM_PERIODIC); /* needs 2 dims */
    cr_assert_eq(as_sim_spec_check(&s, err), AS_ERR_USAGE);
    as_sim_spec_init(&s);
    s.plans[0] = as_sim_head_default(AS_SIM_NEEDLE);
    s.plans[0].needle_pos = s.n;
    cr_assert_eq(as_sim_spec_check(&s, err), AS_ERR_USAGE);
    as_sim_spec_init(&s);
    s.causal = 1;
    s.t = s.n + 1;
    cr_assert_eq(as_sim_spec_check(&s, err), AS_ERR_USAGE);
    as_sim_head h;
    cr_assert_eq(as_sim_parse_head("spiral", &h, err), AS_ERR_USAGE);
    cr_assert_eq(as_sim_parse_head("zipf:s=-1", &h, err), AS_ERR_USAGE);
    cr_assert_eq(as_sim_parse_head("zipf:gap=3", &h, err), AS_ERR_USAGE);
    cr_assert_eq(as_sim_parse_head("needle:pos", &h, err), AS_ERR_USAGE);
    as_sim_decay dc;
    double dp;
    cr_assert_eq(as_sim_parse_decay("power:-1", &dc, &dp, err), AS_ERR_USAGE);
    cr_assert_eq(as_sim_parse_decay("exp:2", &dc, &dp, err), AS_OK);
    cr_assert_eq(dc, AS_SIM_DECAY_EXP);
}

Test(simgen, cli_gen)
{
    char *p = as_test_path("cli.safetensors"), args[1024], *out = NULL;
    snprintf(args, sizeof args,
             "sim gen -o '%s' --n 2k --d 16 --heads 4 --kv-heads 2 --t 3 --causal --rank 6 "
             "--decay power:0.5 --profile zipf:s=1.2 --profile periodic:period=10 --dtype F16 "
             "--json --quiet",
             p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert_not_null(strstr(out, "\"record\":\t\"sim_gen\""), "%s", out);
    free(out);
    as_trace *tr = open_ok(p);
    const as_layer *l = as_trace_layer(tr, 0);
    cr_assert_eq(l->n, 2048);
    cr_assert_eq(l->hq, 4);
    cr_assert_eq(l->hkv, 2);
    cr_assert_eq(l->k->dtype, AS_DT_F16);
    as_trace_free(tr);
    snprintf(args, sizeof args, "sim gen --n 10 2>/dev/null");
    cr_assert_eq(as_test_run_cli(args, NULL), 2); /* no -o */
    snprintf(args, sizeof args, "sim gen -o '%s' --profile spiral 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sim gen -o '%s' --n -5 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sim gen -o /nonexistent-dir/x.safetensors --n 10 2>/dev/null");
    cr_assert_neq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sim nonsense 2>/dev/null");
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    free(p);
}
