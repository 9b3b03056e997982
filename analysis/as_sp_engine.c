#include "as_sp_engine.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_sp_sampling.h"

#define SP_TILE 2048           /* keys per V tile in the checking pass */
#define SP_RTOL 1e-9           /* relative slack on bounds for rounding */

as_status as_sp_config_check_layer(const as_sp_config *cfg, const as_layer *l, char *err)
{
    if (cfg->head >= l->hq || cfg->query >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "layer %d has %lld heads and %lld queries",
                          l->index, (long long)l->hq, (long long)l->t);
    if (l->n > INT32_MAX)
        return as_err_set(err, AS_ERR_USAGE, "layer %d: N = %lld keys is more than supported",
                          l->index, (long long)l->n);
    return AS_OK;
}

void as_sp_config_init(as_sp_config *c)
{
    memset(c, 0, sizeof *c);
    c->layer = -1;
    c->head = -1;
    c->query = -1;
    as_sp_params_init(&c->params);
    c->trials = 1;
    c->out_tol = 1e-2;
}


/* ---- the block engine ---------------------------------------------------------------------- */

typedef struct {
    int64_t h, qi, n;
} sp_row;

typedef struct {
    const as_layer *l;
    int64_t kvh, d, nmax, mb;
    sp_row *rows;
    double *Q, *Sc, *P, *O, *lse, *on2;
    double *lam;        /* per row: max_i |s_i| + |lse|, the size of the exponents' arguments */
    double vmax;
    const as_sp_pages *pages;
} sp_block;

static void block_free(sp_block *B)
{
    free(B->rows), free(B->Q), free(B->Sc), free(B->P), free(B->O), free(B->lse), free(B->on2);
    free(B->lam);
    memset(B, 0, sizeof *B);
}

static as_status block_alloc(sp_block *B, const as_layer *l, int64_t kvh, int64_t mb, int64_t nmax,
                             char *err)
{
    memset(B, 0, sizeof *B);
    B->l = l;
    B->kvh = kvh;
    B->d = l->d;
    B->nmax = nmax;
    B->mb = mb;
    size_t md = (size_t)mb * (size_t)l->d, mn = (size_t)mb * (size_t)nmax;
    B->rows = malloc((size_t)mb * sizeof *B->rows);
    B->Q = malloc(md * sizeof(double));
    B->Sc = malloc(mn * sizeof(double));
    B->P = malloc(mn * sizeof(double));
    B->O = malloc(md * sizeof(double));
    B->lse = malloc((size_t)mb * sizeof(double));
    B->on2 = malloc((size_t)mb * sizeof(double));
    B->lam = malloc((size_t)mb * sizeof(double));
    if (!B->rows || !B->Q || !B->Sc || !B->P || !B->O || !B->lse || !B->on2 || !B->lam) {
        block_free(B);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory (score block of %lld x %lld)",
                          (long long)mb, (long long)nmax);
    }
    return AS_OK;
}

/* Scores, softmax and dense outputs of the block's rows (rows[], mb and nmax set). */
static as_status block_dense(sp_block *B, char *err)
{
    const as_layer *l = B->l;
    const int64_t d = B->d, nm = B->nmax, mb = B->mb;
    for (int64_t r = 0; r < mb; r++) as_layer_read_q(l, B->rows[r].h, B->rows[r].qi, B->Q + r * d);
    as_status st = as_attn_scores(l, B->kvh, B->Q, mb, nm, l->scale, B->Sc, nm, err);
    if (st != AS_OK) return st;
    for (int64_t r = 0; r < mb; r++)
        B->lse[r] = as_softmax_row(B->Sc + r * nm, B->P + r * nm, B->rows[r].n, nm, &B->lam[r]);
    for (int64_t i = 0; i < mb * d; i++) B->O[i] = 0.0;
    int64_t tile = nm < SP_TILE ? nm : SP_TILE;
    double *vt = malloc((size_t)tile * (size_t)d * sizeof *vt);
    if (!vt) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    double vmax2 = 0;
    for (int64_t j0 = 0; j0 < nm; j0 += tile) {
        int64_t cnt = nm - j0 < tile ? nm - j0 : tile;
        as_layer_read_v(l, B->kvh, j0, cnt, vt);
        for (int64_t i = 0; i < cnt; i++) {
            double s = 0;
            for (int64_t c = 0; c < d; c++) s += vt[i * d + c] * vt[i * d + c];
            if (s > vmax2) vmax2 = s;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mb, (int)d, (int)cnt, 1.0,
                    B->P + j0, (int)nm, vt, (int)d, 1.0, B->O, (int)d);
    }
    free(vt);
    B->vmax = sqrt(vmax2);
    for (int64_t r = 0; r < mb; r++) {
        double s = 0;
        for (int64_t c = 0; c < d; c++) s += B->O[r * d + c] * B->O[r * d + c];
        B->on2[r] = s;
    }
    return AS_OK;
}

/* Read the V rows of sorted idx[0..k) in runs and accumulate out += sum_j w[j] v_{idx[j]}. */
static void gather_acc(const as_layer *l, int64_t kvh, const int64_t *idx, const double *w,
                       int64_t k, double *out, double *buf, int64_t bufrows)
{
    const int64_t d = l->d;
    int64_t j = 0;
    while (j < k) {
        int64_t e = j + 1;
        while (e < k && idx[e] == idx[e - 1] + 1 && e - j < bufrows) e++;
        as_layer_read_v(l, kvh, idx[j], e - j, buf);
        for (int64_t t = j; t < e; t++) {
            const double *v = buf + (t - j) * d;
            for (int64_t c = 0; c < d; c++) out[c] += w[t] * v[c];
        }
        j = e;
    }
}

