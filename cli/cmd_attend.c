/* attnscope attend: dense float64 attention outputs, the reference every approximation
 * (sparse methods, GPU kernels, the capture tool's check) is compared with. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "cli_help.h"
#include "cli_util.h"

const char as_help_attend[] =
    "usage: attnscope attend TRACE [--layer L] [--head H] [--query I] [--json|--csv]\n\n"
    "Compute, in float64, each query's attention output o = V^T softmax(scale K q) over the\n"
    "keys it may see (causal when the trace has positions). Records 'attend', one per\n"
    "layer x query head x query: layer, head, kv_head, query, position, n (keys seen),\n"
    "lse (log-sum-exp of the scaled scores), norm (||o||_2) and output (the d values).\n"
    "The table shows everything but the output vector.\n";

int as_cmd_attend(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"query", required_argument, 0, 'i'},
                                         {0, 0, 0, 0}};
    as_cli_common c;
    as_cli_common_init(&c);
    long query = -1;
    int opt, r;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, "attend", opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        if (opt == 'i') {
            if (as_cli_parse_int("attend", "query", optarg, 0, 1L << 40, &query)) return 2;
        } else {
            return as_cli_bad_option("attend", opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage("attend", "expects exactly one TRACE");
    c.trace = argv[optind];
    int code;
    as_trace *tr = as_cli_open_trace("attend", c.trace, 1, &code);
    if (!tr) return code;
    if (c.layer >= 0 && !as_trace_find_layer(tr, c.layer)) {
        as_trace_free(tr);
        return as_cli_usage("attend", "%s has no layer %d", c.trace, c.layer);
    }
    as_out *o = as_out_new(c.fmt, "attend", c.trace);
    char err[AS_ERR_LEN];
    int rc = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr) && rc == 0; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (c.layer >= 0 && l->index != c.layer) continue;
        if (c.head >= l->hq || query >= l->t) {
            rc = as_cli_usage("attend", "layer %d has %lld heads and %lld queries", l->index,
                              (long long)l->hq, (long long)l->t);
            break;
        }
        double *p = malloc((size_t)l->n * sizeof *p), *out = malloc((size_t)l->d * sizeof *out);
        if (!p || !out) {
            free(p);
            free(out);
            rc = as_cli_fail("attend", AS_ERR_NOMEM, "out of memory");
            break;
        }
        for (int64_t h = 0; h < l->hq && rc == 0; h++) {
            if (c.head >= 0 && h != c.head) continue;
            for (int64_t qi = 0; qi < l->t; qi++) {
                if (query >= 0 && qi != query) continue;
                int64_t n;
                double lse;
                as_status st = as_attn_dense(l, h, qi, p, out, &n, &lse, err);
                if (st != AS_OK) {
                    rc = as_cli_fail("attend", st, err);
                    break;
                }
                cJSON *rec = as_rec_new("attend", l->index, h);
                cJSON_AddNumberToObject(rec, "kv_head", (double)as_layer_kv_head(l, h));
                cJSON_AddNumberToObject(rec, "query", (double)qi);
                cJSON_AddNumberToObject(rec, "position", (double)as_layer_q_position(l, qi));
                cJSON_AddNumberToObject(rec, "n", (double)n);
                cJSON_AddNumberToObject(rec, "lse", lse);
                double nrm = 0;
                for (int64_t k = 0; k < l->d; k++) nrm += out[k] * out[k];
                cJSON_AddNumberToObject(rec, "norm", sqrt(nrm));
                cJSON_AddItemToObject(rec, "output", cJSON_CreateDoubleArray(out, (int)l->d));
                as_out_add(o, rec);
            }
        }
        free(p);
        free(out);
    }
    static const char *const cols[] = {"layer", "head", "kv_head", "query", "position",
                                       "n", "lse", "norm", NULL};
    static const char *const fmts[] = {"%d", "%d", "%d", "%d", "%d", "%d", "%.6f", "%.6f", NULL};
    as_out_table(o, "attend", "Dense attention (float64)", cols, NULL, fmts);
    as_trace_free(tr);
    if (rc != 0) {
        as_out_free(o);
        return rc;
    }
    return as_out_finish(o, stdout);
}
