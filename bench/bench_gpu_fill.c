/*
 * bench_gpu_fill.c - a daemon host replica (sealed memfd) to a new GPU
 * allocation, every way tcast can do it, against torch in the same run
 * (GPU machine; exits 77 without a GPU).
 *
 *   ceiling:  pinned host-to-device copy of 1 GiB;
 *   ring:     memcpy into pinned staging rings + DMA, by threads;
 *   pin:      the same with one more thread pinning the memfd from its end
 *             and DMAing straight from it (tc__gpu_copy_host with a
 *             pinning), by segment size and ring threads;
 *   pinned:   the whole memfd pinned once, then one copy (what a replica
 *             pinned ahead of time costs);
 *   torch:    torch.empty(n).to("cuda") (pageable) and .pin_memory() first.
 *
 * Usage: bench_gpu_fill [--gib N] [--device N] [--quick 1]
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/compiler.h"
#include "gpu/vmm.h"
#include "store/gpu_loader.h"
#include "store/shm.h"
#include "tcast/errors.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "bench_gpu_fill: %s: %s\n", what, err);
	exit(1);
}

/* Compare 64 pages spread over the copy with the host bytes. */
static void verify(const uint8_t *host, uint64_t n, const struct tc__gpu_mem *m,
		   const char *what)
{
	uint8_t page[4096];
	char err[512];

	for (int i = 0; i < 64; i++) {
		uint64_t off = (n - sizeof(page)) / 63 * (uint64_t)i & ~4095ull;

		if (tc__gpu_mem_read(m, off, page, sizeof(page), NULL, err,
				     sizeof(err)) < 0)
			die("read back", err);
		if (memcmp(page, host + off, sizeof(page)))
			die(what, "GPU bytes differ from the host replica");
	}
}

static void clear(const struct tc__gpu_mem *m)
{
	char err[512];

	if (tc__gpu_memset8(m->device, m->dptr, 0, m->size, NULL, err,
			    sizeof(err)) < 0)
		die("memset", err);
}

/* One copy through the ring, with a pinning thread when pin_seg > 0.
 * *unpin_ms gets the time to unpin what it left pinned. */
static double ring(const uint8_t *src, uint64_t n, const struct tc__gpu_mem *m,
		   int threads, int depth, uint64_t unit, uint64_t pin_seg,
		   double *unpin_ms, double *pinned_frac)
{
	struct tc__gpu_load_opts o = { 0 };
	struct tc__gpu_pinning pin;
	char err[512];
	double t, g;

	o.nthreads = threads;
	o.depth = depth;
	o.copy_unit = unit;
	o.pin_segment = pin_seg;
	clear(m);
	t = now_s();
	if (tc__gpu_copy_host_opts(src, n, m, &o, &pin, err, sizeof(err)) < 0)
		die("ring", err);
	g = (double)n / (now_s() - t) / 1e9;
	verify(src, n, m, "ring");
	*pinned_frac = (double)(pin.nsegs * pin.seg) / (double)n;
	t = now_s();
	tc__gpu_unpin(&pin);
	*unpin_ms = (now_s() - t) * 1e3;
	return g;
}

static double torch_gbs(uint64_t n, int pin)
{
	char cmd[1024], line[256] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import time,torch;"
		 "x=torch.ones(%llu,dtype=torch.uint8);"
		 "torch.zeros(1,device='cuda');torch.cuda.synchronize();"
		 "t=time.perf_counter();x=x.pin_memory() if %d else x;"
		 "y=x.to('cuda');torch.cuda.synchronize();"
		 "print(time.perf_counter()-t)\" 2>/dev/null",
		 (unsigned long long)n, pin);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	pclose(p);
	return line[0] ? (double)n / atof(line) / 1e9 : -1;
}

