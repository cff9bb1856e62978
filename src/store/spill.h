/*
 * spill.h - the spill tier: where evicted cache artifacts may go.
 *
 * The `cache` policy's "may": when host memory is short and a cache
 * artifact is evicted to make room, a daemon with `spill_dir` writes it to
 * <spill_dir>/tcast-spill/<hex of id>/ in the native layout (the writer
 * the shared-disk tier uses) on an I/O worker, and keeps a disk replica
 * of it.  A later request for it (attach, GPU attach, bind, inspect, by
 * key or id) loads it back through the shared-disk tier's restore, every
 * chunk checked against the manifest's digests.  The folder is this
 * node's own: emptied at start (cache artifacts do not survive a
 * restart), a tier of the replica core (replica.h) with its own budget
 * (`spill_bytes`) and LRU: each copy is a replica of it.
 *
 * A spill is best effort: no spill_dir, a folder that is unusable or full,
 * an artifact larger than spill_bytes, too many bytes already being
 * written, or a failed write: the artifact is dropped as without a spill
 * tier, with a log line and a counter, and the request that evicted it
 * never waits or fails for it.  warm, pinned and the disk policies never
 * spill (warm and pinned reject instead of evicting others; durable, ha
 * and cold have their shared-disk copy).  Loop thread only; the writes
 * run on a job pool.
 */
#ifndef TC_SPILL_H
#define TC_SPILL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "obj.h"
#include "xfer/jobs.h"

#define TC_SPILL_SUBDIR "tcast-spill" /* under spill_dir */

struct tc__spill;
struct tc__durable;
struct tc__dart;

/* Open the spill tier of cfg: the folder is made if missing and emptied.
 * Without spill_dir *out is NULL (never spill).  An unusable folder is not
 * an error: the daemon starts, says so, and drops what it evicts until
 * the folder is usable.  `pool` runs the writes (one that may block on a
 * hung disk without holding others).  Returns 0 or -ENOMEM. */
int tc__spill_open(const struct tc__store_config *cfg, struct tc__jobs *pool,
		   struct tc__spill **out, char *err, size_t errlen);
/* Free the tier (writes still running keep their own state; the daemon
 * is exiting).  NULL is a no-op. */
void tc__spill_close(struct tc__spill *sp);

/* The tier's artifacts and loads (durable.h's find, has, restore, forget
 * and list work on it), or NULL. */
struct tc__durable *tc__spill_tier(struct tc__spill *sp);

/* Loop, tc__objs' `evicting` hook: `o` is about to be evicted for room.
 * A cache artifact with a sealed host copy starts its write (nothing
 * waits for it); anything else, or a spill that cannot be made, is
 * dropped with a log line and a counter. */
void tc__spill_evicting(void *sp, struct tc__obj *o);

/* Loop: a request needs `a` while its write still runs: fn(arg, rc, err)
 * runs on the loop once it ends (rc 0: on disk, load it; else why it is
 * gone).  Returns 0 or -ENOMEM (fn will not run). */
typedef void tc__spill_wait_fn(void *arg, int rc, const char *err);
int tc__spill_wait(struct tc__spill *sp, struct tc__dart *a,
		   tc__spill_wait_fn *fn, void *arg);

/* STATUS: the tier's folder, state, budget and counters (null when off). */
json_t *tc__spill_status_json(struct tc__spill *sp);
/* Counters for metrics (all zero when off). */
struct tc__metrics_spill;
void tc__spill_counts(struct tc__spill *sp, struct tc__metrics_spill *out);

#endif /* TC_SPILL_H */
