/* as_gpu_decode.cu: kernels 1 and 2 (dense and sparse decode) on CUDA cores, the planning and
 * launch of both decode kernels (this one and the tensor-core one of as_gpu_decode_tc.cu), and
 * the score / page-bound kernels that selection builds on. CPU float64 references: as_gpu_ref.c.
 *
 * Decode (split-N flash-decoding). Grid (split, unit, sequence); a unit is a kv head and up to
 * GM of its query heads (GQA: every K/V row is loaded once for all of them), or one query head.
 * A 128-thread block walks its chunk of rows: a row of d elements is read by d/8 threads, 8
 * elements (one 16-byte load for 16-bit types) each, U rows per thread in flight. Per row and
 * head the partial dots are summed by xor-shuffles inside the row's thread group, then an
 * online softmax (base 2, scale*log2(e) folded into q) updates the running max m, sum l and the
 * accumulator. At the end the block's row slots are merged through shared memory; with several
 * splits each block writes a normalized partial output and its log-sum-exp, and a merge kernel
 * combines them: o = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "as_gpu_dec.cuh"

/* rows per thread and pipeline stage */
template <int DT, int GM> struct as_unroll {
    static constexpr int U = (DT == 0) ? 2 : 4;
};
/* Pipeline depth S: S - 1 stages of copies stay in flight while one is computed. A template
 * parameter so that variants 2 and 3 (S = 2, 3) are compared in one run: on an H200 three
 * stages gained nothing (this kernel is issue-bound there, gpu/bench/NOTES.md), which is why
 * the 16-bit default moved to tensor cores (as_gpu_decode_tc.cu). */
template <int DT, int D, int GM, int S> struct as_dec_smem {
    static constexpr int TPR = D / 8, RPW = 32 / TPR, SLOTS = 4 * RPW;
    static constexpr int U = as_unroll<DT, GM>::U;
    static constexpr int PC = (DT == 0) ? 2 : 1;
    static constexpr int STAGE_B = S * 2 * U * PC * 128 * 16; /* [buf][kv][u][pc][thread] */
    static constexpr int RED_B = SLOTS * GM * D * 4;
    static constexpr int BYTES = STAGE_B > RED_B ? STAGE_B : RED_B;
};

__device__ __forceinline__ void as_cp_async16(void *smem, const void *gmem)
{
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
}

/* S-stage pipeline: while a thread computes on the U rows of stage s (held in its own
 * shared-memory slots), the cp.async copies of stages s+1..s+S-1 are in flight, and
 * (sparse) the indices of stage s+S are being loaded. Each thread reads back only the 16-byte
 * pieces it copied itself, so cp.async.wait_group alone orders them (no barrier inside the
 * loop). The staging buffers are dynamic shared memory (they exceed the 48 KB static limit). */
