/* as_gpu_topk.cu: exact top-k of rows of floats by a multi-block radix select (method:
 * as_gpu_topk.cuh, docs/gpu.md). Kernels: the first digit's histogram (when no producer built
 * it) and one "step" kernel launched AS_TK_PASSES times, each launch doing for every row what
 * its state says comes next (a digit pass, the collection, or nothing). CPU check:
 * as_gpu_ref_check_topk_pos (as_gpu_ref.c). */
#include "as_gpu_impl.h"
#include "as_gpu_topk.cuh"

/* Pass 0 over rows that no producer histogrammed. Grid (rows, blocks per row). */
template <bool VEC>
__global__ void __launch_bounds__(AS_TK_THREADS, 1)
    as_k_tk_hist(const float *x, int64_t ldx, const int32_t *lens, int rpl, int k, as_tk_ws w)
{
    __shared__ uint32_t hist[AS_TK_BINS];
    const int64_t r = blockIdx.x;
    for (int i = threadIdx.x; i < AS_TK_BINS; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const int len = max(lens[r / rpl], 0);
    const int kr = min(max(k, 0), len);
    if (kr > 0 && kr < len) {
        int beg, end;
        as_tk_slice(len, blockIdx.y, gridDim.y, &beg, &end);
        as_tk_tiles<VEC>(x + r * ldx, beg, end, [&](const uint32_t(&F)[16], uint32_t valid, as_tk_pos16) {
#pragma unroll
            for (int e = 0; e < 16; e++) as_tk_hist_add(hist, F[e] >> 21, (valid >> e) & 1u);
        });
    }
    __syncthreads();
    as_tk_pass_end(hist, as_tk_hist_of(w, r, 0), as_tk_hist_of(w, r, 1), w.st + r, gridDim.y, 0,
                   (uint32_t)kr, (uint32_t)len, false);
}

/* The pass that starts the candidate list: a warp's undecided elements (eq) go to the row's
 * list as keys, its selected ones (gt) to the output as positions. Called by all 32 lanes. */
__device__ __forceinline__ void as_tk_emit(const uint32_t (&F)[16], as_tk_pos16 ps, uint32_t eq,
                                           uint32_t gt, as_tk_state *st, unsigned long long *lr,
                                           int32_t *out)
{
    uint32_t o = as_tk_warp_base(__popc(eq), &st->nlist);
#pragma unroll
    for (int e = 0; e < 16; e++)
        if ((eq >> e) & 1u) lr[o++] = as_tk_key16(F, ps, e);
    o = as_tk_warp_base(__popc(gt), &st->nout);
#pragma unroll
    for (int e = 0; e < 16; e++)
        if ((gt >> e) & 1u) out[o++] = ps.at(e);
}

/* One step for every row: grid (rows, blocks per row). */
template <bool VEC>
__global__ void __launch_bounds__(AS_TK_THREADS, 1)
    as_k_tk_step(const float *x, int64_t ldx, const int32_t *lens, int rpl, int32_t *idx,
                 int64_t ldi, int32_t *count, as_tk_ws w)
{
    __shared__ uint32_t hist[AS_TK_BINS];
    __shared__ unsigned long long keys[AS_TK_CAP];
    __shared__ int s_last;
    const int64_t r = blockIdx.x;
    as_tk_state *st = w.st + r;
    const uint32_t status = st->status;
    if (status == 3) return;
    const int tid = threadIdx.x, bd = blockDim.x, lane = tid & 31;
    const int blk = blockIdx.y, nblk = gridDim.y;
    const int len = max(lens[r / rpl], 0);
    const float *xr = x + r * ldx;
    int32_t *out = idx + r * ldi;
    const uint32_t kr = st->kr;
    const int p = (int)st->pass;
    const bool list = st->list != 0;
    unsigned long long *lr = w.list + r * w.candcap;
    const int fs = p > 0 ? as_tk_shift(p - 1) : 0;
    const unsigned long long P = p > 0 ? st->prefix >> fs : 0ull;
    /* the list slice of this block, walked warp-uniformly one key per lane */
    const uint32_t nl = list ? st->nlist : 0u;
    const uint32_t lb = (uint32_t)((uint64_t)nl * blk / nblk);
    const uint32_t le = (uint32_t)((uint64_t)nl * (blk + 1) / nblk);
    const uint32_t lw0 = lb + (uint32_t)(tid - lane);
    if (status == 0) { /* digit pass p over the undecided elements */
        for (int i = tid; i < AS_TK_BINS; i += bd) hist[i] = 0;
        __syncthreads();
        const bool start = !list && st->neq <= (uint32_t)w.candcap;
        if (list) {
            for (uint32_t i0 = lw0; i0 < le; i0 += bd) {
                const uint32_t i = i0 + lane;
                const unsigned long long K = i < le ? lr[i] : 0ull;
                as_tk_hist_add(hist, as_tk_digit(K, p), i < le && (K >> fs) == P);
            }
        } else if (p <= 2) {
            /* value digits: the prefix and the digit lie in the 32-bit order key alone */
            int beg, end;
            as_tk_slice(len, blk, nblk, &beg, &end);
            const int s32 = fs - 32, ds = as_tk_shift(p) - 32;
            const uint32_t P32 = (uint32_t)P, dm = p == 2 ? 1023u : 2047u;
            as_tk_tiles<VEC>(xr, beg, end, [&](const uint32_t(&F)[16], uint32_t valid, as_tk_pos16 ps) {
                uint32_t eq = 0, gt = 0;
#pragma unroll
                for (int e = 0; e < 16; e++) {
                    const uint32_t hi = F[e] >> s32;
                    if (((valid >> e) & 1u) && hi >= P32) {
                        if (hi == P32) {
                            eq |= 1u << e;
                            atomicAdd(&hist[(F[e] >> ds) & dm], 1u);
                        } else {
                            gt |= 1u << e;
                        }
                    }
                }
                if (start) as_tk_emit(F, ps, eq, gt, st, lr, out);
            });
        } else {
            int beg, end;
            as_tk_slice(len, blk, nblk, &beg, &end);
            as_tk_tiles<VEC>(xr, beg, end, [&](const uint32_t(&F)[16], uint32_t valid, as_tk_pos16 ps) {
                uint32_t eq = 0, gt = 0;
#pragma unroll
                for (int e = 0; e < 16; e++) {
                    const unsigned long long Ke = as_tk_key16(F, ps, e);
                    const unsigned long long hi = Ke >> fs;
                    const bool v = (valid >> e) & 1u;
                    if (v && hi == P) eq |= 1u << e;
                    if (v && hi > P) gt |= 1u << e;
                    as_tk_hist_add(hist, as_tk_digit(Ke, p), v && hi == P);
                }
                if (start) as_tk_emit(F, ps, eq, gt, st, lr, out);
            });
        }
        __syncthreads();
        as_tk_pass_end(hist, as_tk_hist_of(w, r, p), as_tk_hist_of(w, r, p + 1), st, nblk, p, kr,
                       (uint32_t)len, start);
        return;
    }
    /* collection */
    if (blk == 0 && tid == 0) count[r] = (int32_t)kr;
    const bool all = status == 1 && st->neq == st->kleft;
    if (status == 2) {
        if (kr == (uint32_t)len) {
            int beg, end;
            as_tk_slice(len, blk, nblk, &beg, &end);
            for (int j = beg + tid; j < end; j += bd) out[j] = j;
        }
    } else {
        int32_t *buf = w.buf + r * AS_TK_CAP;
        /* selected: above the prefix (or equal to it when all the undecided are needed) */
        const bool v32 = fs >= 32; /* the prefix lies in the 32-bit order key alone */
        const int s32 = v32 ? fs - 32 : 0;
        const uint32_t P32 = (uint32_t)P;
        auto take = [&](const uint32_t(&F)[16], uint32_t valid, as_tk_pos16 ps) {
            uint32_t sel = 0, und = 0;
#pragma unroll
            for (int e = 0; e < 16; e++) {
                const bool v = (valid >> e) & 1u;
                bool gt, eq;
                if (v32) {
                    const uint32_t hi = F[e] >> s32;
                    gt = hi > P32;
                    eq = hi == P32;
                } else {
                    const unsigned long long hi = as_tk_key16(F, ps, e) >> fs;
                    gt = hi > P;
                    eq = hi == P;
                }
                if (v && (gt || (all && eq))) sel |= 1u << e;
                else if (v && eq) und |= 1u << e;
            }
            uint32_t o = as_tk_warp_base(__popc(sel), &st->nout);
#pragma unroll
            for (int e = 0; e < 16; e++)
                if ((sel >> e) & 1u) out[o++] = ps.at(e);
            o = as_tk_warp_base(__popc(und), &st->nbuf);
#pragma unroll
            for (int e = 0; e < 16; e++)
                if ((und >> e) & 1u) buf[o++] = ps.at(e);
        };
        if (list) {
            for (uint32_t i0 = lw0; i0 < le; i0 += bd) {
                const uint32_t i = i0 + lane;
                uint32_t F[16] = {};
                const unsigned long long K = i < le ? lr[i] : 0ull;
                F[0] = (uint32_t)(K >> 32);
                take(F, i < le ? 1u : 0u, as_tk_pos16{as_tk_pos(K), 1});
            }
        } else {
            int beg, end;
            as_tk_slice(len, blk, nblk, &beg, &end);
            as_tk_tiles<VEC>(xr, beg, end, take);
        }
    }
    __threadfence();
    __syncthreads();
    if (tid == 0) s_last = atomicAdd(&st->ticket, 1u) == (uint32_t)nblk - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    if (status == 1 && !all) {
        /* rank the few undecided elements (distinct keys) and take the kleft largest */
        const uint32_t n = st->neq, kleft = st->kleft;
        const int32_t *buf = w.buf + r * AS_TK_CAP;
        for (uint32_t i = tid; i < n; i += bd) {
            const int j = __ldcg(buf + i);
            keys[i] = as_tk_key(xr[j], j);
        }
        __syncthreads();
        const uint32_t base = kr - kleft;
        for (uint32_t i = tid; i < n; i += bd) {
            const unsigned long long K = keys[i];
            uint32_t rank = 0;
            for (uint32_t t = 0; t < n; t++) rank += keys[t] > K;
            if (rank < kleft) out[base + rank] = as_tk_pos(K);
        }
    }
    if (tid == 0) st->status = 3;
}

static int blocks_per_row(const as_gpu_ctx *c, int64_t rows, int64_t nmax)
{
    const int64_t target = (int64_t)c->sms * 4;
    int64_t b = (target + rows - 1) / rows;
    const int64_t most = (nmax + 4095) / 4096;
    if (b > most) b = most;
    if (b > 65535) b = 65535;
    return b < 1 ? 1 : (int)b;
}

as_status as_gpu_tk_prepare(as_gpu_ctx *c, int64_t rows, int64_t nmax, as_tk_ws *w, char *err)
{
    if (rows > 0x7fffffff) return as_err_set(err, AS_ERR_USAGE, "gpu topk: too many rows");
    const int64_t candcap = nmax / 8 > AS_TK_CAP ? nmax / 8 : AS_TK_CAP;
    const size_t sb = ((size_t)rows * sizeof(as_tk_state) + 255) & ~(size_t)255;
    const size_t hb = (size_t)2 * rows * AS_TK_BINS * sizeof(uint32_t);
    const size_t bb = ((size_t)rows * AS_TK_CAP * sizeof(int32_t) + 255) & ~(size_t)255;
    const size_t lb = (size_t)rows * candcap * sizeof(unsigned long long);
    void *ws;
    AS_TRY(as_gpu_ws(c, AS_WS_TOPK, sb + hb + bb + lb, &ws, err));
    char *p = (char *)ws;
    w->st = (as_tk_state *)p;
    w->hist = (uint32_t *)(p + sb);
    w->buf = (int32_t *)(p + sb + hb);
    w->list = (unsigned long long *)(p + sb + hb + bb);
    w->candcap = candcap;
    w->rows = rows;
    w->bpr = blocks_per_row(c, rows, nmax);
    AS_CU(cudaMemsetAsync(ws, 0, sb + hb, c->stream));
    return AS_OK;
}

as_status as_gpu_tk_run(as_gpu_ctx *c, const as_tk_ws *w, const float *x, int64_t ldx,
                        int64_t rows, const int32_t *lens, int32_t rpl, int32_t k, int32_t *idx,
                        int64_t ldi, int32_t *count, bool hist_done, char *err)
{
    const bool vec = ((uintptr_t)x % 16 == 0) && (ldx % 4 == 0);
    const dim3 grid((unsigned)rows, (unsigned)w->bpr);
    if (!hist_done) {
        if (vec)
            as_k_tk_hist<true><<<grid, AS_TK_THREADS, 0, c->stream>>>(x, ldx, lens, rpl, k, *w);
        else
            as_k_tk_hist<false><<<grid, AS_TK_THREADS, 0, c->stream>>>(x, ldx, lens, rpl, k, *w);
        AS_CU_LAUNCHED("topk histogram");
    }
    for (int s = 0; s < AS_TK_PASSES; s++) {
        if (vec)
            as_k_tk_step<true><<<grid, AS_TK_THREADS, 0, c->stream>>>(x, ldx, lens, rpl, idx, ldi,
                                                                      count, *w);
        else
            as_k_tk_step<false><<<grid, AS_TK_THREADS, 0, c->stream>>>(x, ldx, lens, rpl, idx,
                                                                       ldi, count, *w);
        AS_CU_LAUNCHED("topk step");
    }
    return AS_OK;
}
