/* attnscope entropy: attention entropy and top-k mass of every decode query (analysis/as_entropy),
 * per query and aggregated per head and per layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_entropy.h"
#include "as_stats.h"
#include "cli_help.h"
#include "cli_job.h"

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
        cJSON *r = as_rec_stat(kind, layer, head, kvh, as_stats_names[s], count);
        cJSON_AddNumberToObject(r, "n", st[NQF].v[s]);
        for (int f = 0; f < NQF; f++) {
            if (!topk && f >= 4) break;
            cJSON_AddNumberToObject(r, q_fields[f], st[f].v[s]);
        }
        as_out_add(o, r);
    }
    return 0;
}

typedef struct {
    long query, tile, mem;
    int topk;
} entropy_opts;

static int entropy_opt(void *ctx, int opt, const char *arg)
{
    entropy_opts *e = ctx;
    if (opt == 'i') return as_cli_parse_int("entropy", "query", arg, 0, 1L << 40, &e->query) ? 2 : 0;
    if (opt == 'k') {
        e->topk = 0;
        return 0;
    }
    if (opt == 't') return as_cli_parse_int("entropy", "tile", arg, 1, 1L << 24, &e->tile) ? 2 : 0;
    if (opt == 'm') return as_cli_parse_int("entropy", "mem", arg, 1, 1L << 20, &e->mem) ? 2 : 0;
    return -1;
}

/* The per-query records of head h (JSON/CSV only). */
static void query_records(as_out *o, const entropy_opts *e, const as_layer *l, int64_t h,
                          const as_entropy_layer_res *res)
{
    const int64_t kvh = as_layer_kv_head(l, h);
    for (int64_t qi = 0; qi < l->t; qi++) {
        if (e->query >= 0 && qi != e->query) continue;
        const as_entropy_q *q = &res->q[h * l->t + qi];
        cJSON *rec = as_rec_new("entropy", l->index, h);
        cJSON_AddNumberToObject(rec, "kv_head", (double)kvh);
        cJSON_AddNumberToObject(rec, "query", (double)qi);
        cJSON_AddNumberToObject(rec, "position", (double)as_layer_q_position(l, qi));
        cJSON_AddNumberToObject(rec, "n", (double)q->n);
        cJSON_AddNumberToObject(rec, "lse", q->lse);
        for (int f = 0; f < NQF; f++) {
            if (!e->topk && f >= 4) break;
            cJSON_AddNumberToObject(rec, q_fields[f], q_field(q, f));
        }
        as_out_add(o, rec);
    }
}

/* One layer (its selected heads): per-query, per-head and per-layer records. */
static int entropy_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    const entropy_opts *e = ctx;
    const as_layer *l = u->layer;
    const char *cmd = j->cmd;
    as_entropy_opts eo;
    as_entropy_opts_init(&eo);
    eo.head = u->head;
    eo.topk = e->topk;
    eo.tile = e->tile;
    eo.mem = (size_t)e->mem << 20;
    eo.progress = as_cli_job_progress;
    eo.ctx = j;
    as_entropy_layer_res res;
    char err[AS_ERR_LEN];
    as_status st = as_entropy_layer(l, &eo, &res, err);
    if (st != AS_OK) return as_cli_fail(cmd, st, err);
    const int64_t t = l->t;
    const as_entropy_q **all = malloc((size_t)(l->hq * t > 0 ? l->hq * t : 1) * sizeof *all);
    if (!all) {
        as_entropy_layer_res_free(&res);
        return as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    }
    int64_t nall = 0;
    int rc = 0;
    for (int64_t h = 0; h < l->hq && rc == 0; h++) {
        if (u->head >= 0 && h != u->head) continue;
        if (j->c.fmt != AS_FMT_TABLE) query_records(o, e, l, h, &res);
        const as_entropy_q **hs = all + nall;
        for (int64_t qi = 0; qi < t; qi++) all[nall++] = &res.q[h * t + qi];
        if (add_stats(o, j->c.fmt, "entropy_head", l->index, h, as_layer_kv_head(l, h), hs, t,
                      e->topk, err) != 0)
            rc = as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    }
    if (rc == 0 &&
        add_stats(o, j->c.fmt, "entropy_layer", l->index, -1, -1, all, nall, e->topk, err) != 0)
        rc = as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    free(all);
    as_entropy_layer_res_free(&res);
    return rc;
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
    entropy_opts e = {.query = -1, .tile = 0, .mem = 256, .topk = 1};
    as_cli_common c;
    int rc = as_cli_parse_trace(cmd, argc, argv, opts, NULL, entropy_opt, &e, &c);
    if (rc != AS_CLI_GO) return rc;
    as_cli_job j;
    if ((rc = as_cli_job_open(&j, cmd, &c, e.query, AS_CLI_UNITS_LAYER)) != 0) return rc;
    as_out *o = as_out_new(c.fmt, cmd, c.trace);
    rc = as_cli_job_run(&j, cmd, entropy_unit, &e, o);
    static const char *const cols[] = {"layer",       "head",     "kv_head",  "n",
                                       "entropy_nats", "entropy_bits", "entropy_norm",
                                       "eff_support", "k50",      "k90",      "k99",
                                       "k90_frac",    "k99_frac", NULL};
    static const char *const heads[] = {"layer", "head", "kv", "n (mean)", "H nats", "H bits",
                                        "H/ln n", "exp(H)", "k50", "k90", "k99", "k90/n",
                                        "k99/n", NULL};
    static const char *const fmts[] = {"%d",   "%d",   "%d",   "%.0f", "%.4f", "%.4f", "%.4f",
                                       "%.1f", "%.1f", "%.1f", "%.1f", "%.4f", "%.4f", NULL};
    as_out_table(o, "entropy_head", "Attention entropy per head (means over the head's queries)",
                 cols, heads, fmts);
    as_cli_job_close(&j);
    return as_out_done(o, rc);
}
