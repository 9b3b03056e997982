/* attnscope bottleneck: the d-dimensional bottleneck of attention (analysis/as_bottleneck):
 * collision-space dimension, TV witness (GLPK), absorption ratio of oracle top-k. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_bottleneck.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_bottleneck[] =
    "usage: attnscope bottleneck TRACE [--layer L] [--head H] [--query I] [--budget B[,B...]]\n"
    "                            [--witness] [--witness-keys K] [--json|--csv] [--quiet]\n\n"
    "The output o = V^T a is d-dimensional while a lives on the (n-1)-simplex. Per query:\n"
    "collision_dim = n - rank([V^T; 1^T]) (the directions of change of a that leave o\n"
    "unchanged); tv_witness: the total-variation distance of a second distribution a' with\n"
    "the same output, found by linear programs (GLPK; a lower bound on the largest such\n"
    "distance; only with --witness); absorption = ||V^T (a - a_k)|| / (||a - a_k||_1 max_i ||v_i||) for oracle\n"
    "top-k a_k (renormalised) at each budget (docs/theory.md, 'The bottleneck').\n\n"
    "Records: 'bottleneck' (per query: layer, head, kv_head, query, n, d, value_rank,\n"
    "collision_dim, collision_frac, v_max_norm, tv_witness, witness_keys, witness_residual),\n"
    "'absorption' (per query and budget: budget, k, captured_mass, absorption),\n"
    "'bottleneck_head' and 'absorption_head' (per head, stat = mean, min, q10, q25, median,\n"
    "q75, q90, max over its queries). The table shows the per-head means.\n\n"
    "  --query I           only query I (index into T)\n"
    "  --budget B,...      fractions of the visible keys for oracle top-k: 0.05 or 5%\n"
    "                      (default 1%,5%,10%,25%)\n"
    "  --witness           also solve the linear programs of the TV witness (off by default:\n"
    "                      about 0.05 s per query at 2048 keys, tens to hundreds of dense passes;\n"
    "                      without it tv_witness, witness_keys, witness_residual are null)\n"
    "  --witness-keys K    the witness may change only the K heaviest keys (default 2048;\n"
    "                      0: all n); keeps each LP small on long contexts\n"
    "  --no-witness        no linear programs (the default)\n"
    "Without GLPK in the build the witness is unavailable (tv_witness null, a note on stderr).\n";

static int parse_budgets(const char *s, double *out, size_t *n)
{
    size_t k = 0;
    const char *p = s;
    while (*p) {
        if (k == AS_BN_MAX_BUDGETS) return -1;
        char *end = NULL;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p) return -1;
        if (*end == '%') {
            v /= 100.0;
            end++;
        }
        if (!(v > 0 && v <= 1)) return -1;
        out[k++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    if (!k) return -1;
    *n = k;
    return 0;
}

static const char *const bn_fields[] = {"n", "collision_dim", "collision_frac", "tv_witness",
                                        "witness_residual"};
#define NBF 5

static double bn_value(const as_bn_query *b, int f)
{
    switch (f) {
    case 0: return (double)b->n;
    case 1: return (double)b->collision_dim;
    case 2: return b->n > 0 ? (double)b->collision_dim / (double)b->n : NAN;
    case 3: return b->tv_witness;
    default: return b->witness_residual;
    }
}

/* Statistics over a head's queries qs[0..count). Returns 0, or -1 on out of memory. */
static int head_records(as_out *o, as_fmt fmt, int layer, const as_bn_query *qs, int64_t count,
                        char *err)
{
    double *x = malloc((size_t)(count > 0 ? count : 1) * sizeof *x);
    if (!x) return -1;
    as_stats s[NBF];
    for (int f = 0; f < NBF; f++) {
        for (int64_t i = 0; i < count; i++) x[i] = bn_value(&qs[i], f);
        as_stats_compute(x, count, 1, &s[f], err);
    }
    int64_t h = qs[0].head, kvh = qs[0].kv_head;
    for (int k = 0; k < AS_STATS_N; k++) {
        if (fmt == AS_FMT_TABLE && k != 0) break;
        cJSON *r = as_rec_stat("bottleneck_head", layer, h, kvh, as_stats_names[k], count);
        cJSON_AddNumberToObject(r, "d", (double)qs[0].d);
        for (int f = 0; f < NBF; f++) cJSON_AddNumberToObject(r, bn_fields[f], s[f].v[k]);
        as_out_add(o, r);
    }
    static const char *const ab_fields[] = {"k", "captured_mass", "absorption"};
    for (size_t b = 0; b < qs[0].n_budgets; b++) {
        as_stats sa[3];
        for (int f = 0; f < 3; f++) {
            for (int64_t i = 0; i < count; i++)
                x[i] = f == 0 ? (double)qs[i].k[b] : f == 1 ? qs[i].captured_mass[b]
                                                           : qs[i].absorption[b];
            as_stats_compute(x, count, 1, &sa[f], err);
        }
        for (int k = 0; k < AS_STATS_N; k++) {
            if (fmt == AS_FMT_TABLE && k != 0) break;
            cJSON *r = as_rec_stat("absorption_head", layer, h, kvh, as_stats_names[k], count);
            cJSON_AddNumberToObject(r, "budget", qs[0].budget[b]);
            for (int f = 0; f < 3; f++) cJSON_AddNumberToObject(r, ab_fields[f], sa[f].v[k]);
            as_out_add(o, r);
        }
    }
    free(x);
    return 0;
}

