#include "as_rank.h"

#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "as_entropy.h"
#include "as_pagecache.h"
#include "as_tsqr.h"

static const char *const mat_names[AS_MAT_COUNT] = {"k", "v", "q", "scores", "attn"};

const char *as_matrix_name(as_matrix m)
{
    return (unsigned)m < AS_MAT_COUNT ? mat_names[m] : "?";
}

int as_matrix_parse(const char *s, as_matrix *m)
{
    static const struct {
        const char *name;
        as_matrix m;
    } al[] = {{"k", AS_MAT_K},         {"keys", AS_MAT_K},      {"v", AS_MAT_V},
              {"values", AS_MAT_V},    {"q", AS_MAT_Q},         {"queries", AS_MAT_Q},
              {"scores", AS_MAT_SCORES}, {"s", AS_MAT_SCORES},  {"attn", AS_MAT_ATTN},
              {"a", AS_MAT_ATTN},      {"attention", AS_MAT_ATTN}};
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++)
        if (strcmp(s, al[i].name) == 0) {
            *m = al[i].m;
            return 0;
        }
    return -1;
}

int as_matrix_parse_list(const char *s, unsigned *mask)
{
    if (strcmp(s, "all") == 0) {
        *mask = (1u << AS_MAT_COUNT) - 1;
        return 0;
    }
    unsigned m = 0;
    char buf[64];
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof buf) return -1;
        memcpy(buf, p, len);
        buf[len] = '\0';
        as_matrix one;
        if (as_matrix_parse(buf, &one) != 0) return -1;
        m |= 1u << one;
        p += len;
        if (*p == ',') p++;
    }
    if (!m) return -1;
    *mask = m;
    return 0;
}

/* ------------------------------------------------------------------ matrices of a layer */

static as_status finish_tsqr(as_tsqr *q, int64_t rows, as_rank_info *info, double *sv, double *r,
                             int64_t *kr, char *err)
{
    int64_t d = as_tsqr_cols(q);
    double *s = sv ? sv : malloc((size_t)d * sizeof *s);
    if (!s) return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
    int64_t nsv = 0;
    as_status st = as_tsqr_sv(q, s, &nsv, err);
    if (st == AS_OK) {
        as_rank_from_sv(s, nsv, rows, d, info);
        if (r) {
            int64_t k = as_tsqr_r(q, r);
            if (kr) *kr = k;
        }
    }
    if (!sv) free(s);
    return st;
}

as_status as_rank_kv(const as_layer *l, int64_t kvh, char which, int64_t tile,
                     as_rank_info *info, double *sv, double *r, int64_t *kr, char *err)
{
    if (kvh < 0 || kvh >= l->hkv || (which != 'k' && which != 'v'))
        return as_err_set(err, AS_ERR_USAGE, "rank: kv head %lld / matrix '%c' out of range",
                          (long long)kvh, which);
    if (tile <= 0) tile = AS_ATTN_TILE;
    int64_t n = l->n, d = l->d;
    if (tile > n) tile = n > 0 ? n : 1;
    as_tsqr *q = as_tsqr_new(d, tile, err);
    if (!q) return AS_ERR_NOMEM;
    double *buf = malloc((size_t)(tile * d) * sizeof *buf);
    if (!buf) {
        as_tsqr_free(q);
        return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
    }
    as_status st = AS_OK;
    for (int64_t j0 = 0; j0 < n && st == AS_OK; j0 += tile) {
        int64_t cnt = n - j0 < tile ? n - j0 : tile;
        if (which == 'k')
            as_layer_read_k(l, kvh, j0, cnt, buf);
        else
            as_layer_read_v(l, kvh, j0, cnt, buf);
        as_tensor_release(which == 'k' ? l->k : l->v, (uint64_t)((kvh * n + j0) * d),
                          (uint64_t)(cnt * d));
        st = as_tsqr_add_rows(q, buf, cnt, d, err);
    }
    if (st == AS_OK) st = finish_tsqr(q, n, info, sv, r, kr, err);
    free(buf);
    as_tsqr_free(q);
    return st;
}

