/*
 * clock.h - the monotonic clock in nanoseconds, for phase timings and
 * deadlines (never wall time).
 */
#ifndef TC_COMMON_CLOCK_H
#define TC_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t tc__mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
