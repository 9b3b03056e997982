/* as_gpu_select.cu: kernels 3-5 (exact top-k by radix select, Quest page selection, top-k plus
 * sampling). CPU references and checks: as_gpu_ref.c. The exact top-k of every selection is the
 * multi-block radix select of as_gpu_topk.cu (variant 0); the one-block-per-row kernel below is
 * kept as variant 1 of as_gpu_topk_rows.
 *
 * Variant 1, radix select (one 1024-thread block per row): floats map to order-preserving 32-bit keys.
 * Pass 1 histograms the top byte of every key and finds the byte b1 of the k-th largest.
 * Pass 2 re-reads the row once more: keys whose top byte is above b1 are in the top-k and are
 * written out at once; keys whose top byte equals b1 become candidates (positions kept in a
 * global buffer) and are histogrammed on the next byte. The three remaining bytes are resolved
 * on the candidates alone, which fixes the exact 32-bit threshold T and how many keys equal to T
 * are still needed; a last pass over the candidates writes the keys above T and that many keys
 * equal to T. The row is read twice whatever k is; nothing is sorted. */
#include <cooperative_groups.h>
#include <curand_philox4x32_x.h>
#include <math.h>

#include "as_gpu_impl.h"
#include "as_gpu_kern.cuh"
#include "as_gpu_topk.cuh"

namespace cg = cooperative_groups;

#define AS_TOPK_THREADS 1024

/* Append position for a thread whose predicate holds (one shared atomic per coalesced group). */
__device__ __forceinline__ int as_append(int *ctr)
{
    cg::coalesced_group g = cg::coalesced_threads();
    int base = 0;
    if (g.thread_rank() == 0) base = atomicAdd(ctr, (int)g.size());
    base = g.shfl(base, 0);
    return base + (int)g.thread_rank();
}

/* Histogram increment aggregated over the lanes of a warp that hit the same bin (scores share
 * their top bits, so plain shared atomics would serialize on one bin). */
__device__ __forceinline__ void as_hist_add(uint32_t *hist, uint32_t bin)
{
    const unsigned act = __activemask();
    const unsigned peers = __match_any_sync(act, bin);
    if ((int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], (uint32_t)__popc(peers));
}

/* Warp 0: the bucket holding the kleft-th largest key of hist (counts per byte value, larger
 * byte = larger keys) and the rank of that key inside the bucket. */
__device__ void as_find_bucket(const uint32_t *hist, uint32_t kleft, int *s_bucket,
                               uint32_t *s_kleft)
{
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    uint32_t c[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        c[i] = hist[lane * 8 + i];
        sum += c[i];
    }
    uint32_t S = sum; /* inclusive suffix sum over lanes */
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const uint32_t t = __shfl_down_sync(0xffffffffu, S, off);
        if (lane + off < 32) S += t;
    }
    const uint32_t above = S - sum;
    if (above < kleft && kleft <= S) {
        uint32_t run = above;
        for (int i = 7; i >= 0; i--) {
            if (run + c[i] >= kleft) {
                *s_bucket = lane * 8 + i;
                *s_kleft = kleft - run;
                break;
            }
            run += c[i];
        }
    }
}

/* Apply f(position, value) to every element of a row, 16-byte loads when VEC. */
template <bool VEC, class F>
__device__ __forceinline__ void as_for_row(const float *xr, int len, F f)
{
    const int tid = threadIdx.x, bd = blockDim.x;
    int done = 0;
    if (VEC) {
        const int n4 = len >> 2;
        const float4 *x4 = reinterpret_cast<const float4 *>(xr);
        for (int i0 = tid; i0 < n4; i0 += 4 * bd) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = i0 + u * bd;
                v[u] = i < n4 ? __ldg(x4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = i0 + u * bd;
                if (i < n4) {
                    f(4 * i, v[u].x);
                    f(4 * i + 1, v[u].y);
                    f(4 * i + 2, v[u].z);
                    f(4 * i + 3, v[u].w);
                }
            }
        }
        done = n4 * 4;
    }
    for (int j = done + tid; j < len; j += bd) f(j, __ldg(xr + j));
}

