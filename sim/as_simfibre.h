/* as_simfibre: the fibre of an attention output, and the largest total-variation distance in it
 * (docs/theory.md, "The bottleneck" and "Known answers: the largest TV in the fibre").
 *
 * For values V (n x d) and weights a on the simplex, the fibre is the polytope
 *   F = {x >= 0 : V^T x = V^T a, 1^T x = 1},
 * every distribution with the same attention output as a. TV(a, x) = 1/2 ||a - x||_1 is convex
 * in x, so its maximum over F sits at a vertex of F. A vertex is a basic feasible solution:
 * its support has at most r = rank([V^T; 1^T]) keys, and r = n - collision_dim. Hence every
 * vertex x satisfies
 *   TV(a, x) = 1 - sum_i min(a_i, x_i) >= 1 - a(supp x) >= 1 - top_r(a),
 * where top_r(a) is the mass of the r largest weights: the collision space alone forces the
 * largest TV towards 1 as n/d grows (r <= d + 1 stays fixed while n grows). */
#ifndef AS_SIMFIBRE_H
#define AS_SIMFIBRE_H

#include <stdint.h>

#include "as_error.h"

/* The most subsets of d+1 keys the exact enumeration will visit. */
#define AS_FIBRE_MAX_SUBSETS 200000

/* Exact max TV(a, x) over the fibre, by enumerating every set S of d+1 keys, solving
 * [V_S^T; 1^T] x_S = [V^T a; 1] (LU, GSL) and keeping the solutions with x_S >= 0 (within
 * 1e-10): the vertices of F when [V^T; 1^T] has full row rank d+1 (V in general position).
 * n <= d + 1: F = {a}, *tv = 0. *vertices (may be NULL) receives the count of feasible sets.
 * AS_ERR_USAGE when C(n, d+1) > AS_FIBRE_MAX_SUBSETS. */
as_status as_fibre_max_tv_exact(const double *V, const double *a, int64_t n, int64_t d,
                                double *tv, int64_t *vertices, char *err);

/* The lower bound a(J) - top_r(a) that every vertex of the fibre restricted to the `keys`
 * heaviest keys J (keys <= 0 or >= n: all keys, a(J) = 1) satisfies, for r = the rank of
 * [V_J^T; 1^T] (at most r given here). a: n weights (not modified). 0 when r >= keys. */
double as_fibre_tv_lower(const double *a, int64_t n, int64_t r, int64_t keys);

#endif
