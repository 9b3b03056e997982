/* as_gpu_ref.c: the gpu module's CPU side in plain C: storage types (converted by data/as_dtype)
 * and the float64 references every kernel is checked against (as_gpu.h). Independent of the
 * kernels: direct loops over the definitions, double accumulation, stable log-sum-exp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_gpu.h"

size_t as_gpu_dtype_size(as_gpu_dtype t)
{
    return as_dtype_size(as_gpu_dtype_to_dtype(t));
}

as_dtype as_gpu_dtype_to_dtype(as_gpu_dtype t)
{
    return t == AS_GPU_F16 ? AS_DT_F16 : (t == AS_GPU_BF16 ? AS_DT_BF16 : AS_DT_F32);
}

int as_gpu_dtype_from(as_dtype t)
{
    switch (t) {
    case AS_DT_F32: return AS_GPU_F32;
    case AS_DT_F16: return AS_GPU_F16;
    case AS_DT_BF16: return AS_GPU_BF16;
    default: return -1;
    }
}

const char *as_gpu_dtype_name(as_gpu_dtype t)
{
    switch (t) {
    case AS_GPU_F32: return "f32";
    case AS_GPU_F16: return "f16";
    case AS_GPU_BF16: return "bf16";
    }
    return "?";
}

int as_gpu_dtype_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "f32") || !strcmp(s, "float32") || !strcmp(s, "F32")) return AS_GPU_F32;
    if (!strcmp(s, "f16") || !strcmp(s, "float16") || !strcmp(s, "F16")) return AS_GPU_F16;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16") || !strcmp(s, "BF16")) return AS_GPU_BF16;
    return -1;
}

float as_gpu_round(as_gpu_dtype t, float x)
{
    switch (t) {
    case AS_GPU_F16: return as_f16_to_f32(as_f32_to_f16(x));
    case AS_GPU_BF16: return as_bf16_to_f32(as_f32_to_bf16(x));
    default: return x;
    }
}

void as_gpu_pack(as_gpu_dtype t, const float *src, void *dst, size_t n)
{
    if (t == AS_GPU_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    uint16_t *d = (uint16_t *)dst;
    for (size_t i = 0; i < n; i++) d[i] = t == AS_GPU_F16 ? as_f32_to_f16(src[i]) : as_f32_to_bf16(src[i]);
}

void as_gpu_unpack(as_gpu_dtype t, const void *src, float *dst, size_t n)
{
    if (t == AS_GPU_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    const uint16_t *s = (const uint16_t *)src;
    for (size_t i = 0; i < n; i++) dst[i] = t == AS_GPU_F16 ? as_f16_to_f32(s[i]) : as_bf16_to_f32(s[i]);
}

/* ---- references ------------------------------------------------------------------------------- */
static double elem(as_gpu_dtype t, const void *base, int64_t off)
{
    switch (t) {
    case AS_GPU_F16: return as_f16_to_f32(((const uint16_t *)base)[off]);
    case AS_GPU_BF16: return as_bf16_to_f32(((const uint16_t *)base)[off]);
    default: return ((const float *)base)[off];
    }
}

static void row_f64(const as_gpu_attn *a, const void *base, int b, int h, int64_t n, double *out)
{
    int64_t off;
    if (a->blocks) /* paged: the table names the physical block of key n (as_gpu.h) */
        off = (int64_t)a->blocks[(int64_t)b * a->max_blocks + n / a->block_size] * a->stride_block +
              (n % a->block_size) * a->stride_n + (int64_t)h * a->stride_h;
    else
        off = (int64_t)b * a->stride_b + (int64_t)h * a->stride_h + n * a->stride_n;
    for (int c = 0; c < a->d; c++) out[c] = elem(a->kv_dtype, base, off + c);
}

static double dot_q(const as_gpu_attn *a, int b, int h, const double *k)
{
    const float *q = a->q + ((int64_t)b * a->hq + h) * a->d;
    double s = 0;
    for (int c = 0; c < a->d; c++) s += (double)q[c] * k[c];
    return s;
}

