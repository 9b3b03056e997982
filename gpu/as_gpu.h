/* as_gpu: CUDA decode kernels (sm_90) and their CPU float64 references.
 *
 * Kernels (docs/gpu.md; every one has a float64 reference in this header's as_gpu_ref_*):
 *   1. dense decode      split-N flash-decoding with a log-sum-exp merge; GQA: the query heads
 *                        of one kv head share each K/V read; KV in f32/f16/bf16, f32 accumulation;
 *                        a batch of sequences with their own lengths.
 *   2. sparse decode     the same over given token indices, per (sequence, kv head) or per
 *                        (sequence, query head), gathering K/V rows; optional per-index
 *                        log-weights (used by the sampling estimator).
 *   3. exact top-k       of q.k scores per (sequence, head) by a multi-block radix select (no
 *                        sort), N up to 1M+, k up to N, ties by position as on the CPU.
 *   4. page selection    Quest: per-page element-wise min/max of keys kept beside the cache,
 *                        the upper bound sum_i max(q_i min_i, q_i max_i) per page, best pages.
 *   5. top-k + sampling  deterministic heavy hitters plus a uniform sample of the rest (on-GPU
 *                        Philox random numbers); numerator and denominator of the softmax are
 *                        estimated separately: o = (N_S + (n/m) N_smp) / (D_S + (n/m) D_smp).
 *   6. pages + sampling  Quest pages as the heavy set, uniform draws over the other keys.
 *   7. decode step       selection + attention planned once, run without allocation or host
 *                        synchronisation (capturable into a CUDA graph), contiguous or paged KV.
 *
 * Memory: device pointers are plain cudaMalloc memory (as_gpu_malloc). A KV cache is
 * K[b][h][n][d] addressed through element strides (stride_b may be 0: sequences sharing one
 * cache, as when the queries of one trace are replayed as a batch), or a paged pool addressed
 * through a block table (as_gpu_attn.blocks), as serving engines hold it. Queries and outputs are
 * float32 [batch][hq][d]. Scores use the softmax scale `scale` (natural-log units).
 *
 * Errors: functions return an as_status and fill err (AS_ERR_LEN bytes); CUDA failures are
 * reported as AS_ERR_IO with the CUDA error string. Launches are asynchronous on the context's
 * stream; as_gpu_sync waits and reports any error raised by a kernel. */
#ifndef AS_GPU_H
#define AS_GPU_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "as_dtype.h" /* C headers without C++ guards */
#include "as_error.h"

/* The storage types the kernels take for K and V: a subset of data/as_dtype's types, numbered
 * 0..2 because the kernels are templates over this number (and the tests index tables by it);
 * conversions go through data/as_dtype. */
typedef enum { AS_GPU_F32 = 0, AS_GPU_F16 = 1, AS_GPU_BF16 = 2 } as_gpu_dtype;

/* The data type of a storage type, and the storage type of a data type (-1: none, e.g. F64). */
as_dtype as_gpu_dtype_to_dtype(as_gpu_dtype t);
int as_gpu_dtype_from(as_dtype t);
size_t as_gpu_dtype_size(as_gpu_dtype t);
const char *as_gpu_dtype_name(as_gpu_dtype t);
/* Parse "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16"; returns -1 if unknown. */
int as_gpu_dtype_parse(const char *s);

/* Round a float to the storage type and back (host side, round-to-nearest-even, data/as_dtype's
 * converters): what a value becomes once stored in a cache of that dtype. */
float as_gpu_round(as_gpu_dtype t, float x);
/* Host conversions between float and the storage type (n elements). */
void as_gpu_pack(as_gpu_dtype t, const float *src, void *dst, size_t n);
void as_gpu_unpack(as_gpu_dtype t, const void *src, float *dst, size_t n);

/* 1 when a CUDA device of compute capability >= 9.0 can be used; otherwise 0 with the reason
 * in why (AS_ERR_LEN bytes; may be NULL). Kernels are built for sm_90 only. */
int as_gpu_available(char *why);
/* One line naming the device, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 50 MB L2)". */
as_status as_gpu_device_name(char *buf, size_t len, char *err);

