#include "as_simexp.h"

#include <gsl/gsl_eigen.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_sort_vector.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_attn.h"
#include "as_bottleneck.h"
#include "as_select.h"
#include "as_simfibre.h"
#include "as_simgen.h"
#include "as_simlp.h"
#include "as_simrng.h"
#include "as_simtheory.h"
#include "as_sparsity.h"
#include "as_spectrum.h"
#include "as_trace.h"

void as_simexp_opts_init(as_simexp_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
}

void as_simexp_table_free(as_simexp_table *t)
{
    cJSON_Delete(t->records);
    cJSON_Delete(t->summary);
    memset(t, 0, sizeof *t);
}

static void add_kind(as_simexp_table *t, const char *kind, const char *title,
                     const char *const *cols, const char *const *fmts)
{
    if (t->n_kinds >= AS_SIMEXP_MAX_KINDS) return;
    as_simexp_kind *k = &t->kinds[t->n_kinds++];
    k->kind = kind;
    k->title = title;
    k->cols = cols;
    k->fmts = fmts;
}

static cJSON *new_rec(const char *kind)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "record", kind);
    return r;
}

static void add_rec(as_simexp_table *t, cJSON *r, int ok)
{
    cJSON_AddBoolToObject(r, "ok", ok);
    if (!ok) t->failed++;
    cJSON_AddItemToArray(t->records, r);
}

/* A private temporary directory for generated traces. */
typedef struct {
    char dir[512];
    char path[600];
} tmp_trace;

