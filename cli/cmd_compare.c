/* attnscope compare: two traces (two models, or two prompts) side by side, layer by layer,
 * from the same per-layer summary the report shows (report/as_summary.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "as_summary.h"
#ifdef AS_HAVE_REPORT
#include "as_digest.h"
#include "as_report.h"
#endif
#include "cli_help.h"
#include "cli_job.h"
#include "cli_par.h"

const char as_help_compare[] =
    "usage: attnscope compare A B [-o FILE.html] [--layer L] [--json|--csv] [--quiet]\n\n"
    "Summarise two traces (two models, or two prompts to one model) with the numbers of\n"
    "'attnscope report' and put them side by side. Layers are matched by index.\n"
    "Records (docs/cli.md):\n"
    "  'trace'         per input: trace (a|b), path, model, n_layers\n"
    "  'layer_summary' per input and layer: trace, layer, hq, hkv, t, n, d and the\n"
    "                  per-layer aggregates (see 'compare' quantities)\n"
    "  'compare'       per layer present in both and quantity: layer, quantity, a, b,\n"
    "                  delta (b - a), ratio (b / a)\n"
    "Quantities: sink_mass (mean weight on position 0), entropy_norm (mean H / ln n),\n"
    "k90_frac and k99_frac (median k / n), erank_k (mean effective rank of keys),\n"
    "collision_frac (mean collision-space dimension / n), tv_witness (mean), tol_1 and\n"
    "tol_5 (median over heads of the largest sparsity N / k with relative output error\n"
    "under 1% / 5% for oracle top-k; 1 = dense attention needed), max_periodicity.\n"
    "A quantity whose analysis module is not in this build is null.\n"
    "  -o, --output FILE   also write a self-contained HTML page with both traces on shared\n"
    "                      axes (needs the report's PLplot + OpenSSL build)\n";

static void add_num(cJSON *r, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(r, k, v);
    else
        cJSON_AddNullToObject(r, k);
}

/* The units of the MPI engine (cli/cli_par.h): the layers of both traces, each a layer's
 * summary with its sparsity records; rank 0 joins each trace's layers. */
typedef struct {
    as_trace **tr;
    const as_par_unit *units;
    as_summary_opts so;
    as_par_prog prog;
    as_par_summary ps[2]; /* rank 0 */
} compare_job;

static as_status compare_work(void *vctx, size_t u, as_mpi_buf *out, char *err)
{
    compare_job *j = vctx;
    const as_par_unit *pu = &j->units[u];
    as_par_prog_unit(&j->prog, pu->cost);
    return as_par_summary_work(j->tr[pu->trace], as_trace_layer(j->tr[pu->trace], pu->li), &j->so,
                               out, err);
}

static as_status compare_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    compare_job *j = vctx;
    return as_par_summary_add(&j->ps[j->units[u].trace], in, err);
}

static int compare_main(int argc, char **argv, const char *cmdline);

int as_cmd_compare(int argc, char **argv)
{
#ifdef AS_HAVE_REPORT
    char *cmdline = as_report_command_line(argc, argv); /* before getopt permutes argv */
#else
    char *cmdline = NULL;
#endif
    int rc = compare_main(argc, argv, cmdline);
    free(cmdline);
    return rc;
}

#ifdef AS_HAVE_REPORT
/* The comparison page: both traces' checksums for the provenance. */
static int write_page(const char *out, as_trace *tr[2], as_summary *s[2], const char *cmdline,
                      int quiet)
{
    char err[AS_ERR_LEN], hex[2][AS_SHA256_HEX];
    char *per_file[2] = {NULL, NULL};
    as_status st = AS_OK;
    for (int i = 0; i < 2 && st == AS_OK; i++)
        st = as_trace_sha256(tr[i], hex[i], &per_file[i], NULL, NULL, err);
    char *html = NULL;
    size_t len = 0;
    int nfig = 0;
    if (st == AS_OK) {
        as_report_info info[2];
        memset(info, 0, sizeof info);
        for (int i = 0; i < 2; i++) {
            info[i].command = cmdline ? cmdline : "attnscope compare";
            info[i].sha256 = hex[i];
            info[i].sha256_note = per_file[i];
            info[i].seconds = -1;
        }
        const as_trace *ct[2] = {tr[0], tr[1]};
        const as_summary *cs[2] = {s[0], s[1]};
        st = as_report_compare_html(ct, cs, info, &html, &len, &nfig, err);
    }
    if (st == AS_OK) st = as_write_file_atomic(out, html, len, err);
    free(html);
    free(per_file[0]);
    free(per_file[1]);
    if (st != AS_OK) return as_cli_fail("compare", st, err);
    if (!quiet)
        fprintf(stderr, "attnscope compare: wrote %s (%d figures, %.0f KiB)\n", out, nfig,
                (double)len / 1024.0);
    return 0;
}
#endif

