/* attnscope attend: dense float64 attention outputs, the reference every approximation
 * (sparse methods, GPU kernels, the capture tool's check) is compared with. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_attn.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_attend[] =
    "usage: attnscope attend TRACE [--layer L] [--head H] [--query I] [--json|--csv]\n\n"
    "Compute, in float64, each query's attention output o = V^T softmax(scale K q) over the\n"
    "keys it may see (causal when the trace has positions). Records 'attend', one per\n"
    "layer x query head x query: layer, head, kv_head, query, position, n (keys seen),\n"
    "lse (log-sum-exp of the scaled scores), norm (||o||_2) and output (the d values).\n"
    "The table shows everything but the output vector.\n";

static int attend_opt(void *ctx, int opt, const char *arg)
{
    if (opt != 'i') return -1;
    return as_cli_parse_int("attend", "query", arg, 0, 1L << 40, ctx) ? 2 : 0;
}

/* One query head of a layer: an 'attend' record per query (--query: that one). */
static int attend_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    const long query = *(const long *)ctx;
    const as_layer *l = u->layer;
    double *p = malloc((size_t)l->n * sizeof *p), *out = malloc((size_t)l->d * sizeof *out);
    int rc = 0;
    if (!p || !out) rc = as_cli_fail(j->cmd, AS_ERR_NOMEM, "out of memory");
    for (int64_t qi = 0; qi < l->t && rc == 0; qi++) {
        if (query >= 0 && qi != query) continue;
        int64_t n;
        double lse;
        char err[AS_ERR_LEN];
        as_status st = as_attn_dense(l, u->head, qi, p, out, &n, &lse, err);
        if (st != AS_OK) {
            rc = as_cli_fail(j->cmd, st, err);
            break;
        }
        cJSON *rec = as_rec_new("attend", l->index, u->head);
        cJSON_AddNumberToObject(rec, "kv_head", (double)as_layer_kv_head(l, u->head));
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
    free(p);
    free(out);
    return rc;
}

int as_cmd_attend(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"query", required_argument, 0, 'i'},
                                         {0, 0, 0, 0}};
    long query = -1;
    as_cli_common c;
    int rc = as_cli_parse_trace("attend", argc, argv, opts, NULL, attend_opt, &query, &c);
    if (rc != AS_CLI_GO) return rc;
    as_cli_job j;
    if ((rc = as_cli_job_open(&j, "attend", &c, query, AS_CLI_UNITS_HEAD)) != 0) return rc;
    as_out *o = as_out_new(c.fmt, "attend", c.trace);
    rc = as_cli_job_run(&j, NULL, attend_unit, &query, o);
    static const char *const cols[] = {"layer", "head", "kv_head", "query", "position",
                                       "n", "lse", "norm", NULL};
    static const char *const fmts[] = {"%d", "%d", "%d", "%d", "%d", "%d", "%.6f", "%.6f", NULL};
    as_out_table(o, "attend", "Dense attention (float64)", cols, NULL, fmts);
    as_cli_job_close(&j);
    return as_out_done(o, rc);
}
