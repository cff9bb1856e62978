/*
 * copy.h - copies into memory that a device, not this CPU, reads next.
 */
#ifndef TC_COPY_H
#define TC_COPY_H

#include <stddef.h>

/*
 * memcpy for a destination the CPU will not read again soon (a staging
 * buffer a DMA engine reads): on x86-64 the stores go around the cache, so
 * the destination's lines are not first read from memory (no
 * read-for-ownership) and do not evict the source.  That is one memory pass
 * of three saved on a host-to-GPU staging copy.  Ends with a store fence:
 * the bytes are visible to a device once it returns.  Elsewhere, memcpy.
 */
void tc__copy_nt(void *dst, const void *src, size_t n);

#endif /* TC_COPY_H */
