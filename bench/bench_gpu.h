/*
 * bench_gpu.h - what the GPU benchmarks share: a clock, dying with a
 * message, the pinned host-to-device ceiling, and timing a competitor's
 * Python one-liner.  Header-only: each benchmark is one program.
 */
#ifndef TC_BENCH_GPU_H
#define TC_BENCH_GPU_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "gpu/vmm.h"

static const char *bench_name; /* set by main, for die() */

static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void die(const char *what, const char *err)
{
	fprintf(stderr, "%s: %s: %s\n", bench_name, what, err);
	exit(1);
}

/* Pinned host-to-device GB/s: 1 GiB registered, copied to m 4 times. */
static inline double h2d_ceiling(int dev, const struct tc__gpu_mem *m)
{
	size_t n = (size_t)1 << 30;
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	char err[512];
	double t;

	if (p == MAP_FAILED || m->size < n)
		die("ceiling", "no memory, or a destination under 1 GiB");
	if (tc__gpu_host_register(dev, p, n, 0, err, sizeof(err)) < 0)
		die("register", err);
	tc__gpu_htod(dev, m->dptr, p, n, NULL, err, sizeof(err));
	t = now_s();
	for (int i = 0; i < 4; i++)
		tc__gpu_htod(dev, m->dptr, p, n, NULL, err, sizeof(err));
	t = now_s() - t;
	tc__gpu_host_unregister(dev, p, err, sizeof(err));
	munmap(p, n);
	return 4.0 * (double)n / t / 1e9;
}

/* `bytes` over the seconds that the shell command `cmd` prints (a Python
 * competitor timing itself), or -1 when it printed nothing. */
static inline double popen_gbs(const char *cmd, uint64_t bytes)
{
	char line[256] = "";
	FILE *p = popen(cmd, "r");

	if (!p)
		return -1;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	pclose(p);
	return line[0] ? (double)bytes / atof(line) / 1e9 : -1;
}

#endif /* TC_BENCH_GPU_H */
