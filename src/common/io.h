/*
 * io.h - reading and writing files whole, whatever the kernel hands back
 * per call; faulting mappings in without stalling the process's other
 * threads.
 */
#ifndef TC_IO_H
#define TC_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Linux transfers at most this many bytes per read or write call. */
#define TC_IO_MAX ((size_t)0x7ffff000)

/* Read up to n bytes at `off`, retrying on EINTR and short reads; *got is
 * the count read (less than n only at end of file).  Returns 0 or -errno
 * (*got then says how much arrived first). */
int tc__pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got);

/* All n bytes at `off`: 0, -errno, or TC_EBADFILE when the file ends first
 * (it is shorter than its header said, or shrank). */
int tc__pread_exact(int fd, void *buf, size_t n, uint64_t off);

/* Write all n bytes at `off`, retrying on EINTR and short writes: 0 or
 * -errno (-EIO when the file takes nothing). */
int tc__pwrite_exact(int fd, const void *buf, size_t n, uint64_t off);

/* Append n bytes of in_fd's file at `in_off` to out_fd (at its file
 * position), in the kernel (sendfile(2): page cache to page cache, no
 * user copy, no mapping); through a buffer where the kernel refuses the
 * pair (EINVAL, ENOSYS).  0, -errno, or TC_EBADFILE when in_fd ends
 * first. */
int tc__copy_fd(int out_fd, int in_fd, uint64_t in_off, uint64_t n);

/*
 * Fault in the page tables of [p, p + n) for reading or for writing
 * (MADV_POPULATE_READ / _WRITE), one slice at a time.  The kernel holds the
 * process's mmap lock for a whole call: populating a few GiB in one call
 * (~0.2-0.5 s where a fault costs ~3 us) stalled every other thread that
 * grew its heap or mapped anything -- the daemon's loop among them.  `p`
 * need not be page-aligned.  Returns 0, or -errno of the first slice that
 * failed (-EINVAL or -ENOSYS where the kernel lacks the advice; -EFAULT
 * past the end of a shrunk file).
 */
int tc__populate(void *p, size_t n, int write);

/*
 * Transparent huge pages for memfd segments.  A memfd takes 2 MiB pages
 * only where the kernel's shmem_enabled (sysfs, or its per-size knob for
 * the PMD size) is advise, within_size, always or force, and under advise
 * only through a mapping madvised MADV_HUGEPAGE: a fault or a populate
 * then makes 512 pages at once.  On the dev VM a 1 GiB memfd populated at
 * 3.0 GB/s with 4 KiB pages and 20 GB/s with 2 MiB ones; written through
 * page faults, 0.28 against 10.5 GB/s (docs/store.md, "huge pages").
 * tc__shm_huge says whether a mapping of n bytes can get them here (at
 * least one whole huge page); tc__shm_huge_set(false) (config
 * host_huge_pages: off, TCAST_HUGE_PAGES=off in a client) turns the
 * advice off.  tc__shm_advise_huge advises a writable mapping of n bytes
 * when tc__shm_huge(n): true when it did.  tc__shm_huge_mode is the
 * kernel's setting as read ("never", "advise", ...; "unknown" without
 * the sysfs file).
 */
bool tc__shm_huge(size_t n);
void tc__shm_huge_set(bool allowed);
const char *tc__shm_huge_mode(void);
bool tc__shm_advise_huge(void *p, size_t n);

#endif /* TC_IO_H */