static as_status tmp_open(tmp_trace *tt, const as_simexp_opts *o, char *err)
{
    const char *base = o->tmpdir ? o->tmpdir : getenv("TMPDIR");
    snprintf(tt->dir, sizeof tt->dir, "%s/attnscope-sim-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tt->dir))
        return as_err_set(err, AS_ERR_IO, "cannot create a temporary directory under %s",
                          base && *base ? base : "/tmp");
    snprintf(tt->path, sizeof tt->path, "%s/trace.safetensors", tt->dir);
    return AS_OK;
}

static void tmp_close(tmp_trace *tt)
{
    unlink(tt->path);
    rmdir(tt->dir);
}

/* Generate s into the temporary path and open it. */
static as_trace *gen_open(const as_sim_spec *s, tmp_trace *tt, as_status *st, char *err)
{
    unlink(tt->path);
    *st = as_sim_generate(s, tt->path, NULL, NULL, err);
    if (*st != AS_OK) return NULL;
    as_trace *tr = as_trace_open_status(tt->path, st, err);
    return tr;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* ================================================================== topk-mass */
static as_status exp_topk_mass(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    static const char *const cols[] = {"n", "s", "k", "k_frac", "mass_closed", "mass_measured",
                                       "abs_err", "tol", "ok", NULL};
    static const char *const fmts[] = {"%.0f", "%.2f", "%.0f", "%.4f", "%.9f", "%.9f",
                                       "%.2e", "%.0e", "%s", NULL};
    static const char *const kcols[] = {"n", "s", "p", "k_closed", "k_measured", "entropy_closed",
                                        "entropy_measured", "ok", NULL};
    static const char *const kfmts[] = {"%.0f", "%.2f", "%.2f", "%.0f", "%.0f", "%.9f",
                                        "%.9f", "%s", NULL};
    add_kind(t, "topk_mass", "Oracle top-k mass under Zipf(s): measured on generated traces vs H(k,s)/H(n,s)",
             cols, fmts);
    add_kind(t, "topk_kp", "Keys holding p of the mass and entropy: measured vs closed form", kcols,
             kfmts);
    static const int64_t ns_full[] = {1024, 16384, 65536}, ns_quick[] = {1024, 8192};
    static const double ss[] = {0.8, 1.0, 1.2, 1.5};
    const int64_t *ns = o->quick ? ns_quick : ns_full;
    const int nn = o->quick ? 2 : 3, nsv = 4;
    const double tol = 1e-9; /* F64 trace: float64 rounding only */
    tmp_trace tt;
    as_status st = tmp_open(&tt, o, err);
    if (st != AS_OK) return st;
    for (int a = 0; a < nn && st == AS_OK; a++) {
        as_sim_spec s;
        as_sim_spec_init(&s);
        s.n = ns[a];
        s.d = 8;
        s.t = 1;
        s.hq = s.hkv = nsv;
        s.rank = 2;
        s.dtype = AS_DT_F64;
        s.seed = o->seed + (uint64_t)a;
        s.n_plans = nsv;
        for (int b = 0; b < nsv; b++) {
            s.plans[b] = as_sim_head_default(AS_SIM_ZIPF);
            s.plans[b].zipf_s = ss[b];
        }
        as_trace *tr = gen_open(&s, &tt, &st, err);
        if (!tr) break;
        const as_layer *l = as_trace_layer(tr, 0);
        double *p = malloc((size_t)s.n * sizeof *p), *ov = malloc((size_t)s.d * sizeof *ov);
        if (!p || !ov) st = as_err_set(err, AS_ERR_NOMEM, "topk-mass: out of memory");
        for (int b = 0; b < nsv && st == AS_OK; b++) {
            int64_t n;
            double lse;
            st = as_attn_dense(l, b, 0, p, ov, &n, &lse, err);
            if (st != AS_OK) break;
            double hm = 0.0;
            for (int64_t j = 0; j < n; j++)
                if (p[j] > 0) hm -= p[j] * log(p[j]);
            qsort(p, (size_t)n, sizeof *p, cmp_desc);
            int64_t ks[4] = {1, n / 100 > 1 ? n / 100 : 2, n / 10, n / 2};
            double cum = 0.0;
            int64_t j = 0;
            for (int q = 0; q < 4; q++) {
                for (; j < ks[q]; j++) cum += p[j];
                double cf = as_zipf_topk_mass(ks[q], n, ss[b]);
                cJSON *r = new_rec("topk_mass");
                cJSON_AddNumberToObject(r, "n", (double)n);
                cJSON_AddNumberToObject(r, "s", ss[b]);
                cJSON_AddNumberToObject(r, "k", (double)ks[q]);
                cJSON_AddNumberToObject(r, "k_frac", (double)ks[q] / (double)n);
                cJSON_AddNumberToObject(r, "mass_closed", cf);
                cJSON_AddNumberToObject(r, "mass_measured", cum);
                cJSON_AddNumberToObject(r, "abs_err", fabs(cum - cf));
                cJSON_AddNumberToObject(r, "tol", tol);
                add_rec(t, r, fabs(cum - cf) <= tol);
            }
            /* k_p for p = 0.5, 0.9, 0.99 */
            static const double ps[] = {0.5, 0.9, 0.99};
            for (int q = 0; q < 3; q++) {
                int64_t kc = as_zipf_k_for_mass(ps[q], n, ss[b]), km = 0;
                double c2 = 0.0;
                while (km < n && c2 < ps[q]) c2 += p[km++];
                /* a count can only differ when the closed-form mass sits within rounding of p */
                int ok = kc == km || fabs(as_zipf_topk_mass(kc < km ? kc : km, n, ss[b]) - ps[q]) < 1e-12;
                double hc = as_zipf_entropy(n, ss[b]);
                cJSON *r = new_rec("topk_kp");
                cJSON_AddNumberToObject(r, "n", (double)n);
                cJSON_AddNumberToObject(r, "s", ss[b]);
                cJSON_AddNumberToObject(r, "p", ps[q]);
                cJSON_AddNumberToObject(r, "k_closed", (double)kc);
                cJSON_AddNumberToObject(r, "k_measured", (double)km);
                cJSON_AddNumberToObject(r, "entropy_closed", hc);
                cJSON_AddNumberToObject(r, "entropy_measured", hm);
                add_rec(t, r, ok && fabs(hc - hm) <= 1e-9 * (1 + hc));
            }
        }
        free(p);
        free(ov);
        as_trace_free(tr);
    }
    tmp_close(&tt);
    return st;
}

/* ================================================================== spectrum */
static as_status exp_spectrum(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    static const char *const cols[] = {"amp", "period", "exact_bin", "period_measured", "rel_err",
                                       "power_frac", "ratio2_closed", "ratio2_measured",
                                       "ratio3_closed", "ratio3_measured", "ok", NULL};
    static const char *const fmts[] = {"%.1f", "%.1f", "%s", "%.4f", "%.1e", "%.3f", "%.6f",
                                       "%.6f", "%.6f", "%.6f", "%s", NULL};
    add_kind(t, "spectrum",
             "Planted periodic heads (logit amp*cos(2 pi r/P)): recovered period and harmonic "
             "ratios vs I_k(amp)/I_1(amp)",
             cols, fmts);
    static const double periods[] = {8, 16, 24, 32, 64, 100};
    static const double amps_full[] = {1, 2, 4}, amps_quick[] = {2};
    const double *amps = o->quick ? amps_quick : amps_full;
    const int na = o->quick ? 1 : 3, np = 6;
    const double per_tol = 5e-3, ratio_tol = 2e-3;
    tmp_trace tt;
    as_status st = tmp_open(&tt, o, err);
    if (st != AS_OK) return st;
    for (int a = 0; a < na && st == AS_OK; a++) {
        as_sim_spec s;
        as_sim_spec_init(&s);
        s.n = 4096;
        s.d = 16;
        s.t = 8;
        s.causal = 1;
        s.hq = s.hkv = np;
        s.rank = 4;
        s.dtype = AS_DT_F32;
        s.seed = o->seed + 100 + (uint64_t)a;
        s.n_plans = np;
        for (int b = 0; b < np; b++) {
            s.plans[b] = as_sim_head_default(AS_SIM_PERIODIC);
            s.plans[b].period = periods[b];
            s.plans[b].amplitude = amps[a];
        }
        as_trace *tr = gen_open(&s, &tt, &st, err);
        if (!tr) break;
        const as_layer *l = as_trace_layer(tr, 0);
        as_spectrum_opts so;
        as_spectrum_opts_init(&so);
        for (int b = 0; b < np && st == AS_OK; b++) {
            as_spectrum sp;
            st = as_spectrum_head(l, b, &so, &sp, err);
            if (st != AS_OK) break;
            double P = periods[b], L = (double)sp.len;
            int exact = fmod(L, P) == 0.0;
            double pm = sp.n_peaks ? sp.peaks[0].period : NAN;
            double rel = fabs(pm - P) / P;
            cJSON *r = new_rec("spectrum");
            cJSON_AddNumberToObject(r, "amp", amps[a]);
            cJSON_AddNumberToObject(r, "period", P);
            cJSON_AddStringToObject(r, "exact_bin", exact ? "yes" : "no");
            cJSON_AddNumberToObject(r, "period_measured", pm);
            cJSON_AddNumberToObject(r, "rel_err", rel);
            cJSON_AddNumberToObject(r, "power_frac", sp.n_peaks ? sp.peaks[0].power_frac : NAN);
            int ok = rel <= per_tol;
            int iP = exact ? (int)P : 0; /* integer periods alias harmonics k >= P/2 */
            double r2c = as_bessel_harmonic_ratio(2, amps[a], iP), r3c = as_bessel_harmonic_ratio(3, amps[a], iP);
            cJSON_AddNumberToObject(r, "ratio2_closed", r2c);
            cJSON_AddNumberToObject(r, "ratio3_closed", r3c);
            if (exact) {
                int64_t k1 = (int64_t)(L / P);
                double r2 = 2 * k1 < sp.n_bins ? sp.amp[2 * k1] / sp.amp[k1] : NAN;
                double r3 = 3 * k1 < sp.n_bins ? sp.amp[3 * k1] / sp.amp[k1] : NAN;
                cJSON_AddNumberToObject(r, "ratio2_measured", r2);
                cJSON_AddNumberToObject(r, "ratio3_measured", r3);
                if (isfinite(r2)) ok = ok && fabs(r2 - r2c) <= ratio_tol * r2c + 1e-6;
                if (isfinite(r3)) ok = ok && fabs(r3 - r3c) <= ratio_tol * r3c + 1e-6;
            } else {
                cJSON_AddNullToObject(r, "ratio2_measured");
                cJSON_AddNullToObject(r, "ratio3_measured");
            }
            cJSON_AddNumberToObject(r, "period_tol", per_tol);
            cJSON_AddNumberToObject(r, "ratio_tol", ratio_tol);
            add_rec(t, r, ok);
            as_spectrum_clear(&sp);
        }
        as_trace_free(tr);
    }
    tmp_close(&tt);
    return st;
}

/* ================================================================== coverage */
static int cmp_asc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static as_status exp_coverage(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    static const char *const cols[] = {"profile", "n", "heavy", "m", "delta", "trials", "eps_pred",
                                       "fails", "fail_rate", "p_value", "q_emp", "slack", "var_closed",
                                       "var_mc", "var_z", "ok", NULL};
    static const char *const fmts[] = {"%s", "%.0f", "%.0f", "%.0f", "%.2f", "%.0f", "%.4e", "%.0f",
                                       "%.4f", "%.3f", "%.4e", "%.2f", "%.4e", "%.4e", "%+.2f", "%s", NULL};
    add_kind(t, "coverage",
             "Sampling estimator (heavy hitters + uniform sample, as_sparsity): failure rate "
             "P(err > eps(m, delta)) vs delta, and the exact sampling variance (Cochran)",
             cols, fmts);
    const long trials = o->trials > 0 ? o->trials : 10000;
    const int64_t n = o->quick ? 1024 : 4096, d = 64;
    static const char *const profs[] = {"gauss:1", "gauss:2", "zipf:1.1"};
    static const int64_t ms_full[] = {16, 64, 256}, ms_quick[] = {32};
    const int64_t *ms = o->quick ? ms_quick : ms_full;
    const int nm = o->quick ? 1 : 3;
    static const double deltas[] = {0.05, 0.01};
    as_status st = AS_OK;
    double *sc = malloc((size_t)n * sizeof *sc), *V = malloc((size_t)(n * d) * sizeof *V);
    double *a = malloc((size_t)n * sizeof *a), *ov = malloc((size_t)d * sizeof *ov);
    double *oh = malloc((size_t)d * sizeof *oh), *yb = malloc((size_t)d * sizeof *yb);
    double *yh = malloc((size_t)d * sizeof *yh), *errs = malloc((size_t)trials * sizeof *errs);
    int64_t *H = malloc((size_t)n * sizeof *H), *S = malloc((size_t)n * sizeof *S);
    char *inH = malloc((size_t)n);
    gsl_rng *r = as_sim_rng_new((unsigned long)as_sim_seed_mix(o->seed, 7, 0, 0));
    if (!sc || !V || !a || !ov || !oh || !yb || !yh || !errs || !H || !S || !inH || !r)
        st = as_err_set(err, AS_ERR_NOMEM, "coverage: out of memory");
    for (int pi = 0; pi < 3 && st == AS_OK; pi++) {
        /* scores and values of one synthetic query */
        if (pi < 2) {
            as_sim_gaussian_fill(r, pi == 0 ? 1.0 : 2.0, sc, (size_t)n);
        } else {
            as_sim_perm perm;
            as_sim_perm_init(&perm, (uint64_t)n, as_sim_seed_mix(o->seed, 7, 1, 0));
            for (int64_t j = 0; j < n; j++)
                sc[j] = -1.1 * log((double)as_sim_perm_apply(&perm, (uint64_t)j) + 1.0);
        }
        as_sim_gaussian_fill(r, 1.0, V, (size_t)(n * d));
        for (int64_t j = 0; j < n; j++) a[j] = sc[j];
        as_softmax_inplace(a, n);
        for (int64_t c = 0; c < d; c++) ov[c] = 0;
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < d; c++) ov[c] += a[j] * V[j * d + c];
        for (int mi = 0; mi < nm && st == AS_OK; mi++) {
            const int64_t m = ms[mi], nh = m; /* heavy share 1/2 of the budget k = 2m */
            if ((st = as_select_topk(sc, n, nh, H, err)) != AS_OK) break;
            as_sp_sstats ss;
            if ((st = as_sp_sampling_stats(sc, V, n, d, H, nh, &ss, err)) != AS_OK) break;
            memset(inH, 0, (size_t)n);
            for (int64_t j = 0; j < nh; j++) inH[H[j]] = 1;
            /* ybar over the rest: the exact expectation of the numerator estimator / n_rest */
            const double nr = (double)(n - nh), w = nr / (double)m;
            for (int64_t c = 0; c < d; c++) yb[c] = 0;
            for (int64_t j = 0; j < n; j++)
                if (!inH[j])
                    for (int64_t c = 0; c < d; c++) yb[c] += a[j] * (V[j * d + c] - ov[c]) / nr;
            as_rng rr;
            as_rng_seed(&rr, as_sim_seed_mix(o->seed, 7, (uint64_t)pi, (uint64_t)m));
            double vs = 0.0, vs2 = 0.0;
            for (long tr = 0; tr < trials; tr++) {
                int64_t got = as_select_sample(&rr, n, H, nh, m, S);
                as_sp_estimate(sc, V, n, d, H, nh, S, got, oh);
                double e2 = 0.0, q2 = 0.0;
                for (int64_t c = 0; c < d; c++) {
                    e2 += (oh[c] - ov[c]) * (oh[c] - ov[c]);
                    yh[c] = -nr * yb[c];
                }
                for (int64_t j = 0; j < got; j++)
                    for (int64_t c = 0; c < d; c++) yh[c] += w * a[S[j]] * (V[S[j] * d + c] - ov[c]);
                for (int64_t c = 0; c < d; c++) q2 += yh[c] * yh[c];
                errs[tr] = sqrt(e2);
                vs += q2;
                vs2 += q2 * q2;
            }
            /* Cochran: E||Yhat - E Yhat||^2 = n_r^2 var_y / m * (n_r - m) / (n_r - 1) */
            double vclosed = nr * nr * ss.var_y / (double)m * (nr - (double)m) / (nr - 1.0);
            double vmc = vs / (double)trials;
            double vsd = sqrt(fmax(vs2 / (double)trials - vmc * vmc, 0.0) / (double)trials);
            double z = vsd > 0 ? (vmc - vclosed) / vsd : 0.0;
            qsort(errs, (size_t)trials, sizeof *errs, cmp_asc);
            for (int di = 0; di < 2; di++) {
                double delta = deltas[di], eps = as_sp_sampling_eps(&ss, m, delta);
                long fails = 0;
                for (long tr = 0; tr < trials; tr++) fails += errs[tr] > eps;
                double pval = as_binom_tail(trials, fails, delta);
                long qi = (long)ceil((1.0 - delta) * (double)trials) - 1;
                double q = errs[qi < 0 ? 0 : qi];
                cJSON *rec = new_rec("coverage");
                cJSON_AddStringToObject(rec, "profile", profs[pi]);
                cJSON_AddNumberToObject(rec, "n", (double)n);
                cJSON_AddNumberToObject(rec, "heavy", (double)nh);
                cJSON_AddNumberToObject(rec, "m", (double)m);
                cJSON_AddNumberToObject(rec, "delta", delta);
                cJSON_AddNumberToObject(rec, "trials", (double)trials);
                cJSON_AddNumberToObject(rec, "eps_pred", eps);
                cJSON_AddNumberToObject(rec, "fails", (double)fails);
                cJSON_AddNumberToObject(rec, "fail_rate", (double)fails / (double)trials);
                cJSON_AddNumberToObject(rec, "p_value", pval);
                cJSON_AddNumberToObject(rec, "q_emp", q);
                cJSON_AddNumberToObject(rec, "slack", q > 0 ? eps / q : NAN);
                cJSON_AddNumberToObject(rec, "var_closed", vclosed);
                cJSON_AddNumberToObject(rec, "var_mc", vmc);
                cJSON_AddNumberToObject(rec, "var_z", z);
                /* failure rate not significantly above delta (one-sided binomial test at
                 * 0.001) and the Monte-Carlo variance within 5 standard errors */
                add_rec(t, rec, pval >= 1e-3 && fabs(z) <= 5.0);
            }
        }
    }
    if (r) gsl_rng_free(r);
    free(sc), free(V), free(a), free(ov), free(oh), free(yb), free(yh), free(errs), free(H),
        free(S), free(inH);
    return st;
}

/* ================================================================== bottleneck */
/* One random split of the rows V (n x d): can distributions on the two sides have the same
 * output? (LP feasibility; empty sides cannot.) */
static as_status split_collides(const double *V, int64_t n, int64_t d, as_rng *rr, double *A,
                                double *b, int *side, int *hit, char *err)
{
    for (int64_t i = 0; i < n; i++) side[i] = (int)(as_rng_next(rr) >> 63);
    /* identical rows (real traces repeat value vectors, e.g. layer 0 for repeated tokens):
     * on opposite sides they collide at once (one-hot distributions); on one side a copy adds
     * nothing and only makes the LP degenerate, so it is dropped */
    int64_t cnt = 0, ns = 0;
    for (int64_t i = 0; i < n; i++) {
        int dup = 0;
        for (int64_t j = 0; j < i && !dup; j++) {
            if (side[j] < 0 || memcmp(V + i * d, V + j * d, (size_t)d * sizeof *V) != 0) continue;
            if (side[j] != side[i]) {
                *hit = 1;
                return AS_OK;
            }
            dup = 1;
        }
        if (dup) {
            side[i] = -1;
            continue;
        }
        cnt++;
        ns += side[i];
    }
    if (ns == 0 || ns == cnt) { /* one side empty: nothing to compare */
        *hit = 0;
        return AS_OK;
    }
    for (int64_t i = 0, col = 0; i < n; i++) {
        if (side[i] < 0) continue;
        for (int64_t c = 0; c < d; c++) A[c * cnt + col] = side[i] ? V[i * d + c] : -V[i * d + c];
        A[d * cnt + col] = side[i] ? 1.0 : 0.0;
        A[(d + 1) * cnt + col] = side[i] ? 0.0 : 1.0;
        col++;
    }
    for (int64_t r = 0; r < d + 2; r++) b[r] = r < d ? 0.0 : 1.0;
    return as_lp_feasible(A, (int)(d + 2), (int)cnt, b, 1e-9, hit, NULL, err);
}

/* dim ker [V^T; 1^T] for n values in general position in R^d */
static int64_t collision_pred(int64_t n, int64_t d) { return n > d + 1 ? n - d - 1 : 0; }

/* The fields every bottleneck record starts with; trace rows (layer >= 0) name their head. */
static cJSON *bn_rec(const char *kind, const char *source, int layer, const char *head_key,
                     int64_t head, int64_t d, int64_t n)
{
    cJSON *r = new_rec(kind);
    cJSON_AddStringToObject(r, "source", source);
    if (layer >= 0) {
        cJSON_AddNumberToObject(r, "layer", layer);
        cJSON_AddNumberToObject(r, head_key, (double)head);
    }
    cJSON_AddNumberToObject(r, "d", (double)d);
    cJSON_AddNumberToObject(r, "n", (double)n);
    cJSON_AddNumberToObject(r, "n_over_d", (double)n / (double)d);
    return r;
}

static void cover_record(as_simexp_table *t, const char *source, int layer, int64_t head,
                         int64_t d, int64_t n, long trials, long hits)
{
    double p = as_cover_collision_prob(n, d), pm = (double)hits / (double)trials;
    double tol = 4.0 * sqrt(p * (1 - p) / (double)trials) + 1.0 / (double)trials;
    cJSON *r = bn_rec("cover", source, layer, "kv_head", head, d, n);
    cJSON_AddNumberToObject(r, "collision_dim", (double)collision_pred(n, d));
    cJSON_AddNumberToObject(r, "trials", (double)trials);
    cJSON_AddNumberToObject(r, "p_measured", pm);
    cJSON_AddNumberToObject(r, "p_cover", p);
    cJSON_AddNumberToObject(r, "tol", tol);
    /* real traces are not in general position: reported, not checked */
    add_rec(t, r, layer >= 0 ? 1 : fabs(pm - p) <= tol);
}

/* The largest TV in the fibre of a random attention output (as_simfibre.h): Gaussian V
 * (n x d), a = softmax of standard normal scores. Per (d, n) over trials: the collision
 * dimension measured (rank of [V^T; 1^T]) against n - d - 1; the exact largest TV by vertex
 * enumeration where C(n, d+1) is small; the LP witness (analysis/as_bottleneck.h); and the lower
 * bound 1 - top_r(a) that every vertex meets. Checked: collision_dim as predicted; TV = 0 when
 * the collision space is {0}; witness >= bound; exact >= witness and exact >= bound. */
#define AS_TRY_SIM(x)                                                                          \
    do {                                                                                       \
        const as_status st_ = (x);                                                             \
        if (st_ != AS_OK) return st_;                                                          \
    } while (0)

typedef struct {
    double cdim, exact, witness, bound, gap_min, ratio;
    long cdim_ok, trials, have_exact, have_witness;
    int ok;
} fibre_acc;

static as_status fibre_trial(const double *V, const double *a, int64_t n, int64_t d, int exact,
                             fibre_acc *f, char *err)
{
    int64_t rank = 0;
    AS_TRY_SIM(as_bn_value_rank(V, n, d, &rank, err));
    const int64_t cdim = n - rank, pred = collision_pred(n, d);
    const double lb = as_fibre_tv_lower(a, n, rank, 0);
    f->trials++;
    f->cdim += (double)cdim;
    f->cdim_ok += cdim == pred;
    f->bound += lb;
    double ex = NAN, w = NAN;
    if (exact) {
        AS_TRY_SIM(as_fibre_max_tv_exact(V, a, n, d, &ex, NULL, err));
        f->exact += ex;
        f->have_exact++;
        if (ex < lb - 1e-9) f->ok = 0;
        if (cdim == 0 && ex > 1e-9) f->ok = 0;
    }
    if (as_bn_have_lp()) {
        double resid = 0.0;
        AS_TRY_SIM(as_bn_witness(V, a, n, d, 0, &w, NULL, &resid, err));
        f->witness += w;
        f->have_witness++;
        f->gap_min = fmin(f->gap_min, w - lb);
        if (w < lb - 1e-9 || resid > 1e-8) f->ok = 0;
        if (cdim == 0 && w > 1e-9) f->ok = 0;
        if (exact) {
            if (w > ex + 1e-9) f->ok = 0;
            f->ratio += ex > 0 ? w / ex : 1.0;
        }
    }
    return AS_OK;
}

static void fibre_record(as_simexp_table *t, const char *source, int layer, int64_t head,
                         int64_t d, int64_t n, const fibre_acc *f)
{
    cJSON *r = bn_rec("max_tv", source, layer, "head", head, d, n);
    const double tr = (double)f->trials;
    cJSON_AddNumberToObject(r, "trials", tr);
    cJSON_AddNumberToObject(r, "collision_dim_pred", (double)collision_pred(n, d));
    cJSON_AddNumberToObject(r, "collision_dim", f->cdim / tr);
    if (f->have_exact) cJSON_AddNumberToObject(r, "tv_exact", f->exact / (double)f->have_exact);
    else cJSON_AddNullToObject(r, "tv_exact");
    if (f->have_witness) {
        cJSON_AddNumberToObject(r, "tv_witness", f->witness / (double)f->have_witness);
        cJSON_AddNumberToObject(r, "witness_minus_bound_min", f->gap_min);
    } else {
        cJSON_AddNullToObject(r, "tv_witness");
        cJSON_AddNullToObject(r, "witness_minus_bound_min");
    }
    if (f->have_exact && f->have_witness) cJSON_AddNumberToObject(r, "witness_over_exact", f->ratio / (double)f->have_exact);
    else cJSON_AddNullToObject(r, "witness_over_exact");
    cJSON_AddNumberToObject(r, "tv_bound", f->bound / tr);
    /* Gaussian V is in general position: the collision dimension is exact. A real trace's
     * values need not be (repeated tokens): there only the vertex inequalities are checked. */
    const int cdim_ok = layer >= 0 || f->cdim_ok == f->trials;
    add_rec(t, r, f->ok && cdim_ok);
}

static as_status fibre_gaussian(const as_simexp_opts *o, as_simexp_table *t, gsl_rng *g, char *err)
{
    /* (d, n = mult (d + 1)) grids: exact enumeration for d <= 4, bound + witness beyond */
    static const int64_t small_d[] = {2, 3, 4}, big_d[] = {8, 16, 32, 64};
    static const double small_m[] = {1.0, 1.5, 2.0, 3.0}, big_m[] = {1, 2, 4, 16, 64};
    const struct {
        const int64_t *ds;
        int nd;
        const double *ms;
        int nm;
        long trials;
        int exact;
    } grids[] = {
        {small_d, 3, small_m, 4, o->trials > 0 ? o->trials : (o->quick ? 10 : 50), 1},
        {big_d, o->quick ? 2 : 4, big_m, 5, o->trials > 0 ? o->trials : (o->quick ? 2 : 5), 0},
    };
    as_status st = AS_OK;
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0] && st == AS_OK; gi++)
        for (int i = 0; i < grids[gi].nd && st == AS_OK; i++) {
            const int64_t d = grids[gi].ds[i];
            int64_t last = -1;
            for (int k = 0; k < grids[gi].nm && st == AS_OK; k++) {
                int64_t n = (int64_t)lround(grids[gi].ms[k] * (double)(d + 1));
                if (n > 4096) n = 4096;
                if (n == last) continue; /* capped to the previous size */
                last = n;
                double *V = malloc((size_t)(n * d) * sizeof *V), *a = malloc((size_t)n * sizeof *a);
                if (!V || !a) st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
                fibre_acc f = {.gap_min = INFINITY, .ok = 1};
                for (long tr = 0; tr < grids[gi].trials && st == AS_OK; tr++) {
                    as_sim_gaussian_fill(g, 1.0, V, (size_t)(n * d));
                    as_sim_gaussian_fill(g, 1.0, a, (size_t)n);
                    as_softmax_inplace(a, n);
                    st = fibre_trial(V, a, n, d, grids[gi].exact, &f, err);
                }
                if (st == AS_OK) fibre_record(t, "gaussian", -1, -1, d, n, &f);
                free(V), free(a);
            }
        }
    return st;
}

