#include "as_entropy.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"

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

static void fill_q(as_entropy_q *q, int64_t n, double m, double z, double u)
{
    q->n = n;
    q->lse = m + log(z);
    double h = log(z) - u / z; /* both terms >= 0 */
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
    for (int64_t i = 0; i < n; i++)
        if (s[i] > m) m = s[i];
    if (!isfinite(m)) return as_err_set(err, AS_ERR_VALUE, "entropy: non-finite scores");
    double z = 0.0, u = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double x = s[i] - m, w = exp(x);
        z += w;
        u += w * x;
    }
    fill_q(out, n, m, z, u);
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

typedef struct {
    double m, z, u;      /* running max, sum w, sum w (s - m), w = exp(s - m) */
    double gt, cm;       /* top grid bin floor(m * HPN); exp(m - gt / HPN) */
    double under;        /* underflow mass, relative to m */
    int64_t under_cnt;
    int64_t n;           /* visible keys */
    /* crossing of the thresholds after pass 1 */
    int bin[AS_ENTROPY_NTHR];         /* window bin (HB: underflow), -1: resolved */
    double before[AS_ENTROPY_NTHR];   /* mass of the bins above, relative to m */
    int64_t above[AS_ENTROPY_NTHR];   /* keys in the bins above */
    int64_t count[AS_ENTROPY_NTHR];   /* keys in the crossing bin */
    int64_t off[AS_ENTROPY_NTHR];     /* gathered scores of the crossing bin: pool + off */
    int64_t got[AS_ENTROPY_NTHR];
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
    uint64_t done, total;
} pass_ctx;

/* Scores of the block's m rows against keys [j0, j0 + cnt) of kv head g into c->s. */
static void tile_scores(pass_ctx *c, int64_t g, int64_t m, int64_t j0, int64_t cnt)
{
    const as_layer *l = c->l;
    as_layer_read_k(l, g, j0, cnt, c->kt);
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
    for (int64_t j = 0; j < v; j++)
        if (srow[j] > mx) mx = srow[j];
    if (mx > st->m) {
        if (st->m == -INFINITY) {
            st->z = st->u = st->under = 0.0;
            if (c->hist) st->gt = grid_floor(mx);
        } else {
            double f = exp(st->m - mx);
            st->u = f * (st->u + st->z * (st->m - mx));
            st->z *= f;
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
    double z = 0.0, u = 0.0;
    if (c->hist) {
        int32_t *hc = c->cnt + r * HB;
        double *hm = c->mass + r * HB;
        const double gt = st->gt, cm = st->cm;
        const double *tab = c->tab;
        double under = 0.0;
        int64_t ucnt = 0;
        for (int64_t j = 0; j < v; j++) {
            double x = srow[j] - m, w = exp(x);
            z += w;
            u += w * x;
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
            z += w;
            u += w * x;
            srow[j] = w;
        }
    } else {
        for (int64_t j = 0; j < v; j++) {
            double x = srow[j] - m, w = exp(x);
            z += w;
            u += w * x;
        }
    }
    st->z += z;
    st->u += u;
    if (attn && v < cnt) memset(srow + v, 0, (size_t)(cnt - v) * sizeof *srow);
}

/* After pass 1: find the bins where the cumulative mass crosses each threshold. Thresholds whose
 * crossing bin holds a single key are resolved at once. Returns the keys to gather in pass 2. */
static int64_t row_crossings(pass_ctx *c, int64_t r, as_entropy_q *q)
{
    row_state *st = &c->rs[r];
    const int32_t *hc = c->cnt + r * HB;
    const double *hm = c->mass + r * HB;
    double thr[AS_ENTROPY_NTHR];
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        thr[t] = as_entropy_thresholds[t] * st->z;
        st->bin[t] = -1;
        st->got[t] = 0;
    }
    double cacc = 0.0;
    int64_t kacc = 0;
    int t = 0;
    for (int i = 0; i < HB && t < AS_ENTROPY_NTHR; i++) {
        if (!hc[i]) continue;
        double bm = hm[i] / (st->cm * c->tab[i]);
        while (t < AS_ENTROPY_NTHR && cacc + bm >= thr[t]) {
            st->bin[t] = i;
            st->before[t] = cacc;
            st->above[t] = kacc;
            st->count[t] = hc[i];
            t++;
        }
        cacc += bm;
        kacc += hc[i];
    }
    for (; t < AS_ENTROPY_NTHR; t++) {
        if (st->under_cnt > 0) {
            st->bin[t] = HB;
            st->before[t] = cacc;
            st->above[t] = kacc;
            st->count[t] = st->under_cnt;
        } else { /* rounding left the threshold unreached: all keys */
            set_k(q, t, st->n);
        }
    }
    int64_t need = 0;
    for (t = 0; t < AS_ENTROPY_NTHR; t++) {
        if (st->bin[t] < 0) continue;
        if (st->count[t] == 1) {
            set_k(q, t, st->above[t] + 1);
            st->bin[t] = -1;
            continue;
        }
        int shared = 0;
        for (int u = 0; u < t; u++)
            if (st->bin[u] == st->bin[t]) shared = 1;
        if (!shared) need += st->count[t];
    }
    return need;
}

/* Pass 2 over one tile row: gather the scores of the crossing bins. */
static void row_pass2(pass_ctx *c, int64_t r, int64_t j0, int64_t cnt, double *pool)
{
    row_state *st = &c->rs[r];
    int b[AS_ENTROPY_NTHR], nbin = 0, slot[AS_ENTROPY_NTHR];
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        if (st->bin[t] < 0) continue;
        int dup = 0;
        for (int u = 0; u < nbin; u++)
            if (b[u] == st->bin[t]) dup = 1;
        if (!dup) {
            slot[nbin] = t;
            b[nbin++] = st->bin[t];
        }
    }
    if (!nbin) return;
    const double *srow = c->s + r * c->nb;
    int64_t v = st->n - j0;
    if (v > cnt) v = cnt;
    const double gt = st->gt;
    for (int64_t j = 0; j < v; j++) {
        double gi = gt - grid_floor(srow[j]);
        int i = gi < HB ? (int)gi : HB;
        for (int u = 0; u < nbin; u++) {
            if (i != b[u]) continue;
            int t = slot[u];
            if (st->got[t] < st->count[t]) pool[st->off[t] + st->got[t]++] = srow[j];
            break;
        }
    }
}

