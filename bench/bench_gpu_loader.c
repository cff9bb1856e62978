/*
 * bench_gpu_loader.c - safetensors -> GPU, against what a user has today,
 * in the same run (GPU machine; exits 77 without a GPU).
 *
 *   ceiling:   pinned host-to-device copy of 1 GiB (the PCIe limit);
 *   cached:    tcast's GPU loader on a page-cached file, by thread count,
 *              against safetensors.torch.load_file(device="cuda");
 *   cold:      caches dropped: tcast (O_DIRECT) against dd iflag=direct of
 *              the same file and safetensors.torch.load_file;
 *   host->gpu: a daemon-style host replica (sealed memfd, registered) to a
 *              new GPU allocation.
 *
 * Usage: bench_gpu_loader [--gib N] [--file PATH] [--device N]
 *                         [--stage CHUNKS] [--cold 0|1]
 * Needs root for dropping caches (skips cold runs otherwise).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/hash.h"
#include "format/format.h"
#include "bench_gpu.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "xfer/loader.h"
#include "store/shm.h"
#include "tcast/errors.h"

/* A bf16 llama-like file of about `gib` GiB: 64 MiB tensors. */
static void write_model(const char *path, double gib)
{
	uint64_t per = (uint64_t)64 << 20, n = (uint64_t)(gib * 16), off = 0;
	char *hdr = malloc(n * 128 + 64);
	size_t hl = 0;
	uint64_t hn;
	uint16_t *buf = malloc(per);
	FILE *f = fopen(path, "wb");

	hl += (size_t)sprintf(hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (uint64_t i = 0; i < n; i++) {
		hl += (size_t)sprintf(
			hdr + hl,
			",\"layers.%llu.weight\":{\"dtype\":\"BF16\","
			"\"shape\":[8192,4096],\"data_offsets\":[%llu,%llu]}",
			(unsigned long long)i, (unsigned long long)off,
			(unsigned long long)(off + per));
		off += per;
	}
	hl += (size_t)sprintf(hdr + hl, "}");
	while (hl % 8)
		hdr[hl++] = ' ';
	hn = hl;
	fwrite(&hn, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	for (uint64_t i = 0; i < n; i++) {
		for (uint64_t j = 0; j < per / 2; j += 512)
			buf[j] = (uint16_t)(i * 31 + j);
		fwrite(buf, 1, per, f);
	}
	fclose(f);
	free(buf);
	free(hdr);
}

static int drop_caches(const char *path)
{
	int fd = open(path, O_RDONLY), ok;

	if (fd >= 0) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	ok = fd >= 0 && write(fd, "3", 1) == 1;
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

static void warm(const char *path)
{
	int fd = open(path, O_RDONLY);
	char *b = malloc(1 << 24);

	while (read(fd, b, 1 << 24) > 0)
		;
	close(fd);
	free(b);
}

static double dd_direct_gbs(const char *path, uint64_t bytes)
{
	char cmd[1024];
	double t = now_s();

	snprintf(cmd, sizeof(cmd),
		 "dd if='%s' of=/dev/null bs=16M iflag=direct status=none",
		 path);
	if (system(cmd) != 0)
		return -1;
	return (double)bytes / (now_s() - t) / 1e9;
}

/* safetensors.torch.load_file(device="cuda") GB/s, via python3. */
static double safetensors_gbs(const char *path, uint64_t bytes)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import time,torch,safetensors.torch as st;"
		 "torch.zeros(1,device='cuda');torch.cuda.synchronize();"
		 "t=time.perf_counter();d=st.load_file('%s',device='cuda');"
		 "torch.cuda.synchronize();print(time.perf_counter()-t)\" "
		 "2>/dev/null",
		 path);
	return popen_gbs(cmd, bytes);
}

static int stage_chunks;  /* --stage: digest chunks per staging buffer */
static int depth_opt = 3; /* --depth: staging buffers per thread */

static double load_gbs(struct tc__source *src, struct tc__gpu_mem *m,
		       int nthreads, int depth, int direct, int io,
		       struct tc__digest *chunks, uint64_t *direct_bytes)
{
	struct tc__gpu_load_opts o = { .nthreads = nthreads,
				       .depth = depth,
				       .direct = direct,
				       .stage_chunks = stage_chunks,
				       .io = io };
	struct tc__gpu_load_stats st;
	char err[512];

	if (tc__gpu_load_source(src, m, &o, chunks, NULL, &st, err,
				sizeof(err)) < 0)
		die("load", err);
	if (direct_bytes)
		*direct_bytes = st.direct_bytes;
	if (io == TC_IO_URING && st.uring_bytes == 0)
		die("load", "io_uring asked for, not used");
	return (double)st.bytes / st.seconds / 1e9;
}

int main(int argc, char **argv)
{
	const char *file = NULL;
	char path[512], err[512];
	double gib = 8, best = 0, st_warm, st_cold = -1, dd = -1, cold = -1,
	       cold_buf = -1, h2d, host2gpu, best_pread = 0, cold_pread = -1,
	       best_mmap = 0;
	int dev = 0, best_t = 0, threads[] = { 2, 4, 8, 12, 16, 24, 32 },
	    cold_runs = 1;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct tc__source *src;
	struct tc__gpu_mem m;
	struct tc__digest *ref, *chunks;
	uint64_t size, nchunks, dbytes = 0;

	bench_name = "bench_gpu_loader";
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--gib"))
			gib = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--file"))
			file = argv[i + 1];
		else if (!strcmp(argv[i], "--device"))
			dev = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--stage"))
			stage_chunks = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--depth"))
			depth_opt = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--cold"))
			cold_runs = atoi(argv[i + 1]);
	}
	if (tc__gpu_init(err, sizeof(err)) < 0 ||
	    tc__gpu_device_count(err, sizeof(err)) <= 0) {
		printf("SKIP: no GPU: %s\n", err);
		return 77;
	}
	if (!file) {
		snprintf(path, sizeof(path),
			 "/tmp/tcast-bench-%.0fgib.safetensors", gib);
		if (access(path, R_OK) != 0)
			write_model(path, gib);
		file = path;
	}
	if (tc__source_open(file, &src, err, sizeof(err)) < 0)
		die("open", err);
	if (tc__table_layout(&src->table) < 0)
		die("layout", "too large");
	size = src->table.total_bytes;
	nchunks = tc__chunk_count(size);
	ref = calloc(nchunks, sizeof(*ref));
	chunks = calloc(nchunks, sizeof(*chunks));
	tc__gpu_mem_init(&m);
	if (tc__gpu_alloc(dev, size, 0, &m, err, sizeof(err)) < 0)
		die("alloc", err);

	/* Ceiling: pinned H2D of 1 GiB. */
	h2d = h2d_ceiling(dev, &m);

	/* Page-cached. */
	warm(file);
	for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
		if (threads[i] > 16 && threads[i] > ncpu)
			break; /* more threads than cores only up to 16 */
		double g = load_gbs(src, &m, threads[i], depth_opt, 0,
				    TC_IO_URING, chunks, NULL),
		       gp = load_gbs(src, &m, threads[i], depth_opt, 0,
				     TC_IO_PREAD, chunks, NULL),
		       gm = load_gbs(src, &m, threads[i], depth_opt, 0,
				     TC_IO_MMAP, chunks, NULL);

		printf("cached  tcast %2d threads  io_uring %7.2f GB/s   pread "
		       "%7.2f GB/s   mmap %7.2f GB/s\n",
		       threads[i], g, gp, gm);
		if (g > best) {
			best = g;
			best_t = threads[i];
		}
		best_mmap = TC_MAX(best_mmap, gm);
		best_pread = TC_MAX(best_pread, gp);
	}
	memcpy(ref, chunks, nchunks * sizeof(*ref));
	st_warm = safetensors_gbs(file, size);

	/* Cold (--cold 0 skips it, e.g. when sweeping staging sizes). */
	if (cold_runs && drop_caches(file) == 0) {
		dd = dd_direct_gbs(file, size);
		drop_caches(file);
		cold = load_gbs(src, &m, best_t, 4, 1, TC_IO_URING, chunks,
				&dbytes);
		if (memcmp(ref, chunks, nchunks * sizeof(*ref)))
			die("digest",
			    "cold load digests differ from cached ones");
		drop_caches(file);
		cold_pread = load_gbs(src, &m, best_t, 4, 1, TC_IO_PREAD,
				      chunks, NULL);
		if (memcmp(ref, chunks, nchunks * sizeof(*ref)))
			die("digest",
			    "cold load digests differ from cached ones");
		drop_caches(file);
		cold_buf = load_gbs(src, &m, best_t, 4, 0, TC_IO_URING, chunks,
				    NULL);
		drop_caches(file);
		st_cold = safetensors_gbs(file, size);
	}

	/* Host replica (sealed memfd, registered once) -> GPU. */
	{
		struct tc__shm *seg;
		struct tc__digest *hc = calloc(nchunks, sizeof(*hc));
		double t;

		warm(file);
		if (tc__shm_create("bench", size, &seg) < 0 ||
		    tc__shm_map_rw(seg) < 0 ||
		    tc__load_source(src, seg->rw_map, 8, hc, NULL, err,
				    sizeof(err)) < 0 ||
		    tc__shm_seal(seg) < 0)
			die("host replica", err);
		if (memcmp(ref, hc, nchunks * sizeof(*ref)))
			die("digest", "host and GPU loaders disagree");
		if (tc__gpu_host_register(dev, (void *)seg->map, seg->size,
					  TC_GPU_READ_ONLY, err,
					  sizeof(err)) < 0)
			die("register memfd", err);
		t = now_s();
		if (tc__gpu_htod(dev, m.dptr, seg->map, size, NULL, err,
				 sizeof(err)) < 0)
			die("htod", err);
		host2gpu = (double)size / (now_s() - t) / 1e9;
		tc__gpu_host_unregister(dev, (void *)seg->map, err,
					sizeof(err));
		tc__shm_free(seg);
		free(hc);
	}

	printf("file %s, %.2f GiB\n", file, (double)size / (1 << 30));
	printf("pinned H2D ceiling (1 GiB)            %7.2f GB/s\n", h2d);
	printf("cached: tcast best (%d threads)       %7.2f GB/s   safetensors "
	       "%.2f GB/s   ratio %.1fx\n",
	       best_t, best, st_warm, st_warm > 0 ? best / st_warm : 0);
	printf("cached: pread engine best           %7.2f GB/s\n", best_pread);
	printf("cached: mmap engine best            %7.2f GB/s\n", best_mmap);
	printf("cold:   tcast O_DIRECT io_uring      %7.2f GB/s   (%.0f%% "
	       "direct) dd iflag=direct %.2f GB/s   ratio %.0f%%\n",
	       cold, dbytes ? 100.0 * (double)dbytes / (double)size : 0, dd,
	       dd > 0 ? 100 * cold / dd : 0);
	printf("cold:   tcast O_DIRECT pread         %7.2f GB/s   ratio "
	       "%.0f%%\n",
	       cold_pread, dd > 0 ? 100 * cold_pread / dd : 0);
	printf("cold:   tcast buffered               %7.2f GB/s   safetensors "
	       "%.2f GB/s\n",
	       cold_buf, st_cold);
	printf("host replica -> GPU                  %7.2f GB/s\n", host2gpu);
	printf("{\"bytes\":%llu,\"h2d_gbs\":%.2f,\"cached_gbs\":%.2f,"
	       "\"cached_threads\":%d,\"safetensors_warm_gbs\":%.2f,"
	       "\"cold_direct_gbs\":%.2f,\"dd_direct_gbs\":%.2f,"
	       "\"cold_buffered_gbs\":%.2f,\"safetensors_cold_gbs\":%.2f,"
	       "\"host_to_gpu_gbs\":%.2f,\"cached_pread_gbs\":%.2f,"
	       "\"cold_direct_pread_gbs\":%.2f}\n",
	       (unsigned long long)size, h2d, best, best_t, st_warm, cold, dd,
	       cold_buf, st_cold, host2gpu, best_pread, cold_pread);
	tc__gpu_release(&m);
	tc__source_free(src);
	free(ref);
	free(chunks);
	return 0;
}
