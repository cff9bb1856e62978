/*
 * bench_gpu_fill.c - a daemon host replica (sealed memfd) to a new GPU
 * allocation, every way tcast can do it, against torch in the same run
 * (GPU machine; exits 77 without a GPU).
 *
 *   ceiling:  pinned host-to-device copy of 1 GiB;
 *   ring:     memcpy into pinned staging rings + DMA, by threads, and what
 *             the daemon's first fill of a large replica uses
 *             (tc__gpu_copy_host);
 *   pinned:   the memfd pinned in 128 MiB pieces (what the daemon does
 *             after a first fill), then copied from (tc__gpu_copy_pinned:
 *             later fills); and pinned whole, then one copy;
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
#include "bench_gpu.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "store/shm.h"
#include "tcast/errors.h"

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

/* One copy through the ring. */
static double ring(const uint8_t *src, uint64_t n, const struct tc__gpu_mem *m,
		   int threads, int depth, uint64_t unit)
{
	struct tc__gpu_load_opts o = { 0 };
	char err[512];
	double t, g;

	o.nthreads = threads;
	o.depth = depth;
	o.copy_unit = unit;
	clear(m);
	t = now_s();
	if (tc__gpu_copy_host_opts(src, n, m, &o, err, sizeof(err)) < 0)
		die("ring", err);
	g = (double)n / (now_s() - t) / 1e9;
	verify(src, n, m, "ring");
	return g;
}

static double torch_gbs(uint64_t n, int pin)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import time,torch;"
		 "x=torch.ones(%llu,dtype=torch.uint8);"
		 "torch.zeros(1,device='cuda');torch.cuda.synchronize();"
		 "t=time.perf_counter();x=x.pin_memory() if %d else x;"
		 "y=x.to('cuda');torch.cuda.synchronize();"
		 "print(time.perf_counter()-t)\" 2>/dev/null",
		 (unsigned long long)n, pin);
	return popen_gbs(cmd, n);
}