/* Resolve the gathered bins exactly: sort, accumulate from the mass of the bins above. */
static void row_resolve(pass_ctx *c, int64_t r, double *pool, as_entropy_q *q)
{
    row_state *st = &c->rs[r];
    for (int t = 0; t < AS_ENTROPY_NTHR; t++) {
        if (st->bin[t] < 0) continue;
        int owner = t;
        for (int u = 0; u < t; u++)
            if (st->bin[u] == st->bin[t]) {
                owner = u;
                break;
            }
        double *x = pool + st->off[owner];
        int64_t nx = st->got[owner];
        if (owner == t) qsort(x, (size_t)nx, sizeof *x, cmp_desc);
        double thr = as_entropy_thresholds[t] * st->z, acc = st->before[t];
        int64_t k = st->above[t] + st->count[t];
        for (int64_t j = 0; j < nx; j++) {
            acc += exp(x[j] - st->m);
            if (acc >= thr) {
                k = st->above[t] + j + 1;
                break;
            }
        }
        set_k(q, t, k);
    }
}

static void tick(pass_ctx *c)
{
    c->done++;
    if (c->o->progress) c->o->progress(c->o->ctx, c->done, c->total);
}

/* One block of query heads [ha, hb) of kv head g: all passes. */
static as_status run_block(pass_ctx *c, int64_t g, int64_t ha, int64_t hb,
                           as_entropy_layer_res *res, char *err)
{
    const as_layer *l = c->l;
    const as_entropy_opts *o = c->o;
    const int64_t t = l->t, d = l->d, nb = c->nb, m = (hb - ha) * t;
    int attn = o->attn_sv;
    int64_t nmax = 0;
    for (int64_t h = ha; h < hb; h++)
        for (int64_t qi = 0; qi < t; qi++) {
            int64_t r = (h - ha) * t + qi;
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
        for (int64_t qi = 0; qi < t; qi++) {
            row_state *rs = &c->rs[(h - ha) * t + qi];
            as_entropy_q *q = &res->q[h * t + qi];
            if (o->entropy || o->topk) fill_q(q, rs->n, rs->m, rs->z, rs->u);
        }
    /* A's spectrum: columns scaled to weights exp(s - lse) */
    for (int64_t h = ha; attn && h < hb; h++) {
        for (int64_t qi = 0; qi < t; qi++) c->fac[qi] = 1.0 / c->rs[(h - ha) * t + qi].z;
        as_tsqr_scale_cols(qr[h - ha], c->fac);
        int64_t nsv = 0;
        double *sv = res->attn_sv + h * t;
        if ((st = as_tsqr_sv(qr[h - ha], sv, &nsv, err)) != AS_OK) goto out;
        as_rank_from_sv(sv, nsv, t, l->n, &res->attn[h]);
    }
    /* pass 2: top-k crossings */
    if (c->hist) {
        int64_t need = 0;
        for (int64_t r = 0; r < m; r++) {
            int64_t h = ha + r / t, qi = r % t;
            row_state *rs = &c->rs[r];
            int64_t before = need;
            need += row_crossings(c, r, &res->q[h * t + qi]);
            /* offsets of this row's bins in the pool */
            int64_t off = before;
            for (int u = 0; u < AS_ENTROPY_NTHR; u++) {
                if (rs->bin[u] < 0) continue;
                int shared = 0;
                for (int w = 0; w < u; w++)
                    if (rs->bin[w] == rs->bin[u]) shared = 1;
                if (shared) continue;
                rs->off[u] = off;
                off += rs->count[u];
            }
        }
        int64_t tiles = (nmax + nb - 1) / nb;
        if (need > 0) {
            double *pool = malloc((size_t)need * sizeof *pool);
            if (!pool) {
                st = as_err_set(err, AS_ERR_NOMEM, "entropy: out of memory (%lld scores to sort)",
                                (long long)need);
                goto out;
            }
            for (int64_t j0 = 0; j0 < nmax; j0 += nb) {
                int64_t cnt = nmax - j0 < nb ? nmax - j0 : nb;
                tile_scores(c, g, m, j0, cnt);
                for (int64_t r = 0; r < m; r++) row_pass2(c, r, j0, cnt, pool);
                tick(c);
            }
            for (int64_t r = 0; r < m; r++) {
                int64_t h = ha + r / t, qi = r % t;
                row_resolve(c, r, pool, &res->q[h * t + qi]);
            }
            free(pool);
        } else {
            for (int64_t i = 0; i < tiles; i++) tick(c);
        }
    }
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
    if (hpb < 1) hpb = 1;
    if (hpb > group) hpb = group;
    int64_t mmax = hpb * t;
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
        c.total += (uint64_t)(tiles * (c.hist ? 2 : 1));
        h = hb;
    }
    for (int64_t h = h0; h < h1 && st == AS_OK;) {
        int64_t g = as_layer_kv_head(l, h), gend = (g + 1) * group;
        int64_t hb = h + hpb < gend ? h + hpb : gend;
        if (hb > h1) hb = h1;
        st = run_block(&c, g, h, hb, res, err);
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
