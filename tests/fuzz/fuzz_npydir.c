/* libFuzzer harness for the trace reader on a directory of .npy files: the input's first byte
 * picks which of a few fixed, valid arrays the directory holds (q/k/v of one or two layers,
 * positions, a GQA group, a mismatched kv shape); the rest of the input is the directory's
 * metadata.json (strict flat JSON object, docs/trace-format.md). The arrays themselves are
 * fuzzed by fuzz_npy; this one reaches the directory scan, the name rules, the metadata parser
 * and the layer validation. Accepted traces get the checks of fuzz_check.h. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_trace.h"
#include "fuzz_check.h"

static char dir[256];

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

static void cleanup(void)
{
    clear_dir();
    rmdir(dir);
}

/* a little-endian C-order .npy v1.0 file of shape (a, b, c) or (a) when b = 0 */
static void write_npy(const char *name, const char *descr, int a, int b, int c)
{
    char p[600], hdr[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int n = b ? snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d, %d), }", descr, a, b, c)
              : snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%d,), }", descr, a);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    const unsigned short hl = (unsigned short)(n + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f), fputc(hl >> 8, f);
    fwrite(hdr, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    const long count = (long)a * (b ? b : 1) * (b ? c : 1);
    for (long i = 0; i < count; i++) {
        if (descr[1] == 'f') {
            const float v = (float)((i * 37 % 11) - 5) * 0.25f;
            fwrite(&v, sizeof v, 1, f);
        } else {
            const int32_t v = (int32_t)(i + 2); /* positions 2, 3, ... of T queries over N = 5 */
            fwrite(&v, sizeof v, 1, f);
        }
    }
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/fuzz_npydir_XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(dir)) abort();
        atexit(cleanup);
    }
    clear_dir();
    const unsigned flags = size ? data[0] : 0;
    const int hq = flags & 4 ? 4 : 2, hkv = flags & 4 ? 2 : 1;
    write_npy("layers.0.q.npy", "<f4", hq, 3, 4);
    write_npy("layers.0.k.npy", "<f4", hkv, 5, 4);
    write_npy("layers.0.v.npy", "<f4", flags & 8 ? hkv + 1 : hkv, 5, 4);
    if (flags & 1) write_npy("layers.0.q_pos.npy", "<i4", 3, 0, 0);
    if (flags & 2) {
        write_npy("layers.7.q.npy", "<f4", 1, 2, 4);
        write_npy("layers.7.k.npy", "<f4", 1, 6, 4);
        write_npy("layers.7.v.npy", "<f4", 1, 6, 4);
    }
    if (flags & 16) { /* the metadata: the rest of the input */
        char p[600];
        snprintf(p, sizeof p, "%s/metadata.json", dir);
        fuzz_write_file(p, data + 1, size > 1 ? size - 1 : 0);
    }
    char err[AS_ERR_LEN];
    err[0] = '\0';
    as_status st = AS_OK;
    as_trace *tr = as_trace_open_status(dir, &st, err);
    if (!tr) {
        CHECK(st == AS_ERR_FORMAT || st == AS_ERR_VALUE || st == AS_ERR_NOMEM || st == AS_ERR_IO);
        CHECK(strchr(err, '\n') == NULL && err[0] != '\0');
        return 0;
    }
    CHECK(!(flags & 8)); /* k and v of different shapes must never be accepted */
    fuzz_check_trace(tr);
    as_trace_free(tr);
    return 0;
}
