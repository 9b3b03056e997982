/* as_gpu.cu: the gpu module's host side: device checks, context and workspace, device memory,
 * random fills, problem validation, selection and page-metadata storage. Kernels live in
 * as_gpu_decode.cu (decode, scores, page bounds) and as_gpu_select.cu (top-k, pages, sampling);
 * float64 references in as_gpu_ref.c; the benchmark in as_gpu_bench.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_gpu_impl.h"
#include "as_gpu_kern.cuh"

extern "C" int as_gpu_available(char *why)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) snprintf(why, AS_ERR_LEN, "no usable CUDA device: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (n < 1) {
        if (why) snprintf(why, AS_ERR_LEN, "no CUDA device present");
        return 0;
    }
    cudaDeviceProp pr;
    e = cudaGetDeviceProperties(&pr, 0);
    if (e != cudaSuccess) {
        if (why) snprintf(why, AS_ERR_LEN, "cannot query CUDA device 0: %s", cudaGetErrorString(e));
        return 0;
    }
    if (pr.major < 9) {
        if (why)
            snprintf(why, AS_ERR_LEN, "device 0 (%s) is sm_%d%d; the kernels are built for sm_90",
                     pr.name, pr.major, pr.minor);
        return 0;
    }
    return 1;
}

extern "C" as_status as_gpu_device_name(char *buf, size_t len, char *err)
{
    int dev = 0;
    AS_CU(cudaGetDevice(&dev));
    cudaDeviceProp pr;
    AS_CU(cudaGetDeviceProperties(&pr, dev));
    snprintf(buf, len, "%s (sm_%d%d, %d SMs, %.0f MB L2, %.1f GiB)", pr.name, pr.major, pr.minor,
             pr.multiProcessorCount, pr.l2CacheSize / 1e6,
             (double)pr.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return AS_OK;
}

extern "C" as_gpu_ctx *as_gpu_ctx_new(int device, char *err)
{
    char why[AS_ERR_LEN];
    if (!as_gpu_available(why)) {
        as_err_set(err, AS_ERR_IO, "%s", why);
        return NULL;
    }
    as_gpu_ctx *c = (as_gpu_ctx *)calloc(1, sizeof *c);
    if (!c) {
        as_err_set(err, AS_ERR_NOMEM, "gpu: out of memory");
        return NULL;
    }
    c->device = device;
    cudaError_t e = cudaSetDevice(device);
    cudaDeviceProp pr;
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&pr, device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        as_err_set(err, AS_ERR_IO, "CUDA: device %d: %s", device, cudaGetErrorString(e));
        free(c);
        return NULL;
    }
    c->sms = pr.multiProcessorCount;
    c->l2 = (size_t)pr.l2CacheSize;
    snprintf(c->name, sizeof c->name, "%s", pr.name);
    return c;
}

extern "C" void as_gpu_ctx_free(as_gpu_ctx *c)
{
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    for (int i = 0; i < AS_WS_N; i++)
        if (c->ws[i]) cudaFree(c->ws[i]);
    cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" void *as_gpu_ctx_stream(as_gpu_ctx *c) { return (void *)c->stream; }
extern "C" int as_gpu_ctx_sm_count(const as_gpu_ctx *c) { return c->sms; }
extern "C" size_t as_gpu_ctx_l2_bytes(const as_gpu_ctx *c) { return c->l2; }

extern "C" as_status as_gpu_sync(as_gpu_ctx *c, char *err)
{
    AS_CU(cudaStreamSynchronize(c->stream));
    AS_CU(cudaGetLastError());
    return AS_OK;
}

as_status as_gpu_ws(as_gpu_ctx *c, int slot, size_t bytes, void **out, char *err)
{
    if (bytes == 0) bytes = 256;
    if (c->ws_bytes[slot] < bytes) {
        if (c->ws[slot]) {
            AS_CU(cudaStreamSynchronize(c->stream));
            AS_CU(cudaFree(c->ws[slot]));
            c->ws[slot] = NULL;
            c->ws_bytes[slot] = 0;
        }
        size_t want = bytes + bytes / 4;
        AS_CU(cudaMalloc(&c->ws[slot], want));
        c->ws_bytes[slot] = want;
    }
    *out = c->ws[slot];
    return AS_OK;
}

extern "C" as_status as_gpu_malloc(void **p, size_t bytes, char *err)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return as_err_set(err, e == cudaErrorMemoryAllocation ? AS_ERR_NOMEM : AS_ERR_IO,
                          "CUDA: cannot allocate %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return AS_OK;
}

extern "C" void as_gpu_free(void *p)
{
    if (p) cudaFree(p);
}

extern "C" as_status as_gpu_upload(void *dst, const void *src, size_t bytes, char *err)
{
    AS_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return AS_OK;
}

extern "C" as_status as_gpu_download(void *dst, const void *src, size_t bytes, char *err)
{
    AS_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    return AS_OK;
}

extern "C" as_status as_gpu_memset(void *dst, int byte, size_t bytes, char *err)
{
    AS_CU(cudaMemset(dst, byte, bytes));
    AS_CU(cudaDeviceSynchronize());
    return AS_OK;
}

/* splitmix64 of (seed, index): uniform bits for the random fills. */
__device__ __forceinline__ uint64_t as_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

