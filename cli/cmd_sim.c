/* attnscope sim: synthetic traces with planted structure (gen) and Monte-Carlo experiments
 * whose answers theory knows. Built only with GSL (AS_HAVE_GSL). */
#ifdef AS_HAVE_GSL
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_simexp.h"
#include "as_simgen.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_sim[] =
    "usage: attnscope sim gen -o FILE [options]     write a synthetic trace\n"
    "       attnscope sim EXPERIMENT [options] [--json|--csv]\n\n"
    "Experiments (each prints a table of measured values against theory's answer):\n"
    "  topk-mass    oracle top-k mass under Zipf profiles vs H(k,s)/H(n,s)\n"
    "  rank         erank / stable rank / r90 / r99 of keys with planted spectra vs the\n"
    "               closed forms (exact factor) and Davidson-Szarek bounds (Gaussian factor)\n"
    "  bottleneck   random splits S|S^c of N keys admitting two distributions with the\n"
    "               same output (TV = 1), vs N/d: LP vs Cover's 1 - C(N,d+1)/2^N; with\n"
    "               --trace, the same on subsets of a real trace's values\n"
    "  coverage     failure rate of the sampling estimator vs its predicted delta\n"
    "  spectrum     attention spectra of planted periodic heads vs period and Bessel ratios\n"
    "Experiment options: --seed S, --trials N (where Monte-Carlo), --quick (smaller grid),\n"
    "  --trace FILE (bottleneck: also measure a real trace).\n\n"
    "gen options (sizes accept k/M suffixes, powers of two: 1M = 1048576):\n"
    "  -o FILE               output safetensors trace (written atomically)\n"
    "  --n N  --d D  --t T   keys, head dim, queries (default 4096, 64, 16)\n"
    "  --heads HQ            query heads (default 1); --kv-heads HKV (default HQ)\n"
    "  --layers L            layers 0..L-1 (default 1)\n"
    "  --dtype F64|F32|F16|BF16 (default F32)   --seed S (default 1)\n"
    "  --causal              write q_pos = n-t..n-1 (default: every query sees all keys)\n"
    "  --scale X             softmax scale stored in the metadata (default 1/sqrt(d))\n"
    "  --rank R              rank of the keys (default d)\n"
    "  --decay flat|power:ALPHA|exp:TAU   background singular values sqrt(n) key_sd f(i)\n"
    "  --key-sd X            background scale (default 1)\n"
    "  --basis orthogonal|gaussian   exact (default) or Gaussian background factor\n"
    "  --q-noise X           query noise sd in dims keys never see (default 1)\n"
    "  --v-sd X  --v-rank R  values: Gaussian, sd X, rank R (default 1, d)\n"
    "  --profile P           score profile of a kv head; repeat for several heads (kv head\n"
    "                        h gets the (h mod count)-th):\n"
    "      none | zipf:s=1.1 | needle:gap=10,pos=P,noise=1 | sink:k=4,logit=8,noise=1 |\n"
    "      window:w=64,logit=4,noise=1 | periodic:period=32,amp=4,noise=0\n"
    "  --quiet               no progress bar\n"
    "Record 'sim_gen': path, bytes, n, d, t, hq, hkv, layers, dtype, seed, rank, profiles.\n"
    "See docs/theory.md (Synthetic traces) for what each profile plants exactly.\n";

static int parse_size(const char *opt, const char *arg, long lo, long hi, long *out)
{
    char *e;
    errno = 0;
    long long v = strtoll(arg, &e, 10);
    long long mul = 1;
    if (*e == 'k' || *e == 'K') mul = 1024, e++;
    else if (*e == 'm' || *e == 'M') mul = 1024 * 1024, e++;
    if (errno || e == arg || *e || v < 0 || v > LLONG_MAX / mul || v * mul < lo || v * mul > hi) {
        as_cli_usage("sim", "--%s expects an integer in [%ld, %ld] (k/M suffixes), got '%s'",
                     opt, lo, hi, arg);
        return -1;
    }
    *out = (long)(v * mul);
    return 0;
}