static double dist2(const double *a, const double *b, int64_t d)
{
    double s = 0;
    for (int64_t c = 0; c < d; c++) {
        double t = a[c] - b[c];
        s += t * t;
    }
    return s;
}

/* Per-row state of one (method, budget) on a block. */
typedef struct {
    as_sp_sel sel;
    int64_t *touch;      /* S: the checked subset (subset methods: S; sampling: H u sample) */
    int64_t n_touch;
    int64_t pS, pH;      /* pass pointers into touch / sel.det */
    double logPS;
    double ph;           /* P_H (sampling) */
    double ybar2, oy;    /* ||ybar||^2, o . ybar */
    double oS2;
    double abar;
    double Prest, maxd2, ssq_y, maxy2, ssq_e, dev2;
    double maxa;         /* page-is, Poisson: the largest weight a_j with pi_j < 1 */
    double *errs;        /* per trial errors (sampling) */
    int has_kernel;
} sp_rs;

typedef struct {
    as_sp_method method;
    size_t budget_index;
    as_budget budget;
    const as_sp_params *p;
    int trials;
    double eps_rel, out_tol;
    /* for as_sp_check_subset: an explicit subset and output for row 0 */
    int given;
    const int64_t *given_S;
    int64_t given_k;
    const double *given_ohat;
} sp_combo;

/* Sparse softmax output over touch (sorted) from raw scores sc; returns log P_S. */
static double subset_output(const sp_block *B, const double *sc, double lse, const int64_t *S,
                            int64_t k, double *oS, double *w, double *buf, int64_t bufrows)
{
    const int64_t d = B->d;
    for (int64_t c = 0; c < d; c++) oS[c] = 0;
    if (k == 0) return -INFINITY;
    double mx = -INFINITY;
    for (int64_t j = 0; j < k; j++) mx = fmax(mx, sc[S[j]]);
    double z = 0;
    for (int64_t j = 0; j < k; j++) z += (w[j] = exp(sc[S[j]] - mx));
    gather_acc(B->l, B->kvh, S, w, k, oS, buf, bufrows);
    for (int64_t c = 0; c < d; c++) oS[c] /= z;
    return mx + log(z) - lse;
}

/* The sampling estimator of one draw (H sorted, samp sorted, disjoint), from raw scores. */
static void estimate_row(const sp_block *B, const double *sc, const int64_t *H, int64_t nh,
                         const int64_t *samp, const double *sw, int64_t m, int64_t n,
                         double *ohat, int64_t *mi, double *w, double *buf, int64_t bufrows)
{
    const int64_t d = B->d;
    int64_t t = as_select_merge(H, nh, samp, m, mi);
    double mx = -INFINITY;
    for (int64_t j = 0; j < t; j++) mx = fmax(mx, sc[mi[j]]);
    /* uniform draws: every sample stands for (n - nh) / m keys; page-is: its own weight sw */
    double wt = m > 0 ? (double)(n - nh) / (double)m : 0, den = 0;
    int64_t ih = 0, is = 0;
    for (int64_t j = 0; j < t; j++) {
        int heavy = ih < nh && H[ih] == mi[j];
        if (heavy) ih++;
        double f = heavy ? 1.0 : sw ? sw[is++] : wt;
        w[j] = exp(sc[mi[j]] - mx) * f;
        den += w[j];
    }
    for (int64_t c = 0; c < d; c++) ohat[c] = 0;
    gather_acc(B->l, B->kvh, mi, w, t, ohat, buf, bufrows);
    for (int64_t c = 0; c < d; c++) ohat[c] /= den;
}

static double err_norm(const double *a, const double *b, int64_t d) { return sqrt(dist2(a, b, d)); }

/* Scratch of one (method, budget) on a block: the per-row state, the sparse and checked outputs,
 * and the buffers of the tile pass. */
typedef struct {
    int sampling;        /* the method samples */
    int is;              /* the method is page-is (importance weights) */
    int pois;            /* page-is with Poisson sampling */
    int np, slotS;       /* probes per row: [o, ybar,] o_S; the slot of o_S */
    int trials;          /* Monte-Carlo draws per row */
    int64_t bufrows;     /* rows of buf (V gathers) */
    int64_t tile;        /* keys per V tile */
    int ldg;             /* leading dimension of G: mb x np */
    sp_rs *rs;
    double *oS, *ohat, *yb, *R, *probe, *w, *buf, *tmp, *vt, *vn2, *G, *W, *sw;
    int64_t *mi, *sbuf;
} sp_work;

static void work_free(sp_work *X, int64_t mb)
{
    if (X->rs)
        for (int64_t r = 0; r < mb; r++) {
            if (X->rs[r].touch != X->rs[r].sel.det) free(X->rs[r].touch);
            free(X->rs[r].errs);
            as_sp_sel_free(&X->rs[r].sel);
        }
    free(X->rs), free(X->oS), free(X->ohat), free(X->yb), free(X->R), free(X->probe), free(X->w),
        free(X->mi), free(X->sbuf), free(X->buf), free(X->tmp), free(X->vt), free(X->vn2),
        free(X->G), free(X->W), free(X->sw);
    memset(X, 0, sizeof *X);
}