template <int DT, int D, int GM, bool IDX, int S>
__global__ void __launch_bounds__(128, (GM >= 8) ? 2 : 4) as_k_decode(const as_dec_params p)
{
    static_assert(S >= 2 && S <= 3, "pipeline depth");
    using SM = as_dec_smem<DT, D, GM, S>;
    constexpr int TPR = SM::TPR, RPW = SM::RPW, SLOTS = SM::SLOTS;
    constexpr int U = SM::U;
    constexpr int PC = SM::PC; /* 16-byte pieces per 8 elements */
    constexpr int STEP = SLOTS * U;
    extern __shared__ __align__(16) unsigned char smem[]; /* SM::BYTES, set at launch */
    __shared__ float sm_m[SLOTS][GM], sm_l[SLOTS][GM];
    uint4 *stg = reinterpret_cast<uint4 *>(smem);
    float(*sm_acc)[GM][D] = reinterpret_cast<float(*)[GM][D]>(smem);

    const int tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int slot = warp * RPW + lane / TPR, sub = lane % TPR;
    const as_dec_block blk = as_dec_block_of<IDX>(p, GM);
    const int b = blk.b, kvh = blk.kvh, h0 = blk.h0, gcount = blk.gcount;
    const int len = blk.len, beg = blk.beg, end = blk.end;
    const int32_t *irow = blk.irow;
    const float *wrow = blk.wrow;

    float qf[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            qf[g][e] = (g < gcount) ? p.q[((int64_t)b * p.hq + h0 + g) * D + sub * 8 + e] * p.qscale
                                    : 0.f;
    const char *kb = as_row<DT>(p.k, b * p.sb + kvh * p.sh) + sub * 8 * (int)sizeof(typename as_elem<DT>::T);
    const char *vb = as_row<DT>(p.v, b * p.sb + kvh * p.sh) + sub * 8 * (int)sizeof(typename as_elem<DT>::T);
    const int64_t rowb = p.sn * (int64_t)sizeof(typename as_elem<DT>::T);

    float m[GM], l[GM], acc[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = AS_NEG_BIG;
        l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.f;
    }

    /* indices (and log-weights) of the next stage to issue */
    int pn[U];
    float pw[U];
    auto load_idx = [&](int base) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = base + u * SLOTS + slot;
            pn[u] = -1;
            pw[u] = 0.f;
            if (j < end) {
                if (IDX) {
                    pn[u] = __ldg(irow + j);
                    if (wrow) pw[u] = __ldg(wrow + j) * AS_LOG2E;
                } else {
                    pn[u] = j;
                }
            }
        }
    };
    /* issue stage copies into buffer buf; returns the mask of rows present, their log-weights */
    auto issue = [&](int buf, unsigned &okm, float *lw) {
        okm = 0;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int n = pn[u];
            lw[u] = pw[u];
            if (n >= 0 && n < len) {
                okm |= 1u << u;
                const int64_t rn = as_kv_row(p.kvp, b, n);
#pragma unroll
                for (int pc = 0; pc < PC; pc++) {
                    as_cp_async16(&stg[(((buf * 2 + 0) * U + u) * PC + pc) * 128 + tid],
                                  kb + rn * rowb + pc * 16);
                    as_cp_async16(&stg[(((buf * 2 + 1) * U + u) * PC + pc) * 128 + tid],
                                  vb + rn * rowb + pc * 16);
                }
            }
        }
        as_cp_commit();
    };

    /* okq[0] / lwq[0]: the stage being computed; okq[S-1]: the one being issued. Shifted each
     * step with constant indices so that they stay in registers. */
    unsigned okq[S] = {};
    float lwq[S][U] = {};
    int nb = beg; /* first row of the next stage to issue */
    if (beg < end) load_idx(nb);
#pragma unroll
    for (int st = 0; st < S - 1; st++) {
        if (nb < end) issue(st, okq[st], lwq[st]);
        else as_cp_commit(); /* empty group keeps the wait count uniform */
        nb += STEP;
        if (nb < end) load_idx(nb);
    }
    int buf = 0, ibuf = S - 1;
    for (int base = beg; base < end; base += STEP) {
        if (nb < end) {
            issue(ibuf, okq[S - 1], lwq[S - 1]);
            nb += STEP;
            if (nb < end) load_idx(nb);
        } else {
            okq[S - 1] = 0;
            as_cp_commit();
        }
        as_cp_wait<S - 1>();
        const unsigned ok_cur = okq[0];
        float s[U][GM];
        as_raw8<DT> vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            as_raw8<DT> kr;
            if (ok_cur & (1u << u)) {
                const uint4 *kp = &stg[(((buf * 2 + 0) * U + u) * PC) * 128 + tid];
                const uint4 *vp = &stg[(((buf * 2 + 1) * U + u) * PC) * 128 + tid];
                if constexpr (DT == 0) {
                    const uint4 k0 = kp[0], k1 = kp[128], v0 = vp[0], v1 = vp[128];
                    kr.a = *reinterpret_cast<const float4 *>(&k0);
                    kr.b = *reinterpret_cast<const float4 *>(&k1);
                    vr[u].a = *reinterpret_cast<const float4 *>(&v0);
                    vr[u].b = *reinterpret_cast<const float4 *>(&v1);
                } else {
                    kr.a = kp[0];
                    vr[u].a = vp[0];
                }
            } else {
                as_zero8<DT>(kr);
                as_zero8<DT>(vr[u]);
            }
            float kf[8];
            as_cvt8<DT>(kr, kf);
#pragma unroll
            for (int g = 0; g < GM; g++) {
                float t = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) t = fmaf(qf[g][e], kf[e], t);
                s[u][g] = t;
            }
        }
#pragma unroll
        for (int off = TPR / 2; off > 0; off >>= 1)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int g = 0; g < GM; g++) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
#pragma unroll
        for (int g = 0; g < GM; g++) {
            float mx = m[g];
#pragma unroll
            for (int u = 0; u < U; u++) {
                s[u][g] = (ok_cur & (1u << u)) ? s[u][g] + lwq[0][u] : -INFINITY;
                mx = fmaxf(mx, s[u][g]);
            }
            const float corr = exp2f(m[g] - mx);
            m[g] = mx;
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] *= corr;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vf[8];
            as_cvt8<DT>(vr[u], vf);