static int parse_real(const char *opt, const char *arg, double lo, double *out)
{
    char *e;
    double v = strtod(arg, &e);
    if (e == arg || *e || !isfinite(v) || v < lo) {
        as_cli_usage("sim", "--%s expects a number >= %g, got '%s'", opt, lo, arg);
        return -1;
    }
    *out = v;
    return 0;
}

static void gen_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    as_progress_update(ctx, done);
}

enum {
    O_N = 2000, O_D, O_T, O_HEADS, O_KVHEADS, O_LAYERS, O_DTYPE, O_SEED, O_CAUSAL, O_SCALE,
    O_RANK, O_DECAY, O_KEYSD, O_BASIS, O_QNOISE, O_VSD, O_VRANK, O_PROFILE, O_TRIALS, O_QUICK,
    O_TRACE
};

typedef struct {
    as_sim_spec s;
    const char *out;
    long kv;
} gen_opts;

static int gen_opt(void *ctx, int opt, const char *arg)
{
    gen_opts *g = ctx;
    char err[AS_ERR_LEN];
    long v;
    switch (opt) {
    case 'o': g->out = arg; return 0;
    case O_N: if (parse_size("n", arg, 1, 1L << 40, &v)) return 2; g->s.n = v; return 0;
    case O_D: if (parse_size("d", arg, 1, 8192, &v)) return 2; g->s.d = v; return 0;
    case O_T: if (parse_size("t", arg, 1, 1L << 30, &v)) return 2; g->s.t = v; return 0;
    case O_HEADS: if (parse_size("heads", arg, 1, 4096, &v)) return 2; g->s.hq = v; return 0;
    case O_KVHEADS: if (parse_size("kv-heads", arg, 1, 4096, &g->kv)) return 2; return 0;
    case O_LAYERS: if (parse_size("layers", arg, 1, 4096, &v)) return 2; g->s.layers = (int)v; return 0;
    case O_DTYPE:
        if (as_dtype_parse(arg, &g->s.dtype) || !as_dtype_is_float(g->s.dtype))
            return as_cli_usage("sim", "--dtype expects F64, F32, F16 or BF16, got '%s'", arg);
        return 0;
    case O_SEED: {
        uint64_t sv;
        if (as_cli_parse_u64("sim", "seed", arg, &sv)) return 2;
        g->s.seed = sv;
        return 0;
    }
    case O_CAUSAL: g->s.causal = 1; return 0;
    case O_SCALE:
        if (parse_real("scale", arg, 0, &g->s.scale)) return 2;
        if (!(g->s.scale > 0)) return as_cli_usage("sim", "--scale must be positive");
        return 0;
    case O_RANK: if (parse_size("rank", arg, 1, 8192, &v)) return 2; g->s.rank = v; return 0;
    case O_DECAY:
        if (as_sim_parse_decay(arg, &g->s.decay, &g->s.decay_param, err) != AS_OK)
            return as_cli_usage("sim", "%s", err);
        return 0;
    case O_KEYSD: if (parse_real("key-sd", arg, 0, &g->s.key_sd)) return 2; return 0;
    case O_BASIS:
        if (strcmp(arg, "orthogonal") == 0) g->s.gaussian_basis = 0;
        else if (strcmp(arg, "gaussian") == 0) g->s.gaussian_basis = 1;
        else return as_cli_usage("sim", "--basis expects orthogonal or gaussian, got '%s'", arg);
        return 0;
    case O_QNOISE: if (parse_real("q-noise", arg, 0, &g->s.q_noise)) return 2; return 0;
    case O_VSD: if (parse_real("v-sd", arg, 0, &g->s.v_sd)) return 2; return 0;
    case O_VRANK: if (parse_size("v-rank", arg, 1, 8192, &v)) return 2; g->s.v_rank = v; return 0;
    case O_PROFILE:
        if (g->s.n_plans >= AS_SIM_MAX_PLANS)
            return as_cli_usage("sim", "at most %d --profile options", AS_SIM_MAX_PLANS);
        if (as_sim_parse_head(arg, &g->s.plans[g->s.n_plans], err) != AS_OK)
            return as_cli_usage("sim", "%s", err);
        g->s.n_plans++;
        return 0;
    default: return -1;
    }
}