/* The same on a real trace: the last decode query of each query head, over its visible keys. */
static as_status fibre_trace(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    as_status st = AS_OK;
    as_trace *tr = as_trace_open_status(o->trace, &st, err);
    if (!tr) return st;
    for (size_t li = 0; li < as_trace_n_layers(tr) && st == AS_OK; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        const int64_t d = l->d, qi = l->t - 1;
        double *p = malloc((size_t)l->n * sizeof *p), *o_ = malloc((size_t)d * sizeof *o_);
        double *V = malloc((size_t)(l->n * d) * sizeof *V);
        if (!p || !o_ || !V) st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
        const int64_t step = o->quick ? l->hq / l->hkv : 1; /* quick: one head per kv head */
        for (int64_t h = 0; h < l->hq && st == AS_OK; h += step) {
            int64_t n = 0;
            double lse = 0.0;
            st = as_attn_dense(l, h, qi, p, o_, &n, &lse, err);
            if (st != AS_OK) break;
            as_layer_read_v(l, h / (l->hq / l->hkv), 0, n, V);
            fibre_acc f = {.gap_min = INFINITY, .ok = 1};
            st = fibre_trial(V, p, n, d, 0, &f, err);
            if (st == AS_OK) fibre_record(t, "trace", l->index, h, d, n, &f);
        }
        free(p), free(o_), free(V);
    }
    as_trace_free(tr);
    return st;
}