template <int DT>
__global__ void as_k_fill(void *dst, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t r = as_mix64(seed * 0x632be59bd9b4e019ull + i);
        const float u = (float)(r >> 40) * (1.0f / 16777216.0f);
        as_st1<DT>(dst, (int64_t)i, lo + (hi - lo) * u);
    }
}

extern "C" as_status as_gpu_fill_random(as_gpu_ctx *c, void *dst, as_gpu_dtype t, size_t n,
                                        uint64_t seed, float lo, float hi, char *err)
{
    if (n == 0) return AS_OK;
    const unsigned blocks = (unsigned)((n + 255) / 256 < (size_t)c->sms * 32 ? (n + 255) / 256
                                                                           : (size_t)c->sms * 32);
    switch (t) {
    case AS_GPU_F32: as_k_fill<0><<<blocks, 256, 0, c->stream>>>(dst, n, seed, lo, hi); break;
    case AS_GPU_F16: as_k_fill<1><<<blocks, 256, 0, c->stream>>>(dst, n, seed, lo, hi); break;
    default: as_k_fill<2><<<blocks, 256, 0, c->stream>>>(dst, n, seed, lo, hi); break;
    }
    AS_CU_LAUNCHED("fill_random");
    return AS_OK;
}

as_status as_gpu_check_attn(const as_gpu_attn *a, char *err)
{
    if (!a) return as_err_set(err, AS_ERR_USAGE, "gpu: problem is NULL");
    if (a->batch < 1 || a->batch > 65535)
        return as_err_set(err, AS_ERR_USAGE, "gpu: batch %d out of range 1..65535", a->batch);
    if (a->hkv < 1 || a->hq < 1 || a->hq % a->hkv != 0)
        return as_err_set(err, AS_ERR_USAGE, "gpu: hq=%d must be a positive multiple of hkv=%d",
                          a->hq, a->hkv);
    if (a->hq > 4096) return as_err_set(err, AS_ERR_USAGE, "gpu: hq=%d too large", a->hq);
    if (a->d != 64 && a->d != 128 && a->d != 256)
        return as_err_set(err, AS_ERR_USAGE, "gpu: head dim %d unsupported (64, 128 or 256)",
                          a->d);
    if ((int)a->kv_dtype < 0 || (int)a->kv_dtype > 2)
        return as_err_set(err, AS_ERR_USAGE, "gpu: unknown kv dtype %d", (int)a->kv_dtype);
    if (a->nmax < 0) return as_err_set(err, AS_ERR_USAGE, "gpu: nmax < 0");
    if (!a->k || !a->v || !a->q || !a->lens)
        return as_err_set(err, AS_ERR_USAGE, "gpu: k, v, q and lens must be device pointers");
    if (a->stride_n < a->d || a->stride_h < 0 || a->stride_b < 0)
        return as_err_set(err, AS_ERR_USAGE, "gpu: bad strides (n %lld, h %lld, b %lld)",
                          (long long)a->stride_n, (long long)a->stride_h,
                          (long long)a->stride_b);
    const size_t es = as_gpu_dtype_size(a->kv_dtype);
    if ((a->stride_n * es) % 16 || (a->stride_h * es) % 16 || (a->stride_b * es) % 16 ||
        ((uintptr_t)a->k % 16) || ((uintptr_t)a->v % 16))
        return as_err_set(err, AS_ERR_USAGE, "gpu: K/V rows must be 16-byte aligned");
    if (!(a->scale > 0.f)) return as_err_set(err, AS_ERR_USAGE, "gpu: scale must be > 0");
    if (a->blocks) {
        if (a->block_size < 1 || a->block_size > (1 << 20) ||
            (a->block_size & (a->block_size - 1)))
            return as_err_set(err, AS_ERR_USAGE,
                              "gpu: paged KV block size %d is not a power of two in 1..2^20",
                              a->block_size);
        if (a->max_blocks < 1 || (int64_t)a->max_blocks * a->block_size < a->nmax)
            return as_err_set(err, AS_ERR_USAGE,
                              "gpu: paged KV table of %d blocks of %d keys cannot hold nmax=%d",
                              a->max_blocks, a->block_size, a->nmax);
        if (a->stride_block < 0 || a->stride_block % a->stride_n ||
            (a->stride_block * (int64_t)es) % 16)
            return as_err_set(err, AS_ERR_USAGE,
                              "gpu: paged KV block stride %lld must be a 16-byte aligned "
                              "multiple of stride_n %lld",
                              (long long)a->stride_block, (long long)a->stride_n);
    }
    return AS_OK;
}

