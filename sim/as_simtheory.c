#include "as_simtheory.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_math.h>
#include <gsl/gsl_sf_bessel.h>
#include <gsl/gsl_sf_psi.h>
#include <gsl/gsl_sf_zeta.h>
#include <math.h>
#include <stdlib.h>

#define DIRECT_TERMS 10000

static void quiet_gsl(void)
{
    static int done = 0;
    if (!done) {
        gsl_set_error_handler_off(); /* return codes, never abort() inside a library */
        done = 1;
    }
}

/* Kahan-compensated sum_{i=1}^{k} i^-s, smallest terms first for accuracy. */
static double direct_sum(int64_t k, double s)
{
    double sum = 0.0, c = 0.0;
    for (int64_t i = k; i >= 1; i--) {
        double y = pow((double)i, -s) - c, t = sum + y;
        c = (t - sum) - y;
        sum = t;
    }
    return sum;
}

double as_harmonic(int64_t k, double s)
{
    quiet_gsl();
    if (k <= 0) return 0.0;
    if (k <= DIRECT_TERMS) return direct_sum(k, s);
    if (s > 1.0) {
        gsl_sf_result z, hz;
        if (gsl_sf_zeta_e(s, &z) == GSL_SUCCESS && gsl_sf_hzeta_e(s, (double)k + 1.0, &hz) == GSL_SUCCESS)
            return z.val - hz.val;
    } else if (s == 1.0) {
        gsl_sf_result p;
        if (gsl_sf_psi_e((double)k + 1.0, &p) == GSL_SUCCESS) return p.val + M_EULER;
    }
    /* Euler-Maclaurin: H(k, s) = zeta(s) + k^(1-s)/(1-s) + k^-s/2 - s k^(-s-1)/12
     * + s(s+1)(s+2) k^(-s-3)/720 - ... (valid for s != 1; for s = 1 zeta(s) + k^(1-s)/(1-s)
     * is replaced by ln k + gamma). Error below the next term, ~k^(-s-5) for k > 10^4. */
    double kk = (double)k;
    double head;
    if (s == 1.0) {
        head = log(kk) + M_EULER;
    } else {
        gsl_sf_result z;
        if (gsl_sf_zeta_e(s, &z) != GSL_SUCCESS) return direct_sum(k, s);
        head = z.val + pow(kk, 1.0 - s) / (1.0 - s);
    }
    return head + 0.5 * pow(kk, -s) - s * pow(kk, -s - 1.0) / 12.0 +
           s * (s + 1.0) * (s + 2.0) * pow(kk, -s - 3.0) / 720.0;
}

double as_zipf_topk_mass(int64_t k, int64_t n, double s)
{
    if (k <= 0) return 0.0;
    if (k >= n) return 1.0;
    return as_harmonic(k, s) / as_harmonic(n, s);
}

int64_t as_zipf_k_for_mass(double p, int64_t n, double s)
{
    if (p <= 0) return 0;
    int64_t lo = 1, hi = n; /* invariant: mass(hi) >= p */
    const double hn = as_harmonic(n, s);
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (as_harmonic(mid, s) / hn >= p) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

double as_zipf_entropy(int64_t n, double s)
{
    double hn = 0.0, acc = 0.0;
    for (int64_t r = n; r >= 1; r--) {
        double w = pow((double)r, -s);
        hn += w;
        acc += w * log((double)r);
    }
    return log(hn) + s * acc / hn;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

as_rank_closed as_rank_closed_form(const double *sv, int64_t r)
{
    as_rank_closed out = {0, 0, 0, 0};
    double *s = malloc((size_t)(r > 0 ? r : 1) * sizeof *s);
    if (!s) return out;
    double sum = 0.0, sum2 = 0.0;
    for (int64_t i = 0; i < r; i++) {
        s[i] = fabs(sv[i]);
        sum += s[i];
        sum2 += s[i] * s[i];
    }
    qsort(s, (size_t)r, sizeof *s, cmp_desc);
    if (sum > 0) {
        double h = 0.0;
        for (int64_t i = 0; i < r; i++) {
            double p = s[i] / sum;
            if (p > 0) h -= p * log(p);
        }
        out.erank = exp(h);
        out.stable_rank = sum2 / (s[0] * s[0]);
        double c = 0.0;
        for (int64_t i = 0; i < r; i++) {
            c += s[i] * s[i];
            if (!out.r90 && c >= 0.9 * sum2) out.r90 = i + 1;
            if (!out.r99 && c >= 0.99 * sum2) out.r99 = i + 1;
        }
    }
    free(s);
    return out;
}

double as_cover_collision_prob(int64_t n, int64_t d)
{
    quiet_gsl();
    /* 1 - 2^(1-n) sum_{k=0}^{d} binom(n-1, k) = P(Binomial(n-1, 1/2) > d) */
    if (n <= d + 1) return 0.0;
    return gsl_cdf_binomial_Q((unsigned)d, 0.5, (unsigned)(n - 1));
}

static double bessel_in(int m, double A)
{
    gsl_sf_result r; /* scaled by exp(-|A|), which cancels in the ratios */
    if (m < 0) m = -m;
    int rc = gsl_sf_bessel_In_scaled_e(m, A, &r);
    if (rc == GSL_EUNDRFLW) return 0.0; /* far orders underflow: negligible */
    return rc == GSL_SUCCESS ? r.val : NAN;
}

static double aliased_coef(int k, double A, int P)
{
    if (P <= 0) return bessel_in(k, A);
    /* I_m decays like (A/2)^m / m!: 64 aliases either side are far below double precision
     * for the amplitudes a logit can have (|A| < 100 and P >= 3) */
    double sum = bessel_in(k, A);
    for (int j = 1; j <= 64; j++) sum += bessel_in(k + j * P, A) + bessel_in(k - j * P, A);
    return sum;
}

double as_bessel_harmonic_ratio(int k, double A, int P)
{
    quiet_gsl();
    double c1 = aliased_coef(1, A, P);
    return c1 != 0 ? aliased_coef(k, A, P) / c1 : NAN;
}
