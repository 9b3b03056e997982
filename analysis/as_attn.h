/* as_attn: the attention of decode queries over a trace's KV cache, in float64, tiled over N.
 *
 * a = softmax(scale * K q) over the keys a query may see (as_layer_visible), o = V^T a.
 * K and V are read from the (memory-mapped) trace tile by tile and converted to double on the
 * fly, so memory stays O(tile * d + n) per query whatever the trace's size. */
#ifndef AS_ATTN_H
#define AS_ATTN_H

#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

#define AS_ATTN_TILE 4096 /* keys converted per tile */

/* Scores S[r][j] = scale * <Q_r, k_j> for m query rows Q (m x d, row-major doubles) against
 * keys j in [0, n) of kv head kvh; S is m x lds row-major (lds >= n). Uses dgemm per tile. */
as_status as_attn_scores(const as_layer *l, int64_t kvh, const double *Q, int64_t m, int64_t n,
                         double scale, double *S, int64_t lds, char *err);

/* Stable softmax of s[0..n) in place; returns log(sum exp(s)) of the input (n >= 1). */
double as_softmax_inplace(double *s, int64_t n);

/* One row of a block of scores: p[0..n) = softmax(sc[0..n)) and p[n..nm) = 0; returns the
 * log-sum-exp, and in *lam max_i |sc_i| + |lse|, the size of the exponents' arguments (the
 * scale of the rounding that the sparsity checks' tolerances follow). */
double as_softmax_row(const double *sc, double *p, int64_t n, int64_t nm, double *lam);

/* o = sum_j p[j] v_j over j in [0, n) of kv head kvh (d outputs), tiled. */
as_status as_attn_output(const as_layer *l, int64_t kvh, const double *p, int64_t n, double *o,
                         char *err);

/* Dense attention of query qi of query head h: p[0..n) (caller gives room for l->n doubles),
 * o[0..d), *n_out = visible keys, *lse = log-sum-exp of the scaled scores. p may not be NULL. */
as_status as_attn_dense(const as_layer *l, int64_t h, int64_t qi, double *p, double *o,
                        int64_t *n_out, double *lse, char *err);

#endif
