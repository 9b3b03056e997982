/* attnscope entropy: attention entropy and top-k mass of every decode query (analysis/as_entropy),
 * per query and aggregated per head and per layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_entropy.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_par.h"
#include "cli_util.h"

const char as_help_entropy[] =
    "usage: attnscope entropy TRACE [--layer L] [--head H] [--query I] [--no-topk]\n"
    "                         [--tile N] [--mem MIB] [--json|--csv] [--quiet]\n\n"
    "Entropy of each decode query's attention a = softmax(scale K q) over the keys it may see,\n"
    "in float64 with a stable log-sum-exp: entropy_nats, entropy_bits, entropy_norm (H / ln n),\n"
    "eff_support (exp H), and the top-k mass curve: k50, k90, k99 (the fewest keys holding\n"
    "50/90/99% of the mass) with k50_frac.. = k / n. Streams key tiles: memory does not grow\n"
    "with N (docs/theory.md, 'Attention entropy').\n\n"
    "Records: 'entropy' (per query: layer, head, kv_head, query, position, n, lse and the\n"
    "fields above), 'entropy_head' (per head and statistic: stat = mean, min, q10, q25, median,\n"
    "q75, q90, max over the head's queries) and 'entropy_layer' (the same over a layer's heads\n"
    "and queries). The table shows the per-head means; --json/--csv carry every record.\n\n"
    "  --query I    only query I (index into T) in the per-query records\n"
    "  --no-topk    skip k50/k90/k99 (one pass over the keys instead of two)\n"
    "  --tile N     keys per tile (default 4096)\n"
    "  --mem MIB    memory for a block of score rows and histograms (default 256)\n";

static const char *const q_fields[] = {"entropy_nats", "entropy_bits", "entropy_norm",
                                       "eff_support",  "k50",          "k90",
                                       "k99",          "k50_frac",     "k90_frac",
                                       "k99_frac"};
#define NQF ((int)(sizeof q_fields / sizeof q_fields[0]))

static double q_field(const as_entropy_q *q, int f)
{
    switch (f) {
    case 0: return q->entropy_nats;
    case 1: return q->entropy_bits;
    case 2: return q->entropy_norm;
    case 3: return q->eff_support;
    case 4: return q->k50 >= 0 ? (double)q->k50 : NAN;
    case 5: return q->k90 >= 0 ? (double)q->k90 : NAN;
    case 6: return q->k99 >= 0 ? (double)q->k99 : NAN;
    case 7: return q->k50_frac;
    case 8: return q->k90_frac;
    default: return q->k99_frac;
    }
}

/* Aggregate records (one per statistic; table mode: the mean only) over count queries. */
static int add_stats(as_out *o, as_fmt fmt, const char *kind, int layer, int64_t head,
                     int64_t kvh, const as_entropy_q *const *qs, int64_t count, int topk,
                     char *err)
{
    double *x = malloc((size_t)(count > 0 ? count : 1) * sizeof *x);
    as_stats st[NQF + 1];
    if (!x) return -1;
    for (int f = 0; f <= NQF; f++) {
        for (int64_t i = 0; i < count; i++) x[i] = f == NQF ? (double)qs[i]->n : q_field(qs[i], f);
        if (as_stats_compute(x, count, 1, &st[f], err) != AS_OK) {
            free(x);
            return -1;
        }
    }
    free(x);
    for (int s = 0; s < AS_STATS_N; s++) {
        if (fmt == AS_FMT_TABLE && s != 0) break;
        cJSON *r = as_rec_new(kind, layer, head);
        if (kvh >= 0) cJSON_AddNumberToObject(r, "kv_head", (double)kvh);
        cJSON_AddStringToObject(r, "stat", as_stats_names[s]);
        cJSON_AddNumberToObject(r, "queries", (double)count);
        cJSON_AddNumberToObject(r, "n", st[NQF].v[s]);
        for (int f = 0; f < NQF; f++) {
            if (!topk && f >= 4) break;
            cJSON_AddNumberToObject(r, q_fields[f], st[f].v[s]);
        }
        as_out_add(o, r);
    }
    return 0;
}

/* One unit of the MPI engine (cli/cli_par.h): a layer, its records in the order of the plain
 * loop: per query (JSON/CSV), per head, then the layer's aggregate. */
typedef struct {
    as_trace *tr;
    const as_par_unit *units;
    as_fmt fmt;
    int head, topk;
    long query, tile, mem;
    as_out *o; /* rank 0 */
    as_par_prog prog;
} ent_job;

