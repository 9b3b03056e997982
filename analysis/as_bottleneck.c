#include "as_bottleneck.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_pagecache.h"
#include "as_rank.h"
#include "as_sparsity.h"

#ifdef AS_HAVE_GLPK
#include <glpk.h>
#include <setjmp.h>
#endif

int as_bn_have_lp(void)
{
#ifdef AS_HAVE_GLPK
    return 1;
#else
    return 0;
#endif
}

void as_bn_opts_init(as_bn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->head = -1;
    o->query = -1;
    static const double def[] = {0.01, 0.05, 0.10, 0.25};
    o->n_budgets = sizeof def / sizeof def[0];
    memcpy(o->budgets, def, sizeof def);
    o->witness = as_bn_have_lp();
    o->witness_keys = 2048;
}

/* Rank of the singular values sv[0..r) of an m x n matrix, NumPy's matrix_rank tolerance. */
static int64_t rank_of_sv(const double *sv, int64_t r, int64_t m, int64_t n)
{
    double smax = 0.0;
    for (int64_t i = 0; i < r; i++)
        if (sv[i] > smax) smax = sv[i];
    double tol = smax * (double)(m > n ? m : n) * DBL_EPSILON;
    int64_t k = 0;
    for (int64_t i = 0; i < r; i++)
        if (sv[i] > tol) k++;
    return k;
}

as_status as_bn_value_rank(const double *V, int64_t n, int64_t d, int64_t *rank, char *err)
{
    *rank = 0;
    if (n <= 0) return AS_OK;
    int64_t chunk = n < 4096 ? n : 4096, d1 = d + 1;
    as_tsqr *q = as_tsqr_new(d1, chunk, err);
    if (!q) return AS_ERR_NOMEM;
    double *rows = malloc((size_t)(chunk * d1) * sizeof *rows);
    double *sv = malloc((size_t)d1 * sizeof *sv);
    as_status st = AS_OK;
    if (!rows || !sv) {
        st = as_err_set(err, AS_ERR_NOMEM, "value rank: out of memory");
        goto out;
    }
    for (int64_t j0 = 0; j0 < n && st == AS_OK; j0 += chunk) {
        int64_t cnt = n - j0 < chunk ? n - j0 : chunk;
        for (int64_t i = 0; i < cnt; i++) {
            memcpy(rows + i * d1, V + (j0 + i) * d, (size_t)d * sizeof *rows);
            rows[i * d1 + d] = 1.0;
        }
        st = as_tsqr_add_rows(q, rows, cnt, d1, err);
    }
    int64_t nsv = 0;
    if (st == AS_OK) st = as_tsqr_sv(q, sv, &nsv, err);
    if (st == AS_OK) *rank = rank_of_sv(sv, nsv, d1, n);
out:
    free(rows);
    free(sv);
    as_tsqr_free(q);
    return st;
}

/* Indices 0..n-1 ordered by weight, largest first (ties: lower index first). A stable LSD radix
 * sort (11-bit digits) of keys that order like the weights, descending, started from the
 * identity: the order a comparison sort by (weight descending, index ascending) gives, in O(n)
 * (qsort of a million weights per query cost more than the query's dense pass). Digits that all
 * keys share are skipped (the exponent bits of weights in (0, 1] mostly are). */
static uint64_t desc_key(double x)
{
    if (x == 0) x = 0.0; /* -0 and +0 are the same weight */
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    u = (u >> 63) ? ~u : (u | 0x8000000000000000ull); /* unsigned order = order of x */
    return ~u;
}

static int64_t *order_desc(const double *a, int64_t n)
{
    size_t m = (size_t)(n > 0 ? n : 1);
    enum { BITS = 11, RADIX = 1 << BITS };
    int64_t *ix = malloc(m * sizeof *ix), *ix2 = malloc(m * sizeof *ix2);
    uint64_t *key = malloc(m * sizeof *key), *key2 = malloc(m * sizeof *key2);
    size_t *cnt = malloc(RADIX * sizeof *cnt);
    if (!ix || !ix2 || !key || !key2 || !cnt) {
        free(ix);
        ix = NULL;
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        ix[i] = i;
        key[i] = desc_key(a[i]);
    }
    for (int shift = 0; shift < 64; shift += BITS) {
        memset(cnt, 0, RADIX * sizeof *cnt);
        for (int64_t i = 0; i < n; i++) cnt[(key[i] >> shift) & (RADIX - 1)]++;
        if (n > 0 && cnt[(key[0] >> shift) & (RADIX - 1)] == (size_t)n) continue;
        size_t sum = 0;
        for (int r = 0; r < RADIX; r++) {
            size_t c = cnt[r];
            cnt[r] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++) {
            size_t pos = cnt[(key[i] >> shift) & (RADIX - 1)]++;
            key2[pos] = key[i];
            ix2[pos] = ix[i];
        }
        uint64_t *tk = key;
        key = key2;
        key2 = tk;
        int64_t *ti = ix;
        ix = ix2;
        ix2 = ti;
    }
out:
    free(ix2);
    free(key);
    free(key2);
    free(cnt);
    return ix;
}

/* ---------------------------------------------------------------------- the TV witness */

#ifdef AS_HAVE_GLPK
#define AS_BN_LP_ITERS 6 /* improvement steps per starting set */

/* ||VJ^T x - rhs[0..d)|| + |1^T x - rhs[d]| */
static double lp_residual(const double *VJ, int64_t nj, int64_t d, const double *rhs,
                          const double *x)
{
    double r2 = 0.0, s = 0.0;
    for (int64_t c = 0; c < d; c++) {
        double acc = -rhs[c];
        for (int64_t j = 0; j < nj; j++) acc += VJ[j * d + c] * x[j];
        r2 += acc * acc;
    }
    for (int64_t j = 0; j < nj; j++) s += x[j];
    return sqrt(r2) + fabs(s - rhs[d]);
}

/* Every constraint row met to 1e-7 of its own scale (rowmax[c] = max_j |W[j][c]| times the mass
 * rhs[d]; the mass row: rhs[d]): the sum test of lp_residual alone lets a row of values of
 * 1e13 hide a mass row off by 1e-3 (found by fuzzing). */
static int lp_rows_ok(const double *W, int64_t nj, int64_t d, const double *rhs, const double *x,
                      const double *rowmax)
{
    double s = 0.0;
    for (int64_t j = 0; j < nj; j++) s += x[j];
    if (!(fabs(s - rhs[d]) <= 1e-7 * rhs[d])) return 0;
    for (int64_t c = 0; c < d; c++) {
        double acc = -rhs[c];
        for (int64_t j = 0; j < nj; j++) acc += W[j * d + c] * x[j];
        if (!(fabs(acc) <= 1e-7 * rowmax[c] * rhs[d])) return 0;
    }
    return 1;
}

