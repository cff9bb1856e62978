/*
 * failpoint.h - named fault-injection points for tests.
 *
 * TCAST_FAILPOINTS="name=substring[,name=substring...]" in the daemon's
 * environment arms them; unset (the normal case) each check is one load
 * of a cached flag.  Only the daemon's owner sets its environment, so a
 * failpoint gives nobody anything they could not do already.
 */
#ifndef TC_FAILPOINT_H
#define TC_FAILPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when failpoint `name` is armed for `subject` (its substring is in
 * subject, or it is armed with an empty substring). */
bool tc__failpoint(const char *name, const char *subject);
/* The value failpoint `name` is armed with ("name=value"), copied into
 * `val` (NUL-terminated, cut to `len`); false when it is not armed.  For
 * failpoints that take a number rather than a subject. */
bool tc__failpoint_arg(const char *name, char *val, size_t len);
/* The number failpoint `name` is armed with ("name=N", decimal, lo..hi),
 * or `dflt` when it is not armed or its value is no such number. */
uint64_t tc__failpoint_num(const char *name, uint64_t lo, uint64_t hi,
			   uint64_t dflt);
/* Read TCAST_FAILPOINTS again: for a test's forked child, whose parent
 * read it already (no other thread may check failpoints meanwhile). */
void tc__failpoint_reload(void);
/* "hang" failpoints: block the calling thread for good, like a read on a
 * hung NFS or FUSE mount (only the process's exit ends it). */
void tc__failpoint_hang(const char *name, const char *subject);

#endif /* TC_FAILPOINT_H */
