#include "as_entropy.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_pagecache.h"
#include "as_select.h"

const double as_entropy_thresholds[AS_ENTROPY_NTHR] = {0.50, 0.90, 0.99};

/* Histogram of the scores of one query: a window of HB bins of width 1/HPN nat on a fixed grid
 * g = floor(s * HPN); bin i of the window holds g = gt - i, gt = floor(m * HPN) for the running
 * maximum m. Bin masses are kept relative to the bin's own grid value g / HPN, so they never need
 * rescaling when the maximum grows; scores more than HB / HPN nats below the maximum fall into an
 * underflow bin whose mass is kept relative to m. */
#define HB 4096
#define HPN 64.0
#define GRID_CLAMP 4.0e18 /* |s * HPN| beyond this collapses to the edge bins (|s| > 6e16) */

static double grid_floor(double s)
{
    double x = s * HPN;
    if (x > GRID_CLAMP) x = GRID_CLAMP;
    if (x < -GRID_CLAMP) x = -GRID_CLAMP;
    double t = (double)(int64_t)x;
    return t > x ? t - 1.0 : t;
}

/* zr = Z - 1 = the sum of exp(s_i - m) over every key but one maximum, u = sum w_i (s_i - m):
 * ln Z = log1p(zr) keeps H's relative precision when Z is close to 1 (tiny entropies), where
 * log of the rounded Z would keep only 1e-16 absolute. */
/* Kahan's compensated sum (Higham 2002, §4.3): the sum is *s - *c, its error 2u |sum| + O(n u^2)
 * sum |x| instead of n u; the terms of Z - 1 (all >= 0) and of U (all <= 0) have one sign. */
static inline void kahan_add(double *s, double *c, double x)
{
    double y = x - *c, t = *s + y;
    *c = (t - *s) - y;
    *s = t;
}

static void fill_q(as_entropy_q *q, int64_t n, double m, double zr, double u)
{
    q->n = n;
    double lz = log1p(zr), z = 1.0 + zr;
    q->lse = m + lz;
    double h = lz - u / z; /* both terms >= 0 */
    if (h < 0) h = 0;
    q->entropy_nats = h;
    q->entropy_bits = h / M_LN2;
    q->entropy_norm = n > 1 ? h / log((double)n) : 0.0;
    q->eff_support = exp(h);
}

static void clear_q(as_entropy_q *q)
{
    q->n = 0;
    q->lse = q->entropy_nats = q->entropy_bits = q->entropy_norm = q->eff_support = NAN;
    q->k50 = q->k90 = q->k99 = -1;
    q->k50_frac = q->k90_frac = q->k99_frac = NAN;
}

static void set_k(as_entropy_q *q, int t, int64_t k)
{
    double f = q->n > 0 ? (double)k / (double)q->n : NAN;
    if (t == 0) q->k50 = k, q->k50_frac = f;
    if (t == 1) q->k90 = k, q->k90_frac = f;
    if (t == 2) q->k99 = k, q->k99_frac = f;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

as_status as_entropy_of_scores(const double *s, int64_t n, int topk, as_entropy_q *out, char *err)
{
    clear_q(out);
    if (n < 1) return as_err_set(err, AS_ERR_USAGE, "entropy: no keys (n = %lld)", (long long)n);
    double m = -INFINITY;
    int64_t im = 0;
    for (int64_t i = 0; i < n; i++)
        if (s[i] > m) m = s[i], im = i;
    if (!isfinite(m)) return as_err_set(err, AS_ERR_VALUE, "entropy: non-finite scores");
    double zr = 0.0, zc = 0.0, u = 0.0, uc = 0.0; /* zr: Z - 1, all terms but the maximum's (1) */
    for (int64_t i = 0; i < n; i++) {
        double x = s[i] - m, w = exp(x);
        if (i != im) kahan_add(&zr, &zc, w);
        kahan_add(&u, &uc, w * x);
    }
    zr -= zc;
    fill_q(out, n, m, zr, u - uc);
    const double z = 1.0 + zr;
    if (!topk) return AS_OK;
    double *w = malloc((size_t)n * sizeof *w);
    if (!w) return as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory");
    for (int64_t i = 0; i < n; i++) w[i] = exp(s[i] - m);
    qsort(w, (size_t)n, sizeof *w, cmp_desc);
    double c = 0.0;
    int t = 0;
    for (int64_t i = 0; i < n && t < AS_ENTROPY_NTHR; i++) {
        c += w[i];
        while (t < AS_ENTROPY_NTHR && c >= as_entropy_thresholds[t] * z) set_k(out, t++, i + 1);
    }
    while (t < AS_ENTROPY_NTHR) set_k(out, t++, n);
    free(w);
    return AS_OK;
}

as_status as_entropy_topk_mass(const double *s, int64_t n, int64_t k, double *mass, char *err)
{
    *mass = NAN;
    if (n < 1 || k < 0)
        return as_err_set(err, AS_ERR_USAGE, "top-k mass: bad sizes (n = %lld, k = %lld)",
                          (long long)n, (long long)k);
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(s[i]) || s[i] == INFINITY)
            return as_err_set(err, AS_ERR_VALUE, "top-k mass: score %lld is %g", (long long)i, s[i]);
        if (s[i] > m) m = s[i];
    }
    if (!isfinite(m)) return as_err_set(err, AS_ERR_VALUE, "top-k mass: every score is -inf");
    if (k >= n) return *mass = 1.0, AS_OK;
    int64_t *idx = malloc((size_t)(k > 0 ? k : 1) * sizeof *idx);
    if (!idx) return as_err_set(err, AS_ERR_NOMEM, "top-k mass: out of memory");
    as_status st = as_select_topk(s, n, k, idx, err);
    if (st == AS_OK) {
        double z = 0.0, top = 0.0;
        for (int64_t i = 0; i < n; i++) z += exp(s[i] - m);
        for (int64_t j = 0; j < k; j++) top += exp(s[idx[j]] - m);
        *mass = top / z;
    }
    free(idx);
    return st;
}