as_status as_rank_q(const as_layer *l, int64_t h, as_rank_info *info, double *sv, double *r,
                    int64_t *kr, char *err)
{
    if (h < 0 || h >= l->hq)
        return as_err_set(err, AS_ERR_USAGE, "rank: query head %lld out of range", (long long)h);
    int64_t t = l->t, d = l->d;
    as_tsqr *q = as_tsqr_new(d, t ? t : 1, err);
    if (!q) return AS_ERR_NOMEM;
    double *buf = malloc((size_t)((t ? t : 1) * d) * sizeof *buf);
    if (!buf) {
        as_tsqr_free(q);
        return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
    }
    for (int64_t i = 0; i < t; i++) as_layer_read_q(l, h, i, buf + i * d);
    as_status st = as_tsqr_add_rows(q, buf, t, d, err);
    if (st == AS_OK) st = finish_tsqr(q, t, info, sv, r, kr, err);
    free(buf);
    as_tsqr_free(q);
    return st;
}

as_status as_rank_scores_from_r(const as_layer *l, const double *rq, int64_t kq, const double *rk,
                                int64_t kk, as_rank_info *info, double *sv, char *err)
{
    int64_t d = l->d, m = kq < kk ? kq : kk;
    if (m == 0) {
        as_rank_from_sv(NULL, 0, l->t, l->n, info);
        return AS_OK;
    }
    double *p = malloc((size_t)(kq * kk) * sizeof *p);
    double *s = sv ? sv : malloc((size_t)m * sizeof *s);
    if (!p || !s) {
        free(p);
        if (!sv) free(s);
        return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
    }
    /* P = scale R_Q R_K^T (kq x kk); both row-major k x d */
    for (int64_t i = 0; i < kq; i++)
        for (int64_t j = 0; j < kk; j++) {
            double acc = 0.0;
            for (int64_t c = 0; c < d; c++) acc += rq[i * d + c] * rk[j * d + c];
            p[i * kk + j] = l->scale * acc;
        }
    as_status st = as_svd_values(p, kq, kk, s, err);
    if (st == AS_OK) as_rank_from_sv(s, m, l->t, l->n, info);
    free(p);
    if (!sv) free(s);
    return st;
}

void as_rank_opts_init(as_rank_opts *o)
{
    memset(o, 0, sizeof *o);
    o->head = -1;
}

void as_rank_recs_free(as_rank_rec *r, size_t n)
{
    if (!r) return;
    for (size_t i = 0; i < n; i++) free(r[i].sv);
    free(r);
}

static as_status push_rec(as_rank_rec **recs, size_t *n, size_t *cap, as_matrix m, int64_t head,
                          int64_t kvh, const as_rank_info *info, const double *sv, int want_sv,
                          char *err)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        as_rank_rec *p = realloc(*recs, nc * sizeof *p);
        if (!p) return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
        *recs = p;
        *cap = nc;
    }
    as_rank_rec *r = &(*recs)[(*n)++];
    r->matrix = m;
    r->head = head;
    r->kv_head = kvh;
    r->info = *info;
    r->sv = NULL;
    if (want_sv && info->nsv > 0) {
        r->sv = malloc((size_t)info->nsv * sizeof *r->sv);
        if (!r->sv) return as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
        memcpy(r->sv, sv, (size_t)info->nsv * sizeof *r->sv);
    }
    return AS_OK;
}

