#include "as_simfibre.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_linalg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_desc(const void *x, const void *y)
{
    const double p = *(const double *)x, q = *(const double *)y;
    return p < q ? 1 : p > q ? -1 : 0;
}

double as_fibre_tv_lower(const double *a, int64_t n, int64_t r, int64_t keys)
{
    if (keys <= 0 || keys > n) keys = n;
    if (r >= keys) return 0.0;
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) return 0.0; /* the trivial bound */
    memcpy(s, a, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_desc);
    double aj = 0.0, top = 0.0;
    for (int64_t i = 0; i < keys; i++) {
        aj += s[i];
        if (i < r) top += s[i];
    }
    free(s);
    const double lb = aj - top;
    return lb > 0.0 ? lb : 0.0;
}

/* C(n, k) as a double (exact below 2^53), saturating. */
static double binom(int64_t n, int64_t k)
{
    double c = 1.0;
    for (int64_t i = 1; i <= k; i++) c = c * (double)(n - k + i) / (double)i;
    return floor(c + 0.5);
}

as_status as_fibre_max_tv_exact(const double *V, const double *a, int64_t n, int64_t d,
                                double *tv, int64_t *vertices, char *err)
{
    *tv = 0.0;
    if (vertices) *vertices = 0;
    if (n < 1 || d < 1) return as_err_set(err, AS_ERR_USAGE, "fibre: empty problem");
    const int64_t r = d + 1;
    if (n <= r) { /* [V^T; 1^T] has full column rank (general position): F = {a} */
        if (vertices) *vertices = 1;
        return AS_OK;
    }
    if (binom(n, r) > AS_FIBRE_MAX_SUBSETS)
        return as_err_set(err, AS_ERR_USAGE, "fibre: C(%lld, %lld) subsets exceed %d",
                          (long long)n, (long long)r, AS_FIBRE_MAX_SUBSETS);
    /* right-hand side b = [V^T a; 1] */
    gsl_vector *b = gsl_vector_calloc((size_t)r), *x = gsl_vector_alloc((size_t)r);
    gsl_matrix *M = gsl_matrix_alloc((size_t)r, (size_t)r);
    gsl_permutation *perm = gsl_permutation_alloc((size_t)r);
    int64_t *S = malloc((size_t)r * sizeof *S);
    if (!b || !x || !M || !perm || !S) {
        gsl_vector_free(b), gsl_vector_free(x), gsl_matrix_free(M), gsl_permutation_free(perm);
        free(S);
        return as_err_set(err, AS_ERR_NOMEM, "fibre: out of memory");
    }
    double bnorm = 1.0;
    for (int64_t c = 0; c < d; c++) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += V[i * d + c] * a[i];
        gsl_vector_set(b, (size_t)c, s);
        bnorm = fmax(bnorm, fabs(s));
    }
    gsl_vector_set(b, (size_t)d, 1.0);
    gsl_error_handler_t *old = gsl_set_error_handler_off();
    for (int64_t i = 0; i < r; i++) S[i] = i;
    double best = 0.0;
    int64_t nv = 0;
    for (;;) {
        for (int64_t j = 0; j < r; j++) {
            for (int64_t c = 0; c < d; c++) gsl_matrix_set(M, (size_t)c, (size_t)j, V[S[j] * d + c]);
            gsl_matrix_set(M, (size_t)d, (size_t)j, 1.0);
        }
        int sg = 0;
        /* a singular set (not a basis) is skipped: LU leaves an exact zero pivot, or a pivot
         * so small that the solution is meaningless (checked through the residual below) */
        if (gsl_linalg_LU_decomp(M, perm, &sg) == GSL_SUCCESS && gsl_linalg_LU_solve(M, perm, b, x) == GSL_SUCCESS) {
            double xmin = INFINITY;
            for (int64_t j = 0; j < r; j++) xmin = fmin(xmin, gsl_vector_get(x, (size_t)j));
            /* residual of the system on the original columns (LU overwrote M) */
            double res = 0.0;
            for (int64_t c = 0; c <= d; c++) {
                double s = -gsl_vector_get(b, (size_t)c);
                for (int64_t j = 0; j < r; j++)
                    s += (c < d ? V[S[j] * d + c] : 1.0) * gsl_vector_get(x, (size_t)j);
                res = fmax(res, fabs(s));
            }
            if (isfinite(xmin) && xmin >= -1e-10 && res <= 1e-9 * bnorm) {
                nv++;
                /* TV = 1/2 (sum_{i in S} |a_i - x_i| + sum_{i not in S} a_i) */
                double in = 0.0, ain = 0.0;
                for (int64_t j = 0; j < r; j++) {
                    const double xj = fmax(0.0, gsl_vector_get(x, (size_t)j));
                    in += fabs(a[S[j]] - xj);
                    ain += a[S[j]];
                }
                const double t = 0.5 * (in + (1.0 - ain));
                if (t > best) best = t;
            }
        }
        /* next r-subset of {0..n-1} in lexicographic order */
        int64_t j = r - 1;
        while (j >= 0 && S[j] == n - r + j) j--;
        if (j < 0) break;
        S[j]++;
        for (int64_t k = j + 1; k < r; k++) S[k] = S[k - 1] + 1;
    }
    gsl_set_error_handler(old);
    gsl_vector_free(b), gsl_vector_free(x), gsl_matrix_free(M), gsl_permutation_free(perm);
    free(S);
    *tv = best;
    if (vertices) *vertices = nv;
    return AS_OK;
}
