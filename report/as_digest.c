/* as_digest: SHA-256 through OpenSSL's EVP digest interface. */
#include "as_digest.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_html.h"
#include "as_trace.h"

static void to_hex(const unsigned char *md, unsigned n, char hex[AS_SHA256_HEX])
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n && i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

as_status as_sha256_file(const char *path, char hex[AS_SHA256_HEX],
                         void (*progress)(void *ctx, unsigned long long done), void *ctx,
                         char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return as_err_set(err, AS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    enum { BLOCK = 1 << 20 };
    unsigned char *buf = malloc(BLOCK);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    as_status st = AS_OK;
    if (!buf || !md) {
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        st = as_err_set(err, AS_ERR_NUMERIC, "OpenSSL: SHA-256 is not available");
        goto done;
    }
    unsigned long long total = 0;
    size_t got;
    while ((got = fread(buf, 1, BLOCK, f)) > 0) {
        if (EVP_DigestUpdate(md, buf, got) != 1) {
            st = as_err_set(err, AS_ERR_NUMERIC, "OpenSSL: digest update failed");
            goto done;
        }
        total += got;
        if (progress) progress(ctx, total);
    }
    if (ferror(f)) {
        st = as_err_set(err, AS_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        goto done;
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != 32) {
        st = as_err_set(err, AS_ERR_NUMERIC, "OpenSSL: digest final failed");
        goto done;
    }
    to_hex(out, n, hex);
done:
    EVP_MD_CTX_free(md);
    free(buf);
    fclose(f);
    return st;
}

as_status as_sha256_mem(const void *data, unsigned long long len, char hex[AS_SHA256_HEX],
                        char *err)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_Digest(data, (size_t)len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return as_err_set(err, AS_ERR_NUMERIC, "OpenSSL: SHA-256 failed");
    to_hex(out, n, hex);
    return AS_OK;
}

const char *as_digest_library(void) { return OpenSSL_version(OPENSSL_VERSION); }

as_status as_trace_sha256(const as_trace *tr, char hex[AS_SHA256_HEX], char **per_file,
                          void (*progress)(void *ctx, unsigned long long done), void *ctx,
                          char *err)
{
    *per_file = NULL;
    if (strcmp(as_trace_kind(tr), "safetensors") == 0)
        return as_sha256_file(as_trace_path(tr), hex, progress, ctx, err);
    /* an .npy directory: one checksum per file, and the checksum of that list */
    as_status st = AS_OK;
    as_buf lst;
    as_buf_init(&lst);
    static const char *const parts[] = {"q", "k", "v", "q_pos"};
    char path[4096], fh[AS_SHA256_HEX];
    struct stat sb;
    for (size_t i = 0; i < as_trace_n_layers(tr) && st == AS_OK; i++)
        for (int k = 0; k < 4 && st == AS_OK; k++) {
            snprintf(path, sizeof path, "%s/layers.%d.%s.npy", as_trace_path(tr),
                     as_trace_layer(tr, i)->index, parts[k]);
            if (stat(path, &sb) != 0) continue;
            st = as_sha256_file(path, fh, NULL, NULL, err);
            if (st == AS_OK) as_buf_printf(&lst, "%s  %s\n", fh, strrchr(path, '/') + 1);
        }
    snprintf(path, sizeof path, "%s/metadata.json", as_trace_path(tr));
    if (st == AS_OK && stat(path, &sb) == 0 &&
        (st = as_sha256_file(path, fh, NULL, NULL, err)) == AS_OK)
        as_buf_printf(&lst, "%s  metadata.json\n", fh);
    size_t n;
    char *list = as_buf_take(&lst, &n);
    if (!list) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    if (st == AS_OK) st = as_sha256_mem(list, n, hex, err);
    if (st != AS_OK) {
        free(list);
        return st;
    }
    *per_file = list;
    return AS_OK;
}
