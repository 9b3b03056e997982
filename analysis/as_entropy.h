/* as_entropy: the entropy and top-k mass of each decode query's attention, on traces of any
 * size (docs/theory.md, "Attention entropy and top-k mass").
 *
 * For one query with scaled scores s over its n visible keys and a = softmax(s):
 *   entropy_nats  H = -sum a_i ln a_i, computed as ln Z - sum w_i (s_i - m) / Z with
 *                 w_i = exp(s_i - m), m = max s, Z = sum w_i: two nonnegative terms, so no
 *                 cancellation, and all-equal scores give exactly ln n;
 *   entropy_bits  H / ln 2;   entropy_norm  H / ln n (0 when n = 1);   eff_support  exp(H);
 *   k50, k90, k99 the smallest k whose k largest weights hold 50% / 90% / 99% of the mass,
 *                 with k*_frac = k / n.
 *
 * The layer routine never holds T x N: per kv-head group it streams key tiles (scores by
 * dgemm), keeps per query a running max, Z and sum w (s - m) (rescaled when the max grows) and a
 * histogram of the scores on a fixed grid of 1/64 nat (count and mass per bin). The bins where
 * the cumulative mass crosses 50/90/99% are then resolved exactly by a second pass that gathers
 * only those bins' scores and sorts them (a crowded bin is first split by a finer histogram,
 * one more pass per level). Memory: a block of score rows x one tile plus the histograms and
 * a bounded gather, independent of N. On request the same pass feeds tiles of the attention matrix A
 * to a streamed QR for A's spectrum (as_tsqr). */
#ifndef AS_ENTROPY_H
#define AS_ENTROPY_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_tsqr.h"
#include "as_trace.h"

typedef struct {
    int64_t n;              /* visible keys (0: not computed) */
    double lse;             /* log sum exp of the scaled scores */
    double entropy_nats, entropy_bits, entropy_norm, eff_support;
    int64_t k50, k90, k99;  /* -1 when top-k was not asked for */
    double k50_frac, k90_frac, k99_frac;
} as_entropy_q;

/* Thresholds of the top-k mass curve. */
#define AS_ENTROPY_NTHR 3
extern const double as_entropy_thresholds[AS_ENTROPY_NTHR]; /* 0.50, 0.90, 0.99 */

/* One query from its scores s[0..n) (any shift; n >= 1), by a full sort: the simple reference
 * the streaming routine is tested against. topk = 0 skips k50/k90/k99. */
as_status as_entropy_of_scores(const double *s, int64_t n, int topk, as_entropy_q *out,
                               char *err);

/* Top-k mass of one query: *mass = the sum of the k largest softmax weights of s[0..n) (any
 * shift; n >= 1, 0 <= k; k >= n gives 1). The k50/k90/k99 above are the smallest k whose mass
 * reaches 0.50/0.90/0.99. */
as_status as_entropy_topk_mass(const double *s, int64_t n, int64_t k, double *mass, char *err);

typedef struct {
    int64_t head;   /* query head (-1: all) */
    int topk;       /* compute k50/k90/k99 (the exact second pass); default 1 */
    int entropy;    /* compute the entropies (default 1; 0 with attn_sv: only A's spectrum) */
    int attn_sv;    /* accumulate the spectrum of the attention matrix A of each head */
    int64_t tile;   /* keys per tile (0: AS_ATTN_TILE) */
    size_t mem;     /* bytes for a block of score rows and histograms (0: 256 MiB) */
    int64_t gather_cap; /* scores one threshold of one query may gather to sort before the
                           exact top-k refines its interval by another pass (0: from mem) */
    void (*progress)(void *ctx, uint64_t done, uint64_t total); /* units: rows x tiles */
    void *ctx;
} as_entropy_opts;

void as_entropy_opts_init(as_entropy_opts *o);

typedef struct {
    int64_t hq, t;
    as_entropy_q *q;     /* [hq * t], query qi of head h at h * t + qi (n = 0: not computed) */
    as_rank_info *attn;  /* [hq] spectrum of A per head (attn_sv), else NULL */
    double *attn_sv;     /* [hq * t] singular values of A, descending, or NULL */
} as_entropy_layer_res;

/* Entropy (and top-k mass, and A's spectrum) of every query of the selected heads of a layer. */
as_status as_entropy_layer(const as_layer *l, const as_entropy_opts *o, as_entropy_layer_res *res,
                           char *err);
void as_entropy_layer_res_free(as_entropy_layer_res *res);

#endif
