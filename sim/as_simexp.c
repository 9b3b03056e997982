#include "as_simexp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_attn.h"
#include "as_simgen.h"
#include "as_simtheory.h"
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

/* ================================================================== driver */
typedef as_status (*exp_fn)(const as_simexp_opts *, as_simexp_table *, char *);
static const struct {
    const char *name;
    exp_fn fn;
} experiments[] = {
    {"topk-mass", exp_topk_mass},
    {"spectrum", exp_spectrum},
};
static const int n_experiments = sizeof experiments / sizeof experiments[0];

int as_simexp_known(const char *name)
{
    for (int i = 0; i < n_experiments; i++)
        if (strcmp(experiments[i].name, name) == 0) return 1;
    return 0;
}

const char *as_simexp_names(void) { return "topk-mass, spectrum"; }

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
