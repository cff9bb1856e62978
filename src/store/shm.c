/*
 * shm.c - memfd segments: create, fill, seal.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/io.h"
#include "shm.h"
#include "tcast/errors.h"
#include "xfer/loader.h"

uint64_t tc__shm_round(uint64_t size)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);

	if (size == 0)
		return pg;
	if (size > UINT64_MAX - pg)
		return UINT64_MAX;
	return (size + pg - 1) / pg * pg;
}

/* A memfd of `size` bytes (page-rounded), allowing seals, nothing sealed. */
static int shm_new(const char *name, uint64_t size, struct tc__shm **out)
{
	struct tc__shm *seg;
	int rc;

	*out = NULL;
	size = tc__shm_round(size);
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	seg = tc__calloc(1, sizeof(*seg));
	if (!seg)
		return -ENOMEM;
	seg->ro_fd = -1;
	seg->size = size;
	seg->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (seg->fd < 0) {
		rc = -errno;
		goto out_free;
	}
	if (ftruncate(seg->fd, (off_t)size) < 0) {
		rc = -errno;
		close(seg->fd);
		goto out_free;
	}
	*out = seg;
	return 0;

out_free:
	tc__free(seg);
	return rc;
}

int tc__shm_create(const char *name, uint64_t size, struct tc__shm **out)
{
	int rc = shm_new(name, size, out);

	if (rc < 0)
		return rc;
	/* Clients may write the fill, never resize: a shrink under a mapping
	 * would SIGBUS the daemon and every reader. */
	if (fcntl((*out)->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		rc = -errno;
		tc__shm_free(*out);
		*out = NULL;
	}
	return rc;
}

int tc__shm_reserve(struct tc__shm *seg)
{
	if (fallocate(seg->fd, 0, 0, (off_t)seg->size) < 0 &&
	    errno != EOPNOTSUPP)
		return -errno;
	return 0;
}

int tc__shm_prepare_fill(struct tc__shm *seg)
{
	/* A spare's pages are mapped and touched already; a fresh segment
	 * fills through its file where page faults are dear, unless huge
	 * pages make them 512 times fewer (docs/design.md). */
	if (!seg->rw_map && tc__faults_dear() && !tc__shm_huge(seg->size))
		return tc__shm_reserve(seg);
	return tc__shm_map_rw(seg);
}

int tc__shm_map_rw(struct tc__shm *seg)
{
	bool huge;
	void *p;
	int rc;

	if (seg->rw_map)
		return 0;
	p = mmap(NULL, seg->size, PROT_READ | PROT_WRITE, MAP_SHARED, seg->fd,
		 0);
	if (p == MAP_FAILED)
		return -errno;
	/* Allocate every page in one call, then map them all: one trip into
	 * the kernel instead of a fault per 4 KiB page while copying, which
	 * is what bounds an import on most machines.  Where memfds take huge
	 * pages only through an advised mapping, the populate allocates
	 * (an fallocate first would make every page 4 KiB); where it fails,
	 * fallocate says why. */
	huge = tc__shm_advise_huge(p, seg->size);
	if (!huge || tc__populate(p, seg->size, 1) < 0) {
		rc = tc__shm_reserve(seg);
		if (rc < 0) {
			munmap(p, seg->size);
			return rc;
		}
		if (!huge)
			tc__populate(p, seg->size, 1); /* best effort */
	}
	seg->rw_map = p;
	return 0;
}

int tc__shm_seal(struct tc__shm *seg)
{
	char path[64];
	void *p;

	if (seg->rw_map) {
		munmap(seg->rw_map, seg->size);
		seg->rw_map = NULL;
	}
	if (fcntl(seg->fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return errno == EBUSY ? TC_EBUSY : -errno;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", seg->fd);
	seg->ro_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (seg->ro_fd < 0)
		return -errno;
	p = mmap(NULL, seg->size, PROT_READ, MAP_SHARED, seg->ro_fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	seg->map = p;
	return 0;
}

int tc__shm_spare_new(uint64_t size, struct tc__shm **out)
{
	int rc = shm_new("tcast-artifact", size, out);

	if (rc < 0)
		return rc;
	rc = tc__shm_map_rw(*out);
	if (rc < 0) {
		tc__shm_free(*out);
		*out = NULL;
	}
	return rc;
}

int tc__shm_spare_take(struct tc__shm *seg, uint64_t size)
{
	size = tc__shm_round(size);
	if (size > seg->size)
		return -EINVAL;
	if (size < seg->size) {
		/* Unmap the tail before the file shrinks under it. */
		munmap((uint8_t *)seg->rw_map + size, seg->size - size);
		seg->size = size;
		if (ftruncate(seg->fd, (off_t)size) < 0)
			return -errno;
	}
	if (fcntl(seg->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		return -errno;
	return 0;
}

void tc__shm_free(struct tc__shm *seg)
{
	if (!seg)
		return;
	if (seg->rw_map)
		munmap(seg->rw_map, seg->size);
	if (seg->map)
		munmap((void *)seg->map, seg->size);
	if (seg->ro_fd >= 0)
		close(seg->ro_fd);
	close(seg->fd);
	tc__free(seg);
}