#pragma unroll
            for (int g = 0; g < GM; g++) {
                const float pr = exp2f(s[u][g] - m[g]);
                l[g] += pr;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] = fmaf(pr, vf[e], acc[g][e]);
            }
        }
#pragma unroll
        for (int st = 0; st < S - 1; st++) {
            okq[st] = okq[st + 1];
#pragma unroll
            for (int u = 0; u < U; u++) lwq[st][u] = lwq[st + 1][u];
        }
        buf = (buf + 1 == S) ? 0 : buf + 1;
        ibuf = (ibuf + 1 == S) ? 0 : ibuf + 1;
    }
    as_cp_wait_all();
    __syncthreads(); /* the staging buffers become the reduction buffer */

#pragma unroll
    for (int g = 0; g < GM; g++) {
#pragma unroll
        for (int e = 0; e < 8; e++) sm_acc[slot][g][sub * 8 + e] = acc[g][e];
        if (sub == 0) {
            sm_m[slot][g] = m[g];
            sm_l[slot][g] = l[g];
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < gcount * D; t += blockDim.x) {
        const int g = t / D, c = t % D;
        float M = AS_NEG_BIG;
#pragma unroll
        for (int s = 0; s < SLOTS; s++) M = fmaxf(M, sm_m[s][g]);
        float L = 0.f, A = 0.f;
#pragma unroll
        for (int s = 0; s < SLOTS; s++) {
            const float w = exp2f(sm_m[s][g] - M);
            L = fmaf(sm_l[s][g], w, L);
            A = fmaf(sm_acc[s][g][c], w, A);
        }
        as_dec_store<D>(p, blk, g, c, M, L, A);
    }
}

__global__ void as_k_merge(const float *part_o, const float *part_lse, int splits, int64_t rows,
                           int d, float *o, float *lse)
{
    const int64_t r = blockIdx.x;
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) M = fmaxf(M, part_lse[(int64_t)s * rows + r]);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        if (M == -INFINITY) {
            o[r * d + c] = 0.f;
            if (c == 0 && lse) lse[r] = -INFINITY;
            continue;
        }
        float W = 0.f, A = 0.f;
        for (int s = 0; s < splits; s++) {
            const float w = exp2f(part_lse[(int64_t)s * rows + r] - M);
            W += w;
            A = fmaf(w, part_o[((int64_t)s * rows + r) * d + c], A);
        }
        o[r * d + c] = A / W;
        if (c == 0 && lse) lse[r] = (M + log2f(W)) * AS_LN2;
    }
}

/* ---- scores and page bounds ------------------------------------------------------------------
 * Same walk as the decode kernel without V: s = scale q.k per row (BOUND: the Quest bound
 * sum_i max(q_i kmin_i, q_i kmax_i) per page, kmin/kmax rows in place of K). Optionally the
 * base-2 log-sum-exp of each (split, head) for the group aggregation of selection. */
struct as_sc_params {
    const void *k, *v; /* BOUND: kmin, kmax */
    int64_t sb, sh, sn;
    as_kv_pages kvp;   /* paged K (sb is then 0); never with BOUND */
    const int32_t *lens;
    int32_t page; /* BOUND: rows are pages of this many keys */
    const float *q;
    float scale;
    int32_t batch, hq, hkv, group, ngroups;
    int32_t chunk, splits;
    float *s;
    int64_t lds;
    float *part_lse2;
};

