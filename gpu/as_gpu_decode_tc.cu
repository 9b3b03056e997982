/* as_gpu_decode_tc.cu: kernel 1/2 on tensor cores (dense and sparse decode, 16-bit K/V,
 * d = 64 or 128). CPU float64 reference: as_gpu_ref.c, the same as the CUDA-core kernel's.
 *
 * Why: on an H200 the CUDA-core decode (as_gpu_decode.cu) issues ~150 instructions per row and
 * thread (the q.k and p.v FMAs, the shuffle reductions of each dot, the 16-to-32-bit
 * conversions) and ends issue-bound at ~85% of the copy bandwidth (Nsight Compute: issue slots
 * 76% busy at 21% occupancy). With mma.sync the same work is a few instructions per 16 keys.
 *
 * Layout (PTX ISA, "Matrix fragments for mma.m16n8k16"): the A operand's 16 rows are the query
 * heads of the block's kv head (up to 8 used; rows 8-15 are zero), the keys are N for q.k and K
 * for p.v, d is K for q.k and N for p.v. q arrives as f32 and p is computed in f32, so both are
 * split into 16-bit terms (x = t0 + t1 (+ t2), each the rounding of what the others left) and
 * each product is one mma per term: K and V are exact in their own 16-bit type and the
 * accumulation is f32. q takes three bf16 terms (error 2^-27 |q|, below f32's rounding: a score
 * sum_i q_i k_i of a real trace has |q_i k_i| summing to tens, and a base-2 score error is a
 * relative error of the weight), two f16 terms; p in [0, 1] takes two (2^-18, 2^-24).
 *
 * A block's four warps each take 16 keys of every 64-key stage. Each warp streams its K and V
 * tiles through an S-stage cp.async pipeline of its own (rows zero-filled past the end, so a
 * masked key multiplies a zero V row), 16-byte chunks XOR-swizzled by row so that ldmatrix reads
 * eight rows without bank conflicts; lanes read chunks that other lanes copied, so __syncwarp
 * orders the copies (after cp.async.wait_group) and the reuse of a buffer (after its compute).
 * Online softmax in base 2 per head (a lane's head is lane/4; the 4 lanes of a quad share it),
 * then the warps' (m, l, o) are merged through shared memory and written like the CUDA-core
 * kernel's: normalized partials and their log-sum-exp when the keys are split over blocks. */
#include <math.h>

#include "as_gpu_dec.cuh"
#include "as_gpu_topk.cuh"

namespace {

constexpr int TC_WARPS = 4;
constexpr int TC_KEYS = AS_TC_STEP / TC_WARPS; /* keys per warp and stage */
constexpr int TC_STAGES = 3;
constexpr unsigned FULL = 0xffffffffu;

template <int D> struct tc_geom {
    static constexpr int CPR = D / 8;                  /* 16-byte chunks per row */
    static constexpr int KPI = 32 / CPR;               /* rows per warp-wide copy */
    static constexpr int R = TC_KEYS / KPI;            /* copies per tile */
    static constexpr int TILE_B = TC_KEYS * D * 2;     /* one K (or V) tile */
    static constexpr int STAGE_B = TC_WARPS * 2 * TILE_B;
    static constexpr int STG_B = TC_STAGES * STAGE_B;
    static constexpr int RED_B = TC_WARPS * AS_TC_HEADS * (D + 2) * 4;
    static constexpr int BYTES = STG_B > RED_B ? STG_B : RED_B;
};

/* two floats as a 16-bit pair (first in the low half) */
template <int DT> __device__ __forceinline__ uint32_t tc_pack(float x0, float x1, float &r0, float &r1)
{
    uint32_t u;
    if constexpr (DT == 2) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
        r0 = __low2float(h);
        r1 = __high2float(h);
        u = *reinterpret_cast<const uint32_t *>(&h);
    } else {
        const __half2 h = __floats2half2_rn(x0, x1);
        r0 = __low2float(h);
        r1 = __high2float(h);
        u = *reinterpret_cast<const uint32_t *>(&h);
    }
    return u;
}
/* x = t[0] + ... + t[T-1] + e, each term the 16-bit rounding of what the previous ones left:
 * |e| <= 2^-(9T) |x| for bf16 (8-bit significand), 2^-(12T) for f16 */