static as_status ent_work(void *vctx, size_t u, as_mpi_buf *buf, char *err)
{
    ent_job *j = vctx;
    const as_layer *l = as_trace_layer(j->tr, j->units[u].li);
    as_status st = as_par_check_layer(j->tr, l, err);
    if (st != AS_OK) return st;
    as_par_prog_unit(&j->prog, j->units[u].cost);
    as_entropy_opts eo;
    as_entropy_opts_init(&eo);
    eo.head = j->head;
    eo.topk = j->topk;
    eo.tile = j->tile;
    eo.mem = (size_t)j->mem << 20;
    eo.progress = as_par_prog_inner;
    eo.ctx = &j->prog;
    as_entropy_layer_res res;
    st = as_entropy_layer(l, &eo, &res, err);
    if (st != AS_OK) return st;
    const int64_t t = l->t;
    const as_entropy_q **all = malloc((size_t)(l->hq * t > 0 ? l->hq * t : 1) * sizeof *all);
    if (!all) {
        as_entropy_layer_res_free(&res);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    as_out *o = as_out_new_unit(j->fmt, buf);
    int64_t nall = 0;
    for (int64_t h = 0; h < l->hq && st == AS_OK; h++) {
        if (j->head >= 0 && h != j->head) continue;
        int64_t kvh = as_layer_kv_head(l, h);
        if (j->fmt != AS_FMT_TABLE) {
            for (int64_t qi = 0; qi < t; qi++) {
                if (j->query >= 0 && qi != j->query) continue;
                const as_entropy_q *q = &res.q[h * t + qi];
                cJSON *rec = as_rec_new("entropy", l->index, h);
                cJSON_AddNumberToObject(rec, "kv_head", (double)kvh);
                cJSON_AddNumberToObject(rec, "query", (double)qi);
                cJSON_AddNumberToObject(rec, "position", (double)as_layer_q_position(l, qi));
                cJSON_AddNumberToObject(rec, "n", (double)q->n);
                cJSON_AddNumberToObject(rec, "lse", q->lse);
                for (int f = 0; f < NQF; f++) {
                    if (!j->topk && f >= 4) break;
                    cJSON_AddNumberToObject(rec, q_fields[f], q_field(q, f));
                }
                as_out_add(o, rec);
            }
        }
        const as_entropy_q **hs = all + nall;
        for (int64_t qi = 0; qi < t; qi++) all[nall++] = &res.q[h * t + qi];
        if (add_stats(o, j->fmt, "entropy_head", l->index, h, kvh, hs, t, j->topk, err) != 0)
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    if (st == AS_OK &&
        add_stats(o, j->fmt, "entropy_layer", l->index, -1, -1, all, nall, j->topk, err) != 0)
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_out_free(o);
    free(all);
    as_entropy_layer_res_free(&res);
    return st;
}

static as_status ent_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    ent_job *j = vctx;
    (void)u;
    if (as_out_add_unit(j->o, in) != 0) return as_err_set(err, AS_ERR_IO, "a unit's records were damaged");
    return AS_OK;
}

int as_cmd_entropy(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"query", required_argument, 0, 'i'},
                                         {"no-topk", no_argument, 0, 'k'},
                                         {"tile", required_argument, 0, 't'},
                                         {"mem", required_argument, 0, 'm'},
                                         {0, 0, 0, 0}};
    const char *cmd = "entropy";
    as_cli_common c;
    as_cli_common_init(&c);
    long query = -1, tile = 0, mem = 256;
    int topk = 1, opt, r;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, cmd, opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        if (opt == 'i') {
            if (as_cli_parse_int(cmd, "query", optarg, 0, 1L << 40, &query)) return 2;
        } else if (opt == 'k') {
            topk = 0;
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
        if (c.head >= l->hq || query >= l->t) {
            int rc = as_cli_usage(cmd, "layer %d has %lld query heads and %lld queries",
                                  l->index, (long long)l->hq, (long long)l->t);
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
    ent_job j = {tr, units, c.fmt, c.head, topk, query, tile, mem, NULL, {0}};
    if (as_mpi_rank() == 0) j.o = as_out_new(c.fmt, cmd, c.trace);
    double *cost = malloc((nu ? nu : 1) * sizeof *cost);
    for (size_t u = 0; cost && u < nu; u++) cost[u] = units[u].cost;
    as_par_prog_start(&j.prog, "entropy", c.quiet);
    as_mpi_job job = {nu, cost, ent_work, ent_consume, &j, as_par_prog_engine, &j.prog};
    char err[AS_ERR_LEN];
    as_status st = cost ? as_mpi_run(&job, NULL, err) : as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_par_prog_end(&j.prog);
    free(cost);
    free(units);
    int rc = st == AS_OK ? 0 : as_par_fail(cmd, st, err);
    as_out *o = j.o;
    static const char *const cols[] = {"layer",       "head",     "kv_head",  "n",
                                       "entropy_nats", "entropy_bits", "entropy_norm",
                                       "eff_support", "k50",      "k90",      "k99",
                                       "k90_frac",    "k99_frac", NULL};
    static const char *const heads[] = {"layer", "head", "kv", "n (mean)", "H nats", "H bits",
                                        "H/ln n", "exp(H)", "k50", "k90", "k99", "k90/n",
                                        "k99/n", NULL};
    static const char *const fmts[] = {"%d",   "%d",   "%d",   "%.0f", "%.4f", "%.4f", "%.4f",
                                       "%.1f", "%.1f", "%.1f", "%.1f", "%.4f", "%.4f", NULL};
    as_trace_free(tr);
    if (rc != 0 || !o) {
        as_out_free(o);
        return rc;
    }
    as_out_table(o, "entropy_head", "Attention entropy per head (means over the head's queries)",
                 cols, heads, fmts);
    return as_out_finish(o, stdout);
}
