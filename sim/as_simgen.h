/* as_simgen: seeded, reproducible synthetic traces with planted structure (needs GSL).
 *
 * Every kv head gets a random orthonormal frame u_0..u_{d-1} of R^d (Haar, from the seed) and
 * a plan: a score profile that plants the attention logits exactly, plus a background that
 * plants the keys' rank and singular values. In that frame (docs/theory.md, "Synthetic traces"):
 *   - profile dims (u_0, u_1, u_2): carry the planted logits l_tj = scale * <q_t, k_j>;
 *       zipf     l_j = -s ln rank_j, rank = a seeded random permutation of 1..n;
 *       needle   l_j = noise_j, except the needle key, which is exactly aligned with the query
 *                (k_p = gap/(scale |q|) q/|q|, no background) and has logit `gap`;
 *       sink     l_j = logit for the first k keys, noise_j for the others;
 *       window   l_j = logit for the last w keys (before the last position), noise_j else;
 *       periodic l_tj = amp cos(2 pi (p_t - j) / period) (+ noise_j): a RoPE-like rotation of
 *                queries and keys by theta = 2 pi / period in the plane (u_0, u_1);
 *       none     queries are isotropic Gaussian (sd q_noise) and see the background;
 *   - background dims: K_bg = Z diag(sv) W^T with sv_i = sqrt(n) * key_sd * f(i), f = flat,
 *     power (i+1)^-alpha or exp(-i/tau); Z has exactly orthonormal columns (signed, permuted
 *     DCT-II basis: the planted singular values are exact) or i.i.d. Gaussian entries;
 *   - free dims (the rest): queries only (Gaussian noise, sd q_noise), never seen by keys.
 * rank(K) = rank exactly: profile dims count toward it (1 for zipf/needle/sink/window, 2 for
 * periodic, 3 for periodic with noise, 0 for none), background fills the rest.
 * Values are Gaussian (sd v_sd), optionally of rank v_rank.
 *
 * Generation streams: K and V are produced in chunks of rows and written through the atomic
 * safetensors writer, so memory is O(chunk * d + hq * t * d + hkv * d^2) whatever n is. */
#ifndef AS_SIMGEN_H
#define AS_SIMGEN_H

#include <stdint.h>

#include "as_dtype.h"
#include "as_error.h"

typedef enum {
    AS_SIM_NONE = 0,
    AS_SIM_ZIPF,
    AS_SIM_NEEDLE,
    AS_SIM_SINK,
    AS_SIM_WINDOW,
    AS_SIM_PERIODIC
} as_sim_profile;

typedef enum { AS_SIM_DECAY_FLAT = 0, AS_SIM_DECAY_POWER, AS_SIM_DECAY_EXP } as_sim_decay;

/* The plan of one kv head (and of the query heads that read it). */
typedef struct {
    as_sim_profile profile;
    double zipf_s;       /* zipf exponent s (> 0) */
    int64_t needle_pos;  /* needle position; -1: drawn from the seed in [0, n - t] */
    double needle_gap;   /* needle logit (haystack logits have mean 0, sd noise) */
    int64_t sinks;       /* sink: number of leading keys */
    double sink_logit;
    int64_t window;      /* window: number of trailing keys */
    double window_logit;
    double period;       /* periodic: period in positions (> 1) */
    double amplitude;    /* periodic: logit amplitude */
    double noise;        /* sd of per-key Gaussian logit noise (haystack) */
} as_sim_head;

#define AS_SIM_MAX_PLANS 64

