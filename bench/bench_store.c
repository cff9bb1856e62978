/*
 * bench_store.c - the single-node store's figures, each against what a user
 * would do without tcast, in the same run.
 *
 *   import:  a page-cached safetensors file into daemon memory, against the
 *            machine's single-pass memcpy bandwidth (one thread, both
 *            buffers pre-faulted);
 *   attach:  a second process mapping an artifact of 16 MiB and 4 GiB,
 *            against that process reading the same bytes from the page
 *            cache (what "reload from disk" costs);
 *   rtt:     attach + release round trips per second on one connection.
 *
 * Usage: bench_store [--bytes N] [--big-bytes N] [--tcast PATH]
 * Prints a table and one JSON line (for bench/RESULTS.md).  Never a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tcast/client.h"
#include "tcast/errors.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return v[n / 2];
}

static void die(const char *what, int rc, tc_client *c)
{
	fprintf(stderr, "bench_store: %s: %s: %s\n", what, tc_err_name(rc),
		c ? tc_client_errmsg(c) : tc_strerror(rc));
	exit(1);
}

/* Single-thread memcpy GB/s over `n` bytes, best of 5. */
static double memcpy_gbs(size_t n)
{
	char *a = malloc(n), *b = malloc(n);
	double best = 0;

	memset(a, 1, n);
	memset(b, 2, n);
	for (int i = 0; i < 5; i++) {
		double t = now_s();

		memcpy(b, a, n);
		t = now_s() - t;
		if (n / t / 1e9 > best)
			best = (double)n / t / 1e9;
	}
	free(a);
	free(b);
	return best;
}

/* A safetensors file of `ntensors` U8 tensors totalling about `bytes`. */
static void write_model(const char *path, size_t bytes, int ntensors)
{
	size_t per = bytes / (size_t)ntensors, off = 0;
	char *hdr = malloc(160 * (size_t)ntensors + 64), *buf;
	size_t hl = 0;
	uint64_t n;
	FILE *f = fopen(path, "wb");

	hl += (size_t)sprintf(hdr + hl, "{");
	for (int i = 0; i < ntensors; i++) {
		hl += (size_t)sprintf(
			hdr + hl,
			"%s\"layer.%d\":{\"dtype\":\"U8\",\"shape\":"
			"[%zu],\"data_offsets\":[%zu,%zu]}",
			i ? "," : "", i, per, off, off + per);
		off += per;
	}
	hl += (size_t)sprintf(hdr + hl, "}");
	while (hl % 8)
		hdr[hl++] = ' ';
	n = hl;
	fwrite(&n, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	buf = malloc(1 << 20);
	for (size_t done = 0; done < off; done += 1 << 20) {
		size_t k = off - done < (1 << 20) ? off - done : 1 << 20;

		for (size_t j = 0; j < k; j += 64)
			buf[j] = (char)(done + j);
		fwrite(buf, 1, k, f);
	}
	fclose(f);
	free(buf);
	free(hdr);
}

/* Read the whole file once so it is in the page cache; return GB/s of
 * reading it again into private memory (the "reload" a process does). */
static double read_file_s(const char *path, size_t *size)
{
	int fd = open(path, O_RDONLY);
	off_t len = lseek(fd, 0, SEEK_END);
	char *buf = malloc((size_t)len);
	double t = now_s();

	for (off_t o = 0; o < len;) {
		ssize_t k = pread(fd, buf + o, (size_t)(len - o), o);

		if (k <= 0)
			break;
		o += k;
	}
	t = now_s() - t;
	free(buf);
	close(fd);
	*size = (size_t)len;
	return t;
}

static tc_client *connect_or_die(const char *sock)
{
	char err[512];
	tc_client *c;
	int rc = tc_client_connect(sock, &c, err, sizeof(err));

	if (rc < 0) {
		fprintf(stderr, "bench_store: %s\n", err);
		exit(1);
	}
	return c;
}

/* Put `bytes` of one tensor; returns its id in `id`. */
static void put_blob(tc_client *c, uint64_t bytes, char *id)
{
	uint64_t shape[1] = { bytes };
	struct tc_tensor_desc d = { "blob", TC_DTYPE_U8, 1, shape };
	struct tc_result r;
	tc_put *p;
	int rc = tc_put_begin(c, &d, 1, NULL, NULL, &p);

	if (rc < 0)
		die("put", rc, c);
	memset(tc_put_data(p, 0), (int)(bytes & 0xff), bytes);
	rc = tc_put_commit(p, &r);
	if (rc < 0)
		die("commit", rc, c);
	strcpy(id, r.id);
}

/* `tcast daemon run` on `sock` with one --set; *c connected to it. */
static pid_t start_daemon(const char *tcast, const char *sock,
			  const char *budget, const char *set, tc_client **c)
{
	pid_t pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 2);
		execl(tcast, tcast, "--socket", sock, "daemon", "run",
		      "--host-memory", budget, "--set", set, (char *)NULL);
		_exit(127);
	}
	*c = NULL;
	for (int i = 0; i < 500 && !*c; i++) {
		char err[64];

		if (tc_client_connect(sock, c, err, sizeof(err)) < 0) {
			*c = NULL;
			usleep(10000);
		}
	}
	if (!*c) {
		fprintf(stderr, "bench_store: daemon did not start\n");
		exit(1);
	}
	return pid;
}