static as_status exp_bottleneck(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    static const char *const cols[] = {"source", "layer", "kv_head", "d", "n", "n_over_d",
                                       "collision_dim", "trials", "p_measured", "p_cover", "tol",
                                       "ok", NULL};
    static const char *const fmts[] = {"%s", "%d", "%d", "%.0f", "%.0f", "%.2f", "%.0f",
                                       "%.0f", "%.3f", "%.3f", "%.3f", "%s", NULL};
    add_kind(t, "cover",
             "Same output from two distributions on a random split S|S^c of the keys (TV = 1): "
             "LP over trials vs Cover's 1 - C(n,d+1)/2^n",
             cols, fmts);
    static const char *const tcols[] = {"source", "layer", "head", "d", "n", "n_over_d", "trials",
                                        "collision_dim_pred", "collision_dim", "tv_exact",
                                        "tv_witness", "witness_over_exact", "tv_bound",
                                        "witness_minus_bound_min", "ok", NULL};
    static const char *const tfmts[] = {"%s", "%d", "%d", "%.0f", "%.0f", "%.2f", "%.0f", "%.0f",
                                        "%.1f", "%.4f", "%.4f", "%.3f", "%.4f", "%.2e", "%s", NULL};
    add_kind(t, "max_tv",
             "Largest TV between two distributions with the same output (a = softmax of N(0,1) "
             "scores): exact by vertex enumeration, LP witness, and the bound 1 - top_r(a) every "
             "vertex meets (r = n - collision_dim)",
             tcols, tfmts);
    const long trials = o->trials > 0 ? o->trials : (o->quick ? 500 : 2000);
    static const int64_t ds_full[] = {4, 8, 16, 32}, ds_quick[] = {4, 8};
    static const double mult[] = {1.0, 1.5, 2.0, 2.5, 3.0, 4.0};
    const int64_t *ds = o->quick ? ds_quick : ds_full;
    const int nd = o->quick ? 2 : 4;
    as_status st = AS_OK;
    as_rng rr;
    as_rng_seed(&rr, as_sim_seed_mix(o->seed, 11, 0, 0));
    gsl_rng *g = as_sim_rng_new((unsigned long)as_sim_seed_mix(o->seed, 11, 1, 0));
    if (!g) return as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
    for (int a = 0; a < nd && st == AS_OK; a++) {
        const int64_t d = ds[a];
        for (int k = 0; k < 6 && st == AS_OK; k++) {
            const int64_t n = (int64_t)lround(mult[k] * (double)(d + 1));
            double *V = malloc((size_t)(n * d) * sizeof *V);
            double *A = malloc((size_t)((d + 2) * n) * sizeof *A), *b = malloc((size_t)(d + 2) * sizeof *b);
            int *side = malloc((size_t)n * sizeof *side);
            if (!V || !A || !b || !side) st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
            long hits = 0;
            for (long tr = 0; tr < trials && st == AS_OK; tr++) {
                as_sim_gaussian_fill(g, 1.0, V, (size_t)(n * d));
                int hit = 0;
                st = split_collides(V, n, d, &rr, A, b, side, &hit, err);
                hits += hit;
            }
            if (st == AS_OK) cover_record(t, "gaussian", -1, -1, d, n, trials, hits);
            free(V), free(A), free(b), free(side);
        }
    }
    if (st == AS_OK) st = fibre_gaussian(o, t, g, err);
    gsl_rng_free(g);
    if (st != AS_OK || !o->trace) return st;
    st = fibre_trace(o, t, err);
    if (st != AS_OK) return st;
    /* the same on a real trace: subsets of n keys of each kv head's values */
    as_trace *tr = as_trace_open_status(o->trace, &st, err);
    if (!tr) return st;
    const long rt = o->trials > 0 ? o->trials : 300;
    for (size_t li = 0; li < as_trace_n_layers(tr) && st == AS_OK; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        const int64_t d = l->d;
        static const double rm[] = {1.0, 2.0, 3.0};
        for (int64_t h = 0; h < l->hkv && st == AS_OK; h++)
            for (int k = 0; k < 3 && st == AS_OK; k++) {
                const int64_t n = (int64_t)lround(rm[k] * (double)(d + 1));
                if (n > l->n) continue;
                double *V = malloc((size_t)(n * d) * sizeof *V);
                double *A = malloc((size_t)((d + 2) * n) * sizeof *A), *b = malloc((size_t)(d + 2) * sizeof *b);
                int64_t *idx = malloc((size_t)n * sizeof *idx);
                int *side = malloc((size_t)n * sizeof *side);
                if (!V || !A || !b || !idx || !side) st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
                long hits = 0;
                for (long trl = 0; trl < rt && st == AS_OK; trl++) {
                    as_select_sample(&rr, l->n, NULL, 0, n, idx);
                    for (int64_t i = 0; i < n; i++) as_layer_read_v(l, h, idx[i], 1, V + i * d);
                    int hit = 0;
                    st = split_collides(V, n, d, &rr, A, b, side, &hit, err);
                    hits += hit;
                }
                if (st == AS_OK) cover_record(t, "trace", l->index, h, d, n, rt, hits);
                free(V), free(A), free(b), free(idx), free(side);
            }
    }
    as_trace_free(tr);
    return st;
}