/* Recompute the basic variables of the simplex's final basis in float64 (least squares on the
 * basic columns, LAPACK dgels), the nonbasic ones being 0: the vertex then meets the equality
 * constraints to rounding instead of GLPK's feasibility tolerance. Column k of P holds key
 * colkey[k] (-1: the aggregate column of lp_run, never basic at a vertex of the LP); the basic
 * keys enter the least squares in ascending key order. x is replaced only when the result is
 * nonnegative (up to rounding) and closer to the constraints. */
static void polish(glp_prob *P, const int64_t *colkey, int64_t ncol, const double *VJ,
                   int64_t nj, int64_t d, const double *rhs, double *x, double *work,
                   char *mark)
{
    int64_t m = d + 1, nb = 0;
    int64_t *idx = malloc((size_t)m * sizeof *idx);
    double *A = malloc((size_t)(m * m) * sizeof *A), *b = malloc((size_t)m * sizeof *b);
    if (!idx || !A || !b) goto out;
    memset(mark, 0, (size_t)nj);
    for (int64_t k = 0; k < ncol; k++)
        if (glp_get_col_stat(P, (int)k + 1) == GLP_BS) {
            if (colkey[k] < 0) goto out; /* the aggregate is basic: not a vertex, keep GLPK's */
            mark[colkey[k]] = 1;
        }
    for (int64_t j = 0; j < nj && nb < m; j++)
        if (mark[j]) idx[nb++] = j;
    if (nb == 0) goto out;
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t c = 0; c < d; c++) A[i * m + c] = VJ[idx[i] * d + c];
        A[i * m + d] = 1.0;
    }
    memcpy(b, rhs, (size_t)m * sizeof *b);
    if (LAPACKE_dgels(LAPACK_COL_MAJOR, 'N', (lapack_int)m, (lapack_int)nb, 1, A, (lapack_int)m,
                      b, (lapack_int)m) != 0)
        goto out;
    double mx = 0.0;
    for (int64_t i = 0; i < nb; i++)
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    for (int64_t i = 0; i < nb; i++)
        if (b[i] < -1e-12 * mx) goto out; /* not a feasible vertex in float64: keep GLPK's */
    memset(work, 0, (size_t)nj * sizeof *work);
    for (int64_t i = 0; i < nb; i++) work[idx[i]] = b[i] > 0 ? b[i] : 0.0;
    if (lp_residual(VJ, nj, d, rhs, work) < lp_residual(VJ, nj, d, rhs, x))
        memcpy(x, work, (size_t)nj * sizeof *x);
out:
    free(idx);
    free(A);
    free(b);
}

/* ||x||_2 of n doubles without overflow or underflow (scaled by max |x_i|). */
static double safe_norm(const double *x, int64_t n)
{
    double amax = 0.0;
    for (int64_t i = 0; i < n; i++) amax = fmax(amax, fabs(x[i]));
    if (amax == 0.0 || !isfinite(amax)) return amax;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double y = x[i] / amax;
        s += y * y;
    }
    return amax * sqrt(s);
}

/* GLPK ends the process (abort) on an internal error unless an error hook is installed. The
 * hook jumps back to lp_guarded, which then calls glp_free_env as the GLPK reference manual
 * prescribes for this recovery (glp_error_hook; it frees every problem object). GLPK writes
 * its messages to stdout: the terminal hook keeps the first line as the reason and prints
 * nothing. */
typedef struct {
    jmp_buf jb;
    char msg[200];
} lp_guard;

static void lp_error_hook(void *info) { longjmp(((lp_guard *)info)->jb, 1); }

static int lp_term_hook(void *info, const char *s)
{
    lp_guard *g = info;
    size_t len = strlen(g->msg);
    for (; *s && *s != '\n' && len + 1 < sizeof g->msg && !strchr(g->msg, '\n'); s++)
        g->msg[len++] = *s;
    if (*s == '\n' && len + 1 < sizeof g->msg && len > 0) g->msg[len++] = '\n';
    g->msg[len] = '\0';
    return 1; /* nothing on the terminal */
}

/* The LP's inputs, outputs and scratch (W: the keys' values scaled per coordinate, see
 * witness_core; sizes in witness_core). */
typedef struct {
    const double *W, *aJ;
    int64_t nj, d;
    double *tv, *xbest;
    int *ind;
    double *val, *x, *rhs, *pw, *rowmax;
    char *in_s, *new_s, *in_k, *in_agg; /* in_k: the key is a column; in_agg: in the aggregate */
    int64_t nk;            /* keys that are columns */
    double *rs, *ss, *ext; /* scale factors of the rows (d + 1) and keys (nj); lp_scale scratch */
    double *y, *u;         /* row duals (d + 1); W y (nj) */
    int64_t *colkey;       /* key of each column of the LP (nj + 1; -1: the aggregate) */
    struct lp_cand *cand;  /* keys priced out (nj) */
} lp_job;

struct lp_cand {
    double dj;
    int64_t j;
};

/* Column generation (docs/theory.md, "TV witness"): the LP over nj keys is solved on a subset K
 * of the keys, plus one aggregate column that keeps it feasible from the start; keys whose
 * reduced cost under the subset's duals is negative are added until none is, which is the
 * optimality condition of the LP over all nj keys. Below AS_BN_CG_MIN keys every key is a
 * column from the start (the LP as written). */
#define AS_BN_CG_MIN 1024
#define AS_BN_CG_TOP 64     /* the heaviest keys in the first subset */
#define AS_BN_CG_SPREAD 192 /* and this many spread evenly over the rest */
#define AS_BN_CG_ADD 64     /* keys added per round at most (the most negative reduced costs) */

