#include "as_sp_sampling.h"

#include <float.h>
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

/* What both estimators' statistics start from: the softmax a of s, the dense output o, the
 * heavy set's membership inH and mass ph, and yb = -sum_{j in H} a_j (v_j - o). The four arrays
 * are allocated here (free with free()); what = the caller's name for messages. */
static as_status heavy_setup(const char *what, const double *s, const double *V, int64_t n,
                             int64_t d, const int64_t *H, int64_t nh, double **a_out,
                             double **o_out, double **yb_out, char **inH_out, double *ph_out,
                             char *err)
{
    if (n < 1 || d < 1 || nh < 0 || nh > n)
        return as_err_set(err, AS_ERR_USAGE, "%s: bad sizes", what);
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
    *a_out = a, *o_out = o, *yb_out = yb, *inH_out = inH, *ph_out = ph;
    return AS_OK;
}

as_status as_sp_sampling_stats(const double *s, const double *V, int64_t n, int64_t d,
                               const int64_t *H, int64_t nh, as_sp_sstats *st, char *err)
{
    double *a, *o, *yb, ph;
    char *inH;
    as_status rc = heavy_setup("sampling stats", s, V, n, d, H, nh, &a, &o, &yb, &inH, &ph, err);
    if (rc != AS_OK) return rc;
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

/* ---- importance sampling of the rest (page-is) --------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

as_status as_sp_is_proposal(const double *ub, int64_t n, int64_t P, const int64_t *H, int64_t nh,
                            double tau, double beta, double *q, double *cq, char *err)
{
    if (n < 1 || P < 1 || nh < 0 || nh > n || !(tau >= 0) || !(beta > 0 && beta <= 1))
        return as_err_set(err, AS_ERR_USAGE, "page-is proposal: bad arguments");
    const int64_t r = n - nh;
    if (r == 0) {
        for (int64_t j = 0; j < n; j++) q[j] = 0;
        if (cq)
            for (int64_t j = 0; j < n; j++) cq[j] = 0;
        return AS_OK;
    }
    double top = -INFINITY;
    for (int64_t j = 0, ih = 0; j < n; j++) {
        if (ih < nh && H[ih] == j) {
            ih++;
            continue;
        }
        if (ub[j / P] > top) top = ub[j / P];
    }
    double W = 0;
    for (int64_t j = 0, ih = 0; j < n; j++) {
        if (ih < nh && H[ih] == j) {
            ih++;
            q[j] = 0;
            continue;
        }
        double dx = ub[j / P] - top; /* NaN only for +inf - +inf: a top page */
        q[j] = tau > 0 && !isnan(dx) ? exp(tau * dx) : 1.0; /* the top page's weight is 1 */
        W += q[j];
    }
    /* the bound-based part, then the defensive uniform share on R (q_j >= beta / |R| > 0) */
    double acc = 0;
    for (int64_t j = 0, ih = 0; j < n; j++) {
        if (ih < nh && H[ih] == j)
            ih++;
        else
            q[j] = (1.0 - beta) * q[j] / W + beta / (double)r;
        acc += q[j];
        if (cq) cq[j] = acc;
    }
    return AS_OK;
}

