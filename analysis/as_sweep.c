#include "as_sweep.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_attn.h"
#include "as_select.h"
#include "as_sp_sampling.h"
#include "as_sp_select.h"

#define SW_TILE 2048          /* keys per V tile */
#define SW_RTOL 1e-9          /* relative slack on bounds for rounding (as as_sp_engine) */
#define SW_TINY 1e-250        /* below this largest weight a set's sums are redone from scores */
#define SW_MAXB AS_SWEEP_MAX_BUDGETS
#define SW_CACHE 16384       /* candidates whose values a row keeps converted */
#define SW_CHUNK 4            /* rows per dgemm: a row's dense sums never depend on its block */

/* shell families: the nested sets of one method over the budgets */
enum { F_TOPK, F_SINK, F_PAGE, F_TSH, F_PSH, F_N };
/* sampling slots (bits slot * nb + b of a key's mask) */
enum { S_UNI, S_TS, S_PS, S_N };

int as_sweep_supports(const as_sp_config *cfg)
{
    int sampling = 0;
    for (size_t i = 0; i < cfg->n_methods; i++) {
        if (cfg->methods[i] == AS_SP_INDEX || cfg->methods[i] == AS_SP_PAGE_IS ||
            cfg->methods[i] >= AS_SP_N_METHODS)
            return 0; /* page-is: as_sp_run (its weighted draws are not shell sums) */
        sampling |= as_sp_method_is_sampling(cfg->methods[i]);
    }
    if (cfg->n_budgets < 1) return 0;
    if (cfg->n_budgets > 100) return 0; /* shell classes of two families fit a byte */
    return !sampling || cfg->n_budgets <= SW_MAXB;
}

/* ---- selection of every budget at once ---------------------------------------------------- */

typedef struct {
    double v;
    int64_t i;
} sw_pair;

/* the order of as_select_topk: larger value first, ties lower index first */
static inline int before(const sw_pair *a, const sw_pair *b)
{
    return a->v > b->v || (a->v == b->v && a->i < b->i);
}

static inline void swap_pair(sw_pair *a, sw_pair *b)
{
    sw_pair t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange x[lo..hi) so that x[k] is the element of rank k in that range, earlier ones before
 * it and later ones after it (quickselect, median-of-three pivots). */
static void select_rank(sw_pair *x, int64_t lo, int64_t hi, int64_t k)
{
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (before(&x[mid], &x[lo])) swap_pair(&x[mid], &x[lo]);
        if (before(&x[hi - 1], &x[lo])) swap_pair(&x[hi - 1], &x[lo]);
        if (before(&x[hi - 1], &x[mid])) swap_pair(&x[hi - 1], &x[mid]);
        /* pivot: the median, moved to hi - 1 */
        swap_pair(&x[mid], &x[hi - 1]);
        sw_pair pv = x[hi - 1];
        int64_t s = lo;
        for (int64_t i = lo; i < hi - 1; i++)
            if (before(&x[i], &pv)) swap_pair(&x[i], &x[s++]);
        swap_pair(&x[s], &x[hi - 1]);
        if (s == k) return;
        if (k < s)
            hi = s;
        else
            lo = s + 1;
    }
}

/* Boundaries t[0..nt) (sorted, within [lo, hi]): afterwards x[lo..t) precede x[t..hi) for each. */
static void select_cuts(sw_pair *x, int64_t lo, int64_t hi, const int64_t *t, int nt)
{
    if (nt <= 0 || hi - lo < 2) return;
    int m = nt / 2;
    int64_t c = t[m];
    if (c > lo && c < hi) select_rank(x, lo, hi, c);
    select_cuts(x, lo, c, t, m);
    int r = m + 1;
    select_cuts(x, c, hi, t + r, nt - r);
}

/* Class of every item: the number of cuts (sorted unique, in (0, n)) at or below its rank. */
static void rank_classes(sw_pair *x, int64_t n, const int64_t *cuts, int nc, uint8_t *cls)
{
    select_cuts(x, 0, n, cuts, nc);
    int c = 0;
    for (int64_t p = 0; p < n; p++) {
        while (c < nc && p >= cuts[c]) c++;
        cls[x[p].i] = (uint8_t)c;
    }
}

/* Sorted unique positive values of v[0..nb) below cap into u (returned count); where[b]: the
 * index of v[b] in u, -1 for v[b] <= 0; values >= cap map to the count of the others (the set of
 * everything). */
static int thresholds(const int64_t *v, size_t nb, int64_t cap, int64_t *u, int *where)
{
    int nu = 0;
    for (size_t b = 0; b < nb; b++) {
        int64_t x = v[b] < cap ? v[b] : cap;
        if (x <= 0) continue;
        int dup = 0;
        for (int j = 0; j < nu; j++) dup |= u[j] == x;
        if (!dup) u[nu++] = x;
    }
    for (int i = 1; i < nu; i++)
        for (int j = i; j > 0 && u[j - 1] > u[j]; j--) {
            int64_t t = u[j];
            u[j] = u[j - 1];
            u[j - 1] = t;
        }
    for (size_t b = 0; b < nb; b++) {
        int64_t x = v[b] < cap ? v[b] : cap;
        where[b] = -1;
        for (int j = 0; j < nu && x > 0; j++)
            if (u[j] == x) where[b] = j;
    }
    return nu;
}

/* ---- a block of rows ---------------------------------------------------------------------- */

typedef struct {
    int64_t h, qi, n;
} sw_row;

/* per row and family: the shell of each budget, and the sums over each shell */
typedef struct {
    int nsh;                 /* shells: nthr + 1 (the last: keys in no set) */
    int where[100];          /* budget -> shell index (-1: empty set) */
    double *acc;             /* nsh x d: sum a_i v_i */
    double *mass, *maxa, *a2d2, *asq;
    int64_t *cnt;
    double *tot;             /* (first family of a row only) sum a_i, sum a_i^2 over all keys */
} sw_fam;

typedef struct {
    double *acc;             /* d */
    double mass, maxa;
    int64_t m, nh;           /* samples drawn, heavy keys */
} sw_samp;

typedef struct {
    const as_layer *l;
    const as_sp_config *cfg;
    int64_t kvh, d, nm, mb, P;
    size_t nb;
    sw_row *rows;
    double *Q, *Sc, *A, *O, *lse, *on2, *lam, *D2;
    double vmax;
    int fam_on[F_N], slot_on[S_N];
    uint8_t *sh[F_N];        /* mb x nm shells */
    uint64_t *mask;          /* mb x nm sample bits */
    sw_fam *fam;             /* mb x F_N */
    sw_samp *smp;            /* mb x S_N x nb */
    double *a2d2_all;        /* per row: sum a_i^2 ||v_i - o||^2 */
    double *dev2;            /* per row: max ||v_i - o||^2 */
    double *store;           /* backing of the accumulators */
    /* scratch */
    sw_pair *pairs;          /* nm */
    int64_t *lst, *lst2, *lst3; /* nm */
    double *tot;             /* mb x d: sum a_i v_i over every key (uniform without a family) */
    double *w, *vbuf, *vt, *ub, *pmn, *pmx, *tmp, *tmp2;
    int64_t *cand_d, *cand_y; /* candidate lists, descending distance */
    int64_t ncand_d, ncand_y, cap_d, cap_y;
    double *cv[2];           /* the candidates' values (the first SW_CACHE of each list) */
    int64_t ncv[2], capv[2];
} sw_block;

