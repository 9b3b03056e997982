/* as_pagecache: hand the pages of a memory-mapped trace back to the kernel once a tile has been
 * converted, so that the resident memory of a pass over a large trace stays bounded by the tiles
 * instead of growing to the size of the file.
 *
 * Only private read-only file mappings (how as_trace maps traces) are touched: for those,
 * madvise(MADV_DONTNEED) just unmaps the pages; the data stays in the page cache and a later
 * read is a minor fault. Any other memory (heap, anonymous, writable) is left alone.
 * (Not to be confused with Quest's pages of keys, analysis/as_sparsity.h: these are the
 * operating system's pages of the mapped file.) */
#ifndef AS_PAGECACHE_H
#define AS_PAGECACHE_H

#include <stddef.h>
#include <stdint.h>

#include "as_safetensors.h"

/* Release the whole pages inside [addr, addr + len) when they belong to a private read-only
 * file mapping; otherwise do nothing. */
void as_pagecache_release(const void *addr, size_t len);

/* The same for elements [first, first + count) of a tensor. */
void as_tensor_release(const as_tensor *t, uint64_t first, uint64_t count);

#endif
