/* attnscope bottleneck: the d-dimensional bottleneck of attention (analysis/as_bottleneck):
 * collision-space dimension, TV witness (GLPK), absorption ratio of oracle top-k. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_bottleneck.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_par.h"
#include "cli_util.h"

const char as_help_bottleneck[] =
    "usage: attnscope bottleneck TRACE [--layer L] [--head H] [--query I] [--budget B[,B...]]\n"
    "                            [--witness-keys K] [--no-witness] [--json|--csv] [--quiet]\n\n"
    "The output o = V^T a is d-dimensional while a lives on the (n-1)-simplex. Per query:\n"
    "collision_dim = n - rank([V^T; 1^T]) (the directions of change of a that leave o\n"
    "unchanged); tv_witness: the total-variation distance of a second distribution a' with\n"
    "the same output, found by linear programs (GLPK; a lower bound on the largest such\n"
    "distance); absorption = ||V^T (a - a_k)|| / (||a - a_k||_1 max_i ||v_i||) for oracle\n"
    "top-k a_k (renormalised) at each budget (docs/theory.md, 'The bottleneck').\n\n"
    "Records: 'bottleneck' (per query: layer, head, kv_head, query, n, d, value_rank,\n"
    "collision_dim, collision_frac, v_max_norm, tv_witness, witness_keys, witness_residual),\n"
    "'absorption' (per query and budget: budget, k, captured_mass, absorption),\n"
    "'bottleneck_head' and 'absorption_head' (per head, stat = mean, min, q10, q25, median,\n"
    "q75, q90, max over its queries). The table shows the per-head means.\n\n"
    "  --query I           only query I (index into T)\n"
    "  --budget B,...      fractions of the visible keys for oracle top-k: 0.05 or 5%\n"
    "                      (default 1%,5%,10%,25%)\n"
    "  --witness-keys K    the witness may change only the K heaviest keys (default 2048;\n"
    "                      0: all n); keeps each LP small on long contexts\n"
    "  --no-witness        skip the linear programs (tv_witness null)\n"
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
        cJSON *r = as_rec_new("bottleneck_head", layer, h);
        cJSON_AddNumberToObject(r, "kv_head", (double)kvh);
        cJSON_AddStringToObject(r, "stat", as_stats_names[k]);
        cJSON_AddNumberToObject(r, "queries", (double)count);
        cJSON_AddNumberToObject(r, "d", (double)qs[0].d);
        for (int f = 0; f < NBF; f++) cJSON_AddNumberToObject(r, bn_fields[f], s[f].v[k]);
        as_out_add(o, r);
    }
    for (size_t b = 0; b < qs[0].n_budgets; b++) {
        as_stats sk, sc, sa;
        for (int64_t i = 0; i < count; i++) x[i] = (double)qs[i].k[b];
        as_stats_compute(x, count, 1, &sk, err);
        for (int64_t i = 0; i < count; i++) x[i] = qs[i].captured_mass[b];
        as_stats_compute(x, count, 1, &sc, err);
        for (int64_t i = 0; i < count; i++) x[i] = qs[i].absorption[b];
        as_stats_compute(x, count, 1, &sa, err);
        for (int k = 0; k < AS_STATS_N; k++) {
            if (fmt == AS_FMT_TABLE && k != 0) break;
            cJSON *r = as_rec_new("absorption_head", layer, h);
            cJSON_AddNumberToObject(r, "kv_head", (double)kvh);
            cJSON_AddStringToObject(r, "stat", as_stats_names[k]);
            cJSON_AddNumberToObject(r, "queries", (double)count);
            cJSON_AddNumberToObject(r, "budget", qs[0].budget[b]);
            cJSON_AddNumberToObject(r, "k", sk.v[k]);
            cJSON_AddNumberToObject(r, "captured_mass", sc.v[k]);
            cJSON_AddNumberToObject(r, "absorption", sa.v[k]);
            as_out_add(o, r);
        }
    }
    free(x);
    return 0;
}

/* One unit of the MPI engine (cli/cli_par.h): a layer, its records in the order of the plain
 * loop (per query with its absorption, then per head). */