void as_entropy_opts_init(as_entropy_opts *o)
{
    memset(o, 0, sizeof *o);
    o->head = -1;
    o->topk = 1;
    o->entropy = 1;
}

void as_entropy_layer_res_free(as_entropy_layer_res *res)
{
    if (!res) return;
    free(res->q);
    free(res->attn);
    free(res->attn_sv);
    memset(res, 0, sizeof *res);
}

/* ----------------------------------------------------------------- the streaming pass */

/* One threshold of one query while its k is being resolved: the keys not yet placed lie in a
 * score interval of one level-0 bin; the keys above it and their mass are known. */
enum { IT_DONE = 0, IT_GATHER, IT_HIST };
#define SUBB 4096 /* sub-bins of a refinement histogram */

typedef struct {
    int state;
    int bin;           /* level-0 window bin (HB: underflow) */
    double lo, hi;     /* lo <= s < hi within the bin (-inf / +inf: the whole bin) */
    double flo, fhi;   /* finite range the sub-bins split */
    double before;     /* mass above the interval, relative to the row's max */
    int64_t above;     /* keys above the interval */
    int64_t count;     /* keys in the interval */
    int owner;         /* threshold whose gather / histogram this one shares (itself: owner) */
    int64_t off, got;  /* IT_GATHER: scores in pool[off .. off + got) */
    int64_t hoff;      /* IT_HIST: sub-bin arrays at hoff * SUBB */
} item;

typedef struct {
    double m, zr, u;     /* running max, sum w - 1 (every w but one maximum's), sum w (s - m),
                            w = exp(s - m); Kahan sums (value zr - zrc, u - uc) */
    double zrc, uc;
    double gt, cm;       /* top grid bin floor(m * HPN); exp(m - gt / HPN) */
    double under;        /* underflow mass, relative to m */
    int64_t under_cnt;
    int64_t n;           /* visible keys */
    item it[AS_ENTROPY_NTHR];
} row_state;

typedef struct {
    const as_layer *l;
    const as_entropy_opts *o;
    int64_t nb;           /* keys per tile */
    int hist;             /* top-k histograms */
    double *tab;          /* exp(i / HPN), i < HB */
    double *kt;           /* nb x d converted keys */
    double *qb;           /* m x d query rows */
    double *s;            /* m x nb scores */
    int32_t *cnt;         /* m x HB */
    double *mass;         /* m x HB */
    double *fac;          /* m: column factors for A's QR */
    row_state *rs;        /* m */
    int64_t gather_cap;   /* scores one threshold of one query may gather before refining */
    uint64_t done, total;
} pass_ctx;

/* Scores of the block's m rows against keys [j0, j0 + cnt) of kv head g into c->s. */
static void tile_scores(pass_ctx *c, int64_t g, int64_t m, int64_t j0, int64_t cnt)
{
    const as_layer *l = c->l;
    as_layer_read_k(l, g, j0, cnt, c->kt);
    as_tensor_release(l->k, (uint64_t)((g * l->n + j0) * l->d), (uint64_t)(cnt * l->d));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)cnt, (int)l->d, l->scale,
                c->qb, (int)l->d, c->kt, (int)l->d, 0.0, c->s, (int)c->nb);
}