static void block_free(sw_block *B)
{
    free(B->rows), free(B->Q), free(B->Sc), free(B->A), free(B->O), free(B->lse), free(B->on2);
    free(B->lam), free(B->D2), free(B->mask), free(B->fam), free(B->smp), free(B->a2d2_all);
    free(B->dev2), free(B->store), free(B->pairs), free(B->lst), free(B->lst2), free(B->lst3), free(B->w);
    free(B->tot);
    free(B->vbuf), free(B->vt), free(B->ub), free(B->pmn), free(B->pmx), free(B->tmp);
    free(B->tmp2), free(B->cand_d), free(B->cand_y);
    free(B->cv[0]), free(B->cv[1]);
    for (int f = 0; f < F_N; f++) free(B->sh[f]);
    memset(B, 0, sizeof *B);
}

static as_status block_alloc(sw_block *B, const as_layer *l, int64_t kvh, const as_sp_config *cfg,
                             int64_t mb, int64_t nm, char *err)
{
    memset(B, 0, sizeof *B);
    B->l = l;
    B->cfg = cfg;
    B->kvh = kvh;
    B->d = l->d;
    B->nm = nm;
    B->mb = mb;
    B->nb = cfg->n_budgets;
    B->P = as_sp_page_size(&cfg->params);
    for (size_t i = 0; i < cfg->n_methods; i++) {
        switch (cfg->methods[i]) {
        case AS_SP_TOPK: B->fam_on[F_TOPK] = 1; break;
        case AS_SP_SINK_WINDOW: B->fam_on[F_SINK] = 1; break;
        case AS_SP_PAGE: B->fam_on[F_PAGE] = 1; break;
        case AS_SP_UNIFORM: B->slot_on[S_UNI] = 1; break;
        case AS_SP_TOPK_SAMPLE: B->slot_on[S_TS] = B->fam_on[F_TSH] = 1; break;
        case AS_SP_PAGE_SAMPLE: B->slot_on[S_PS] = B->fam_on[F_PSH] = 1; break;
        default: break;
        }
    }
    const size_t d = (size_t)l->d, md = (size_t)mb * d, mn = (size_t)mb * (size_t)nm;
    const size_t nb = B->nb;
    int sampling = B->slot_on[S_UNI] || B->slot_on[S_TS] || B->slot_on[S_PS];
    B->rows = malloc((size_t)mb * sizeof *B->rows);
    B->Q = malloc(md * sizeof(double));
    B->Sc = malloc(mn * sizeof(double));
    B->A = malloc(mn * sizeof(double));
    B->D2 = malloc(mn * sizeof(double));
    B->O = malloc(md * sizeof(double));
    B->lse = malloc((size_t)mb * sizeof(double));
    B->on2 = malloc((size_t)mb * sizeof(double));
    B->lam = malloc((size_t)mb * sizeof(double));
    B->a2d2_all = malloc((size_t)mb * sizeof(double));
    B->dev2 = malloc((size_t)mb * sizeof(double));
    B->mask = sampling ? malloc(mn * sizeof(uint64_t)) : NULL;
    B->fam = calloc((size_t)mb * F_N, sizeof *B->fam);
    B->smp = calloc((size_t)mb * S_N * nb, sizeof *B->smp);
    /* accumulators: per row, F_N families of at most nb + 1 shells (d + 4 numbers each) and
     * S_N x nb samples (d numbers each) */
    size_t per_row = F_N * (nb + 1) * (d + 5) + S_N * nb * d + 2;
    B->store = calloc((size_t)mb * per_row, sizeof(double));
    B->pairs = malloc((size_t)nm * sizeof *B->pairs);
    B->lst = malloc((size_t)nm * sizeof *B->lst);
    B->lst2 = malloc((size_t)nm * sizeof *B->lst2);
    B->lst3 = malloc((size_t)nm * sizeof *B->lst3);
    B->tot = calloc(md, sizeof(double));
    B->w = malloc((size_t)nm * sizeof *B->w);
    B->tmp = malloc(d * sizeof(double));
    B->tmp2 = malloc(d * sizeof(double));
    B->vbuf = malloc((size_t)256 * d * sizeof(double));
    int64_t tile = nm < SW_TILE ? nm : SW_TILE;
    B->vt = malloc((size_t)tile * d * sizeof(double));
    int64_t npg = (nm + B->P - 1) / B->P;
    B->ub = malloc((size_t)(npg > 0 ? npg : 1) * sizeof(double));
    B->pmn = malloc((size_t)B->P * d * sizeof(double));
    B->pmx = malloc(2 * d * sizeof(double));
    int ok = B->rows && B->Q && B->Sc && B->A && B->D2 && B->O && B->lse && B->on2 && B->lam &&
             B->a2d2_all && B->dev2 && (!sampling || B->mask) && B->fam && B->smp && B->store &&
             B->pairs && B->lst && B->lst2 && B->lst3 && B->tot && B->w && B->tmp && B->tmp2 && B->vbuf && B->vt &&
             B->ub && B->pmn && B->pmx;
    for (int f = 0; f < F_N && ok; f++)
        if (B->fam_on[f]) ok = (B->sh[f] = malloc(mn)) != NULL;
    if (!ok) {
        block_free(B);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory (sweep block of %lld x %lld)",
                          (long long)mb, (long long)nm);
    }
    double *s = B->store;
    for (int64_t r = 0; r < mb; r++) {
        for (int f = 0; f < F_N; f++) {
            sw_fam *F = &B->fam[r * F_N + f];
            F->acc = s, s += (nb + 1) * d;
            F->mass = s, s += nb + 1;
            F->maxa = s, s += nb + 1;
            F->a2d2 = s, s += nb + 1;
            F->asq = s, s += nb + 1;
            F->cnt = (int64_t *)(void *)s, s += nb + 1;
        }
        for (size_t j = 0; j < S_N * nb; j++) B->smp[(size_t)r * S_N * nb + j].acc = s, s += d;
        B->fam[r * F_N].tot = s, s += 2;
    }
    return AS_OK;
}

/* Scores, softmax and dense outputs of the block's rows (as as_sp_engine's block), the matrix
 * products in chunks of SW_CHUNK rows from the unit's first row (blocks hold whole chunks), so
 * that a row's bits do not depend on the memory limit or the threads. */
static as_status block_dense(sw_block *B, char *err)
{
    const as_layer *l = B->l;
    const int64_t d = B->d, nm = B->nm, mb = B->mb;
    (void)err;
    for (int64_t r = 0; r < mb; r++) as_layer_read_q(l, B->rows[r].h, B->rows[r].qi, B->Q + r * d);
    {
        int64_t tile = nm < SW_TILE ? nm : SW_TILE;
        for (int64_t j0 = 0; j0 < nm; j0 += tile) {
            int64_t cnt = nm - j0 < tile ? nm - j0 : tile;
            as_layer_read_k(l, B->kvh, j0, cnt, B->vt);
            for (int64_t r0 = 0; r0 < mb; r0 += SW_CHUNK) {
                int64_t mc = mb - r0 < SW_CHUNK ? mb - r0 : SW_CHUNK;
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mc, (int)cnt, (int)d,
                            l->scale, B->Q + r0 * d, (int)d, B->vt, (int)d, 0.0,
                            B->Sc + r0 * nm + j0, (int)nm);
            }
        }
    }
    for (int64_t r = 0; r < mb; r++)
        B->lse[r] = as_softmax_row(B->Sc + r * nm, B->A + r * nm, B->rows[r].n, nm, &B->lam[r]);
    for (int64_t i = 0; i < mb * d; i++) B->O[i] = 0.0;
    int64_t tile = nm < SW_TILE ? nm : SW_TILE;
    for (int64_t j0 = 0; j0 < nm; j0 += tile) {
        int64_t cnt = nm - j0 < tile ? nm - j0 : tile;
        as_layer_read_v(l, B->kvh, j0, cnt, B->vt);
        for (int64_t r0 = 0; r0 < mb; r0 += SW_CHUNK) {
            int64_t mc = mb - r0 < SW_CHUNK ? mb - r0 : SW_CHUNK;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mc, (int)d, (int)cnt, 1.0,
                        B->A + r0 * nm + j0, (int)nm, B->vt, (int)d, 1.0, B->O + r0 * d, (int)d);
        }
    }
    for (int64_t r = 0; r < mb; r++) {
        double s = 0;
        for (int64_t c = 0; c < d; c++) s += B->O[r * d + c] * B->O[r * d + c];
        B->on2[r] = s;
    }
    return AS_OK;
}

