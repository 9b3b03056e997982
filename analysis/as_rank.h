/* as_rank: spectra of the matrices of a trace and the ranks derived from them
 * (docs/theory.md, "Effective rank").
 *
 * For singular values s_1 >= ... >= s_r >= 0 of a matrix M:
 *   erank        exp(-sum p_i ln p_i), p_i = s_i / sum_j s_j        (Roy & Vetterli, 2007)
 *   stable_rank  ||M||_F^2 / ||M||_2^2 = sum s_i^2 / s_1^2         (Rudelson & Vershynin, 2007)
 *   r90, r99     smallest r with sum_{i<=r} s_i^2 >= 0.90 / 0.99 of sum s_i^2  (energy ranks,
 *                as Loki uses for keys: Singhania et al., 2024)
 *   rank         number of s_i > s_1 * max(rows, cols) * DBL_EPSILON  (NumPy's matrix_rank)
 * The zero matrix has erank = stable_rank = r90 = r99 = rank = 0 (no NaN).
 *
 * Matrices of a layer: keys K and values V of a kv head (N x d), queries Q of a query head
 * (T x d), the score matrix S = scale Q K^T (T x N, all N keys, no causal mask) and the
 * attention matrix A (T x N: row i is query i's softmax weights, zero on keys it may not see).
 * K, V and Q go through a streamed thin QR (TSQR: R of [R; next tile], O(N d^2), memory
 * O(tile * d)); S through the d x d product R_Q R_K^T, never formed; A through the same TSQR of
 * A^T fed with tiles of the attention pass (as_entropy), never held whole. */
#ifndef AS_RANK_H
#define AS_RANK_H

#include <stddef.h>
#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"
#include "as_tsqr.h"

typedef enum {
    AS_MAT_K = 0,
    AS_MAT_V,
    AS_MAT_Q,
    AS_MAT_SCORES,
    AS_MAT_ATTN,
    AS_MAT_COUNT
} as_matrix;

/* "k", "v", "q", "scores", "attn" (the `matrix` field of `rank` records). */
const char *as_matrix_name(as_matrix m);
/* Parse a name (also "keys", "values", "queries", "s", "a"); 0 on success, -1 otherwise. */
int as_matrix_parse(const char *s, as_matrix *m);
/* Parse a comma-separated list or "all" into a bit mask (1u << as_matrix); 0 on success. */
int as_matrix_parse_list(const char *s, unsigned *mask);

/* ---- matrices of a layer -----------------------------------------------------------------
 * Each fills info, and when sv is not NULL the singular values (room for d; T for attn),
 * and when r is not NULL the TSQR factor R (room for d * d, row-major; k rows, k returned in
 * *kr). tile: rows per chunk (0: AS_ATTN_TILE). */
as_status as_rank_kv(const as_layer *l, int64_t kvh, char which, int64_t tile,
                     as_rank_info *info, double *sv, double *r, int64_t *kr, char *err);
as_status as_rank_q(const as_layer *l, int64_t h, as_rank_info *info, double *sv, double *r,
                    int64_t *kr, char *err);
/* The score matrix scale Q_h K^T from R_Q (kq x d) and R_K (kk x d): singular values of
 * scale R_Q R_K^T (kq x kk). */
as_status as_rank_scores_from_r(const as_layer *l, const double *rq, int64_t kq, const double *rk,
                                int64_t kk, as_rank_info *info, double *sv, char *err);

/* ---- a whole layer ------------------------------------------------------------------------ */
typedef struct {
    int64_t head;   /* query head (-1: all); K/V restricted to the heads' kv heads */
    unsigned mats;  /* bit mask of as_matrix (0: all) */
    int64_t tile;   /* keys per tile (0: AS_ATTN_TILE) */
    size_t mem;     /* bytes for a block of score rows in the attention pass (0: default) */
    int want_sv;    /* keep the singular values in the records */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
} as_rank_opts;

void as_rank_opts_init(as_rank_opts *o);

typedef struct {
    as_matrix matrix;
    int64_t head;     /* query head (q, scores, attn) or kv head (k, v) */
    int64_t kv_head;
    as_rank_info info;
    double *sv;       /* info.nsv values, descending (NULL unless want_sv) */
} as_rank_rec;

/* All requested spectra of a layer: records ordered k, v (per kv head), then per query head
 * q, scores, attn. Caller frees with as_rank_recs_free. */
as_status as_rank_layer(const as_layer *l, const as_rank_opts *o, as_rank_rec **recs,
                        size_t *n_recs, char *err);
void as_rank_recs_free(as_rank_rec *r, size_t n);

#endif
