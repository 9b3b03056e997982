/* Tests of report/as_digest: SHA-256 against the FIPS 180-2 known answers, files streamed
 * across the 1 MiB block boundary against coreutils' sha256sum (an independent
 * implementation), and the checksum of a trace (safetensors file; .npy directory: the list of
 * per-file checksums and the checksum of that list). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_digest.h"
#include "as_npy.h"
#include "as_testutil.h"
#include "as_trace.h"

Test(digest, fips_180_2_known_answers)
{
    char hex[AS_SHA256_HEX], err[AS_ERR_LEN];
    cr_assert_eq(as_sha256_mem("abc", 3, hex, err), AS_OK, "%s", err);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(as_sha256_mem("", 0, hex, err), AS_OK);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    cr_assert_eq(as_sha256_mem(two, strlen(two), hex, err), AS_OK);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', through a file (blocks of 1 MiB: not a multiple of it) */
    char *p = as_test_path("million-a");
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 1000000; i++) fputc('a', f);
    fclose(f);
    cr_assert_eq(as_sha256_file(p, hex, NULL, NULL, err), AS_OK, "%s", err);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(p);
    cr_assert(strstr(as_digest_library(), "SSL") != NULL, "%s", as_digest_library());
}

static unsigned long long last_done;
static int calls;
static void progress(void *ctx, unsigned long long done)
{
    cr_assert(done > last_done);
    last_done = done;
    calls++;
    (void)ctx;
}

/* sha256sum's answer for a file */
static void sha256sum(const char *path, char hex[AS_SHA256_HEX])
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%64s", hex), 1);
    pclose(f);
}

Test(digest, file_across_blocks_matches_sha256sum)
{
    char *p = as_test_path("blocks.bin");
    const size_t len = (3u << 20) + 12345;
    unsigned char *buf = malloc(len);
    uint64_t st = 99;
    for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)(as_test_uniform(&st) * 256);
    FILE *f = fopen(p, "wb");
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
    char hex[AS_SHA256_HEX], ref[AS_SHA256_HEX], mem[AS_SHA256_HEX], err[AS_ERR_LEN];
    last_done = 0;
    calls = 0;
    cr_assert_eq(as_sha256_file(p, hex, progress, NULL, err), AS_OK, "%s", err);
    cr_assert_eq(calls, 4); /* 3 whole blocks and the rest */
    cr_assert_eq(last_done, len);
    sha256sum(p, ref);
    cr_assert_str_eq(hex, ref);
    cr_assert_eq(as_sha256_mem(buf, len, mem, err), AS_OK);
    cr_assert_str_eq(mem, ref);
    free(buf);
    free(p);
    char *missing = as_test_path("no-such-file");
    cr_assert_eq(as_sha256_file(missing, hex, NULL, NULL, err), AS_ERR_IO);
    cr_assert(strstr(err, "no-such-file"), "%s", err);
    free(missing);
}

Test(digest, trace_safetensors_and_npy_dir)
{
    char err[AS_ERR_LEN], hex[AS_SHA256_HEX], ref[AS_SHA256_HEX];
    char *p = as_test_path("tr.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = 2, .hkv = 1, .t = 2, .n = 8, .d = 4,
                             .dtype = AS_DT_F32, .seed = 3};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    char *per = (char *)1;
    cr_assert_eq(as_trace_sha256(tr, hex, &per, NULL, NULL, err), AS_OK, "%s", err);
    cr_assert_null(per);
    sha256sum(p, ref);
    cr_assert_str_eq(hex, ref);
    as_trace_free(tr);
    free(p);

    /* an .npy directory: q [hq, t, d], k/v [hkv, n, d] */
    char *d = as_test_path("trdir");
    cr_assert_eq(mkdir(d, 0755), 0);
    double vals[64];
    for (int i = 0; i < 64; i++) vals[i] = 0.25 * i - 3;
    unsigned char raw[64 * 8];
    as_dtype_from_f64(AS_DT_F32, vals, 64, raw);
    const int64_t qs[3] = {2, 2, 3}, ks[3] = {1, 4, 3};
    const char *names[3] = {"layers.0.q.npy", "layers.0.k.npy", "layers.0.v.npy"};
    char path[4096], expect[1024] = "";
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", d, names[i]);
        cr_assert_eq(as_npy_write(path, AS_DT_F32, 3, i ? ks : qs, raw, err), AS_OK, "%s", err);
    }
    /* the list is in the order q, k, v (then q_pos, metadata.json when present) */
    const int order[3] = {0, 1, 2};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", d, names[order[i]]);
        sha256sum(path, ref);
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s  %s\n", ref,
                 names[order[i]]);
    }
    tr = as_trace_open(d, err);
    cr_assert(tr, "%s", err);
    cr_assert_eq(as_trace_sha256(tr, hex, &per, NULL, NULL, err), AS_OK, "%s", err);
    cr_assert_not_null(per);
    cr_assert_str_eq(per, expect);
    char list_hex[AS_SHA256_HEX];
    cr_assert_eq(as_sha256_mem(expect, strlen(expect), list_hex, err), AS_OK);
    cr_assert_str_eq(hex, list_hex);
    free(per);
    as_trace_free(tr);
    free(d);
}