/* Move the window of row r up to the new top bin gt_new (>= gt). */
static void shift_window(pass_ctx *c, int64_t r, double gt_new, double m_new)
{
    row_state *st = &c->rs[r];
    int32_t *cnt = c->cnt + r * HB;
    double *mass = c->mass + r * HB;
    double delta = gt_new - st->gt;
    if (delta <= 0) return;
    int64_t dl = delta >= HB ? HB : (int64_t)delta;
    for (int64_t i = HB - dl; i < HB; i++) {
        if (!cnt[i]) continue;
        double g = st->gt - (double)i;
        st->under += mass[i] * exp(g / HPN - m_new);
        st->under_cnt += cnt[i];
    }
    if (dl < HB) {
        memmove(cnt + dl, cnt, (size_t)(HB - dl) * sizeof *cnt);
        memmove(mass + dl, mass, (size_t)(HB - dl) * sizeof *mass);
    }
    memset(cnt, 0, (size_t)dl * sizeof *cnt);
    memset(mass, 0, (size_t)dl * sizeof *mass);
}

/* Pass 1 over one tile row: running max, Z, U, histogram; with attn, the row becomes the
 * weights exp(s - m) (zero on keys the query may not see). */
static void row_pass1(pass_ctx *c, int64_t r, int64_t j0, int64_t cnt, int attn)
{
    row_state *st = &c->rs[r];
    double *srow = c->s + r * c->nb;
    int64_t v = st->n - j0;
    if (v > cnt) v = cnt;
    c->fac[r] = 1.0;
    if (v <= 0) {
        if (attn) memset(srow, 0, (size_t)cnt * sizeof *srow);
        return;
    }
    double mx = -INFINITY;
    int64_t jm = 0, skip = -1; /* skip: the new maximum's key, whose w = 1 is not in zr */
    for (int64_t j = 0; j < v; j++)
        if (srow[j] > mx) mx = srow[j], jm = j;
    if (mx > st->m) {
        skip = jm;
        if (st->m == -INFINITY) {
            st->zr = st->zrc = st->u = st->uc = st->under = 0.0;
            if (c->hist) st->gt = grid_floor(mx);
        } else {
            double f = exp(st->m - mx);
            double zr = st->zr - st->zrc;
            st->u = f * ((st->u - st->uc) + (1.0 + zr) * (st->m - mx));
            st->zr = f + f * zr; /* the old maximum's w is now f */
            st->zrc = st->uc = 0.0;
            st->under *= f;
            c->fac[r] = f;
            if (c->hist) {
                double gt_new = grid_floor(mx);
                shift_window(c, r, gt_new, mx);
                st->gt = gt_new;
            }
        }
        st->m = mx;
        if (c->hist) st->cm = exp(mx - st->gt / HPN);
    }
    const double m = st->m;
    double z = 0.0, zc = 0.0, u = 0.0, uc = 0.0;
    if (c->hist) {
        int32_t *hc = c->cnt + r * HB;
        double *hm = c->mass + r * HB;
        const double gt = st->gt, cm = st->cm;
        const double *tab = c->tab;
        double under = 0.0;
        int64_t ucnt = 0;
        for (int64_t j = 0; j < v; j++) {
            double x = srow[j] - m, w = exp(x);
            if (j != skip) kahan_add(&z, &zc, w);
            kahan_add(&u, &uc, w * x);
            double gi = gt - grid_floor(srow[j]);
            if (gi < HB) {
                int i = (int)gi;
                hc[i]++;
                hm[i] += w * cm * tab[i];
            } else {
                under += w;
                ucnt++;
            }
            if (attn) srow[j] = w;
        }
        st->under += under;
        st->under_cnt += ucnt;
    } else if (attn) {
        for (int64_t j = 0; j < v; j++) {
            double x = srow[j] - m, w = exp(x);
            if (j != skip) kahan_add(&z, &zc, w);
            kahan_add(&u, &uc, w * x);
            srow[j] = w;
        }
    } else {
        for (int64_t j = 0; j < v; j++) {
            double x = srow[j] - m, w = exp(x);
            if (j != skip) kahan_add(&z, &zc, w);
            kahan_add(&u, &uc, w * x);
        }
    }
    kahan_add(&st->zr, &st->zrc, z - zc);
    kahan_add(&st->u, &st->uc, u - uc);
    if (attn && v < cnt) memset(srow + v, 0, (size_t)(cnt - v) * sizeof *srow);
}

