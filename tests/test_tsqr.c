/* Tests of analysis/as_tsqr: ranks from singular values (closed forms) and the streamed QR
 * against LAPACK's SVD of the whole matrix (and, with GSL, against GSL's one-sided Jacobi SVD,
 * an independent implementation). */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "as_testutil.h"
#include "as_tsqr.h"

#ifdef AS_HAVE_GSL
#include <gsl/gsl_linalg.h>
#include <gsl/gsl_matrix.h>
#endif

/* ---- closed forms -------------------------------------------------------------------------- */

Test(tsqr_sv, closed_forms)
{
    as_rank_info r;
    double eq[4] = {2, 2, 2, 2};
    as_rank_from_sv(eq, 4, 10, 4, &r);
    cr_assert_float_eq(r.erank, 4.0, 1e-14);
    cr_assert_float_eq(r.stable_rank, 4.0, 1e-14);
    cr_assert_eq(r.r90, 4); /* 3/4 < 0.9 */
    cr_assert_eq(r.r99, 4);
    cr_assert_eq(r.rank, 4);
    cr_assert_float_eq(r.s_max, 2.0, 0);
    cr_assert_float_eq(r.fro, 4.0, 1e-15);

    double one[3] = {0, 5, 0};
    as_rank_from_sv(one, 3, 3, 3, &r);
    cr_assert_eq(r.erank, 1.0);
    cr_assert_eq(r.stable_rank, 1.0);
    cr_assert_eq(r.r90, 1);
    cr_assert_eq(r.r99, 1);
    cr_assert_eq(r.rank, 1);

    double two[2] = {1, 2}; /* p = 2/3, 1/3 */
    as_rank_from_sv(two, 2, 5, 2, &r);
    double h = -(2.0 / 3) * log(2.0 / 3) - (1.0 / 3) * log(1.0 / 3);
    cr_assert_float_eq(r.erank, exp(h), 1e-14);
    cr_assert_float_eq(r.stable_rank, 5.0 / 4, 1e-15);
    cr_assert_eq(r.r90, 2); /* 4/5 < 0.9 */

    /* energies 100, 1: 100/101 = 0.990099 >= 0.99 */
    double e[2] = {10, 1};
    as_rank_from_sv(e, 2, 2, 2, &r);
    cr_assert_eq(r.r90, 1);
    cr_assert_eq(r.r99, 1);

    double zero[5] = {0, 0, 0, 0, 0};
    as_rank_from_sv(zero, 5, 7, 5, &r);
    cr_assert_eq(r.erank, 0.0);
    cr_assert_eq(r.stable_rank, 0.0);
    cr_assert_eq(r.r90, 0);
    cr_assert_eq(r.r99, 0);
    cr_assert_eq(r.rank, 0);
    cr_assert_eq(r.fro, 0.0);

    /* numerical rank: NumPy's tolerance s_max * max(m, n) * eps */
    double tiny[3] = {1.0, 1e-12, 100 * DBL_EPSILON};
    as_rank_from_sv(tiny, 3, 1000, 3, &r);
    cr_assert_eq(r.rank, 2);
}

/* ---- TSQR against the direct SVD ------------------------------------------------------------ */

Test(tsqr, matches_direct_svd_and_scaling)
{
    char err[AS_ERR_LEN];
    const int64_t m = 1000, n = 12;
    uint64_t st = 5;
    double *a = malloc((size_t)(m * n) * sizeof *a);
    for (int64_t i = 0; i < m * n; i++) a[i] = as_test_normal(&st);
    double sv_ref[12], sv[12], f[12];
    cr_assert_eq(as_svd_values(a, m, n, sv_ref, err), AS_OK, "%s", err);
    as_tsqr *q = as_tsqr_new(n, 37, err);
    cr_assert_not_null(q);
    cr_assert_eq(as_tsqr_add_rows(q, a, 5, n, err), AS_OK); /* fewer rows than columns first */
    cr_assert_eq(as_tsqr_add_rows(q, a + 5 * n, m - 5, n, err), AS_OK);
    int64_t k = 0;
    cr_assert_eq(as_tsqr_sv(q, sv, &k, err), AS_OK);
    cr_assert_eq(k, n);
    cr_assert_eq(as_tsqr_rows(q), m);
    for (int i = 0; i < n; i++) cr_assert_float_eq(sv[i], sv_ref[i], 1e-12 * sv_ref[0]);
    /* column scaling: singular values of A diag(f) */
    for (int c = 0; c < n; c++) f[c] = 0.5 + c;
    as_tsqr_scale_cols(q, f);
    for (int64_t i = 0; i < m; i++)
        for (int c = 0; c < n; c++) a[i * n + c] *= f[c];
    cr_assert_eq(as_svd_values(a, m, n, sv_ref, err), AS_OK);
    cr_assert_eq(as_tsqr_sv(q, sv, &k, err), AS_OK);
    for (int i = 0; i < n; i++) cr_assert_float_eq(sv[i], sv_ref[i], 1e-12 * sv_ref[0]);
    as_tsqr_free(q);

    /* add_cols: the transpose of a row-major block */
    double blk[3 * 4] = {1, 2, 3, 4, 0, 1, 0, 1, 2, 0, 0, 1};
    double at[4 * 3];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 3; c++) at[i * 3 + c] = blk[c * 4 + i];
    double s1[3], s2[3];
    q = as_tsqr_new(3, 2, err);
    cr_assert_eq(as_tsqr_add_cols(q, blk, 4, 4, err), AS_OK);
    cr_assert_eq(as_tsqr_sv(q, s1, &k, err), AS_OK);
    cr_assert_eq(as_svd_values(at, 4, 3, s2, err), AS_OK);
    for (int i = 0; i < 3; i++) cr_assert_float_eq(s1[i], s2[i], 1e-13);
    as_tsqr_free(q);
    free(a);
}

#ifdef AS_HAVE_GSL
Test(tsqr, matches_gsl_jacobi_svd)
{
    char err[AS_ERR_LEN];
    const int64_t m = 300, n = 7;
    uint64_t st = 17;
    gsl_matrix *A = gsl_matrix_alloc((size_t)m, (size_t)n);
    as_tsqr *q = as_tsqr_new(n, 16, err);
    cr_assert_not_null(q);
    double row[7];
    for (int64_t i = 0; i < m; i++) {
        for (int c = 0; c < n; c++) {
            row[c] = as_test_normal(&st) * (c + 1);
            gsl_matrix_set(A, (size_t)i, (size_t)c, row[c]);
        }
        cr_assert_eq(as_tsqr_add_rows(q, row, 1, n, err), AS_OK); /* one row at a time */
    }
    gsl_vector *s = gsl_vector_alloc((size_t)n);
    gsl_matrix *V = gsl_matrix_alloc((size_t)n, (size_t)n);
    cr_assert_eq(gsl_linalg_SV_decomp_jacobi(A, V, s), 0);
    double sv[7];
    int64_t k = 0;
    cr_assert_eq(as_tsqr_sv(q, sv, &k, err), AS_OK);
    cr_assert_eq(k, n);
    for (int i = 0; i < n; i++)
        cr_assert_float_eq(sv[i], gsl_vector_get(s, (size_t)i), 1e-11 * sv[0]);
    as_tsqr_free(q);
    gsl_vector_free(s);
    gsl_matrix_free(V);
    gsl_matrix_free(A);
}
#endif
