#include "as_simgen.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_safetensors.h"
#include "as_simrng.h"
#include "as_trace.h"

/* ------------------------------------------------------------------ seeds, permutation */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t as_sim_seed_mix(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);
    x ^= a * 0xd1b54a32d192ed03ull;
    h ^= splitmix64(&x);
    x ^= b * 0x8cb92ba72f3d8dd7ull;
    h ^= splitmix64(&x);
    x ^= c * 0xabc98388fb8fac03ull;
    h ^= splitmix64(&x);
    return h;
}

void as_sim_perm_init(as_sim_perm *p, uint64_t n, uint64_t seed)
{
    p->n = n;
    uint64_t bits = 2;
    while (bits < 64 && (1ull << bits) < n) bits++;
    p->half_bits = (bits + 1) / 2;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) p->key[i] = splitmix64(&x);
}

static uint64_t feistel_round(uint64_t key, uint64_t v)
{
    uint64_t z = v * 0x9e3779b97f4a7c15ull ^ key;
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 29)) * 0x94d049bb133111ebull;
    return z ^ (z >> 32);
}

uint64_t as_sim_perm_apply(const as_sim_perm *p, uint64_t x)
{
    const uint64_t hb = p->half_bits, mask = (1ull << hb) - 1;
    do { /* cycle walking: the domain 2^(2 hb) is < 4n, so a few steps on average */
        uint64_t l = x >> hb, r = x & mask;
        for (int i = 0; i < 4; i++) {
            uint64_t nl = r, nr = l ^ (feistel_round(p->key[i], r) & mask);
            l = nl;
            r = nr;
        }
        x = (l << hb) | r;
    } while (x >= p->n);
    return x;
}

/* ------------------------------------------------------------------ spec */
void as_sim_spec_init(as_sim_spec *s)
{
    memset(s, 0, sizeof *s);
    s->n = 4096;
    s->d = 64;
    s->t = 16;
    s->hq = s->hkv = 1;
    s->layers = 1;
    s->dtype = AS_DT_F32;
    s->seed = 1;
    s->decay = AS_SIM_DECAY_FLAT;
    s->key_sd = 1.0;
    s->q_noise = 1.0;
    s->v_sd = 1.0;
    s->n_plans = 1;
    s->plans[0] = as_sim_head_default(AS_SIM_NONE);
}

as_sim_head as_sim_head_default(as_sim_profile p)
{
    as_sim_head h;
    memset(&h, 0, sizeof h);
    h.profile = p;
    h.zipf_s = 1.1;
    h.needle_pos = -1;
    h.needle_gap = 10.0;
    h.sinks = 4;
    h.sink_logit = 8.0;
    h.window = 64;
    h.window_logit = 4.0;
    h.period = 32.0;
    h.amplitude = 4.0;
    h.noise = (p == AS_SIM_NEEDLE || p == AS_SIM_SINK || p == AS_SIM_WINDOW) ? 1.0 : 0.0;
    return h;
}

static const char *const profile_names[] = {"none", "zipf", "needle", "sink", "window",
                                            "periodic"};

const char *as_sim_profile_name(as_sim_profile p)
{
    return (unsigned)p < 6 ? profile_names[p] : "?";
}