/* ---- context: device, stream, growable workspace ------------------------------------------ */
typedef struct as_gpu_ctx as_gpu_ctx;
as_gpu_ctx *as_gpu_ctx_new(int device, char *err);
void as_gpu_ctx_free(as_gpu_ctx *c);
void *as_gpu_ctx_stream(as_gpu_ctx *c); /* the cudaStream_t every launch goes to */
int as_gpu_ctx_sm_count(const as_gpu_ctx *c);
size_t as_gpu_ctx_l2_bytes(const as_gpu_ctx *c);
/* Wait for the stream; reports any asynchronous kernel error. */
as_status as_gpu_sync(as_gpu_ctx *c, char *err);

/* ---- plain device memory, so C callers need no CUDA headers ------------------------------ */
as_status as_gpu_malloc(void **p, size_t bytes, char *err);
void as_gpu_free(void *p);
as_status as_gpu_upload(void *dst, const void *src, size_t bytes, char *err);
as_status as_gpu_download(void *dst, const void *src, size_t bytes, char *err);
/* Set every byte (e.g. 0xFF poisons floats to NaN). Synchronous. */
as_status as_gpu_memset(void *dst, int byte, size_t bytes, char *err);
/* Fill n elements of dtype t with pseudo-random values uniform in [lo, hi) (counter hash of
 * seed and index, never zeros-only). Asynchronous on the context's stream. */
as_status as_gpu_fill_random(as_gpu_ctx *c, void *dst, as_gpu_dtype t, size_t n, uint64_t seed,
                             float lo, float hi, char *err);

/* ---- problem description ------------------------------------------------------------------ */
typedef struct {
    int32_t batch;                  /* sequences */
    int32_t hq, hkv;                /* query heads, kv heads (hq % hkv == 0) */
    int32_t d;                      /* head dim: 64, 128 or 256 (replay pads others) */
    as_gpu_dtype kv_dtype;          /* storage type of K and V */
    const void *k, *v;              /* K[b][h][n][d], V likewise (same strides) */
    int64_t stride_b, stride_h, stride_n; /* element strides; rows are d contiguous elements */
    const int32_t *lens;            /* [batch] keys of each sequence (0 <= lens[b] <= nmax) */
    int32_t nmax;                   /* upper bound of lens (sizes grids and workspaces) */
    const float *q;                 /* [batch][hq][d] */
    float scale;                    /* softmax scale, usually 1/sqrt(d) */
    /* Paged KV (the layout of vLLM, SGLang and FlashInfer): NULL for the contiguous layout
     * above. Otherwise key n of sequence b is slot n % block_size of the physical block
     * blocks[b * max_blocks + n / block_size], at element offset
     *     blocks[...] * stride_block + (n % block_size) * stride_n + h * stride_h
     * from k (v likewise; stride_b unused). block_size is a power of two (16 in vLLM), stride_block
     * a multiple of stride_n, max_blocks * block_size >= nmax. E.g. a pool [blocks][16][hkv][d]
     * (vLLM, FlashInfer NHD): stride_n = hkv d, stride_h = d, stride_block = 16 hkv d; a pool
     * [blocks][hkv][16][d] (FlashInfer HND): stride_n = d, stride_h = 16 d, stride_block = hkv 16 d.
     * The table is device memory, read by the kernels: it may change between graph replays. */
    const int32_t *blocks;
    int32_t block_size, max_blocks;
    int64_t stride_block;
} as_gpu_attn;

/* Selection rows are per (sequence, kv head) [shared by the group's query heads] or per
 * (sequence, query head). */
typedef enum { AS_GPU_SEL_KV = 0, AS_GPU_SEL_Q = 1 } as_gpu_sel_mode;

typedef struct {
    as_gpu_sel_mode mode;
    int32_t *idx;    /* [batch][H][kcap] token positions; entries < 0 are skipped */
    int32_t *count;  /* [batch][H] entries in use (<= kcap) */
    float *logw;     /* NULL, or [batch][H][kcap] additive log-weights of the scores */
    int32_t kcap;    /* row stride of idx/logw */
} as_gpu_sel;

/* Rows of a selection: batch * (hkv or hq). */
int64_t as_gpu_sel_rows(const as_gpu_attn *a, as_gpu_sel_mode mode);
/* Allocate idx/count (and logw when with_logw) on the device; as_gpu_sel_free releases them. */
as_status as_gpu_sel_alloc(as_gpu_sel *s, const as_gpu_attn *a, as_gpu_sel_mode mode,
                           int32_t kcap, int with_logw, char *err);
void as_gpu_sel_free(as_gpu_sel *s);

