/* attnscope: one program, git-style subcommands. */
#include <stdio.h>
#ifdef __GLIBC__ /* defined by glibc's headers, stdio.h included */
#include <malloc.h>
#endif
#include <string.h>

#include "as_mpi.h"
#include "cli_help.h"
#include "cli_util.h"

static const as_command commands[] = {
    {"info", as_cmd_info, "layers, heads, shapes, dtypes, metadata of a trace", as_help_info},
    {"attend", as_cmd_attend, "dense float64 attention outputs of a trace's queries",
     as_help_attend},
    {"entropy", as_cmd_entropy, "attention entropy and top-k mass of every decode query",
     as_help_entropy},
    {"rank", as_cmd_rank, "effective, stable and energy ranks of K, V, Q, scores, attention",
     as_help_rank},
    {"bottleneck", as_cmd_bottleneck, "the d-dim bottleneck: collision space, TV witness, absorption",
     as_help_bottleneck},
    {"sparsity", as_cmd_sparsity, "sparse attention methods: error against the bound, sweeps",
     as_help_sparsity},
#ifdef AS_HAVE_REPORT
    {"report", as_cmd_report, "one self-contained HTML report of a trace (or of several)",
     as_help_report},
#endif
    {"eval", as_cmd_eval, "task accuracy of a real model under sparse decode (Python tool)",
     as_help_eval},
    {"compare", as_cmd_compare, "two traces side by side, layer by layer", as_help_compare},
    {"spectrum", as_cmd_spectrum, "attention spectrum over relative position vs RoPE periods",
     as_help_spectrum},
#ifdef AS_HAVE_GSL
    {"sim", as_cmd_sim, "synthetic traces and Monte-Carlo experiments with known answers",
     as_help_sim},
#endif
#ifdef AS_HAVE_CUDA
    {"gpu", as_cmd_gpu, "replay a trace through the GPU kernels; benchmark them", as_help_gpu},
#endif
};
static const size_t n_commands = sizeof commands / sizeof commands[0];

static void overview(FILE *f)
{
    fprintf(f,
            "attnscope %s - how sparse can attention be at inference time?\n\n"
            "usage: attnscope COMMAND [ARGS...]\n"
            "       attnscope help [COMMAND]\n"
            "       attnscope --version\n\n"
            "commands:\n",
            AS_VERSION);
    for (size_t i = 0; i < n_commands; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nAnalysis commands take --layer L, --head H, --json or --csv, --quiet (no\n"
               "progress bar) and --progress (the bar even when stderr is not a terminal).\n"
               "\nExit status: 0 success, 1 a check failed, 2 bad input or usage.\n"
               "Trace format: docs/trace-format.md; output schema: docs/cli.md.\n");
}

void as_cli_print_help(const char *cmd, FILE *f)
{
    for (size_t i = 0; cmd && i < n_commands; i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            fputs(commands[i].help, f);
            return;
        }
    }
    overview(f);
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
    /* The analysis allocates and frees tile buffers of a few MB per matrix and head. glibc
     * serves such sizes with mmap/munmap (or trims them off the heap), so every buffer came
     * back as fresh zero pages: 186k page faults and half the wall time of 'rank' on an
     * 8k-key, 30-layer trace. Keep them in the heap; peak memory is unchanged (the buffers
     * are bounded by tiles), only reused. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    as_cli_set_help(as_cli_print_help);
    if (argc < 2) {
        overview(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("attnscope %s\n", AS_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2) {
            for (size_t i = 0; i < n_commands; i++)
                if (strcmp(commands[i].name, argv[2]) == 0) {
                    fputs(commands[i].help, stdout);
                    return 0;
                }
            fprintf(stderr, "attnscope help: no command '%s' (see 'attnscope help')\n", argv[2]);
            return 2;
        }
        overview(stdout);
        return 0;
    }
    for (size_t i = 0; i < n_commands; i++)
        if (strcmp(commands[i].name, cmd) == 0) {
            as_cli_guard_install(commands[i].name);
            /* under mpirun (a build with MPI): the ranks share the work (mpi/as_mpi.h) */
            char err[AS_ERR_LEN];
            if (as_mpi_init(&argc, &argv, err) != 0) {
                fprintf(stderr, "attnscope %s: %s\n", cmd, err);
                return 2;
            }
            int rc = as_mpi_agree(commands[i].run(argc - 1, argv + 1));
            as_mpi_finalize();
            return rc;
        }
    fprintf(stderr, "attnscope: '%s' is not a command (see 'attnscope help')\n", cmd);
    return 2;
}