/* Quest bound of every page of row r (q: its query), as as_sp_select computes it (the page
 * min/max stored as --page-bounds says: cfg->params.page_bounds). */
static void page_bounds(sw_block *B, int64_t r, const as_sp_pages *pg, int64_t n)
{
    const as_layer *l = B->l;
    const int64_t d = B->d, P = B->P, npg = (n + P - 1) / P, nfull = n / P;
    const as_sp_bounds f = (as_sp_bounds)B->cfg->params.page_bounds;
    const double *q = B->Q + r * d;
    for (int64_t p = 0; p < npg; p++) {
        const double *mn, *mx;
        if (pg && pg->bounds == f && p < nfull && p < pg->n_full) {
            mn = pg->pmin + p * d;
            mx = pg->pmax + p * d;
        } else {
            int64_t a = p * P, e = a + P < n ? a + P : n;
            as_layer_read_k(l, B->kvh, a, e - a, B->pmn);
            double *lo = B->pmx, *hi = B->pmx + d;
            for (int64_t c = 0; c < d; c++) lo[c] = hi[c] = B->pmn[c];
            for (int64_t t = 1; t < e - a; t++)
                for (int64_t c = 0; c < d; c++) {
                    double v = B->pmn[t * d + c];
                    if (v < lo[c]) lo[c] = v;
                    if (v > hi[c]) hi[c] = v;
                }
            as_sp_page_round(f, d, lo, hi);
            mn = lo;
            mx = hi;
        }
        double u = 0;
        for (int64_t c = 0; c < d; c++) u += q[c] >= 0 ? q[c] * mx[c] : q[c] * mn[c];
        B->ub[p] = l->scale * u;
    }
}

/* Sorted keys of family f's set at shell w (all keys with shell <= w) of row r into out. */
static int64_t fam_keys(const sw_block *B, int f, int64_t r, int w, int64_t *out)
{
    const uint8_t *s = B->sh[f] + r * B->nm;
    int64_t c = 0;
    if (w < 0) return 0;
    for (int64_t i = 0; i < B->rows[r].n; i++)
        if (s[i] <= w) out[c++] = i;
    return c;
}

static const int fam_of_slot[S_N] = {-1, F_TSH, F_PSH};

