/* as_gpu_kern.cuh: device helpers shared by the gpu module's kernels (not installed). */
#ifndef AS_GPU_KERN_CUH
#define AS_GPU_KERN_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define AS_LOG2E 1.4426950408889634f
#define AS_LN2 0.6931471805599453f
#define AS_NEG_BIG (-1e30f) /* finite "minus infinity" for running maxima */

/* Eight consecutive elements of a K/V row, as loaded (16 bytes for 16-bit types, 32 for f32). */
template <int DT> struct as_raw8;
template <> struct as_raw8<0> { float4 a, b; };
template <> struct as_raw8<1> { uint4 a; };
template <> struct as_raw8<2> { uint4 a; };

template <int DT> struct as_elem;
template <> struct as_elem<0> { typedef float T; };
template <> struct as_elem<1> { typedef __half T; };
template <> struct as_elem<2> { typedef __nv_bfloat16 T; };

/* Row of key n of sequence b from its (sequence, kv head) base, in row strides: n, or through
 * the block table of a paged cache (as_kv_pages in as_gpu_impl.h). */
template <class KVP>
__device__ __forceinline__ int64_t as_kv_row(const KVP &g, int b, int n)
{
    if (!g.blocks) return n;
    const int32_t blk = __ldg(g.blocks + (int64_t)b * g.mb + (n >> g.shift));
    return (int64_t)blk * g.brows + (n & ((1 << g.shift) - 1));
}

/* Streaming loads: read once, do not keep in L1. */
__device__ __forceinline__ uint4 as_ld16(const void *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

template <int DT> __device__ __forceinline__ void as_load8(const void *row, int e0, as_raw8<DT> &r);
template <> __device__ __forceinline__ void as_load8<0>(const void *row, int e0, as_raw8<0> &r)
{
    const float *p = (const float *)row + e0;
    uint4 x = as_ld16(p), y = as_ld16(p + 4);
    r.a = make_float4(__uint_as_float(x.x), __uint_as_float(x.y), __uint_as_float(x.z),
                      __uint_as_float(x.w));
    r.b = make_float4(__uint_as_float(y.x), __uint_as_float(y.y), __uint_as_float(y.z),
                      __uint_as_float(y.w));
}
template <> __device__ __forceinline__ void as_load8<1>(const void *row, int e0, as_raw8<1> &r)
{
    r.a = as_ld16((const __half *)row + e0);
}
template <> __device__ __forceinline__ void as_load8<2>(const void *row, int e0, as_raw8<2> &r)
{
    r.a = as_ld16((const __nv_bfloat16 *)row + e0);
}
template <int DT> __device__ __forceinline__ void as_zero8(as_raw8<DT> &r);
template <> __device__ __forceinline__ void as_zero8<0>(as_raw8<0> &r)
{
    r.a = make_float4(0.f, 0.f, 0.f, 0.f);
    r.b = r.a;
}
template <> __device__ __forceinline__ void as_zero8<1>(as_raw8<1> &r) { r.a = make_uint4(0, 0, 0, 0); }
template <> __device__ __forceinline__ void as_zero8<2>(as_raw8<2> &r) { r.a = make_uint4(0, 0, 0, 0); }

__device__ __forceinline__ void as_bf2(uint32_t x, float &lo, float &hi)
{
    lo = __uint_as_float(x << 16);
    hi = __uint_as_float(x & 0xffff0000u);
}
__device__ __forceinline__ void as_h2(uint32_t x, float &lo, float &hi)
{
    __half2 h = *reinterpret_cast<__half2 *>(&x);
    float2 f = __half22float2(h);
    lo = f.x;
    hi = f.y;
}

template <int DT> __device__ __forceinline__ void as_cvt8(const as_raw8<DT> &r, float f[8]);
template <> __device__ __forceinline__ void as_cvt8<0>(const as_raw8<0> &r, float f[8])
{
    f[0] = r.a.x; f[1] = r.a.y; f[2] = r.a.z; f[3] = r.a.w;
    f[4] = r.b.x; f[5] = r.b.y; f[6] = r.b.z; f[7] = r.b.w;
}
template <> __device__ __forceinline__ void as_cvt8<1>(const as_raw8<1> &r, float f[8])
{
    as_h2(r.a.x, f[0], f[1]); as_h2(r.a.y, f[2], f[3]);
    as_h2(r.a.z, f[4], f[5]); as_h2(r.a.w, f[6], f[7]);
}
template <> __device__ __forceinline__ void as_cvt8<2>(const as_raw8<2> &r, float f[8])
{
    as_bf2(r.a.x, f[0], f[1]); as_bf2(r.a.y, f[2], f[3]);
    as_bf2(r.a.z, f[4], f[5]); as_bf2(r.a.w, f[6], f[7]);
}

/* Element stores of the storage type (page metadata). */
template <int DT> __device__ __forceinline__ float as_ld1(const void *p, int64_t i);
template <> __device__ __forceinline__ float as_ld1<0>(const void *p, int64_t i) { return ((const float *)p)[i]; }
template <> __device__ __forceinline__ float as_ld1<1>(const void *p, int64_t i) { return __half2float(((const __half *)p)[i]); }
template <> __device__ __forceinline__ float as_ld1<2>(const void *p, int64_t i) { return __bfloat162float(((const __nv_bfloat16 *)p)[i]); }
template <int DT> __device__ __forceinline__ void as_st1(void *p, int64_t i, float x);
template <> __device__ __forceinline__ void as_st1<0>(void *p, int64_t i, float x) { ((float *)p)[i] = x; }
template <> __device__ __forceinline__ void as_st1<1>(void *p, int64_t i, float x) { ((__half *)p)[i] = __float2half_rn(x); }
template <> __device__ __forceinline__ void as_st1<2>(void *p, int64_t i, float x) { ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(x); }

template <int DT> __device__ __forceinline__ const char *as_row(const void *base, int64_t off)
{
    return (const char *)base + off * (int64_t)sizeof(typename as_elem<DT>::T);
}

/* float -> uint32 whose unsigned order is the float order (larger float, larger key). */
__device__ __forceinline__ uint32_t as_fkey(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#endif
