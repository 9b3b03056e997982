/* attnscope rank: effective rank, stable rank and energy ranks of K, V, Q, the score matrix and
 * the attention matrix (analysis/as_rank). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_rank.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_rank[] =
    "usage: attnscope rank TRACE [--layer L] [--head H] [--matrix M[,M...]|all] [--sv]\n"
    "                      [--tile N] [--mem MIB] [--json|--csv] [--quiet]\n\n"
    "Spectra of the matrices of each layer, in float64: keys K and values V of each kv head\n"
    "(N x d, streamed thin QR), queries Q (T x d), the score matrix S = scale Q K^T (T x N,\n"
    "all N keys, through the d x d product R_Q R_K^T, never formed) and the attention matrix A\n"
    "(T x N, row i = query i's softmax weights, zero on keys it may not see; streamed QR of\n"
    "tiles of A^T) of each query head. From the singular values: erank (Roy & Vetterli 2007),\n"
    "stable_rank (||M||_F^2 / ||M||_2^2), r90 and r99 (energy ranks), rank (numerical rank,\n"
    "NumPy's tolerance), s_max and fro (docs/theory.md, 'Effective rank').\n\n"
    "Records: 'rank' (layer, head: the kv head for k/v, the query head otherwise; kv_head,\n"
    "matrix = k|v|q|scores|attn, rows, cols, nsv, erank, stable_rank, r90, r99, rank, s_max,\n"
    "fro, and sv with --sv) and 'rank_layer' (per layer and matrix, stat = mean, min, q10,\n"
    "q25, median, q75, q90, max over heads; --json/--csv only).\n\n"
    "  --matrix M   k, v, q, scores, attn, comma-separated, or all (default)\n"
    "  --sv         include the singular values (descending) in the records\n"
    "  --tile N     keys per tile (default 4096)\n"
    "  --mem MIB    memory for a block of score rows in the attention pass (default 256)\n";

static const char *const agg_fields[] = {"erank", "stable_rank", "r90", "r99", "rank"};

static double agg_value(const as_rank_info *i, int f)
{
    switch (f) {
    case 0: return i->erank;
    case 1: return i->stable_rank;
    case 2: return (double)i->r90;
    case 3: return (double)i->r99;
    default: return (double)i->rank;
    }
}

typedef struct {
    long tile, mem;
    unsigned mats;
    int want_sv;
} rank_opts;

static int rank_opt(void *ctx, int opt, const char *arg)
{
    rank_opts *ro = ctx;
    switch (opt) {
    case 'M':
        if (as_matrix_parse_list(arg, &ro->mats) == 0) return 0;
        return as_cli_usage("rank", "--matrix expects k, v, q, scores, attn (comma-separated)"
                                    " or all, got '%s'", arg);
    case 's': ro->want_sv = 1; return 0;
    case 't': return as_cli_parse_int("rank", "tile", arg, 1, 1L << 24, &ro->tile) ? 2 : 0;
    case 'm': return as_cli_parse_int("rank", "mem", arg, 1, 1L << 20, &ro->mem) ? 2 : 0;
    default: return -1;
    }
}

static void rank_record(as_out *o, int layer, const as_rank_rec *x, int want_sv)
{
    cJSON *rec = as_rec_new("rank", layer, x->head);
    cJSON_AddNumberToObject(rec, "kv_head", (double)x->kv_head);
    cJSON_AddStringToObject(rec, "matrix", as_matrix_name(x->matrix));
    cJSON_AddNumberToObject(rec, "rows", (double)x->info.rows);
    cJSON_AddNumberToObject(rec, "cols", (double)x->info.cols);
    cJSON_AddNumberToObject(rec, "nsv", (double)x->info.nsv);
    cJSON_AddNumberToObject(rec, "erank", x->info.erank);
    cJSON_AddNumberToObject(rec, "stable_rank", x->info.stable_rank);
    cJSON_AddNumberToObject(rec, "r90", (double)x->info.r90);
    cJSON_AddNumberToObject(rec, "r99", (double)x->info.r99);
    cJSON_AddNumberToObject(rec, "rank", (double)x->info.rank);
    cJSON_AddNumberToObject(rec, "s_max", x->info.s_max);
    cJSON_AddNumberToObject(rec, "fro", x->info.fro);
    if (want_sv && x->sv)
        cJSON_AddItemToObject(rec, "sv", cJSON_CreateDoubleArray(x->sv, (int)x->info.nsv));
    as_out_add(o, rec);
}

/* Per layer and matrix: statistics over the heads. Returns 0, or -1 on out of memory. */
static int layer_records(as_out *o, int layer, const as_rank_rec *recs, size_t n)
{
    char err[AS_ERR_LEN];
    double *x = malloc((n ? n : 1) * sizeof *x);
    if (!x) return -1;
    for (int m = 0; m < AS_MAT_COUNT; m++) {
        int64_t cnt = 0;
        as_stats s[5];
        for (int f = 0; f < 5; f++) {
            cnt = 0;
            for (size_t i = 0; i < n; i++)
                if (recs[i].matrix == (as_matrix)m) x[cnt++] = agg_value(&recs[i].info, f);
            as_stats_compute(x, cnt, 1, &s[f], err);
        }
        if (cnt == 0) continue;
        for (int k = 0; k < AS_STATS_N; k++) {
            cJSON *rec = as_rec_new("rank_layer", layer, -1);
            cJSON_AddStringToObject(rec, "matrix", as_matrix_name((as_matrix)m));
            cJSON_AddStringToObject(rec, "stat", as_stats_names[k]);
            cJSON_AddNumberToObject(rec, "heads", (double)cnt);
            for (int f = 0; f < 5; f++) cJSON_AddNumberToObject(rec, agg_fields[f], s[f].v[k]);
            as_out_add(o, rec);
        }
    }
    free(x);
    return 0;
}