/* softmax-weighted sum over entries (n_e, w_e): o = sum p_e v_{n_e}, lse of the scores */
static void attend_list(const as_gpu_attn *a, int b, int h, const int32_t *pos, const float *logw,
                        int64_t cnt, int dense_len, double *o, double *lse)
{
    const int kvh = h / (a->hq / a->hkv);
    const int len = a->lens[b];
    const int64_t ne = pos ? cnt : dense_len;
    double *s = (double *)malloc((size_t)(ne > 0 ? ne : 1) * sizeof(double));
    double *row = (double *)malloc((size_t)a->d * sizeof(double));
    if (!s || !row) abort();
    double mx = -INFINITY;
    for (int64_t e = 0; e < ne; e++) {
        const int64_t n = pos ? pos[e] : e;
        const double w = logw ? (double)logw[e] : 0.0;
        if (n < 0 || n >= len || w == -INFINITY) {
            s[e] = -INFINITY;
            continue;
        }
        row_f64(a, a->k, b, kvh, n, row);
        s[e] = (double)a->scale * dot_q(a, b, h, row) + w;
        if (s[e] > mx) mx = s[e];
    }
    for (int c = 0; c < a->d; c++) o[c] = 0.0;
    if (mx == -INFINITY) {
        if (lse) *lse = -INFINITY;
        free(s);
        free(row);
        return;
    }
    double z = 0.0;
    for (int64_t e = 0; e < ne; e++) {
        if (s[e] == -INFINITY) continue;
        const double p = exp(s[e] - mx);
        z += p;
        row_f64(a, a->v, b, kvh, pos ? pos[e] : e, row);
        for (int c = 0; c < a->d; c++) o[c] += p * row[c];
    }
    for (int c = 0; c < a->d; c++) o[c] /= z;
    if (lse) *lse = mx + log(z);
    free(s);
    free(row);
}

void as_gpu_ref_decode_dense(const as_gpu_attn *a, double *o, double *lse)
{
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->hq; h++) {
            const int64_t r = (int64_t)b * a->hq + h;
            attend_list(a, b, h, NULL, NULL, 0, a->lens[b], o + r * a->d, lse ? lse + r : NULL);
        }
}

void as_gpu_ref_decode_sparse(const as_gpu_attn *a, const as_gpu_sel *sel, double *o, double *lse)
{
    const int group = a->hq / a->hkv;
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->hq; h++) {
            const int64_t r = (int64_t)b * a->hq + h;
            const int64_t sr =
                sel->mode == AS_GPU_SEL_Q ? r : (int64_t)b * a->hkv + h / group;
            attend_list(a, b, h, sel->idx + sr * sel->kcap,
                        sel->logw ? sel->logw + sr * sel->kcap : NULL, sel->count[sr], 0,
                        o + r * a->d, lse ? lse + r : NULL);
        }
}

void as_gpu_ref_scores(const as_gpu_attn *a, double *s, int64_t lds)
{
    const int group = a->hq / a->hkv;
    double *row = (double *)malloc((size_t)a->d * sizeof(double));
    if (!row) abort();
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->hq; h++)
            for (int64_t n = 0; n < a->lens[b]; n++) {
                row_f64(a, a->k, b, h / group, n, row);
                s[((int64_t)b * a->hq + h) * lds + n] = (double)a->scale * dot_q(a, b, h, row);
            }
    free(row);
}

