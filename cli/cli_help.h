/* cli_help: the table of subcommands (cli/main.c) and their help texts. */
#ifndef AS_CLI_HELP_H
#define AS_CLI_HELP_H

#include <stdio.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    const char *summary;               /* one line for `attnscope help` */
    const char *help;                  /* full text for `attnscope help CMD` */
} as_command;

/* Print the full help of a command (or the overview if cmd is unknown/NULL). */
void as_cli_print_help(const char *cmd, FILE *f);

/* Subcommands: each lives in cli/cmd_<name>.c and defines its entry point and help text. */
int as_cmd_info(int argc, char **argv);
extern const char as_help_info[];
int as_cmd_attend(int argc, char **argv);
extern const char as_help_attend[];
int as_cmd_entropy(int argc, char **argv);
extern const char as_help_entropy[];
int as_cmd_rank(int argc, char **argv);
extern const char as_help_rank[];
int as_cmd_bottleneck(int argc, char **argv);
extern const char as_help_bottleneck[];
int as_cmd_sparsity(int argc, char **argv);
extern const char as_help_sparsity[];
#ifdef AS_HAVE_REPORT /* report/: PLplot + OpenSSL found */
int as_cmd_report(int argc, char **argv);
extern const char as_help_report[];
#endif
int as_cmd_eval(int argc, char **argv);
extern const char as_help_eval[];
int as_cmd_compare(int argc, char **argv);
extern const char as_help_compare[];
int as_cmd_spectrum(int argc, char **argv);
extern const char as_help_spectrum[];
#ifdef AS_HAVE_GSL /* sim/: GSL found */
int as_cmd_sim(int argc, char **argv);
extern const char as_help_sim[];
#endif

#ifdef AS_HAVE_CUDA /* gpu/: nvcc found */
int as_cmd_gpu(int argc, char **argv);
extern const char as_help_gpu[];
#endif

#endif