template <int DT, int T> __device__ __forceinline__ void tc_split(float x0, float x1, uint32_t (&t)[T])
{
#pragma unroll
    for (int i = 0; i < T; i++) {
        float r0, r1;
        t[i] = tc_pack<DT>(x0, x1, r0, r1);
        x0 -= r0;
        x1 -= r1;
    }
}

/* d[0..1] += A B for rows 0-7 (a1 = a3 = 0: rows 8-15 of A are zero, their results dropped) */
template <int DT>
__device__ __forceinline__ void tc_mma(float (&d)[2], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1)
{
    float t2, t3;
    if constexpr (DT == 2)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(t2), "=f"(t3)
                     : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(d[0]), "f"(d[1]),
                       "f"(0.f), "f"(0.f));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(t2), "=f"(t3)
                     : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1), "f"(d[0]), "f"(d[1]),
                       "f"(0.f), "f"(0.f));
}

__device__ __forceinline__ void tc_ldsm(uint32_t (&r)[4], unsigned addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void tc_ldsm_t(uint32_t (&r)[4], unsigned addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
/* 16-byte copy; src_size 0 writes zeros (a row past the end or not selected) */
__device__ __forceinline__ void tc_cp16(unsigned dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

/* byte offset of 16-byte chunk c of row `row` in a swizzled tile */
template <int D> __device__ __forceinline__ unsigned tc_off(int row, int c)
{
    return (unsigned)((row * tc_geom<D>::CPR + (c ^ (row & 7))) * 16);
}

/* MODE 0: decode. MODE 1, scores (no V): every key's base-2 score of every head to p.sc, and
 * the block's base-2 log-sum-exp per head to p.part_lse ([split][batch][hq], when not NULL).
 * MODE 2, Quest page bounds: rows are pages (k = kmax, v = kmin rows), the bound
 * sum_i max(q_i kmin_i, q_i kmax_i) = q+ . kmax + q- . kmin (q+ = max(q, 0), q- = min(q, 0)) in
 * base 2 as two products; to p.sc per head, or (p.agg) the max over the block's heads to p.agg
 * with pass 0 of the top-k of those rows (as_gpu_topk.cuh; one block per group of heads). */
template <int DT, int D, bool IDX, int MODE>
__global__ void __launch_bounds__(128, 2) as_k_decode_tc(const as_dec_params p)
{
    constexpr bool SC = MODE != 0, BD = MODE == 2;
    using G = tc_geom<D>;
    constexpr int KS = D / 16; /* k-steps of q.k; pairs of 8-column tiles of o */
    constexpr int S = TC_STAGES;
    extern __shared__ __align__(128) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = lane >> 2, q4 = lane & 3; /* fragment row (head) and column pair of this lane */
    const as_dec_block blk = as_dec_block_of<IDX>(p, AS_TC_HEADS);
    const int b = blk.b, kvh = blk.kvh, h0 = blk.h0, gcount = blk.gcount;
    const int len = blk.len, beg = blk.beg;
    const int end = BD ? min((len + p.page - 1) / p.page, beg + p.chunk) : blk.end;
    const int32_t *irow = blk.irow;
    const float *wrow = blk.wrow;

    /* q (scaled to base 2) as A fragments: a0 = (h, 16ks + 2q4 + {0,1}), a2 = the same + 8 */
    constexpr int QT = DT == 2 ? 3 : 2;
    uint32_t qf[KS][2][QT];
    uint32_t qn[BD ? KS : 1][2][QT]; /* BD: q- (qf holds q+) */
    {
        const float *qr = p.q + ((int64_t)b * p.hq + h0 + h) * D;
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int k = 16 * ks + 8 * half + 2 * q4;
                const float x0 = h < gcount ? qr[k] * p.qscale : 0.f;
                const float x1 = h < gcount ? qr[k + 1] * p.qscale : 0.f;
                if (BD) {
                    tc_split<DT, QT>(fmaxf(x0, 0.f), fmaxf(x1, 0.f), qf[ks][half]);
                    tc_split<DT, QT>(fminf(x0, 0.f), fminf(x1, 0.f), qn[BD ? ks : 0][half]);
                } else {
                    tc_split<DT, QT>(x0, x1, qf[ks][half]);
                }
            }
    }
    const char *kb = as_row<DT>(p.k, b * p.sb + kvh * p.sh);
    const char *vb = as_row<DT>(p.v, b * p.sb + kvh * p.sh);
    const int64_t rowb = p.sn * 2;
    const unsigned sw = (unsigned)__cvta_generic_to_shared(smem) + warp * 2 * G::TILE_B;
    const int cc = lane % G::CPR, cr = lane / G::CPR; /* the chunk and first row this lane copies */

    /* the tile to issue next: lane j holds key (j & 15)'s row (-1: none) and log-weight
     * (-inf: masked) */
    int pn = -1;
    float pw = -INFINITY;
    auto load_idx = [&](int base) {
        const int j = base + warp * TC_KEYS + (lane & 15);
        pn = -1;
        pw = -INFINITY;
        if (j < end) {
            if (IDX) {
                pn = __ldg(irow + j);
                if (pn >= 0 && pn < len) pw = wrow ? __ldg(wrow + j) * AS_LOG2E : 0.f;
                else pn = -1;
            } else {
                pn = j;
                pw = 0.f;
            }
        }
    };
    auto issue = [&](int st) {
        const unsigned sk = sw + st * G::STAGE_B, sv = sk + G::TILE_B;
#pragma unroll
        for (int r = 0; r < G::R; r++) {
            const int row = cr + G::KPI * r;
            const int n = __shfl_sync(FULL, pn, row);
            const int64_t off = n >= 0 ? (BD ? (int64_t)n : as_kv_row(p.kvp, b, n)) * rowb + cc * 16 : 0;
            tc_cp16(sk + tc_off<D>(row, cc), kb + off, n >= 0);
            if (!SC || BD) tc_cp16(sv + tc_off<D>(row, cc), vb + off, n >= 0);
        }
        as_cp_commit();
    };

    /* BD with agg: the block's histogram of pass 0 of the top-k */
    __shared__ uint32_t bd_hist_s[BD ? AS_TK_BINS : 1];
    uint32_t *bd_hist = bd_hist_s;
    const int bd_rows = BD ? (len + p.page - 1) / p.page : 0;
    const int bd_kr = min(max(p.tk_k, 0), bd_rows);
    const bool bd_on = BD && p.agg && bd_kr > 0 && bd_kr < bd_rows;
    if (BD && p.agg) {
        for (int i = threadIdx.x; i < AS_TK_BINS; i += blockDim.x) bd_hist[i] = 0;
        __syncthreads();
    }
    float m = AS_NEG_BIG, l = 0.f;
    float o[2 * KS][2];
#pragma unroll
    for (int t = 0; t < 2 * KS; t++) o[t][0] = o[t][1] = 0.f;
    float lwq[S]; /* pw of the tile in each stage: [0] is being computed */
#pragma unroll
    for (int st = 0; st < S; st++) lwq[st] = -INFINITY;
    int nb = beg;
    if (beg < end) load_idx(nb);
#pragma unroll
    for (int st = 0; st < S - 1; st++) {
        if (nb < end) {
            issue(st);
            lwq[st] = pw;
        } else {
            as_cp_commit(); /* empty group keeps the wait count uniform */
        }
        nb += AS_TC_STEP;
        if (nb < end) load_idx(nb);
    }
    int buf = 0, ibuf = S - 1;
    for (int base = beg; base < end; base += AS_TC_STEP) {
        if (nb < end) {
            issue(ibuf);
            lwq[S - 1] = pw;
            nb += AS_TC_STEP;
            if (nb < end) load_idx(nb);
        } else {
            lwq[S - 1] = -INFINITY;
            as_cp_commit();
        }
        as_cp_wait<S - 1>();
        __syncwarp();
        const unsigned sk = sw + buf * G::STAGE_B, sv = sk + G::TILE_B;

        /* scores of keys nt * 8 + 2 q4 + e for head h */
        float s[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        {
            const int j = lane >> 3, row = (j >> 1) * 8 + (lane & 7);
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                uint32_t bk[4];
                tc_ldsm(bk, sk + tc_off<D>(row, 2 * ks + (j & 1)));
#pragma unroll
                for (int i = QT - 1; i >= 0; i--) { /* smallest terms first */
                    tc_mma<DT>(s[0], qf[ks][0][i], qf[ks][1][i], bk[0], bk[1]);
                    tc_mma<DT>(s[1], qf[ks][0][i], qf[ks][1][i], bk[2], bk[3]);
                }
                if (BD) { /* + q- . kmin */
                    uint32_t bm[4];
                    tc_ldsm(bm, sv + tc_off<D>(row, 2 * ks + (j & 1)));
#pragma unroll
                    for (int i = QT - 1; i >= 0; i--) {
                        tc_mma<DT>(s[0], qn[BD ? ks : 0][0][i], qn[BD ? ks : 0][1][i], bm[0], bm[1]);
                        tc_mma<DT>(s[1], qn[BD ? ks : 0][0][i], qn[BD ? ks : 0][1][i], bm[2], bm[3]);
                    }
                }
            }
        }
        float mx = m;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                s[nt][e] += __shfl_sync(FULL, lwq[0], nt * 8 + 2 * q4 + e);
                mx = fmaxf(mx, s[nt][e]);
            }
        if (BD && p.agg) {
            /* max over the heads (lanes 4 apart), written and histogrammed by lanes 0-3 */
            float g[2][2];
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = h < gcount ? s[nt][e] : -INFINITY;
                    v = fmaxf(v, __shfl_xor_sync(FULL, v, 4));
                    v = fmaxf(v, __shfl_xor_sync(FULL, v, 8));
                    v = fmaxf(v, __shfl_xor_sync(FULL, v, 16));
                    g[nt][e] = v;
                }
            float *ar = p.agg + ((int64_t)b * p.hkv + kvh) * p.sc_lds;
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                const int j = base + warp * TC_KEYS + nt * 8 + 2 * q4;
                if (h == 0) {
                    if (j + 1 < end) *reinterpret_cast<float2 *>(ar + j) = make_float2(g[nt][0], g[nt][1]);
                    else if (j < end) ar[j] = g[nt][0];
                }
#pragma unroll
                for (int e = 0; e < 2; e++)
                    as_tk_hist_add(bd_hist, as_fkey(g[nt][e]) >> 21, bd_on && h == 0 && j + e < end);
            }
        } else if (SC && h < gcount) {
            float *sr = p.sc + ((int64_t)b * p.hq + h0 + h) * p.sc_lds;
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                const int j = base + warp * TC_KEYS + nt * 8 + 2 * q4;
                if (j + 1 < end)
                    *reinterpret_cast<float2 *>(sr + j) = make_float2(s[nt][0], s[nt][1]);
                else if (j < end)
                    sr[j] = s[nt][0];
            }
        }
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
        const float corr = exp2f(m - mx);
        m = mx;
        l *= corr;