void as_gpu_ref_pages(const as_gpu_attn *a, int32_t page, double *kmin, double *kmax, double *ub)
{
    const int group = a->hq / a->hkv;
    const int64_t np = a->nmax > 0 ? (a->nmax + page - 1) / page : 1;
    double *row = (double *)malloc((size_t)a->d * sizeof(double));
    if (!row) abort();
    for (int b = 0; b < a->batch; b++) {
        const int64_t npb = (a->lens[b] + page - 1) / page;
        for (int kvh = 0; kvh < a->hkv; kvh++)
            for (int64_t p = 0; p < npb; p++) {
                double *mn = kmin + (((int64_t)b * a->hkv + kvh) * np + p) * a->d;
                double *mx = kmax + (((int64_t)b * a->hkv + kvh) * np + p) * a->d;
                for (int c = 0; c < a->d; c++) {
                    mn[c] = INFINITY;
                    mx[c] = -INFINITY;
                }
                for (int64_t n = p * page; n < (p + 1) * page && n < a->lens[b]; n++) {
                    row_f64(a, a->k, b, kvh, n, row);
                    for (int c = 0; c < a->d; c++) {
                        if (row[c] < mn[c]) mn[c] = row[c];
                        if (row[c] > mx[c]) mx[c] = row[c];
                    }
                }
                for (int g = 0; g < group; g++) {
                    const int h = kvh * group + g;
                    const float *q = a->q + ((int64_t)b * a->hq + h) * a->d;
                    double u = 0;
                    for (int c = 0; c < a->d; c++) {
                        const double x = q[c] * mn[c], y = q[c] * mx[c];
                        u += x > y ? x : y;
                    }
                    ub[((int64_t)b * a->hq + h) * np + p] = (double)a->scale * u;
                }
            }
    }
    free(row);
}

int as_gpu_ref_check_topk(const float *x, int32_t len, int32_t k, const int32_t *idx,
                          int32_t cnt, char *why)
{
    const int32_t want = k < len ? k : len;
    if (cnt != want) {
        if (why) snprintf(why, AS_ERR_LEN, "count %d, expected min(k=%d, len=%d)", cnt, k, len);
        return 0;
    }
    if (len <= 0) return 1;
    unsigned char *in = (unsigned char *)calloc((size_t)len, 1);
    if (!in) abort();
    float minsel = INFINITY;
    for (int32_t i = 0; i < cnt; i++) {
        const int32_t j = idx[i];
        if (j < 0 || j >= len) {
            if (why) snprintf(why, AS_ERR_LEN, "entry %d: position %d out of [0, %d)", i, j, len);
            free(in);
            return 0;
        }
        if (in[j]) {
            if (why) snprintf(why, AS_ERR_LEN, "position %d selected twice", j);
            free(in);
            return 0;
        }
        in[j] = 1;
        if (x[j] < minsel) minsel = x[j];
    }
    for (int32_t j = 0; j < len; j++)
        if (!in[j] && x[j] > minsel) {
            if (why)
                snprintf(why, AS_ERR_LEN,
                         "position %d (value %.9g) left out while a selected value is %.9g", j,
                         (double)x[j], (double)minsel);
            free(in);
            return 0;
        }
    free(in);
    return 1;
}

int as_gpu_ref_check_topk_pos(const float *x, int32_t len, int32_t k, const int32_t *idx,
                              int32_t cnt, char *why)
{
    if (!as_gpu_ref_check_topk(x, len, k, idx, cnt, why)) return 0;
    if (cnt <= 0 || cnt >= len) return 1;
    float minsel = INFINITY;
    for (int32_t i = 0; i < cnt; i++)
        if (x[idx[i]] < minsel) minsel = x[idx[i]];
    /* among the values equal to the smallest selected one, the selected positions come first */
    int32_t maxpos = -1, taken = 0;
    for (int32_t i = 0; i < cnt; i++)
        if (x[idx[i]] == minsel) {
            taken++;
            if (idx[i] > maxpos) maxpos = idx[i];
        }
    int32_t seen = 0;
    for (int32_t j = 0; j <= maxpos; j++) seen += x[j] == minsel;
    if (seen != taken) {
        if (why)
            snprintf(why, AS_ERR_LEN,
                     "ties at %.9g: %d of the %d equal values up to position %d selected, "
                     "expected the lowest positions first",
                     (double)minsel, taken, seen, maxpos);
        return 0;
    }
    return 1;
}