template <int DT, int D, int GM, bool BOUND>
__global__ void __launch_bounds__(128) as_k_scores(const as_sc_params p)
{
    constexpr int TPR = D / 8, RPW = 32 / TPR, SLOTS = 4 * RPW;
    constexpr int U = (GM >= 8 || BOUND) ? 2 : 4;
    __shared__ float sm_m[SLOTS][GM], sm_l[SLOTS][GM];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int slot = warp * RPW + lane / TPR, sub = lane % TPR;
    const int b = blockIdx.z, split = blockIdx.x, unit = blockIdx.y;
    const int kvh = unit / p.ngroups, gi = unit % p.ngroups;
    const int h0 = kvh * p.group + gi * GM;
    const int gcount = min(GM, p.group - gi * GM);
    const int len = p.lens[b];
    const int nrows = BOUND ? (len + p.page - 1) / p.page : len;
    const int beg = split * p.chunk;
    const int end = min(nrows, beg + p.chunk);
    float qf[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            qf[g][e] = (g < gcount) ? p.q[((int64_t)b * p.hq + h0 + g) * D + sub * 8 + e] : 0.f;
    const void *kb = as_row<DT>(p.k, b * p.sb + kvh * p.sh);
    const void *vb = BOUND ? as_row<DT>(p.v, b * p.sb + kvh * p.sh) : nullptr;
    float m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = AS_NEG_BIG;
        l[g] = 0.f;
    }
    /* registers double-buffered: the next rows' loads are in flight during this compute */
    as_raw8<DT> kn[U], vn[BOUND ? U : 1];
    auto load = [&](int base) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j = base + u * SLOTS + slot;
            if (j < end) {
                const int64_t rj = BOUND ? (int64_t)j : as_kv_row(p.kvp, b, j);
                as_load8<DT>(as_row<DT>(kb, rj * p.sn), sub * 8, kn[u]);
                if (BOUND) as_load8<DT>(as_row<DT>(vb, rj * p.sn), sub * 8, vn[BOUND ? u : 0]);
            } else {
                as_zero8<DT>(kn[u]);
                if (BOUND) as_zero8<DT>(vn[BOUND ? u : 0]);
            }
        }
    };
    if (beg < end) load(beg);
    for (int base = beg; base < end; base += SLOTS * U) {
        as_raw8<DT> kr[U], vr[BOUND ? U : 1];
#pragma unroll
        for (int u = 0; u < U; u++) {
            kr[u] = kn[u];
            if (BOUND) vr[BOUND ? u : 0] = vn[BOUND ? u : 0];
        }
        if (base + SLOTS * U < end) load(base + SLOTS * U);
        bool ok[U];
#pragma unroll
        for (int u = 0; u < U; u++) ok[u] = base + u * SLOTS + slot < end;
        float s[U][GM];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[8], vf[8];
            as_cvt8<DT>(kr[u], kf);
            if (BOUND) as_cvt8<DT>(vr[BOUND ? u : 0], vf);
#pragma unroll
            for (int g = 0; g < GM; g++) {
                float t = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    if (BOUND)
                        t += fmaxf(qf[g][e] * kf[e], qf[g][e] * vf[e]);
                    else
                        t = fmaf(qf[g][e], kf[e], t);
                }
                s[u][g] = t;
            }
        }
#pragma unroll
        for (int off = TPR / 2; off > 0; off >>= 1)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int g = 0; g < GM; g++) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], off);
        if (sub == 0) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (!ok[u]) continue;
                const int j = base + u * SLOTS + slot;
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    if (g >= gcount) break;
                    const float v = s[u][g] * p.scale;
                    p.s[((int64_t)b * p.hq + h0 + g) * p.lds + j] = v;
                    if (p.part_lse2) {
                        const float x2 = v * AS_LOG2E;
                        const float mx = fmaxf(m[g], x2);
                        l[g] = l[g] * exp2f(m[g] - mx) + exp2f(x2 - mx);
                        m[g] = mx;
                    }
                }
            }
        }
    }
    if (!p.part_lse2) return;
    if (sub == 0) {
#pragma unroll
        for (int g = 0; g < GM; g++) {
            sm_m[slot][g] = m[g];
            sm_l[slot][g] = l[g];
        }
    }
    __syncthreads();
    if (threadIdx.x < gcount) {
        const int g = threadIdx.x;
        float M = AS_NEG_BIG, L = 0.f;
        for (int s = 0; s < SLOTS; s++) M = fmaxf(M, sm_m[s][g]);
        for (int s = 0; s < SLOTS; s++) L += sm_l[s][g] * exp2f(sm_m[s][g] - M);
        p.part_lse2[((int64_t)split * p.batch + b) * p.hq + h0 + g] = L > 0.f ? M + log2f(L) : -INFINITY;
    }
}

/* ---- host side ------------------------------------------------------------------------------ */
static int gm_for_group(int group)
{
    return group == 1 ? 1 : (group <= 4 ? 4 : 8);
}
static int slots_for_d(int d)
{
    return 4 * (32 / (d / 8));
}

#define AS_DISPATCH_GM(gm, ...)                                                                \
    switch (gm) {                                                                              \
    case 1: { constexpr int GM = 1; __VA_ARGS__; } break;                                      \
    case 4: { constexpr int GM = 4; __VA_ARGS__; } break;                                      \
    default: { constexpr int GM = 8; __VA_ARGS__; } break;                                     \
    }