template <bool VEC>
__global__ void __launch_bounds__(AS_TOPK_THREADS)
    as_k_topk(const float *x, int64_t ldx, const int32_t *lens, int rows_per_len, int k,
              int32_t *idx, int64_t ldi, int32_t *count, int32_t *cand, int64_t ldc)
{
    __shared__ uint32_t hist[256];
    __shared__ int s_bucket, s_nout, s_ncand, s_eq;
    __shared__ uint32_t s_kleft;
    const int64_t r = blockIdx.x;
    const int tid = threadIdx.x, bd = blockDim.x;
    const int len = max(lens[r / rows_per_len], 0);
    const int kr = min(k, len);
    const float *xr = x + r * ldx;
    int32_t *out = idx + r * ldi;
    int32_t *cr = cand + r * ldc;
    if (tid == 0) count[r] = kr;
    if (kr <= 0) return;
    if (kr == len) {
        for (int j = tid; j < len; j += bd) out[j] = j;
        return;
    }
    for (int i = tid; i < 256; i += bd) hist[i] = 0;
    if (tid == 0) {
        s_nout = 0;
        s_ncand = 0;
        s_eq = 0;
    }
    __syncthreads();
    as_for_row<VEC>(xr, len, [&](int, float v) { as_hist_add(hist, as_fkey(v) >> 24); });
    __syncthreads();
    as_find_bucket(hist, (uint32_t)kr, &s_bucket, &s_kleft);
    __syncthreads();
    const uint32_t b1 = (uint32_t)s_bucket;
    uint32_t kleft = s_kleft;
    __syncthreads();
    for (int i = tid; i < 256; i += bd) hist[i] = 0;
    __syncthreads();
    as_for_row<VEC>(xr, len, [&](int j, float v) {
        const uint32_t key = as_fkey(v);
        const uint32_t d1 = key >> 24;
        if (d1 > b1) {
            out[as_append(&s_nout)] = j;
        } else if (d1 == b1) {
            cr[as_append(&s_ncand)] = j;
            as_hist_add(hist, (key >> 16) & 255u);
        }
    });
    __syncthreads();
    const int ncand = s_ncand;
    uint32_t prefix = b1 << 24, mask = 0xff000000u;
    for (int shift = 16; shift >= 0; shift -= 8) {
        as_find_bucket(hist, kleft, &s_bucket, &s_kleft);
        __syncthreads();
        prefix |= (uint32_t)s_bucket << shift;
        mask |= 0xffu << shift;
        kleft = s_kleft;
        __syncthreads();
        if (shift == 0) break;
        for (int i = tid; i < 256; i += bd) hist[i] = 0;
        __syncthreads();
        for (int i = tid; i < ncand; i += bd) {
            const uint32_t key = as_fkey(__ldg(xr + cr[i]));
            if ((key & mask) == prefix) as_hist_add(hist, (key >> (shift - 8)) & 255u);
        }
        __syncthreads();
    }
    const uint32_t T = prefix;
    for (int i = tid; i < ncand; i += bd) {
        const int j = cr[i];
        const uint32_t key = as_fkey(__ldg(xr + j));
        if (key > T) {
            out[as_append(&s_nout)] = j;
        } else if (key == T) {
            if ((uint32_t)atomicAdd(&s_eq, 1) < kleft) out[atomicAdd(&s_nout, 1)] = j;
        }
    }
}

