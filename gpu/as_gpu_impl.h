/* as_gpu_impl.h: internals shared by the gpu module's .cu files (not installed). */
#ifndef AS_GPU_IMPL_H
#define AS_GPU_IMPL_H

#include <cuda_runtime.h>

#include "as_gpu.h"

/* Workspace slots: each entry point uses fixed slots so that nested calls never share one. */
enum {
    AS_WS_DECODE = 0, /* split partials of the decode merge */
    AS_WS_SCORES,     /* scores / page bounds of a selection */
    AS_WS_TOPK,       /* radix-select candidates */
    AS_WS_AUX,        /* aggregated scores, lse partials, bitmaps, page counts */
    AS_WS_AUX2,       /* top-k staging of the page and sampling selections */
    AS_WS_N
};

struct as_gpu_ctx {
    int device;
    cudaStream_t stream;
    int sms;
    size_t l2;
    char name[256];
    void *ws[AS_WS_N];
    size_t ws_bytes[AS_WS_N];
};

/* Pointer to at least bytes of workspace in slot (grown with cudaFree/cudaMalloc; growing
 * synchronizes the device). */
as_status as_gpu_ws(as_gpu_ctx *c, int slot, size_t bytes, void **out, char *err);

#define AS_CU(call)                                                                           \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return as_err_set(err, AS_ERR_IO, "CUDA: %s: %s (%s:%d)", #call,                 \
                              cudaGetErrorString(e_), __FILE__, __LINE__);                    \
    } while (0)

#define AS_CU_LAUNCHED(what)                                                                  \
    do {                                                                                      \
        cudaError_t e_ = cudaGetLastError();                                                  \
        if (e_ != cudaSuccess)                                                                \
            return as_err_set(err, AS_ERR_IO, "CUDA launch of %s: %s", what,                 \
                              cudaGetErrorString(e_));                                        \
    } while (0)

#define AS_TRY(x)                                                                             \
    do {                                                                                      \
        as_status s_ = (x);                                                                   \
        if (s_ != AS_OK) return s_;                                                           \
    } while (0)

/* The multi-block exact top-k (as_gpu_topk.cuh, as_gpu_topk.cu). */
#define AS_TK_CAP 1024 /* undecided elements ranked by one block at the end */
/* Per-row state (global memory, zeroed before pass 0). */
struct as_tk_state {
    unsigned long long prefix; /* known high bits of the threshold key */
    uint32_t kr;               /* min(k, len) */
    uint32_t kleft;            /* still to take among the undecided */
    uint32_t neq;              /* undecided elements */
    uint32_t status;           /* 0 next: a digit pass; 1: collect; 2: collect all or none; 3: done */
    uint32_t pass;             /* digit passes done */
    uint32_t ticket;           /* blocks finished in the current launch */
    uint32_t list;             /* 1: the undecided elements are in the candidate list */
    uint32_t nlist;            /* keys in the candidate list */
    uint32_t nbuf;             /* undecided elements appended to the final buffer */
    uint32_t nout;             /* selected positions written */
};

/* Workspace of a top-k over `rows` rows (as_gpu_tk_prepare). */
struct as_tk_ws {
    as_tk_state *st;          /* [rows] */
    uint32_t *hist;           /* [2][rows][2048]: passes alternate */
    int32_t *buf;             /* [rows][AS_TK_CAP] the last undecided positions */
    unsigned long long *list; /* [rows][candcap] candidate keys */
    int64_t candcap;
    int64_t rows;
    int bpr;                  /* blocks per row of the top-k kernels */
};


/* Paged KV addressing of the kernels (as_gpu_attn.blocks): row n of sequence b is row
 * blocks[b * mb + (n >> shift)] * brows + (n & (2^shift - 1)) of the (kv head) base, in units of
 * the row stride; blocks == NULL: row n of the (sequence, kv head) base (as_kv_row in
 * as_gpu_kern.cuh). */
struct as_kv_pages {
    const int32_t *blocks;
    int32_t mb, shift;
    int64_t brows; /* stride_block / stride_n */
};
/* The addressing of a (validated) problem; contiguous when a->blocks is NULL. */
static inline as_kv_pages as_kv_pages_of(const as_gpu_attn *a)
{
    as_kv_pages g = {nullptr, 0, 0, 0};
    if (a->blocks) {
        g.blocks = a->blocks;
        g.mb = a->max_blocks;
        while ((1 << g.shift) < a->block_size) g.shift++;
        g.brows = a->stride_block / a->stride_n;
    }
    return g;
}

