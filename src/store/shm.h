/*
 * shm.h - host shared-memory segments owned by the store daemon.
 *
 * A segment is a memfd created by the daemon, filled (by the daemon's loader
 * or by a client through a writable fd that cannot resize it), then sealed
 * against write, shrink and grow before any reader sees it.  Readers get a
 * separate O_RDONLY descriptor of the same file, so even the fd a client
 * holds cannot be used to write.  Only the daemon creates segments.
 */
#ifndef TC_SHM_H
#define TC_SHM_H

#include <stddef.h>
#include <stdint.h>

/* Invariant: size is a multiple of the page size (> 0); rw_map is non-NULL
 * only between create and seal; ro_fd >= 0 only after seal. */
struct tc__shm {
	int fd;		 /* owned: the memfd, O_RDWR */
	int ro_fd;	 /* owned: O_RDONLY reopen, handed to readers */
	uint64_t size;	 /* bytes mapped and accounted (page-rounded) */
	void *rw_map;	 /* daemon's writable mapping while filling, or NULL */
	const void *map; /* daemon's read-only mapping after seal, or NULL */
};

/* Create a segment of at least `size` bytes (page-rounded; 0 becomes one
 * page) already sealed against shrink and grow.  Returns 0, -ENOMEM, or -errno
 * from memfd_create(2)/ftruncate(2). */
int tc__shm_create(const char *name, uint64_t size, struct tc__shm **out);
/* Allocate every page of the segment (fallocate), unmapped: for writers
 * that fill it through its file.  Returns 0 or -errno (-ENOSPC). */
int tc__shm_reserve(struct tc__shm *seg);
/* Make the segment ready to be filled: reserved, and mapped writable
 * (rw_map) unless it is better filled through its file (rw_map stays
 * NULL; write to seg->fd).  Returns 0 or -errno. */
int tc__shm_prepare_fill(struct tc__shm *seg);
/* A spare: an unsealed segment of `size` bytes (page-rounded) whose pages
 * are all allocated, zeroed and mapped writable, made ahead of time so an
 * import or put does not pay for page allocation while it copies.  Runs
 * for ~size / page-allocation-rate: call it on a worker.  Returns 0 or
 * -errno (-ENOSPC/-ENOMEM when the memory is not there). */
int tc__shm_spare_new(uint64_t size, struct tc__shm **out);
/* Turn a spare into a segment of `size` bytes (<= its size): the tail is
 * unmapped and returned to the kernel, and the segment is sealed against
 * shrink and grow like one from tc__shm_create (rw_map stays).  Returns 0
 * or -errno (the spare is then unusable: free it). */
int tc__shm_spare_take(struct tc__shm *seg, uint64_t size);

/* Allocate and map every page writable for the daemon (for the loader).
 * Returns 0, -ENOSPC/-ENOMEM when the memory is not there, or -errno. */
int tc__shm_map_rw(struct tc__shm *seg);
/* Drop the writable mapping, seal against writes, open the read-only fd and
 * map read-only.  Returns 0, TC_EBUSY when a writable mapping still exists
 * somewhere (a client kept one), or -errno. */
int tc__shm_seal(struct tc__shm *seg);
/* Unmap, close and free.  Clients' mappings stay valid: the kernel keeps the
 * memory until the last mapping and fd are gone.  NULL is a no-op. */
void tc__shm_free(struct tc__shm *seg);
/* Page size rounding used for accounting. */
uint64_t tc__shm_round(uint64_t size);

#endif /* TC_SHM_H */