/* Wait until the daemon's spare is ready (at most 60 s). */
static void wait_spare(tc_client *c)
{
	for (int i = 0; i < 6000; i++) {
		char *s = NULL;

		if (tc_status_json(c, &s) == 0 &&
		    !strstr(s, "\"host_spare_bytes\":0,")) {
			tc_free(s);
			return;
		}
		tc_free(s);
		usleep(10000);
	}
}

/* In a fresh process: median attach time (ms) over `n` attaches. */
static double child_attach_ms(const char *sock, const char *id, int n)
{
	int p[2];
	pid_t pid;
	double ms = -1;

	if (pipe(p) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		tc_client *c = connect_or_die(sock);
		double *v = calloc((size_t)n, sizeof(double)), m;

		for (int i = 0; i < n; i++) {
			tc_artifact *a;
			double t = now_s();
			int rc = tc_attach(c, id, &a);

			v[i] = (now_s() - t) * 1e3;
			if (rc < 0)
				die("attach", rc, c);
			tc_artifact_close(a);
		}
		m = median(v, n);
		if (write(p[1], &m, sizeof(m)) != sizeof(m))
			_exit(1);
		_exit(0);
	}
	if (read(p[0], &ms, sizeof(ms)) != sizeof(ms))
		ms = -1;
	waitpid(pid, NULL, 0);
	close(p[0]);
	close(p[1]);
	return ms;
}