extern "C" as_status as_gpu_topk_rows(as_gpu_ctx *c, const float *x, int64_t ldx, int64_t rows,
                                      const int32_t *lens, int32_t rows_per_len, int32_t k,
                                      int32_t *idx, int64_t ldi, int32_t *count, int variant,
                                      char *err)
{
    if (!x || !lens || !idx || !count || rows < 0 || rows_per_len < 1 || k < 0 || ldx < 1 ||
        ldi < 0)
        return as_err_set(err, AS_ERR_USAGE, "gpu topk: bad arguments");
    if (rows == 0) return AS_OK;
    if (rows > INT32_MAX) return as_err_set(err, AS_ERR_USAGE, "gpu topk: too many rows");
    if (ldi < k) return as_err_set(err, AS_ERR_USAGE, "gpu topk: ldi %lld < k %d", (long long)ldi, k);
    if (variant != 1) {
        as_tk_ws w;
        AS_TRY(as_gpu_tk_prepare(c, rows, ldx, &w, err));
        return as_gpu_tk_run(c, &w, x, ldx, rows, lens, rows_per_len, k, idx, ldi, count, false,
                             err);
    }
    void *cand;
    AS_TRY(as_gpu_ws(c, AS_WS_TOPK, (size_t)rows * ldx * sizeof(int32_t), &cand, err));
    const bool vec = ((uintptr_t)x % 16 == 0) && (ldx % 4 == 0);
    if (vec)
        as_k_topk<true><<<(unsigned)rows, AS_TOPK_THREADS, 0, c->stream>>>(
            x, ldx, lens, rows_per_len, k, idx, ldi, count, (int32_t *)cand, ldx);
    else
        as_k_topk<false><<<(unsigned)rows, AS_TOPK_THREADS, 0, c->stream>>>(
            x, ldx, lens, rows_per_len, k, idx, ldi, count, (int32_t *)cand, ldx);
    AS_CU_LAUNCHED("topk");
    return AS_OK;
}

#define AS_AGG_MAX_GROUP 1024

static int64_t round4(int64_t n)
{
    n = n < 1 ? 1 : n;
    return (n + 3) & ~(int64_t)3;
}


/* agg[b][kvh][n] = max over the group of (s[b][h][n] * mul - lse2_h) when part_lse2 is given
 * (log2-probabilities: mul = log2(e) for natural-log scores, 1 for base-2 ones; lse2_h merged
 * from the score kernel's split partials), or of the raw value otherwise (page bounds); lens counted in pages of `page` keys. Grid (batch * hkv rows,
 * blocks per row), AS_TK_THREADS threads: each block also builds pass 0 of the top-k over its
 * slice of the row (as_gpu_topk.cuh), so the top-k does not re-read the row for it. s rows and
 * agg rows are 16-byte aligned (lds, lda multiples of 4). */
__global__ void __launch_bounds__(AS_TK_THREADS)
    as_k_agg_tk(const float *s, int64_t lds, const float *part_lse2, int splits,
                const int32_t *lens, int page, int batch, int hq, int hkv, int group, float *agg,
                int64_t lda, float mul, int k, as_tk_ws w)
{
    __shared__ float lse2[AS_AGG_MAX_GROUP];
    __shared__ uint32_t hist[AS_TK_BINS];
    const int r = blockIdx.x, b = r / hkv, kvh = r % hkv;
    for (int i = threadIdx.x; i < AS_TK_BINS; i += blockDim.x) hist[i] = 0;
    for (int g = threadIdx.x; g < group; g += blockDim.x) {
        float v = 0.f;
        if (part_lse2) {
            const int h = kvh * group + g;
            float M = -INFINITY;
            for (int sp = 0; sp < splits; sp++) M = fmaxf(M, part_lse2[((int64_t)sp * batch + b) * hq + h]);
            float L = 0.f;
            if (M != -INFINITY)
                for (int sp = 0; sp < splits; sp++)
                    L += exp2f(part_lse2[((int64_t)sp * batch + b) * hq + h] - M);
            v = M == -INFINITY ? 0.f : M + log2f(L);
        }
        lse2[g] = v;
    }
    __syncthreads();
    const int len = (max(lens[b], 0) + page - 1) / page;
    const int kr = min(max(k, 0), len);
    const bool hist_on = kr > 0 && kr < len;
    const float *s0 = s + ((int64_t)b * hq + (int64_t)kvh * group) * lds;
    float *ar = agg + (int64_t)r * lda;
    int beg, end;
    as_tk_slice(len, blockIdx.y, gridDim.y, &beg, &end);
    const int n4 = (end - beg) >> 2;
    const int lane = threadIdx.x & 31;
    for (int w0 = (int)threadIdx.x - lane; w0 < n4; w0 += blockDim.x) { /* warp-uniform */
        const int i = w0 + lane;
        const int n = beg + 4 * i;
        const bool ok = i < n4;
        float4 a = make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        if (ok) {
            for (int g = 0; g < group; g++) {
                const float4 x = __ldcs(reinterpret_cast<const float4 *>(s0 + g * lds + n));
                const float l = lse2[g];
                a.x = fmaxf(a.x, x.x * mul - l);
                a.y = fmaxf(a.y, x.y * mul - l);
                a.z = fmaxf(a.z, x.z * mul - l);
                a.w = fmaxf(a.w, x.w * mul - l);
            }
            *reinterpret_cast<float4 *>(ar + n) = a;
        }
        const bool h = ok && hist_on;
        as_tk_hist_add(hist, as_tk_digit(as_tk_key(a.x, n), 0), h);
        as_tk_hist_add(hist, as_tk_digit(as_tk_key(a.y, n + 1), 0), h);
        as_tk_hist_add(hist, as_tk_digit(as_tk_key(a.z, n + 2), 0), h);
        as_tk_hist_add(hist, as_tk_digit(as_tk_key(a.w, n + 3), 0), h);
    }
    if (beg + 4 * n4 < end && threadIdx.x < 32) { /* the last 1-3 elements, one warp */
        const int n = beg + 4 * n4 + lane;
        float a = -INFINITY;
        if (n < end) {
            for (int g = 0; g < group; g++) a = fmaxf(a, s0[g * lds + n] * mul - lse2[g]);
            ar[n] = a;
        }
        as_tk_hist_add(hist, as_tk_digit(as_tk_key(a, n), 0), n < end && hist_on);
    }
    __syncthreads();
    as_tk_pass_end(hist, as_tk_hist_of(w, r, 0), as_tk_hist_of(w, r, 1), w.st + r, gridDim.y, 0,
                   (uint32_t)kr, (uint32_t)len, false);
}