as_status as_rank_layer(const as_layer *l, const as_rank_opts *o, as_rank_rec **recs_out,
                        size_t *n_out, char *err)
{
    as_rank_opts def;
    if (!o) {
        as_rank_opts_init(&def);
        o = &def;
    }
    *recs_out = NULL;
    *n_out = 0;
    if (o->head >= l->hq)
        return as_err_set(err, AS_ERR_USAGE, "layer %d has %lld query heads", l->index,
                          (long long)l->hq);
    unsigned mats = o->mats ? o->mats : (1u << AS_MAT_COUNT) - 1;
    int want_k = (mats >> AS_MAT_K) & 1, want_v = (mats >> AS_MAT_V) & 1;
    int want_q = (mats >> AS_MAT_Q) & 1, want_s = (mats >> AS_MAT_SCORES) & 1;
    int want_a = (mats >> AS_MAT_ATTN) & 1;
    int64_t d = l->d, hkv = l->hkv, hq = l->hq;
    int64_t h0 = o->head >= 0 ? o->head : 0, h1 = o->head >= 0 ? o->head + 1 : hq;
    int64_t g0 = as_layer_kv_head(l, h0), g1 = as_layer_kv_head(l, h1 - 1) + 1;
    int64_t smax = d > l->t ? d : l->t;
    as_rank_rec *recs = NULL;
    size_t n = 0, cap = 0;
    as_status st = AS_OK;
    double *sv = malloc((size_t)(smax ? smax : 1) * sizeof *sv);
    double *rk = want_s ? calloc((size_t)(hkv * d * d), sizeof *rk) : NULL;
    int64_t *kk = want_s ? calloc((size_t)hkv, sizeof *kk) : NULL;
    double *rq = want_s ? malloc((size_t)(d * d) * sizeof *rq) : NULL;
    if (!sv || (want_s && (!rk || !kk || !rq))) {
        st = as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
        goto done;
    }
    uint64_t total = (uint64_t)((g1 - g0) * 2 + (h1 - h0) * 3), done_units = 0;
    as_rank_info info;
    for (int64_t g = g0; g < g1 && st == AS_OK; g++) {
        if (want_k || want_s) {
            st = as_rank_kv(l, g, 'k', o->tile, &info, sv, want_s ? rk + g * d * d : NULL,
                            want_s ? &kk[g] : NULL, err);
            if (st == AS_OK && want_k)
                st = push_rec(&recs, &n, &cap, AS_MAT_K, g, g, &info, sv, o->want_sv, err);
        }
        if (st == AS_OK && want_v) {
            st = as_rank_kv(l, g, 'v', o->tile, &info, sv, NULL, NULL, err);
            if (st == AS_OK)
                st = push_rec(&recs, &n, &cap, AS_MAT_V, g, g, &info, sv, o->want_sv, err);
        }
        done_units += 2;
        if (o->progress) o->progress(o->ctx, done_units, total);
    }
    for (int64_t h = h0; h < h1 && st == AS_OK; h++) {
        int64_t g = as_layer_kv_head(l, h), kq = 0;
        if (want_q || want_s) {
            st = as_rank_q(l, h, &info, sv, rq, &kq, err);
            if (st == AS_OK && want_q)
                st = push_rec(&recs, &n, &cap, AS_MAT_Q, h, g, &info, sv, o->want_sv, err);
        }
        if (st == AS_OK && want_s) {
            st = as_rank_scores_from_r(l, rq, kq, rk + g * d * d, kk[g], &info, sv, err);
            if (st == AS_OK)
                st = push_rec(&recs, &n, &cap, AS_MAT_SCORES, h, g, &info, sv, o->want_sv, err);
        }
        done_units += 1;
        if (o->progress) o->progress(o->ctx, done_units, total);
    }
    if (st == AS_OK && want_a) {
        as_entropy_opts eo;
        as_entropy_opts_init(&eo);
        eo.head = o->head;
        eo.topk = 0;
        eo.entropy = 0;
        eo.attn_sv = 1;
        eo.tile = o->tile;
        eo.mem = o->mem;
        as_entropy_layer_res res;
        st = as_entropy_layer(l, &eo, &res, err);
        for (int64_t h = h0; h < h1 && st == AS_OK; h++)
            st = push_rec(&recs, &n, &cap, AS_MAT_ATTN, h, as_layer_kv_head(l, h), &res.attn[h],
                          res.attn_sv + h * l->t, o->want_sv, err);
        if (st == AS_OK && o->progress) o->progress(o->ctx, total, total);
        as_entropy_layer_res_free(&res);
    }
    if (st == AS_OK) {
        /* order: k and v per kv head, then q, scores, attn per query head */
        as_rank_rec *sorted = malloc((n ? n : 1) * sizeof *sorted);
        if (!sorted) {
            st = as_err_set(err, AS_ERR_NOMEM, "rank: out of memory");
        } else {
            size_t m = 0;
            for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < n; i++) {
                    int kv = recs[i].matrix == AS_MAT_K || recs[i].matrix == AS_MAT_V;
                    if (kv == (pass == 0)) sorted[m++] = recs[i];
                }
            /* within query heads: by head, then matrix */
            for (size_t i = 1; i < m; i++)
                for (size_t j = i; j > 0; j--) {
                    as_rank_rec *a = &sorted[j - 1], *b = &sorted[j];
                    int akv = a->matrix <= AS_MAT_V, bkv = b->matrix <= AS_MAT_V;
                    if (akv != bkv) break;
                    if (a->head < b->head || (a->head == b->head && a->matrix <= b->matrix)) break;
                    as_rank_rec tmp = *a;
                    *a = *b;
                    *b = tmp;
                }
            free(recs);
            recs = sorted;
        }
    }
done:
    free(sv);
    free(rk);
    free(kk);
    free(rq);
    if (st != AS_OK) {
        as_rank_recs_free(recs, n);
        return st;
    }
    *recs_out = recs;
    *n_out = n;
    return AS_OK;
}