int main(int argc, char **argv)
{
	size_t bytes = (size_t)2 << 30, big = (size_t)4 << 30, fsize;
	const char *tcast = "build/bin/tcast";
	char dir[] = "/tmp/tcast-bench-XXXXXX", sock[256], model[256];
	char id16[TC_ID_BUFLEN], id4g[TC_ID_BUFLEN], budget[32];
	double mc, imp[3], imp_spare[3], rd[3], a16, a4g, a16_rd, rtt;
	tc_client *c;
	pid_t daemon;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--bytes"))
			bytes = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--big-bytes"))
			big = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--tcast"))
			tcast = argv[i + 1];
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/run/d.sock", dir);
	snprintf(model, sizeof(model), "%s/model.safetensors", dir);
	snprintf(budget, sizeof(budget), "%zu", bytes * 2 + big + (64 << 20));
	write_model(model, bytes, 64);
	daemon = start_daemon(tcast, sock, budget, "host_spare=0", &c);
	mc = memcpy_gbs(bytes < ((size_t)1 << 30) ? bytes : (size_t)1 << 30);
	read_file_s(model, &fsize); /* warm the page cache */
	for (int i = 0; i < 3; i++) {
		struct tc_result r;
		int rc = tc_import(c, model, NULL, &r);

		if (rc < 0)
			die("import", rc, c);
		imp[i] = (double)r.bytes / (double)r.nanoseconds;
		rc = tc_rm(c, r.id);
		if (rc < 0)
			die("rm", rc, c);
		rd[i] = (double)fsize / read_file_s(model, &fsize) / 1e9;
	}

	put_blob(c, (uint64_t)16 << 20, id16);
	put_blob(c, big, id4g);
	a16 = child_attach_ms(sock, id16, 200);
	a4g = child_attach_ms(sock, id4g, 200);
	{
		/* What a second process pays today for 16 MiB: read it. */
		char p16[300];
		int fd;
		char *buf = malloc((size_t)16 << 20);
		double v[20];

		snprintf(p16, sizeof(p16), "%s/16m.bin", dir);
		fd = open(p16, O_RDWR | O_CREAT, 0600);
		memset(buf, 3, (size_t)16 << 20);
		if (write(fd, buf, (size_t)16 << 20) < 0)
			return 1;
		for (int i = 0; i < 20; i++) {
			double t = now_s();
			char *dst = malloc((size_t)16 << 20);

			if (pread(fd, dst, (size_t)16 << 20, 0) < 0)
				return 1;
			v[i] = (now_s() - t) * 1e3;
			free(dst);
		}
		a16_rd = median(v, 20);
		close(fd);
		free(buf);
	}
	{
		double t = now_s();
		int n = 0;

		while (now_s() - t < 2.0) {
			tc_artifact *a;
			int rc = tc_attach(c, id16, &a);

			if (rc < 0)
				die("attach", rc, c);
			tc_artifact_close(a);
			n++;
		}
		rtt = n / (now_s() - t);
	}
	tc_client_close(c);
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);

	/* The same imports with a spare segment ready (the daemon's state
	 * between loads): the pages exist, only the copy and hash remain. */
	{
		char set[64];

		snprintf(set, sizeof(set), "host_spare=%zu", fsize + (1 << 20));
		daemon = start_daemon(tcast, sock, budget, set, &c);
		for (int i = 0; i < 3; i++) {
			struct tc_result r;
			int rc;

			wait_spare(c);
			read_file_s(model, &fsize); /* keep it page-cached */
			rc = tc_import(c, model, NULL, &r);
			if (rc < 0)
				die("import", rc, c);
			imp_spare[i] = (double)r.bytes / (double)r.nanoseconds;
			tc_rm(c, r.id);
		}
		tc_client_close(c);
		kill(daemon, SIGTERM);
		waitpid(daemon, NULL, 0);
	}

	printf("memcpy (1 thread, pre-faulted)        %8.2f GB/s\n", mc);
	printf("import page-cached %5.2f GiB file      %8.2f GB/s  (%.0f%% of "
	       "memcpy; best of 3: %.2f %.2f %.2f)\n",
	       (double)fsize / (1 << 30), median(imp, 3),
	       100 * median(imp, 3) / mc, imp[0], imp[1], imp[2]);
	printf("  pread of the same file into malloc  %8.2f GB/s\n",
	       median(rd, 3));
	printf("import, spare segment ready          %8.2f GB/s  (%.0f%% of "
	       "memcpy; %.2f %.2f %.2f)\n",
	       median(imp_spare, 3), 100 * median(imp_spare, 3) / mc,
	       imp_spare[0], imp_spare[1], imp_spare[2]);
	printf("attach 16 MiB, second process         %8.3f ms   (re-reading "
	       "16 MiB from page cache: %.3f ms, %.0fx)\n",
	       a16, a16_rd, a16_rd / a16);
	printf("attach %.0f GiB, second process         %8.3f ms   (flat: "
	       "%.2fx the 16 MiB time)\n",
	       (double)big / (1 << 30), a4g, a4g / a16);
	printf("attach+release round trips, 1 conn    %8.0f /s\n", rtt);
	printf("{\"memcpy_gbs\":%.3f,\"import_gbs\":%.3f,\"import_ratio\":%.3f,"
	       "\"pread_gbs\":%.3f,\"import_spare_gbs\":%.3f,\"attach16_ms\":%.4f,\"attach_big_ms\":%.4f,"
	       "\"big_bytes\":%zu,\"reread16_ms\":%.4f,\"rtt_per_s\":%.0f}\n",
	       mc, median(imp, 3), median(imp, 3) / mc, median(rd, 3),
	       median(imp_spare, 3), a16, a4g, big, a16_rd, rtt);
	unlink(model);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			return 1;
	}
	return 0;
}
