/* as_gpu_topk.cuh: the multi-block exact top-k (radix select) shared by the top-k kernels of
 * as_gpu_topk.cu and the producers that build its first histogram (as_gpu_select.cu). Not
 * installed. The method (docs/gpu.md, "Exact top-k"):
 *
 * Every element j of a row is ranked by the 64-bit key K = fkey(x_j) << 32 | ~j: distinct keys,
 * larger value first and, among equal values, the lower position first (the CPU's rule,
 * analysis/as_select.h). The k largest keys are found digit by digit, most significant first,
 * with 11/11/10/11/11/10-bit digits (passes 0..5). A row is split over many blocks; each pass
 * histograms its digit of the elements still undecided into shared memory, adds the counts to a
 * global per-row histogram, and the last block of the row to finish (ticket after a fence)
 * scans it: the bucket holding the kleft-th largest extends the known prefix. Elements above the
 * prefix are selected, below it dropped, equal to it undecided. The row state then says what the
 * next launch does: another pass, or the collection once the undecided elements are few (at
 * most AS_TK_CAP: ranked by one block at the end) or all needed. When the undecided elements of
 * a pass fit in the row's candidate list (candcap keys), that pass writes the selected elements
 * out and copies the undecided keys to the list, and later passes read only the list. Pass 0
 * can run inside the kernel that produces the row (the group aggregation of the scores), so the
 * row is not re-read for it. */
#ifndef AS_GPU_TOPK_CUH
#define AS_GPU_TOPK_CUH

#include <cooperative_groups.h>
#include <cub/block/block_scan.cuh>
#include <stdint.h>

#include "as_gpu_impl.h"
#include "as_gpu_kern.cuh"


#define AS_TK_BINS 2048
#define AS_TK_THREADS 512
#define AS_TK_PASSES 6

__device__ __forceinline__ uint32_t *as_tk_hist_of(const as_tk_ws &w, int64_t r, int p)
{
    return w.hist + ((int64_t)(p & 1) * w.rows + r) * AS_TK_BINS;
}

/* Host side (as_gpu_topk.cu): workspace for rows of up to nmax elements, state and histograms
 * zeroed on the stream (before pass 0); then, after pass 0 (hist_done) or with it, the passes
 * and the collection. idx rows get min(k, len) positions in no particular order. */
as_status as_gpu_tk_prepare(as_gpu_ctx *c, int64_t rows, int64_t nmax, as_tk_ws *w, char *err);
as_status as_gpu_tk_run(as_gpu_ctx *c, const as_tk_ws *w, const float *x, int64_t ldx,
                        int64_t rows, const int32_t *lens, int32_t rpl, int32_t k, int32_t *idx,
                        int64_t ldi, int32_t *count, bool hist_done, char *err);

__device__ __forceinline__ int as_tk_shift(int p)
{
    return p == 0 ? 53 : p == 1 ? 42 : p == 2 ? 32 : p == 3 ? 21 : p == 4 ? 10 : 0;
}
__device__ __forceinline__ uint32_t as_tk_digit(unsigned long long key, int p)
{
    const uint32_t mask = (p == 2 || p == 5) ? 1023u : 2047u;
    return (uint32_t)(key >> as_tk_shift(p)) & mask;
}
__device__ __forceinline__ unsigned long long as_tk_key(float v, int j)
{
    return ((unsigned long long)as_fkey(v) << 32) | (unsigned long long)(~(uint32_t)j);
}
__device__ __forceinline__ int as_tk_pos(unsigned long long key) { return (int)~(uint32_t)key; }

/* Histogram increment for the lanes with ok set; called by all 32 lanes of a warp. When every
 * such lane hits one bin (values of a row often share their top bits) a single lane adds the
 * count; otherwise each adds 1. */
__device__ __forceinline__ void as_tk_hist_add(uint32_t *hist, uint32_t bin, bool ok)
{
    const unsigned act = __ballot_sync(0xffffffffu, ok);
    if (!act) return;
    const int first = __ffs(act) - 1;
    const uint32_t b0 = __shfl_sync(0xffffffffu, bin, first);
    if (__ballot_sync(0xffffffffu, ok && bin != b0) == 0u) {
        if ((int)(threadIdx.x & 31) == first) atomicAdd(&hist[b0], (uint32_t)__popc(act));
    } else if (ok) {
        atomicAdd(&hist[bin], 1u);
    }
}

/* Index of the first of cnt slots this lane appends to a global list (counter ctr): one atomic
 * per warp. Called by all 32 lanes. */
__device__ __forceinline__ uint32_t as_tk_warp_base(uint32_t cnt, uint32_t *ctr)
{
    const int lane = threadIdx.x & 31;
    uint32_t inc = cnt;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const uint32_t t = __shfl_up_sync(0xffffffffu, inc, off);
        if (lane >= off) inc += t;
    }
    const uint32_t total = __shfl_sync(0xffffffffu, inc, 31);
    uint32_t base = 0;
    if (lane == 31 && total) base = atomicAdd(ctr, total);
    base = __shfl_sync(0xffffffffu, base, 31);
    return base + inc - cnt;
}

/* Positions of a lane's 16 elements in a tile: p0 + (e / 4) * 128 + (e % 4) * s1. */
struct as_tk_pos16 {
    int p0, s1;
    __device__ __forceinline__ int at(int e) const { return p0 + (e >> 2) * 128 + (e & 3) * s1; }
};
__device__ __forceinline__ unsigned long long as_tk_key16(const uint32_t (&F)[16], as_tk_pos16 ps, int e)
{
    return ((unsigned long long)F[e] << 32) | (unsigned long long)(~(uint32_t)ps.at(e));
}

