/* Tests of sim/as_simfibre: the exact largest TV in the fibre of an attention output and the
 * vertex lower bound, on closed forms and against the LP witness of analysis/as_bottleneck. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "as_bottleneck.h"
#include "as_simfibre.h"
#include "as_simrng.h"

/* d = 1, values 0, 1, 2, a uniform: o = 1, the fibre is x = (t, 1 - 2t, t), t in [0, 1/2], with
 * vertices (0, 1, 0) (TV 2/3) and (1/2, 0, 1/2) (TV 1/3). */
Test(simfibre, closed_form_segment)
{
    const double V[] = {0.0, 1.0, 2.0}, a[] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    double tv = -1;
    int64_t nv = -1;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_fibre_max_tv_exact(V, a, 3, 1, &tv, &nv, err), AS_OK, "%s", err);
    cr_assert_float_eq(tv, 2.0 / 3.0, 1e-14);
    cr_assert_eq(nv, 3); /* feasible sets {0,1}, {0,2}, {1,2}: the vertex (0,1,0) twice (degenerate) */
    /* r = 2 keys carry at most 2/3 of the mass: every vertex is at least 1/3 away */
    cr_assert_float_eq(as_fibre_tv_lower(a, 3, 2, 0), 1.0 / 3.0, 1e-15);
}

Test(simfibre, identifiable_when_no_collision_space)
{
    const double V[] = {0.3, -1.0, 2.0, 0.5, 1.5, 0.25}, a[] = {0.2, 0.5, 0.3};
    double tv = -1;
    char err[AS_ERR_LEN];
    /* n = 3 = d + 1 keys in R^2: the output determines a */
    cr_assert_eq(as_fibre_max_tv_exact(V, a, 3, 2, &tv, NULL, err), AS_OK, "%s", err);
    cr_assert_eq(tv, 0.0);
    cr_assert_eq(as_fibre_tv_lower(a, 3, 3, 0), 0.0);
}

Test(simfibre, lower_bound_restricted_keys)
{
    const double a[] = {0.2, 0.5, 0.3};
    cr_assert_float_eq(as_fibre_tv_lower(a, 3, 1, 0), 0.5, 1e-15);  /* 1 - 0.5 */
    cr_assert_float_eq(as_fibre_tv_lower(a, 3, 1, 2), 0.3, 1e-15);  /* a(J) = 0.8, minus 0.5 */
    cr_assert_eq(as_fibre_tv_lower(a, 3, 2, 2), 0.0);               /* r >= |J| */
}

Test(simfibre, too_many_subsets_refused)
{
    double *V = calloc(400 * 8, sizeof *V), *a = calloc(400, sizeof *a), tv;
    for (int i = 0; i < 400; i++) a[i] = 1.0 / 400;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_fibre_max_tv_exact(V, a, 400, 8, &tv, NULL, err), AS_ERR_USAGE);
    free(V), free(a);
}

/* Random instances: exact >= the vertex bound, exact >= the LP witness (any point of the fibre
 * is at most the maximum), and the witness, itself a vertex, meets the bound too. */
Test(simfibre, exact_dominates_witness_and_bound)
{
    gsl_rng *g = as_sim_rng_new(20261201);
    char err[AS_ERR_LEN];
    for (int tr = 0; tr < 40; tr++) {
        const int64_t d = 2 + tr % 3, n = d + 2 + tr % 7;
        double V[16 * 4], a[16];
        as_sim_gaussian_fill(g, 1.0, V, (size_t)(n * d));
        double z = 0;
        for (int64_t i = 0; i < n; i++) z += (a[i] = exp(as_sim_gaussian(g, 1.5)));
        for (int64_t i = 0; i < n; i++) a[i] /= z;
        double ex = -1;
        int64_t nv = 0;
        cr_assert_eq(as_fibre_max_tv_exact(V, a, n, d, &ex, &nv, err), AS_OK, "%s", err);
        cr_assert_geq(nv, 1); /* the fibre is not empty: a itself lies in it */
        const double lb = as_fibre_tv_lower(a, n, d + 1, 0);
        cr_assert_geq(ex, lb - 1e-12, "trial %d: exact %g < bound %g", tr, ex, lb);
        cr_assert_leq(ex, 1.0 + 1e-12);
        if (!as_bn_have_lp()) continue;
        double w = -1, res = 1;
        cr_assert_eq(as_bn_witness(V, a, n, d, 0, &w, NULL, &res, err), AS_OK, "%s", err);
        cr_assert_leq(w, ex + 1e-9, "trial %d: witness %g above the maximum %g", tr, w, ex);
        cr_assert_geq(w, lb - 1e-9, "trial %d: witness %g below the vertex bound %g", tr, w, lb);
        cr_assert_leq(res, 1e-8);
    }
    gsl_rng_free(g);
}