/* ---- exact top-k: refinement passes ------------------------------------------------------
 * After pass 1 each threshold of each query knows the level-0 bin where its cumulative mass
 * crosses. A pass over the keys then either gathers that interval's scores (at most gather_cap
 * of them) to sort, or, for a crowded interval, builds a histogram of SUBB sub-bins on it; the
 * crossing sub-bin becomes the next interval. Scores are recomputed by the same dgemm calls, so
 * every pass sees bit-identical values and membership tests agree from pass to pass. */

static int bin0(const row_state *st, double s)
{
    double gi = st->gt - grid_floor(s);
    return gi < HB ? (int)gi : HB;
}

static int in_item(const row_state *st, const item *it, double s)
{
    return s >= it->lo && s < it->hi && bin0(st, s) == it->bin;
}

/* Decide how an unresolved item continues: done (one key, or equal weights), gather, or hist. */
static void item_next(pass_ctx *c, row_state *st, int t, as_entropy_q *q)
{
    item *it = &st->it[t];
    if (it->count <= 1) {
        set_k(q, t, it->above + (it->count == 1 ? 1 : 0));
        it->state = IT_DONE;
    } else {
        it->state = it->count <= c->gather_cap ? IT_GATHER : IT_HIST;
    }
}

/* After pass 1: the level-0 crossing bins of a row's thresholds. */
static void row_crossings(pass_ctx *c, int64_t r, as_entropy_q *q)
{
    row_state *st = &c->rs[r];
    const int32_t *hc = c->cnt + r * HB;
    const double *hm = c->mass + r * HB;
    double thr[AS_ENTROPY_NTHR];
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        thr[t] = as_entropy_thresholds[t] * (1.0 + (st->zr - st->zrc));
        st->it[t].state = IT_DONE;
    }
    double cacc = 0.0;
    int64_t kacc = 0;
    int t = 0;
    for (int i = 0; i < HB && t < AS_ENTROPY_NTHR; i++) {
        if (!hc[i]) continue;
        double bm = hm[i] / (st->cm * c->tab[i]);
        while (t < AS_ENTROPY_NTHR && cacc + bm >= thr[t]) {
            item *it = &st->it[t];
            double g = st->gt - (double)i;
            *it = (item){IT_GATHER, i, -INFINITY, INFINITY, g / HPN, (g + 1) / HPN, cacc, kacc,
                         hc[i], t, 0, 0, 0};
            item_next(c, st, t, q);
            t++;
        }
        cacc += bm;
        kacc += hc[i];
    }
    for (; t < AS_ENTROPY_NTHR; t++) {
        if (st->under_cnt > 0) {
            item *it = &st->it[t];
            double fhi = (st->gt - HB + 1) / HPN, flo = st->m - 746.0; /* e^-746 = 0 */
            if (!(flo < fhi)) flo = fhi - 1.0;
            *it = (item){IT_GATHER, HB, -INFINITY, INFINITY, flo, fhi, cacc, kacc,
                         st->under_cnt, t, 0, 0, 0};
            item_next(c, st, t, q);
        } else { /* rounding left the threshold unreached: all keys */
            set_k(q, t, st->n);
        }
    }
}

/* Sub-bin j of s in a histogram with boundaries bnd[0..SUBB] (bnd[j] <= s < bnd[j+1]). */
static int sub_index(const double *bnd, double flo, double fhi, double s)
{
    double f = (s - flo) / (fhi - flo) * SUBB;
    int j = f < 0 ? 0 : f >= SUBB ? SUBB - 1 : (int)f;
    while (j > 0 && s < bnd[j]) j--;
    while (j < SUBB - 1 && s >= bnd[j + 1]) j++;
    return j;
}

typedef struct {
    double *pool;              /* gathered scores */
    double *bnd, *hm, *lo, *hi; /* per histogram: SUBB + 1 boundaries, SUBB masses/min/max */
    int64_t *hc;
} refine_buf;