extern "C" int64_t as_gpu_sel_rows(const as_gpu_attn *a, as_gpu_sel_mode mode)
{
    return (int64_t)a->batch * (mode == AS_GPU_SEL_Q ? a->hq : a->hkv);
}

extern "C" as_status as_gpu_sel_alloc(as_gpu_sel *s, const as_gpu_attn *a, as_gpu_sel_mode mode,
                                      int32_t kcap, int with_logw, char *err)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->kcap = kcap < 1 ? 1 : kcap;
    const int64_t rows = as_gpu_sel_rows(a, mode);
    as_status st = as_gpu_malloc((void **)&s->idx, (size_t)rows * s->kcap * sizeof(int32_t), err);
    if (st == AS_OK) st = as_gpu_malloc((void **)&s->count, (size_t)rows * sizeof(int32_t), err);
    if (st == AS_OK && with_logw)
        st = as_gpu_malloc((void **)&s->logw, (size_t)rows * s->kcap * sizeof(float), err);
    if (st != AS_OK) as_gpu_sel_free(s);
    return st;
}

extern "C" void as_gpu_sel_free(as_gpu_sel *s)
{
    if (!s) return;
    as_gpu_free(s->idx);
    as_gpu_free(s->count);
    as_gpu_free(s->logw);
    s->idx = s->count = NULL;
    s->logw = NULL;
}

