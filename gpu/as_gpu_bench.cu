/* as_gpu_bench.cu: the benchmark harness behind `attnscope gpu bench` (docs/gpu.md).
 *
 * Method: CUDA events around every launch, warm-up launches first, the median of `reps` timed
 * launches; inputs rotate among enough copies that together they exceed 4x the L2 cache, so no
 * launch finds its K/V in L2; a device-to-device copy timed in the same run sets the bandwidth
 * ceiling (bytes read + written). Every row reports the bytes the operation must move (each
 * input read once, each output written once), the achieved GB/s and its share of the copy's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_gpu_impl.h"

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Time f: each rotation set r < nrot is captured once into a CUDA graph (so host launch
 * overhead stays out of the numbers, as for the baselines), then reps launches of the graphs in
 * turn are timed with events; median, min, max in microseconds. Falls back to eager launches
 * when capture fails. */
static int g_use_graphs = 1;
static int g_last_graphed = 0; /* whether the last time_it ran CUDA graphs */

template <class F>
static as_status time_it(as_gpu_ctx *c, int nrot, int warmup, int reps, F f, double *med,
                         double *mn, double *mx, char *err)
{
    const int nw = warmup > nrot ? warmup : nrot;
    for (int i = 0; i < nw; i++) AS_TRY(f(i % nrot)); /* grows workspaces before capture */
    AS_CU(cudaStreamSynchronize(c->stream));
    cudaGraphExec_t *ge = (cudaGraphExec_t *)calloc((size_t)nrot, sizeof(cudaGraphExec_t));
    cudaEvent_t *ev = (cudaEvent_t *)calloc((size_t)reps * 2, sizeof(cudaEvent_t));
    double *t = (double *)calloc((size_t)reps, sizeof(double));
    if (!ev || !t || !ge) {
        free(ev);
        free(t);
        free(ge);
        return as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
    }
    int graphs = g_use_graphs;
    for (int r = 0; r < nrot && graphs; r++) {
        cudaGraph_t g = NULL;
        if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
            graphs = 0;
            break;
        }
        const as_status fs = f(r);
        const cudaError_t ce = cudaStreamEndCapture(c->stream, &g);
        if (fs != AS_OK || ce != cudaSuccess || !g ||
            cudaGraphInstantiate(&ge[r], g, 0) != cudaSuccess)
            graphs = 0;
        if (g) cudaGraphDestroy(g);
    }
    if (!graphs) {
        (void)cudaGetLastError();
        for (int r = 0; r < nrot; r++)
            if (ge[r]) cudaGraphExecDestroy(ge[r]);
        memset(ge, 0, (size_t)nrot * sizeof *ge);
    }
    g_last_graphed = graphs;
    auto launch = [&](int i) -> as_status {
        if (graphs) {
            AS_CU(cudaGraphLaunch(ge[i % nrot], c->stream));
            return AS_OK;
        }
        return f(i % nrot);
    };
    as_status st = AS_OK;
    for (int i = 0; st == AS_OK && i < nrot; i++) st = launch(i);
    int made = 0;
    for (; st == AS_OK && made < 2 * reps; made++)
        if (cudaEventCreate(&ev[made]) != cudaSuccess) {
            st = as_err_set(err, AS_ERR_IO, "bench: cudaEventCreate failed");
            break;
        }
    if (st == AS_OK && cudaStreamSynchronize(c->stream) != cudaSuccess)
        st = as_err_set(err, AS_ERR_IO, "bench: %s", cudaGetErrorString(cudaGetLastError()));
    for (int i = 0; st == AS_OK && i < reps; i++) {
        cudaEventRecord(ev[2 * i], c->stream);
        st = launch(nrot + i);
        cudaEventRecord(ev[2 * i + 1], c->stream);
    }
    if (st == AS_OK && cudaStreamSynchronize(c->stream) != cudaSuccess)
        st = as_err_set(err, AS_ERR_IO, "bench: %s", cudaGetErrorString(cudaGetLastError()));
    for (int i = 0; st == AS_OK && i < reps; i++) {
        float ms = 0.f;
        if (cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]) != cudaSuccess) {
            st = as_err_set(err, AS_ERR_IO, "bench: cudaEventElapsedTime failed");
            break;
        }
        t[i] = ms * 1e3;
    }
    if (st == AS_OK) {
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        *med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
        *mn = t[0];
        *mx = t[reps - 1];
    }
    for (int i = 0; i < made; i++) cudaEventDestroy(ev[i]);
    for (int r = 0; r < nrot; r++)
        if (ge[r]) cudaGraphExecDestroy(ge[r]);
    free(ge);
    free(ev);
    free(t);
    return st;
}