/* One refinement pass over one tile row. */
static void row_refine(pass_ctx *c, int64_t r, int64_t j0, int64_t cnt, refine_buf *b)
{
    row_state *st = &c->rs[r];
    item *own[AS_ENTROPY_NTHR];
    int no = 0;
    for (int t = 0; t < AS_ENTROPY_NTHR; t++)
        if (st->it[t].state != IT_DONE && st->it[t].owner == t) own[no++] = &st->it[t];
    if (!no) return;
    const double *srow = c->s + r * c->nb;
    int64_t v = st->n - j0;
    if (v > cnt) v = cnt;
    for (int64_t j = 0; j < v; j++) {
        double s = srow[j];
        for (int u = 0; u < no; u++) {
            item *it = own[u];
            if (!in_item(st, it, s)) continue;
            if (it->state == IT_GATHER) {
                if (it->got < it->count) b->pool[it->off + it->got++] = s;
            } else {
                int64_t h0 = it->hoff * SUBB;
                int k = sub_index(b->bnd + it->hoff * (SUBB + 1), it->flo, it->fhi, s);
                b->hc[h0 + k]++;
                b->hm[h0 + k] += exp(s - st->m);
                if (s < b->lo[h0 + k]) b->lo[h0 + k] = s;
                if (s > b->hi[h0 + k]) b->hi[h0 + k] = s;
            }
            break; /* the owners' intervals are disjoint or equal: one match */
        }
    }
}

/* After a refinement pass: finish gathered items, descend into the crossing sub-bin of the
 * histogram items. */
static void row_settle(pass_ctx *c, int64_t r, refine_buf *b, as_entropy_q *q)
{
    row_state *st = &c->rs[r];
    item next[AS_ENTROPY_NTHR];
    int sorted[AS_ENTROPY_NTHR] = {0};
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        item *it = &st->it[t];
        next[t] = *it;
        if (it->state == IT_DONE) continue;
        item *o = &st->it[it->owner];
        double thr = as_entropy_thresholds[t] * (1.0 + (st->zr - st->zrc)), acc = it->before;
        if (it->state == IT_GATHER) {
            double *x = b->pool + o->off;
            int64_t nx = o->got;
            if (!sorted[it->owner]) {
                qsort(x, (size_t)nx, sizeof *x, cmp_desc);
                sorted[it->owner] = 1;
            }
            int64_t k = it->above + it->count;
            for (int64_t j = 0; j < nx; j++) {
                acc += exp(x[j] - st->m);
                if (acc >= thr) {
                    k = it->above + j + 1;
                    break;
                }
            }
            set_k(q, t, k);
            next[t].state = IT_DONE;
            continue;
        }
        /* histogram: the sub-bin where the cumulative mass crosses */
        const int64_t h0 = o->hoff * SUBB;
        const double *bnd = b->bnd + o->hoff * (SUBB + 1);
        int64_t above = it->above;
        int jc = -1;
        for (int j = SUBB - 1; j >= 0; j--) {
            if (!b->hc[h0 + j]) continue;
            if (acc + b->hm[h0 + j] >= thr) {
                jc = j;
                break;
            }
            acc += b->hm[h0 + j];
            above += b->hc[h0 + j];
        }
        if (jc < 0) { /* rounding: the whole interval */
            set_k(q, t, it->above + it->count);
            next[t].state = IT_DONE;
            continue;
        }
        item *nt = &next[t];
        nt->before = acc;
        nt->above = above;
        nt->count = b->hc[h0 + jc];
        nt->lo = jc == 0 ? it->lo : bnd[jc];
        nt->hi = jc == SUBB - 1 ? it->hi : bnd[jc + 1];
        nt->flo = jc == 0 ? it->flo : bnd[jc];
        nt->fhi = jc == SUBB - 1 ? it->fhi : bnd[jc + 1];
        if (nt->count > 1 && b->lo[h0 + jc] == b->hi[h0 + jc]) {
            /* equal scores: add equal weights one by one */
            double e = exp(b->lo[h0 + jc] - st->m);
            int64_t k = nt->above + nt->count;
            for (int64_t j = 0; j < nt->count; j++) {
                acc += e;
                if (acc >= thr) {
                    k = nt->above + j + 1;
                    break;
                }
            }
            set_k(q, t, k);
            nt->state = IT_DONE;
            continue;
        }
        st->it[t] = *nt; /* item_next reads the item */
        item_next(c, st, t, q);
        next[t] = st->it[t];
    }
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) st->it[t] = next[t];
}