/* Selections of row r for every budget: shells of each family, sample bits. */
static as_status row_select(sw_block *B, int64_t r, const as_sp_pages *pg, int layer, char *err)
{
    const as_sp_config *cfg = B->cfg;
    const as_sp_params *p = &cfg->params;
    const int64_t n = B->rows[r].n, nm = B->nm, P = B->P, npg = (n + P - 1) / P;
    const size_t nb = B->nb;
    int64_t k[100], kh[100], v[200], u[200], u2[100];
    int wh[200];
    for (size_t b = 0; b < nb; b++) {
        k[b] = as_budget_keys(cfg->budgets[b], n);
        int64_t x = (int64_t)llround((double)k[b] * p->heavy_frac);
        kh[b] = x > k[b] ? k[b] : x < 0 ? 0 : x;
    }
    /* score order: topk and topk-sample's heavy set */
    if (B->fam_on[F_TOPK] || B->fam_on[F_TSH]) {
        int64_t cut[200];
        int nc = 0;
        for (size_t b = 0; b < nb; b++) {
            v[b] = B->fam_on[F_TOPK] ? k[b] : 0;
            v[nb + b] = B->fam_on[F_TSH] ? kh[b] : 0;
        }
        nc = thresholds(v, 2 * nb, n, cut, wh);
        (void)wh;
        const double *sc = B->Sc + r * nm;
        for (int64_t i = 0; i < n; i++) B->pairs[i] = (sw_pair){sc[i], i};
        /* classes over the union of cuts (cut values < n only) */
        int ncut = 0;
        while (ncut < nc && cut[ncut] < n) ncut++;
        uint8_t *cls = (uint8_t *)B->lst2; /* n bytes of scratch */
        rank_classes(B->pairs, n, cut, ncut, cls);
        for (int f = F_TOPK; f <= F_TSH; f += F_TSH - F_TOPK) {
            if (!B->fam_on[f]) continue;
            sw_fam *F = &B->fam[r * F_N + f];
            const int64_t *kv = f == F_TOPK ? k : kh;
            int nu = thresholds(kv, nb, n, u, F->where);
            F->nsh = nu + 1;
            /* class c (keys of rank in [cut[c-1], cut[c])) -> the first threshold >= cut[c] */
            uint8_t map[512];
            for (int c = 0; c <= ncut; c++) {
                int64_t top = c < ncut ? cut[c] : n; /* keys of this class have rank < top */
                int j = 0;
                while (j < nu && u[j] < top) j++;
                map[c] = (uint8_t)j;
            }
            uint8_t *s = B->sh[f] + r * nm;
            for (int64_t i = 0; i < n; i++) s[i] = map[cls[i]];
        }
    }
    if (B->fam_on[F_SINK]) {
        sw_fam *F = &B->fam[r * F_N + F_SINK];
        int nu = thresholds(k, nb, n, u, F->where);
        F->nsh = nu + 1;
        const int64_t sk = p->sinks > 0 ? p->sinks : 0;
        uint8_t *s = B->sh[F_SINK] + r * nm;
        int j = 0;
        /* the keys a budget of k keys holds: i < min(sinks, k), and i >= n - k + sinks */
        for (int64_t i = 0; i < n; i++) {
            int64_t need = i < sk ? i + 1 : n - i + sk;
            if (i == 0 || i == sk) j = 0;
            if (i < sk) {
                while (j < nu && u[j] < need) j++;
                s[i] = (uint8_t)j;
            } else {
                int lo = 0, hi = nu; /* first u >= need */
                while (lo < hi) {
                    int mid = (lo + hi) / 2;
                    if (u[mid] < need)
                        lo = mid + 1;
                    else
                        hi = mid;
                }
                s[i] = (uint8_t)lo;
            }
        }
    }
    if (B->fam_on[F_PAGE] || B->fam_on[F_PSH]) {
        page_bounds(B, r, pg, n);
        int64_t cut[200];
        for (size_t b = 0; b < nb; b++) {
            v[b] = B->fam_on[F_PAGE] ? as_sp_page_count(cfg->budgets[b], n, P) : 0;
            v[nb + b] = B->fam_on[F_PSH] ? kh[b] / P : 0;
        }
        int nc = thresholds(v, 2 * nb, npg, cut, wh);
        for (int64_t i = 0; i < npg; i++) B->pairs[i] = (sw_pair){B->ub[i], i};
        int ncut = 0;
        while (ncut < nc && cut[ncut] < npg) ncut++;
        uint8_t *cls = (uint8_t *)B->lst2;
        rank_classes(B->pairs, npg, cut, ncut, cls);
        for (int f = F_PAGE; f <= F_PSH; f += F_PSH - F_PAGE) {
            if (!B->fam_on[f]) continue;
            sw_fam *F = &B->fam[r * F_N + f];
            for (size_t b = 0; b < nb; b++) u2[b] = v[(f == F_PAGE ? 0 : nb) + b];
            int nu = thresholds(u2, nb, npg, u, F->where);
            F->nsh = nu + 1;
            uint8_t map[512];
            for (int c = 0; c <= ncut; c++) {
                int64_t top = c < ncut ? cut[c] : npg;
                int j = 0;
                while (j < nu && u[j] < top) j++;
                map[c] = (uint8_t)j;
            }
            uint8_t *s = B->sh[f] + r * nm;
            for (int64_t i = 0; i < n; i++) s[i] = map[cls[i / P]];
        }
    }
    /* sampling draws: as as_sp_select_row draws them (seeded by the budget's k) */
    if (B->mask) memset(B->mask + r * nm, 0, (size_t)nm * sizeof(uint64_t));
    static const as_sp_method slot_m[S_N] = {AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
    for (int sl = 0; sl < S_N; sl++) {
        if (!B->slot_on[sl]) continue;
        for (size_t b = 0; b < nb; b++) {
            sw_samp *S = &B->smp[((size_t)r * S_N + (size_t)sl) * nb + b];
            int64_t nh = 0;
            if (fam_of_slot[sl] >= 0) {
                int f = fam_of_slot[sl];
                nh = fam_keys(B, f, r, B->fam[r * F_N + f].where[b], B->lst);
            }
            uint64_t seed = as_sp_record_seed(p, layer, B->rows[r].h, B->rows[r].qi, k[b],
                                              slot_m[sl]);
            as_rng rng;
            as_rng_seed(&rng, as_seed_mix(seed, 0));
            S->nh = nh;
            S->m = as_select_sample(&rng, n, B->lst, nh, k[b] - nh, B->lst2);
            const uint64_t bit = (uint64_t)1 << ((size_t)sl * nb + b);
            uint64_t *mk = B->mask + r * nm;
            for (int64_t j = 0; j < S->m; j++) mk[B->lst2[j]] |= bit;
        }
    }
    (void)err;
    return AS_OK;
}

/* acc += a v over d numbers; eight at a time in straight-line code the compiler turns into
 * vector instructions at -O2 (each element's sum is the same as the plain loop's) */
static inline void axpy(double *restrict acc, double a, const double *restrict v, int64_t d)
{
    int64_t c = 0;
    for (; c + 8 <= d; c += 8) {
        acc[c] += a * v[c];
        acc[c + 1] += a * v[c + 1];
        acc[c + 2] += a * v[c + 2];
        acc[c + 3] += a * v[c + 3];
        acc[c + 4] += a * v[c + 4];
        acc[c + 5] += a * v[c + 5];
        acc[c + 6] += a * v[c + 6];
        acc[c + 7] += a * v[c + 7];
    }
    for (; c < d; c++) acc[c] += a * v[c];
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

/* One pass over V: per row, the exact ||v_i - o||^2 of every key, and the sums of every shell
 * and sample. */
static void block_pass(sw_block *B)
{
    const as_layer *l = B->l;
    const int64_t d = B->d, nm = B->nm, mb = B->mb;
    const size_t nb = B->nb;
    for (int64_t r = 0; r < mb; r++) {
        B->a2d2_all[r] = 0;
        B->fam[r * F_N].tot[0] = B->fam[r * F_N].tot[1] = 0;
        B->dev2[r] = -1;
        for (int f = 0; f < F_N; f++) {
            sw_fam *F = &B->fam[r * F_N + f];
            if (!B->fam_on[f]) continue;
            memset(F->acc, 0, (size_t)F->nsh * (size_t)d * sizeof(double));
            for (int s = 0; s < F->nsh; s++)
                F->mass[s] = F->maxa[s] = F->a2d2[s] = F->asq[s] = 0, F->cnt[s] = 0;
        }
        for (size_t j = 0; j < S_N * nb; j++) {
            sw_samp *S = &B->smp[(size_t)r * S_N * nb + j];
            memset(S->acc, 0, (size_t)d * sizeof(double));
            S->mass = S->maxa = 0;
        }
    }
    int fams[F_N], nf = 0;
    for (int f = 0; f < F_N; f++)
        if (B->fam_on[f]) fams[nf++] = f;
    const int want_tot = nf == 0; /* else a family's shells sum to the total */
    memset(B->tot, 0, (size_t)mb * (size_t)d * sizeof(double));
    int64_t tile = nm < SW_TILE ? nm : SW_TILE;
    for (int64_t j0 = 0; j0 < nm; j0 += tile) {
        int64_t cnt = nm - j0 < tile ? nm - j0 : tile;
        as_layer_read_v(l, B->kvh, j0, cnt, B->vt);
        for (int64_t r = 0; r < mb; r++) {
            const int64_t n = B->rows[r].n;
            int64_t lim = n - j0 < cnt ? n - j0 : cnt;
            const double *o = B->O + r * d, *ar = B->A + r * nm;
            double *D2 = B->D2 + r * nm, a2s = 0, dmx = B->dev2[r], ts = 0, ts2 = 0;
            sw_fam *Fr = &B->fam[r * F_N];
            const uint64_t *mk = B->mask ? B->mask + r * nm : NULL;
            sw_samp *Sr = &B->smp[(size_t)r * S_N * nb];
            for (int64_t i = 0; i < lim; i++) {
                const int64_t gi = j0 + i;
                const double a = ar[gi], *v = B->vt + i * d;
                double d2 = dist2(v, o, d);
                D2[gi] = d2;
                if (d2 > dmx) dmx = d2;
                const double a2d2 = a * a * d2;
                a2s += a2d2;
                ts += a;
                ts2 += a * a;
                if (want_tot)
                    axpy(B->tot + r * d, a, v, d);
                for (int t = 0; t < nf; t++) {
                    sw_fam *F = &Fr[fams[t]];
                    const int s = B->sh[fams[t]][r * nm + gi];
                    axpy(F->acc + s * d, a, v, d);
                    F->mass[s] += a;
                    F->a2d2[s] += a2d2;
                    F->asq[s] += a * a;
                    F->cnt[s]++;
                    if (a > F->maxa[s]) F->maxa[s] = a;
                }
                if (mk && mk[gi]) {
                    uint64_t bits = mk[gi];
                    while (bits) {
                        int b = __builtin_ctzll(bits);
                        bits &= bits - 1;
                        sw_samp *S = &Sr[b];
                        axpy(S->acc, a, v, d);
                        S->mass += a;
                        if (a > S->maxa) S->maxa = a;
                    }
                }
            }
            B->a2d2_all[r] += a2s;
            Fr[0].tot[0] += ts;
            Fr[0].tot[1] += ts2;
            B->dev2[r] = dmx;
        }
    }
}

/* ---- the records --------------------------------------------------------------------------- */

/* The largest entries of x[0..n) (n_want of them, or all), by decreasing value (ties: lower
 * index), into list; returns the count. */
static int64_t top_list(sw_block *B, const double *x, int64_t n, int64_t want, int64_t **list,
                        int64_t *cap)
{
    if (want > n) want = n;
    if (*cap < want) {
        int64_t *t = realloc(*list, (size_t)want * sizeof *t);
        if (!t) return -1;
        *list = t;
        *cap = want;
    }
    for (int64_t i = 0; i < n; i++) B->pairs[i] = (sw_pair){x[i], i};
    if (want < n) select_rank(B->pairs, 0, n, want);
    /* sort the first want by the order */
    sw_pair *p = B->pairs;
    /* heap-free: a simple merge sort through the scratch list */
    int64_t *o = *list;
    for (int64_t i = 0; i < want; i++) o[i] = i; /* positions in p */
    int64_t *tmp = B->lst3;
    for (int64_t w = 1; w < want; w *= 2) {
        for (int64_t s = 0; s < want; s += 2 * w) {
            int64_t m = s + w < want ? s + w : want, e = s + 2 * w < want ? s + 2 * w : want;
            int64_t i = s, j = m, c = s;
            while (i < m && j < e) tmp[c++] = before(&p[o[j]], &p[o[i]]) ? o[j++] : o[i++];
            while (i < m) tmp[c++] = o[i++];
            while (j < e) tmp[c++] = o[j++];
        }
        memcpy(o, tmp, (size_t)want * sizeof *o);
    }
    for (int64_t i = 0; i < want; i++) o[i] = p[o[i]].i;
    return want;
}

/* membership of key i in a record's touched set */
typedef struct {
    const uint8_t *sh;   /* family shells (NULL: none) */
    int w;               /* shell limit */
    const uint64_t *mk;  /* sample bits (NULL: none) */
    uint64_t bit;
} sw_member;

static inline int is_member(const sw_member *M, int64_t i)
{
    return (M->sh && M->sh[i] <= M->w) || (M->mk && (M->mk[i] & M->bit));
}

/* max over visible keys outside the set of ||f_i||^2, f_i = v_i - c (mode 0) or
 * a_i (v_i - o) - c (mode 1), from the candidates in decreasing upper value ub_i (sqrt(D2_i), or
 * a_i sqrt(D2_i)), stopping once ub_i + rad (>= ||f_i||) is below the best; -1 when no key is
 * outside. */
static double max_outside(sw_block *B, int64_t r, const sw_member *M, const double *cvec,
                          double rad, int mode, int *fail)
{
    const int64_t d = B->d, n = B->rows[r].n, nm = B->nm;
    const double *D2 = B->D2 + r * nm, *ar = B->A + r * nm, *o = B->O + r * d;
    int64_t **list = mode ? &B->cand_y : &B->cand_d;
    int64_t *cap = mode ? &B->cap_y : &B->cap_d, *nc = mode ? &B->ncand_y : &B->ncand_d;
    double best = -1;
    const double slack = 1.0 + 1e-12;
    int64_t j = 0;
    for (;;) {
        for (; j < *nc; j++) {
            int64_t i = (*list)[j];
            if (is_member(M, i)) continue;
            double ubi = mode ? ar[i] * sqrt(D2[i]) : sqrt(D2[i]);
            double lim = (ubi + rad) * slack + 1e-300;
            if (best >= 0 && lim * lim < best) return best;
            const double *v;
            if (j < B->ncv[mode]) {
                v = B->cv[mode] + j * d;
            } else {
                as_layer_read_v(B->l, B->kvh, i, 1, B->vbuf);
                v = B->vbuf;
            }
            double f;
            if (!mode) {
                f = dist2(v, cvec, d);
            } else {
                double t = 0;
                for (int64_t c = 0; c < d; c++) {
                    double uu = ar[i] * (v[c] - o[c]) - cvec[c];
                    t += uu * uu;
                }
                f = t;
            }
            if (f > best) best = f;
        }
        if (*nc >= n) return best;
        /* more candidates: four times as many */
        int64_t want = *nc ? 8 * *nc : 256;
        const double *x = D2;
        if (mode) {
            for (int64_t i = 0; i < n; i++) B->w[i] = ar[i] * ar[i] * D2[i];
            x = B->w;
        }
        int64_t got = top_list(B, x, n, want, list, cap);
        if (got < 0) {
            *fail = 1;
            return best;
        }
        *nc = got;
        /* their values, converted once for the row's every (method, budget) */
        int64_t nv = got < SW_CACHE ? got : SW_CACHE;
        if (B->capv[mode] < nv) {
            double *t = realloc(B->cv[mode], (size_t)nv * (size_t)d * sizeof *t);
            if (!t) nv = B->capv[mode];
            else B->cv[mode] = t, B->capv[mode] = nv;
        }
        for (int64_t t = 0; t < nv; t++)
            as_layer_read_v(B->l, B->kvh, (*list)[t], 1, B->cv[mode] + t * d);
        B->ncv[mode] = nv;
    }
}

/* o_hat = (sum_H e_i v_i + wt sum_samp e_j v_j) / den with e = exp(s - max) from the raw scores
 * (the sums for sets whose weights underflow); returns max + log(den) - lse. */
static double exp_sums(sw_block *B, int64_t r, const int64_t *H, int64_t nh, const int64_t *sp,
                       int64_t m, double wt, double *out)
{
    const int64_t d = B->d;
    const double *sc = B->Sc + r * B->nm;
    double mx = -INFINITY, den = 0;
    for (int64_t j = 0; j < nh; j++) mx = fmax(mx, sc[H[j]]);
    for (int64_t j = 0; j < m; j++) mx = fmax(mx, sc[sp[j]]);
    for (int64_t c = 0; c < d; c++) out[c] = 0;
    for (int64_t j = 0; j < nh + m; j++) {
        int64_t i = j < nh ? H[j] : sp[j - nh];
        double e = exp(sc[i] - mx) * (j < nh ? 1.0 : wt);
        den += e;
        as_layer_read_v(B->l, B->kvh, i, 1, B->vbuf);
        for (int64_t c = 0; c < d; c++) out[c] += e * B->vbuf[c];
    }
    for (int64_t c = 0; c < d; c++) out[c] = den > 0 ? out[c] / den : NAN;
    return mx + log(den) - B->lse[r];
}

static double norm_diff(const double *a, const double *b, int64_t d) { return sqrt(dist2(a, b, d)); }

/* The record of (method m, budget b) of row r. */
static as_status row_record(sw_block *B, int64_t r, as_sp_method m, size_t b, int layer,
                            as_sp_record *rec, char *err)
{
    const as_sp_config *cfg = B->cfg;
    const as_sp_params *p = &cfg->params;
    const int64_t d = B->d, n = B->rows[r].n, nm = B->nm;
    const size_t nb = B->nb;
    const double *o = B->O + r * d, *ar = B->A + r * nm;
    const int sampling = as_sp_method_is_sampling(m);
    const int trials = sampling ? (cfg->trials > 0 ? cfg->trials : 1) : 1;
    double *oS = B->tmp, *R = B->tmp2;
    double num_h[1024], ohat[1024], ybar[1024];
    if (d > 1024) return as_err_set(err, AS_ERR_USAGE, "head dimension %lld above 1024", (long long)d);
    int f;
    int sl = -1;
    switch (m) {
    case AS_SP_TOPK: f = F_TOPK; break;
    case AS_SP_SINK_WINDOW: f = F_SINK; break;
    case AS_SP_PAGE: f = F_PAGE; break;
    case AS_SP_UNIFORM: f = -1, sl = S_UNI; break;
    case AS_SP_TOPK_SAMPLE: f = F_TSH, sl = S_TS; break;
    default: f = F_PSH, sl = S_PS; break;
    }
    const sw_fam *F = f >= 0 ? &B->fam[r * F_N + f] : NULL;
    const int w = F ? F->where[b] : -1;
    /* the deterministic part: shells 0..w */
    double mass_d = 0, maxa_d = 0;
    int64_t k_d = 0;
    for (int64_t c = 0; c < d; c++) num_h[c] = 0, R[c] = 0;
    if (F)
        for (int s = 0; s < F->nsh; s++) {
            const double *acc = F->acc + s * d;
            if (s <= w) {
                for (int64_t c = 0; c < d; c++) num_h[c] += acc[c];
                mass_d += F->mass[s];
                k_d += F->cnt[s];
                if (F->maxa[s] > maxa_d) maxa_d = F->maxa[s];
            } else {
                for (int64_t c = 0; c < d; c++) R[c] += acc[c];
            }
        }
    const sw_samp *S = sl >= 0 ? &B->smp[((size_t)r * S_N + (size_t)sl) * nb + b] : NULL;
    sw_member M = {F ? B->sh[f] + r * nm : NULL, w, S ? B->mask + r * nm : NULL,
                   S ? (uint64_t)1 << ((size_t)sl * nb + b) : 0};
    /* the complement mass 1 - P_S as a sum of small terms (it keeps its relative precision):
     * subsets, the shells outside S; sampling, in key order with var_e, the keys outside the
     * heavy set and the sample */
    double Prest = 0, ssq_e = 0, abar = 0;
    const int64_t n_rest = n - (S ? S->nh : k_d);
    if (S) abar = n_rest > 0 ? (1.0 - mass_d) / (double)n_rest : 0;
    if (!S)
        for (int s = w + 1; s < F->nsh; s++) Prest += F->mass[s];
    int slow = S != NULL;
    if (S) {
        /* from the shells outside the heavy set: sum_R a, sum_R a^2; kept where no more than
         * one bit (complement mass) or ten (var_e = sum_R a^2 - 2 abar sum_R a + |R| abar^2)
         * cancel, else summed key by key */
        double Rm = 0, Ra2 = 0;
        if (F) {
            for (int s = w + 1; s < F->nsh; s++) Rm += F->mass[s], Ra2 += F->asq[s];
        } else {
            Rm = B->fam[r * F_N].tot[0];
            Ra2 = B->fam[r * F_N].tot[1];
        }
        double pf = Rm - S->mass, nr = (double)n_rest;
        double ef = Ra2 - 2.0 * abar * Rm + nr * abar * abar;
        if (pf >= 0.5 * Rm && ef >= 1e-3 * Ra2) {
            Prest = pf;
            ssq_e = ef;
            slow = 0;
        }
    }
    if (slow) {
        const uint8_t *sh = M.sh;
        const uint64_t *mk = M.mk;
        for (int64_t i = 0; i < n; i++) {
            const double a = ar[i];
            if (sh && sh[i] <= w) continue;
            if (S) ssq_e += (a - abar) * (a - abar);
            if (mk && (mk[i] & M.bit)) continue;
            Prest += a;
        }
    }
    memset(rec, 0, sizeof *rec);
    as_sp_eval *ev = &rec->ev;
    rec->layer = layer;
    rec->head = B->rows[r].h;
    rec->kv_head = B->kvh;
    rec->query = B->rows[r].qi;
    rec->method = m;
    rec->budget_index = b;
    rec->trials = trials;
    rec->delta = sampling ? p->delta : 0;
    ev->n = n;
    ev->norm_o = sqrt(B->on2[r]);
    const double lam = B->lam[r];
    ev->tol = 16.0 * ((double)(n + d) + lam) * DBL_EPSILON * (B->vmax > 0 ? B->vmax : DBL_MIN);
    ev->samples_needed = -1;
    int fail = 0;
    double logPS;
    /* o_S over the keys touched, and o_rest's sum R */
    double mass_t = mass_d + (S ? S->mass : 0), maxa_t = maxa_d;
    if (S && S->maxa > maxa_t) maxa_t = S->maxa;
    int64_t k_t = (S ? S->nh + S->m : k_d);
    int need_gather = k_t > 0 && !(maxa_t >= SW_TINY);
    int64_t *Hl = B->lst, *Sl = B->lst2;
    int64_t nh = 0, ms = 0;
    if (need_gather || (S && trials > 1)) {
        nh = F ? fam_keys(B, f, r, w, Hl) : 0;
        if (S) {
            for (int64_t i = 0; i < n; i++)
                if (M.mk[i] & M.bit) Sl[ms++] = i;
        }
    }
    if (S && !F) {
        /* uniform: the complement of the sample is every other key: the total less the sample
         * (the total: the shells of any family, else its own sum) */
        const sw_fam *G = NULL;
        for (int g = 0; g < F_N && !G; g++)
            if (B->fam_on[g]) G = &B->fam[r * F_N + g];
        if (G)
            for (int s = 0; s < G->nsh; s++)
                for (int64_t c = 0; c < d; c++) R[c] += G->acc[s * d + c];
        else
            for (int64_t c = 0; c < d; c++) R[c] = B->tot[r * d + c];
    }
    if (S)
        for (int64_t c = 0; c < d; c++) R[c] -= S->acc[c];
    if (!need_gather) {
        for (int64_t c = 0; c < d; c++) oS[c] = (num_h[c] + (S ? S->acc[c] : 0)) / mass_t;
        logPS = k_t > 0 ? log(mass_t) : -INFINITY;
    } else {
        logPS = exp_sums(B, r, Hl, nh, Sl, ms, 1.0, oS);
    }
    if (k_t == 0)
        for (int64_t c = 0; c < d; c++) oS[c] = 0;
    const double one_m = Prest;
    double PS = one_m < 0.5 ? 1.0 - one_m : exp(logPS);
    double id2 = 0;
    for (int64_t c = 0; c < d; c++) {
        double t = (o[c] - oS[c]) - (R[c] - one_m * oS[c]);
        id2 += t * t;
    }
    ev->identity_error = sqrt(id2);
    double mass_res = fabs(exp(logPS) + Prest - 1.0);
    ev->identity_ok = ev->identity_error <= ev->tol &&
                      mass_res <= 16.0 * ((double)n + lam) * DBL_EPSILON;
    double serr = norm_diff(o, oS, d);
    double maxd2 = max_outside(B, r, &M, oS, serr, 0, &fail);
    double sb = maxd2 > 0 ? one_m * sqrt(maxd2) : 0.0;
    ev->captured_mass = PS;
    if (!S) {
        ev->k = k_d;
        ev->abs_error = serr;
        ev->bound = sb;
        double allow = sb * (1 + SW_RTOL) + ev->tol;
        ev->violated = ev->abs_error > allow || !ev->identity_ok;
        ev->subset_bound = sb;
        ev->subset_violated = serr > sb * (1 + SW_RTOL) + ev->tol || !ev->identity_ok;
        rec->trials = 1;
    } else {
        const double ph = mass_d, nr = (double)n_rest;
        /* ybar = -(sum_H a_i (v_i - o)) / |R| */
        double y2 = 0;
        for (int64_t c = 0; c < d; c++) {
            ybar[c] = nr > 0 ? -(num_h[c] - ph * o[c]) / nr : 0;
            y2 += ybar[c] * ybar[c];
        }
        /* sum over the rest of ||a_i (v_i - o) - ybar||^2 = sum_R a_i^2 ||v_i - o||^2 -
         * |R| ||ybar||^2 (sum_R a_i (v_i - o) = |R| ybar) */
        double a2r = 0;
        if (F) {
            for (int s = w + 1; s < F->nsh; s++) a2r += F->a2d2[s];
        } else {
            a2r = B->a2d2_all[r];
        }
        double ssq_y = a2r - nr * y2;
        if (ssq_y < 0) ssq_y = 0;
        sw_member MH = {M.sh, w, NULL, 0};
        double maxy2 = max_outside(B, r, &MH, ybar, sqrt(y2), 1, &fail);
        as_sp_sstats ss;
        ss.n_rest = n_rest;
        ss.p_heavy = ph;
        ss.mass_rest = 1.0 - ph > 0 ? 1.0 - ph : 0.0;
        ss.var_y = nr > 0 ? ssq_y / nr : 0;
        ss.max_y = maxy2 > 0 ? sqrt(maxy2) : 0;
        ss.var_e = nr > 0 ? ssq_e / nr : 0;
        ss.dev_max = B->dev2[r] > 0 ? sqrt(B->dev2[r]) : 0;
        double eps = as_sp_sampling_eps(&ss, S->m, p->delta);
        /* the estimator's first draw */
        double wt = S->m > 0 ? (double)(n - S->nh) / (double)S->m : 0;
        double den = mass_d + wt * S->mass;
        if (!need_gather && den > 0) {
            for (int64_t c = 0; c < d; c++) ohat[c] = (num_h[c] + wt * S->acc[c]) / den;
        } else {
            exp_sums(B, r, Hl, nh, Sl, ms, wt, ohat);
        }
        double err0 = norm_diff(ohat, o, d);
        ev->k = S->nh + S->m;
        ev->samples = S->m;
        ev->abs_error = err0;
        ev->bound = eps;
        ev->violated = err0 > eps * (1 + SW_RTOL) + ev->tol;
        rec->exceed = ev->violated;
        /* further draws, seeded as as_sp_engine seeds them */
        if (trials > 1) {
            uint64_t seed = as_sp_record_seed(p, layer, B->rows[r].h, B->rows[r].qi,
                                              as_budget_keys(cfg->budgets[b], n), m);
            int64_t *sb2 = malloc((size_t)(n > 0 ? n : 1) * sizeof *sb2);
            double *t2 = malloc((size_t)d * sizeof *t2);
            if (!sb2 || !t2) {
                free(sb2), free(t2);
                return as_err_set(err, AS_ERR_NOMEM, "out of memory");
            }
            for (int t = 1; t < trials; t++) {
                as_rng rng;
                as_rng_seed(&rng, as_seed_mix(seed, (uint64_t)t));
                int64_t mt = as_select_sample(&rng, n, Hl, nh, S->m, sb2);
                double wtt = mt > 0 ? (double)(n - nh) / (double)mt : 0;
                exp_sums(B, r, Hl, nh, sb2, mt, wtt, t2);
                rec->exceed += norm_diff(t2, o, d) > eps * (1 + SW_RTOL) + ev->tol;
            }
            free(sb2), free(t2);
        }
        ev->subset_bound = sb;
        double e_sub = m == AS_SP_UNIFORM ? err0 : serr;
        ev->subset_violated = e_sub > sb * (1 + SW_RTOL) + ev->tol || !ev->identity_ok;
        if (cfg->eps_rel > 0)
            ev->samples_needed = as_sp_sampling_size(&ss, cfg->eps_rel * ev->norm_o, p->delta);
    }
    ev->rel_error = ev->norm_o > 0 ? ev->abs_error / ev->norm_o : NAN;
    ev->rel_bound = ev->norm_o > 0 ? ev->bound / ev->norm_o : NAN;
    if (cfg->budgets[b].count > 0)
        rec->budget = (double)ev->k / (double)n;
    else
        rec->budget = cfg->budgets[b].frac;
    if (fail) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    return AS_OK;
}

/* ---- units ---------------------------------------------------------------------------------- */

as_status as_sweep_unit(const as_layer *l, int64_t kvh, const as_sp_config *cfg, size_t mem,
                        as_sp_record_fn fn, void *ctx, int *stop, char *err)
{
    as_status st = AS_OK;
    const int64_t group = l->hq / l->hkv;
    int need_pages = 0;
    for (size_t i = 0; i < cfg->n_methods; i++)
        need_pages |= cfg->methods[i] == AS_SP_PAGE || cfg->methods[i] == AS_SP_PAGE_SAMPLE;
    sw_row *rows = malloc((size_t)(group * l->t > 0 ? group * l->t : 1) * sizeof *rows);
    if (!rows) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    int64_t nrows = 0;
    for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
        if (cfg->head >= 0 && h != cfg->head) continue;
        for (int64_t qi = 0; qi < l->t; qi++) {
            if (cfg->query >= 0 && qi != cfg->query) continue;
            rows[nrows++] = (sw_row){h, qi, as_layer_visible(l, qi)};
        }
    }
    /* the largest ||v_i|| over the keys any row sees (the tolerance's scale, as as_sp_engine's
     * for a unit of one block) */
    double vmax = 0;
    {
        int64_t nmu = 0;
        for (int64_t r = 0; r < nrows; r++) nmu = rows[r].n > nmu ? rows[r].n : nmu;
        double *vt = nmu > 0 ? malloc((size_t)(nmu < SW_TILE ? nmu : SW_TILE) * (size_t)l->d *
                                      sizeof *vt)
                             : NULL;
        if (nmu > 0 && !vt) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        double v2 = 0;
        for (int64_t j0 = 0; j0 < nmu && vt; j0 += SW_TILE) {
            int64_t cnt = nmu - j0 < SW_TILE ? nmu - j0 : SW_TILE;
            as_layer_read_v(l, kvh, j0, cnt, vt);
            for (int64_t i = 0; i < cnt; i++) {
                double s = 0;
                for (int64_t c = 0; c < l->d; c++) s += vt[i * l->d + c] * vt[i * l->d + c];
                if (s > v2) v2 = s;
            }
        }
        free(vt);
        vmax = sqrt(v2);
    }
    as_sp_pages pg;
    memset(&pg, 0, sizeof pg);
    if (st == AS_OK && nrows > 0 && need_pages)
        st = as_sp_pages_build(l, kvh, as_sp_page_size(&cfg->params),
                               (as_sp_bounds)cfg->params.page_bounds, &pg, err);
    const size_t nb = cfg->n_budgets, per_block = cfg->n_methods * nb;
    /* the unit's records, emitted at its end in one order whatever its blocks: method, budget,
     * row (one record per row and (method, budget): O(T), not O(N)) */
    as_sp_record *recs = malloc(((size_t)nrows * per_block + 1) * sizeof *recs);
    if (!recs) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    const uint64_t total = (uint64_t)nrows * per_block;
    uint64_t done = 0;
    for (int64_t r0 = 0; r0 < nrows && st == AS_OK && !*stop;) {
        int64_t nm_all = 0, nmax = 0;
        for (int64_t r = r0; r < nrows; r++) nm_all = rows[r].n > nm_all ? rows[r].n : nm_all;
        /* per row and key: scores, weights and distances (24 bytes), shells and sample bits
         * (up to 13); per block: the selection's scratch (48 bytes a key), the candidates'
         * values (2 SW_CACHE rows); per unit: the page summaries (16 d bytes a page) */
        const size_t nmz = (size_t)nm_all, dz = (size_t)l->d;
        const size_t fixed = nmz * 48 + 2 * (size_t)SW_CACHE * dz * 8 +
                             (need_pages ? nmz / (size_t)as_sp_page_size(&cfg->params) * dz * 16
                                         : 0);
        const size_t per_row = nmz * 40 + dz * 64 + per_block * sizeof(as_sp_record);
        int64_t mb = mem > fixed ? (int64_t)((mem - fixed) / per_row) : 1;
        if (mb < 1) mb = 1;
        if (mb > SW_CHUNK) mb -= mb % SW_CHUNK; /* whole chunks */
        if (mb > nrows - r0) mb = nrows - r0;
        for (int64_t r = r0; r < r0 + mb; r++) nmax = rows[r].n > nmax ? rows[r].n : nmax;
        sw_block B;
        if ((st = block_alloc(&B, l, kvh, cfg, mb, nmax, err)) != AS_OK) break;
        memcpy(B.rows, rows + r0, (size_t)mb * sizeof *rows);
        B.vmax = vmax;
        st = block_dense(&B, err);
        for (int64_t r = 0; r < mb && st == AS_OK; r++)
            st = row_select(&B, r, need_pages ? &pg : NULL, l->index, err);
        if (st == AS_OK) block_pass(&B);
        for (int64_t r = 0; r < mb && st == AS_OK; r++) {
            B.ncand_d = B.ncand_y = B.ncv[0] = B.ncv[1] = 0;
            for (size_t mi = 0; mi < cfg->n_methods && st == AS_OK; mi++)
                for (size_t b = 0; b < nb && st == AS_OK; b++)
                    st = row_record(&B, r, cfg->methods[mi], b, l->index,
                                    &recs[(mi * nb + b) * (size_t)nrows + (size_t)(r0 + r)],
                                    err);
        }
        done += (uint64_t)mb * per_block;
        if (cfg->progress && st == AS_OK) cfg->progress(cfg->progress_ctx, done, total);
        block_free(&B);
        r0 += mb;
    }
    for (size_t j = 0; j < per_block * (size_t)nrows && st == AS_OK && !*stop; j++)
        if (fn && fn(ctx, &recs[j])) *stop = 1;
    free(recs);
    as_sp_pages_free(&pg);
    free(rows);
    return st;
}

/* ---- the whole trace, over threads ---------------------------------------------------------- */

typedef struct {
    size_t li;
    int64_t kvh;
    as_sp_record *rec;       /* the unit's records, kept until their turn */
    size_t n, cap;
    int state;               /* 0 waiting, 1 running, 2 done */
    as_status st;
    char err[AS_ERR_LEN];
    uint64_t done;           /* progress inside the unit */
} sw_unit;

typedef struct {
    const as_trace *tr;
    const as_sp_config *cfg;
    sw_unit *u;
    size_t nu, next, emit;
    size_t ahead;            /* units run at most this far ahead of the emitted ones */
    size_t mem;
    as_sp_record_fn fn;
    void *ctx;
    int stop;
    uint64_t done, total;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} sw_run;

typedef struct {
    sw_run *R;
    sw_unit *U;
} sw_job;

static int keep_record(void *ctx, const as_sp_record *r)
{
    sw_unit *U = ((sw_job *)ctx)->U;
    if (U->n == U->cap) {
        size_t nc = U->cap ? 2 * U->cap : 256;
        as_sp_record *t = realloc(U->rec, nc * sizeof *t);
        if (!t) return 1;
        U->rec = t;
        U->cap = nc;
    }
    U->rec[U->n++] = *r;
    return 0;
}

static void unit_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    sw_job *J = ctx;
    sw_run *R = J->R;
    pthread_mutex_lock(&R->mu);
    R->done += done - J->U->done;
    J->U->done = done;
    if (R->cfg->progress) R->cfg->progress(R->cfg->progress_ctx, R->done, R->total);
    pthread_mutex_unlock(&R->mu);
}