typedef struct {
    as_bn_opts bo;
    long query, wkeys, tile;
    int witness;
} bn_cli_opts;

static int bn_opt(void *ctx, int opt, const char *arg)
{
    bn_cli_opts *b = ctx;
    const char *cmd = "bottleneck";
    switch (opt) {
    case 'i': return as_cli_parse_int(cmd, "query", arg, 0, 1L << 40, &b->query) ? 2 : 0;
    case 'b':
        if (parse_budgets(arg, b->bo.budgets, &b->bo.n_budgets) == 0) return 0;
        return as_cli_usage(cmd, "--budget expects fractions in (0, 1] such as 0.05 or 5%%, "
                                 "comma-separated (at most %d), got '%s'",
                            AS_BN_MAX_BUDGETS, arg);
    case 'w': return as_cli_parse_int(cmd, "witness-keys", arg, 0, 1L << 40, &b->wkeys) ? 2 : 0;
    case 'W': b->witness = 0; return 0;
    case 'X': b->witness = 1; return 0;
    case 't': return as_cli_parse_int(cmd, "tile", arg, 1, 1L << 24, &b->tile) ? 2 : 0;
    default: return -1;
    }
}

/* The per-query records of one query: 'bottleneck' and its 'absorption' per budget. */
static void query_records(as_out *o, int layer, const as_bn_query *b, int witness)
{
    cJSON *rec = as_rec_new("bottleneck", layer, b->head);
    cJSON_AddNumberToObject(rec, "kv_head", (double)b->kv_head);
    cJSON_AddNumberToObject(rec, "query", (double)b->query);
    cJSON_AddNumberToObject(rec, "n", (double)b->n);
    cJSON_AddNumberToObject(rec, "d", (double)b->d);
    cJSON_AddNumberToObject(rec, "value_rank", (double)b->value_rank);
    cJSON_AddNumberToObject(rec, "collision_dim", (double)b->collision_dim);
    cJSON_AddNumberToObject(rec, "collision_frac", bn_value(b, 2));
    cJSON_AddNumberToObject(rec, "v_max_norm", b->v_max_norm);
    cJSON_AddNumberToObject(rec, "tv_witness", b->tv_witness);
    if (witness) cJSON_AddNumberToObject(rec, "witness_keys", (double)b->witness_keys);
    else cJSON_AddNullToObject(rec, "witness_keys");
    cJSON_AddNumberToObject(rec, "witness_residual", b->witness_residual);
    as_out_add(o, rec);
    for (size_t k = 0; k < b->n_budgets; k++) {
        cJSON *a = as_rec_new("absorption", layer, b->head);
        cJSON_AddNumberToObject(a, "kv_head", (double)b->kv_head);
        cJSON_AddNumberToObject(a, "query", (double)b->query);
        cJSON_AddNumberToObject(a, "n", (double)b->n);
        cJSON_AddNumberToObject(a, "budget", b->budget[k]);
        cJSON_AddNumberToObject(a, "k", (double)b->k[k]);
        cJSON_AddNumberToObject(a, "captured_mass", b->captured_mass[k]);
        cJSON_AddNumberToObject(a, "absorption", b->absorption[k]);
        as_out_add(o, a);
    }
}