/* ---- page metadata ---------------------------------------------------------------------------- */
extern "C" as_status as_gpu_pages_alloc(as_gpu_pages *p, const as_gpu_attn *a, int32_t page,
                                        char *err)
{
    memset(p, 0, sizeof *p);
    if (page < 1) return as_err_set(err, AS_ERR_USAGE, "gpu pages: page size %d < 1", page);
    p->page = page;
    p->npages = (a->nmax + page - 1) / page;
    if (p->npages < 1) p->npages = 1;
    p->dtype = a->kv_dtype;
    const size_t bytes =
        (size_t)a->batch * a->hkv * p->npages * a->d * as_gpu_dtype_size(a->kv_dtype);
    as_status st = as_gpu_malloc(&p->kmin, bytes, err);
    if (st == AS_OK) st = as_gpu_malloc(&p->kmax, bytes, err);
    if (st != AS_OK) as_gpu_pages_free(p);
    return st;
}

extern "C" void as_gpu_pages_free(as_gpu_pages *p)
{
    if (!p) return;
    as_gpu_free(p->kmin);
    as_gpu_free(p->kmax);
    p->kmin = p->kmax = NULL;
}

/* One block per (page chunk, kv head, sequence); thread c owns column c. */
template <int DT>
__global__ void as_k_pages_build(const void *k, int64_t sb, int64_t sh, int64_t sn,
                                 as_kv_pages kvp, const int32_t *lens, int d, int page,
                                 int npages, int hkv, int pages_per_block, void *kmin, void *kmax)
{
    const int b = blockIdx.z, h = blockIdx.y;
    const int len = lens[b];
    const int np = (len + page - 1) / page;
    const void *kb = as_row<DT>(k, b * sb + h * sh);
    const int64_t mbase = ((int64_t)b * hkv + h) * npages;
    for (int pi = 0; pi < pages_per_block; pi++) {
        const int pg = blockIdx.x * pages_per_block + pi;
        if (pg >= np) return;
        const int n0 = pg * page, n1 = min(len, n0 + page);
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            float mn = INFINITY, mx = -INFINITY;
            for (int n = n0; n < n1; n++) {
                const float x = as_ld1<DT>(kb, as_kv_row(kvp, b, n) * sn + c);
                mn = fminf(mn, x);
                mx = fmaxf(mx, x);
            }
            as_st1<DT>(kmin, (mbase + pg) * d + c, mn);
            as_st1<DT>(kmax, (mbase + pg) * d + c, mx);
        }
    }
}

extern "C" as_status as_gpu_pages_build(as_gpu_ctx *c, const as_gpu_attn *a, as_gpu_pages *p,
                                        char *err)
{
    AS_TRY(as_gpu_check_attn(a, err));
    if (!p || !p->kmin || !p->kmax || p->dtype != a->kv_dtype ||
        (int64_t)p->npages * p->page < a->nmax)
        return as_err_set(err, AS_ERR_USAGE, "gpu pages: metadata not allocated for this cache");
    const int ppb = 8;
    const as_kv_pages kvp = as_kv_pages_of(a);
    const int64_t sb = kvp.blocks ? 0 : a->stride_b;
    dim3 grid((unsigned)((p->npages + ppb - 1) / ppb), (unsigned)a->hkv, (unsigned)a->batch);
    switch (a->kv_dtype) {
    case AS_GPU_F32:
        as_k_pages_build<0><<<grid, a->d, 0, c->stream>>>(a->k, sb, a->stride_h,
            a->stride_n, kvp, a->lens, a->d, p->page, p->npages, a->hkv, ppb, p->kmin, p->kmax);
        break;
    case AS_GPU_F16:
        as_k_pages_build<1><<<grid, a->d, 0, c->stream>>>(a->k, sb, a->stride_h,
            a->stride_n, kvp, a->lens, a->d, p->page, p->npages, a->hkv, ppb, p->kmin, p->kmax);
        break;
    default:
        as_k_pages_build<2><<<grid, a->d, 0, c->stream>>>(a->k, sb, a->stride_h,
            a->stride_n, kvp, a->lens, a->d, p->page, p->npages, a->hkv, ppb, p->kmin, p->kmax);
        break;
    }
    AS_CU_LAUNCHED("pages_build");
    return AS_OK;
}