static int parse_double(const char *s, double *out)
{
    char *e;
    double v = strtod(s, &e);
    if (e == s || *e || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

as_status as_sim_parse_head(const char *text, as_sim_head *out, char *err)
{
    char buf[256];
    if (strlen(text) >= sizeof buf) return as_err_set(err, AS_ERR_USAGE, "profile too long");
    strcpy(buf, text);
    char *colon = strchr(buf, ':');
    if (colon) *colon = '\0';
    int p = -1;
    for (int i = 0; i < 6; i++)
        if (strcmp(buf, profile_names[i]) == 0) p = i;
    if (p < 0)
        return as_err_set(err, AS_ERR_USAGE,
                          "unknown profile '%s' (none, zipf, needle, sink, window, periodic)", buf);
    as_sim_head h = as_sim_head_default((as_sim_profile)p);
    char *save = NULL;
    for (char *kv = colon ? strtok_r(colon + 1, ",", &save) : NULL; kv;
         kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        double v;
        if (!eq || parse_double(eq + 1, &v))
            return as_err_set(err, AS_ERR_USAGE, "profile %s: expected KEY=NUMBER, got '%s'", buf,
                              kv);
        *eq = '\0';
        const char *k = kv;
        int ok = 1;
        if (strcmp(k, "noise") == 0 && v >= 0) h.noise = v;
        else if (p == AS_SIM_ZIPF && strcmp(k, "s") == 0 && v > 0) h.zipf_s = v;
        else if (p == AS_SIM_NEEDLE && strcmp(k, "gap") == 0) h.needle_gap = v;
        else if (p == AS_SIM_NEEDLE && strcmp(k, "pos") == 0 && v >= 0 && v == floor(v))
            h.needle_pos = (int64_t)v;
        else if (p == AS_SIM_SINK && strcmp(k, "k") == 0 && v >= 1 && v == floor(v))
            h.sinks = (int64_t)v;
        else if (p == AS_SIM_SINK && strcmp(k, "logit") == 0) h.sink_logit = v;
        else if (p == AS_SIM_WINDOW && strcmp(k, "w") == 0 && v >= 1 && v == floor(v))
            h.window = (int64_t)v;
        else if (p == AS_SIM_WINDOW && strcmp(k, "logit") == 0) h.window_logit = v;
        else if (p == AS_SIM_PERIODIC && strcmp(k, "period") == 0 && v > 1) h.period = v;
        else if (p == AS_SIM_PERIODIC && strcmp(k, "amp") == 0) h.amplitude = v;
        else ok = 0;
        if (!ok)
            return as_err_set(err, AS_ERR_USAGE, "profile %s: bad parameter '%s=%s'", buf, k,
                              eq + 1);
    }
    *out = h;
    return AS_OK;
}

as_status as_sim_parse_decay(const char *text, as_sim_decay *decay, double *param, char *err)
{
    double v = 0;
    if (strcmp(text, "flat") == 0) {
        *decay = AS_SIM_DECAY_FLAT;
        *param = 0;
        return AS_OK;
    }
    if (strncmp(text, "power:", 6) == 0 && parse_double(text + 6, &v) == 0 && v >= 0) {
        *decay = AS_SIM_DECAY_POWER;
        *param = v;
        return AS_OK;
    }
    if (strncmp(text, "exp:", 4) == 0 && parse_double(text + 4, &v) == 0 && v > 0) {
        *decay = AS_SIM_DECAY_EXP;
        *param = v;
        return AS_OK;
    }
    return as_err_set(err, AS_ERR_USAGE,
                      "decay '%s': expected flat, power:ALPHA (>= 0) or exp:TAU (> 0)", text);
}

int as_sim_profile_dims(const as_sim_head *h)
{
    switch (h->profile) {
    case AS_SIM_NONE: return 0;
    case AS_SIM_PERIODIC: return h->noise > 0 ? 3 : 2;
    default: return 1;
    }
}

static int64_t spec_rank(const as_sim_spec *s) { return s->rank > 0 ? s->rank : s->d; }

as_status as_sim_spec_check(const as_sim_spec *s, char *err)
{
    if (s->n < 1 || s->d < 1 || s->t < 1 || s->hkv < 1 || s->hq < 1 || s->layers < 1)
        return as_err_set(err, AS_ERR_USAGE, "n, d, t, heads and layers must be positive");
    if (s->hq % s->hkv)
        return as_err_set(err, AS_ERR_USAGE, "query heads (%lld) must be a multiple of kv heads (%lld)",
                          (long long)s->hq, (long long)s->hkv);
    if (s->d > 8192) return as_err_set(err, AS_ERR_USAGE, "d = %lld is too large (max 8192)", (long long)s->d);
    if (s->n > (1ll << 40)) return as_err_set(err, AS_ERR_USAGE, "n is too large");
    if (s->causal && s->t > s->n)
        return as_err_set(err, AS_ERR_USAGE, "causal traces need t <= n");
    if (s->causal && s->n > INT32_MAX)
        return as_err_set(err, AS_ERR_USAGE, "causal traces store int32 positions: n too large");
    if (!as_dtype_is_float(s->dtype))
        return as_err_set(err, AS_ERR_USAGE, "dtype must be F64, F32, F16 or BF16");
    if (s->rank < 0 || s->rank > s->d || s->v_rank < 0 || s->v_rank > s->d)
        return as_err_set(err, AS_ERR_USAGE, "ranks must be in [1, d = %lld]", (long long)s->d);
    if (s->scale < 0 || !isfinite(s->scale)) return as_err_set(err, AS_ERR_USAGE, "scale must be positive");
    if (!(s->key_sd >= 0) || !(s->q_noise >= 0) || !(s->v_sd >= 0))
        return as_err_set(err, AS_ERR_USAGE, "key_sd, q_noise and v_sd must be >= 0");
    if (s->n_plans < 1 || s->n_plans > AS_SIM_MAX_PLANS)
        return as_err_set(err, AS_ERR_USAGE, "between 1 and %d head profiles", AS_SIM_MAX_PLANS);
    for (int i = 0; i < s->n_plans; i++) {
        const as_sim_head *h = &s->plans[i];
        if (as_sim_profile_dims(h) > spec_rank(s))
            return as_err_set(err, AS_ERR_USAGE, "profile %s needs rank >= %d",
                              as_sim_profile_name(h->profile), as_sim_profile_dims(h));
        if (h->profile == AS_SIM_NEEDLE && h->needle_pos >= s->n)
            return as_err_set(err, AS_ERR_USAGE, "needle position %lld is outside [0, n)",
                              (long long)h->needle_pos);
        if (h->profile == AS_SIM_NEEDLE && s->causal && h->needle_pos > s->n - s->t)
            return as_err_set(err, AS_ERR_USAGE,
                              "needle position %lld is not visible to every query (max n - t = %lld)",
                              (long long)h->needle_pos, (long long)(s->n - s->t));
        if (h->profile == AS_SIM_ZIPF && !(h->zipf_s > 0))
            return as_err_set(err, AS_ERR_USAGE, "zipf exponent must be positive");
        if (h->profile == AS_SIM_PERIODIC && !(h->period > 1))
            return as_err_set(err, AS_ERR_USAGE, "period must be > 1");
    }
    return AS_OK;
}

static double decay_f(const as_sim_spec *s, int64_t i)
{
    switch (s->decay) {
    case AS_SIM_DECAY_POWER: return pow((double)(i + 1), -s->decay_param);
    case AS_SIM_DECAY_EXP: return exp(-(double)i / s->decay_param);
    default: return 1.0;
    }
}

int64_t as_sim_background_sv(const as_sim_spec *s, const as_sim_head *h, double *sv)
{
    int64_t rb = spec_rank(s) - as_sim_profile_dims(h);
    if (rb < 0) rb = 0;
    for (int64_t i = 0; sv && i < rb; i++) sv[i] = sqrt((double)s->n) * s->key_sd * decay_f(s, i);
    return rb;
}

double as_sim_planted_logit(const as_sim_head *h, int64_t p, int64_t j)
{
    switch (h->profile) {
    case AS_SIM_NEEDLE: return j == h->needle_pos ? h->needle_gap : 0.0;
    case AS_SIM_SINK: return j < h->sinks ? h->sink_logit : 0.0;
    case AS_SIM_PERIODIC: return h->amplitude * cos(2.0 * M_PI * (double)(p - j) / h->period);
    case AS_SIM_ZIPF: return NAN;
    default: return 0.0;
    }
}

/* ------------------------------------------------------------------ generation */
/* Haar-random orthonormal frame: rows of F (d x d) from Gaussian rows, Gram-Schmidt twice. */
static void random_frame(gsl_rng *r, int64_t d, double *F)
{
    for (int64_t i = 0; i < d * d; i++) F[i] = as_sim_gaussian(r, 1.0);
    for (int64_t i = 0; i < d; i++) {
        double *fi = F + i * d;
        for (int pass = 0; pass < 2; pass++)
            for (int64_t k = 0; k < i; k++) {
                const double *fk = F + k * d;
                double dot = cblas_ddot((int)d, fi, 1, fk, 1);
                cblas_daxpy((int)d, -dot, fk, 1, fi, 1);
            }
        double nrm = cblas_dnrm2((int)d, fi, 1);
        if (nrm < 1e-300) { /* measure zero; fall back to a unit vector */
            for (int64_t c = 0; c < d; c++) fi[c] = c == i;
            nrm = 1;
        }
        cblas_dscal((int)d, 1.0 / nrm, fi, 1);
    }
}

typedef struct {
    const as_sim_spec *s;
    const as_sim_head *h;
    double scale, qn;   /* softmax scale, query norm along the profile dims */
    int pd;             /* profile dims */
    int64_t rb;         /* background rank */
    int64_t needle;     /* resolved needle position (-1: none) */
    double *frame;      /* d x d, rows u_0.. */
    double *sv;         /* rb background singular values / sqrt(n) (i.e. key_sd f(i)) */
    as_sim_perm perm;   /* zipf ranks */
    as_sim_perm rowperm;/* orthogonal basis rows */
} head_ctx;

static double query_pos(const as_sim_spec *s, int64_t t)
{
    return s->causal ? (double)(s->n - s->t + t) : (double)(s->n - 1);
}

static as_status write_f64(as_st_writer *w, as_dtype dt, const double *x, size_t count,
                           unsigned char *buf, char *err)
{
    as_dtype_from_f64(dt, x, count, buf);
    return as_st_writer_write(w, buf, count * as_dtype_size(dt), err);
}

/* Keys rows [j0, j0 + cnt) of one head: coefficients C (cnt x (pd + rb)) in the frame, then
 * K = C F[0 : pd + rb, :]. */
static void key_chunk(head_ctx *hc, gsl_rng *r, int64_t j0, int64_t cnt, double *C, double *K)
{
    const as_sim_spec *s = hc->s;
    const as_sim_head *h = hc->h;
    const int64_t m = hc->pd + hc->rb, n = s->n, d = s->d;
    const double inv = 1.0 / (hc->scale * hc->qn);
    const double sqn = sqrt((double)n);
    for (int64_t i = 0; i < cnt; i++) {
        int64_t j = j0 + i;
        double *c = C + i * m;
        double logit = 0.0, noise = h->noise > 0 ? as_sim_gaussian(r, h->noise) : 0.0;
        /* background coefficients (always drawn, so streams do not depend on the profile) */
        if (s->gaussian_basis) {
            for (int64_t b = 0; b < hc->rb; b++)
                c[hc->pd + b] = hc->sv[b] * as_sim_gaussian(r, 1.0);
        } else if (hc->rb > 0) {
            double sign = gsl_rng_uniform_int(r, 2) ? 1.0 : -1.0;
            double x = M_PI * ((double)as_sim_perm_apply(&hc->rowperm, (uint64_t)j) + 0.5) /
                       (double)n;
            double c1 = cos(x), prev = 1.0, cur = c1;
            double z0 = sign * sqrt(1.0 / (double)n), zi = sign * sqrt(2.0 / (double)n);
            c[hc->pd] = hc->sv[0] * sqn * z0;
            for (int64_t b = 1; b < hc->rb; b++) {
                c[hc->pd + b] = hc->sv[b] * sqn * zi * cur;
                double nxt = 2.0 * c1 * cur - prev;
                prev = cur;
                cur = nxt;
            }
        }
        switch (h->profile) {
        case AS_SIM_NONE: break;
        case AS_SIM_ZIPF:
            logit = -h->zipf_s * log((double)as_sim_perm_apply(&hc->perm, (uint64_t)j) + 1.0) +
                    noise;
            c[0] = logit * inv;
            break;
        case AS_SIM_NEEDLE:
            if (j == hc->needle) {
                c[0] = h->needle_gap * inv; /* exactly aligned with the query */
                for (int64_t b = 0; b < hc->rb; b++) c[hc->pd + b] = 0.0;
            } else {
                c[0] = noise * inv;
            }
            break;
        case AS_SIM_SINK: c[0] = (j < h->sinks ? h->sink_logit : noise) * inv; break;
        case AS_SIM_WINDOW:
            c[0] = (j >= n - h->window ? h->window_logit : noise) * inv;
            break;
        case AS_SIM_PERIODIC: {
            double th = 2.0 * M_PI / h->period;
            c[0] = h->amplitude * inv * cos(th * (double)j);
            c[1] = h->amplitude * inv * sin(th * (double)j);
            if (hc->pd == 3) c[2] = noise * inv;
            break;
        }
        }
    }
    if (m == 0) {
        memset(K, 0, (size_t)(cnt * d) * sizeof *K);
        return;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)cnt, (int)d, (int)m, 1.0, C,
                (int)m, hc->frame, (int)d, 0.0, K, (int)d);
}

/* Query t of a query head reading kv head hc. */
static void query_row(head_ctx *hc, gsl_rng *r, int64_t t, double *q)
{
    const as_sim_spec *s = hc->s;
    const int64_t d = s->d, used = hc->pd + hc->rb;
    for (int64_t c = 0; c < d; c++) q[c] = 0.0;
    if (hc->h->profile == AS_SIM_NONE) {
        for (int64_t c = 0; c < d; c++) q[c] = as_sim_gaussian(r, 1.0) * s->q_noise;
        return;
    }
    double coef[3] = {hc->qn, 0.0, 0.0};
    if (hc->h->profile == AS_SIM_PERIODIC) {
        double th = 2.0 * M_PI / hc->h->period, p = query_pos(s, t);
        coef[0] = hc->qn * cos(th * p);
        coef[1] = hc->qn * sin(th * p);
        coef[2] = hc->qn; /* noise dim, if any */
    }
    for (int k = 0; k < hc->pd; k++) cblas_daxpy((int)d, coef[k], hc->frame + k * d, 1, q, 1);
    for (int64_t f = used; f < d; f++) /* free dims: never seen by keys */
        cblas_daxpy((int)d, as_sim_gaussian(r, 1.0) * s->q_noise, hc->frame + f * d, 1,
                    q, 1);
}

static char *spec_json(const as_sim_spec *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)s->n);
    cJSON_AddNumberToObject(o, "d", (double)s->d);
    cJSON_AddNumberToObject(o, "t", (double)s->t);
    cJSON_AddNumberToObject(o, "hq", (double)s->hq);
    cJSON_AddNumberToObject(o, "hkv", (double)s->hkv);
    cJSON_AddNumberToObject(o, "layers", s->layers);
    cJSON_AddStringToObject(o, "dtype", as_dtype_name(s->dtype));
    cJSON_AddNumberToObject(o, "seed", (double)s->seed);
    cJSON_AddBoolToObject(o, "causal", s->causal);
    cJSON_AddNumberToObject(o, "rank", (double)spec_rank(s));
    static const char *const dn[] = {"flat", "power", "exp"};
    cJSON_AddStringToObject(o, "decay", dn[s->decay]);
    cJSON_AddNumberToObject(o, "decay_param", s->decay_param);
    cJSON_AddNumberToObject(o, "key_sd", s->key_sd);
    cJSON_AddStringToObject(o, "basis", s->gaussian_basis ? "gaussian" : "orthogonal");
    cJSON_AddNumberToObject(o, "q_noise", s->q_noise);
    cJSON_AddNumberToObject(o, "v_sd", s->v_sd);
    cJSON_AddNumberToObject(o, "v_rank", (double)(s->v_rank ? s->v_rank : s->d));
    cJSON *pl = cJSON_AddArrayToObject(o, "plans");
    for (int i = 0; i < s->n_plans; i++) {
        const as_sim_head *h = &s->plans[i];
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "profile", as_sim_profile_name(h->profile));
        switch (h->profile) {
        case AS_SIM_ZIPF: cJSON_AddNumberToObject(p, "s", h->zipf_s); break;
        case AS_SIM_NEEDLE:
            cJSON_AddNumberToObject(p, "gap", h->needle_gap);
            cJSON_AddNumberToObject(p, "pos", (double)h->needle_pos);
            break;
        case AS_SIM_SINK:
            cJSON_AddNumberToObject(p, "k", (double)h->sinks);
            cJSON_AddNumberToObject(p, "logit", h->sink_logit);
            break;
        case AS_SIM_WINDOW:
            cJSON_AddNumberToObject(p, "w", (double)h->window);
            cJSON_AddNumberToObject(p, "logit", h->window_logit);
            break;
        case AS_SIM_PERIODIC:
            cJSON_AddNumberToObject(p, "period", h->period);
            cJSON_AddNumberToObject(p, "amp", h->amplitude);
            break;
        default: break;
        }
        cJSON_AddNumberToObject(p, "noise", h->noise);
        cJSON_AddItemToArray(pl, p);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