#pragma unroll
        for (int t = 0; t < 2 * KS; t++) {
            o[t][0] *= corr;
            o[t][1] *= corr;
        }
        float pr[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                pr[nt][e] = exp2f(s[nt][e] - m);
                l += pr[nt][e];
            }
        if (!SC) {
        /* p as the A operand of p.v: a0 = keys 2q4 + {0,1}, a2 = keys 8 + 2q4 + {0,1} */
        uint32_t pa0[2], pa2[2];
        tc_split<DT, 2>(pr[0][0], pr[0][1], pa0);
        tc_split<DT, 2>(pr[1][0], pr[1][1], pa2);
        {
            const int j = lane >> 3, row = (j & 1) * 8 + (lane & 7);
#pragma unroll
            for (int t = 0; t < KS; t++) {
                uint32_t bv[4];
                tc_ldsm_t(bv, sv + tc_off<D>(row, 2 * t + (j >> 1)));
                tc_mma<DT>(o[2 * t], pa0[1], pa2[1], bv[0], bv[1]);
                tc_mma<DT>(o[2 * t], pa0[0], pa2[0], bv[0], bv[1]);
                tc_mma<DT>(o[2 * t + 1], pa0[1], pa2[1], bv[2], bv[3]);
                tc_mma<DT>(o[2 * t + 1], pa0[0], pa2[0], bv[2], bv[3]);
            }
        }
        }
        __syncwarp(); /* every lane is done with this buffer before it is refilled */