static int cmp_cand(const void *p, const void *q)
{
    const struct lp_cand *a = p, *b = q;
    if (a->dj != b->dj) return a->dj < b->dj ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

/* The extreme magnitudes |a_ij| r_i s_j (GLPK's product order) of the rows (i < d: coordinate i;
 * d: the mass row of ones) and of the columns of the LP's matrix, its zero entries left out; an
 * empty row has both extremes 1, as in GLPK. */
static void lp_extremes(const double *W, int64_t nj, int64_t d, const double *r, const double *s,
                        double *rmin, double *rmax, double *cmin, double *cmax)
{
    for (int64_t i = 0; i <= d; i++) {
        rmin[i] = INFINITY;
        rmax[i] = -1.0;
    }
    for (int64_t j = 0; j < nj; j++) {
        double t = 1.0 * (r[d] * s[j]), lo = t, hi = t;
        if (t < rmin[d]) rmin[d] = t;
        if (t > rmax[d]) rmax[d] = t;
        for (int64_t c = 0; c < d; c++) {
            double v = W[j * d + c];
            if (v == 0.0) continue;
            t = fabs(v) * (r[c] * s[j]);
            if (t < rmin[c]) rmin[c] = t;
            if (t > rmax[c]) rmax[c] = t;
            if (t < lo) lo = t;
            if (t > hi) hi = t;
        }
        if (cmin) cmin[j] = lo, cmax[j] = hi;
    }
    for (int64_t i = 0; i <= d; i++)
        if (rmax[i] < 0) rmin[i] = rmax[i] = 1.0;
}

static double lp_ratio(const double *mn, const double *mx, int64_t k)
{
    double ratio = 1.0;
    for (int64_t i = 0; i < k; i++)
        if (i == 0 || ratio < mx[i] / mn[i]) ratio = mx[i] / mn[i];
    return ratio;
}

/* The scale factors GLPK's glp_scale_prob(GLP_SF_AUTO) computes (geometric-mean iterations, at
 * most 15 while the ratio max|a|/min|a| improves by 10%, then equilibration; none when the
 * matrix is well scaled already), with the same floating-point operations on a dense copy of
 * the matrix: GLPK walks linked lists, which took longer than the simplex on 2048 keys. Rows
 * r[0..d], keys s[0..nj); ext: 2 (d + 1) + 2 nj scratch. */
static void lp_scale(const double *W, int64_t nj, int64_t d, double *r, double *s, double *ext)
{
    double *rmin = ext, *rmax = ext + d + 1, *cmin = ext + 2 * (d + 1), *cmax = cmin + nj;
    for (int64_t i = 0; i <= d; i++) r[i] = 1.0;
    for (int64_t j = 0; j < nj; j++) s[j] = 1.0;
    lp_extremes(W, nj, d, r, s, rmin, rmax, cmin, cmax);
    double lo = rmin[0], hi = rmax[0];
    for (int64_t i = 1; i <= d; i++) lo = fmin(lo, rmin[i]), hi = fmax(hi, rmax[i]);
    if (lo >= 0.10 && hi <= 10.0) return; /* well scaled: GLP_SF_SKIP */
    int flag = lp_ratio(rmin, rmax, d + 1) > lp_ratio(cmin, cmax, nj);
    double ratio = 0.0;
    for (int k = 1; k <= 15; k++) {
        double r_old = ratio;
        lp_extremes(W, nj, d, r, s, rmin, rmax, NULL, NULL);
        lo = rmin[0], hi = rmax[0];
        for (int64_t i = 1; i <= d; i++) lo = fmin(lo, rmin[i]), hi = fmax(hi, rmax[i]);
        ratio = hi / lo;
        if (k > 1 && ratio > 0.90 * r_old) break;
        for (int pass = 0; pass <= 1; pass++) {
            lp_extremes(W, nj, d, r, s, rmin, rmax, cmin, cmax);
            if (pass == flag)
                for (int64_t i = 0; i <= d; i++) r[i] = r[i] / sqrt(rmin[i] * rmax[i]);
            else
                for (int64_t j = 0; j < nj; j++) s[j] = s[j] / sqrt(cmin[j] * cmax[j]);
        }
    }
    lp_extremes(W, nj, d, r, s, rmin, rmax, cmin, cmax);
    flag = lp_ratio(rmin, rmax, d + 1) > lp_ratio(cmin, cmax, nj);
    for (int pass = 0; pass <= 1; pass++) {
        lp_extremes(W, nj, d, r, s, rmin, rmax, cmin, cmax);
        if (pass == flag)
            for (int64_t i = 0; i <= d; i++) r[i] = r[i] / rmax[i];
        else
            for (int64_t j = 0; j < nj; j++) s[j] = s[j] / cmax[j];
    }
}

/* the objective coefficient of key j: 1 on S, and the tie-break towards light receivers */
static double lp_cost(const lp_job *J, int64_t j)
{
    return (J->in_s[j] ? 1.0 : 0.0) + 1e-6 * J->aJ[j] / J->aJ[0];
}

/* key j as a new column of P */
static void lp_add_key(glp_prob *P, lp_job *J, int64_t j, int64_t *ncol)
{
    const int64_t d = J->d;
    int k = glp_add_cols(P, 1), ne = 0;
    for (int64_t c = 0; c < d; c++) {
        double v = J->W[j * d + c];
        if (v != 0.0) {
            ne++;
            J->ind[ne] = (int)c + 1;
            J->val[ne] = v;
        }
    }
    ne++;
    J->ind[ne] = (int)d + 1;
    J->val[ne] = 1.0;
    glp_set_mat_col(P, k, ne, J->ind, J->val);
    glp_set_col_bnds(P, k, GLP_LO, 0.0, 0.0);
    glp_set_sjj(P, k, J->ss[j]);
    glp_set_obj_coef(P, k, lp_cost(J, j));
    J->colkey[*ncol] = j;
    J->in_k[j] = 1;
    J->nk++;
    (*ncol)++;
}

/* Solve the LP of the current objective over all nj keys: GLPK's simplex on the columns of P
 * (warm started from P's basis), then price the keys outside with its row duals y,
 * d_j = c_j - y^T [w_j; 1], and add those with s_j d_j < -1e-7 (GLPK's dual feasibility
 * tolerance tol_dj on the scaled column), the most negative first, until none is left: the
 * duals are then feasible for the whole LP, and the basis optimal for it. Returns 0 when a
 * simplex call fails (iteration limit, GLPK's status not optimal). */
static int lp_solve(glp_prob *P, lp_job *J, const glp_smcp *parm, int64_t *ncol)
{
    const int64_t nj = J->nj, d = J->d;
    for (;;) {
        int rc = glp_simplex(P, parm);
        if (rc != 0 || glp_get_status(P) != GLP_OPT) return 0;
        if (J->nk >= nj) return 1;
        for (int64_t i = 0; i <= d; i++) J->y[i] = glp_get_row_dual(P, (int)i + 1);
        if (d > 0)
            cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)nj, (int)d, 1.0, J->W, (int)d, J->y, 1,
                        0.0, J->u, 1);
        else
            memset(J->u, 0, (size_t)nj * sizeof *J->u);
        int64_t nc = 0;
        for (int64_t j = 0; j < nj; j++) {
            if (J->in_k[j]) continue;
            double dj = (lp_cost(J, j) - J->u[j] - J->y[d]) * J->ss[j];
            if (dj < -1e-7) J->cand[nc++] = (struct lp_cand){dj, j};
        }
        if (nc == 0) return 1;
        if (nc > AS_BN_CG_ADD) {
            qsort(J->cand, (size_t)nc, sizeof *J->cand, cmp_cand);
            nc = AS_BN_CG_ADD;
        }
        for (int64_t i = 0; i < nc; i++) lp_add_key(P, J, J->cand[i].j, ncol);
    }
}