/* Group aggregation + top-k of selection rows (KV mode, group > 1): rows of len keys (or pages)
 * for batch * hkv rows. */
static as_status agg_topk(as_gpu_ctx *c, const as_gpu_attn *a, const float *s, int64_t lds,
                          const float *part, int32_t splits, float mul, int page, int64_t nmax_rows,
                          float *agg, const int32_t *row_lens, int32_t k, int32_t *idx,
                          int64_t ldi, int32_t *count, char *err)
{
    const int64_t rows = (int64_t)a->batch * a->hkv;
    as_tk_ws w;
    AS_TRY(as_gpu_tk_prepare(c, rows, nmax_rows, &w, err));
    const dim3 grid((unsigned)rows, (unsigned)w.bpr);
    as_k_agg_tk<<<grid, AS_TK_THREADS, 0, c->stream>>>(s, lds, part, splits, a->lens, page,
                                                        a->batch, a->hq, a->hkv, a->hq / a->hkv,
                                                        agg, lds, mul, k, w);
    AS_CU_LAUNCHED("group aggregation");
    return as_gpu_tk_run(c, &w, agg, lds, rows, row_lens, a->hkv, k, idx, ldi, count, true, err);
}

__global__ void as_k_page_counts(const int32_t *lens, int batch, int page, int32_t *plens)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < batch) plens[b] = (max(lens[b], 0) + page - 1) / page;
}

__global__ void as_k_expand_pages(const int32_t *pidx, const int32_t *pcount, int kp,
                                  const int32_t *lens, int rows_per_len, int page, int32_t *idx,
                                  int32_t *count, int kcap)
{
    const int64_t r = blockIdx.x;
    const int len = lens[r / rows_per_len];
    const int cp = pcount[r];
    for (int i = threadIdx.x; i < cp * page; i += blockDim.x) {
        const int t = pidx[r * kp + i / page] * page + i % page;
        idx[r * kcap + i] = t < len ? t : -1;
    }
    if (threadIdx.x == 0) count[r] = cp * page;
}

static as_status check_sel(const as_gpu_attn *a, const as_gpu_sel *sel, int32_t need, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!sel || !sel->idx || !sel->count)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: selection not allocated");
    if (sel->mode != AS_GPU_SEL_KV && sel->mode != AS_GPU_SEL_Q)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: bad selection mode");
    if (sel->kcap < need)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: kcap %d < %d entries needed",
                          sel->kcap, need);
    return AS_OK;
}

