#include "as_sp_sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"

static double solve_bernstein(double b2, double a, double L)
{
    /* smallest r with r^2 / (2 (b2 + a r / 3)) >= L */
    return a * L / 3.0 + sqrt(a * a * L * L / 9.0 + 2.0 * b2 * L);
}

double as_sp_sampling_eps(const as_sp_sstats *st, int64_t m, double delta)
{
    if (st->n_rest <= 0 || m >= st->n_rest) return 0.0;
    if (m <= 0 || !(delta > 0) || delta >= 1) return st->dev_max;
    double nr = (double)st->n_rest, md = (double)m;
    double dY = delta / 2, dD = delta / 2;
    double fpc = (nr - md) / (nr - 1.0);
    /* numerator: ||Yhat - E Yhat|| */
    double b2 = nr * nr * st->var_y / md, a = nr * st->max_y / md;
    double rB = solve_bernstein(b2, a, log(2.0 / dY));    /* Pinelis: 2 exp(-...) */
    double rC = sqrt(b2 * fpc / dY);                       /* Chebyshev, exact variance */
    double rY = rB < rC ? rB : rC;
    /* denominator: lower deviation of Dhat (sum 1 in normalised units) */
    double aD = st->mass_rest / md, b2D = nr * nr * st->var_e / md;
    double rBD = solve_bernstein(b2D, aD, log(1.0 / dD));
    double rCD = sqrt(b2D * fpc * (1.0 - dD) / dD);       /* Cantelli */
    double rD = rBD < rCD ? rBD : rCD;
    double low = 1.0 - rD;
    if (st->p_heavy > low) low = st->p_heavy;
    double eps = low > 0 ? rY / low : INFINITY;
    return eps < st->dev_max ? eps : st->dev_max;
}

int64_t as_sp_sampling_size(const as_sp_sstats *st, double eps, double delta)
{
    if (st->n_rest <= 0) return 0;
    if (as_sp_sampling_eps(st, 1, delta) <= eps) return 1;
    int64_t lo = 1, hi = st->n_rest; /* eps(lo) > target, eps(hi) = 0 <= target */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (as_sp_sampling_eps(st, mid, delta) <= eps)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

as_status as_sp_sampling_stats(const double *s, const double *V, int64_t n, int64_t d,
                               const int64_t *H, int64_t nh, as_sp_sstats *st, char *err)
{
    if (n < 1 || d < 1 || nh < 0 || nh > n)
        return as_err_set(err, AS_ERR_USAGE, "sampling stats: bad sizes");
    double *a = malloc((size_t)n * sizeof *a), *o = calloc((size_t)d, sizeof *o),
           *yb = calloc((size_t)d, sizeof *yb);
    char *inH = calloc((size_t)n, 1);
    if (!a || !o || !yb || !inH) {
        free(a), free(o), free(yb), free(inH);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) a[i] = s[i];
    as_softmax_inplace(a, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) o[c] += a[i] * V[i * d + c];
    double ph = 0;
    for (int64_t j = 0; j < nh; j++) {
        inH[H[j]] = 1;
        ph += a[H[j]];
        for (int64_t c = 0; c < d; c++) yb[c] -= a[H[j]] * (V[H[j] * d + c] - o[c]);
    }
    memset(st, 0, sizeof *st);
    st->n_rest = n - nh;
    st->p_heavy = ph;
    double nr = (double)(n - nh);
    if (nr > 0)
        for (int64_t c = 0; c < d; c++) yb[c] /= nr;
    double mr = 0, sy = 0, my = 0, se = 0, dm = 0;
    for (int64_t i = 0; i < n; i++)
        if (!inH[i]) mr += a[i];
    double abar = nr > 0 ? mr / nr : 0;
    for (int64_t i = 0; i < n; i++) {
        double dv = 0, dy = 0;
        for (int64_t c = 0; c < d; c++) {
            double t = V[i * d + c] - o[c];
            dv += t * t;
            double u = a[i] * t - yb[c];
            dy += u * u;
        }
        if (dv > dm) dm = dv;
        if (inH[i]) continue;
        sy += dy;
        if (dy > my) my = dy;
        se += (a[i] - abar) * (a[i] - abar);
    }
    st->mass_rest = mr;
    st->var_y = nr > 0 ? sy / nr : 0;
    st->max_y = sqrt(my);
    st->var_e = nr > 0 ? se / nr : 0;
    st->dev_max = sqrt(dm);
    free(a), free(o), free(yb), free(inH);
    return AS_OK;
}

void as_sp_estimate(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                    int64_t nh, const int64_t *samp, int64_t m, double *o_hat)
{
    double mx = -INFINITY;
    for (int64_t j = 0; j < nh; j++) mx = fmax(mx, s[H[j]]);
    for (int64_t j = 0; j < m; j++) mx = fmax(mx, s[samp[j]]);
    double w = m > 0 ? (double)(n - nh) / (double)m : 0, den = 0;
    for (int64_t c = 0; c < d; c++) o_hat[c] = 0;
    for (int64_t j = 0; j < nh + m; j++) {
        int64_t i = j < nh ? H[j] : samp[j - nh];
        double e = exp(s[i] - mx) * (j < nh ? 1.0 : w);
        den += e;
        for (int64_t c = 0; c < d; c++) o_hat[c] += e * V[i * d + c];
    }
    for (int64_t c = 0; c < d; c++) o_hat[c] = den > 0 ? o_hat[c] / den : NAN;
}

double as_binom_tail(int64_t n, int64_t x, double p)
{
    if (x <= 0) return 1.0;
    if (x > n) return 0.0;
    if (p <= 0) return 0.0;
    if (p >= 1) return 1.0;
    double lp = log(p), lq = log1p(-p), ln = lgamma((double)n + 1);
    double mx = -INFINITY, sum = 0;
    /* terms from x upwards; stop once they are negligible past the mode */
    for (int64_t j = x; j <= n; j++) {
        double lt = ln - lgamma((double)j + 1) - lgamma((double)(n - j) + 1) + j * lp + (n - j) * lq;
        if (lt > mx) {
            sum = sum * exp(mx - lt) + 1.0;
            mx = lt;
        } else {
            sum += exp(lt - mx);
        }
        if ((double)j > (double)n * p && lt - mx < -40) break;
    }
    double r = exp(mx) * sum;
    return r > 1 ? 1 : r;
}