static void head_free(head_ctx *hc)
{
    free(hc->frame);
    free(hc->sv);
    hc->frame = hc->sv = NULL;
}

static as_status head_init(head_ctx *hc, const as_sim_spec *s, int layer, int64_t kvh, char *err)
{
    memset(hc, 0, sizeof *hc);
    hc->s = s;
    hc->h = &s->plans[kvh % s->n_plans];
    hc->scale = s->scale > 0 ? s->scale : 1.0 / sqrt((double)s->d);
    hc->qn = sqrt((double)s->d);
    hc->pd = as_sim_profile_dims(hc->h);
    hc->rb = as_sim_background_sv(s, hc->h, NULL);
    hc->frame = malloc((size_t)(s->d * s->d) * sizeof(double));
    hc->sv = malloc((size_t)(hc->rb + 1) * sizeof(double));
    if (!hc->frame || !hc->sv) {
        head_free(hc);
        return as_err_set(err, AS_ERR_NOMEM, "sim: out of memory");
    }
    as_sim_background_sv(s, hc->h, hc->sv);
    for (int64_t b = 0; b < hc->rb; b++) hc->sv[b] /= sqrt((double)s->n);
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (!r) {
        head_free(hc);
        return as_err_set(err, AS_ERR_NOMEM, "sim: out of memory");
    }
    gsl_rng_set(r, (unsigned long)as_sim_seed_mix(s->seed, (uint64_t)layer, (uint64_t)kvh, 0));
    random_frame(r, s->d, hc->frame);
    hc->needle = -1;
    if (hc->h->profile == AS_SIM_NEEDLE) {
        int64_t hi = s->causal ? s->n - s->t : s->n - 1;
        hc->needle = hc->h->needle_pos >= 0 ? hc->h->needle_pos
                                            : (int64_t)gsl_rng_uniform_int(r, (unsigned long)hi + 1);
    }
    gsl_rng_free(r);
    as_sim_perm_init(&hc->perm, (uint64_t)s->n,
                     as_sim_seed_mix(s->seed, (uint64_t)layer, (uint64_t)kvh, 4));
    as_sim_perm_init(&hc->rowperm, (uint64_t)s->n,
                     as_sim_seed_mix(s->seed, (uint64_t)layer, (uint64_t)kvh, 5));
    return AS_OK;
}