extern "C" as_status as_gpu_select_topk(as_gpu_ctx *c, const as_gpu_attn *a, int32_t k,
                                        as_gpu_sel *sel, char *err)
{
    if (k < 0) return as_err_set(err, AS_ERR_USAGE, "gpu select: k < 0");
    const int32_t need = k < a->nmax ? k : a->nmax;
    AS_TRY(check_sel(a, sel, need, err));
    if (sel->mode == AS_GPU_SEL_KV && a->hq / a->hkv > AS_AGG_MAX_GROUP)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: kv-head selection supports groups up to %d", AS_AGG_MAX_GROUP);
    const int64_t lds = round4(a->nmax);
    const int64_t nrows = as_gpu_sel_rows(a, sel->mode);
    const int group = a->hq / a->hkv;
    void *s, *aux;
    AS_TRY(as_gpu_ws(c, AS_WS_SCORES, (size_t)a->batch * a->hq * lds * sizeof(float), &s, err));
    if (sel->logw)
        AS_CU(cudaMemsetAsync(sel->logw, 0, (size_t)nrows * sel->kcap * sizeof(float), c->stream));
    /* scores on tensor cores (base 2) where the cache allows, else on CUDA cores (natural log) */
    const bool tc = as_gpu_tc_supported(a->kv_dtype, a->d);
    if (sel->mode == AS_GPU_SEL_Q || group == 1) {
        /* per query head, or one head per kv head (its scores rank as its log-probabilities) */
        if (tc) AS_TRY(as_gpu_launch_scores_tc(c, a, (float *)s, lds, nullptr, err));
        else AS_TRY(as_gpu_launch_scores(c, a, (float *)s, lds, nullptr, nullptr, err));
        return as_gpu_topk_rows(c, (const float *)s, lds, nrows, a->lens,
                                sel->mode == AS_GPU_SEL_Q ? a->hq : a->hkv, need, sel->idx,
                                sel->kcap, sel->count, 0, err);
    }
    const int32_t splits = tc ? as_gpu_scores_tc_splits(c, a) : as_gpu_scores_splits(c, a);
    const size_t bl = (size_t)splits * a->batch * a->hq * sizeof(float);
    const size_t bl_al = (bl + 255) & ~(size_t)255;
    AS_TRY(as_gpu_ws(c, AS_WS_AUX, bl_al + (size_t)nrows * lds * sizeof(float), &aux, err));
    float *part = (float *)aux;
    float *agg = (float *)((char *)aux + bl_al);
    int32_t sp = splits;
    if (tc) AS_TRY(as_gpu_launch_scores_tc(c, a, (float *)s, lds, part, err));
    else AS_TRY(as_gpu_launch_scores(c, a, (float *)s, lds, part, &sp, err));
    return agg_topk(c, a, (const float *)s, lds, part, sp, tc ? 1.f : AS_LOG2E, 1, a->nmax, agg,
                    a->lens, need, sel->idx, sel->kcap, sel->count, err);
}