static void lp_run(lp_job *J)
{
    const double *W = J->W, *aJ = J->aJ;
    const int64_t nj = J->nj, d = J->d;
    double *x = J->x, *rhs = J->rhs, *pw = J->pw;
    char *in_s = J->in_s, *new_s = J->new_s, *in_k = J->in_k, *in_agg = J->in_agg;
    for (int64_t j = 0; j < nj; j++) {
        for (int64_t c = 0; c < d; c++) rhs[c] += W[j * d + c] * aJ[j];
        rhs[d] += aJ[j];
    }
    lp_scale(W, nj, d, J->rs, J->ss, J->ext);
    /* the first subset K: every key of a small LP; else the AS_BN_CG_TOP heaviest and
     * AS_BN_CG_SPREAD spread evenly over the rest (aJ is sorted by weight, largest first) */
    memset(in_k, 0, (size_t)nj);
    J->nk = 0;
    if (nj <= AS_BN_CG_MIN) {
        memset(in_agg, 0, (size_t)nj);
    } else {
        memset(in_agg, 1, (size_t)nj);
        for (int64_t j = 0; j < AS_BN_CG_TOP; j++) in_agg[j] = 0;
        for (int64_t i = 0; i < AS_BN_CG_SPREAD; i++)
            in_agg[AS_BN_CG_TOP + i * (nj - AS_BN_CG_TOP) / AS_BN_CG_SPREAD] = 0;
    }
    /* the aggregate column: the keys outside K in the proportions of aJ, a convex combination
     * of their columns; x = aJ is feasible with it at mass m_r. Its cost is theirs plus 1 per
     * unit of mass, so an optimum over all keys uses it only where no key could replace it */
    double m_r = 0.0;
    for (int64_t j = 0; j < nj; j++)
        if (in_agg[j]) m_r += aJ[j];
    int agg = m_r > 0.0;
    glp_prob *P = glp_create_prob();
    glp_set_obj_dir(P, GLP_MIN);
    glp_add_rows(P, (int)(d + 1));
    for (int64_t c = 0; c <= d; c++) {
        glp_set_row_bnds(P, (int)c + 1, GLP_FX, rhs[c], rhs[c]);
        glp_set_rii(P, (int)c + 1, J->rs[c]);
    }
    int64_t ncol = 0;
    if (agg) {
        int k = glp_add_cols(P, 1), ne = 0;
        double smax = 0.0;
        for (int64_t c = 0; c <= d; c++) {
            double v = 0.0;
            if (c < d) {
                for (int64_t j = 0; j < nj; j++)
                    if (in_agg[j]) v += W[j * d + c] * (aJ[j] / m_r);
            } else {
                v = 1.0;
            }
            if (v != 0.0) {
                ne++;
                J->ind[ne] = (int)c + 1;
                J->val[ne] = v;
                smax = fmax(smax, fabs(v) * J->rs[c]);
            }
        }
        glp_set_mat_col(P, k, ne, J->ind, J->val);
        glp_set_col_bnds(P, k, GLP_LO, 0.0, 0.0);
        glp_set_sjj(P, k, 1.0 / smax);
        J->colkey[ncol++] = -1;
    }
    for (int64_t j = 0; j < nj; j++)
        if (!in_agg[j]) lp_add_key(P, J, j, &ncol);
    glp_std_basis(P);
    glp_smcp parm;
    glp_init_smcp(&parm);
    parm.msg_lev = GLP_MSG_OFF;
    parm.meth = GLP_PRIMAL;
    parm.tol_bnd = 1e-10; /* primal feasibility (default 1e-7): the witness must be exact */
    /* an iteration limit (deterministic, unlike a time limit): GLPK's primal simplex can cycle
     * on degenerate LPs with tiny objective coefficients (found by fuzzing); a solve that hits
     * it counts as failed, the witness keeps the best vertex found so far */
    parm.it_lim = (int)(20 * (nj + d + 1) + 1000);
    double rnorm = fabs(rhs[d]);
    for (int64_t c = 0; c < d; c++) rnorm += fabs(rhs[c]);
    double *rowmax = J->rowmax;
    for (int64_t c = 0; c < d; c++) {
        rowmax[c] = 0.0;
        for (int64_t j = 0; j < nj; j++) rowmax[c] = fmax(rowmax[c], fabs(W[j * d + c]));
    }

    /* starting sets: the heaviest keys holding half the mass; the keys above the mean weight */
    double total = rhs[d], mean = total / (double)nj;
    for (int start = 0; start < 2; start++) {
        double acc = 0.0, prev = 0.0;
        for (int64_t j = 0; j < nj; j++) { /* aJ is sorted by weight, largest first */
            int in = start == 0 ? acc < 0.5 * total : aJ[j] > mean;
            in_s[j] = (char)in;
            acc += aJ[j];
        }
        for (int iter = 0; iter < AS_BN_LP_ITERS; iter++) {
            /* minimise a'(S); the tiny second term breaks the ties among optimal vertices
             * towards receivers where a is smallest, which can only raise TV */
            double c_r = 0.0;
            for (int64_t k = 0; k < ncol; k++)
                if (J->colkey[k] >= 0) glp_set_obj_coef(P, (int)k + 1, lp_cost(J, J->colkey[k]));
            if (agg) {
                for (int64_t j = 0; j < nj; j++)
                    if (in_agg[j]) c_r += lp_cost(J, j) * (aJ[j] / m_r);
                glp_set_obj_coef(P, 1, c_r + 1.0);
            }
            if (!lp_solve(P, J, &parm, &ncol)) {
                glp_std_basis(P); /* a failed solve: restart from the slack basis next time */
                break;
            }
            double t = 0.0;
            memset(x, 0, (size_t)nj * sizeof *x);
            for (int64_t k = 0; k < ncol; k++) {
                double v = glp_get_col_prim(P, (int)k + 1);
                v = v > 0 ? v : 0.0;
                if (J->colkey[k] >= 0) {
                    x[J->colkey[k]] += v;
                } else if (v > 0) { /* the aggregate: its keys in aJ's proportions */
                    for (int64_t j = 0; j < nj; j++)
                        if (in_agg[j]) x[j] += v * (aJ[j] / m_r);
                }
            }
            polish(P, J->colkey, ncol, W, nj, d, rhs, x, pw, new_s); /* new_s: scratch here */
            for (int64_t j = 0; j < nj; j++) t += fabs(aJ[j] - x[j]);
            t *= 0.5;
            /* a vertex GLPK accepted within its tolerance but that is not feasible in float64
             * (a basic variable below 0 by more than rounding) does not count as a witness */
            int exact = lp_residual(W, nj, d, rhs, x) <= 1e-10 * rnorm &&
                        lp_rows_ok(W, nj, d, rhs, x, rowmax);
            int improved = exact && t > *J->tv * (1 + 1e-12) + 1e-15;
            if (improved) {
                *J->tv = t;
                memcpy(J->xbest, x, (size_t)nj * sizeof *x);
            }
            int changed = 0;
            for (int64_t j = 0; j < nj; j++) {
                new_s[j] = (char)(aJ[j] > x[j]);
                if (new_s[j] != in_s[j]) changed = 1;
            }
            /* stop when the set is stable or the last step gained less than 0.1% */
            if (!changed || t < prev * (1 + 1e-3)) break;
            prev = t;
            memcpy(in_s, new_s, (size_t)nj);
        }
    }
    glp_delete_prob(P);
}

