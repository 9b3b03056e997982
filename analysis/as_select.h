/* as_select: small building blocks for choosing keys — a seeded PRNG, exact top-k selection,
 * uniform sampling without replacement, and sorted-set helpers.
 *
 * The PRNG is xoshiro256** (Blackman & Vigna, "Scrambled linear pseudorandom number
 * generators", ACM TOMS 2021) seeded through splitmix64; a few lines, no library, so the
 * analysis library and the CLI need no GSL. Everything here is deterministic given a seed.
 * Other modules (entropy's top-k mass curves, the GPU references) may reuse these. */
#ifndef AS_SELECT_H
#define AS_SELECT_H

#include <stdint.h>

#include "as_error.h"

typedef struct {
    uint64_t s[4];
} as_rng;

/* Seed the generator (any 64-bit value, 0 included). */
void as_rng_seed(as_rng *r, uint64_t seed);
uint64_t as_rng_next(as_rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double as_rng_uniform(as_rng *r);
/* Uniform integer in [0, n) without modulo bias (n >= 1). */
uint64_t as_rng_below(as_rng *r, uint64_t n);
/* Mix two 64-bit values into a seed (splitmix64 finaliser); used to give every
 * (layer, head, query, budget, method, trial) its own independent, order-free stream. */
uint64_t as_seed_mix(uint64_t a, uint64_t b);

/* The k largest of x[0..n) (ties: lower index first), their indices written to idx[0..k) in
 * increasing index order. 0 <= k <= n. Expected O(n) time (quickselect on a copy), O(n)
 * scratch. Returns AS_ERR_NOMEM or AS_ERR_USAGE on failure. */
as_status as_select_topk(const double *x, int64_t n, int64_t k, int64_t *idx, char *err);

/* Value of the k-th largest of x[0..n) (1 <= k <= n); expected O(n). scratch: n doubles
 * (may be NULL: allocated). Returns NAN on allocation failure. */
double as_select_kth_largest(const double *x, int64_t n, int64_t k, double *scratch);

/* Uniform random sample, without replacement, of m keys from [0, n) minus the sorted,
 * duplicate-free set ex[0..nex) (all entries < n), written in increasing order to out.
 * Knuth's selection sampling (TAOCP vol. 2, 3.4.2, Algorithm S): every m-subset of the
 * n - nex eligible keys is equally likely. m is clamped to n - nex; returns the number drawn. */
int64_t as_select_sample(as_rng *r, int64_t n, const int64_t *ex, int64_t nex, int64_t m,
                         int64_t *out);

/* Sort idx[0..k) increasingly and remove duplicates; returns the new length. */
int64_t as_select_sort_unique(int64_t *idx, int64_t k);
/* Merge two sorted disjoint sets into out (room for na + nb); returns na + nb. */
int64_t as_select_merge(const int64_t *a, int64_t na, const int64_t *b, int64_t nb, int64_t *out);

#endif
