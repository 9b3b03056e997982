/* attnscope info: what a trace holds. */
#include <stdlib.h>
#include <string.h>

#include "as_limits.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_info[] =
    "usage: attnscope info TRACE [--json|--csv] [--no-check]\n\n"
    "Print the layers of a trace (safetensors file or .npy directory): query heads Hq,\n"
    "kv heads Hkv, queries T, keys N, head dim d, dtypes, bytes, the softmax scale,\n"
    "whether queries carry positions (causal masking), and the metadata.\n"
    "Every tensor is scanned for NaN/Inf unless --no-check is given.\n\n"
    "Records: 'trace' (one), 'layer' (one per layer), 'meta' (one per metadata entry).\n";

static int info_opt(void *ctx, int opt, const char *arg)
{
    (void)arg;
    if (opt != 'n') return -1;
    *(int *)ctx = 0;
    return 0;
}

/* The 'trace' record (limits: why the values overflow, "" if they do not or were not checked). */
static void trace_record(as_out *o, const as_trace *tr, int check, const char *limits)
{
    cJSON *t = as_rec_new("trace", -1, -1);
    cJSON_DeleteItemFromObject(t, "layer");
    cJSON_AddStringToObject(t, "path", as_trace_path(tr));
    cJSON_AddStringToObject(t, "kind", as_trace_kind(tr));
    cJSON_AddNumberToObject(t, "bytes", (double)as_trace_file_bytes(tr));
    cJSON_AddStringToObject(t, "model", as_trace_model(tr));
    int rope = as_trace_rope_applied(tr);
    if (rope < 0) cJSON_AddNullToObject(t, "rope_applied");
    else cJSON_AddBoolToObject(t, "rope_applied", rope);
    cJSON_AddNumberToObject(t, "n_layers", (double)as_trace_n_layers(tr));
    cJSON_AddBoolToObject(t, "finite_checked", check);
    if (check) cJSON_AddBoolToObject(t, "within_limits", !limits[0]);
    if (limits[0]) cJSON_AddStringToObject(t, "limits", limits);
    as_out_add(o, t);
}

/* A 'layer' record per layer, a 'meta' record per metadata entry. */
static void layer_and_meta_records(as_out *o, const as_trace *tr)
{
    for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
        const as_layer *l = as_trace_layer(tr, i);
        cJSON *r2 = as_rec_new("layer", l->index, -1);
        cJSON_AddNumberToObject(r2, "hq", (double)l->hq);
        cJSON_AddNumberToObject(r2, "hkv", (double)l->hkv);
        cJSON_AddNumberToObject(r2, "group", (double)(l->hq / l->hkv));
        cJSON_AddNumberToObject(r2, "t", (double)l->t);
        cJSON_AddNumberToObject(r2, "n", (double)l->n);
        cJSON_AddNumberToObject(r2, "d", (double)l->d);
        cJSON_AddStringToObject(r2, "dtype_q", as_dtype_name(l->q->dtype));
        cJSON_AddStringToObject(r2, "dtype_kv", as_dtype_name(l->k->dtype));
        cJSON_AddNumberToObject(r2, "bytes", (double)(l->q->nbytes + l->k->nbytes + l->v->nbytes +
                                                      (l->q_pos ? l->q_pos->nbytes : 0)));
        cJSON_AddNumberToObject(r2, "scale", l->scale);
        cJSON_AddBoolToObject(r2, "causal", as_layer_is_causal(l));
        if (l->q_pos) {
            cJSON_AddNumberToObject(r2, "pos_first", (double)as_layer_q_position(l, 0));
            cJSON_AddNumberToObject(r2, "pos_last", (double)as_layer_q_position(l, l->t - 1));
        }
        as_out_add(o, r2);
    }
    for (size_t i = 0; i < as_trace_n_meta(tr); i++) {
        const as_meta *m = as_trace_meta_at(tr, i);
        cJSON *r3 = cJSON_CreateObject();
        cJSON_AddStringToObject(r3, "record", "meta");
        cJSON_AddStringToObject(r3, "key", m->key);
        cJSON_AddStringToObject(r3, "value", m->value);
        as_out_add(o, r3);
    }
}

/* The table's heading lines and the tables of 'layer' and 'meta'. */
static void info_tables(as_out *o, const as_trace *tr, as_fmt fmt, int check, const char *limits)
{
    if (fmt == AS_FMT_TABLE) {
        int rope = as_trace_rope_applied(tr);
        printf("trace   %s (%s, %llu bytes)\nmodel   %s\nrope    %s\nvalues  %s\n",
               as_trace_path(tr), as_trace_kind(tr), (unsigned long long)as_trace_file_bytes(tr),
               as_trace_model(tr), rope < 0 ? "not stated" : rope ? "applied" : "not applied",
               !check ? "not checked (--no-check)" : limits[0] ? "all finite, but" : "all finite");
        if (limits[0]) printf("        %s; other commands refuse this trace\n", limits);
        printf("\n");
    }
    static const char *const cols[] = {"layer", "hq", "hkv", "t", "n", "d", "dtype_q",
                                       "dtype_kv", "scale", "causal", "bytes", NULL};
    static const char *const heads[] = {"layer", "Hq", "Hkv", "T", "N", "d", "q dtype",
                                        "kv dtype", "scale", "causal", "bytes", NULL};
    static const char *const fmts[] = {"%d", "%d", "%d", "%d", "%d", "%d", "%s",
                                       "%s", "%.6g", "%s", "%.0f", NULL};
    as_out_table(o, "layer", "Layers", cols, heads, fmts);
    static const char *const mcols[] = {"key", "value", NULL};
    static const char *const mfmts[] = {"%s", "%s", NULL};
    as_out_table(o, "meta", "Metadata", mcols, mcols, mfmts);
}

int as_cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"no-check", no_argument, 0, 'n'},
                                         {0, 0, 0, 0}};
    as_cli_common c;
    int check = 1;
    int r = as_cli_parse_trace("info", argc, argv, opts, NULL, info_opt, &check, &c);
    if (r != AS_CLI_GO) return r;
    int code;
    as_trace *tr = as_cli_open_trace("info", c.trace, 0, &code);
    if (!tr) return code;
    char err[AS_ERR_LEN], limits[AS_ERR_LEN] = "";
    as_status st;
    if (check && (st = as_trace_check_finite(tr, err)) != AS_OK) {
        as_trace_free(tr);
        return as_cli_fail("info", st, err);
    }
    /* finite values whose scores or norms overflow: said, not refused (as_limits.h) */
    if (check && (st = as_trace_check_limits(tr, limits)) != AS_OK && st != AS_ERR_VALUE) {
        as_trace_free(tr);
        return as_cli_fail("info", st, limits);
    }
    as_out *o = as_out_new(c.fmt, "info", c.trace);
    trace_record(o, tr, check, limits);
    layer_and_meta_records(o, tr);
    info_tables(o, tr, c.fmt, check, limits);
    as_trace_free(tr);
    return as_out_finish(o, stdout);
}