/* lp_run with GLPK's errors turned into a status (no GLPK error ends the process). */
static as_status lp_guarded(lp_job *J, char *err)
{
    lp_guard g;
    g.msg[0] = '\0';
    if (setjmp(g.jb)) {
        glp_free_env(); /* the documented recovery after a jump out of GLPK */
        char *nl = strchr(g.msg, '\n');
        if (nl) *nl = '\0';
        return as_err_set(err, AS_ERR_VALUE, "TV witness: the LP solver (GLPK) failed: %s",
                          g.msg[0] ? g.msg : "internal error");
    }
    glp_error_hook(lp_error_hook, &g);
    glp_term_hook(lp_term_hook, &g);
    glp_term_out(GLP_OFF);
    lp_run(J);
    glp_error_hook(NULL, NULL);
    glp_term_hook(NULL, NULL);
    return AS_OK;
}

/* The LP over the nj keys VJ (nj x d), weights aJ (>= 0, sorted largest first): a' = x on
 * those keys, x >= 0, VJ^T x = VJ^T aJ, 1^T x = 1^T aJ. Best TV = 1/2 sum |aJ - x| into *tv,
 * x into xbest.
 *
 * The fibre does not change when a coordinate of V is scaled, so the LP runs on
 * W[j][c] = VJ[j][c] 2^-e_c: for a coordinate whose largest magnitude lies outside
 * [2^-64, 2^64], 2^e_c is the power of two just above it (exact up to subnormal results,
 * entries in [-1, 1]: 1e200 and 1e-300 made GLPK's own scaling abort); other coordinates are
 * left as they are (e_c = 0, the LP of ordinary traces is unchanged). Entries below 2^-600 of
 * their coordinate's largest are dropped (a change of the constraints far below their
 * tolerance) so GLPK's geometric-mean scaling never multiplies two subnormals.
 * *res_g and *eg: the residual ||VJ^T (x - aJ)||_2 divided by 2^eg (the largest e_c), so
 * that res_g / (||o|| 2^-eg) is the relative residual without overflow; *res_m: |1^T (x - aJ)|. */
static as_status witness_core(const double *VJ, const double *aJ, int64_t nj, int64_t d,
                              double *tv, double *xbest, double *res_g, double *res_m, int *eg,
                              char *err)
{
    *tv = 0.0;
    *res_g = 0.0;
    *res_m = 0.0;
    *eg = 0;
    for (int64_t i = 0; i < nj * d; i++)
        if (!isfinite(VJ[i]))
            return as_err_set(err, AS_ERR_VALUE, "TV witness: a value is not finite (%g)", VJ[i]);
    for (int64_t j = 0; j < nj; j++)
        if (!(aJ[j] >= 0) || !isfinite(aJ[j]))
            return as_err_set(err, AS_ERR_VALUE, "TV witness: weight %lld is %g", (long long)j,
                              aJ[j]);
    memcpy(xbest, aJ, (size_t)nj * sizeof *xbest);
    if (nj < 2 || !(aJ[0] > 0)) return AS_OK;
    if (nj > 50000000 / (d + 1))
        return as_err_set(err, AS_ERR_USAGE, "TV witness: LP too large (%lld keys x %lld)",
                          (long long)nj, (long long)(d + 1));
    size_t m1 = (size_t)d + 2, n1 = (size_t)nj + 1;
    int *ind = malloc(m1 * sizeof *ind), *ec = malloc((size_t)(d > 0 ? d : 1) * sizeof *ec);
    double *val = malloc(m1 * sizeof *val), *x = malloc(n1 * sizeof *x);
    double *rhs = calloc(m1, sizeof *rhs), *rs = malloc(m1 * sizeof *rs);
    double *ss = malloc(n1 * sizeof *ss), *ext = malloc((2 * m1 + 2 * n1) * sizeof *ext);
    double *y = malloc(m1 * sizeof *y), *u = malloc(n1 * sizeof *u);
    int64_t *colkey = malloc(n1 * sizeof *colkey);
    struct lp_cand *cand = malloc(n1 * sizeof *cand);
    char *in_s = malloc(n1), *new_s = malloc(n1), *in_k = malloc(n1), *in_agg = malloc(n1);
    double *pw = malloc(n1 * sizeof *pw), *W = malloc((size_t)(nj * d + 1) * sizeof *W);
    double *acc = malloc((size_t)(d > 0 ? d : 1) * sizeof *acc);
    as_status st = AS_OK;
    if (!ind || !ec || !val || !x || !rhs || !rs || !ss || !ext || !y || !u || !colkey || !cand ||
        !in_s || !new_s || !in_k || !in_agg || !pw || !W || !acc) {
        st = as_err_set(err, AS_ERR_NOMEM, "TV witness: out of memory");
        goto out;
    }
    int emax = INT_MIN;
    for (int64_t c = 0; c < d; c++) {
        double mx = 0.0;
        for (int64_t j = 0; j < nj; j++) mx = fmax(mx, fabs(VJ[j * d + c]));
        ec[c] = 0;
        if (mx > 0 && (mx < 0x1p-64 || mx > 0x1p64)) frexp(mx, &ec[c]); /* mx < 2^ec */
        if (mx > 0 && ec[c] > emax) emax = ec[c];
        double tiny = ldexp(mx, -ec[c]) * 0x1p-600;
        for (int64_t j = 0; j < nj; j++) {
            double w = ldexp(VJ[j * d + c], -ec[c]);
            W[j * d + c] = fabs(w) < tiny ? 0.0 : w;
        }
    }
    *eg = emax == INT_MIN ? 0 : emax;
    lp_job J = {.W = W, .aJ = aJ, .nj = nj, .d = d, .tv = tv, .xbest = xbest, .ind = ind,
                .val = val, .x = x, .rhs = rhs, .pw = pw, .rowmax = acc, .in_s = in_s,
                .new_s = new_s, .in_k = in_k, .in_agg = in_agg, .rs = rs, .ss = ss, .ext = ext,
                .y = y, .u = u, .colkey = colkey, .cand = cand};
    st = lp_guarded(&J, err);
    if (st != AS_OK) goto out;
    /* residual of the constraints at the best point, in units of 2^eg */
    double s = 0.0;
    for (int64_t c = 0; c < d; c++) {
        double a = 0.0;
        for (int64_t j = 0; j < nj; j++) a += ldexp(VJ[j * d + c], -*eg) * (xbest[j] - aJ[j]);
        acc[c] = a;
    }
    for (int64_t j = 0; j < nj; j++) s += xbest[j] - aJ[j];
    *res_g = safe_norm(acc, d);
    *res_m = fabs(s);
out:
    free(ind);
    free(ec);
    free(val);
    free(x);
    free(rhs);
    free(rs);
    free(ss);
    free(ext);
    free(y);
    free(u);
    free(colkey);
    free(cand);
    free(in_s);
    free(new_s);
    free(in_k);
    free(in_agg);
    free(pw);
    free(W);
    free(acc);
    return st;
}
#endif