/* The 'sim_gen' record and its table. */
static void gen_record(as_out *o, const as_sim_spec *s, const char *out)
{
    struct stat sb;
    cJSON *rec = as_rec_new("sim_gen", 0, -1);
    cJSON_DeleteItemFromObject(rec, "layer");
    cJSON_AddStringToObject(rec, "path", out);
    cJSON_AddNumberToObject(rec, "bytes", stat(out, &sb) == 0 ? (double)sb.st_size : 0);
    cJSON_AddNumberToObject(rec, "n", (double)s->n);
    cJSON_AddNumberToObject(rec, "d", (double)s->d);
    cJSON_AddNumberToObject(rec, "t", (double)s->t);
    cJSON_AddNumberToObject(rec, "hq", (double)s->hq);
    cJSON_AddNumberToObject(rec, "hkv", (double)s->hkv);
    cJSON_AddNumberToObject(rec, "layers", s->layers);
    cJSON_AddStringToObject(rec, "dtype", as_dtype_name(s->dtype));
    cJSON_AddNumberToObject(rec, "seed", (double)s->seed);
    cJSON_AddNumberToObject(rec, "rank", (double)(s->rank ? s->rank : s->d));
    char prof[512] = "";
    for (int i = 0; i < s->n_plans; i++) {
        size_t len = strlen(prof);
        snprintf(prof + len, sizeof prof - len, "%s%s", i ? "," : "",
                 as_sim_profile_name(s->plans[i].profile));
    }
    cJSON_AddStringToObject(rec, "profiles", prof);
    as_out_add(o, rec);
    static const char *const cols[] = {"path", "bytes", "layers", "hq", "hkv", "t", "n", "d",
                                       "dtype", "rank", "seed", "profiles", NULL};
    static const char *const fmts[] = {"%s", "%.0f", "%d", "%d", "%d", "%d", "%.0f", "%d",
                                       "%s", "%d", "%.0f", "%s", NULL};
    as_out_table(o, "sim_gen", "Synthetic trace written", cols, NULL, fmts);
}

static int cmd_gen(int argc, char **argv)
{
    static const struct option opts[] = {
        AS_CLI_COMMON_LONGOPTS,
        {"output", required_argument, 0, 'o'},   {"n", required_argument, 0, O_N},
        {"d", required_argument, 0, O_D},        {"t", required_argument, 0, O_T},
        {"heads", required_argument, 0, O_HEADS}, {"kv-heads", required_argument, 0, O_KVHEADS},
        {"layers", required_argument, 0, O_LAYERS}, {"dtype", required_argument, 0, O_DTYPE},
        {"seed", required_argument, 0, O_SEED},  {"causal", no_argument, 0, O_CAUSAL},
        {"scale", required_argument, 0, O_SCALE}, {"rank", required_argument, 0, O_RANK},
        {"decay", required_argument, 0, O_DECAY}, {"key-sd", required_argument, 0, O_KEYSD},
        {"basis", required_argument, 0, O_BASIS}, {"q-noise", required_argument, 0, O_QNOISE},
        {"v-sd", required_argument, 0, O_VSD},   {"v-rank", required_argument, 0, O_VRANK},
        {"profile", required_argument, 0, O_PROFILE}, {0, 0, 0, 0}};
    gen_opts g = {.out = NULL, .kv = -1};
    as_sim_spec_init(&g.s);
    g.s.n_plans = 0;
    as_cli_common c;
    int r = as_cli_parse_opts("sim", argc, argv, opts, "o:", gen_opt, &g, &c);
    if (r != AS_CLI_GO) return r;
    as_sim_spec s = g.s;
    const char *out = g.out;
    long kv = g.kv;
    char err[AS_ERR_LEN];
    if (optind != argc) return as_cli_usage("sim", "unexpected argument '%s'", argv[optind]);
    if (!out) return as_cli_usage("sim", "gen needs -o FILE");
    if (s.n_plans == 0) {
        s.n_plans = 1;
        s.plans[0] = as_sim_head_default(AS_SIM_NONE);
    }
    s.hkv = kv > 0 ? kv : s.hq;
    as_status st = as_sim_spec_check(&s, err);
    if (st != AS_OK) return as_cli_usage("sim", "%s", err);
    int code = as_cli_check_output("sim", out);
    if (code != 0) return code;
    as_progress *pg = as_progress_new("sim gen", (uint64_t)s.layers * (uint64_t)s.hkv * (uint64_t)s.n * 2,
                                      c.quiet);
    st = as_sim_generate(&s, out, gen_progress, pg, err);
    as_progress_free(pg);
    if (st != AS_OK) {
        /* the writer's messages name the file already */
        if (strncmp(err, out, strlen(out)) == 0)
            fprintf(stderr, "attnscope sim: %s\n", err);
        else
            fprintf(stderr, "attnscope sim: %s: %s\n", out, err);
        return as_status_exit_code(st);
    }
    as_out *o = as_out_new(c.fmt, "sim gen", NULL);
    gen_record(o, &s, out);
    return as_out_finish(o, stdout);
}