/* ================================================================== rank */
/* Singular values of a kv head's keys, largest first, by the Gram route: eigenvalues of K^T K
 * (accumulated in float64 from the trace, tiled) with GSL's symmetric eigensolver. Relative
 * accuracy ~ eps * (sv_0 / sv_i)^2, i.e. zero singular values read as ~ sqrt(eps) sv_0. This is
 * sim's own reference, independent of the analysis library's LAPACKE route. */
static as_status gram_key_sv(const as_layer *l, int64_t h, double *sv, char *err)
{
    const int64_t d = l->d, tile = 1024;
    double *K = malloc((size_t)(tile * d) * sizeof *K);
    gsl_matrix *G = gsl_matrix_calloc((size_t)d, (size_t)d);
    gsl_vector *ev = gsl_vector_alloc((size_t)d);
    gsl_eigen_symm_workspace *w = gsl_eigen_symm_alloc((size_t)d);
    as_status st = AS_OK;
    if (!K || !G || !ev || !w) st = as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
    for (int64_t j0 = 0; j0 < l->n && st == AS_OK; j0 += tile) {
        int64_t cnt = l->n - j0 < tile ? l->n - j0 : tile;
        as_layer_read_k(l, h, j0, cnt, K);
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = a; b < d; b++) {
                double acc = 0.0;
                for (int64_t j = 0; j < cnt; j++) acc += K[j * d + a] * K[j * d + b];
                *gsl_matrix_ptr(G, (size_t)a, (size_t)b) += acc;
            }
    }
    if (st == AS_OK) {
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < a; b++) gsl_matrix_set(G, (size_t)a, (size_t)b, gsl_matrix_get(G, (size_t)b, (size_t)a));
        if (gsl_eigen_symm(G, ev, w) != GSL_SUCCESS)
            st = as_err_set(err, AS_ERR_NUMERIC, "rank: eigensolver failed");
    }
    if (st == AS_OK) {
        gsl_sort_vector(ev);
        for (int64_t i = 0; i < d; i++) {
            double e = gsl_vector_get(ev, (size_t)(d - 1 - i));
            sv[i] = e > 0 ? sqrt(e) : 0.0;
        }
    }
    if (w) gsl_eigen_symm_free(w);
    if (ev) gsl_vector_free(ev);
    if (G) gsl_matrix_free(G);
    free(K);
    return st;
}