as_status as_bn_witness(const double *V, const double *a, int64_t n, int64_t d, int64_t keys,
                        double *tv, double *a_out, double *resid, char *err)
{
    *tv = NAN;
    if (resid) *resid = NAN;
#ifndef AS_HAVE_GLPK
    (void)V, (void)a, (void)n, (void)d, (void)keys, (void)a_out;
    return as_err_set(err, AS_ERR_USAGE,
                      "TV witness: attnscope was built without GLPK (Debian: libglpk-dev)");
#else
    int64_t nj = keys > 0 && keys < n ? keys : n;
    int64_t *ix = order_desc(a, n);
    double *VJ = malloc((size_t)((nj ? nj : 1) * d) * sizeof *VJ);
    double *aJ = malloc((size_t)(nj ? nj : 1) * sizeof *aJ);
    double *xJ = malloc((size_t)(nj ? nj : 1) * sizeof *xJ);
    as_status st = AS_OK;
    if (!ix || !VJ || !aJ || !xJ) {
        st = as_err_set(err, AS_ERR_NOMEM, "TV witness: out of memory");
        goto out;
    }
    for (int64_t j = 0; j < nj; j++) {
        memcpy(VJ + j * d, V + ix[j] * d, (size_t)d * sizeof *VJ);
        aJ[j] = a[ix[j]];
    }
    double res_g = 0.0, res_m = 0.0, t = 0.0;
    int eg = 0;
    st = witness_core(VJ, aJ, nj, d, &t, xJ, &res_g, &res_m, &eg, err);
    if (st != AS_OK) goto out;
    *tv = t;
    /* ||o|| / 2^eg without overflow: o in units of 2^eg */
    for (int64_t c = 0; c < d; c++) {
        double o = 0.0;
        for (int64_t i = 0; i < n; i++) o += ldexp(V[i * d + c], -eg) * a[i];
        VJ[c] = o; /* VJ is free now (nj >= 1 rows of d) */
    }
    double on = safe_norm(VJ, d);
    if (resid) *resid = (on > 0 ? res_g / on : ldexp(res_g, eg)) + res_m;
    if (a_out) {
        memcpy(a_out, a, (size_t)n * sizeof *a_out);
        for (int64_t j = 0; j < nj; j++) a_out[ix[j]] = xJ[j];
    }
out:
    free(ix);
    free(VJ);
    free(aJ);
    free(xJ);
    return st;
#endif
}

/* ------------------------------------------------------------------------ absorption */

/* delta = a - a_k for the top-k set given by the order ix; returns the missed mass 1 - P_S. */
static double topk_delta(const double *a, const int64_t *ix, int64_t n, int64_t k, double *delta,
                         double *captured)
{
    double p = 0.0, rest = 0.0;
    for (int64_t j = 0; j < k; j++) p += a[ix[j]];
    for (int64_t j = k; j < n; j++) rest += a[ix[j]];
    if (captured) *captured = p;
    for (int64_t j = k; j < n; j++) delta[ix[j]] = a[ix[j]];
    for (int64_t j = 0; j < k; j++) delta[ix[j]] = p > 0 ? -a[ix[j]] * rest / p : 0.0;
    return rest;
}

double as_bn_absorption(const double *V, const double *a, int64_t n, int64_t d, int64_t k,
                        double *captured)
{
    if (captured) *captured = NAN;
    if (n <= 0 || k < 1) return NAN;
    if (k > n) k = n;
    int64_t *ix = order_desc(a, n);
    double *delta = malloc((size_t)n * sizeof *delta);
    double r = NAN;
    if (ix && delta) {
        double rest = topk_delta(a, ix, n, k, delta, captured);
        double num = 0.0, vmax = 0.0;
        for (int64_t c = 0; c < d; c++) {
            double acc = 0.0;
            for (int64_t i = 0; i < n; i++) acc += V[i * d + c] * delta[i];
            num += acc * acc;
        }
        for (int64_t i = 0; i < n; i++) {
            double s = 0.0;
            for (int64_t c = 0; c < d; c++) s += V[i * d + c] * V[i * d + c];
            if (s > vmax) vmax = s;
        }
        vmax = sqrt(vmax);
        if (rest > 0 && vmax > 0) r = sqrt(num) / (2.0 * rest * vmax);
    }
    free(ix);
    free(delta);
    return r;
}

/* ----------------------------------------------------------------------------- a layer */

typedef struct {
    int64_t n_snap;
    int64_t *n;        /* distinct visible counts, ascending */
    int64_t *rank;     /* rank([V_n^T; 1^T]) */
    double *vmax;      /* max_{i < n} ||v_i|| */
} kv_snap;