#define AS_DISPATCH_D(d, ...)                                                                  \
    switch (d) {                                                                               \
    case 64: { constexpr int D = 64; __VA_ARGS__; } break;                                     \
    case 128: { constexpr int D = 128; __VA_ARGS__; } break;                                   \
    default: { constexpr int D = 256; __VA_ARGS__; } break;                                    \
    }
#define AS_DISPATCH_DT(dt, ...)                                                                \
    switch (dt) {                                                                              \
    case AS_GPU_F32: { constexpr int DT = 0; __VA_ARGS__; } break;                             \
    case AS_GPU_F16: { constexpr int DT = 1; __VA_ARGS__; } break;                             \
    default: { constexpr int DT = 2; __VA_ARGS__; } break;                                     \
    }

/* Kernel variants (as_gpu.h): 0 the tuned kernel (tensor cores for 16-bit K/V and d <= 128,
 * as_gpu_decode_tc.cu; else the CUDA-core split kernel), 1 the simple one (no split, one query
 * head per block), 2 and 3 the CUDA-core split kernel with a 2- and a 3-stage copy pipeline
 * (gpu/bench/NOTES.md has the measurements that chose them). Pipeline depth of each: */
static const int dec_stages[AS_GPU_VARIANTS] = {2, 2, 2, 3};

#define AS_DISPATCH_S(st, ...)                                                                 \
    switch (st) {                                                                              \
    case 2: { constexpr int S = 2; __VA_ARGS__; } break;                                       \
    default: { constexpr int S = 3; __VA_ARGS__; } break;                                      \
    }

/* One decode instance: its occupancy (per_sm != NULL) or its launch. */
template <int DT, int D, int GM, bool IDX, int S>
static as_status dec_instance(as_gpu_ctx *c, const as_dec_params &p, dim3 grid, int *per_sm,
                              char *err)
{
    return as_dec_launch(c, as_k_decode<DT, D, GM, IDX, S>, as_dec_smem<DT, D, GM, S>::BYTES, p,
                         grid, per_sm, "decode", err);
}

static as_status dec_dispatch(as_gpu_ctx *c, const as_gpu_attn *a, int gm, bool idx, int stages,
                              const as_dec_params &p, dim3 grid, int *per_sm, char *err)
{
    AS_DISPATCH_DT(a->kv_dtype, AS_DISPATCH_D(a->d, AS_DISPATCH_GM(gm, AS_DISPATCH_S(stages,
        return idx ? dec_instance<DT, D, GM, true, S>(c, p, grid, per_sm, err)
                   : dec_instance<DT, D, GM, false, S>(c, p, grid, per_sm, err)))));
    return AS_OK;
}