/* Allocate the scratch of C on B (work_free releases it, also after a failure). */
static as_status work_alloc(sp_work *X, const sp_block *B, const sp_combo *C, char *err)
{
    const int64_t d = B->d, nm = B->nmax, mb = B->mb;
    memset(X, 0, sizeof *X);
    X->sampling = as_sp_method_is_sampling(C->method);
    X->is = C->method == AS_SP_PAGE_IS;
    X->pois = X->is && C->p->is_draw == AS_SP_IS_POISSON;
    X->np = X->sampling ? 3 : 1;
    X->slotS = X->np - 1;
    X->trials = X->sampling ? (C->trials > 0 ? C->trials : 1) : 1;
    X->bufrows = 256;
    X->tile = nm < SP_TILE ? nm : SP_TILE;
    X->ldg = (int)(mb * X->np);
    const size_t md = (size_t)mb * (size_t)d, tile = (size_t)X->tile;
    X->rs = calloc((size_t)mb, sizeof *X->rs);
    X->oS = malloc(md * sizeof *X->oS);
    X->ohat = malloc(md * sizeof *X->ohat);
    X->yb = calloc(md, sizeof *X->yb);
    X->R = calloc(md, sizeof *X->R);
    X->probe = malloc(md * (size_t)X->np * sizeof *X->probe);
    X->w = malloc((size_t)nm * sizeof *X->w);
    X->mi = malloc((size_t)nm * sizeof *X->mi);
    X->sbuf = malloc((size_t)nm * sizeof *X->sbuf);
    X->sw = malloc((size_t)nm * sizeof *X->sw);
    X->buf = malloc((size_t)X->bufrows * (size_t)d * sizeof *X->buf);
    X->tmp = malloc((size_t)d * sizeof *X->tmp);
    X->vt = malloc(tile * (size_t)d * sizeof *X->vt);
    X->vn2 = malloc(tile * sizeof *X->vn2);
    X->G = malloc(tile * (size_t)mb * (size_t)X->np * sizeof *X->G);
    X->W = malloc((size_t)mb * tile * sizeof *X->W);
    if (!X->rs || !X->oS || !X->ohat || !X->yb || !X->R || !X->probe || !X->w || !X->mi ||
        !X->sbuf || !X->buf || !X->tmp || !X->vt || !X->vn2 || !X->G || !X->W || !X->sw)
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int64_t r = 0; r < mb; r++) as_sp_sel_init(&X->rs[r].sel);
    return AS_OK;
}

/* The explicit subset of as_sp_check_subset as a row's selection: sorted, without duplicates,
 * inside the row's n visible keys. */
static as_status row_given(as_sp_sel *sel, const sp_combo *C, int64_t n, char *err)
{
    as_status st = as_sp_sel_reserve(sel, C->given_k > 0 ? C->given_k : 1, err);
    if (st != AS_OK) return st;
    if (C->given_k > 0) memcpy(sel->det, C->given_S, (size_t)C->given_k * sizeof(int64_t));
    int64_t k = as_select_sort_unique(sel->det, C->given_k);
    if (k != C->given_k) return as_err_set(err, AS_ERR_VALUE, "subset lists a key more than once");
    for (int64_t j = 0; j < k; j++)
        if (sel->det[j] < 0 || sel->det[j] >= n)
            return as_err_set(err, AS_ERR_VALUE, "subset key %lld outside 0..%lld",
                              (long long)sel->det[j], (long long)(n - 1));
    sel->n_det = k;
    sel->n = n;
    sel->n_rest = n - k;
    return AS_OK;
}

/* A sampling row: the keys touched (H and the sample), the probe ybar = -(sum_H a_i (v_i - o)) /
 * |R| with P_H, and the estimator's draws (draw 0, from rng as the selection left it, into ohat;
 * draw t > 0 reseeded from the record's seed, only its error kept). */
static as_status row_sampling(const sp_block *B, sp_work *X, int64_t r, uint64_t seed, as_rng *rng,
                              char *err)
{
    sp_rs *s = &X->rs[r];
    const int64_t d = B->d, nm = B->nmax, n = B->rows[r].n;
    const double *sc = B->Sc + r * nm, *o = B->O + r * d, *p = B->P + r * nm;
    s->touch = malloc((size_t)(s->sel.n_det + s->sel.n_samp + 1) * sizeof *s->touch);
    s->errs = malloc((size_t)X->trials * sizeof *s->errs);
    if (!s->touch || !s->errs) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    s->n_touch = as_select_merge(s->sel.det, s->sel.n_det, s->sel.samp, s->sel.n_samp, s->touch);
    double ph = 0, *w = X->w;
    for (int64_t j = 0; j < s->sel.n_det; j++) {
        w[j] = p[s->sel.det[j]];
        ph += w[j];
    }
    double *y = X->yb + r * d;
    gather_acc(B->l, B->kvh, s->sel.det, w, s->sel.n_det, y, X->buf, X->bufrows);
    /* uniform draws: the mean ybar over R; page-is: the sum Ybar = sum_R y_j = -sum_H y_i */
    double nr = (double)s->sel.n_rest, div = X->is ? 1.0 : nr;
    for (int64_t c = 0; c < d; c++) y[c] = nr > 0 ? -(y[c] - ph * o[c]) / div : 0;
    s->ph = ph;
    s->abar = nr > 0 ? (1.0 - ph) / nr : 0;
    double y2 = 0, oy = 0;
    for (int64_t c = 0; c < d; c++) {
        y2 += y[c] * y[c];
        oy += o[c] * y[c];
    }
    s->ybar2 = y2;
    s->oy = oy;
    for (int t = 0; t < X->trials; t++) {
        int64_t ms = s->sel.n_samp;
        if (t > 0) {
            as_rng_seed(rng, as_seed_mix(seed, (uint64_t)t));
            if (X->pois)
                ms = s->sel.m_draws > 0 ? as_sp_is_draw_poisson(rng, s->sel.q, n, X->sbuf, X->sw)
                                        : 0;
            else if (X->is)
                ms = as_sp_is_draw(rng, s->sel.q, s->sel.cq, n, s->sel.m_draws, X->sbuf, X->sw);
            else
                ms = as_select_sample(rng, n, s->sel.det, s->sel.n_det, ms, X->sbuf);
            estimate_row(B, sc, s->sel.det, s->sel.n_det, X->sbuf, X->is ? X->sw : NULL, ms, n,
                         X->tmp, X->mi, X->w, X->buf, X->bufrows);
            s->errs[t] = err_norm(X->tmp, o, d);
        } else {
            estimate_row(B, sc, s->sel.det, s->sel.n_det, s->sel.samp,
                         X->is ? s->sel.samp_w : NULL, ms, n, X->ohat + r * d, X->mi, X->w,
                         X->buf, X->bufrows);
            s->errs[0] = err_norm(X->ohat + r * d, o, d);
        }
    }
    return AS_OK;
}