int main(int argc, char **argv)
{
	double gib = 16, h2d, best_ring = 0, best_seg = 0, t, reg_s, copy_s,
	       alloc_s, dflt = 0;
	int dev = 0, quick = 0;
	uint64_t n;
	struct tc__shm *seg;
	struct tc__gpu_mem m;
	char err[512], best_ring_cfg[64] = "", best_seg_cfg[64] = "";

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--gib"))
			gib = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--device"))
			dev = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--quick"))
			quick = atoi(argv[i + 1]);
	}
	if (tc__gpu_init(err, sizeof(err)) < 0 ||
	    tc__gpu_device_count(err, sizeof(err)) <= 0) {
		printf("SKIP: no GPU: %s\n", err);
		return 77;
	}
	n = (uint64_t)(gib * (double)(1ull << 30)) & ~((2ull << 20) - 1);
	if (tc__shm_create("bench-fill", n, &seg) < 0 ||
	    tc__shm_map_rw(seg) < 0)
		die("memfd", "cannot create");
	for (uint64_t off = 0; off < n; off += 4096)
		memset(seg->rw_map + off, (int)((off >> 12) * 131 + 7), 4096);
	if (tc__shm_seal(seg) < 0)
		die("memfd", "cannot seal");

	/* Ceiling: pinned H2D of 1 GiB. */
	tc__gpu_mem_init(&m);
	t = now_s();
	if (tc__gpu_alloc(dev, n, 0, &m, err, sizeof(err)) < 0)
		die("alloc", err);
	alloc_s = now_s() - t;
	{
		size_t c = (size_t)1 << 30;
		void *p = mmap(NULL, c, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1,
			       0);

		if (tc__gpu_host_register(dev, p, c, 0, err, sizeof(err)) < 0)
			die("register", err);
		tc__gpu_htod(dev, m.dptr, p, c, NULL, err, sizeof(err));
		t = now_s();
		for (int i = 0; i < 4; i++)
			tc__gpu_htod(dev, m.dptr, p, c, NULL, err, sizeof(err));
		h2d = 4.0 * (double)c / (now_s() - t) / 1e9;
		tc__gpu_host_unregister(dev, p, err, sizeof(err));
		munmap(p, c);
	}
	printf("%.2f GiB sealed memfd -> GPU %d\n", (double)n / (1 << 30), dev);
	printf("pinned H2D ceiling (1 GiB)         %7.2f GB/s\n", h2d);
	printf("cuMemCreate+map of %.2f GiB         %7.1f ms\n",
	       (double)n / (1 << 30), alloc_s * 1e3);

	/* Warm allocation cost (the first one above also made the context). */
	{
		struct tc__gpu_mem m2;

		tc__gpu_mem_init(&m2);
		t = now_s();
		if (tc__gpu_alloc(dev, n, 0, &m2, err, sizeof(err)) < 0)
			die("alloc", err);
		alloc_s = now_s() - t;
		tc__gpu_release(&m2);
		printf("cuMemCreate+map again              %7.1f ms\n",
		       alloc_s * 1e3);
	}

	/* The ring alone, then with a pinning thread, by segment size and
	 * ring threads; last, what the daemon uses (tc__gpu_copy_host). */
	{
		uint64_t segs[] = { 0, 32, 64, 128, 256 };
		int threads[] = { 6, 8, 10, 12, 16 };

		for (size_t p = 0; p < TC_ARRAY_SIZE(segs); p++)
			for (size_t k = 0; k < TC_ARRAY_SIZE(threads); k++) {
				double g, unpin, frac;
				char cfg[64];

				if (quick && k != 1)
					continue;
				snprintf(cfg, sizeof(cfg), "%s%llu/%d",
					 segs[p] ? "pin " : "ring only ",
					 (unsigned long long)segs[p],
					 threads[k]);
				g = ring(seg->map, n, &m, threads[k], 2,
					 4 << 20, segs[p] << 20, &unpin, &frac);
				printf("%-18s %7.2f GB/s  pinned %3.0f%%, "
				       "unpin %.0f ms\n",
				       cfg, g, 100 * frac, unpin);
				if (segs[p] == 0 && g > best_ring) {
					best_ring = g;
					snprintf(best_ring_cfg,
						 sizeof(best_ring_cfg), "%s",
						 cfg);
				}
				if (segs[p] && g > best_seg) {
					best_seg = g;
					snprintf(best_seg_cfg,
						 sizeof(best_seg_cfg), "%s",
						 cfg);
				}
			}
		for (int r = 0; r < 3; r++) {
			struct tc__gpu_pinning pin;

			clear(&m);
			t = now_s();
			if (tc__gpu_copy_host(seg->map, n, &m, 16, &pin, err,
					      sizeof(err)) < 0)
				die("copy_host", err);
			dflt = TC_MAX(dflt, (double)n / (now_s() - t) / 1e9);
			verify(seg->map, n, &m, "copy_host");
			tc__gpu_unpin(&pin);
		}
		printf("daemon default (tc__gpu_copy_host), best of 3: %.2f "
		       "GB/s\n",
		       dflt);
	}

	/* Pinned once, then copied: the cost of each half. */
	t = now_s();
	if (tc__gpu_host_register(dev, (void *)seg->map, seg->size,
				  TC_GPU_READ_ONLY, err, sizeof(err)) < 0)
		die("register memfd", err);
	reg_s = now_s() - t;
	clear(&m);
	t = now_s();
	if (tc__gpu_htod(dev, m.dptr, seg->map, n, NULL, err, sizeof(err)) < 0)
		die("htod", err);
	copy_s = now_s() - t;
	verify(seg->map, n, &m, "pinned");
	tc__gpu_host_unregister(dev, (void *)seg->map, err, sizeof(err));
	printf("pinned: pin %.0f ms (%.1f GB/s), copy %.2f GB/s\n", reg_s * 1e3,
	       (double)n / reg_s / 1e9, (double)n / copy_s / 1e9);

	/* Pinned in 256 MiB pieces (so other driver calls can interleave),
	 * then copied piece by piece on 4 streams. */
	{
		uint64_t piece = (uint64_t)256 << 20, np = n / piece;
		struct tc__gpu_stream *st[4];
		double pin_s, cp_s;

		t = now_s();
		for (uint64_t i = 0; i < np; i++)
			if (tc__gpu_host_register(
				    dev, (uint8_t *)seg->map + i * piece, piece,
				    TC_GPU_READ_ONLY, err, sizeof(err)) < 0)
				die("register piece", err);
		pin_s = now_s() - t;
		for (int i = 0; i < 4; i++)
			if (tc__gpu_stream_create(dev, &st[i], err,
						  sizeof(err)) < 0)
				die("stream", err);
		for (int r = 0; r < 2; r++) {
			clear(&m);
			t = now_s();
			for (uint64_t i = 0; i < np; i++)
				if (tc__gpu_htod(dev, m.dptr + i * piece,
						 seg->map + i * piece, piece,
						 st[i % 4], err,
						 sizeof(err)) < 0)
					die("htod piece", err);
			for (int i = 0; i < 4; i++)
				tc__gpu_stream_sync(st[i], err, sizeof(err));
			cp_s = now_s() - t;
		}
		verify(seg->map, np * piece, &m, "pieces");
		for (int i = 0; i < 4; i++)
			tc__gpu_stream_free(st[i]);
		t = now_s();
		for (uint64_t i = 0; i < np; i++)
			tc__gpu_host_unregister(dev,
						(uint8_t *)seg->map + i * piece,
						err, sizeof(err));
		printf("pinned in 256 MiB pieces: pin %.0f ms, copy %.2f GB/s, "
		       "unpin %.0f ms\n",
		       pin_s * 1e3, (double)(np * piece) / cp_s / 1e9,
		       (now_s() - t) * 1e3);
	}

	tc__gpu_release(&m);
	tc__shm_free(seg);
	{
		double tp = torch_gbs(n, 0), tq = torch_gbs(n, 1);

		printf("torch .to('cuda') pageable %.2f GB/s, pin_memory()+copy "
		       "%.2f GB/s\n",
		       tp, tq);
		printf("ring only best %s: %.2f GB/s; with a pinning thread "
		       "best %s: %.2f GB/s; daemon default %.2f GB/s (%.0f%% "
		       "of the pinned ceiling, %.1fx torch pageable)\n",
		       best_ring_cfg, best_ring, best_seg_cfg, best_seg, dflt,
		       100 * dflt / h2d, tp > 0 ? dflt / tp : 0);
		printf("{\"bytes\":%llu,\"h2d_gbs\":%.2f,\"alloc_ms\":%.1f,"
		       "\"ring_gbs\":%.2f,\"ring_cfg\":\"%s\",\"pin_gbs\":"
		       "%.2f,\"pin_cfg\":\"%s\",\"default_gbs\":%.2f,"
		       "\"pin_all_ms\":%.0f,\"pinned_copy_gbs\":%.2f,"
		       "\"torch_pageable_gbs\":%.2f,\"torch_pin_gbs\":%.2f}\n",
		       (unsigned long long)n, h2d, alloc_s * 1e3, best_ring,
		       best_ring_cfg, best_seg, best_seg_cfg, dflt, reg_s * 1e3,
		       (double)n / copy_s / 1e9, tp, tq);
	}
	return 0;
}
