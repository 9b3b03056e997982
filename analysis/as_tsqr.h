/* as_tsqr: the spectrum of a matrix streamed by rows, and the ranks derived from singular
 * values (docs/theory.md, "Effective rank"). Used by as_rank (K, V, Q, scores) and by
 * as_entropy (the attention matrix, fed with tiles of its pass), so neither imports the other.
 *
 * For singular values s_1 >= ... >= s_r >= 0 of a matrix M:
 *   erank        exp(-sum p_i ln p_i), p_i = s_i / sum_j s_j        (Roy & Vetterli, 2007)
 *   stable_rank  ||M||_F^2 / ||M||_2^2 = sum s_i^2 / s_1^2         (Rudelson & Vershynin, 2007)
 *   r90, r99     smallest r with sum_{i<=r} s_i^2 >= 0.90 / 0.99 of sum s_i^2  (energy ranks)
 *   rank         number of s_i > s_1 * max(rows, cols) * DBL_EPSILON  (NumPy's matrix_rank)
 * The zero matrix has erank = stable_rank = r90 = r99 = rank = 0 (no NaN). */
#ifndef AS_TSQR_H
#define AS_TSQR_H

#include <stdint.h>

#include "as_error.h"

typedef struct {
    int64_t rows, cols; /* shape of M */
    int64_t nsv;        /* singular values computed: min(rows, cols) */
    double erank;
    double stable_rank;
    int64_t r90, r99;
    int64_t rank;       /* numerical rank */
    double s_max;       /* ||M||_2 */
    double fro;         /* ||M||_F */
} as_rank_info;

/* Ranks from singular values sv[0..r) (nonnegative, any order) of a rows x cols matrix. */
void as_rank_from_sv(const double *sv, int64_t r, int64_t rows, int64_t cols, as_rank_info *out);

/* Singular values (descending, min(m, n) of them) of an m x n row-major matrix (LAPACK dgesdd,
 * values only). */
as_status as_svd_values(const double *a, int64_t m, int64_t n, double *sv, char *err);

/* ---- streamed thin QR (TSQR) ------------------------------------------------------------
 * Rows arrive in chunks; the factor R (k x cols, k = min(rows so far, cols), upper
 * trapezoidal) is kept, and each chunk is folded in by a Householder QR of [R; chunk]
 * (LAPACK dgeqrt). M = Q R with Q orthonormal columns, so M and R share singular values. */
typedef struct as_tsqr as_tsqr;

/* cols: columns of M; chunk: the most rows one add call folds at once (larger calls are split). */
as_tsqr *as_tsqr_new(int64_t cols, int64_t chunk, char *err);
void as_tsqr_free(as_tsqr *q);
/* Append count rows, row-major with leading dimension ld (>= cols). */
as_status as_tsqr_add_rows(as_tsqr *q, const double *rows, int64_t count, int64_t ld, char *err);
/* Append count rows given by columns: column c of the new rows is data[c * ldc + i], i < count
 * (i.e. the transpose of a row-major cols x count block). */
as_status as_tsqr_add_cols(as_tsqr *q, const double *data, int64_t count, int64_t ldc, char *err);
/* Multiply column c of everything added so far by f[c] (M <- M diag(f); R <- R diag(f)). */
void as_tsqr_scale_cols(as_tsqr *q, const double *f);
int64_t as_tsqr_rows(const as_tsqr *q);
int64_t as_tsqr_cols(const as_tsqr *q);
/* Copy R (k x cols, row-major, zeros below the diagonal) into r; returns k. */
int64_t as_tsqr_r(const as_tsqr *q, double *r);
/* Singular values of the rows added so far (descending; min(rows, cols) of them) into sv. */
as_status as_tsqr_sv(const as_tsqr *q, double *sv, int64_t *nsv, char *err);

#endif
