/* as_digest: SHA-256 checksums of input files for the report's provenance, through OpenSSL's
 * libcrypto (EVP interface); no hand-written cryptography. */
#ifndef AS_DIGEST_H
#define AS_DIGEST_H

#include "as_error.h"

#define AS_SHA256_HEX 65 /* 64 hex digits + NUL */

/* SHA-256 of the file at path, as lowercase hex, streamed in 1 MiB blocks. progress (may be
 * NULL) is called with bytes done so far. */
as_status as_sha256_file(const char *path, char hex[AS_SHA256_HEX],
                         void (*progress)(void *ctx, unsigned long long done), void *ctx,
                         char *err);

/* SHA-256 of a memory block. */
as_status as_sha256_mem(const void *data, unsigned long long len, char hex[AS_SHA256_HEX],
                        char *err);

/* Checksum of a trace: for a safetensors file, its SHA-256 (*per_file = NULL); for an .npy
 * directory, one "HEX  NAME" line per file (layers.L.{q,k,v,q_pos}.npy, metadata.json) in
 * *per_file (malloc'd) and the SHA-256 of that list in hex. */
struct as_trace;
as_status as_trace_sha256(const struct as_trace *tr, char hex[AS_SHA256_HEX], char **per_file,
                          void (*progress)(void *ctx, unsigned long long done), void *ctx,
                          char *err);

/* Version string of the crypto library ("OpenSSL 3.0.x ..."). */
const char *as_digest_library(void);

#endif