/* One layer (its selected heads): per-query records (JSON/CSV), then per head. */
static int bn_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    const bn_cli_opts *b = ctx;
    as_bn_opts bo = b->bo;
    bo.head = u->head;
    bo.progress = as_cli_job_progress;
    bo.ctx = j;
    as_bn_query *qs = NULL;
    size_t n = 0;
    char err[AS_ERR_LEN];
    as_status st = as_bn_layer(u->layer, &bo, &qs, &n, err);
    if (st != AS_OK) return as_cli_fail(j->cmd, st, err);
    const int layer = u->layer->index;
    for (size_t i = 0; i < n && j->c.fmt != AS_FMT_TABLE; i++)
        query_records(o, layer, &qs[i], bo.witness);
    /* per head: records are ordered by head, then query */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t k = i;
        while (k < n && qs[k].head == qs[i].head) k++;
        if (head_records(o, j->c.fmt, layer, qs + i, (int64_t)(k - i), err) != 0)
            rc = as_cli_fail(j->cmd, AS_ERR_NOMEM, "out of memory");
        i = k;
    }
    free(qs);
    return rc;
}

int as_cmd_bottleneck(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"query", required_argument, 0, 'i'},
                                         {"budget", required_argument, 0, 'b'},
                                         {"witness-keys", required_argument, 0, 'w'},
                                         {"no-witness", no_argument, 0, 'W'},
                                         {"witness", no_argument, 0, 'X'},
                                         {"tile", required_argument, 0, 't'},
                                         {0, 0, 0, 0}};
    const char *cmd = "bottleneck";
    bn_cli_opts b = {.query = -1, .wkeys = 2048, .tile = 0, .witness = 0};
    as_bn_opts_init(&b.bo);
    as_cli_common c;
    int rc = as_cli_parse_trace(cmd, argc, argv, opts, NULL, bn_opt, &b, &c);
    if (rc != AS_CLI_GO) return rc;
    if (b.witness && !as_bn_have_lp()) {
        if (!c.quiet)
            fprintf(stderr, "attnscope bottleneck: note: built without GLPK (Debian package "
                            "libglpk-dev): tv_witness is unavailable (null)\n");
        b.witness = 0;
    }
    as_cli_job j;
    if ((rc = as_cli_job_open(&j, cmd, &c, b.query, AS_CLI_UNITS_LAYER)) != 0) return rc;
    b.bo.query = b.query;
    b.bo.witness = b.witness;
    b.bo.witness_keys = b.wkeys;
    b.bo.tile = b.tile;
    as_out *o = as_out_new(c.fmt, cmd, c.trace);
    as_out_meta(o, "witness", cJSON_CreateBool(b.witness));
    rc = as_cli_job_run(&j, cmd, bn_unit, &b, o);
    static const char *const cols[] = {"layer", "head", "kv_head", "n", "d", "collision_dim",
                                       "collision_frac", "tv_witness", NULL};
    static const char *const heads[] = {"layer", "head", "kv", "n (mean)", "d", "collision dim",
                                        "/ n", "TV witness", NULL};
    static const char *const fmts[] = {"%d", "%d", "%d", "%.0f", "%d", "%.1f", "%.4f", "%.4f",
                                       NULL};
    as_out_table(o, "bottleneck_head", "The d-dimensional bottleneck per head (means over queries)",
                 cols, heads, fmts);
    static const char *const acols[] = {"layer", "head", "budget", "k", "captured_mass",
                                        "absorption", NULL};
    static const char *const aheads[] = {"layer", "head", "budget", "k (mean)", "captured mass",
                                         "absorption", NULL};
    static const char *const afmts[] = {"%d", "%d", "%.3f", "%.1f", "%.4f", "%.4f", NULL};
    as_out_table(o, "absorption_head", "Absorption of oracle top-k (means over queries)", acols,
                 aheads, afmts);
    as_cli_job_close(&j);
    return as_out_done(o, rc);
}