static as_status run_decode(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_sel *sel,
                            float *o, float *lse, int variant, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!o) return as_err_set(err, AS_ERR_USAGE, "gpu decode: output pointer is NULL");
    if (variant < 0 || variant >= AS_GPU_VARIANTS)
        return as_err_set(err, AS_ERR_USAGE, "gpu decode: no kernel variant %d", variant);
    if (sel) {
        if (!sel->idx || !sel->count || sel->kcap < 0)
            return as_err_set(err, AS_ERR_USAGE, "gpu decode: selection lacks idx/count");
        if (sel->mode != AS_GPU_SEL_KV && sel->mode != AS_GPU_SEL_Q)
            return as_err_set(err, AS_ERR_USAGE, "gpu decode: bad selection mode");
    }
    as_dec_params p;
    p.k = a->k;
    p.v = a->v;
    p.kvp = as_kv_pages_of(a);
    p.sb = p.kvp.blocks ? 0 : a->stride_b;
    p.sh = a->stride_h;
    p.sn = a->stride_n;
    p.lens = a->lens;
    p.q = a->q;
    p.qscale = a->scale * AS_LOG2E;
    p.batch = a->batch;
    p.hq = a->hq;
    p.hkv = a->hkv;
    p.group = a->hq / a->hkv;
    p.sel_per_q = sel && sel->mode == AS_GPU_SEL_Q;
    p.idx = sel ? sel->idx : nullptr;
    p.count = sel ? sel->count : nullptr;
    p.logw = sel ? sel->logw : nullptr;
    p.kcap = sel ? sel->kcap : 0;
    p.o = o;
    p.lse = lse;
    p.part_o = p.part_lse = nullptr;

    int gm, nunits;
    const int stages = dec_stages[variant];
    const bool tc = variant == 0 && as_gpu_tc_supported(a->kv_dtype, a->d);
    if (variant == 1 || p.sel_per_q) {
        gm = 1;
        p.unit_per_q = 1;
        p.ngroups = p.group;
        nunits = a->hq;
    } else {
        gm = tc ? AS_TC_HEADS : gm_for_group(p.group);
        p.unit_per_q = 0;
        p.ngroups = (p.group + gm - 1) / gm;
        nunits = a->hkv * p.ngroups;
    }
    const int64_t rows_max = sel ? sel->kcap : a->nmax;
    int64_t splits = 1;
    if (variant != 1) {
        /* one full wave: as many equal chunks as the resident blocks allow */
        int per_sm = 0;
        if (tc) AS_TRY(as_gpu_tc_decode(c, a, sel != nullptr, &p, dim3(), &per_sm, err));
        else AS_TRY(dec_dispatch(c, a, gm, sel != nullptr, stages, p, dim3(), &per_sm, err));
        if (per_sm < 1) per_sm = 1;
        const int64_t units = (int64_t)a->batch * nunits;
        const int64_t target = (int64_t)c->sms * per_sm;
        splits = target / units;
        const int64_t maxs = (rows_max + 255) / 256;
        if (splits > maxs) splits = maxs;
        if (splits > 2048) splits = 2048;
        if (splits < 1) splits = 1;
    }
    const int64_t step = tc ? AS_TC_STEP : slots_for_d(a->d) * 4;
    int64_t chunk = (rows_max + splits - 1) / splits;
    chunk = ((chunk + step - 1) / step) * step;
    if (chunk < step) chunk = step;
    splits = (rows_max + chunk - 1) / chunk;
    if (splits < 1) splits = 1;
    if (chunk > INT32_MAX) return as_err_set(err, AS_ERR_USAGE, "gpu decode: rows too many");
    p.chunk = (int32_t)chunk;
    p.splits = (int32_t)splits;
    const int64_t rows = (int64_t)a->batch * a->hq;
    if (splits > 1) {
        void *ws;
        const size_t bo = (size_t)splits * rows * a->d * sizeof(float);
        const size_t bl = (size_t)splits * rows * sizeof(float);
        AS_TRY(as_gpu_ws(c, AS_WS_DECODE, bo + bl, &ws, err));
        p.part_o = (float *)ws;
        p.part_lse = (float *)((char *)ws + bo);
    }
    dim3 grid((unsigned)splits, (unsigned)nunits, (unsigned)a->batch);
    if (tc) AS_TRY(as_gpu_tc_decode(c, a, sel != nullptr, &p, grid, nullptr, err));
    else AS_TRY(dec_dispatch(c, a, gm, sel != nullptr, stages, p, grid, nullptr, err));
    if (splits > 1) {
        as_k_merge<<<(unsigned)rows, a->d, 0, c->stream>>>(p.part_o, p.part_lse, (int)splits,
                                                           rows, a->d, o, lse);
        AS_CU_LAUNCHED("decode merge");
    }
    return AS_OK;
}

extern "C" as_status as_gpu_decode_dense(as_gpu_ctx *c, const as_gpu_attn *a, float *o,
                                         float *lse, int variant, char *err)
{
    return run_decode(c, a, nullptr, o, lse, variant, err);
}

extern "C" as_status as_gpu_decode_sparse(as_gpu_ctx *c, const as_gpu_attn *a,
                                          const as_gpu_sel *sel, float *o, float *lse,
                                          int variant, char *err)
{
    if (!sel) return as_err_set(err, AS_ERR_USAGE, "gpu decode: selection is NULL");
    return run_decode(c, a, sel, o, lse, variant, err);
}

static void plan_scores(as_gpu_ctx *c, const as_gpu_attn *a, int64_t rows_max, int *gm,
                        int *ngroups, int64_t *chunk, int64_t *splits)
{
    const int group = a->hq / a->hkv;
    *gm = gm_for_group(group);
    *ngroups = (group + *gm - 1) / *gm;
    const int64_t units = (int64_t)a->batch * a->hkv * *ngroups;
    const int64_t target = (int64_t)c->sms * 8;
    int64_t s = (target + units - 1) / units;
    const int64_t maxs = (rows_max + 255) / 256;
    if (s > maxs) s = maxs;
    if (s > 2048) s = 2048;
    if (s < 1) s = 1;
    const int64_t step = slots_for_d(a->d) * 4;
    int64_t ch = (rows_max + s - 1) / s;
    ch = ((ch + step - 1) / step) * step;
    if (ch < step) ch = step;
    s = (rows_max + ch - 1) / ch;
    if (s < 1) s = 1;
    *chunk = ch;
    *splits = s;
}

