/*
 * io.c - whole-length pread.
 */
#include <errno.h>
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
