/* as_simlp: feasibility of small dense linear programs {x >= 0 : A x = b} by the two-phase
 * simplex method's first phase (artificial variables, Bland's rule, so it cannot cycle).
 * Used by the bottleneck experiment to decide whether two distributions on the two sides of
 * a split of the keys can have the same output (Cover's counting theorem). Dense tableau:
 * O(m (n + m)) memory, for m up to a few hundred rows. */
#ifndef AS_SIMLP_H
#define AS_SIMLP_H

#include "as_error.h"

/* A: m x n row-major, b: m. On AS_OK *feasible is 1 if some x >= 0 has A x = b (to within
 * tol * (1 + |b|_inf) in the phase-one objective), 0 otherwise; x (n, may be NULL) receives a
 * feasible point. AS_ERR_NUMERIC if the iteration limit is reached. */
as_status as_lp_feasible(const double *A, int m, int n, const double *b, double tol,
                         int *feasible, double *x, char *err);

#endif