typedef struct {
    as_trace *tr;
    const as_par_unit *units;
    as_fmt fmt;
    int witness;
    as_bn_opts bo;
    as_out *o; /* rank 0 */
    as_par_prog prog;
} bn_job;

static as_status bn_work(void *vctx, size_t u, as_mpi_buf *buf, char *err)
{
    bn_job *j = vctx;
    const as_layer *l = as_trace_layer(j->tr, j->units[u].li);
    as_status st = as_par_check_layer(j->tr, l, err);
    if (st != AS_OK) return st;
    as_par_prog_unit(&j->prog, j->units[u].cost);
    as_bn_query *qs = NULL;
    size_t n = 0;
    st = as_bn_layer(l, &j->bo, &qs, &n, err);
    if (st != AS_OK) return st;
    as_out *o = as_out_new_unit(j->fmt, buf);
    for (size_t i = 0; i < n && j->fmt != AS_FMT_TABLE; i++) {
        const as_bn_query *b = &qs[i];
        cJSON *rec = as_rec_new("bottleneck", l->index, b->head);
        cJSON_AddNumberToObject(rec, "kv_head", (double)b->kv_head);
        cJSON_AddNumberToObject(rec, "query", (double)b->query);
        cJSON_AddNumberToObject(rec, "n", (double)b->n);
        cJSON_AddNumberToObject(rec, "d", (double)b->d);
        cJSON_AddNumberToObject(rec, "value_rank", (double)b->value_rank);
        cJSON_AddNumberToObject(rec, "collision_dim", (double)b->collision_dim);
        cJSON_AddNumberToObject(rec, "collision_frac", bn_value(b, 2));
        cJSON_AddNumberToObject(rec, "v_max_norm", b->v_max_norm);
        cJSON_AddNumberToObject(rec, "tv_witness", b->tv_witness);
        if (j->witness) cJSON_AddNumberToObject(rec, "witness_keys", (double)b->witness_keys);
        else cJSON_AddNullToObject(rec, "witness_keys");
        cJSON_AddNumberToObject(rec, "witness_residual", b->witness_residual);
        as_out_add(o, rec);
        for (size_t k = 0; k < b->n_budgets; k++) {
            cJSON *a = as_rec_new("absorption", l->index, b->head);
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
    /* per head: records are ordered by head, then query */
    for (size_t i = 0; i < n && st == AS_OK;) {
        size_t k = i;
        while (k < n && qs[k].head == qs[i].head) k++;
        if (head_records(o, j->fmt, l->index, qs + i, (int64_t)(k - i), err) != 0)
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        i = k;
    }
    as_out_free(o);
    free(qs);
    return st;
}

static as_status bn_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    bn_job *j = vctx;
    (void)u;
    if (as_out_add_unit(j->o, in) != 0) return as_err_set(err, AS_ERR_IO, "a unit's records were damaged");
    return AS_OK;
}

int as_cmd_bottleneck(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"query", required_argument, 0, 'i'},
                                         {"budget", required_argument, 0, 'b'},
                                         {"witness-keys", required_argument, 0, 'w'},
                                         {"no-witness", no_argument, 0, 'W'},
                                         {"tile", required_argument, 0, 't'},
                                         {0, 0, 0, 0}};
    const char *cmd = "bottleneck";
    as_cli_common c;
    as_cli_common_init(&c);
    as_bn_opts bo;
    as_bn_opts_init(&bo);
    long query = -1, wkeys = 2048, tile = 0;
    int witness = 1, opt, r;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, cmd, opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        if (opt == 'i') {
            if (as_cli_parse_int(cmd, "query", optarg, 0, 1L << 40, &query)) return 2;
        } else if (opt == 'b') {
            if (parse_budgets(optarg, bo.budgets, &bo.n_budgets) != 0)
                return as_cli_usage(cmd, "--budget expects fractions in (0, 1] such as 0.05 or "
                                         "5%%, comma-separated (at most %d), got '%s'",
                                    AS_BN_MAX_BUDGETS, optarg);
        } else if (opt == 'w') {
            if (as_cli_parse_int(cmd, "witness-keys", optarg, 0, 1L << 40, &wkeys)) return 2;
        } else if (opt == 'W') {
            witness = 0;
        } else if (opt == 't') {
            if (as_cli_parse_int(cmd, "tile", optarg, 1, 1L << 24, &tile)) return 2;
        } else if (opt == ':') {
            return as_cli_usage(cmd, "option '%s' needs a value", argv[optind - 1]);
        } else {
            return as_cli_bad_option(cmd, opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage(cmd, "expects exactly one TRACE");
    c.trace = argv[optind];
    if (witness && !as_bn_have_lp()) {
        if (!c.quiet)
            fprintf(stderr, "attnscope bottleneck: note: built without GLPK (Debian package "
                            "libglpk-dev): tv_witness is unavailable (null)\n");
        witness = 0;
    }
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
        if (c.head >= l->hq || query >= l->t) {
            int rc2 = as_cli_usage(cmd, "layer %d has %lld query heads and %lld queries",
                                   l->index, (long long)l->hq, (long long)l->t);
            as_trace_free(tr);
            return rc2;
        }
    }
    bo.head = c.head;
    bo.query = query;
    bo.witness = witness;
    bo.witness_keys = wkeys;
    bo.tile = tile;
    size_t nu = 0;
    as_par_unit *units = as_par_layer_units(&tr, 1, c.layer, NULL, NULL, &nu);
    if ((code = as_mpi_agree(units ? 0 : as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory"))) != 0) {
        free(units);
        as_trace_free(tr);
        return code;
    }
    bn_job j = {tr, units, c.fmt, witness, bo, NULL, {0}};
    j.bo.progress = as_par_prog_inner;
    j.bo.ctx = &j.prog;
    if (as_mpi_rank() == 0) {
        j.o = as_out_new(c.fmt, cmd, c.trace);
        as_out_meta(j.o, "witness", cJSON_CreateBool(witness));
    }
    double *cost = malloc((nu ? nu : 1) * sizeof *cost);
    for (size_t u = 0; cost && u < nu; u++) cost[u] = units[u].cost;
    as_par_prog_start(&j.prog, "bottleneck", c.quiet);
    as_mpi_job job = {nu, cost, bn_work, bn_consume, &j, as_par_prog_engine, &j.prog};
    char err[AS_ERR_LEN];
    as_status st = cost ? as_mpi_run(&job, NULL, err) : as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_par_prog_end(&j.prog);
    free(cost);
    free(units);
    int rc = st == AS_OK ? 0 : as_par_fail(cmd, st, err);
    as_out *o = j.o;
    static const char *const cols[] = {"layer", "head", "kv_head", "n", "d", "collision_dim",
                                       "collision_frac", "tv_witness", NULL};
    static const char *const heads[] = {"layer", "head", "kv", "n (mean)", "d", "collision dim",
                                        "/ n", "TV witness", NULL};
    static const char *const fmts[] = {"%d", "%d", "%d", "%.0f", "%d", "%.1f", "%.4f", "%.4f",
                                       NULL};
    as_trace_free(tr);
    if (rc != 0 || !o) {
        as_out_free(o);
        return rc;
    }
    as_out_table(o, "bottleneck_head", "The d-dimensional bottleneck per head (means over queries)",
                 cols, heads, fmts);
    static const char *const acols[] = {"layer", "head", "budget", "k", "captured_mass",
                                        "absorption", NULL};
    static const char *const aheads[] = {"layer", "head", "budget", "k (mean)", "captured mass",
                                         "absorption", NULL};
    static const char *const afmts[] = {"%d", "%d", "%.3f", "%.1f", "%.4f", "%.4f", NULL};
    as_out_table(o, "absorption_head", "Absorption of oracle top-k (means over queries)", acols,
                 aheads, afmts);
    return as_out_finish(o, stdout);
}