/* One layer (its selected heads): the 'rank' records, then 'rank_layer' (JSON/CSV). */
static int rank_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    const rank_opts *opt = ctx;
    as_rank_opts ro;
    as_rank_opts_init(&ro);
    ro.head = u->head;
    ro.mats = opt->mats;
    ro.tile = opt->tile;
    ro.mem = (size_t)opt->mem << 20;
    ro.want_sv = opt->want_sv;
    ro.progress = as_cli_job_progress;
    ro.ctx = j;
    as_rank_rec *recs = NULL;
    size_t n = 0;
    char err[AS_ERR_LEN];
    as_status st = as_rank_layer(u->layer, &ro, &recs, &n, err);
    if (st != AS_OK) return as_cli_fail(j->cmd, st, err);
    for (size_t i = 0; i < n; i++) rank_record(o, u->layer->index, &recs[i], opt->want_sv);
    int rc = 0;
    if (j->c.fmt != AS_FMT_TABLE && layer_records(o, u->layer->index, recs, n) != 0)
        rc = as_cli_fail(j->cmd, AS_ERR_NOMEM, "out of memory");
    as_rank_recs_free(recs, n);
    return rc;
}

int as_cmd_rank(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"matrix", required_argument, 0, 'M'},
                                         {"sv", no_argument, 0, 's'},
                                         {"tile", required_argument, 0, 't'},
                                         {"mem", required_argument, 0, 'm'},
                                         {0, 0, 0, 0}};
    const char *cmd = "rank";
    rank_opts ro = {.tile = 0, .mem = 256, .mats = (1u << AS_MAT_COUNT) - 1, .want_sv = 0};
    as_cli_common c;
    int rc = as_cli_parse_trace(cmd, argc, argv, opts, NULL, rank_opt, &ro, &c);
    if (rc != AS_CLI_GO) return rc;
    as_cli_job j;
    if ((rc = as_cli_job_open(&j, cmd, &c, -1, AS_CLI_UNITS_LAYER)) != 0) return rc;
    as_out *o = as_out_new(c.fmt, cmd, c.trace);
    rc = as_cli_job_run(&j, cmd, rank_unit, &ro, o);
    static const char *const cols[] = {"layer", "matrix", "head", "kv_head", "rows", "cols",
                                       "erank", "stable_rank", "r90", "r99", "rank", NULL};
    static const char *const heads[] = {"layer", "matrix", "head", "kv", "rows", "cols",
                                        "erank", "stable", "r90", "r99", "rank", NULL};
    static const char *const fmts[] = {"%d", "%s", "%d", "%d", "%d", "%d", "%.3f", "%.3f",
                                       "%d", "%d", "%d", NULL};
    as_out_table(o, "rank", "Effective, stable and energy ranks (float64)", cols, heads, fmts);
    as_cli_job_close(&j);
    return as_out_done(o, rc);
}
