/*
 * alloc.c - allocator front door with a failure hook for tests.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* Remaining successful allocations before injected failure; -1 = never. */
static _Atomic long fail_budget = -1;
static _Atomic long fail_count;

static int should_fail(void)
{
	long b = atomic_load_explicit(&fail_budget, memory_order_relaxed);

	/* Take one unit of the budget with a compare-and-swap: a plain
	 * load-then-decrement lets two threads both see 1 and drive the
	 * budget to -1, which silently switches injection off. */
	do {
		if (b < 0)
			return 0;
		if (b == 0) {
			atomic_fetch_add(&fail_count, 1);
			return 1;
		}
	} while (!atomic_compare_exchange_weak_explicit(&fail_budget, &b, b - 1,
							memory_order_relaxed,
							memory_order_relaxed));
	return 0;
}

long tc__alloc_fail_after(long n)
{
	long failed = atomic_exchange(&fail_count, 0);

	atomic_store(&fail_budget, n);
	return failed;
}

void *tc__malloc(size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return malloc(size ? size : 1);
}

void *tc__calloc(size_t n, size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	if (n == 0 || size == 0)
		return calloc(1, 1);
	return calloc(n, size);
}

void *tc__realloc(void *p, size_t size)
{
	if (should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, size ? size : 1);
}

void *tc__reallocarray(void *p, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return tc__realloc(p, total);
}

char *tc__strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d = tc__malloc(len + 1);

	if (!d)
		return NULL;
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

char *tc__strdup(const char *s)
{
	return tc__strndup(s, SIZE_MAX);
}

void tc__free(void *p)
{
	int saved = errno;

	free(p);
	errno = saved;
}