/* Kernel variants (llm.c style), all checked against the reference: 0 = the tuned kernel
 * (decode: tensor cores for f16/bf16 K/V with d = 64 or 128, else the CUDA-core split kernel);
 * 1 = a simple one (decode: one block per (b, head), no split; top-k: scalar loads);
 * 2, 3 = the CUDA-core split decode with a 2- and a 3-stage copy pipeline (top-k: as 0).
 * Kept so that `attnscope gpu bench --variant` compares them on the machine at hand. */
#define AS_GPU_VARIANTS 4

/* ---- 1, 2: decode ------------------------------------------------------------------------- */
/* o[b][hq][d] = softmax(scale K q) V over keys 0..lens[b]-1; lse[b][hq] (natural log of the sum
 * of exp of the scaled scores) when lse != NULL. A sequence of length 0 gives o = 0, lse = -inf. */
as_status as_gpu_decode_dense(as_gpu_ctx *c, const as_gpu_attn *a, float *o, float *lse,
                              int variant, char *err);
/* The same over the selected rows: scores of entry j are scale q.k_idx[j] + logw[j]. Entries
 * with idx < 0 or idx >= lens[b] are skipped; duplicates count as often as they appear. */
as_status as_gpu_decode_sparse(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_sel *sel,
                               float *o, float *lse, int variant, char *err);

/* ---- 3: scores and exact top-k ------------------------------------------------------------ */
/* s[b][hq][n] = scale q.k_n for n < lens[b] (row stride lds >= nmax; other entries unwritten). */
as_status as_gpu_scores(as_gpu_ctx *c, const as_gpu_attn *a, float *s, int64_t lds, char *err);
/* Exact top-k of rows of floats: row r (r < rows) holds len_r = lens[r / rows_per_len] values
 * at x + r * ldx. Writes k_r = min(k, len_r) distinct positions (in no particular order) to
 * idx + r * ldi and k_r to count[r]; any k up to len. Variant 0 (and 2, 3): a multi-block radix
 * select (a long row is split over many blocks), ties at the threshold broken by position as on
 * the CPU (lower positions first); variant 1: one block per row, ties broken arbitrarily. */
as_status as_gpu_topk_rows(as_gpu_ctx *c, const float *x, int64_t ldx, int64_t rows,
                           const int32_t *lens, int32_t rows_per_len, int32_t k, int32_t *idx,
                           int64_t ldi, int32_t *count, int variant, char *err);
/* Oracle top-k selection: per query head (mode Q) the k largest scores; per kv head (mode K)
 * the k largest of max over the group of the log-probabilities s_g - lse_g. */
as_status as_gpu_select_topk(as_gpu_ctx *c, const as_gpu_attn *a, int32_t k, as_gpu_sel *sel,
                             char *err);

/* ---- 4: Quest page selection ------------------------------------------------------------- */
typedef struct {
    int32_t page;        /* keys per page (16 in Quest) */
    int32_t npages;      /* ceil(nmax / page) */
    as_gpu_dtype dtype;  /* same as the cache's: min/max of stored values are stored exactly */
    void *kmin, *kmax;   /* [batch][hkv][npages][d] */
} as_gpu_pages;
as_status as_gpu_pages_alloc(as_gpu_pages *p, const as_gpu_attn *a, int32_t page, char *err);
void as_gpu_pages_free(as_gpu_pages *p);
/* Recompute the per-page min/max of keys (what a cache keeps up to date on append). */
as_status as_gpu_pages_build(as_gpu_ctx *c, const as_gpu_attn *a, as_gpu_pages *p, char *err);
/* ub[b][hq][page] = sum_i max(q_i kmin_i, q_i kmax_i) * scale >= max score in the page
 * (row stride ldu >= npages; only pages holding keys < lens[b] are written). */
as_status as_gpu_page_bounds(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *p,
                             float *ub, int64_t ldu, char *err);
/* Keep the npages_keep pages of highest bound (mode Q: per query head; mode KV: by the max over
 * the group) and write their tokens to sel (kcap >= npages_keep * page; positions past the
 * sequence's end are written as -1). */
as_status as_gpu_select_pages(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *p,
                              int32_t npages_keep, as_gpu_sel *sel, char *err);

/* ---- 5: top-k plus sampling ---------------------------------------------------------------- */
/* Each row gets its kt = min(k_top, len) top-k entries (log-weight 0) followed, when len > kt,
 * by m draws j ~ U{0..len-1} (Philox, keyed by seed, row and draw): weight log(len / m) when j
 * is not in the top-k set, -inf (dropped) when it is. sel needs logw and kcap >= k_top + m. */
