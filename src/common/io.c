/*
 * io.c - whole-length pread and pwrite; page tables populated in slices.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/types.h>
#include <unistd.h>

#include "alloc.h"
#include "io.h"
#include "tcast/errors.h"

int tc__pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < n) {
		size_t want = n - done < TC_IO_MAX ? n - done : TC_IO_MAX;
		ssize_t r = pread(fd, (char *)buf + done, want,
				  (off_t)(off + done));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			*got = done;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	*got = done;
	return 0;
}

int tc__pread_exact(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got;
	int rc = tc__pread_full(fd, buf, n, off, &got);

	return rc < 0 ? rc : got < n ? TC_EBADFILE : 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* 1,024 pages: ~3 ms of faults at the worst per-fault cost seen (a VM),
 * so a writer waits at most that long for the mmap lock. */
#define POPULATE_SLICE ((uintptr_t)4 << 20)

int tc__populate(void *p, size_t n, int write)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)p & ~(pg - 1), end = (uintptr_t)p + n;
	int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;

	if (!n)
		return 0;
	while (a < end) {
		uintptr_t len = end - a < POPULATE_SLICE ? end - a :
							   POPULATE_SLICE;

		if (madvise((void *)a, len, advice) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		a += len;
	}
	return 0;
}

int tc__pwrite_exact(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t w = pwrite(fd, p, n < TC_IO_MAX ? n : TC_IO_MAX,
				   (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		off += (uint64_t)w;
		n -= (size_t)w;
	}
	return 0;
}

/* tc__copy_fd where sendfile is refused: 1 MiB at a time. */
static int copy_buffered(int out_fd, int in_fd, uint64_t in_off, uint64_t n)
{
	size_t len = n < ((size_t)1 << 20) ? (size_t)n : (size_t)1 << 20;
	char *buf = tc__malloc(len ? len : 1);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while (n && rc == 0) {
		size_t want = n < len ? (size_t)n : len;
		const char *p = buf;
		size_t left = want;

		rc = tc__pread_exact(in_fd, buf, want, in_off);
		while (rc == 0 && left) {
			ssize_t w = write(out_fd, p, left);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				rc = w < 0 ? -errno : -EIO;
			else {
				p += w;
				left -= (size_t)w;
			}
		}
		in_off += want;
		n -= want;
	}
	tc__free(buf);
	return rc;
}

int tc__copy_fd(int out_fd, int in_fd, uint64_t in_off, uint64_t n)
{
	bool first = true;

	while (n) {
		off_t off = (off_t)in_off;
		ssize_t w = sendfile(out_fd, in_fd, &off,
				     n < TC_IO_MAX ? (size_t)n : TC_IO_MAX);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && first && (errno == EINVAL || errno == ENOSYS))
			return copy_buffered(out_fd, in_fd, in_off, n);
		if (w < 0)
			return -errno;
		if (w == 0)
			return TC_EBADFILE; /* the source ended */
		first = false;
		in_off += (uint64_t)w;
		n -= (uint64_t)w;
	}
	return 0;
}

/* ------------------------------------------------------------ huge pages */

static pthread_once_t huge_once = PTHREAD_ONCE_INIT;
static size_t huge_pmd = (size_t)2 << 20;
static _Atomic int huge_allowed = -1; /* -1: not set, TCAST_HUGE_PAGES */

/* The bracketed word of a sysfs choice file ("always [advise] never"),
 * or false when the file is absent or unreadable. */
static bool sysfs_choice(const char *path, char *out, size_t outlen)
{
	char buf[256], *lb, *rb;
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	lb = strchr(buf, '[');
	rb = lb ? strchr(lb, ']') : NULL;
	if (!rb || (size_t)(rb - lb - 1) >= outlen)
		return false;
	memcpy(out, lb + 1, (size_t)(rb - lb - 1));
	out[rb - lb - 1] = '\0';
	return true;
}

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"

static void huge_probe(void)
{
	unsigned long long pmd = 0;
	FILE *f = fopen(THP_SYSFS "/hpage_pmd_size", "re");

	if (f) {
		if (fscanf(f, "%llu", &pmd) == 1 && pmd)
			huge_pmd = (size_t)pmd;
		fclose(f);
	}
}

/* Read at every call (a few microseconds, only for mappings of a huge
 * page or more): an operator who changes the setting is heard without a
 * restart. */
const char *tc__shm_huge_mode(void)
{
	static const char *const modes[] = { "always", "within_size", "advise",
					     "never",  "deny",	      "force" };
	char path[160], word[16];

	pthread_once(&huge_once, huge_probe);
	if (!sysfs_choice(THP_SYSFS "/shmem_enabled", word, sizeof(word)))
		return "unknown";
	/* Kernels with per-size huge pages (6.11+) let the PMD size's own
	 * knob override the global one; "inherit" defers to it. */
	snprintf(path, sizeof(path), THP_SYSFS "/hugepages-%zukB/shmem_enabled",
		 huge_pmd >> 10);
	{
		char own[16];

		if (sysfs_choice(path, own, sizeof(own)) &&
		    strcmp(own, "inherit"))
			memcpy(word, own, sizeof(own));
	}
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(word, modes[i]))
			return modes[i];
	return "unknown";
}

void tc__shm_huge_set(bool allowed)
{
	atomic_store(&huge_allowed, allowed ? 1 : 0);
}

bool tc__shm_huge(size_t n)
{
	int allowed = atomic_load(&huge_allowed);
	const char *m;

	pthread_once(&huge_once, huge_probe);
	if (n < huge_pmd)
		return false;
	if (allowed < 0) {
		const char *e = getenv("TCAST_HUGE_PAGES");

		allowed = !(e && (!strcmp(e, "off") || !strcmp(e, "0")));
	}
	if (!allowed)
		return false;
	m = tc__shm_huge_mode();
	return !strcmp(m, "advise") || !strcmp(m, "always") ||
	       !strcmp(m, "within_size") || !strcmp(m, "force");
}

bool tc__shm_advise_huge(void *p, size_t n)
{
	if (!tc__shm_huge(n))
		return false;
	return madvise(p, n, MADV_HUGEPAGE) == 0;
}