int32_t as_gpu_scores_splits(as_gpu_ctx *c, const as_gpu_attn *a)
{
    int gm, ng;
    int64_t ch, s;
    plan_scores(c, a, a->nmax, &gm, &ng, &ch, &s);
    return (int32_t)s;
}

as_status as_gpu_launch_scores(as_gpu_ctx *c, const as_gpu_attn *a, float *s, int64_t lds,
                               float *part_lse2, int32_t *splits_out, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!s || lds < a->nmax) return as_err_set(err, AS_ERR_USAGE, "gpu scores: bad output");
    as_sc_params p;
    int gm, ngroups;
    int64_t chunk, splits;
    plan_scores(c, a, a->nmax, &gm, &ngroups, &chunk, &splits);
    p.k = a->k;
    p.v = nullptr;
    p.kvp = as_kv_pages_of(a);
    p.sb = p.kvp.blocks ? 0 : a->stride_b;
    p.sh = a->stride_h;
    p.sn = a->stride_n;
    p.lens = a->lens;
    p.page = 1;
    p.q = a->q;
    p.scale = a->scale;
    p.batch = a->batch;
    p.hq = a->hq;
    p.hkv = a->hkv;
    p.group = a->hq / a->hkv;
    p.ngroups = ngroups;
    p.chunk = (int32_t)chunk;
    p.splits = (int32_t)splits;
    p.s = s;
    p.lds = lds;
    p.part_lse2 = part_lse2;
    if (splits_out) *splits_out = (int32_t)splits;
    dim3 grid((unsigned)splits, (unsigned)(a->hkv * ngroups), (unsigned)a->batch);
    AS_DISPATCH_DT(a->kv_dtype, AS_DISPATCH_D(a->d, AS_DISPATCH_GM(gm,
        as_k_scores<DT, D, GM, false><<<grid, 128, 0, c->stream>>>(p))));
    AS_CU_LAUNCHED("scores");
    return AS_OK;
}

/* ---- scores on tensor cores (the selections' score pass) ------------------------------------ */
static as_status plan_scores_tc(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *pg,
                               as_dec_params *p, dim3 *grid, char *err)
{
    const int64_t rows_max = pg ? pg->npages : a->nmax;
    memset(p, 0, sizeof *p);
    p->k = a->k;
    p->v = a->v;
    p->kvp = as_kv_pages_of(a);
    p->sb = p->kvp.blocks ? 0 : a->stride_b;
    p->sh = a->stride_h;
    p->sn = a->stride_n;
    if (pg) { /* rows are pages: k = kmax, v = kmin (their own contiguous arrays) */
        p->kvp = as_kv_pages();
        p->k = pg->kmax;
        p->v = pg->kmin;
        p->sn = a->d;
        p->sh = (int64_t)pg->npages * a->d;
        p->sb = (int64_t)a->hkv * p->sh;
        p->page = pg->page;
    }
    p->lens = a->lens;
    p->q = a->q;
    p->qscale = a->scale * AS_LOG2E;
    p->batch = a->batch;
    p->hq = a->hq;
    p->hkv = a->hkv;
    p->group = a->hq / a->hkv;
    p->unit_per_q = 0;
    p->ngroups = (p->group + AS_TC_HEADS - 1) / AS_TC_HEADS;
    const int64_t units = (int64_t)a->batch * a->hkv * p->ngroups;
    int per_sm = 0;
    AS_TRY(as_gpu_tc_scores(c, a, p, dim3(), &per_sm, err));
    if (per_sm < 1) per_sm = 1;
    int64_t splits = (int64_t)c->sms * per_sm / units;
    const int64_t maxs = (rows_max + 255) / 256;
    if (splits > maxs) splits = maxs;
    if (splits > 2048) splits = 2048;
    if (splits < 1) splits = 1;
    int64_t chunk = (rows_max + splits - 1) / splits;
    chunk = ((chunk + AS_TC_STEP - 1) / AS_TC_STEP) * AS_TC_STEP;
    if (chunk < AS_TC_STEP) chunk = AS_TC_STEP;
    splits = (rows_max + chunk - 1) / chunk;
    if (splits < 1) splits = 1;
    p->chunk = (int32_t)chunk;
    p->splits = (int32_t)splits;
    *grid = dim3((unsigned)splits, (unsigned)(a->hkv * p->ngroups), (unsigned)a->batch);
    return AS_OK;
}

