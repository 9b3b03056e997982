#include "as_simlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

as_status as_lp_feasible(const double *A, int m, int n, const double *b, double tol,
                         int *feasible, double *x, char *err)
{
    if (m < 1 || n < 1) return as_err_set(err, AS_ERR_USAGE, "lp: empty problem");
    /* tableau rows 0..m-1: [A | I | b] with b >= 0 (rows negated where b < 0); row m: the
     * phase-one objective (reduced costs of minimising the sum of artificials) */
    const int cols = n + m + 1, rhs = n + m;
    double *T = calloc((size_t)(m + 1) * (size_t)cols, sizeof *T);
    int *basis = malloc((size_t)m * sizeof *basis);
    char *skip = calloc((size_t)(n + m), 1);
    if (!T || !basis || !skip) {
        free(T);
        free(basis);
        free(skip);
        return as_err_set(err, AS_ERR_NOMEM, "lp: out of memory");
    }
    double bmax = 0.0;
    for (int i = 0; i < m; i++) {
        /* equilibrate: scale each row to max |entry| 1 (the feasible set does not change) */
        double amax = fabs(b[i]);
        for (int j = 0; j < n; j++)
            if (fabs(A[(size_t)i * n + j]) > amax) amax = fabs(A[(size_t)i * n + j]);
        double sg = (b[i] < 0 ? -1.0 : 1.0) / (amax > 0 ? amax : 1.0);
        double *row = T + (size_t)i * cols;
        for (int j = 0; j < n; j++) row[j] = sg * A[(size_t)i * n + j];
        row[n + i] = 1.0;
        row[rhs] = sg * b[i];
        basis[i] = n + i;
        if (fabs(row[rhs]) > bmax) bmax = fabs(row[rhs]);
    }
    double *obj = T + (size_t)m * cols;
    for (int i = 0; i < m; i++) /* reduced costs: -(sum of rows) on the structural columns */
        for (int j = 0; j < cols; j++)
            if (j < n || j == rhs) obj[j] -= T[(size_t)i * cols + j];
    const double eps = 1e-11, pivtol = 1e-9;
    as_status st = AS_OK;
    long iter = 0, limit = 200L * (n + m) + 10000, degenerate = 0;
    for (;;) {
        /* Dantzig's rule (most negative reduced cost); after a run of degenerate pivots,
         * Bland's rule (first improving column), which cannot cycle */
        int bland = degenerate > 2L * (n + m), enter = -1;
        double most = -eps;
        for (int j = 0; j < n + m; j++)
            if (!skip[j] && obj[j] < most) {
                enter = j;
                if (bland) break;
                most = obj[j];
            }
        if (enter < 0) break;
        int leave = -1;
        double best = INFINITY;
        for (int i = 0; i < m; i++) {
            double a = T[(size_t)i * cols + enter];
            if (a > pivtol) {
                double ratio = T[(size_t)i * cols + rhs] / a;
                if (ratio < best - 1e-13 || (ratio <= best + 1e-13 && leave >= 0 && basis[i] < basis[leave])) {
                    if (ratio < best) best = ratio;
                    leave = i;
                }
            }
        }
        if (leave < 0) { /* only tiny entries: never pivot on this column again */
            skip[enter] = 1;
            continue;
        }
        degenerate = best <= 1e-13 ? degenerate + 1 : 0;
        double *pr = T + (size_t)leave * cols, piv = pr[enter];
        for (int j = 0; j < cols; j++) pr[j] /= piv;
        for (int i = 0; i <= m; i++) {
            if (i == leave) continue;
            double *row = T + (size_t)i * cols, f = row[enter];
            if (f != 0.0)
                for (int j = 0; j < cols; j++) row[j] -= f * pr[j];
        }
        basis[leave] = enter;
        if (++iter > limit) {
            st = as_err_set(err, AS_ERR_NUMERIC, "lp: no convergence after %ld pivots", iter);
            break;
        }
    }
    if (st == AS_OK) {
        double infeas = -obj[rhs]; /* sum of the artificials at the optimum */
        *feasible = infeas <= tol * (1.0 + bmax);
        if (x) {
            memset(x, 0, (size_t)n * sizeof *x);
            for (int i = 0; i < m; i++)
                if (basis[i] < n) x[basis[i]] = T[(size_t)i * cols + rhs];
        }
    }
    free(T);
    free(basis);
    free(skip);
    return st;
}