/* Parameters of the decode kernels (as_gpu_decode.cu, as_gpu_decode_tc.cu). */
struct as_dec_params {
    const void *k, *v;
    int64_t sb, sh, sn;
    as_kv_pages kvp; /* paged K/V (sb is then 0); never for page-bound rows */
    const int32_t *lens;
    const float *q;
    float qscale; /* scale * log2(e) */
    int32_t batch, hq, hkv, group, ngroups;
    int32_t unit_per_q; /* blockIdx.y is a query head (GM == 1) */
    int32_t sel_per_q;  /* selection rows are per query head */
    const int32_t *idx, *count;
    const float *logw;
    int32_t kcap;
    int32_t chunk, splits;
    float *part_o, *part_lse; /* [splits][batch*hq][D], [splits][batch*hq] (base 2) */
    float *o, *lse;
    float *sc;      /* scores mode (the tensor-core kernel's SC instance): base-2 scores */
    int64_t sc_lds; /* row stride of sc ([batch][hq][sc_lds]) */
    int32_t page;   /* page-bound mode: keys per page (k = kmax, v = kmin rows) */
    float *agg;     /* page-bound mode: max over the group per page ([batch][hkv][sc_lds]) and
                       pass 0 of the top-k of those rows (tk, tk_k) */
    as_tk_ws tk;
    int32_t tk_k;
};

/* Tensor-core decode (as_gpu_decode_tc.cu): 16-bit K/V, d = 64 or 128. Each block takes up to
 * AS_TC_HEADS query heads of one kv head and AS_TC_STEP keys per pipeline stage. */
#define AS_TC_HEADS 8
#define AS_TC_STEP 64
int as_gpu_tc_supported(as_gpu_dtype dt, int d);
/* Resident blocks per SM (per_sm) or, with per_sm == NULL, the launch on grid. */
as_status as_gpu_tc_decode(as_gpu_ctx *c, const as_gpu_attn *a, bool idx, const as_dec_params *p,
                           dim3 grid, int *per_sm, char *err);

/* Base-2 scores s2[b][hq][n] = scale log2(e) q.k_n on tensor cores (16-bit K, d = 64 or 128:
 * as_gpu_tc_supported) and, when part_lse2 != NULL, the base-2 log-sum-exp of each (split,
 * head) ([splits][batch][hq]). as_gpu_scores_tc_splits: the split count the launch will use. */
int32_t as_gpu_scores_tc_splits(as_gpu_ctx *c, const as_gpu_attn *a);
as_status as_gpu_launch_scores_tc(as_gpu_ctx *c, const as_gpu_attn *a, float *s2, int64_t lds,
                                  float *part_lse2, char *err);
/* Quest page bounds on tensor cores (base 2): per head to ub[b][hq][ldu] (agg == NULL), or the
 * max over each kv head's group to agg[b][hkv][ldu] with pass 0 of the top-k (k) of those rows
 * in tk (group <= AS_TC_HEADS). */
as_status as_gpu_launch_bounds_tc(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *pg,
                                  float *ub, float *agg, int64_t ldu, const as_tk_ws *tk,
                                  int32_t k, char *err);
as_status as_gpu_tc_scores(as_gpu_ctx *c, const as_gpu_attn *a, const as_dec_params *p,
                           dim3 grid, int *per_sm, char *err);

/* Validate a problem description (shapes, supported d, pointers). */
as_status as_gpu_check_attn(const as_gpu_attn *a, char *err);

/* Internal launchers (as_gpu_decode.cu). lse2 outputs are base-2 log-sum-exps. */
as_status as_gpu_launch_scores(as_gpu_ctx *c, const as_gpu_attn *a, float *s, int64_t lds,
                               float *part_lse2, int32_t *splits_out, char *err);
as_status as_gpu_launch_bounds(as_gpu_ctx *c, const as_gpu_attn *a, const as_gpu_pages *p,
                               float *ub, int64_t ldu, char *err);
/* Plan of the score kernel's split (for workspace sizing of the lse partials). */
int32_t as_gpu_scores_splits(as_gpu_ctx *c, const as_gpu_attn *a);

#endif
