/*
 * ioring.h - many file reads in flight from one loader thread.
 *
 * A loader thread with pread has one read outstanding at a time; a disk
 * (or the page cache behind several cores) wants more.  With io_uring one
 * thread queues every read of a staging unit, keeps up to `depth` of them
 * in flight, and waits only for the window it is about to hash.  Reads are
 * tagged with a small integer (the window of the staging buffer they
 * fill); tc__ioring_wait(tag) returns once that window is complete.
 *
 * O_DIRECT descriptors are read in aligned pieces into per-request bounce
 * buffers and copied to their destination when they complete, on the
 * waiting thread, so the destination is warm in cache for the hash.
 *
 * Where the kernel has no io_uring (ENOSYS), forbids it (EPERM: seccomp,
 * kernel.io_uring_disabled) or lacks IORING_OP_READ, tc__ioring_new fails
 * and the caller reads with pread.
 *
 * Part of src/xfer (uses common, net, format, gpu): the engines that move
 * bytes for the daemon and, later, the peer module; nothing here knows
 * artifacts, connections or budgets.
 */
#ifndef TC_IORING_H
#define TC_IORING_H

#include <stdint.h>

/* The largest O_DIRECT alignment a read may ask for. */
#define TC_IORING_MAX_ALIGN 65536u
/* tc__ioring_wait: every tag. */
#define TC_IORING_ALL 0xffffffffu

struct tc__ioring;

/* A ring with up to `depth` reads in flight and tags 0..ntags-1.  Returns
 * 0, or -errno: -ENOSYS / -EPERM / -EOPNOTSUPP where io_uring cannot be
 * used, -ENOMEM, -EINVAL. */
int tc__ioring_new(unsigned depth, unsigned ntags, struct tc__ioring **out);

/* Waits for every read in flight (their buffers are being written), then
 * frees.  NULL is a no-op. */
void tc__ioring_free(struct tc__ioring *r);

/*
 * Queue a read of `len` bytes at `off` of `fd` into `dst`.  align is 0 for
 * a buffered descriptor, else its O_DIRECT offset and length alignment (a
 * power of two, at most TC_IORING_MAX_ALIGN).  `file` is only echoed by
 * tc__ioring_failure.  May wait for earlier reads to free a slot.  Returns
 * 0, or the ring's first failure (sticky: every later call returns it):
 * -errno from a read, TC_EBADFILE when the file ended before `off + len`.
 */
int tc__ioring_read(struct tc__ioring *r, int fd, uint32_t align, uint8_t *dst,
		    uint64_t len, uint64_t off, unsigned tag, uint32_t file);

/* Wait until no read tagged `tag` (or, with TC_IORING_ALL, no read at all)
 * is in flight.  Returns 0 or the ring's first failure. */
int tc__ioring_wait(struct tc__ioring *r, unsigned tag);

/* Where the first failure happened: the read's file and the destination
 * byte it had reached.  Meaningful only after a failure. */
void tc__ioring_failure(const struct tc__ioring *r, uint32_t *file,
			uint8_t **dst);

#endif /* TC_IORING_H */
