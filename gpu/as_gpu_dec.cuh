/* as_gpu_dec.cuh: device code shared by the two decode kernels (as_gpu_decode.cu on CUDA cores,
 * as_gpu_decode_tc.cu on tensor cores; not installed): the cp.async group calls, which heads
 * and rows a block owns, and how it stores its merged result. */
#ifndef AS_GPU_DEC_CUH
#define AS_GPU_DEC_CUH

#include "as_gpu_impl.h"
#include "as_gpu_kern.cuh"

/* cp.async groups, as both kernels' copy pipelines use them: close the group of copies issued
 * so far; wait until at most N groups are in flight; wait for all. */
__device__ __forceinline__ void as_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void as_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void as_cp_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* The block (split, unit, sequence) = (blockIdx.x, .y, .z): its kv head, its first query head and
 * how many it takes (a unit is one query head, or up to `heads` of a kv head's group), the
 * sequence length, its rows [beg, end) and, with a selection, that selection's row. */
struct as_dec_block {
    int b, split, kvh, h0, gcount, len, beg, end;
    const int32_t *irow;
    const float *wrow;
};

template <bool IDX> __device__ __forceinline__ as_dec_block as_dec_block_of(const as_dec_params &p, int heads)
{
    as_dec_block k;
    k.b = blockIdx.z;
    k.split = blockIdx.x;
    const int unit = blockIdx.y;
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
    k.len = p.lens[k.b];
    int nrows = k.len;
    k.irow = nullptr;
    k.wrow = nullptr;
    if (IDX) {
        const int64_t selrow = p.sel_per_q ? (int64_t)k.b * p.hq + k.h0 : (int64_t)k.b * p.hkv + k.kvh;
        nrows = p.count[selrow];
        k.irow = p.idx + selrow * p.kcap;
        if (p.logw) k.wrow = p.logw + selrow * p.kcap;
    }
    k.beg = k.split * p.chunk;
    k.end = min(nrows, k.beg + p.chunk);
    return k;
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