/* Owners (items sharing an interval share one gather / histogram) and buffer offsets. */
static void assign(row_state *st, int64_t *pool_n, int64_t *hist_n)
{
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        item *it = &st->it[t];
        if (it->state == IT_DONE) continue;
        it->owner = t;
        for (int u = 0; u < t; u++) {
            item *o = &st->it[u];
            if (o->state == it->state && o->bin == it->bin && o->lo == it->lo && o->hi == it->hi) {
                it->owner = u;
                break;
            }
        }
        if (it->owner != t) continue;
        if (it->state == IT_GATHER) {
            it->off = *pool_n;
            it->got = 0;
            *pool_n += it->count;
        } else {
            it->hoff = (*hist_n)++;
        }
    }
}

static void tick(pass_ctx *c)
{
    c->done++;
    if (c->o->progress) c->o->progress(c->o->ctx, c->done, c->total);
}

/* The refinement passes of a block of m rows (row r is query qi of head h as given by map). */
static as_status refine_block(pass_ctx *c, int64_t g, int64_t m, int64_t nmax, int64_t ha,
                              int64_t q0, int64_t tq, as_entropy_layer_res *res, char *err)
{
    const int64_t t = c->l->t, nb = c->nb, tiles = (nmax + nb - 1) / nb;
    for (int64_t r = 0; r < m; r++)
        row_crossings(c, r, &res->q[(ha + r / tq) * t + q0 + r % tq]);
    int first = 1;
    for (;;) {
        int64_t pool_n = 0, hist_n = 0;
        for (int64_t r = 0; r < m; r++) assign(&c->rs[r], &pool_n, &hist_n);
        if (pool_n == 0 && hist_n == 0) break;
        if (!first) c->total += (uint64_t)tiles;
        first = 0;
        refine_buf b = {0};
        b.pool = malloc((size_t)(pool_n ? pool_n : 1) * sizeof *b.pool);
        if (hist_n) {
            b.bnd = malloc((size_t)(hist_n * (SUBB + 1)) * sizeof *b.bnd);
            b.hm = calloc((size_t)(hist_n * SUBB), sizeof *b.hm);
            b.lo = malloc((size_t)(hist_n * SUBB) * sizeof *b.lo);
            b.hi = malloc((size_t)(hist_n * SUBB) * sizeof *b.hi);
            b.hc = calloc((size_t)(hist_n * SUBB), sizeof *b.hc);
        }
        if (!b.pool || (hist_n && (!b.bnd || !b.hm || !b.lo || !b.hi || !b.hc))) {
            free(b.pool), free(b.bnd), free(b.hm), free(b.lo), free(b.hi), free(b.hc);
            return as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory (top-k refinement)");
        }
        for (int64_t i = 0; i < hist_n * SUBB; i++) {
            b.lo[i] = INFINITY;
            b.hi[i] = -INFINITY;
        }
        for (int64_t r = 0; r < m; r++)
            for (int u = 0; u < AS_ENTROPY_NTHR; u++) {
                item *it = &c->rs[r].it[u];
                if (it->state != IT_HIST || it->owner != u) continue;
                double *bnd = b.bnd + it->hoff * (SUBB + 1);
                for (int j = 1; j < SUBB; j++)
                    bnd[j] = it->flo + (it->fhi - it->flo) * ((double)j / SUBB);
                bnd[0] = it->lo;
                bnd[SUBB] = it->hi;
            }
        for (int64_t j0 = 0; j0 < nmax; j0 += nb) {
            int64_t cnt = nmax - j0 < nb ? nmax - j0 : nb;
            tile_scores(c, g, m, j0, cnt);
            for (int64_t r = 0; r < m; r++) row_refine(c, r, j0, cnt, &b);
            tick(c);
        }
        for (int64_t r = 0; r < m; r++)
            row_settle(c, r, &b, &res->q[(ha + r / tq) * t + q0 + r % tq]);
        free(b.pool), free(b.bnd), free(b.hm), free(b.lo), free(b.hi), free(b.hc);
    }
    if (first)
        for (int64_t i = 0; i < tiles; i++) tick(c);
    return AS_OK;
}

/* One block of kv head g: queries [q0, q1) of query heads [ha, hb) (the whole of each head's
 * queries when A's spectrum is asked for), all passes. Row r = (h - ha) * tq + (qi - q0). */
