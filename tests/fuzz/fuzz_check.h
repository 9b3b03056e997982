/* fuzz_check.h: what the trace harnesses check on a trace the reader accepted: everything a
 * command would touch is read (NaN/Inf scan, every q/k/v row of every head, positions,
 * visibility, GQA mapping, metadata) and the structure it reports must be safe to use. */
#ifndef AS_FUZZ_CHECK_H
#define AS_FUZZ_CHECK_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "as_trace.h"

#define CHECK(c)                                                                             \
    do {                                                                                     \
        if (!(c)) __builtin_trap();                                                          \
    } while (0)

/* Writes n bytes of data to path (the harness's input file); aborts on any failure, which is
 * the harness's own environment failing, not the reader. */
static void fuzz_write_file(const char *path, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

static void fuzz_check_trace(const as_trace *tr)
{
    char err[AS_ERR_LEN];
    as_status st;
    st = as_trace_check_finite(tr, err);
    CHECK(st == AS_OK || st == AS_ERR_VALUE);
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        const as_layer *l = as_trace_layer(tr, i);
        CHECK(l->hq > 0 && l->hkv > 0 && l->hq % l->hkv == 0 && l->t > 0 && l->n > 0 && l->d > 0);
        CHECK(l->scale > 0);
        CHECK(as_trace_find_layer(tr, l->index) == l);
        if (l->d > 4096 || l->n > 4096) continue;
        double *row = malloc((size_t)(l->n * l->d) * sizeof *row);
        if (!row) abort();
        for (int64_t h = 0; h < l->hkv; h++) {
            as_layer_read_k(l, h, 0, l->n, row);
            as_layer_read_v(l, h, 0, l->n, row);
        }
        for (int64_t h = 0; h < l->hq; h++) {
            int64_t kv = as_layer_kv_head(l, h);
            CHECK(kv >= 0 && kv < l->hkv);
            for (int64_t qi = 0; qi < l->t; qi++) {
                as_layer_read_q(l, h, qi, row);
                int64_t vis = as_layer_visible(l, qi);
                CHECK(vis >= 1 && vis <= l->n);
                CHECK(as_layer_q_position(l, qi) == vis - 1 || !as_layer_is_causal(l));
            }
        }
        free(row);
    }
    for (size_t i = 0; i < as_trace_n_meta(tr); i++) CHECK(as_trace_meta_at(tr, i)->key);
    (void)as_trace_model(tr);
    (void)as_trace_rope_applied(tr);
}

#endif