/* The output a subset row is checked with: the given one (as_sp_check_subset), the index file's
 * kernel output, or o_S itself. */
static void row_checked_output(const sp_block *B, const sp_combo *C, sp_work *X, int64_t r)
{
    const int64_t d = B->d;
    double *oh = X->ohat + r * d;
    if (C->given_ohat && r == 0) {
        memcpy(oh, C->given_ohat, (size_t)d * sizeof(double));
        X->rs[r].has_kernel = 1;
    } else if (C->method == AS_SP_INDEX && C->p->index &&
               as_index_has_output(C->p->index, B->l->index)) {
        as_index_get_output(C->p->index, B->l, B->rows[r].h, B->rows[r].qi, oh);
        X->rs[r].has_kernel = 1;
    } else {
        memcpy(oh, X->oS + r * d, (size_t)d * sizeof(double));
    }
}

/* Pass 1 for row r: its keys, the sampling draws, o_S over the keys touched, the output checked. */
static as_status row_select(const sp_block *B, const sp_combo *C, int layer, sp_work *X, int64_t r,
                            char *err)
{
    sp_rs *s = &X->rs[r];
    const sp_row *row = &B->rows[r];
    const int64_t d = B->d, nm = B->nmax, n = row->n;
    const double *sc = B->Sc + r * nm;
    uint64_t seed = as_sp_record_seed(C->p, layer, row->h, row->qi, as_budget_keys(C->budget, n),
                                      C->method);
    as_rng rng;
    as_rng_seed(&rng, as_seed_mix(seed, 0));
    as_status st = C->given ? row_given(&s->sel, C, n, err)
                            : as_sp_select_row(B->l, row->h, row->qi, B->Q + r * d, sc, n,
                                               C->method, C->budget, C->p, &rng, B->pages,
                                               &s->sel, err);
    if (st != AS_OK) return st;
    if (X->sampling) {
        if ((st = row_sampling(B, X, r, seed, &rng, err)) != AS_OK) return st;
    } else {
        s->touch = s->sel.det;
        s->n_touch = s->sel.n_det;
    }
    double *oS = X->oS + r * d;
    s->logPS = subset_output(B, sc, B->lse[r], s->touch, s->n_touch, oS, X->w, X->buf, X->bufrows);
    double o2 = 0;
    for (int64_t c = 0; c < d; c++) o2 += oS[c] * oS[c];
    s->oS2 = o2;
    if (!X->sampling) row_checked_output(B, C, X, r);
    s->maxd2 = s->maxy2 = s->dev2 = -1;
    return AS_OK;
}

/* Pass 2 for row r over the V tile of keys j0 .. j0 + cnt (vt, norms vn2, probe products G):
 * the complement's weights into W and its mass, max ||v_i - o_S|| over the complement, and for
 * sampling rows ||v_i - o||'s maximum and the statistics of y_j = a_j (v_j - o) over the rest.
 * Distances come from the Gram identity and are recomputed directly near the maximum or where
 * cancellation makes them unreliable. */
static void row_tile(const sp_block *B, sp_work *X, int64_t r, int64_t j0, int64_t cnt)
{
    sp_rs *s = &X->rs[r];
    const int64_t d = B->d, nm = B->nmax, n = B->rows[r].n;
    const double *p = B->P + r * nm, *o = B->O + r * d, *pS = X->oS + r * d, *y = X->yb + r * d;
    const int np = X->np, slotS = X->slotS;
    int64_t lim = n - j0 < cnt ? n - j0 : cnt;
    for (int64_t i = 0; i < lim; i++) {
        const int64_t gi = j0 + i;
        const double a = p[gi], *v = X->vt + i * d, *g = X->G + i * X->ldg + r * np,
                     vn2 = X->vn2[i];
        int inS = s->pS < s->n_touch && s->touch[s->pS] == gi;
        if (inS) s->pS++;
        if (!inS) {
            X->W[r * cnt + i] = a;
            s->Prest += a;
            double f = vn2 - 2 * g[slotS] + s->oS2;
            if (f >= s->maxd2 - 1e-10 * (vn2 + s->oS2)) {
                f = dist2(v, pS, d);
                if (f > s->maxd2) s->maxd2 = f;
            }
        }
        if (!X->sampling) continue;
        double fo = vn2 - 2 * g[0] + B->on2[r];
        double so = fo;
        if (fo < 1e-3 * (vn2 + B->on2[r])) so = dist2(v, o, d);
        if (fo >= s->dev2 - 1e-10 * (vn2 + B->on2[r])) {
            double e2 = dist2(v, o, d);
            if (e2 > s->dev2) s->dev2 = e2;
            so = e2;
        }
        int inH = s->pH < s->sel.n_det && s->sel.det[s->pH] == gi;
        if (inH) {
            s->pH++;
            continue;
        }
        if (X->pois) { /* (1 - pi)/pi-weighted squares, ranges over keys with pi < 1 */
            const double pi = s->sel.m_draws > 0 ? s->sel.q[gi] : 1.0;
            if (pi >= 1.0) continue;
            const double f = (1.0 - pi) / pi, gr = fmax(1.0 / pi - 1.0, 1.0);
            s->ssq_y += f * a * a * so;
            s->ssq_e += f * a * a;
            double r2 = a * a * so * gr * gr;
            if (r2 > s->maxy2) s->maxy2 = r2;
            if (a > s->maxa) s->maxa = a;
            continue;
        }
        /* ||a (v - o) - ybar||^2; page-is: ||(a / q) (v - o) - Ybar||^2 */
        const double qi = X->is && s->sel.m_draws > 0 ? s->sel.q[gi] : 1.0, aq = a / qi;
        double fy = aq * aq * so - 2 * aq * (g[1] - s->oy) + s->ybar2;
        double ref = aq * aq * so + s->ybar2;
        if (fy < 1e-3 * ref || fy >= s->maxy2 - 1e-10 * ref) {
            double t = 0;
            for (int64_t c = 0; c < d; c++) {
                double u = aq * (v[c] - o[c]) - y[c];
                t += u * u;
            }
            fy = t;
            if (fy > s->maxy2) s->maxy2 = fy;
        }
        if (X->is) { /* sum_R ||y_j||^2 / q_j and sum_R a_j^2 / q_j */
            s->ssq_y += a * aq * so;
            s->ssq_e += a * aq;
        } else {
            s->ssq_y += fy;
            s->ssq_e += (a - s->abar) * (a - s->abar);
        }
    }
}