/* Hand the finished units' records to the callback in unit order (lock held). */
static void emit_ready(sw_run *R)
{
    while (R->emit < R->nu && R->u[R->emit].state == 2) {
        sw_unit *U = &R->u[R->emit];
        for (size_t j = 0; j < U->n && !R->stop && U->st == AS_OK; j++)
            if (R->fn && R->fn(R->ctx, &U->rec[j])) R->stop = 1;
        if (U->st != AS_OK) R->stop = 1;
        free(U->rec);
        U->rec = NULL;
        U->n = U->cap = 0;
        R->emit++;
    }
    pthread_cond_broadcast(&R->cv);
}

static void *worker(void *arg)
{
    sw_run *R = arg;
    pthread_mutex_lock(&R->mu);
    for (;;) {
        while (!R->stop && R->next < R->nu && R->next >= R->emit + R->ahead)
            pthread_cond_wait(&R->cv, &R->mu);
        if (R->stop || R->next >= R->nu) break;
        sw_unit *U = &R->u[R->next++];
        U->state = 1;
        pthread_mutex_unlock(&R->mu);
        sw_job J = {R, U};
        as_sp_config c = *R->cfg;
        c.progress = unit_progress;
        c.progress_ctx = &J;
        int stop = 0;
        U->st = as_sweep_unit(as_trace_layer(R->tr, U->li), U->kvh, &c, R->mem, keep_record, &J,
                              &stop, U->err);
        if (U->st == AS_OK && stop) U->st = as_err_set(U->err, AS_ERR_NOMEM, "out of memory");
        pthread_mutex_lock(&R->mu);
        U->state = 2;
        emit_ready(R);
    }
    pthread_cond_broadcast(&R->cv);
    pthread_mutex_unlock(&R->mu);
    return NULL;
}