int main(int argc, char **argv)
{
	double gib = 16, h2d, best_ring = 0, t, reg_s, copy_s, alloc_s,
	       dflt = 0, pin_s, pinned = 0, ta_other;
	int dev = 0, quick = 0, best_t = 0;
	uint64_t n;
	struct tc__shm *seg;
	struct tc__gpu_mem m;
	char err[512];

	bench_name = "bench_gpu_fill";
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
	h2d = h2d_ceiling(dev, &m);
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

	/* The ring by threads, then as the daemon calls it. */
	{
		int threads[] = { 6, 8, 10, 12, 16 };

		for (size_t k = 0; k < TC_ARRAY_SIZE(threads); k++) {
			double g;

			if (quick && threads[k] != 8)
				continue;
			g = ring(seg->map, n, &m, threads[k], 2, 4 << 20);
			printf("ring, %2d threads                   %7.2f "
			       "GB/s\n",
			       threads[k], g);
			if (g > best_ring) {
				best_ring = g;
				best_t = threads[k];
			}
		}
		/* As the daemon may see a new artifact: a mapping never read
		 * before, every page faulting in. */
		for (int k = 0; k < 2; k++) {
			struct tc__gpu_load_opts o = { 0 };
			void *fresh = mmap(NULL, seg->size, PROT_READ,
					   MAP_SHARED, seg->ro_fd, 0);

			o.nthreads = k ? 12 : 8;
			o.depth = 2;
			o.copy_unit = 4 << 20;
			clear(&m);
			t = now_s();
			if (tc__gpu_copy_host_opts(fresh, n, &m, &o, err,
						   sizeof(err)) < 0)
				die("ring", err);
			printf("ring, %2d threads, mapping never read   %7.2f "
			       "GB/s\n",
			       o.nthreads, (double)n / (now_s() - t) / 1e9);
			verify(seg->map, n, &m, "ring fresh");
			munmap(fresh, seg->size);
		}
		for (int r = 0; r < 3; r++) {
			clear(&m);
			t = now_s();
			if (tc__gpu_copy_host(seg->map, n, &m, 16, err,
					      sizeof(err)) < 0)
				die("copy_host", err);
			dflt = TC_MAX(dflt, (double)n / (now_s() - t) / 1e9);
			verify(seg->map, n, &m, "copy_host");
		}
		printf("first fill (tc__gpu_copy_host), best of 3 %7.2f GB/s\n",
		       dflt);
	}

	/* Pinned in pieces, as the daemon does after a first fill; later
	 * fills copy from it. */
	{
		struct tc__gpu_pinning pin;

		t = now_s();
		if (tc__gpu_pin(dev, (void *)seg->map, seg->size,
				(uint64_t)128 << 20, &pin, err,
				sizeof(err)) < 0)
			die("pin", err);
		pin_s = now_s() - t;
		for (int r = 0; r < 3; r++) {
			clear(&m);
			t = now_s();
			if (tc__gpu_copy_pinned(&pin, n, &m, err, sizeof(err)) <
			    0)
				die("copy_pinned", err);
			pinned =
				TC_MAX(pinned, (double)n / (now_s() - t) / 1e9);
			verify(seg->map, n, &m, "copy_pinned");
		}
		/* As the daemon's refill after an eviction: into a new
		 * allocation, made right after another of the same size was
		 * freed (the driver may still be scrubbing it), and into a
		 * new one with nothing freed just before. */
		for (int k = 0; k < 2; k++) {
			struct tc__gpu_mem a, b;
			double ta, tc_;

			tc__gpu_mem_init(&a);
			tc__gpu_mem_init(&b);
			if (k == 0) {
				if (tc__gpu_alloc(dev, n, 0, &a, err,
						  sizeof(err)) < 0)
					die("alloc", err);
				clear(&a);
				tc__gpu_release(&a);
			}
			t = now_s();
			if (tc__gpu_alloc(dev, n, 0, &b, err, sizeof(err)) < 0)
				die("alloc", err);
			ta = now_s() - t;
			if (tc__gpu_copy_pinned(&pin, n, &b, err, sizeof(err)) <
			    0)
				die("copy_pinned", err);
			tc_ = now_s() - t;
			verify(seg->map, n, &b, "copy_pinned new");
			printf("pinned -> new allocation%-28s alloc %.1f ms, "
			       "alloc + copy %.2f GB/s\n",
			       k == 0 ? ", as much freed just before:" : ":",
			       ta * 1e3, (double)n / tc_ / 1e9);
			tc__gpu_release(&b);
			usleep(500000); /* let a scrub, if any, finish */
		}
		/* The fan-out case: pinned through this GPU's context
		 * (PORTABLE), copied to another GPU. */
		if (tc__gpu_device_count(err, sizeof(err)) > 1) {
			struct tc__gpu_mem o;
			int other = dev == 0 ? 1 : 0;

			for (int k = 0; k < 2; k++) {
				tc__gpu_mem_init(&o);
				t = now_s();
				if (tc__gpu_alloc(other, n, 0, &o, err,
						  sizeof(err)) < 0)
					die("alloc", err);
				ta_other = now_s() - t;
				if (tc__gpu_copy_pinned(&pin, n, &o, err,
							sizeof(err)) < 0)
					die("copy_pinned", err);
				printf("pinned -> GPU %d (%s): alloc %.1f ms, "
				       "alloc + copy %.2f GB/s\n",
				       other,
				       k ? "again" : "its first allocation",
				       ta_other * 1e3,
				       (double)n / (now_s() - t) / 1e9);
				verify(seg->map, n, &o, "copy_pinned other");
				tc__gpu_release(&o);
				usleep(500000);
			}
		}
		t = now_s();
		tc__gpu_unpin(&pin);
		printf("pinned in 128 MiB pieces: pin %.0f ms (%.1f GB/s), "
		       "copy best of 3 %.2f GB/s, unpin %.0f ms\n",
		       pin_s * 1e3, (double)n / pin_s / 1e9, pinned,
		       (now_s() - t) * 1e3);
	}

	/* Pinned whole, then one copy. */
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
	printf("pinned whole: pin %.0f ms (%.1f GB/s), copy %.2f GB/s\n",
	       reg_s * 1e3, (double)n / reg_s / 1e9, (double)n / copy_s / 1e9);

	tc__gpu_release(&m);
	tc__shm_free(seg);
	{
		double tp = torch_gbs(n, 0), tq = torch_gbs(n, 1);

		printf("torch .to('cuda') pageable %.2f GB/s, pin_memory()+copy "
		       "%.2f GB/s\n",
		       tp, tq);
		printf("first fill %.2f GB/s (%.0f%% of the pinned ceiling, "
		       "%.1fx torch pageable; ring best %.2f GB/s at %d "
		       "threads); fill from the pinned host copy %.2f GB/s "
		       "(%.1fx torch pageable)\n",
		       dflt, 100 * dflt / h2d, tp > 0 ? dflt / tp : 0,
		       best_ring, best_t, pinned, tp > 0 ? pinned / tp : 0);
		printf("{\"bytes\":%llu,\"h2d_gbs\":%.2f,\"alloc_ms\":%.1f,"
		       "\"ring_gbs\":%.2f,\"ring_threads\":%d,"
		       "\"first_fill_gbs\":%.2f,\"pin_ms\":%.0f,"
		       "\"pinned_fill_gbs\":%.2f,\"pin_whole_ms\":%.0f,"
		       "\"pinned_whole_copy_gbs\":%.2f,"
		       "\"torch_pageable_gbs\":%.2f,\"torch_pin_gbs\":%.2f}\n",
		       (unsigned long long)n, h2d, alloc_s * 1e3, best_ring,
		       best_t, dflt, pin_s * 1e3, pinned, reg_s * 1e3,
		       (double)n / copy_s / 1e9, tp, tq);
	}
	return 0;
}