#ifdef AS_HAVE_REPORT
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}
#endif

static int compare_opt(void *ctx, int opt, const char *arg)
{
    if (opt != 'o') return -1;
    *(const char **)ctx = arg;
    return 0;
}

/* The per-input records: 'trace', then each trace's 'layer_summary' records. */
static void trace_records(as_out *o, const as_cli_common *c, const char *const path[2],
                          as_trace *tr[2], as_summary *s[2])
{
    static const char *const tag[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "record", "trace");
        cJSON_AddStringToObject(rec, "trace", tag[i]);
        cJSON_AddStringToObject(rec, "path", path[i]);
        cJSON_AddStringToObject(rec, "model", as_trace_model(tr[i]));
        const char *pn = as_trace_meta(tr[i], "prompt_name");
        if (pn)
            cJSON_AddStringToObject(rec, "prompt", pn);
        else
            cJSON_AddNullToObject(rec, "prompt");
        cJSON_AddNumberToObject(rec, "n_layers", (double)s[i]->n_layers);
        /* analyses the trace is too small for (say so rather than fail) */
        if (s[i]->left_out[0])
            cJSON_AddStringToObject(rec, "left_out", s[i]->left_out);
        else
            cJSON_AddNullToObject(rec, "left_out");
        as_out_add(o, rec);
        if (s[i]->left_out[0] && c->fmt == AS_FMT_TABLE && !c->quiet)
            fprintf(stderr, "attnscope compare: %s: %s\n", path[i], s[i]->left_out);
    }
    for (int i = 0; i < 2; i++)
        for (size_t li = 0; li < s[i]->n_layers; li++) {
            const as_sum_layer *L = &s[i]->layers[li];
            cJSON *rec = as_rec_new("layer_summary", L->layer, -1);
            cJSON_AddStringToObject(rec, "trace", tag[i]);
            cJSON_AddNumberToObject(rec, "hq", (double)L->hq);
            cJSON_AddNumberToObject(rec, "hkv", (double)L->hkv);
            cJSON_AddNumberToObject(rec, "t", (double)L->t);
            cJSON_AddNumberToObject(rec, "n", (double)L->n);
            cJSON_AddNumberToObject(rec, "d", (double)L->d);
            double q[AS_SUM_NQ];
            as_summary_layer_quantities(s[i], L, q);
            for (int k = 0; k < AS_SUM_NQ; k++) add_num(rec, as_sum_qnames[k], q[k]);
            as_out_add(o, rec);
        }
}

/* 'compare' records for the layers present in both; returns how many layers matched. */
static int compare_records(as_out *o, as_summary *s[2])
{
    int matched = 0;
    for (size_t la = 0; la < s[0]->n_layers; la++) {
        const as_sum_layer *A = &s[0]->layers[la], *B = NULL;
        for (size_t lb = 0; lb < s[1]->n_layers; lb++)
            if (s[1]->layers[lb].layer == A->layer) B = &s[1]->layers[lb];
        if (!B) continue;
        matched++;
        double qa[AS_SUM_NQ], qb[AS_SUM_NQ];
        as_summary_layer_quantities(s[0], A, qa);
        as_summary_layer_quantities(s[1], B, qb);
        for (int k = 0; k < AS_SUM_NQ; k++) {
            cJSON *rec = as_rec_new("compare", A->layer, -1);
            cJSON_AddStringToObject(rec, "quantity", as_sum_qnames[k]);
            add_num(rec, "a", qa[k]);
            add_num(rec, "b", qb[k]);
            add_num(rec, "delta", qb[k] - qa[k]);
            add_num(rec, "ratio", qa[k] != 0 ? qb[k] / qa[k] : NAN);
            as_out_add(o, rec);
        }
    }
    return matched;
}

/* Open and check both traces before the (long) analysis of either, then summarise both (on
 * the ranks of the MPI engine). Returns 0, an exit code, or -1 on ranks other than 0. */