as_status as_sweep_check(const as_sp_config *cfg, const as_layer *l, char *err)
{
    if (cfg->n_methods == 0) return as_err_set(err, AS_ERR_USAGE, "no method given");
    if (cfg->n_budgets == 0) return as_err_set(err, AS_ERR_USAGE, "no budget given");
    if (!as_sweep_supports(cfg))
        return as_err_set(err, AS_ERR_USAGE, "the shared sweep does not run method index or "
                                             "more than %d budgets", SW_MAXB);
    if (!(cfg->params.delta > 0 && cfg->params.delta < 1))
        return as_err_set(err, AS_ERR_USAGE, "delta must be in (0, 1)");
    if (!l) return AS_OK;
    as_status st = as_sp_config_check_layer(cfg, l, err);
    if (st != AS_OK) return st;
    if (l->d > 1024)
        return as_err_set(err, AS_ERR_USAGE, "layer %d: head dimension %lld above 1024",
                          l->index, (long long)l->d);
    return AS_OK;
}

size_t as_sweep_worker_mem(const as_sp_config *cfg, int threads)
{
    return (cfg->mem_limit ? cfg->mem_limit : (size_t)512 << 20) /
           (size_t)(threads > 1 ? threads : 1);
}

as_status as_sweep_run(const as_trace *tr, const as_sp_config *cfg, int threads,
                       as_sp_record_fn fn, void *ctx, char *err)
{
    as_status cst = as_sweep_check(cfg, NULL, err);
    if (cst != AS_OK) return cst;
    size_t nu = 0;
    int any = 0;
    uint64_t total = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        any = 1;
        as_status lst = as_sweep_check(cfg, l, err);
        if (lst != AS_OK) return lst;
        nu += (size_t)l->hkv;
        int64_t nh = cfg->head >= 0 ? 1 : l->hq, nq = cfg->query >= 0 ? 1 : l->t;
        total += (uint64_t)(nh * nq) * cfg->n_methods * cfg->n_budgets;
    }
    if (!any) return as_err_set(err, AS_ERR_USAGE, "the trace has no layer %d", cfg->layer);
    sw_run R;
    memset(&R, 0, sizeof R);
    R.tr = tr;
    R.cfg = cfg;
    R.fn = fn;
    R.ctx = ctx;
    R.total = total;
    if (threads < 1) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > 0 ? (int)(nc < 64 ? nc : 64) : 1;
    }
    R.mem = as_sweep_worker_mem(cfg, threads);
    R.ahead = 2 * (size_t)threads;
    R.u = calloc(nu ? nu : 1, sizeof *R.u);
    if (!R.u) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        for (int64_t g = 0; g < l->hkv; g++) R.u[R.nu++] = (sw_unit){.li = li, .kvh = g};
    }
    pthread_mutex_init(&R.mu, NULL);
    pthread_cond_init(&R.cv, NULL);
    int blas = openblas_get_num_threads();
    if (threads > 1) openblas_set_num_threads(1);
    /* threads - 1 helpers (fewer if they cannot start); the calling thread works too */
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    int nstart = 0;
    while (th && nstart < threads - 1 && pthread_create(&th[nstart], NULL, worker, &R) == 0)
        nstart++;
    worker(&R);
    for (int t = 0; t < nstart; t++) pthread_join(th[t], NULL);
    free(th);
    if (threads > 1) openblas_set_num_threads(blas);
    as_status st = AS_OK;
    for (size_t i = 0; i < R.nu; i++) {
        free(R.u[i].rec);
        if (st == AS_OK && R.u[i].state == 2 && R.u[i].st != AS_OK) {
            st = R.u[i].st;
            snprintf(err, AS_ERR_LEN, "%s", R.u[i].err);
        }
    }
    pthread_mutex_destroy(&R.mu);
    pthread_cond_destroy(&R.cv);
    free(R.u);
    return st;
}