#pragma unroll
        for (int st = 0; st < S - 1; st++) lwq[st] = lwq[st + 1];
        buf = (buf + 1 == S) ? 0 : buf + 1;
        ibuf = (ibuf + 1 == S) ? 0 : ibuf + 1;
    }
    l += __shfl_xor_sync(FULL, l, 1);
    l += __shfl_xor_sync(FULL, l, 2);
    as_cp_wait_all();
    __syncthreads(); /* the staging buffers become the merge buffer */
    if (BD) {
        if (p.agg) {
            const int64_t r = (int64_t)b * p.hkv + kvh;
            as_tk_pass_end<128>(bd_hist, as_tk_hist_of(p.tk, r, 0), as_tk_hist_of(p.tk, r, 1),
                                p.tk.st + r, gridDim.x, 0, (uint32_t)bd_kr, (uint32_t)bd_rows,
                                false);
        }
        return;
    }
    if (SC) {
        float *red = reinterpret_cast<float *>(smem);
        if (q4 == 0) {
            red[warp * AS_TC_HEADS + h] = m;
            red[(TC_WARPS + warp) * AS_TC_HEADS + h] = l;
        }
        __syncthreads();
        if (p.part_lse && (int)threadIdx.x < gcount) {
            const int g = threadIdx.x;
            float M = AS_NEG_BIG, L = 0.f;
#pragma unroll
            for (int w = 0; w < TC_WARPS; w++) M = fmaxf(M, red[w * AS_TC_HEADS + g]);
#pragma unroll
            for (int w = 0; w < TC_WARPS; w++)
                L = fmaf(red[(TC_WARPS + w) * AS_TC_HEADS + g], exp2f(red[w * AS_TC_HEADS + g] - M), L);
            p.part_lse[((int64_t)blk.split * p.batch + b) * p.hq + h0 + g] =
                L > 0.f ? M + log2f(L) : -INFINITY;
        }
        return;
    }

    /* merge the warps: red_o[w][h][D], then red_m[w][h], red_l[w][h] */
    float *red_o = reinterpret_cast<float *>(smem);
    float *red_m = red_o + TC_WARPS * AS_TC_HEADS * D;
    float *red_l = red_m + TC_WARPS * AS_TC_HEADS;
