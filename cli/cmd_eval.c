/* attnscope eval: task accuracy of a real model under sparse decode. Like git's external
 * subcommands, this hands off to the Python tool (python/attnscope_eval, PyTorch +
 * transformers + the attnscope binding): it only finds the interpreter and the module, sets the
 * environment (module path, version, this program, the library next to it) and execs. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_help.h"

#ifndef AS_PYTHON_DIR
#define AS_PYTHON_DIR ""
#endif

const char as_help_eval[] =
    "usage: attnscope eval --model M -o eval.json [--tasks T,...] [--lengths 2k,4k,...]\n"
    "                      [--samples N] [--methods all|M,...] [--sparsities 2x,5x,...]\n"
    "                      [--eps E,...] [--eps-budget B] [--mode kv|q] [--dense-layers L,...]\n"
    "                      [--sinks S] [--page-size P] [--heavy-frac F] [--delta D] [--seed S]\n"
    "                      [--dtype f32|bf16|f64] [--chat auto|on|off] [--chunk C] [--threads N]\n"
    "                      [--perhead DIR] [--bench-reuse K] [--summarise-only]\n"
    "                      [--json|--csv] [--quiet]\n\n"
    "Run a causal language model (smollm2-135m-instruct, gemma3-270m, a .gguf file or a\n"
    "transformers directory) on an offline task suite (needle retrieval single / multi-key /\n"
    "multi-value, variable tracking, two-hop, common words, perplexity, or .jsonl files) with\n"
    "sparse decode: the prompt is prefilled densely once, then every method x sparsity decodes\n"
    "from a copy of that KV cache, each step attending only to the keys the method selects.\n"
    "Writes accuracy (Wilson 95% CI) beside the dense baseline, agreement with the dense\n"
    "answer, per-step top-1 agreement and KL(dense || sparse), perplexity ratio. Resumable:\n"
    "finished records go to OUTPUT.journal and a rerun continues where it stopped.\n"
    "Needs python3 with torch and transformers (and gguf + accelerate for .gguf models);\n"
    "ATTNSCOPE_PYTHON names another interpreter. Records: docs/cli.md; tasks: docs/eval.md.\n";

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int setenv_default(const char *name, const char *value)
{
    const char *cur = getenv(name);
    if (cur && *cur) return 0;
    return setenv(name, value, 1);
}

int as_cmd_eval(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(as_help_eval, stdout);
            return 0;
        }
    const char *pydir = getenv("ATTNSCOPE_PYTHONPATH");
    if (!pydir || !*pydir) pydir = AS_PYTHON_DIR;
    char mainpy[PATH_MAX];
    if (snprintf(mainpy, sizeof mainpy, "%s/attnscope_eval/__main__.py", pydir) >=
            (int)sizeof mainpy ||
        !is_file(mainpy)) {
        fprintf(stderr, "attnscope eval: the Python tool is not found (%s); set "
                        "ATTNSCOPE_PYTHONPATH to the checkout's python/ folder\n", mainpy);
        return 2;
    }
    /* PYTHONPATH: the tool's folder first (it also holds the attnscope binding) */
    const char *old = getenv("PYTHONPATH");
    size_t len = strlen(pydir) + (old ? strlen(old) + 1 : 0) + 1;
    char *pp = malloc(len);
    if (!pp) {
        fprintf(stderr, "attnscope eval: out of memory\n");
        return 2;
    }
    snprintf(pp, len, "%s%s%s", pydir, old && *old ? ":" : "", old && *old ? old : "");
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (setenv("PYTHONPATH", pp, 1) != 0 || setenv("ATTNSCOPE_VERSION", AS_VERSION, 1) != 0) {
        fprintf(stderr, "attnscope eval: cannot set the environment (%s)\n", strerror(errno));
        free(pp);
        return 2;
    }
    free(pp);
    if (n > 0) {
        self[n] = '\0';
        setenv_default("ATTNSCOPE_BIN", self);
        /* the library built beside this program, for the binding (unless chosen already) */
        char *slash = strrchr(self, '/');
        if (slash) {
            char lib[PATH_MAX];
            *slash = '\0';
            if (snprintf(lib, sizeof lib, "%s/libattnscope.so", self) < (int)sizeof lib &&
                is_file(lib))
                setenv_default("ATTNSCOPE_LIB", lib);
        }
    }
    const char *py = getenv("ATTNSCOPE_PYTHON");
    if (!py || !*py) py = "python3";
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args) {
        fprintf(stderr, "attnscope eval: out of memory\n");
        return 2;
    }
    args[0] = (char *)py;
    args[1] = "-m";
    args[2] = "attnscope_eval";
    for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
    args[argc + 2] = NULL;
    fflush(NULL);
    execvp(py, args);
    fprintf(stderr, "attnscope eval: cannot run %s (%s); it needs Python 3 with torch and "
                    "transformers\n", py, strerror(errno));
    free(args);
    return 2;
}
