/* attnscope rank: effective rank, stable rank and energy ranks of K, V, Q, the score matrix and
 * the attention matrix (analysis/as_rank). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_rank.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_par.h"
#include "cli_util.h"

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

/* One unit of the MPI engine (cli/cli_par.h): a layer, its records in the order of the plain
 * loop (per matrix and head, then the layer's statistics). */
typedef struct {
    as_trace *tr;
    const as_par_unit *units;
    as_fmt fmt;
    int head, want_sv;
    unsigned mats;
    long tile, mem;
    as_out *o; /* rank 0 */
    as_par_prog prog;
} rank_job;

static as_status rank_work(void *vctx, size_t u, as_mpi_buf *buf, char *err)
{
    rank_job *j = vctx;
    const as_layer *l = as_trace_layer(j->tr, j->units[u].li);
    as_status st = as_par_check_layer(j->tr, l, err);
    if (st != AS_OK) return st;
    as_par_prog_unit(&j->prog, j->units[u].cost);
    as_rank_opts ro;
    as_rank_opts_init(&ro);
    ro.head = j->head;
    ro.mats = j->mats;
    ro.tile = j->tile;
    ro.mem = (size_t)j->mem << 20;
    ro.want_sv = j->want_sv;
    ro.progress = as_par_prog_inner;
    ro.ctx = &j->prog;
    as_rank_rec *recs = NULL;
    size_t n = 0;
    st = as_rank_layer(l, &ro, &recs, &n, err);
    if (st != AS_OK) return st;
    as_out *o = as_out_new_unit(j->fmt, buf);
    for (size_t i = 0; i < n; i++) {
        const as_rank_rec *x = &recs[i];
        cJSON *rec = as_rec_new("rank", l->index, x->head);
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
        if (j->want_sv && x->sv)
            cJSON_AddItemToObject(rec, "sv", cJSON_CreateDoubleArray(x->sv, (int)x->info.nsv));
        as_out_add(o, rec);
    }
    /* per layer and matrix: statistics over the heads */
    if (j->fmt != AS_FMT_TABLE) {
        double *x = malloc((n ? n : 1) * sizeof *x);
        for (int m = 0; x && m < AS_MAT_COUNT; m++) {
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
                cJSON *rec = as_rec_new("rank_layer", l->index, -1);
                cJSON_AddStringToObject(rec, "matrix", as_matrix_name((as_matrix)m));
                cJSON_AddStringToObject(rec, "stat", as_stats_names[k]);
                cJSON_AddNumberToObject(rec, "heads", (double)cnt);
                for (int f = 0; f < 5; f++) cJSON_AddNumberToObject(rec, agg_fields[f], s[f].v[k]);
                as_out_add(o, rec);
            }
        }
        if (!x) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        free(x);
    }
    as_out_free(o);
    as_rank_recs_free(recs, n);
    return st;
}

static as_status rank_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    rank_job *j = vctx;
    (void)u;
    if (as_out_add_unit(j->o, in) != 0) return as_err_set(err, AS_ERR_IO, "a unit's records were damaged");
    return AS_OK;
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
    as_cli_common c;
    as_cli_common_init(&c);
    long tile = 0, mem = 256;
    unsigned mats = (1u << AS_MAT_COUNT) - 1;
    int want_sv = 0, opt, r;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, cmd, opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        if (opt == 'M') {
            if (as_matrix_parse_list(optarg, &mats) != 0)
                return as_cli_usage(cmd, "--matrix expects k, v, q, scores, attn (comma-separated)"
                                         " or all, got '%s'", optarg);
        } else if (opt == 's') {
            want_sv = 1;
        } else if (opt == 't') {
            if (as_cli_parse_int(cmd, "tile", optarg, 1, 1L << 24, &tile)) return 2;
        } else if (opt == 'm') {
            if (as_cli_parse_int(cmd, "mem", optarg, 1, 1L << 20, &mem)) return 2;
        } else if (opt == ':') {
            return as_cli_usage(cmd, "option '%s' needs a value", argv[optind - 1]);
        } else {
            return as_cli_bad_option(cmd, opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage(cmd, "expects exactly one TRACE");
    c.trace = argv[optind];
    int code;
    as_trace *tr = as_par_open_trace(cmd, c.trace, &code);
    if (!tr) return code;
    if (c.layer >= 0 && !as_trace_find_layer(tr, c.layer)) {
        as_trace_free(tr);
        return as_cli_usage(cmd, "%s has no layer %d", c.trace, c.layer);
    }
    size_t nl = as_trace_n_layers(tr);
    for (size_t li = 0; li < nl; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (c.layer >= 0 && l->index != c.layer) continue;
        if (c.head >= l->hq) {
            int rc = as_cli_usage(cmd, "layer %d has %lld query heads", l->index,
                                  (long long)l->hq);
            as_trace_free(tr);
            return rc;
        }
    }
    size_t nu = 0;
    as_par_unit *units = as_par_layer_units(&tr, 1, c.layer, NULL, NULL, &nu);
    if ((code = as_mpi_agree(units ? 0 : as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory"))) != 0) {
        free(units);
        as_trace_free(tr);
        return code;
    }
    rank_job j = {tr, units, c.fmt, c.head, want_sv, mats, tile, mem, NULL, {0}};
    if (as_mpi_rank() == 0) j.o = as_out_new(c.fmt, cmd, c.trace);
    double *cost = malloc((nu ? nu : 1) * sizeof *cost);
    for (size_t u = 0; cost && u < nu; u++) cost[u] = units[u].cost;
    as_par_prog_start(&j.prog, "rank", c.quiet);
    as_mpi_job job = {nu, cost, rank_work, rank_consume, &j, as_par_prog_engine, &j.prog};
    char err[AS_ERR_LEN];
    as_status st = cost ? as_mpi_run(&job, NULL, err) : as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_par_prog_end(&j.prog);
    free(cost);
    free(units);
    int rc = st == AS_OK ? 0 : as_par_fail(cmd, st, err);
    as_out *o = j.o;
    static const char *const cols[] = {"layer", "matrix", "head", "kv_head", "rows", "cols",
                                       "erank", "stable_rank", "r90", "r99", "rank", NULL};
    static const char *const heads[] = {"layer", "matrix", "head", "kv", "rows", "cols",
                                        "erank", "stable", "r90", "r99", "rank", NULL};
    static const char *const fmts[] = {"%d", "%s", "%d", "%d", "%d", "%d", "%.3f", "%.3f",
                                       "%d", "%d", "%d", NULL};
    as_trace_free(tr);
    if (rc != 0 || !o) {
        as_out_free(o);
        return rc;
    }
    as_out_table(o, "rank", "Effective, stable and energy ranks (float64)", cols, heads, fmts);
    return as_out_finish(o, stdout);
}