/* --only NAME: the shape rows other than NAME are neither timed nor reported (for profilers) */
static const char *g_only = NULL;

/* time_it for a row named name: skipped (AS_OK, *med = -1) when --only names another row */
template <class F>
static as_status time_row(const char *name, as_gpu_ctx *c, int nrot, int warmup, int reps, F f,
                          double *med, double *mn, double *mx, char *err)
{
    if (g_only && strcmp(g_only, name) != 0) {
        *med = *mn = *mx = -1;
        return AS_OK;
    }
    return time_it(c, nrot, warmup, reps, f, med, mn, mx, err);
}

__device__ __forceinline__ uint4 as_bench_ld(const uint4 *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__global__ void as_k_bench_idx(int32_t *idx, int32_t *count, int k, int n, uint64_t seed)
{
    const int r = blockIdx.y;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k) return;
    const int64_t lo = (int64_t)j * n / k, hi = (int64_t)(j + 1) * n / k;
    uint64_t x = seed ^ ((uint64_t)r << 32) ^ (uint64_t)j;
    x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
    x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    idx[(int64_t)r * k + j] = (int32_t)(lo + (int64_t)(x % (uint64_t)(hi - lo)));
    if (j == 0) count[r] = k;
}

/* The read-only ceiling: every byte of src read once with 16-byte loads; one word per block
 * written (so the loads are not dropped). */