as_status as_gpu_select_topk_sample(as_gpu_ctx *c, const as_gpu_attn *a, int32_t k_top,
                                    int32_t m, uint64_t seed, as_gpu_sel *sel, char *err);

/* ---- 6: Quest pages plus sampling --------------------------------------------------------- */
/* Heavy set H = the npages_keep pages of highest Quest bound (as as_gpu_select_pages, log-weight
 * 0), padded with -1 entries to npages_keep * page entries per row; then, when n_rest = len - |H|
 * > 0, m draws j uniform over the keys outside H (Philox, keyed by seed, row and draw; with
 * replacement), each with log-weight log(n_rest / m), so the sparse decode's numerator and
 * denominator are unbiased for the rest (H does not depend on the sampled values). sel needs
 * logw and kcap >= npages_keep * page + m; pages up to 196,608 per row. */
as_status as_gpu_select_pages_sample(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *p,
                                     int32_t npages_keep, int32_t m, uint64_t seed,
                                     as_gpu_sel *sel, char *err);

/* ---- 7: one decode step, as a serving engine calls it --------------------------------------
 * Selection + attention planned once (FFTW style) and then run every step with no allocation
 * and no host synchronisation, so that a run can be captured into a CUDA graph on the
 * context's stream (cudaStreamBeginCapture on as_gpu_ctx_stream) and replayed: q, lens, the K/V
 * contents, the block table and the page min/max are read from device memory at replay, so a
 * graph replays correctly after they change in place; the pointers, batch, heads, d, dtype,
 * method, budgets, seed and nmax are fixed in the graph (re-plan or re-capture to change them;
 * the draws of the sampling methods are keyed by seed, row and draw, so a captured graph draws
 * the same positions at each step while lens does not change). Contiguous or paged K/V alike.
 * The context's workspaces are captured by address: plan every step of a context before
 * capturing any graph on it (a later plan of a larger problem may reallocate them). */
typedef enum {
    AS_GPU_STEP_DENSE = 0,    /* dense decode (no selection) */
    AS_GPU_STEP_TOPK,         /* exact top-k of k keys (as_gpu_select_topk) */
    AS_GPU_STEP_PAGES,        /* Quest: the `pages` best pages (as_gpu_select_pages) */
    AS_GPU_STEP_TOPK_SAMPLE,  /* top-k of k keys + m draws (as_gpu_select_topk_sample) */
    AS_GPU_STEP_PAGES_SAMPLE  /* `pages` best pages + m draws (as_gpu_select_pages_sample) */
} as_gpu_step_method;

typedef struct {
    as_gpu_step_method method;
    as_gpu_sel_mode mode; /* selections per (sequence, kv head) or per (sequence, query head) */
    int32_t k;            /* TOPK, TOPK_SAMPLE: keys of the top-k */
    int32_t pages;        /* PAGES, PAGES_SAMPLE: pages kept (of the as_gpu_pages given to run) */
    int32_t m;            /* *_SAMPLE: uniform draws */
    uint64_t seed;        /* *_SAMPLE */
} as_gpu_step_cfg;

typedef struct as_gpu_step as_gpu_step;
/* Plan a step for problems shaped as a (batch, heads, d, dtype, nmax, paged or not) with page
 * metadata shaped as pg (PAGES*; else NULL): allocates the selection and runs the step once on
 * a (which must hold valid device data; outputs go to o/lse, may be NULL: then a scratch
 * output) so that every workspace of the context has its final size. NULL on error (err). */
as_gpu_step *as_gpu_step_plan(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *pg,
                              const as_gpu_step_cfg *cfg, float *o, float *lse, char *err);
/* One step: selection (if any) then attention, o[b][hq][d] and lse[b][hq] as the decode
 * functions. a and pg may differ from the planned ones in pointers and contents, not in shape
 * (AS_ERR_USAGE otherwise). Asynchronous; nothing allocated; capturable. */
as_status as_gpu_step_run(as_gpu_step *s, const as_gpu_attn *a, const as_gpu_pages *pg,
                          float *o, float *lse, char *err);
/* The device selection the last run wrote (NULL for DENSE): idx/count/logw as as_gpu_sel. */
const as_gpu_sel *as_gpu_step_selection(const as_gpu_step *s);
void as_gpu_step_free(as_gpu_step *s);

