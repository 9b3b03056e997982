/* as_simrng: the GSL random draws sim/ uses, behind plain functions.
 *
 * gsl_randist.h pulls in gsl_cblas.h, whose declarations clash with OpenBLAS's cblas.h; the
 * modules that call BLAS include this header instead of gsl_randist.h. */
#ifndef AS_SIMRNG_H
#define AS_SIMRNG_H

#include <gsl/gsl_rng.h>
#include <stddef.h>

/* N(0, sd^2) (Marsaglia-Tsang ziggurat). */
double as_sim_gaussian(gsl_rng *r, double sd);
/* x[0..n) = independent N(0, sd^2). */
void as_sim_gaussian_fill(gsl_rng *r, double sd, double *x, size_t n);
/* Dirichlet(alpha, ..., alpha) of dimension n into p. */
void as_sim_dirichlet(gsl_rng *r, size_t n, double alpha, double *p);
/* A new Mersenne Twister seeded with seed (NULL on allocation failure). */
gsl_rng *as_sim_rng_new(unsigned long seed);

#endif