#pragma unroll
    for (int t = 0; t < 2 * KS; t++) {
        float *dst = red_o + (warp * AS_TC_HEADS + h) * D + t * 8 + 2 * q4;
        dst[0] = o[t][0];
        dst[1] = o[t][1];
    }
    if (q4 == 0) {
        red_m[warp * AS_TC_HEADS + h] = m;
        red_l[warp * AS_TC_HEADS + h] = l;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < gcount * D; t += blockDim.x) {
        const int g = t / D, c = t % D;
        float M = AS_NEG_BIG;
#pragma unroll
        for (int w = 0; w < TC_WARPS; w++) M = fmaxf(M, red_m[w * AS_TC_HEADS + g]);
        float L = 0.f, A = 0.f;
#pragma unroll
        for (int w = 0; w < TC_WARPS; w++) {
            const float wt = exp2f(red_m[w * AS_TC_HEADS + g] - M);
            L = fmaf(red_l[w * AS_TC_HEADS + g], wt, L);
            A = fmaf(red_o[(w * AS_TC_HEADS + g) * D + c], wt, A);
        }
        as_dec_store<D>(p, blk, g, c, M, L, A);
    }
}

template <int DT, int D, bool IDX>
as_status tc_instance(as_gpu_ctx *c, const as_dec_params &p, dim3 grid, int *per_sm, char *err)
{
    return as_dec_launch(c, as_k_decode_tc<DT, D, IDX, 0>, tc_geom<D>::BYTES, p, grid, per_sm,
                         "tensor-core decode", err);
}