/* Pass 2: one pass over V in tiles for every row: complement sums R (BLAS), max distances,
 * sampling statistics. */
static void block_tiles(const sp_block *B, sp_work *X)
{
    const int64_t d = B->d, nm = B->nmax, mb = B->mb;
    for (int64_t r = 0; r < mb; r++) {
        double *pr = X->probe + (size_t)r * X->np * d;
        if (X->sampling) {
            memcpy(pr, B->O + r * d, (size_t)d * sizeof(double));
            memcpy(pr + d, X->yb + r * d, (size_t)d * sizeof(double));
        }
        memcpy(pr + (size_t)X->slotS * d, X->oS + r * d, (size_t)d * sizeof(double));
    }
    for (int64_t j0 = 0; j0 < nm; j0 += X->tile) {
        int64_t cnt = nm - j0 < X->tile ? nm - j0 : X->tile;
        as_layer_read_v(B->l, B->kvh, j0, cnt, X->vt);
        for (int64_t i = 0; i < cnt; i++) {
            double s2 = 0;
            for (int64_t c = 0; c < d; c++) s2 += X->vt[i * d + c] * X->vt[i * d + c];
            X->vn2[i] = s2;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)cnt, X->ldg, (int)d, 1.0, X->vt,
                    (int)d, X->probe, (int)d, 0.0, X->G, X->ldg);
        memset(X->W, 0, (size_t)mb * (size_t)cnt * sizeof *X->W);
        for (int64_t r = 0; r < mb; r++) row_tile(B, X, r, j0, cnt);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mb, (int)d, (int)cnt, 1.0, X->W,
                    (int)cnt, X->vt, (int)d, 1.0, X->R, (int)d);
    }
}

/* A subset method's error, bound and check (the kernel's output allowed out_tol ||o||). */
static void eval_subset(const sp_combo *C, const sp_rs *s, double sb, double serr, double abs_err,
                        as_sp_record *rec)
{
    as_sp_eval *ev = &rec->ev;
    ev->k = s->n_touch;
    ev->abs_error = abs_err;
    ev->bound = sb;
    double allow = sb * (1 + SP_RTOL) + ev->tol;
    if (s->has_kernel) allow += C->out_tol * ev->norm_o;
    ev->violated = ev->abs_error > allow || !ev->identity_ok;
    ev->subset_bound = sb;
    ev->subset_violated = serr > sb * (1 + SP_RTOL) + ev->tol || !ev->identity_ok;
    rec->has_kernel = s->has_kernel;
    rec->trials = 1;
}

/* page-is: epsilon from the importance-sampling statistics (as_sp_is_eps), the draws'
 * exceedances, the a-posteriori subset bound of the keys read, and (eps_rel > 0) the draws a
 * target needs. samples: the draws m (the distinct keys read are k - |H|). */
static void eval_is(const sp_combo *C, const sp_rs *s, int trials, double sb, double serr,
                    as_sp_record *rec)
{
    as_sp_eval *ev = &rec->ev;
    /* with replacement: the draws m; Poisson: the keys the sample kept */
    ev->samples = C->p->is_draw == AS_SP_IS_POISSON ? s->sel.n_samp : s->sel.m_draws;
    as_sp_isstats ss;
    memset(&ss, 0, sizeof ss);
    ss.poisson = C->p->is_draw == AS_SP_IS_POISSON;
    ss.max_a = s->maxa;
    ss.n_rest = s->sel.m_draws > 0 ? s->sel.n_rest : 0; /* no draws: H is everything or exact */
    ss.p_heavy = s->ph;
    ss.mass_rest = 1.0 - s->ph > 0 ? 1.0 - s->ph : 0.0;
    ss.sum_y2q = s->ssq_y;
    ss.max_yq = s->maxy2 > 0 ? sqrt(s->maxy2) : 0;
    ss.sum_a2q = s->ssq_e;
    ss.ybar2 = ss.poisson ? 0.0 : s->ybar2;
    ss.dev_max = s->dev2 > 0 ? sqrt(s->dev2) : 0;
    double eps = s->sel.m_draws > 0 ? as_sp_is_eps(&ss, s->sel.m_draws, C->p->delta)
                 : s->sel.n_rest > 0 ? sb : 0.0;
    ev->abs_error = s->errs[0];
    ev->bound = eps;
    ev->violated = s->errs[0] > eps * (1 + SP_RTOL) + ev->tol;
    for (int t = 0; t < trials; t++) rec->exceed += s->errs[t] > eps * (1 + SP_RTOL) + ev->tol;
    ev->subset_bound = sb;
    ev->subset_violated = serr > sb * (1 + SP_RTOL) + ev->tol || !ev->identity_ok;
    if (C->eps_rel > 0 && s->sel.m_draws > 0)
        ev->samples_needed = as_sp_is_size(&ss, C->eps_rel * ev->norm_o, C->p->delta);
}