int32_t as_gpu_scores_tc_splits(as_gpu_ctx *c, const as_gpu_attn *a)
{
    as_dec_params p;
    dim3 grid;
    char err[AS_ERR_LEN];
    return plan_scores_tc(c, a, nullptr, &p, &grid, err) == AS_OK ? p.splits : 1;
}

as_status as_gpu_launch_scores_tc(as_gpu_ctx *c, const as_gpu_attn *a, float *s2, int64_t lds,
                                  float *part_lse2, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!s2 || lds < a->nmax || lds % 4) return as_err_set(err, AS_ERR_USAGE, "gpu scores: bad output");
    as_dec_params p;
    dim3 grid;
    AS_TRY(plan_scores_tc(c, a, nullptr, &p, &grid, err));
    p.sc = s2;
    p.sc_lds = lds;
    p.part_lse = part_lse2;
    return as_gpu_tc_scores(c, a, &p, grid, nullptr, err);
}

as_status as_gpu_launch_bounds_tc(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *pg,
                                  float *ub, float *agg, int64_t ldu, const as_tk_ws *tk,
                                  int32_t k, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!pg || !pg->kmin || !pg->kmax || pg->page < 1 || pg->dtype != a->kv_dtype)
        return as_err_set(err, AS_ERR_USAGE, "gpu page bounds: pages not built for this cache");
    if (ldu < pg->npages || ldu % 4 || (agg ? !tk : !ub))
        return as_err_set(err, AS_ERR_USAGE, "gpu page bounds: bad output");
    as_dec_params p;
    dim3 grid;
    AS_TRY(plan_scores_tc(c, a, pg, &p, &grid, err));
    if (agg && p.ngroups != 1)
        return as_err_set(err, AS_ERR_USAGE, "gpu page bounds: fused group max needs group <= %d",
                          AS_TC_HEADS);
    p.sc = ub;
    p.sc_lds = ldu;
    p.agg = agg;
    if (tk) p.tk = *tk;
    p.tk_k = k;
    return as_gpu_tc_scores(c, a, &p, grid, nullptr, err);
}

extern "C" as_status as_gpu_scores(as_gpu_ctx *c, const as_gpu_attn *a, float *s, int64_t lds,
                                   char *err)
{
    return as_gpu_launch_scores(c, a, s, lds, nullptr, nullptr, err);
}

as_status as_gpu_launch_bounds(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *pg,
                               float *ub, int64_t ldu, char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!pg || !pg->kmin || !pg->kmax || pg->page < 1 || pg->dtype != a->kv_dtype)
        return as_err_set(err, AS_ERR_USAGE, "gpu page bounds: pages not built for this cache");
    if (!ub || ldu < pg->npages) return as_err_set(err, AS_ERR_USAGE, "gpu page bounds: bad output");
    as_sc_params p;
    int gm, ngroups;
    int64_t chunk, splits;
    plan_scores(c, a, pg->npages, &gm, &ngroups, &chunk, &splits);
    p.k = pg->kmin;
    p.v = pg->kmax;
    p.kvp = as_kv_pages();
    p.sn = a->d;
    p.sh = (int64_t)pg->npages * a->d;
    p.sb = (int64_t)a->hkv * p.sh;
    p.lens = a->lens;
    p.page = pg->page;
    p.q = a->q;
    p.scale = a->scale;
    p.batch = a->batch;
    p.hq = a->hq;
    p.hkv = a->hkv;
    p.group = a->hq / a->hkv;
    p.ngroups = ngroups;
    p.chunk = (int32_t)chunk;
    p.splits = (int32_t)splits;
    p.s = ub;
    p.lds = ldu;
    p.part_lse2 = nullptr;
    dim3 grid((unsigned)splits, (unsigned)(a->hkv * ngroups), (unsigned)a->batch);
    AS_DISPATCH_DT(a->kv_dtype, AS_DISPATCH_D(a->d, AS_DISPATCH_GM(gm,
        as_k_scores<DT, D, GM, true><<<grid, 128, 0, c->stream>>>(p))));
    AS_CU_LAUNCHED("page bounds");
    return AS_OK;
}

extern "C" as_status as_gpu_page_bounds(as_gpu_ctx *c, const as_gpu_attn *a,
                                        const as_gpu_pages *p, float *ub, int64_t ldu, char *err)
{
    return as_gpu_launch_bounds(c, a, p, ub, ldu, err);
}
