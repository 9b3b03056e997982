/* Tests of sim/as_simlp: phase-one simplex feasibility on problems with known answers. */
#include <criterion/criterion.h>
#include <math.h>

#include "as_simlp.h"

Test(simlp, small_known_problems)
{
    char err[AS_ERR_LEN];
    int f;
    double x[4];
    /* x1 + x2 = 1, x1 - x2 = 0.5 -> x = (0.75, 0.25) */
    double A1[] = {1, 1, 1, -1}, b1[] = {1, 0.5};
    cr_assert_eq(as_lp_feasible(A1, 2, 2, b1, 1e-9, &f, x, err), AS_OK);
    cr_assert_eq(f, 1);
    cr_assert_float_eq(x[0], 0.75, 1e-12);
    cr_assert_float_eq(x[1], 0.25, 1e-12);
    /* x1 - x2 = 2 with x1 + x2 = 1: x2 = -0.5 < 0, infeasible */
    double b2[] = {1, 2};
    cr_assert_eq(as_lp_feasible(A1, 2, 2, b2, 1e-9, &f, x, err), AS_OK);
    cr_assert_eq(f, 0);
    /* negative right-hand side and a redundant row: -x1 - x2 = -1, 2x1 + 2x2 = 2 */
    double A3[] = {-1, -1, 0, 2, 2, 0}, b3[] = {-1, 2};
    cr_assert_eq(as_lp_feasible(A3, 2, 3, b3, 1e-9, &f, x, err), AS_OK);
    cr_assert_eq(f, 1);
    cr_assert_float_eq(x[0] + x[1], 1.0, 1e-12);
    /* the convex hulls of {0, 2} and {1} on a line intersect; of {0, 1} and {2} do not */
    double A4[] = {0, 2, -1, 1, 1, 0, 0, 0, 1}, b4[] = {0, 1, 1};
    cr_assert_eq(as_lp_feasible(A4, 3, 3, b4, 1e-9, &f, x, err), AS_OK);
    cr_assert_eq(f, 1);
    double A5[] = {0, 1, -2, 1, 1, 0, 0, 0, 1};
    cr_assert_eq(as_lp_feasible(A5, 3, 3, b4, 1e-9, &f, x, err), AS_OK);
    cr_assert_eq(f, 0);
    cr_assert_eq(as_lp_feasible(A5, 0, 3, b4, 1e-9, &f, x, err), AS_ERR_USAGE);
}