/* A sampling method's epsilon from the tiled population statistics, its draws' exceedances,
 * the a-posteriori subset bound, and (eps_rel > 0) the samples a target needs. */
static void eval_sampling(const sp_combo *C, const sp_rs *s, int trials, double sb, double serr,
                          as_sp_record *rec)
{
    as_sp_eval *ev = &rec->ev;
    ev->k = s->sel.n_det + s->sel.n_samp;
    ev->samples = s->sel.n_samp;
    if (C->method == AS_SP_PAGE_IS) {
        eval_is(C, s, trials, sb, serr, rec);
        return;
    }
    as_sp_sstats ss;
    double nr = (double)s->sel.n_rest;
    ss.n_rest = s->sel.n_rest;
    ss.p_heavy = s->ph;
    ss.mass_rest = 1.0 - s->ph > 0 ? 1.0 - s->ph : 0.0;
    ss.var_y = nr > 0 ? s->ssq_y / nr : 0;
    ss.max_y = s->maxy2 > 0 ? sqrt(s->maxy2) : 0;
    ss.var_e = nr > 0 ? s->ssq_e / nr : 0;
    ss.dev_max = s->dev2 > 0 ? sqrt(s->dev2) : 0;
    double eps = as_sp_sampling_eps(&ss, s->sel.n_samp, C->p->delta);
    ev->abs_error = s->errs[0];
    ev->bound = eps;
    ev->violated = s->errs[0] > eps * (1 + SP_RTOL) + ev->tol;
    for (int t = 0; t < trials; t++) rec->exceed += s->errs[t] > eps * (1 + SP_RTOL) + ev->tol;
    ev->subset_bound = sb;
    double e_sub = C->method == AS_SP_UNIFORM ? s->errs[0] : serr;
    ev->subset_violated = e_sub > sb * (1 + SP_RTOL) + ev->tol || !ev->identity_ok;
    if (C->eps_rel > 0)
        ev->samples_needed = as_sp_sampling_size(&ss, C->eps_rel * ev->norm_o, C->p->delta);
}

/* Pass 3 for row r: the record, with the exact identity o - o_S = (1 - P_S)(o_rest - o_S) and the
 * subset bound checked for the keys touched, then the method's own error and bound. */
static void row_record(const sp_block *B, const sp_combo *C, int layer, const sp_work *X, int64_t r,
                       as_sp_record *rec)
{
    const sp_rs *s = &X->rs[r];
    const sp_row *row = &B->rows[r];
    const int64_t d = B->d, n = row->n;
    const double *o = B->O + r * d, *pS = X->oS + r * d, *Rr = X->R + r * d;
    memset(rec, 0, sizeof *rec);
    as_sp_eval *ev = &rec->ev;
    rec->layer = layer;
    rec->head = row->h;
    rec->kv_head = B->kvh;
    rec->query = row->qi;
    rec->method = C->method;
    rec->budget_index = C->budget_index;
    rec->trials = X->trials;
    rec->delta = X->sampling ? C->p->delta : 0;
    ev->n = n;
    ev->norm_o = sqrt(B->on2[r]);
    /* rounding: sums of n (weights) and d (dot products) terms, and exponents whose
     * arguments (s_i - m, log P_S = m_S + ln z_S - lse) carry u (|s_i| + |lse|) absolute
     * error each (docs/theory.md, "Floating point") */
    const double lam = B->lam[r];
    ev->tol = 16.0 * ((double)(n + d) + lam) * DBL_EPSILON * (B->vmax > 0 ? B->vmax : DBL_MIN);
    ev->samples_needed = -1;
    /* the subset identity and bound for touch; 1 - P_S is the complement sum, which keeps
     * its relative precision however small the missed mass (log P_S cannot below ~n u) */
    const double one_m = s->Prest;
    double PS = one_m < 0.5 ? 1.0 - one_m : exp(s->logPS);
    double id2 = 0;
    for (int64_t c = 0; c < d; c++) {
        double t = (o[c] - pS[c]) - (Rr[c] - one_m * pS[c]);
        id2 += t * t;
    }
    ev->identity_error = sqrt(id2);
    double mass_res = fabs(exp(s->logPS) + s->Prest - 1.0);
    ev->identity_ok = ev->identity_error <= ev->tol &&
                      mass_res <= 16.0 * ((double)n + lam) * DBL_EPSILON;
    double sb = s->maxd2 > 0 ? one_m * sqrt(s->maxd2) : 0.0;
    double serr = err_norm(o, pS, d);
    ev->captured_mass = PS;
    if (!X->sampling)
        eval_subset(C, s, sb, serr, err_norm(o, X->ohat + r * d, d), rec);
    else
        eval_sampling(C, s, X->trials, sb, serr, rec);
    ev->rel_error = ev->norm_o > 0 ? ev->abs_error / ev->norm_o : NAN;
    ev->rel_bound = ev->norm_o > 0 ? ev->bound / ev->norm_o : NAN;
    if (C->budget.count > 0 || C->method == AS_SP_INDEX)
        rec->budget = (double)ev->k / (double)n;
    else
        rec->budget = C->budget.frac;
}