static as_status kv_snapshots(const as_layer *l, int64_t g, const int64_t *ns, int64_t nn,
                              int64_t tile, kv_snap *ks, char *err)
{
    const int64_t d = l->d, d1 = d + 1;
    ks->n_snap = nn;
    ks->n = malloc((size_t)nn * sizeof *ks->n);
    ks->rank = malloc((size_t)nn * sizeof *ks->rank);
    ks->vmax = malloc((size_t)nn * sizeof *ks->vmax);
    double *buf = malloc((size_t)(tile * d) * sizeof *buf);
    double *rows = malloc((size_t)(tile * d1) * sizeof *rows);
    double *sv = malloc((size_t)d1 * sizeof *sv);
    as_tsqr *q = as_tsqr_new(d1, tile, err);
    as_status st = AS_OK;
    if (!q) {
        st = AS_ERR_NOMEM;
        goto out;
    }
    if (!ks->n || !ks->rank || !ks->vmax || !buf || !rows || !sv) {
        st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
        goto out;
    }
    memcpy(ks->n, ns, (size_t)nn * sizeof *ns);
    int64_t pos = 0;
    double vmax2 = 0.0;
    for (int64_t s = 0; s < nn && st == AS_OK; s++) {
        while (pos < ns[s] && st == AS_OK) {
            int64_t cnt = ns[s] - pos < tile ? ns[s] - pos : tile;
            as_layer_read_v(l, g, pos, cnt, buf);
            as_tensor_release(l->v, (uint64_t)((g * l->n + pos) * d), (uint64_t)(cnt * d));
            for (int64_t i = 0; i < cnt; i++) {
                double s2 = 0.0;
                for (int64_t c = 0; c < d; c++) {
                    double v = buf[i * d + c];
                    rows[i * d1 + c] = v;
                    s2 += v * v;
                }
                rows[i * d1 + d] = 1.0;
                if (s2 > vmax2) vmax2 = s2;
            }
            st = as_tsqr_add_rows(q, rows, cnt, d1, err);
            pos += cnt;
        }
        int64_t nsv = 0;
        if (st == AS_OK) st = as_tsqr_sv(q, sv, &nsv, err);
        if (st == AS_OK) {
            ks->rank[s] = rank_of_sv(sv, nsv, d1, ns[s]);
            ks->vmax[s] = sqrt(vmax2);
        }
    }
out:
    free(buf);
    free(rows);
    free(sv);
    as_tsqr_free(q);
    return st;
}