template <int DT, int D>
as_status tc_pick_idx(as_gpu_ctx *c, bool idx, const as_dec_params &p, dim3 grid, int *per_sm,
                      char *err)
{
    return idx ? tc_instance<DT, D, true>(c, p, grid, per_sm, err)
               : tc_instance<DT, D, false>(c, p, grid, per_sm, err);
}

} /* namespace */

int as_gpu_tc_supported(as_gpu_dtype dt, int d)
{
    return (dt == AS_GPU_F16 || dt == AS_GPU_BF16) && (d == 64 || d == 128);
}

as_status as_gpu_tc_scores(as_gpu_ctx *c, const as_gpu_attn *a, const as_dec_params *p,
                           dim3 grid, int *per_sm, char *err)
{
    if (!as_gpu_tc_supported(a->kv_dtype, a->d))
        return as_err_set(err, AS_ERR_USAGE, "gpu scores: no tensor-core kernel for this dtype/d");
    const bool bf = a->kv_dtype == AS_GPU_BF16;
#define AS_TC_SC(DT, D)                                                                        \
    (p->page > 0 ? as_dec_launch(c, as_k_decode_tc<DT, D, false, 2>, tc_geom<D>::BYTES, *p, grid, \
                                 per_sm, "tensor-core page bounds", err)                      \
                 : as_dec_launch(c, as_k_decode_tc<DT, D, false, 1>, tc_geom<D>::BYTES, *p, grid, \
                                 per_sm, "tensor-core scores", err))
    if (a->d == 64) return bf ? AS_TC_SC(2, 64) : AS_TC_SC(1, 64);
    return bf ? AS_TC_SC(2, 128) : AS_TC_SC(1, 128);
#undef AS_TC_SC
}

as_status as_gpu_tc_decode(as_gpu_ctx *c, const as_gpu_attn *a, bool idx, const as_dec_params *p,
                           dim3 grid, int *per_sm, char *err)
{
    if (!as_gpu_tc_supported(a->kv_dtype, a->d))
        return as_err_set(err, AS_ERR_USAGE, "gpu decode: no tensor-core kernel for this dtype/d");
    const bool bf = a->kv_dtype == AS_GPU_BF16;
    if (a->d == 64)
        return bf ? tc_pick_idx<2, 64>(c, idx, *p, grid, per_sm, err)
                  : tc_pick_idx<1, 64>(c, idx, *p, grid, per_sm, err);
    return bf ? tc_pick_idx<2, 128>(c, idx, *p, grid, per_sm, err)
              : tc_pick_idx<1, 128>(c, idx, *p, grid, per_sm, err);
}