/* Evaluate one (method, budget) on every row of a block and emit the records: pass 1 selects
 * and computes the sparse outputs, pass 2 reads V once in tiles, pass 3 checks and calls back. */
static as_status block_combo(const sp_block *B, const sp_combo *C, int layer, as_sp_record_fn fn,
                             void *ctx, int *stop, char *err)
{
    sp_work X;
    as_status st = work_alloc(&X, B, C, err);
    for (int64_t r = 0; r < B->mb && st == AS_OK; r++) st = row_select(B, C, layer, &X, r, err);
    if (st == AS_OK) {
        block_tiles(B, &X);
        for (int64_t r = 0; r < B->mb && !*stop; r++) {
            as_sp_record rec;
            row_record(B, C, layer, &X, r, &rec);
            if (fn && fn(ctx, &rec)) *stop = 1;
        }
    }
    work_free(&X, B->mb);
    return st;
}

/* ---- whole trace --------------------------------------------------------------------------- */

as_status as_sp_run(const as_trace *tr, const as_sp_config *cfg, as_sp_record_fn fn, void *ctx,
                    char *err)
{
    as_status st = AS_OK;
    if (cfg->n_methods == 0) return as_err_set(err, AS_ERR_USAGE, "no method given");
    int need_budgets = 0, need_pages = 0;
    for (size_t i = 0; i < cfg->n_methods; i++) {
        if (cfg->methods[i] != AS_SP_INDEX) need_budgets = 1;
        if (cfg->methods[i] == AS_SP_PAGE || cfg->methods[i] == AS_SP_PAGE_SAMPLE) need_pages = 1;
        if (cfg->methods[i] == AS_SP_INDEX && !cfg->params.index)
            return as_err_set(err, AS_ERR_USAGE, "method 'index' needs an index file");
    }
    if (need_budgets && cfg->n_budgets == 0) return as_err_set(err, AS_ERR_USAGE, "no budget given");
    if (!(cfg->params.delta > 0 && cfg->params.delta < 1))
        return as_err_set(err, AS_ERR_USAGE, "delta must be in (0, 1)");
    size_t mem = cfg->mem_limit ? cfg->mem_limit : (size_t)512 << 20;
    /* work count for progress */
    uint64_t total = 0, done = 0;
    size_t combos = 0;
    for (size_t i = 0; i < cfg->n_methods; i++)
        combos += cfg->methods[i] == AS_SP_INDEX ? 1 : cfg->n_budgets;
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        int64_t nh = cfg->head >= 0 ? 1 : l->hq, nq = cfg->query >= 0 ? 1 : l->t;
        total += (uint64_t)(nh * nq) * combos;
    }
    int stop = 0, any = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr) && st == AS_OK && !stop; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        any = 1;
        as_status lst = as_sp_config_check_layer(cfg, l, err);
        if (lst != AS_OK) return lst;
        if (cfg->params.index) {
            int uses = 0;
            for (size_t i = 0; i < cfg->n_methods; i++) uses |= cfg->methods[i] == AS_SP_INDEX;
            if (uses && (st = as_index_check_layer(cfg->params.index, l, err)) != AS_OK) return st;
        }
        const int64_t group = l->hq / l->hkv;
        for (int64_t g = 0; g < l->hkv && st == AS_OK && !stop; g++) {
            /* rows of this kv head */
            int64_t nrows = 0;
            sp_row *rows = malloc((size_t)(group * l->t) * sizeof *rows);
            if (!rows) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
            for (int64_t h = g * group; h < (g + 1) * group; h++) {
                if (cfg->head >= 0 && h != cfg->head) continue;
                for (int64_t qi = 0; qi < l->t; qi++) {
                    if (cfg->query >= 0 && qi != cfg->query) continue;
                    rows[nrows++] = (sp_row){h, qi, as_layer_visible(l, qi)};
                }
            }
            if (nrows == 0) {
                free(rows);
                continue;
            }
            as_sp_pages pg;
            memset(&pg, 0, sizeof pg);
            if (need_pages && (st = as_sp_pages_build(l, g, as_sp_page_size(&cfg->params),
                                                      (as_sp_bounds)cfg->params.page_bounds, &pg,
                                                      err)) != AS_OK) {
                free(rows);
                return st;
            }
            for (int64_t r0 = 0; r0 < nrows && st == AS_OK && !stop;) {
                int64_t nmax = 0;
                /* block: as many rows as fit the memory limit (per row and key: scores and
                 * weights, 16 bytes; selection and sample index lists, 16; scratch, 8) */
                int64_t nm_all = 0;
                for (int64_t r = r0; r < nrows; r++) nm_all = rows[r].n > nm_all ? rows[r].n : nm_all;
                int64_t mb = (int64_t)(mem / ((size_t)nm_all * 40 + (size_t)l->d * 64));
                if (mb < 1) mb = 1;
                if (mb > nrows - r0) mb = nrows - r0;
                for (int64_t r = r0; r < r0 + mb; r++) nmax = rows[r].n > nmax ? rows[r].n : nmax;
                sp_block B;
                if ((st = block_alloc(&B, l, g, mb, nmax, err)) != AS_OK) break;
                memcpy(B.rows, rows + r0, (size_t)mb * sizeof *rows);
                B.pages = need_pages ? &pg : NULL;
                st = block_dense(&B, err);
                for (size_t mi = 0; mi < cfg->n_methods && st == AS_OK && !stop; mi++) {
                    as_sp_method m = cfg->methods[mi];
                    size_t nb = m == AS_SP_INDEX ? 1 : cfg->n_budgets;
                    for (size_t bi = 0; bi < nb && st == AS_OK && !stop; bi++) {
                        sp_combo C;
                        memset(&C, 0, sizeof C);
                        C.method = m;
                        C.budget_index = bi;
                        C.budget = m == AS_SP_INDEX ? (as_budget){1.0, 0} : cfg->budgets[bi];
                        C.p = &cfg->params;
                        C.trials = cfg->trials;
                        C.eps_rel = cfg->eps_rel;
                        C.out_tol = cfg->out_tol;
                        st = block_combo(&B, &C, l->index, fn, ctx, &stop, err);
                        done += (uint64_t)mb;
                        if (cfg->progress) cfg->progress(cfg->progress_ctx, done, total);
                    }
                }
                block_free(&B);
                r0 += mb;
            }
            as_sp_pages_free(&pg);
            free(rows);
        }
    }
    if (st == AS_OK && !any) st = as_err_set(err, AS_ERR_USAGE, "the trace has no layer %d", cfg->layer);
    return st;
}