static as_status exp_rank(const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    static const char *const cols[] = {"basis", "decay", "rank", "rank_measured", "erank_closed",
                                       "erank_measured", "stable_closed", "stable_measured",
                                       "r90_closed", "r90_measured", "r99_closed", "r99_measured",
                                       "sv_max_rel_err", "sv_tol", "ok", NULL};
    static const char *const fmts[] = {"%s", "%s", "%.0f", "%.0f", "%.4f", "%.4f", "%.4f", "%.4f",
                                       "%.0f", "%.0f", "%.0f", "%.0f", "%.1e", "%.1e", "%s", NULL};
    add_kind(t, "rank_recovery",
             "Keys with planted rank and singular values sqrt(n) f(i): effective-rank measures "
             "of the generated trace vs the closed forms",
             cols, fmts);
    static const char *const decays[] = {"flat", "power:1", "exp:4"};
    static const int64_t ranks_full[] = {4, 16, 48}, ranks_quick[] = {4, 16};
    const int64_t *ranks = o->quick ? ranks_quick : ranks_full;
    const int nr = o->quick ? 2 : 3;
    const int64_t n = o->quick ? 2048 : 8192, d = 64;
    tmp_trace tt;
    as_status st = tmp_open(&tt, o, err);
    if (st != AS_OK) return st;
    for (int basis = 0; basis < 2 && st == AS_OK; basis++)
        for (int a = 0; a < 3 && st == AS_OK; a++)
            for (int b = 0; b < nr && st == AS_OK; b++) {
                as_sim_spec s;
                as_sim_spec_init(&s);
                s.n = n;
                s.d = d;
                s.t = 1;
                s.rank = ranks[b];
                s.gaussian_basis = basis;
                s.dtype = AS_DT_F64;
                s.seed = o->seed + 1000 + (uint64_t)(basis * 100 + a * 10 + b);
                if ((st = as_sim_parse_decay(decays[a], &s.decay, &s.decay_param, err)) != AS_OK) break;
                as_trace *tr = gen_open(&s, &tt, &st, err);
                if (!tr) break;
                double sv[64], planted[64];
                st = gram_key_sv(as_trace_layer(tr, 0), 0, sv, err);
                as_trace_free(tr);
                if (st != AS_OK) break;
                int64_t r = as_sim_background_sv(&s, &s.plans[0], planted);
                int64_t rm = 0;
                for (int64_t i = 0; i < d; i++) rm += sv[i] > 1e-6 * sv[0];
                /* orthogonal factor: exact up to the Gram route's rounding; Gaussian factor:
                 * sv_i(Z S) lies in [s_min(Z), s_max(Z)] sv_i(S) and s(Z) in
                 * 1 +- (sqrt(r/n) + 0.1) except with probability < exp(-n 0.1^2 / 2)
                 * (Davidson & Szarek 2001) */
                double worst = 0.0, tol = 0.0, wratio = -1.0;
                for (int64_t i = 0; i < r; i++) {
                    /* the Gram route loses (sv_0 / sv_i)^2 in relative accuracy */
                    double ti = basis ? sqrt((double)r / (double)n) + 0.1
                                      : 1e-9 + 16 * DBL_EPSILON * pow(planted[0] / planted[i], 2);
                    double e = fabs(sv[i] / planted[i] - 1.0);
                    if (e / ti > wratio) {
                        wratio = e / ti;
                        worst = e;
                        tol = ti;
                    }
                }
                as_rank_closed cc = as_rank_closed_form(planted, r), cm = as_rank_closed_form(sv, rm);
                int ok = rm == r && worst <= tol;
                if (!basis) /* exact spectra: the measures agree too (integers exactly) */
                    ok = ok && fabs(cm.erank - cc.erank) <= 1e-8 * cc.erank &&
                         fabs(cm.stable_rank - cc.stable_rank) <= 1e-8 * cc.stable_rank &&
                         cm.r90 == cc.r90 && cm.r99 == cc.r99;
                cJSON *rec = new_rec("rank_recovery");
                cJSON_AddStringToObject(rec, "basis", basis ? "gaussian" : "orthogonal");
                cJSON_AddStringToObject(rec, "decay", decays[a]);
                cJSON_AddNumberToObject(rec, "n", (double)n);
                cJSON_AddNumberToObject(rec, "d", (double)d);
                cJSON_AddNumberToObject(rec, "rank", (double)r);
                cJSON_AddNumberToObject(rec, "rank_measured", (double)rm);
                cJSON_AddNumberToObject(rec, "erank_closed", cc.erank);
                cJSON_AddNumberToObject(rec, "erank_measured", cm.erank);
                cJSON_AddNumberToObject(rec, "stable_closed", cc.stable_rank);
                cJSON_AddNumberToObject(rec, "stable_measured", cm.stable_rank);
                cJSON_AddNumberToObject(rec, "r90_closed", (double)cc.r90);
                cJSON_AddNumberToObject(rec, "r90_measured", (double)cm.r90);
                cJSON_AddNumberToObject(rec, "r99_closed", (double)cc.r99);
                cJSON_AddNumberToObject(rec, "r99_measured", (double)cm.r99);
                cJSON_AddNumberToObject(rec, "sv_max_rel_err", worst);
                cJSON_AddNumberToObject(rec, "sv_tol", tol);
                add_rec(t, rec, ok);
            }
    tmp_close(&tt);
    return st;
}