extern "C" as_status as_gpu_select_pages(as_gpu_ctx *c, const as_gpu_attn *a,
                                         const as_gpu_pages *p, int32_t npages_keep,
                                         as_gpu_sel *sel, char *err)
{
    if (npages_keep < 0) return as_err_set(err, AS_ERR_USAGE, "gpu select pages: count < 0");
    if (!p) return as_err_set(err, AS_ERR_USAGE, "gpu select pages: no page metadata");
    const int32_t kp = npages_keep < p->npages ? npages_keep : p->npages;
    if ((int64_t)kp * p->page > INT32_MAX)
        return as_err_set(err, AS_ERR_USAGE, "gpu select pages: too many tokens");
    AS_TRY(check_sel(a, sel, kp * p->page, err));
    if (sel->mode == AS_GPU_SEL_KV && a->hq / a->hkv > AS_AGG_MAX_GROUP)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: kv-head selection supports groups up to %d", AS_AGG_MAX_GROUP);
    const int64_t ldu = round4(p->npages);
    void *ub, *aux, *aux2;
    AS_TRY(as_gpu_ws(c, AS_WS_SCORES, (size_t)a->batch * a->hq * ldu * sizeof(float), &ub, err));
    const size_t bpl = ((size_t)a->batch * sizeof(int32_t) + 255) & ~(size_t)255;
    AS_TRY(as_gpu_ws(c, AS_WS_AUX, bpl + (size_t)a->batch * a->hkv * ldu * sizeof(float), &aux,
                     err));
    int32_t *plens = (int32_t *)aux;
    float *agg = (float *)((char *)aux + bpl);
    const int64_t nrows = as_gpu_sel_rows(a, sel->mode);
    const int32_t kpa = kp < 1 ? 1 : kp;
    const size_t bpi = ((size_t)nrows * kpa * sizeof(int32_t) + 255) & ~(size_t)255;
    AS_TRY(as_gpu_ws(c, AS_WS_AUX2, bpi + (size_t)nrows * sizeof(int32_t), &aux2, err));
    int32_t *pidx = (int32_t *)aux2;
    int32_t *pcnt = (int32_t *)((char *)aux2 + bpi);

    as_k_page_counts<<<(a->batch + 255) / 256, 256, 0, c->stream>>>(a->lens, a->batch, p->page,
                                                                    plens);
    AS_CU_LAUNCHED("page counts");
    const int group = a->hq / a->hkv;
    const bool tc = as_gpu_tc_supported(a->kv_dtype, a->d);
    if (tc && sel->mode == AS_GPU_SEL_KV && group > 1 && group <= AS_TC_HEADS) {
        /* bounds, group max and pass 0 of the page top-k in one kernel: no per-head bounds */
        as_tk_ws w;
        AS_TRY(as_gpu_tk_prepare(c, nrows, p->npages, &w, err));
        AS_TRY(as_gpu_launch_bounds_tc(c, a, p, nullptr, agg, ldu, &w, kp, err));
        AS_TRY(as_gpu_tk_run(c, &w, agg, ldu, nrows, plens, a->hkv, kp, pidx, kpa, pcnt, true,
                             err));
    } else {
        if (tc) AS_TRY(as_gpu_launch_bounds_tc(c, a, p, (float *)ub, nullptr, ldu, nullptr, 0, err));
        else AS_TRY(as_gpu_launch_bounds(c, a, p, (float *)ub, ldu, err));
        if (sel->mode == AS_GPU_SEL_KV && group > 1)
            AS_TRY(agg_topk(c, a, (const float *)ub, ldu, nullptr, 0, 1.f, p->page, p->npages,
                            agg, plens, kp, pidx, kpa, pcnt, err));
        else
            AS_TRY(as_gpu_topk_rows(c, (const float *)ub, ldu, nrows, plens,
                                    sel->mode == AS_GPU_SEL_KV ? a->hkv : a->hq, kp, pidx, kpa,
                                    pcnt, 0, err));
    }
    const int32_t rpl = sel->mode == AS_GPU_SEL_KV ? a->hkv : a->hq;
    as_k_expand_pages<<<(unsigned)nrows, 256, 0, c->stream>>>(pidx, pcnt, kpa, a->lens, rpl,
                                                              p->page, sel->idx, sel->count,
                                                              sel->kcap);
    AS_CU_LAUNCHED("page expansion");
    if (sel->logw)
        AS_CU(cudaMemsetAsync(sel->logw, 0, (size_t)nrows * sel->kcap * sizeof(float), c->stream));
    return AS_OK;
}

/* ---- top-k plus sampling ------------------------------------------------------------------- */
__global__ void as_k_bitmap(const int32_t *idx, const int32_t *count, int kcap, uint32_t *bits,
                            int64_t words)
{
    const int64_t r = blockIdx.x;
    const int cnt = count[r];
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        const int j = idx[r * kcap + i];
        atomicOr(&bits[r * words + (j >> 5)], 1u << (j & 31));
    }
}