/* ---- one query ----------------------------------------------------------------------------- */

static int capture_one(void *ctx, const as_sp_record *r)
{
    *(as_sp_record *)ctx = *r;
    return 1;
}

static as_status one_query_block(const as_layer *l, int64_t h, int64_t qi, sp_block *B, char *err)
{
    if (h < 0 || h >= l->hq || qi < 0 || qi >= l->t)
        return as_err_set(err, AS_ERR_USAGE, "head %lld / query %lld out of range", (long long)h,
                          (long long)qi);
    int64_t n = as_layer_visible(l, qi);
    as_status st = block_alloc(B, l, as_layer_kv_head(l, h), 1, n, err);
    if (st != AS_OK) return st;
    B->rows[0] = (sp_row){h, qi, n};
    st = block_dense(B, err);
    if (st != AS_OK) block_free(B);
    return st;
}

as_status as_sp_check_subset(const as_layer *l, int64_t h, int64_t qi, const int64_t *S,
                             int64_t k, const double *o_hat, double out_tol, as_sp_eval *ev,
                             double *o_S_out, char *err)
{
    sp_block B;
    as_status st = one_query_block(l, h, qi, &B, err);
    if (st != AS_OK) return st;
    as_sp_params p;
    as_sp_params_init(&p);
    sp_combo C;
    memset(&C, 0, sizeof C);
    C.method = AS_SP_INDEX;
    C.budget = (as_budget){1.0, 0};
    C.p = &p;
    C.trials = 1;
    C.out_tol = out_tol;
    if (k < 0 || (k > 0 && !S)) {
        block_free(&B);
        return as_err_set(err, AS_ERR_USAGE, "subset: bad key list");
    }
    C.given = 1;
    C.given_S = S;
    C.given_k = k;
    C.given_ohat = o_hat;
    as_sp_record rec;
    memset(&rec, 0, sizeof rec);
    int stop = 0;
    st = block_combo(&B, &C, l->index, capture_one, &rec, &stop, err);
    if (st == AS_OK) {
        *ev = rec.ev;
        if (o_S_out) {
            /* o_S again (cheap): the softmax restricted to S */
            int64_t *Ss = malloc((size_t)(k > 0 ? k : 1) * sizeof *Ss);
            double *w = malloc((size_t)(k > 0 ? k : 1) * sizeof *w);
            double *buf = malloc((size_t)256 * (size_t)l->d * sizeof *buf);
            if (!Ss || !w || !buf) {
                st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            } else {
                memcpy(Ss, S, (size_t)k * sizeof *Ss);
                as_select_sort_unique(Ss, k);
                subset_output(&B, B.Sc, B.lse[0], Ss, k, o_S_out, w, buf, 256);
            }
            free(Ss), free(w), free(buf);
        }
    }
    block_free(&B);
    return st;
}

as_status as_sp_eval_query(const as_layer *l, int64_t h, int64_t qi, as_sp_method m,
                           as_budget b, const as_sp_params *p, uint64_t trial, double eps_rel,
                           as_sp_eval *ev, char *err)
{
    sp_block B;
    as_status st = one_query_block(l, h, qi, &B, err);
    if (st != AS_OK) return st;
    as_sp_pages pg;
    memset(&pg, 0, sizeof pg);
    if (m == AS_SP_PAGE || m == AS_SP_PAGE_SAMPLE) {
        st = as_sp_pages_build(l, B.kvh, as_sp_page_size(p), (as_sp_bounds)p->page_bounds, &pg,
                               err);
        B.pages = &pg;
    }
    if (m == AS_SP_INDEX && st == AS_OK && !p->index)
        st = as_err_set(err, AS_ERR_USAGE, "method 'index' needs an index file");
    if (m == AS_SP_INDEX && st == AS_OK) st = as_index_check_layer(p->index, l, err);
    if (st == AS_OK) {
        /* trial t: make draw t the first one */
        as_sp_params pp = *p;
        sp_combo C;
        memset(&C, 0, sizeof C);
        C.method = m;
        C.budget = b;
        C.p = &pp;
        C.trials = 1;
        C.eps_rel = eps_rel;
        C.out_tol = 1e-2;
        if (trial > 0) pp.seed = as_seed_mix(p->seed, trial);
        as_sp_record rec;
        memset(&rec, 0, sizeof rec);
        int stop = 0;
        st = block_combo(&B, &C, l->index, capture_one, &rec, &stop, err);
        if (st == AS_OK) *ev = rec.ev;
    }
    as_sp_pages_free(&pg);
    block_free(&B);
    return st;
}
