#include "as_simrng.h"

#include <gsl/gsl_randist.h>
#include <stdlib.h>

double as_sim_gaussian(gsl_rng *r, double sd) { return gsl_ran_gaussian_ziggurat(r, sd); }

void as_sim_gaussian_fill(gsl_rng *r, double sd, double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = gsl_ran_gaussian_ziggurat(r, sd);
}

void as_sim_dirichlet(gsl_rng *r, size_t n, double alpha, double *p)
{
    /* gsl_ran_dirichlet takes one alpha per component */
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (p[i] = gsl_ran_gamma(r, alpha, 1.0));
    for (size_t i = 0; i < n; i++) p[i] /= sum;
}

gsl_rng *as_sim_rng_new(unsigned long seed)
{
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (r) gsl_rng_set(r, seed);
    return r;
}
