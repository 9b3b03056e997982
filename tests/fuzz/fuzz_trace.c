/* libFuzzer harness for the whole trace reader on a safetensors file: the input is written to a
 * private temporary file and opened with as_trace_open (mmap, parse, layer validation), then
 * everything a command would touch is read: the NaN/Inf scan, every q/k/v row of every head,
 * positions, visibility, GQA mapping. Structure the reader accepted must be safe to use. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_trace.h"
#include "fuzz_check.h"

static char path[256];

static void cleanup(void)
{
    if (path[0]) unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/fuzz_trace_XXXXXX", base ? base : "/tmp");
        int fd = mkstemp(path);
        if (fd < 0) abort();
        close(fd);
        atexit(cleanup);
    }
    fuzz_write_file(path, data, size);
    char err[AS_ERR_LEN];
    err[0] = '\0';
    as_status st = AS_OK;
    as_trace *tr = as_trace_open_status(path, &st, err);
    if (!tr) {
        CHECK(st == AS_ERR_FORMAT || st == AS_ERR_VALUE || st == AS_ERR_NOMEM);
        CHECK(strstr(err, path) != NULL && strchr(err, '\n') == NULL);
        CHECK(!as_input_is_open(path));
        return 0;
    }
    CHECK(as_input_is_open(path));
    fuzz_check_trace(tr);
    as_trace_free(tr);
    CHECK(!as_input_is_open(path));
    return 0;
}
