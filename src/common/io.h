/*
 * io.h - reading files whole, whatever the kernel hands back per call.
 */
#ifndef TC_IO_H
#define TC_IO_H

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

#endif /* TC_IO_H */