int64_t as_sp_is_draw(as_rng *rng, const double *q, const double *cq, int64_t n, int64_t m,
                      int64_t *keys, double *w)
{
    if (m <= 0 || n <= 0) return 0;
    const double tot = cq[n - 1];
    for (int64_t t = 0; t < m; t++) {
        double u = as_rng_uniform(rng) * tot;
        int64_t lo = 0, hi = n - 1; /* smallest j with cq[j] > u */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (cq[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        while (lo < n - 1 && q[lo] <= 0) lo++; /* rounding at the top end: never a key of H */
        keys[t] = lo;
    }
    qsort(keys, (size_t)m, sizeof *keys, cmp_i64);
    int64_t ns = 0;
    for (int64_t t = 0; t < m;) {
        int64_t u = t;
        while (u < m && keys[u] == keys[t]) u++;
        keys[ns] = keys[t];
        w[ns] = (double)(u - t) / ((double)m * q[keys[t]]);
        ns++;
        t = u;
    }
    return ns;
}

as_status as_sp_is_inclusion(const double *q, int64_t n, double m, double *pi, char *err)
{
    /* runs of equal q (a page's keys share theirs) */
    int64_t nr = 0;
    double *val = malloc((size_t)(n > 0 ? n : 1) * sizeof *val);
    double *cnt = malloc((size_t)(n > 0 ? n : 1) * sizeof *cnt);
    if (!val || !cnt) {
        free(val), free(cnt);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    double pos = 0, qmin = INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (!(q[j] > 0)) continue;
        pos += 1;
        if (q[j] < qmin) qmin = q[j];
        if (nr > 0 && val[nr - 1] == q[j]) {
            cnt[nr - 1] += 1;
        } else {
            val[nr] = q[j];
            cnt[nr++] = 1;
        }
    }
    if (!(m > 0) || !(m < pos)) {
        free(val), free(cnt);
        return as_err_set(err, AS_ERR_USAGE, "Poisson sample: size %g not in (0, %g)", m, pos);
    }
    /* f(c) = sum min(1, c q) rises from 0 to pos; f(m / sum q) <= m, f(1 / qmin) = pos > m */
    double sq = 0;
    for (int64_t i = 0; i < nr; i++) sq += cnt[i] * val[i];
    double lo = m / sq, hi = 1.0 / qmin;
    for (int it = 0; it < 200 && hi > lo * (1 + 4 * DBL_EPSILON); it++) {
        double mid = 0.5 * (lo + hi), f = 0;
        for (int64_t i = 0; i < nr; i++) f += cnt[i] * fmin(1.0, mid * val[i]);
        if (f >= m)
            hi = mid;
        else
            lo = mid;
    }
    for (int64_t j = 0; j < n; j++) pi[j] = q[j] > 0 ? fmin(1.0, hi * q[j]) : 0.0;
    free(val), free(cnt);
    return AS_OK;
}

int64_t as_sp_is_draw_poisson(as_rng *rng, const double *pi, int64_t n, int64_t *keys, double *w)
{
    int64_t c = 0;
    for (int64_t j = 0; j < n; j++) {
        if (!(pi[j] > 0)) continue;
        if (pi[j] < 1.0 && !(as_rng_uniform(rng) < pi[j])) continue;
        keys[c] = j;
        w[c++] = 1.0 / pi[j];
    }
    return c;
}

as_status as_sp_is_stats(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                         int64_t nh, const double *q, int poisson, as_sp_isstats *st, char *err)
{
    double *a, *o, *yb, ph;
    char *inH;
    as_status rc = heavy_setup("importance sampling stats", s, V, n, d, H, nh, &a, &o, &yb, &inH,
                               &ph, err);
    if (rc != AS_OK) return rc;
    memset(st, 0, sizeof *st);
    st->n_rest = n - nh;
    st->p_heavy = ph;
    st->poisson = poisson;
    double yb2 = 0, mr = 0, sy = 0, my = 0, sa = 0, dm = 0, ma = 0;
    for (int64_t c = 0; c < d; c++) yb2 += yb[c] * yb[c];
    for (int64_t i = 0; i < n; i++) {
        double dv = 0, dy = 0;
        for (int64_t c = 0; c < d; c++) {
            double t = V[i * d + c] - o[c];
            dv += t * t;
            if (!inH[i]) {
                double u = a[i] / q[i] * t - yb[c];
                dy += u * u;
            }
        }
        if (dv > dm) dm = dv;
        if (inH[i]) continue;
        mr += a[i];
        if (poisson) {
            if (q[i] >= 1.0) continue;
            double f = (1.0 - q[i]) / q[i], g = fmax(1.0 / q[i] - 1.0, 1.0);
            sy += f * a[i] * a[i] * dv;
            sa += f * a[i] * a[i];
            if (a[i] * a[i] * dv * g * g > my) my = a[i] * a[i] * dv * g * g;
            if (a[i] > ma) ma = a[i];
            continue;
        }
        sy += a[i] * a[i] * dv / q[i];
        sa += a[i] * a[i] / q[i];
        if (dy > my) my = dy;
    }
    if (poisson) yb2 = 0;
    st->max_a = ma;
    st->mass_rest = mr;
    st->sum_y2q = sy;
    st->max_yq = sqrt(my);
    st->sum_a2q = sa;
    st->ybar2 = yb2;
    st->dev_max = sqrt(dm);
    free(a), free(o), free(yb), free(inH);
    return AS_OK;
}

double as_sp_is_eps(const as_sp_isstats *st, int64_t m, double delta)
{
    if (st->n_rest <= 0) return 0.0;
    if (m <= 0 || !(delta > 0) || delta >= 1) return st->dev_max;
    double md = st->poisson ? 1.0 : (double)m, dY = delta / 2, dD = delta / 2;
    /* numerator: (1/m) sum_t (y_J / q_J - Ybar), independent, centred, bounded; Poisson:
     * sum_j (I_j / pi_j - 1) y_j, independent, centred, each of norm <= max_yq */
    double v1 = st->sum_y2q - st->ybar2;
    double b2 = (v1 > 0 ? v1 : 0) / md, a = st->max_yq / md;
    double rB = solve_bernstein(b2, a, log(2.0 / dY)); /* Pinelis: 2 exp(-...) */
    double rC = sqrt(b2 / dY);                          /* Chebyshev */
    double rY = rB < rC ? rB : rC;
    /* denominator: (1/m) sum_t (a_J / q_J - (1 - P_H)), each >= -(1 - P_H) / m; Poisson:
     * sum_j (I_j / pi_j - 1) a_j, each >= -a_j >= -max_a */
    double v2 = st->sum_a2q - (st->poisson ? 0.0 : st->mass_rest * st->mass_rest);
    double b2D = (v2 > 0 ? v2 : 0) / md, aD = st->poisson ? st->max_a : st->mass_rest / md;
    double rBD = solve_bernstein(b2D, aD, log(1.0 / dD));
    double rCD = sqrt(b2D * (1.0 - dD) / dD); /* Cantelli */
    double rD = rBD < rCD ? rBD : rCD;
    double low = 1.0 - rD;
    if (st->p_heavy > low) low = st->p_heavy;
    double eps = low > 0 ? rY / low : INFINITY;
    return eps < st->dev_max ? eps : st->dev_max;
}

int64_t as_sp_is_size(const as_sp_isstats *st, double eps, double delta)
{
    if (st->n_rest <= 0) return 0;
    if (st->poisson) return -1; /* its epsilon depends on m through pi: not sized here */
    if (as_sp_is_eps(st, 1, delta) <= eps) return 1;
    const int64_t cap = (int64_t)1 << 40;
    int64_t lo = 1, hi = 2; /* eps(lo) > target */
    while (as_sp_is_eps(st, hi, delta) > eps) {
        if (hi >= cap) return -1;
        lo = hi;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (as_sp_is_eps(st, mid, delta) <= eps)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

void as_sp_is_estimate(const double *s, const double *V, int64_t n, int64_t d, const int64_t *H,
                       int64_t nh, const int64_t *samp, const double *w, int64_t ns,
                       double *o_hat)
{
    (void)n;
    double mx = -INFINITY;
    for (int64_t j = 0; j < nh; j++) mx = fmax(mx, s[H[j]]);
    for (int64_t j = 0; j < ns; j++) mx = fmax(mx, s[samp[j]]);
    double den = 0;
    for (int64_t c = 0; c < d; c++) o_hat[c] = 0;
    for (int64_t j = 0; j < nh + ns; j++) {
        int64_t i = j < nh ? H[j] : samp[j - nh];
        double e = exp(s[i] - mx) * (j < nh ? 1.0 : w[j - nh]);
        den += e;
        for (int64_t c = 0; c < d; c++) o_hat[c] += e * V[i * d + c];
    }
    for (int64_t c = 0; c < d; c++) o_hat[c] = den > 0 ? o_hat[c] / den : NAN;
}