/* ------------------------------------------------------------------ experiments */
static int experiment_opt(void *ctx, int opt, const char *arg)
{
    as_simexp_opts *eo = ctx;
    long v;
    switch (opt) {
    case O_SEED: if (parse_size("seed", arg, 0, LONG_MAX, &v)) return 2; eo->seed = (uint64_t)v; return 0;
    case O_TRIALS: if (parse_size("trials", arg, 1, 100000000, &v)) return 2; eo->trials = v; return 0;
    case O_QUICK: eo->quick = 1; return 0;
    case O_TRACE: eo->trace = arg; return 0;
    default: return -1;
    }
}

static int cmd_experiment(const char *name, int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"seed", required_argument, 0, O_SEED},
                                         {"trials", required_argument, 0, O_TRIALS},
                                         {"quick", no_argument, 0, O_QUICK},
                                         {"trace", required_argument, 0, O_TRACE},
                                         {0, 0, 0, 0}};
    as_simexp_opts eo;
    as_simexp_opts_init(&eo);
    as_cli_common c;
    int r = as_cli_parse_opts("sim", argc, argv, opts, NULL, experiment_opt, &eo, &c);
    if (r != AS_CLI_GO) return r;
    if (optind != argc) return as_cli_usage("sim", "unexpected argument '%s'", argv[optind]);
    eo.quiet = c.quiet;
    char err[AS_ERR_LEN];
    as_simexp_table tab;
    as_status st = as_simexp_run(name, &eo, &tab, err);
    if (st != AS_OK) {
        fprintf(stderr, "attnscope sim %s: %s\n", name, err);
        return as_status_exit_code(st);
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "sim %s", name);
    as_out *o = as_out_new(c.fmt, cmd, eo.trace);
    for (int k = 0; k < tab.n_kinds; k++)
        as_out_table(o, tab.kinds[k].kind, tab.kinds[k].title, tab.kinds[k].cols, NULL,
                     tab.kinds[k].fmts);
    for (int i = 0; i < cJSON_GetArraySize(tab.records); i++)
        as_out_add(o, cJSON_Duplicate(cJSON_GetArrayItem(tab.records, i), 1));
    int failed = tab.failed;
    if (tab.summary) as_out_meta(o, "summary", cJSON_Duplicate(tab.summary, 1));
    as_simexp_table_free(&tab);
    int rc = as_out_finish(o, stdout);
    if (rc) return rc;
    if (failed) {
        fprintf(stderr, "attnscope sim %s: %d check(s) outside the stated tolerance\n", name, failed);
        return 1;
    }
    return 0;
}

int as_cmd_sim(int argc, char **argv)
{
    if (argc < 2) return as_cli_usage("sim", "expects gen or an experiment name");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        fputs(as_help_sim, stdout);
        return 0;
    }
    if (strcmp(sub, "gen") == 0) return cmd_gen(argc - 1, argv + 1);
    if (as_simexp_known(sub)) return cmd_experiment(sub, argc - 1, argv + 1);
    return as_cli_usage("sim", "'%s' is neither gen nor an experiment (%s)", sub,
                        as_simexp_names());
}
#else
typedef int as_cmd_sim_needs_gsl; /* keeps the translation unit non-empty */
#endif