/* tile(F[16], valid, ps) over x[beg, end), called warp-uniformly: each lane gets up to 16
 * elements as order keys F (as_fkey) at positions ps.at(e) (valid: bit e set when element e
 * exists). 16-byte loads when VEC (x 16-byte aligned, beg % 4 == 0), four in flight per lane,
 * coalesced over the warp. */
template <bool VEC, class T>
__device__ __forceinline__ void as_tk_tiles(const float *x, int beg, int end, T tile)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    uint32_t F[16];
    if (VEC) {
        const int n4 = (end - beg) >> 2;
        const float4 *x4 = reinterpret_cast<const float4 *>(x + beg);
        for (int w0 = wid * 128; w0 < n4; w0 += nw * 128) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int i = w0 + u * 32 + lane;
                v[u] = i < n4 ? __ldg(x4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
            uint32_t valid = 0;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                F[4 * u] = as_fkey(v[u].x);
                F[4 * u + 1] = as_fkey(v[u].y);
                F[4 * u + 2] = as_fkey(v[u].z);
                F[4 * u + 3] = as_fkey(v[u].w);
                if (w0 + u * 32 + lane < n4) valid |= 0xfu << (4 * u);
            }
            tile(F, valid, as_tk_pos16{beg + 4 * (w0 + lane), 1});
        }
        const int t0 = beg + 4 * n4;
        if (t0 < end && wid == nw - 1) {
            const int j = t0 + lane;
#pragma unroll
            for (int e = 1; e < 16; e++) F[e] = 0;
            F[0] = j < end ? as_fkey(__ldg(x + j)) : 0;
            tile(F, j < end ? 1u : 0u, as_tk_pos16{j, 1});
        }
    } else {
        for (int w0 = beg + wid * 512; w0 < end; w0 += nw * 512) {
            uint32_t valid = 0;
            const as_tk_pos16 ps{w0 + lane, 32};
#pragma unroll
            for (int e = 0; e < 16; e++) {
                const int j = ps.at(e);
                F[e] = j < end ? as_fkey(__ldg(x + j)) : 0;
                if (j < end) valid |= 1u << e;
            }
            tile(F, valid, ps);
        }
    }
}

/* Called by every thread of every block of a row's launch (nblk blocks) after the block's
 * digit-p histogram is complete in sh_hist (AS_TK_BINS bins; the caller has synchronized).
 * Adds it to the row's global histogram; the last block scans it and advances the row state.
 * For p == 0 the state is initialised from kr and len first. hist_next: the row's other
 * histogram, cleared for the pass after next. list_started: this pass copied the undecided
 * elements to the list. */
template <int NT = AS_TK_THREADS>
static __device__ __noinline__ void as_tk_pass_end(const uint32_t *sh_hist, uint32_t *g_hist, uint32_t *hist_next,
                               as_tk_state *st, int nblk, int p, uint32_t kr, uint32_t len,
                               bool list_started)
{
    constexpr int BPT = AS_TK_BINS / NT; /* bins per thread */
    typedef cub::BlockScan<uint32_t, NT> Scan;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ int s_last, s_bucket;
    __shared__ uint32_t s_kleft, s_neq;
    const int tid = threadIdx.x;
    for (int i = tid; i < AS_TK_BINS; i += blockDim.x)
        if (sh_hist[i]) atomicAdd(&g_hist[i], sh_hist[i]);
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(&st->ticket, 1u) == (uint32_t)nblk - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    uint32_t kleft = p == 0 ? kr : st->kleft;
    const bool trivial = p == 0 && (kr == 0 || kr == len);
    if (!trivial) {
        /* thread t holds bins BPT (NT - 1 - t) .. + BPT - 1: thread 0 the largest */
        const int g0 = BPT * (NT - 1 - tid);
        uint32_t c[BPT], sum = 0;
#pragma unroll
        for (int i = 0; i < BPT; i++) {
            c[i] = __ldcg(&g_hist[g0 + i]);
            sum += c[i];
        }
        uint32_t above;
        Scan(scan_tmp).ExclusiveSum(sum, above);
        if (above < kleft && kleft <= above + sum) {
            uint32_t run = above;
#pragma unroll
            for (int i = BPT - 1; i >= 0; i--) {
                if (run + c[i] >= kleft && run < kleft) {
                    s_bucket = g0 + i;
                    s_kleft = kleft - run;
                    s_neq = c[i];
                    break;
                }
                run += c[i];
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < AS_TK_BINS; i += blockDim.x) hist_next[i] = 0;
    if (tid == 0) {
        if (p == 0) st->kr = kr;
        if (trivial) {
            st->status = 2;
        } else {
            st->prefix |= (unsigned long long)s_bucket << as_tk_shift(p);
            st->kleft = s_kleft;
            st->neq = s_neq;
            st->status = (s_neq == s_kleft || s_neq <= AS_TK_CAP) ? 1 : 0;
        }
        st->pass = p + 1;
        if (list_started) st->list = 1;
        st->ticket = 0;
    }
}

/* [beg, end) of block blk of nblk over a row of len elements, chunks a multiple of 4 long. */
__device__ __forceinline__ void as_tk_slice(int len, int blk, int nblk, int *beg, int *end)
{
    int64_t ch = ((int64_t)len + nblk - 1) / nblk;
    ch = (ch + 3) & ~(int64_t)3;
    const int64_t b = (int64_t)blk * ch;
    *beg = (int)(b < len ? b : len);
    *end = (int)(b + ch < len ? b + ch : len);
}

#endif