static int summarise(as_cli_common *c, const char *const path[2], const char *out,
                     as_cli_job job[2], as_summary *s[2])
{
    int code = 0;
    char err[AS_ERR_LEN];
    for (int i = 0; i < 2 && code == 0; i++) {
        c->trace = path[i];
        code = as_cli_job_open(&job[i], "compare", c, -1, AS_CLI_UNITS_NONE);
    }
#ifdef AS_HAVE_REPORT
    if (code == 0 && out) code = as_cli_check_output("compare", out);
#else
    (void)out;
#endif
    /* both traces' layers, shared by the ranks */
    as_trace *tr[2] = {job[0].tr, job[1].tr};
    compare_job j;
    memset(&j, 0, sizeof j);
    j.tr = tr;
    as_summary_opts_init(&j.so);
    j.so.threads = as_mpi_size() > 1 ? 1 : 0; /* several ranks: one core each */
    j.so.progress = as_par_prog_inner;
    j.so.ctx = &j.prog;
    size_t nu = 0;
    as_par_unit *units = code == 0 ? as_par_layer_units(tr, 2, c->layer, NULL, NULL, &nu) : NULL;
    double *cost = code == 0 ? malloc((nu ? nu : 1) * sizeof *cost) : NULL;
    if (code == 0 && (!units || !cost)) code = as_cli_fail("compare", AS_ERR_NOMEM, "out of memory");
    code = as_mpi_agree(code);
    if (code == 0) {
        j.units = units;
        for (size_t u = 0; u < nu; u++) cost[u] = units[u].cost;
        as_par_prog_start(&j.prog, "compare", c->quiet);
        as_mpi_job mj = {nu, cost, compare_work, compare_consume, &j, as_par_prog_engine, &j.prog};
        as_status st = as_mpi_run(&mj, NULL, err);
        for (int i = 0; i < 2 && st == AS_OK && as_mpi_rank() == 0; i++)
            if (!(s[i] = as_par_summary_finish(&j.ps[i], err))) st = AS_ERR_NOMEM;
        as_par_prog_end(&j.prog);
        if (st != AS_OK) code = as_par_fail("compare", st, err);
        else if (as_mpi_rank() != 0) code = -1; /* rank 0 writes the output */
    }
    for (int i = 0; i < 2; i++) as_par_summary_free(&j.ps[i]);
    free(units);
    free(cost);
    return code;
}

static int compare_main(int argc, char **argv, const char *cmdline)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"output", required_argument, 0, 'o'},
                                         {0, 0, 0, 0}};
    as_cli_common c;
    const char *out = NULL;
    int rc = as_cli_parse_opts("compare", argc, argv, opts, "o:", compare_opt, &out, &c);
    if (rc != AS_CLI_GO) return rc;
    if (optind != argc - 2) return as_cli_usage("compare", "expects two traces A and B");
    if (c.head >= 0) return as_cli_usage("compare", "--head is not supported (use --layer)");
    const char *path[2] = {argv[optind], argv[optind + 1]};
#ifndef AS_HAVE_REPORT
    (void)cmdline;
    if (out)
        return as_cli_usage("compare", "-o (the HTML page) needs a build with the report "
                                       "(PLplot and OpenSSL); the records work without it");
#else
    if (out && (!*out || same_file(out, path[0]) || same_file(out, path[1]))) {
        fprintf(stderr, "attnscope compare: %s: refusing to overwrite an input file\n", out);
        return 2;
    }
#endif
    as_cli_job job[2];
    memset(job, 0, sizeof job);
    as_summary *s[2] = {NULL, NULL};
    rc = summarise(&c, path, out, job, s);
    as_trace *tr[2] = {job[0].tr, job[1].tr};
    if (rc < 0) { /* a rank other than 0: rank 0 writes */
        for (int i = 0; i < 2; i++) as_cli_job_close(&job[i]);
        return 0;
    }
    as_out *o = NULL;
    if (rc == 0) {
        char both[8200];
        snprintf(both, sizeof both, "%s | %s", path[0], path[1]);
        o = as_out_new(c.fmt, "compare", both);
        trace_records(o, &c, path, tr, s);
        int matched = compare_records(o, s);
        static const char *const tcols[] = {"trace", "path", "model", "prompt", "n_layers", NULL};
        static const char *const tfmts[] = {"%s", "%s", "%s", "%s", "%d", NULL};
        as_out_table(o, "trace", "Traces", tcols, NULL, tfmts);
        static const char *const ccols[] = {"layer", "quantity", "a", "b", "delta", "ratio", NULL};
        static const char *const cfmts[] = {"%d", "%s", "%.4g", "%.4g", "%+.3g", "%.3g", NULL};
        as_out_table(o, "compare",
                     "Side by side (a = first trace, b = second; layers matched by index)", ccols,
                     NULL, cfmts);
        if (matched == 0 && c.fmt == AS_FMT_TABLE)
            fprintf(stderr, "attnscope compare: the traces share no layer index\n");
#ifdef AS_HAVE_REPORT
        if (out) rc = write_page(out, tr, s, cmdline, c.quiet);
#endif
    }
    for (int i = 0; i < 2; i++) {
        as_summary_free(s[i]);
        as_cli_job_close(&job[i]);
    }
    return o ? as_out_done(o, rc) : rc;
}