/* ---- CPU float64 references (host pointers in the same descriptors) ---------------------- */
/* Dense decode; o [batch][hq][d], lse [batch][hq] (may be NULL). */
void as_gpu_ref_decode_dense(const as_gpu_attn *a, double *o, double *lse);
/* Sparse decode over a host selection (idx/count/logw host arrays). */
void as_gpu_ref_decode_sparse(const as_gpu_attn *a, const as_gpu_sel *sel, double *o,
                              double *lse);
/* Scores s[b][hq][n] (row stride lds). */
void as_gpu_ref_scores(const as_gpu_attn *a, double *s, int64_t lds);
/* Page min/max [batch][hkv][npages][d] and bounds ub[b][hq][npages] (stride npages). */
void as_gpu_ref_pages(const as_gpu_attn *a, int32_t page, double *kmin, double *kmax,
                      double *ub);
/* Check that idx[0..cnt) is an exact top-k of x[0..len) for k: cnt == min(k, len), positions
 * distinct and in range, min over selected >= max over the rest. Returns 1 if so, else 0 and
 * a reason in why (AS_ERR_LEN, may be NULL). */
int as_gpu_ref_check_topk(const float *x, int32_t len, int32_t k, const int32_t *idx,
                          int32_t cnt, char *why);
/* The same, and ties at the threshold broken by position as the CPU does (analysis/as_select.h:
 * of equal values the lower positions are selected first). */
int as_gpu_ref_check_topk_pos(const float *x, int32_t len, int32_t k, const int32_t *idx,
                              int32_t cnt, char *why);

/* ---- benchmark harness (attnscope gpu bench) --------------------------------------------- */
typedef struct {
    char method[48];     /* "copy", "dense", "sparse_idx", "select_topk", "select_pages",
                            "e2e_topk", "e2e_pages", ... */
    int32_t batch, hq, hkv, d, n;
    double sparsity;     /* N / k (1 for dense) */
    double us;           /* median microseconds */
    double us_min, us_max;
    int32_t launches;    /* timed launches */
    double bytes;        /* bytes that must move (each input read once, output written once) */
    double gbps;         /* bytes / time */
    double pct_copy;     /* gbps / measured copy bandwidth (read + write bytes) */
    double pct_read;     /* gbps / measured read-only stream bandwidth (a plain read kernel) */
    int32_t graphed;     /* 1: timed as CUDA-graph replays (the whole call captured: no host
                            synchronisation inside it); 0: capture failed, eager launches */
} as_gpu_bench_row;

typedef struct {
    const int32_t *batches; int n_batches;
    const int32_t *ns; int n_ns;
    const int32_t *ds; int n_ds;
    const double *sparsities; int n_sparsities; /* 1 = dense */
    int32_t hq, hkv;
    int32_t reps;             /* timed launches per row (>= 20) */
    int32_t warmup;
    double max_gib;           /* skip shapes whose KV cache exceeds this (GiB) */
    int selection;            /* also time selection and end-to-end rows */
    int variant;
    int split_kv;             /* K and V in two allocations (default: one, V after K) */
    int32_t paged;            /* > 0: K/V as a paged pool of blocks of this many keys, layout
                                 [blocks][hkv][paged][d], the blocks of each sequence a random
                                 permutation of the pool (a block table, as_gpu_attn.blocks);
                                 N must be a multiple; 0: contiguous [B][hkv][N][d] */
    const char *only;         /* NULL, or time only the shape rows of this method (profiling) */
    void (*progress)(const as_gpu_bench_row *row, void *user); /* called per row (may be NULL) */
    void *user;
} as_gpu_bench_cfg;

/* Runs the sweep; *rows (malloc'd, caller frees) and *n_rows. The first row is the
 * device-to-device copy that sets the bandwidth ceiling, the second ("read") a plain kernel
 * streaming 2 GiB once (the read-only ceiling). With selection, each shape and sparsity also
 * times the exact top-k alone over [batch * hkv, N] random f32 rows ("topk_rows") and Quest
 * pages of 32 keys besides 16 ("select_pages32", "e2e_pages32"). Sparse rows rotate their
 * index sets with K/V, so gathered rows are not found in L2. */
as_status as_gpu_bench(as_gpu_ctx *c, const as_gpu_bench_cfg *cfg, as_gpu_bench_row **rows,
                       size_t *n_rows, char *err);

#ifdef __cplusplus
}
#endif

#endif
