/* as_gpu_dec.cuh: device code shared by the two decode kernels (as_gpu_decode.cu on CUDA cores,
 * as_gpu_decode_tc.cu on tensor cores; not installed): which heads and rows a block owns, and
 * how it stores its merged result. */
#ifndef AS_GPU_DEC_CUH
#define AS_GPU_DEC_CUH

#include "as_gpu_impl.h"
#include "as_gpu_kern.cuh"

/* What a block works on: its sequence, its split (the partial it writes), its kv head, its first
 * query head and how many it takes (a unit is one query head, or up to `heads` of a kv head's
 * group), the sequence length, its rows [beg, end) and, with a selection, that selection's row. */
struct as_dec_block {
    int b, split, kvh, h0, gcount, len, beg, end;
    const int32_t *irow;
    const float *wrow;
};

/* Rows [beg, stop) (stop clipped to the rows there are) of unit `unit` of sequence b. */
template <bool IDX>
__device__ __forceinline__ as_dec_block as_dec_block_at(const as_dec_params &p, int heads, int b, int unit,
                                                        int split, int beg, int stop)
{
    as_dec_block k;
    k.b = b;
    k.split = split;
    if (p.unit_per_q) {
        k.h0 = unit;
        k.kvh = unit / p.group;
        k.gcount = 1;
    } else {
        k.kvh = unit / p.ngroups;
        const int gi = unit % p.ngroups;
        k.h0 = k.kvh * p.group + gi * heads;
        k.gcount = min(heads, p.group - gi * heads);
    }
    k.len = p.lens[b];
    int nrows = k.len;
    k.irow = nullptr;
    k.wrow = nullptr;
    if (IDX) {
        const int64_t selrow = p.sel_per_q ? (int64_t)b * p.hq + k.h0 : (int64_t)b * p.hkv + k.kvh;
        nrows = p.count[selrow];
        k.irow = p.idx + selrow * p.kcap;
        if (p.logw) k.wrow = p.logw + selrow * p.kcap;
    }
    k.beg = beg;
    k.end = min(nrows, stop);
    return k;
}

/* The plain plan's block (split, unit, sequence) = (blockIdx.x, .y, .z). */
template <bool IDX> __device__ __forceinline__ as_dec_block as_dec_block_of(const as_dec_params &p, int heads)
{
    const int beg = blockIdx.x * p.chunk;
    return as_dec_block_at<IDX>(p, heads, blockIdx.z, blockIdx.y, blockIdx.x, beg, beg + p.chunk);
}

/* The segments of a block. Plain plan: one, the block's own. Balanced plan: the pieces of the
 * block's range of the line (as_dec_params) that fall in each unit; a unit's pieces are numbered
 * from the first block that reaches it, so split = x - first block. The end of the range is
 * recomputed rather than kept, since the tensor-core kernel is at its register limit. Use:
 *   for (int64_t g = as_dec_first(p); g < as_dec_end(p);) { as_dec_block k = as_dec_next<IDX>(p, heads, g); ... } */
__device__ __forceinline__ int64_t as_dec_first(const as_dec_params &p)
{
    return p.balanced ? (int64_t)blockIdx.x * p.chunk : 0;
}
__device__ __forceinline__ int64_t as_dec_end(const as_dec_params &p)
{
    if (!p.balanced) return 1;
    const int64_t line = (int64_t)p.batch * p.nunits * p.rows_pad;
    return min(line, ((int64_t)blockIdx.x + 1) * p.chunk);
}

template <bool IDX>
__device__ __forceinline__ as_dec_block as_dec_next(const as_dec_params &p, int heads, int64_t &g)
{
    if (!p.balanced) {
        g = 1;
        return as_dec_block_of<IDX>(p, heads);
    }
    const int64_t u = g / p.rows_pad, u0 = u * p.rows_pad;
    const int64_t stop = min(as_dec_end(p), u0 + p.rows_pad);
    const int beg = (int)(g - u0);
    g = stop;
    return as_dec_block_at<IDX>(p, heads, (int)(u / p.nunits), (int)(u % p.nunits),
                                (int)(blockIdx.x - u0 / p.chunk), beg, (int)(stop - u0));
}

/* Partials of row r (b * hq + h) that the merge takes: all splits of the plain plan, or the
 * blocks that reach the row's unit in the balanced one. */
__device__ __forceinline__ int as_dec_row_splits(const as_dec_params &p, int64_t r)
{
    if (!p.balanced) return p.splits;
    const int b = (int)(r / p.hq), h = (int)(r % p.hq);
    const int unit = p.unit_per_q ? h : (h / p.group) * p.ngroups + (h % p.group) / p.heads;
    const int64_t u = (int64_t)b * p.nunits + unit;
    return (int)(((u + 1) * p.rows_pad - 1) / p.chunk - (u * p.rows_pad) / p.chunk + 1);
}

/* Column c of head g of the block from its merged running max M (base 2), sum L and weighted
 * sum A: the output and natural-log lse when the rows are not split, else the normalized
 * partial and its base-2 lse for the merge kernel. */
template <int D>
__device__ __forceinline__ void as_dec_store(const as_dec_params &p, const as_dec_block &k, int g, int c,
                                             float M, float L, float A)
{
    const int64_t rows = (int64_t)p.batch * p.hq;
    const int64_t r = (int64_t)k.b * p.hq + k.h0 + g;
    const float ov = L > 0.f ? A / L : 0.f;
    const float lv = L > 0.f ? M + log2f(L) : -INFINITY;
    if (p.splits == 1) {
        p.o[r * D + c] = ov;
        if (c == 0 && p.lse) p.lse[r] = L > 0.f ? lv * AS_LN2 : -INFINITY;
    } else {
        p.part_o[((int64_t)k.split * rows + r) * D + c] = ov;
        if (c == 0) p.part_lse[(int64_t)k.split * rows + r] = lv;
    }
}

/* Occupancy (per_sm != NULL: resident 128-thread blocks per SM) or launch of a decode kernel
 * with `bytes` of dynamic shared memory. Dynamic plus static shared memory beyond the 48 KB a
 * launch gets without asking needs the kernel's limit raised (a kernel attribute: cheap,
 * idempotent, legal during graph capture); set always, since most instances are past it. */
template <typename K>
static as_status as_dec_launch(as_gpu_ctx *c, K kern, int bytes, const as_dec_params &p, dim3 grid,
                               int *per_sm, const char *what, char *err)
{
    AS_CU(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    if (per_sm) {
        AS_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, kern, 128, bytes));
        return AS_OK;
    }
    kern<<<grid, 128, bytes, c->stream>>>(p);
    AS_CU_LAUNCHED(what);
    return AS_OK;
}

#endif