static as_status run_block(pass_ctx *c, int64_t g, int64_t ha, int64_t hb, int64_t q0, int64_t q1,
                           as_entropy_layer_res *res, char *err)
{
    const as_layer *l = c->l;
    const as_entropy_opts *o = c->o;
    const int64_t t = l->t, d = l->d, nb = c->nb, tq = q1 - q0, m = (hb - ha) * tq;
    int attn = o->attn_sv;
    int64_t nmax = 0;
    for (int64_t h = ha; h < hb; h++)
        for (int64_t qi = q0; qi < q1; qi++) {
            int64_t r = (h - ha) * tq + (qi - q0);
            as_layer_read_q(l, h, qi, c->qb + r * d);
            row_state *st = &c->rs[r];
            memset(st, 0, sizeof *st);
            st->m = -INFINITY;
            st->n = as_layer_visible(l, qi);
            if (st->n > nmax) nmax = st->n;
        }
    if (c->hist) {
        memset(c->cnt, 0, (size_t)(m * HB) * sizeof *c->cnt);
        memset(c->mass, 0, (size_t)(m * HB) * sizeof *c->mass);
    }
    as_tsqr **qr = NULL;
    as_status st = AS_OK;
    if (attn) {
        qr = calloc((size_t)(hb - ha), sizeof *qr);
        if (!qr) return as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory");
        for (int64_t h = ha; h < hb; h++)
            if (!(qr[h - ha] = as_tsqr_new(t, nb, err))) {
                st = AS_ERR_NOMEM;
                goto out;
            }
    }
    /* pass 1 */
    for (int64_t j0 = 0; j0 < nmax; j0 += nb) {
        int64_t cnt = nmax - j0 < nb ? nmax - j0 : nb;
        tile_scores(c, g, m, j0, cnt);
        for (int64_t r = 0; r < m; r++) row_pass1(c, r, j0, cnt, attn);
        for (int64_t h = ha; attn && h < hb; h++) {
            as_tsqr *q = qr[h - ha];
            as_tsqr_scale_cols(q, c->fac + (h - ha) * t);
            if ((st = as_tsqr_add_cols(q, c->s + (h - ha) * t * nb, cnt, nb, err)) != AS_OK)
                goto out;
        }
        tick(c);
    }
    for (int64_t h = ha; h < hb; h++)
        for (int64_t qi = q0; qi < q1; qi++) {
            row_state *rs = &c->rs[(h - ha) * tq + (qi - q0)];
            as_entropy_q *q = &res->q[h * t + qi];
            if (o->entropy || o->topk) fill_q(q, rs->n, rs->m, rs->zr - rs->zrc, rs->u - rs->uc);
        }
    /* A's spectrum: columns scaled to weights exp(s - lse) */
    for (int64_t h = ha; attn && h < hb; h++) {
        for (int64_t qi = 0; qi < t; qi++) c->fac[qi] = 1.0 / (1.0 + (c->rs[(h - ha) * t + qi].zr - c->rs[(h - ha) * t + qi].zrc));
        as_tsqr_scale_cols(qr[h - ha], c->fac);
        int64_t nsv = 0;
        double *sv = res->attn_sv + h * t;
        if ((st = as_tsqr_sv(qr[h - ha], sv, &nsv, err)) != AS_OK) goto out;
        as_rank_from_sv(sv, nsv, t, l->n, &res->attn[h]);
    }
    /* exact top-k: refinement passes */
    if (c->hist) st = refine_block(c, g, m, nmax, ha, q0, tq, res, err);
out:
    for (int64_t h = ha; qr && h < hb; h++) as_tsqr_free(qr[h - ha]);
    free(qr);
    return st;
}