__global__ void as_k_bench_read(const uint4 *src, size_t n16, uint32_t *sink)
{
    uint32_t acc = 0;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = as_bench_ld(src + i + u * stride);
#pragma unroll
        for (int u = 0; u < 4; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) {
        const uint4 v = as_bench_ld(src + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    acc = __reduce_xor_sync(0xffffffffu, acc);
    if ((threadIdx.x & 31) == 0) atomicXor(&sink[blockIdx.x], acc);
}

typedef struct {
    as_gpu_bench_row *v;
    size_t n, cap;
} rowvec;

static as_status push(rowvec *rv, const as_gpu_bench_row *r, const as_gpu_bench_cfg *cfg,
                      char *err)
{
    if (r->us < 0) return AS_OK; /* not timed (--only) */
    if (rv->n == rv->cap) {
        size_t nc = rv->cap ? 2 * rv->cap : 64;
        as_gpu_bench_row *nv = (as_gpu_bench_row *)realloc(rv->v, nc * sizeof *nv);
        if (!nv) return as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
        rv->v = nv;
        rv->cap = nc;
    }
    rv->v[rv->n++] = *r;
    if (cfg->progress) cfg->progress(r, cfg->user);
    return AS_OK;
}

static void fill_row(as_gpu_bench_row *r, const char *method, int b, int hq, int hkv, int d,
                     int n, double sp, double med, double mn, double mx, int reps, double bytes,
                     double copy_gbps, double read_gbps)
{
    memset(r, 0, sizeof *r);
    snprintf(r->method, sizeof r->method, "%s", method);
    r->batch = b;
    r->hq = hq;
    r->hkv = hkv;
    r->d = d;
    r->n = n;
    r->sparsity = sp;
    r->us = med;
    r->us_min = mn;
    r->us_max = mx;
    r->launches = reps;
    r->bytes = bytes;
    r->gbps = med > 0 ? bytes / (med * 1e3) : 0;
    r->pct_copy = copy_gbps > 0 ? 100.0 * r->gbps / copy_gbps : 0;
    r->pct_read = read_gbps > 0 ? 100.0 * r->gbps / read_gbps : 0;
    r->graphed = g_last_graphed;
}

/* One shape: R rotating copies of (K, V, q), their page metadata, outputs. */
typedef struct {
    int nsets;
    void **kv, **vv; /* vv[s]: V in its own allocation (split_kv), else NULL: V follows K */
    float **q;
    as_gpu_pages *pages, *pages32;
    int32_t *lens;
    float *o, *lse;
    int32_t bs;      /* paged: keys per block (0: contiguous) */
    int32_t *blocks; /* paged: the block table [B][N / bs], one for every set */
} shape_bufs;

static void free_shape(shape_bufs *s)
{
    for (int i = 0; i < s->nsets; i++) {
        if (s->kv) as_gpu_free(s->kv[i]);
        if (s->vv) as_gpu_free(s->vv[i]);
        if (s->q) as_gpu_free(s->q[i]);
        if (s->pages) as_gpu_pages_free(&s->pages[i]);
        if (s->pages32) as_gpu_pages_free(&s->pages32[i]);
    }
    free(s->kv);
    free(s->vv);
    free(s->q);
    free(s->pages);
    free(s->pages32);
    as_gpu_free(s->lens);
    as_gpu_free(s->blocks);
    as_gpu_free(s->o);
    as_gpu_free(s->lse);
    memset(s, 0, sizeof *s);
}

static as_gpu_attn attn_of(const shape_bufs *s, int set, int b, int hq, int hkv, int d, int n)
{
    as_gpu_attn a;
    memset(&a, 0, sizeof a);
    a.batch = b;
    a.hq = hq;
    a.hkv = hkv;
    a.d = d;
    a.kv_dtype = AS_GPU_BF16;
    a.k = s->kv[set];
    a.stride_n = d;
    a.stride_h = (int64_t)n * d;
    a.stride_b = (int64_t)hkv * n * d;
    a.v = s->vv && s->vv[set] ? s->vv[set] : (const char *)s->kv[set] + (size_t)b * a.stride_b * 2;
    if (s->bs > 0) { /* the same bytes as a pool of blocks [B N / bs][hkv][bs][d] */
        a.stride_h = (int64_t)s->bs * d;
        a.stride_block = (int64_t)hkv * s->bs * d;
        a.stride_b = 0;
        a.blocks = s->blocks;
        a.block_size = s->bs;
        a.max_blocks = n / s->bs;
    }
    a.lens = s->lens;
    a.nmax = n;
    a.q = s->q[set];
    a.scale = 1.0f / sqrtf((float)d);
    return a;
}

extern "C" as_status as_gpu_bench(as_gpu_ctx *c, const as_gpu_bench_cfg *cfg,
                                  as_gpu_bench_row **rows_out, size_t *n_rows, char *err)
{
    *rows_out = NULL;
    *n_rows = 0;
    const int reps = cfg->reps < 20 ? 20 : cfg->reps;
    const int warm = cfg->warmup < 2 ? 2 : cfg->warmup;
    rowvec rv = {NULL, 0, 0};
    as_status st = AS_OK;
    g_only = cfg->only && cfg->only[0] ? cfg->only : NULL;

    /* bandwidth ceiling: device-to-device copy of 2 GiB (read 2 + write 2) */
    {
        const size_t cb = (size_t)2 << 30;
        void *src = NULL, *dst = NULL;
        st = as_gpu_malloc(&src, cb, err);
        if (st == AS_OK) st = as_gpu_malloc(&dst, cb, err);
        if (st == AS_OK) st = as_gpu_fill_random(c, src, AS_GPU_F32, cb / 4, 7, -1.f, 1.f, err);
        double med = 0, mn = 0, mx = 0;
        g_use_graphs = 0; /* the copy as the runtime issues it (a graph copy node is slower) */
        if (st == AS_OK)
            st = time_it(c, 1, warm, reps, [&](int) -> as_status {
                AS_CU(cudaMemcpyAsync(dst, src, cb, cudaMemcpyDeviceToDevice, c->stream));
                return AS_OK;
            }, &med, &mn, &mx, err);
        g_use_graphs = 1;
        as_gpu_bench_row r;
        fill_row(&r, "copy", 0, 0, 0, 0, 0, 1, med, mn, mx, reps, 2.0 * cb, 0, 0);
        r.pct_copy = 100.0;
        const double copy_gbps = r.gbps;
        if (st == AS_OK) st = push(&rv, &r, cfg, err);
        /* the read-only ceiling: a plain kernel reading the same 2 GiB */
        double rmed = 0, rmn = 0, rmx = 0;
        const unsigned rblocks = (unsigned)c->sms * 8;
        if (st == AS_OK)
            st = time_it(c, 1, warm, reps, [&](int) -> as_status {
                as_k_bench_read<<<rblocks, 256, 0, c->stream>>>((const uint4 *)src, cb / 16,
                                                                (uint32_t *)dst);
                AS_CU_LAUNCHED("bench read");
                return AS_OK;
            }, &rmed, &rmn, &rmx, err);
        as_gpu_free(src);
        as_gpu_free(dst);
        if (st != AS_OK) goto fail;
        fill_row(&r, "read", 0, 0, 0, 0, 0, 1, rmed, rmn, rmx, reps, (double)cb, copy_gbps, 0);
        r.pct_read = 100.0;
        const double read_gbps = r.gbps;
        if ((st = push(&rv, &r, cfg, err)) != AS_OK) goto fail;

        for (int di = 0; di < cfg->n_ds; di++)
            for (int bi = 0; bi < cfg->n_batches; bi++)
                for (int ni = 0; ni < cfg->n_ns; ni++) {
                    const int d = cfg->ds[di], B = cfg->batches[bi], N = cfg->ns[ni];
                    const int hq = cfg->hq, hkv = cfg->hkv;
                    const double kv_bytes = 2.0 * B * hkv * (double)N * d * 2;
                    if (kv_bytes > cfg->max_gib * 1073741824.0) continue;
                    const double target = 4.0 * (double)c->l2;
                    int R = kv_bytes >= target ? 1 : (int)ceil(target / kv_bytes);
                    if (R > 64) R = 64;
                    shape_bufs sb;
                    memset(&sb, 0, sizeof sb);
                    sb.nsets = R;
                    sb.kv = (void **)calloc((size_t)R, sizeof(void *));
                    sb.vv = (void **)calloc((size_t)R, sizeof(void *));
                    sb.q = (float **)calloc((size_t)R, sizeof(float *));
                    sb.pages = (as_gpu_pages *)calloc((size_t)R, sizeof(as_gpu_pages));
                    sb.pages32 = (as_gpu_pages *)calloc((size_t)R, sizeof(as_gpu_pages));
                    if (!sb.kv || !sb.vv || !sb.q || !sb.pages || !sb.pages32) {
                        st = as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
                        free_shape(&sb);
                        goto fail;
                    }
                    const size_t qn = (size_t)B * hq * d;
                    st = as_gpu_malloc((void **)&sb.lens, (size_t)B * 4, err);
                    if (st == AS_OK) st = as_gpu_malloc((void **)&sb.o, qn * 4, err);
                    if (st == AS_OK) st = as_gpu_malloc((void **)&sb.lse, (size_t)B * hq * 4, err);
                    if (st == AS_OK && cfg->paged > 0) {
                        if (N % cfg->paged) {
                            free_shape(&sb);
                            continue;
                        }
                        /* each sequence's blocks: a random permutation of the pool (Fisher-Yates,
                         * fixed seed), so that logically adjacent blocks are not adjacent */
                        sb.bs = cfg->paged;
                        const int64_t nbk = (int64_t)B * (N / sb.bs);
                        int32_t *ht = (int32_t *)malloc((size_t)nbk * 4);
                        if (!ht) st = as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
                        uint64_t x = 0x9E3779B97F4A7C15ull;
                        for (int64_t i = 0; ht && i < nbk; i++) ht[i] = (int32_t)i;
                        for (int64_t i = nbk - 1; ht && i > 0; i--) {
                            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                            const int64_t j = (int64_t)(x % (uint64_t)(i + 1));
                            const int32_t t = ht[i]; ht[i] = ht[j]; ht[j] = t;
                        }
                        if (st == AS_OK) st = as_gpu_malloc((void **)&sb.blocks, (size_t)nbk * 4, err);
                        if (st == AS_OK) st = as_gpu_upload(sb.blocks, ht, (size_t)nbk * 4, err);
                        free(ht);
                    }
                    if (st == AS_OK) {
                        int32_t *hl = (int32_t *)malloc((size_t)B * 4);
                        if (!hl) st = as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
                        for (int i = 0; hl && i < B; i++) hl[i] = N;
                        if (st == AS_OK) st = as_gpu_upload(sb.lens, hl, (size_t)B * 4, err);
                        free(hl);
                    }
                    for (int s = 0; st == AS_OK && s < R; s++) {
                        /* K and V: one allocation (V after K), or two with split_kv */
                        const double kb = cfg->split_kv ? kv_bytes / 2 : kv_bytes;
                        st = as_gpu_malloc(&sb.kv[s], (size_t)kb, err);
                        if (st == AS_OK && cfg->split_kv)
                            st = as_gpu_malloc(&sb.vv[s], (size_t)kb, err);
                        if (st == AS_OK) st = as_gpu_malloc((void **)&sb.q[s], qn * 4, err);
                        if (st == AS_OK)
                            st = as_gpu_fill_random(c, sb.kv[s], AS_GPU_BF16, (size_t)(kb / 2),
                                                    1000 + s, -1.f, 1.f, err);
                        if (st == AS_OK && cfg->split_kv)
                            st = as_gpu_fill_random(c, sb.vv[s], AS_GPU_BF16, (size_t)(kb / 2),
                                                    1500 + s, -1.f, 1.f, err);
                        if (st == AS_OK)
                            st = as_gpu_fill_random(c, sb.q[s], AS_GPU_F32, qn, 2000 + s, -1.f, 1.f,
                                                    err);
                        if (st == AS_OK && cfg->selection) {
                            as_gpu_attn a = attn_of(&sb, s, B, hq, hkv, d, N);
                            st = as_gpu_pages_alloc(&sb.pages[s], &a, 16, err);
                            if (st == AS_OK) st = as_gpu_pages_build(c, &a, &sb.pages[s], err);
                            if (st == AS_OK) st = as_gpu_pages_alloc(&sb.pages32[s], &a, 32, err);
                            if (st == AS_OK) st = as_gpu_pages_build(c, &a, &sb.pages32[s], err);
                        }
                    }
                    if (st == AS_OK) st = as_gpu_sync(c, err);
                    if (st != AS_OK) {
                        free_shape(&sb);
                        if (st == AS_ERR_NOMEM) { /* does not fit: skip the shape */
                            st = AS_OK;
                            cudaGetLastError();
                            continue;
                        }
                        goto fail;
                    }
                    const double qo = 2.0 * qn * 4;
                    double med, mn, mx;
                    st = time_row("dense", c, R, warm, reps, [&](int i) -> as_status {
                        as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                        return as_gpu_decode_dense(c, &a, sb.o, sb.lse, cfg->variant, err);
                    }, &med, &mn, &mx, err);
                    if (st != AS_OK) { free_shape(&sb); goto fail; }
                    fill_row(&r, "dense", B, hq, hkv, d, N, 1, med, mn, mx, reps, kv_bytes + qo,
                             copy_gbps, read_gbps);
                    if ((st = push(&rv, &r, cfg, err)) != AS_OK) { free_shape(&sb); goto fail; }

                    /* exact top-k alone: [B * hkv, N] random f32 rows, rotated like K/V */
                    const int64_t trows = (int64_t)B * hkv;
                    const double tbytes = (double)trows * N * 4;
                    int TR = tbytes >= target ? 1 : (int)ceil(target / tbytes);
                    if (TR > 64) TR = 64;
                    float **tx = NULL;
                    int32_t *tl = NULL;
                    if (cfg->selection) {
                        tx = (float **)calloc((size_t)TR, sizeof(float *));
                        if (!tx) st = as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
                        for (int s = 0; st == AS_OK && s < TR; s++) {
                            st = as_gpu_malloc((void **)&tx[s], (size_t)tbytes, err);
                            if (st == AS_OK)
                                st = as_gpu_fill_random(c, tx[s], AS_GPU_F32, (size_t)trows * N,
                                                        3000 + s, -8.f, 8.f, err);
                        }
                        if (st == AS_OK) st = as_gpu_malloc((void **)&tl, sizeof(int32_t), err);
                        if (st == AS_OK) st = as_gpu_upload(tl, &N, sizeof(int32_t), err);
                    }
                    for (int si = 0; st == AS_OK && si < cfg->n_sparsities; si++) {
                        const double sp = cfg->sparsities[si];
                        if (sp <= 1.0) continue;
                        int k = (int)(N / sp);
                        if (k < 1) k = 1;
                        as_gpu_attn a0 = attn_of(&sb, 0, B, hq, hkv, d, N);
                        /* one index set per rotation set: gathered rows never stay in L2 */
                        as_gpu_sel *sel = (as_gpu_sel *)calloc((size_t)R, sizeof(as_gpu_sel));
                        as_gpu_sel sel2, sel3;
                        memset(&sel2, 0, sizeof sel2);
                        memset(&sel3, 0, sizeof sel3);
                        if (!sel) st = as_err_set(err, AS_ERR_NOMEM, "bench: out of memory");
                        for (int s = 0; st == AS_OK && s < R; s++) {
                            st = as_gpu_sel_alloc(&sel[s], &a0, AS_GPU_SEL_KV, k, 0, err);
                            if (st == AS_OK) {
                                dim3 g((unsigned)((k + 255) / 256), (unsigned)(B * hkv));
                                as_k_bench_idx<<<g, 256, 0, c->stream>>>(sel[s].idx, sel[s].count,
                                                                         k, N, 99 + 7919 * s);
                                if (cudaGetLastError() != cudaSuccess)
                                    st = as_err_set(err, AS_ERR_IO, "bench: index kernel failed");
                            }
                        }
                        const int npk = (k + 15) / 16, npk32 = (k + 31) / 32;
                        if (st == AS_OK && cfg->selection)
                            st = as_gpu_sel_alloc(&sel2, &a0, AS_GPU_SEL_KV, npk * 16, 0, err);
                        if (st == AS_OK && cfg->selection)
                            st = as_gpu_sel_alloc(&sel3, &a0, AS_GPU_SEL_KV, npk32 * 32, 0, err);
                        const double sel_kv = 2.0 * B * hkv * (double)k * d * 2;
                        const double idx_b = (double)B * hkv * k * 4;
                        if (st == AS_OK)
                            st = time_row("sparse_idx", c, R, warm, reps, [&](int i) -> as_status {
                                as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                return as_gpu_decode_sparse(c, &a, &sel[i % R], sb.o, sb.lse,
                                                            cfg->variant, err);
                            }, &med, &mn, &mx, err);
                        if (st == AS_OK) {
                            fill_row(&r, "sparse_idx", B, hq, hkv, d, N, sp, med, mn, mx, reps,
                                     sel_kv + idx_b + qo, copy_gbps, read_gbps);
                            st = push(&rv, &r, cfg, err);
                        }
                        if (st == AS_OK && cfg->selection) {
                            const double k_bytes = kv_bytes / 2;
                            const double meta = 2.0 * B * hkv * (double)sb.pages[0].npages * d * 2;
                            const double meta32 = 2.0 * B * hkv * (double)sb.pages32[0].npages * d * 2;
                            st = time_row("topk_rows", c, TR, warm, reps, [&](int i) -> as_status {
                                return as_gpu_topk_rows(c, tx[i % TR], N, trows, tl, (int32_t)trows,
                                                        k, sel[0].idx, k, sel[0].count, 0, err);
                            }, &med, &mn, &mx, err);
                            if (st == AS_OK) {
                                fill_row(&r, "topk_rows", B, hq, hkv, d, N, sp, med, mn, mx, reps,
                                         tbytes + idx_b, copy_gbps, read_gbps);
                                st = push(&rv, &r, cfg, err);
                            }
                            if (st == AS_OK)
                                st = time_row("select_topk", c, R, warm, reps,
                                              [&](int i) -> as_status {
                                    as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                    return as_gpu_select_topk(c, &a, k, &sel[i % R], err);
                                }, &med, &mn, &mx, err);
                            if (st == AS_OK) {
                                fill_row(&r, "select_topk", B, hq, hkv, d, N, sp, med, mn, mx, reps,
                                         k_bytes + idx_b, copy_gbps, read_gbps);
                                st = push(&rv, &r, cfg, err);
                            }
                            for (int pg = 0; pg < 2; pg++) {
                                const int ps = pg ? 32 : 16, np = pg ? npk32 : npk;
                                as_gpu_sel *ps_sel = pg ? &sel3 : &sel2;
                                as_gpu_pages *pgs = pg ? sb.pages32 : sb.pages;
                                const double mb = pg ? meta32 : meta;
                                if (st == AS_OK)
                                    st = time_row(pg ? "select_pages32" : "select_pages", c, R, warm, reps,
                                                  [&](int i) -> as_status {
                                        as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                        return as_gpu_select_pages(c, &a, &pgs[i % R], np, ps_sel,
                                                                   err);
                                    }, &med, &mn, &mx, err);
                                if (st == AS_OK) {
                                    fill_row(&r, pg ? "select_pages32" : "select_pages", B, hq, hkv,
                                             d, N, sp, med, mn, mx, reps,
                                             mb + (double)B * hkv * np * ps * 4, copy_gbps,
                                             read_gbps);
                                    st = push(&rv, &r, cfg, err);
                                }
                                if (st == AS_OK)
                                    st = time_row(pg ? "e2e_pages32" : "e2e_pages", c, R, warm, reps,
                                                  [&](int i) -> as_status {
                                        as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                        AS_TRY(as_gpu_select_pages(c, &a, &pgs[i % R], np, ps_sel,
                                                                   err));
                                        return as_gpu_decode_sparse(c, &a, ps_sel, sb.o, sb.lse,
                                                                    cfg->variant, err);
                                    }, &med, &mn, &mx, err);
                                if (st == AS_OK) {
                                    fill_row(&r, pg ? "e2e_pages32" : "e2e_pages", B, hq, hkv, d, N,
                                             sp, med, mn, mx, reps,
                                             mb + 2.0 * B * hkv * (double)np * ps * d * 2 + qo,
                                             copy_gbps, read_gbps);
                                    st = push(&rv, &r, cfg, err);
                                }
                                /* pages + sampling as `gpu replay --method page-sample`: the
                                 * whole pages within ceil(k / 2) keys, the rest of k sampled */
                                const int nph = (k / 2 + k % 2) / ps, m = k - nph * ps;
                                as_gpu_sel pss;
                                memset(&pss, 0, sizeof pss);
                                if (st == AS_OK)
                                    st = as_gpu_sel_alloc(&pss, &a0, AS_GPU_SEL_KV, nph * ps + m, 1,
                                                          err);
                                if (st == AS_OK)
                                    st = time_row(pg ? "e2e_page_sample32" : "e2e_page_sample", c, R, warm,
                                                  reps, [&](int i) -> as_status {
                                        as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                        AS_TRY(as_gpu_select_pages_sample(c, &a, &pgs[i % R], nph,
                                                                          m, 17 + i, &pss, err));
                                        return as_gpu_decode_sparse(c, &a, &pss, sb.o, sb.lse,
                                                                    cfg->variant, err);
                                    }, &med, &mn, &mx, err);
                                as_gpu_sel_free(&pss);
                                if (st == AS_OK) {
                                    fill_row(&r, pg ? "e2e_page_sample32" : "e2e_page_sample", B,
                                             hq, hkv, d, N, sp, med, mn, mx, reps,
                                             mb + 2.0 * B * hkv * (double)(nph * ps + m) * d * 2 +
                                                 qo, copy_gbps, read_gbps);
                                    st = push(&rv, &r, cfg, err);
                                }
                            }
                            if (st == AS_OK)
                                st = time_row("e2e_topk", c, R, warm, reps,
                                              [&](int i) -> as_status {
                                    as_gpu_attn a = attn_of(&sb, i % R, B, hq, hkv, d, N);
                                    AS_TRY(as_gpu_select_topk(c, &a, k, &sel[i % R], err));
                                    return as_gpu_decode_sparse(c, &a, &sel[i % R], sb.o, sb.lse,
                                                                cfg->variant, err);
                                }, &med, &mn, &mx, err);
                            if (st == AS_OK) {
                                fill_row(&r, "e2e_topk", B, hq, hkv, d, N, sp, med, mn, mx, reps,
                                         k_bytes + sel_kv + qo, copy_gbps, read_gbps);
                                st = push(&rv, &r, cfg, err);
                            }
                        }
                        for (int s = 0; sel && s < R; s++) as_gpu_sel_free(&sel[s]);
                        free(sel);
                        as_gpu_sel_free(&sel2);
                        as_gpu_sel_free(&sel3);
                    }
                    for (int s = 0; tx && s < TR; s++) as_gpu_free(tx[s]);
                    free(tx);
                    as_gpu_free(tl);
                    if (st != AS_OK) { free_shape(&sb); goto fail; }
                    free_shape(&sb);
                }
    }
    *rows_out = rv.v;
    *n_rows = rv.n;
    return AS_OK;
fail:
    free(rv.v);
    return st;
}