static void kv_snap_free(kv_snap *ks)
{
    free(ks->n);
    free(ks->rank);
    free(ks->vmax);
    memset(ks, 0, sizeof *ks);
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* The cheap quantities of one query in one pass over K and one over V: the weights p (softmax
 * of the scores, as as_attn_dense), their order ix (largest first), o = V^T p and, for every
 * budget b, dv[b] = V^T (p - p_k) (the top-k change of topk_delta) from the same tile of V.
 * Each output is accumulated tile by tile with the dgemv as_attn_output does, so the results
 * are those of as_attn_dense + one as_attn_output per budget, to the bit, with V read and
 * converted once instead of 1 + budgets times. rank (n) and dt (a tile) are scratch. */
typedef struct {
    double *qv, *vt, *dt;     /* d, tile x d, tile */
    int64_t *rank;            /* l->n */
    double rest[AS_BN_MAX_BUDGETS], cap[AS_BN_MAX_BUDGETS];
} bn_scratch;

static as_status query_pass(const as_layer *l, int64_t h, int64_t qi, const int64_t *k,
                            size_t nb, bn_scratch *w, double *p, int64_t **ix_out, double *o,
                            double *dv, int64_t *n_out, char *err)
{
    const int64_t d = l->d, g = as_layer_kv_head(l, h), n = as_layer_visible(l, qi);
    *ix_out = NULL;
    *n_out = n;
    as_layer_read_q(l, h, qi, w->qv);
    as_status st = as_attn_scores(l, g, w->qv, 1, n, l->scale, p, n, err);
    if (st != AS_OK) return st;
    as_softmax_inplace(p, n);
    int64_t *ix = order_desc(p, n);
    if (!ix) return as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
    for (int64_t j = 0; j < n; j++) w->rank[ix[j]] = j;
    for (size_t b = 0; b < nb; b++) { /* the sums of topk_delta, in its order */
        double ps = 0.0, rest = 0.0;
        for (int64_t j = 0; j < k[b]; j++) ps += p[ix[j]];
        for (int64_t j = k[b]; j < n; j++) rest += p[ix[j]];
        w->cap[b] = ps;
        w->rest[b] = rest;
    }
    for (int64_t c = 0; c < d; c++) o[c] = 0.0;
    for (size_t c = 0; c < nb * (size_t)d; c++) dv[c] = 0.0;
    int64_t tile = n < AS_ATTN_TILE ? n : AS_ATTN_TILE;
    for (int64_t j0 = 0; j0 < n; j0 += tile) {
        int64_t cnt = n - j0 < tile ? n - j0 : tile;
        as_layer_read_v(l, g, j0, cnt, w->vt);
        cblas_dgemv(CblasRowMajor, CblasTrans, (int)cnt, (int)d, 1.0, w->vt, (int)d, p + j0, 1,
                    1.0, o, 1);
        for (size_t b = 0; b < nb; b++) {
            double ps = w->cap[b], rest = w->rest[b];
            for (int64_t i = 0; i < cnt; i++) {
                double a = p[j0 + i];
                w->dt[i] = w->rank[j0 + i] >= k[b] ? a : ps > 0 ? -a * rest / ps : 0.0;
            }
            cblas_dgemv(CblasRowMajor, CblasTrans, (int)cnt, (int)d, 1.0, w->vt, (int)d, w->dt,
                        1, 1.0, dv + b * (size_t)d, 1);
        }
    }
    *ix_out = ix;
    return AS_OK;
}

as_status as_bn_layer(const as_layer *l, const as_bn_opts *o, as_bn_query **out, size_t *n_out,
                      char *err)
{
    as_bn_opts def;
    if (!o) {
        as_bn_opts_init(&def);
        o = &def;
    }
    *out = NULL;
    *n_out = 0;
    if (o->head >= l->hq || o->query >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "layer %d has %lld query heads and %lld queries",
                          l->index, (long long)l->hq, (long long)l->t);
    if (o->n_budgets > AS_BN_MAX_BUDGETS)
        return as_err_set(err, AS_ERR_USAGE, "bottleneck: at most %d budgets", AS_BN_MAX_BUDGETS);
    if (o->witness && !as_bn_have_lp())
        return as_err_set(err, AS_ERR_USAGE,
                          "TV witness: attnscope was built without GLPK (Debian: libglpk-dev)");
    const int64_t d = l->d, t = l->t, hq = l->hq;
    int64_t h0 = o->head >= 0 ? o->head : 0, h1 = o->head >= 0 ? o->head + 1 : hq;
    int64_t q0 = o->query >= 0 ? o->query : 0, q1 = o->query >= 0 ? o->query + 1 : t;
    int64_t tile = o->tile > 0 ? o->tile : AS_ATTN_TILE;
    size_t nrec = (size_t)((h1 - h0) * (q1 - q0));
    as_bn_query *recs = calloc(nrec ? nrec : 1, sizeof *recs);
    int64_t *ns = malloc((size_t)(t ? t : 1) * sizeof *ns);
    double *p = malloc((size_t)(l->n ? l->n : 1) * sizeof *p);
    int64_t vtile = l->n < AS_ATTN_TILE ? (l->n ? l->n : 1) : AS_ATTN_TILE;
    bn_scratch ws;
    ws.qv = malloc((size_t)d * sizeof *ws.qv);
    ws.vt = malloc((size_t)(vtile * d) * sizeof *ws.vt);
    ws.dt = malloc((size_t)vtile * sizeof *ws.dt);
    ws.rank = malloc((size_t)(l->n ? l->n : 1) * sizeof *ws.rank);
    size_t nbd = (o->n_budgets ? o->n_budgets : 1) * (size_t)d;
    double *o_vec = malloc((size_t)d * sizeof *o_vec), *dv = malloc(nbd * sizeof *dv);
    int64_t kb[AS_BN_MAX_BUDGETS];
    int64_t nj_max = o->witness_keys > 0 && o->witness_keys < l->n ? o->witness_keys : l->n;
    double *VJ = o->witness ? malloc((size_t)((nj_max ? nj_max : 1) * d) * sizeof *VJ) : NULL;
    double *aJ = o->witness ? malloc((size_t)(nj_max ? nj_max : 1) * sizeof *aJ) : NULL;
    double *xJ = o->witness ? malloc((size_t)(nj_max ? nj_max : 1) * sizeof *xJ) : NULL;
    kv_snap ks;
    memset(&ks, 0, sizeof ks);
    int64_t ks_g = -1;
    as_status st = AS_OK;
    if (!recs || !ns || !p || !ws.qv || !ws.vt || !ws.dt || !ws.rank || !o_vec || !dv ||
        (o->witness && (!VJ || !aJ || !xJ))) {
        st = as_err_set(err, AS_ERR_NOMEM, "bottleneck: out of memory");
        goto out;
    }
    /* distinct visible counts of the selected queries */
    int64_t nn = 0;
    for (int64_t qi = q0; qi < q1; qi++) ns[nn++] = as_layer_visible(l, qi);
    qsort(ns, (size_t)nn, sizeof *ns, cmp_i64);
    int64_t w = 0;
    for (int64_t i = 0; i < nn; i++)
        if (w == 0 || ns[i] != ns[w - 1]) ns[w++] = ns[i];
    nn = w;

    size_t r = 0;
    for (int64_t h = h0; h < h1 && st == AS_OK; h++) {
        int64_t g = as_layer_kv_head(l, h);
        if (g != ks_g) {
            kv_snap_free(&ks);
            if ((st = kv_snapshots(l, g, ns, nn, tile, &ks, err)) != AS_OK) break;
            ks_g = g;
        }
        for (int64_t qi = q0; qi < q1 && st == AS_OK; qi++, r++) {
            as_bn_query *b = &recs[r];
            int64_t n = as_layer_visible(l, qi), *ix = NULL;
            b->n_budgets = o->n_budgets;
            for (size_t bi = 0; bi < o->n_budgets; bi++) {
                b->budget[bi] = o->budgets[bi];
                kb[bi] = b->k[bi] = as_budget_keys((as_budget){o->budgets[bi], 0}, n); /* the rule of `sparsity` */
            }
            if ((st = query_pass(l, h, qi, kb, o->n_budgets, &ws, p, &ix, o_vec, dv, &n, err)) !=
                AS_OK)
                break;
            b->head = h;
            b->kv_head = g;
            b->query = qi;
            b->n = n;
            b->d = d;
            int64_t s = 0;
            while (s < ks.n_snap - 1 && ks.n[s] != n) s++;
            b->value_rank = ks.rank[s];
            b->collision_dim = n - ks.rank[s];
            b->v_max_norm = ks.vmax[s];
            b->tv_witness = NAN;
            b->witness_residual = NAN;
            /* absorption of oracle top-k at each budget */
            for (size_t bi = 0; bi < o->n_budgets; bi++) {
                double num = 0.0, rest = ws.rest[bi];
                const double *dvb = dv + bi * (size_t)d;
                b->captured_mass[bi] = ws.cap[bi];
                for (int64_t c = 0; c < d; c++) num += dvb[c] * dvb[c];
                b->absorption[bi] = rest > 0 && b->v_max_norm > 0
                                        ? sqrt(num) / (2.0 * rest * b->v_max_norm)
                                        : NAN;
            }
#ifdef AS_HAVE_GLPK
            if (st == AS_OK && o->witness) {
                int64_t nj = nj_max < n ? nj_max : n;
                for (int64_t j = 0; j < nj; j++) {
                    as_layer_read_v(l, g, ix[j], 1, VJ + j * d);
                    aJ[j] = p[ix[j]];
                }
                double tv = 0.0, res_g = 0.0, res_m = 0.0;
                int eg = 0;
                st = witness_core(VJ, aJ, nj, d, &tv, xJ, &res_g, &res_m, &eg, err);
                if (st == AS_OK) {
                    for (int64_t c = 0; c < d; c++) dv[c] = ldexp(o_vec[c], -eg);
                    double on = safe_norm(dv, d);
                    b->tv_witness = tv;
                    b->witness_keys = nj;
                    b->witness_residual = (on > 0 ? res_g / on : ldexp(res_g, eg)) + res_m;
                }
            }
#endif
            free(ix);
            if (o->progress) o->progress(o->ctx, (uint64_t)(r + 1), (uint64_t)nrec);
        }
    }
out:
    kv_snap_free(&ks);
    free(ns);
    free(p);
    free(ws.qv);
    free(ws.vt);
    free(ws.dt);
    free(ws.rank);
    free(o_vec);
    free(dv);
    free(VJ);
    free(aJ);
    free(xJ);
    if (st != AS_OK) {
        free(recs);
        return st;
    }
    *out = recs;
    *n_out = nrec;
    return AS_OK;
}