__global__ void as_k_sample(const int32_t *lens, int rows_per_len, int m, uint64_t seed,
                            const uint32_t *bits, int64_t words, int32_t *idx, float *logw,
                            int32_t *count, int kcap)
{
    const int64_t r = blockIdx.x;
    const int len = lens[r / rows_per_len];
    const int kt = count[r];
    __syncthreads(); /* every thread has read count[r] before thread 0 rewrites it */
    if (len <= kt || m <= 0) return;
    const float w = logf((float)len / (float)m);
    const uint2 key = make_uint2((uint32_t)seed, (uint32_t)(seed >> 32));
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const uint4 ctr = make_uint4((uint32_t)i, (uint32_t)r, (uint32_t)(r >> 32), 0x5A3C0001u);
        const uint4 rnd = curand_Philox4x32_10(ctr, key);
        const int j = (int)__umulhi(rnd.x, (uint32_t)len);
        const bool in_top = (bits[r * words + (j >> 5)] >> (j & 31)) & 1u;
        idx[r * kcap + kt + i] = j;
        logw[r * kcap + kt + i] = in_top ? -INFINITY : w;
    }
    if (threadIdx.x == 0) count[r] = kt + m;
}

extern "C" as_status as_gpu_select_topk_sample(as_gpu_ctx *c, const as_gpu_attn *a,
                                               int32_t k_top, int32_t m, uint64_t seed,
                                               as_gpu_sel *sel, char *err)
{
    if (k_top < 0 || m < 0) return as_err_set(err, AS_ERR_USAGE, "gpu select: k or m < 0");
    if (!sel || !sel->logw)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: sampling needs log-weights");
    if ((int64_t)k_top + m > INT32_MAX) return as_err_set(err, AS_ERR_USAGE, "gpu select: k+m too large");
    const int32_t kt = k_top < a->nmax ? k_top : a->nmax;
    AS_TRY(check_sel(a, sel, kt + m, err));
    AS_TRY(as_gpu_select_topk(c, a, k_top, sel, err));
    if (m == 0) return AS_OK;
    const int64_t nrows = as_gpu_sel_rows(a, sel->mode);
    const int64_t words = (a->nmax + 31) / 32 > 0 ? (a->nmax + 31) / 32 : 1;
    void *bits;
    AS_TRY(as_gpu_ws(c, AS_WS_AUX2, (size_t)nrows * words * sizeof(uint32_t), &bits, err));
    AS_CU(cudaMemsetAsync(bits, 0, (size_t)nrows * words * sizeof(uint32_t), c->stream));
    as_k_bitmap<<<(unsigned)nrows, 256, 0, c->stream>>>(sel->idx, sel->count, sel->kcap,
                                                        (uint32_t *)bits, words);
    AS_CU_LAUNCHED("sample bitmap");
    const int32_t rpl = sel->mode == AS_GPU_SEL_Q ? a->hq : a->hkv;
    as_k_sample<<<(unsigned)nrows, 256, 0, c->stream>>>(a->lens, rpl, m, seed,
                                                        (const uint32_t *)bits, words, sel->idx,
                                                        sel->logw, sel->count, sel->kcap);
    AS_CU_LAUNCHED("sample");
    return AS_OK;
}

/* ---- Quest pages plus sampling ------------------------------------------------------------- */
/* One block per selection row. The heavy set H is the row's selected pages (tokens at
 * idx[i * page], i < count / page, as as_gpu_select_pages wrote them); entries [count, kdet) are
 * padded with -1 so that every row's heavy part has kdet entries; then m draws u ~ U{0..n_rest-1}
 * (Philox keyed by seed, row and draw) over the n_rest keys outside H, mapped to the u-th such
 * key by a binary search over pages of rest_before(p) = page * (p - selected pages before p),
 * each with log-weight log(n_rest / m). Dynamic shared memory: the page bitmap and the selected
 * count before each of its words (2 x words x 4 bytes). */