typedef struct {
    int64_t n, d, t, hq, hkv;
    int layers;               /* layers 0..layers-1 */
    as_dtype dtype;           /* q/k/v dtype (F64, F32, F16, BF16) */
    uint64_t seed;
    int causal;               /* write q_pos = n - t .. n - 1 */
    double scale;             /* softmax scale; 0: 1/sqrt(d) (and no "scale" metadata) */
    int64_t rank;             /* rank of K; 0: d */
    as_sim_decay decay;
    double decay_param;       /* alpha (power) or tau (exp) */
    double key_sd;            /* background scale: sv_i = sqrt(n) key_sd f(i) */
    int gaussian_basis;       /* 1: Z Gaussian (spectrum planted in expectation only) */
    double q_noise;           /* query noise sd (free dims; all dims for profile none) */
    double v_sd;              /* value sd per coordinate */
    int64_t v_rank;           /* rank of V; 0: d */
    int n_plans;              /* kv head h uses plans[h % n_plans] (n_plans >= 1) */
    as_sim_head plans[AS_SIM_MAX_PLANS];
    int64_t chunk;            /* rows per streamed chunk; 0: 4096 */
} as_sim_spec;

/* Defaults: n 4096, d 64, t 16, hq = hkv = 1, one layer, F32, seed 1, non-causal, rank d,
 * flat spectrum, key_sd 1, orthogonal basis, q_noise 1, v_sd 1, one plan of profile none. */
void as_sim_spec_init(as_sim_spec *s);
/* A head plan with the defaults of profile p (zipf s=1.1; needle gap 10, noise 1; sink k=4,
 * logit 8, noise 1; window w=64, logit 4, noise 1; periodic period 32, amp 4, noise 0). */
as_sim_head as_sim_head_default(as_sim_profile p);

/* Parse "zipf:s=1.2", "needle:gap=8,pos=100,noise=1", "sink:k=4,logit=8", "window:w=64,logit=4",
 * "periodic:period=32,amp=4,noise=0.5", "none" into *out. */
as_status as_sim_parse_head(const char *text, as_sim_head *out, char *err);
/* Parse "flat", "power:ALPHA", "exp:TAU". */
as_status as_sim_parse_decay(const char *text, as_sim_decay *decay, double *param, char *err);
const char *as_sim_profile_name(as_sim_profile p);

/* Check a spec (sizes, ranks, parameters); AS_ERR_USAGE with a message on a bad one. */
as_status as_sim_spec_check(const as_sim_spec *s, char *err);

/* Number of profile dims of a plan (0..3); rank must be at least this. */
int as_sim_profile_dims(const as_sim_head *h);

/* Planted background singular values of kv head's keys: sv[i], i < rank - profile dims
 * (exact with the orthogonal basis). Returns the count written (sv may be NULL). */
int64_t as_sim_background_sv(const as_sim_spec *s, const as_sim_head *h, double *sv);

/* The planted logit l_tj of a query at position p and key j (no background, before noise;
 * NaN for the random-permutation zipf profile, whose ranks only the generator knows). */
double as_sim_planted_logit(const as_sim_head *h, int64_t p, int64_t j);

/* A seeded bijection of [0, n) (4-round Feistel with cycle walking): the zipf ranks and the
 * orthogonal basis's row order. */
typedef struct {
    uint64_t n, half_bits, key[4];
} as_sim_perm;
void as_sim_perm_init(as_sim_perm *p, uint64_t n, uint64_t seed);
uint64_t as_sim_perm_apply(const as_sim_perm *p, uint64_t x);

/* Write the trace to path (atomically). Metadata: format, version, model "attnscope-sim",
 * scale (when set), rope_applied "false", and sim_* keys describing the spec (sim_spec: JSON).
 * progress (may be NULL) is called with (done, total) rows now and then. */
typedef void (*as_sim_progress_fn)(void *ctx, uint64_t done, uint64_t total);
as_status as_sim_generate(const as_sim_spec *s, const char *path, as_sim_progress_fn progress,
                          void *ctx, char *err);

/* Mixing of a seed with stream ids (splitmix64), used to derive GSL seeds. */
uint64_t as_sim_seed_mix(uint64_t seed, uint64_t a, uint64_t b, uint64_t c);

#endif
