/* as_safetensors: strict parser and streaming, atomic writer for the safetensors format.
 *
 * Parsing works on a byte buffer (usually a read-only memory map) and validates every
 * length and offset before anything is used, like the reference implementation:
 * 8-byte little-endian header length with an upper bound, JSON that parses, known dtypes,
 * shape product x item size == byte range (overflow-checked), offsets inside the data area,
 * in order, non-overlapping and covering it exactly. */
#ifndef AS_SAFETENSORS_H
#define AS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "as_dtype.h"
#include "as_error.h"

#define AS_MAX_DIMS 8
#define AS_ST_MAX_HEADER (100u * 1024u * 1024u) /* same bound as the reference: 100 MB */

/* A tensor viewed in place: data points into the caller's buffer. */
typedef struct {
    char *name;            /* owned by the containing file object */
    as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
    uint64_t numel;
    const unsigned char *data; /* little-endian, C order */
    uint64_t nbytes;
} as_tensor;

/* Metadata entry (string -> string), as in `__metadata__`. */
typedef struct {
    char *key;
    char *value;
} as_meta;

typedef struct {
    as_tensor *tensors; /* sorted by data offset */
    size_t n_tensors;
    as_meta *meta;
    size_t n_meta;
} as_st_file;

/* Parse buf[0..len). On success fills *out (free with as_st_file_clear) and returns AS_OK.
 * Tensors point into buf, which must outlive *out. */
as_status as_st_parse(const unsigned char *buf, size_t len, as_st_file *out, char *err);
void as_st_file_clear(as_st_file *f);
/* Find a tensor by exact name, NULL if absent. */
const as_tensor *as_st_find(const as_st_file *f, const char *name);

/* ---- writer: tensors are declared up front, then their bytes streamed in order ---- */
typedef struct {
    const char *name;
    as_dtype dtype;
    int ndim;
    int64_t shape[AS_MAX_DIMS];
} as_st_spec;

typedef struct as_st_writer as_st_writer;

/* Create PATH atomically: data goes to a temporary file in the same directory and is renamed
 * over PATH only by as_st_writer_finish. Refuses (AS_ERR_USAGE) if PATH is a trace currently
 * open for reading in this process. meta: n_meta key/value pairs for `__metadata__`. */
as_st_writer *as_st_writer_open(const char *path, const as_st_spec *specs, size_t n_specs,
                                const as_meta *meta, size_t n_meta, char *err);
/* Append raw little-endian bytes; tensors are filled in the order of specs. */
as_status as_st_writer_write(as_st_writer *w, const void *bytes, size_t nbytes, char *err);
/* Check every declared byte was written, fsync, rename into place, free w. */
as_status as_st_writer_finish(as_st_writer *w, char *err);
/* Remove the temporary file and free w. */
void as_st_writer_abort(as_st_writer *w);


#endif