__global__ void as_k_page_sample(const int32_t *lens, int rows_per_len, int page, int npages,
                                 int kdet, int m, uint64_t seed, int32_t *idx, float *logw,
                                 int32_t *count, int kcap)
{
    extern __shared__ uint32_t ps_sm[];
    const int words = (npages + 31) / 32;
    uint32_t *bits = ps_sm, *cum = ps_sm + words;
    __shared__ int s_nsel;
    const int64_t r = blockIdx.x;
    const int len = max(lens[r / rows_per_len], 0);
    const int cnt = count[r];
    int32_t *ir = idx + r * kcap;
    float *wr = logw + r * kcap;
    for (int w = threadIdx.x; w < words; w += blockDim.x) bits[w] = 0;
    if (threadIdx.x == 0) s_nsel = 0;
    __syncthreads();
    const int cp = cnt / page;
    for (int i = threadIdx.x; i < cp; i += blockDim.x) {
        const int pg = ir[(int64_t)i * page] / page;
        atomicOr(&bits[pg >> 5], 1u << (pg & 31));
        atomicAdd(&s_nsel, min(page, len - pg * page));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t run = 0;
        for (int w = 0; w < words; w++) {
            cum[w] = run;
            run += __popc(bits[w]);
        }
    }
    for (int i = cnt + threadIdx.x; i < kdet; i += blockDim.x) {
        ir[i] = -1;
        wr[i] = 0.f;
    }
    __syncthreads();
    const int nrest = len - s_nsel;
    if (nrest <= 0 || m <= 0) {
        if (threadIdx.x == 0) count[r] = kdet;
        return;
    }
    const float w = logf((float)nrest / (float)m);
    const uint2 key = make_uint2((uint32_t)seed, (uint32_t)(seed >> 32));
    auto rest_before = [&](int p) -> int64_t {
        const uint32_t sel = cum[p >> 5] + __popc(bits[p >> 5] & ((1u << (p & 31)) - 1u));
        return (int64_t)page * (p - (int64_t)sel);
    };
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const uint4 ctr = make_uint4((uint32_t)i, (uint32_t)r, (uint32_t)(r >> 32), 0x5A3C0002u);
        const uint4 rnd = curand_Philox4x32_10(ctr, key);
        const int64_t u = (int64_t)__umulhi(rnd.x, (uint32_t)nrest);
        /* the largest page p with rest_before(p) <= u (never a selected page) */
        int lo = 0, hi = npages - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (rest_before(mid) <= u) lo = mid;
            else hi = mid - 1;
        }
        ir[kdet + i] = (int32_t)((int64_t)lo * page + (u - rest_before(lo)));
        wr[kdet + i] = w;
    }
    if (threadIdx.x == 0) count[r] = kdet + m;
}

extern "C" as_status as_gpu_select_pages_sample(as_gpu_ctx *c, const as_gpu_attn *a,
                                                const as_gpu_pages *p, int32_t npages_keep,
                                                int32_t m, uint64_t seed, as_gpu_sel *sel,
                                                char *err)
{
    if (npages_keep < 0 || m < 0)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: page or sample count < 0");
    if (!p) return as_err_set(err, AS_ERR_USAGE, "gpu select pages: no page metadata");
    if (!sel || !sel->logw)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: sampling needs log-weights");
    const int64_t kdet = (int64_t)(npages_keep < p->npages ? npages_keep : p->npages) * p->page;
    if (kdet + m > INT32_MAX) return as_err_set(err, AS_ERR_USAGE, "gpu select: too many entries");
    AS_TRY(check_sel(a, sel, (int32_t)(kdet + m), err));
    const size_t smem = (size_t)2 * ((p->npages + 31) / 32) * sizeof(uint32_t);
    if (smem > 48 * 1024)
        return as_err_set(err, AS_ERR_USAGE, "gpu select: %d pages exceed the sampler's bitmap",
                          p->npages);
    AS_TRY(as_gpu_select_pages(c, a, p, npages_keep, sel, err));
    const int64_t nrows = as_gpu_sel_rows(a, sel->mode);
    const int32_t rpl = sel->mode == AS_GPU_SEL_Q ? a->hq : a->hkv;
    as_k_page_sample<<<(unsigned)nrows, 256, smem, c->stream>>>(
        a->lens, rpl, p->page, p->npages, (int)kdet, m, seed, sel->idx, sel->logw, sel->count,
        sel->kcap);
    AS_CU_LAUNCHED("page sample");
    return AS_OK;
}