as_status as_sim_generate(const as_sim_spec *s, const char *path, as_sim_progress_fn progress,
                          void *ctx, char *err)
{
    as_status st = as_sim_spec_check(s, err);
    if (st != AS_OK) return st;
    const int per = s->causal ? 4 : 3;
    const int nt = s->layers * per;
    as_st_spec *specs = calloc((size_t)nt, sizeof *specs);
    char(*names)[48] = calloc((size_t)nt, sizeof *names);
    if (!specs || !names) {
        free(specs);
        free(names);
        return as_err_set(err, AS_ERR_NOMEM, "sim: out of memory");
    }
    for (int L = 0, k = 0; L < s->layers; L++) {
        static const char *const parts[4] = {"q", "k", "v", "q_pos"};
        for (int p = 0; p < per; p++, k++) {
            snprintf(names[k], sizeof names[k], "layers.%d.%s", L, parts[p]);
            specs[k].name = names[k];
            if (p == 3) {
                specs[k].dtype = AS_DT_I32;
                specs[k].ndim = 1;
                specs[k].shape[0] = s->t;
            } else {
                specs[k].dtype = s->dtype;
                specs[k].ndim = 3;
                specs[k].shape[0] = p == 0 ? s->hq : s->hkv;
                specs[k].shape[1] = p == 0 ? s->t : s->n;
                specs[k].shape[2] = s->d;
            }
        }
    }
    char scale[64], seed[32], rank[32], *sj = spec_json(s);
    snprintf(scale, sizeof scale, "%.17g", s->scale);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed);
    snprintf(rank, sizeof rank, "%lld", (long long)spec_rank(s));
    as_meta meta[] = {{"format", AS_TRACE_FORMAT_NAME},
                      {"format_version", AS_TRACE_FORMAT_VERSION},
                      {"model", "attnscope-sim"},
                      {"rope_applied", "false"},
                      {"position_encoding", "synthetic"},
                      {"sim_seed", seed},
                      {"sim_rank", rank},
                      {"sim_spec", sj ? sj : "{}"},
                      {"scale", scale}};
    size_t nmeta = sizeof meta / sizeof meta[0] - (s->scale > 0 ? 0 : 1);
    as_st_writer *w = as_st_writer_open(path, specs, (size_t)nt, meta, nmeta, err);
    free(specs);
    free(names);
    free(sj);
    if (!w) return AS_ERR_IO;

    const int64_t d = s->d, chunk = s->chunk > 0 ? s->chunk : 4096;
    const int64_t vr = s->v_rank > 0 ? s->v_rank : d;
    double *C = malloc((size_t)(chunk * (d + 1)) * sizeof *C);
    double *X = malloc((size_t)(chunk * d) * sizeof *X);
    unsigned char *buf = malloc((size_t)(chunk * d) * 8);
    double *vframe = malloc((size_t)(d * d) * sizeof *vframe);
    head_ctx *hcs = calloc((size_t)s->hkv, sizeof *hcs);
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    st = (C && X && buf && vframe && hcs && r) ? AS_OK
                                               : as_err_set(err, AS_ERR_NOMEM, "sim: out of memory");
    const uint64_t total = (uint64_t)s->layers * (uint64_t)s->hkv * (uint64_t)s->n * 2;
    uint64_t done = 0;
    for (int L = 0; L < s->layers && st == AS_OK; L++) {
        int64_t inited = 0;
        while (inited < s->hkv && st == AS_OK)
            if ((st = head_init(&hcs[inited], s, L, inited, err)) == AS_OK) inited++;
        /* queries: [hq, t, d] */
        const int64_t group = s->hq / s->hkv;
        for (int64_t qh = 0; qh < s->hq && st == AS_OK; qh++) {
            gsl_rng_set(r, (unsigned long)as_sim_seed_mix(s->seed, (uint64_t)L, (uint64_t)qh, 3));
            for (int64_t t = 0; t < s->t && st == AS_OK; t++) {
                query_row(&hcs[qh / group], r, t, X);
                st = write_f64(w, s->dtype, X, (size_t)d, buf, err);
            }
        }
        /* keys: [hkv, n, d] */
        for (int64_t h = 0; h < s->hkv && st == AS_OK; h++) {
            gsl_rng_set(r, (unsigned long)as_sim_seed_mix(s->seed, (uint64_t)L, (uint64_t)h, 1));
            for (int64_t j0 = 0; j0 < s->n && st == AS_OK; j0 += chunk) {
                int64_t cnt = s->n - j0 < chunk ? s->n - j0 : chunk;
                key_chunk(&hcs[h], r, j0, cnt, C, X);
                st = write_f64(w, s->dtype, X, (size_t)(cnt * d), buf, err);
                done += (uint64_t)cnt;
                if (progress) progress(ctx, done, total);
            }
        }
        /* values: [hkv, n, d], Gaussian of rank vr: coefficients (sd v_sd sqrt(d / vr)) times
         * the first vr rows of a random frame (the identity when vr = d) */
        for (int64_t h = 0; h < s->hkv && st == AS_OK; h++) {
            gsl_rng_set(r, (unsigned long)as_sim_seed_mix(s->seed, (uint64_t)L, (uint64_t)h, 2));
            if (vr < d) random_frame(r, d, vframe);
            const double csd = s->v_sd * sqrt((double)d / (double)vr);
            for (int64_t j0 = 0; j0 < s->n && st == AS_OK; j0 += chunk) {
                int64_t cnt = s->n - j0 < chunk ? s->n - j0 : chunk;
                if (vr == d) {
                    for (int64_t i = 0; i < cnt * d; i++)
                        X[i] = as_sim_gaussian(r, 1.0) * s->v_sd;
                } else {
                    for (int64_t i = 0; i < cnt * vr; i++)
                        C[i] = as_sim_gaussian(r, 1.0) * csd;
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)cnt, (int)d,
                                (int)vr, 1.0, C, (int)vr, vframe, (int)d, 0.0, X, (int)d);
                }
                st = write_f64(w, s->dtype, X, (size_t)(cnt * d), buf, err);
                done += (uint64_t)cnt;
                if (progress) progress(ctx, done, total);
            }
        }
        for (int64_t t0 = 0; s->causal && st == AS_OK && t0 < s->t; t0 += chunk) {
            int64_t cnt = s->t - t0 < chunk ? s->t - t0 : chunk;
            for (int64_t t = 0; t < cnt; t++) { /* int32, little-endian */
                uint32_t pos = (uint32_t)(s->n - s->t + t0 + t);
                for (int k = 0; k < 4; k++) buf[t * 4 + k] = (unsigned char)(pos >> (8 * k));
            }
            st = as_st_writer_write(w, buf, (size_t)cnt * 4, err);
        }
        for (int64_t h = 0; h < inited; h++) head_free(&hcs[h]);
    }
    if (r) gsl_rng_free(r);
    free(C);
    free(X);
    free(buf);
    free(vframe);
    free(hcs);
    if (st != AS_OK) {
        as_st_writer_abort(w);
        return st;
    }
    return as_st_writer_finish(w, err);
}