as_status as_entropy_layer(const as_layer *l, const as_entropy_opts *o, as_entropy_layer_res *res,
                           char *err)
{
    as_entropy_opts def;
    if (!o) {
        as_entropy_opts_init(&def);
        o = &def;
    }
    memset(res, 0, sizeof *res);
    if (o->head >= l->hq)
        return as_err_set(err, AS_ERR_USAGE, "layer %d has %lld query heads", l->index,
                          (long long)l->hq);
    const int64_t hq = l->hq, t = l->t, d = l->d;
    res->hq = hq;
    res->t = t;
    res->q = malloc((size_t)(hq * t > 0 ? hq * t : 1) * sizeof *res->q);
    if (!res->q) return as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory");
    for (int64_t i = 0; i < hq * t; i++) clear_q(&res->q[i]);
    if (o->attn_sv) {
        res->attn = calloc((size_t)hq, sizeof *res->attn);
        res->attn_sv = malloc((size_t)(hq * t > 0 ? hq * t : 1) * sizeof *res->attn_sv);
        if (!res->attn || !res->attn_sv) {
            as_entropy_layer_res_free(res);
            return as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory");
        }
        for (int64_t i = 0; i < hq * t; i++) res->attn_sv[i] = NAN;
        for (int64_t h = 0; h < hq; h++) {
            as_rank_from_sv(NULL, 0, t, l->n, &res->attn[h]);
            res->attn[h].erank = res->attn[h].stable_rank = NAN;
        }
    }
    if (t == 0 || l->n == 0) return AS_OK;

    pass_ctx c;
    memset(&c, 0, sizeof c);
    c.l = l;
    c.o = o;
    c.hist = o->topk != 0;
    c.nb = o->tile > 0 ? o->tile : AS_ATTN_TILE;
    if (c.nb > l->n) c.nb = l->n;
    size_t mem = o->mem ? o->mem : (size_t)256 << 20;
    size_t row_bytes = (size_t)c.nb * 8 + (c.hist ? (size_t)HB * 12 : 0) + sizeof(row_state) +
                       (size_t)d * 8 + 8;
    int64_t group = hq / l->hkv;
    int64_t hpb = (int64_t)(mem / (row_bytes * (size_t)t)); /* heads per block */
    int64_t qpb = t;                                        /* queries per block */
    if (hpb < 1) {
        hpb = 1;
        /* one head's queries exceed the memory: split them (not possible for A's spectrum,
         * whose QR needs every query of the head in one pass) */
        if (!o->attn_sv) {
            qpb = (int64_t)(mem / row_bytes);
            if (qpb < 1) qpb = 1;
        }
    }
    if (hpb > group) hpb = group;
    int64_t mmax = hpb * qpb;
    /* gathered scores: at most a quarter of the memory for the block's 3 thresholds per row */
    c.gather_cap = o->gather_cap > 0 ? o->gather_cap
                                     : (int64_t)(mem / 4 / (8 * AS_ENTROPY_NTHR * (size_t)mmax));
    if (c.gather_cap < 256) c.gather_cap = 256;
    c.kt = malloc((size_t)(c.nb * d) * sizeof *c.kt);
    c.qb = malloc((size_t)(mmax * d) * sizeof *c.qb);
    c.s = malloc((size_t)(mmax * c.nb) * sizeof *c.s);
    c.fac = malloc((size_t)(mmax > t ? mmax : t) * sizeof *c.fac);
    c.rs = malloc((size_t)mmax * sizeof *c.rs);
    c.tab = malloc(HB * sizeof *c.tab);
    if (c.hist) {
        c.cnt = malloc((size_t)(mmax * HB) * sizeof *c.cnt);
        c.mass = malloc((size_t)(mmax * HB) * sizeof *c.mass);
    }
    as_status st = AS_OK;
    if (!c.kt || !c.qb || !c.s || !c.fac || !c.rs || !c.tab || (c.hist && (!c.cnt || !c.mass))) {
        st = as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory");
        goto done;
    }
    for (int i = 0; i < HB; i++) c.tab[i] = exp((double)i / HPN);

    int64_t h0 = o->head >= 0 ? o->head : 0, h1 = o->head >= 0 ? o->head + 1 : hq;
    /* progress units: tiles of each block, per pass */
    int64_t maxvis = 0;
    for (int64_t qi = 0; qi < t; qi++) {
        int64_t v = as_layer_visible(l, qi);
        if (v > maxvis) maxvis = v;
    }
    int64_t tiles = (maxvis + c.nb - 1) / c.nb;
    for (int64_t h = h0; h < h1;) {
        int64_t g = as_layer_kv_head(l, h), gend = (g + 1) * group;
        int64_t hb = h + hpb < gend ? h + hpb : gend;
        if (hb > h1) hb = h1;
        c.total += (uint64_t)(tiles * (c.hist ? 2 : 1) * ((t + qpb - 1) / qpb));
        h = hb;
    }
    for (int64_t h = h0; h < h1 && st == AS_OK;) {
        int64_t g = as_layer_kv_head(l, h), gend = (g + 1) * group;
        int64_t hb = h + hpb < gend ? h + hpb : gend;
        if (hb > h1) hb = h1;
        for (int64_t q0 = 0; q0 < t && st == AS_OK; q0 += qpb)
            st = run_block(&c, g, h, hb, q0, q0 + qpb < t ? q0 + qpb : t, res, err);
        h = hb;
    }
done:
    free(c.kt);
    free(c.qb);
    free(c.s);
    free(c.fac);
    free(c.rs);
    free(c.tab);
    free(c.cnt);
    free(c.mass);
    if (st != AS_OK) as_entropy_layer_res_free(res);
    return st;
}
