/*
 * alloc.h - the one allocator front door.
 *
 * Every heap allocation in tcast goes through these functions so tests can
 * fail the Nth allocation (tc__alloc_fail_after) and check that each error
 * path cleans up.  OOM policy: small bookkeeping allocations return NULL and
 * callers turn that into -ENOMEM; tensor-sized memory (memfd, pinned, GPU)
 * never comes from here.  This module depends on nothing in the project.
 */
#ifndef TC_ALLOC_H
#define TC_ALLOC_H

#include <stddef.h>

void *tc__malloc(size_t size);
void *tc__calloc(size_t n, size_t size);
void *tc__realloc(void *p, size_t size);
/* realloc for arrays: fails with NULL (and leaves p alone) when n * size
 * overflows. */
void *tc__reallocarray(void *p, size_t n, size_t size);
char *tc__strdup(const char *s);
char *tc__strndup(const char *s, size_t n);
/* Frees p; NULL is a no-op; preserves errno. */
void tc__free(void *p);

/* Fault injection for tests: after `n` more successful allocations every
 * allocation fails (n < 0 disables).  Returns the number of allocations that
 * failed since the last call. */
long tc__alloc_fail_after(long n);

#endif /* TC_ALLOC_H */
