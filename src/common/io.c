/*
 * io.c - whole-length pread and pwrite; page tables populated in slices.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

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