/* ================================================================== driver */
typedef as_status (*exp_fn)(const as_simexp_opts *, as_simexp_table *, char *);
static const struct {
    const char *name;
    exp_fn fn;
} experiments[] = {
    {"topk-mass", exp_topk_mass},
    {"spectrum", exp_spectrum},
    {"coverage", exp_coverage},
    {"bottleneck", exp_bottleneck},
    {"rank", exp_rank},
};
static const int n_experiments = sizeof experiments / sizeof experiments[0];

int as_simexp_known(const char *name)
{
    for (int i = 0; i < n_experiments; i++)
        if (strcmp(experiments[i].name, name) == 0) return 1;
    return 0;
}

const char *as_simexp_names(void) { return "topk-mass, rank, bottleneck, coverage, spectrum"; }

as_status as_simexp_run(const char *name, const as_simexp_opts *o, as_simexp_table *t, char *err)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < n_experiments; i++) {
        if (strcmp(experiments[i].name, name) != 0) continue;
        t->records = cJSON_CreateArray();
        as_status st = experiments[i].fn(o, t, err);
        if (st != AS_OK) as_simexp_table_free(t);
        return st;
    }
    return as_err_set(err, AS_ERR_USAGE, "unknown experiment '%s' (%s)", name, as_simexp_names());
}
