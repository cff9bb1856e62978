/*
 * durable_internal.h - the tier state durable.c and spill.c share.
 *
 * One struct serves two tiers: the shared-disk tier (durable, ha, cold;
 * recorded in SQLite, found again after a restart) and the spill tier
 * (spill.c: evicted cache artifacts in this node's own folder, no
 * metadata, emptied at start).  Both keep native folders under `root`
 * and load them back through the same restore (chunk digests checked
 * against the manifest).  Private to src/store; loop thread only.
 */
#ifndef TC_DURABLE_INTERNAL_H
#define TC_DURABLE_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/map.h"
#include "replica.h"

struct tc__mdb;

struct tc__durable {
	bool spill;		  /* the spill tier: no metadata (db NULL),
				     no keys, nothing kept across restarts */
	char shared[PATH_MAX];	  /* the configured folder */
	char root[PATH_MAX + 16]; /* <shared>/tcast, <spill_dir>/tcast-spill */
	int rootfd;		  /* -1 while unusable */
	char disk_err[512];	  /* why, while unusable */
	struct tc__mdb *db;	  /* NULL for the spill tier */
	struct tc__map arts;	  /* id -> struct tc__dart; their bytes are
				     the tier's (shared disk: its READY
				     replicas; spill: spill.c's tier) */
	uint64_t cold_ttl_ns;	  /* cold: host copy kept this long */
	uint64_t written, write_failures, restores, restore_failures, expired,
		cold_dropped;
	uint64_t restores_gpu;	      /* of restores, straight to a GPU */
	uint64_t restored_host_bytes; /* read from the folder into host
					 memory */
	uint64_t restored_gpu_bytes;  /* read from the folder straight into
					 GPU replicas */
	bool clustered;		      /* the daemon is in a cluster (ha) */
	/* The shared disk as a tier of the replica core (replica.h): each
	 * copy is a replica of it, FILLING while a put or import writes it
	 * (struct tc__dart not in `arts` yet: tc__durable_fill_begin),
	 * READY once recorded (and for every record loaded at start), gone
	 * with the copy (rm, TTL, a failed write).  No budget (UINT64_MAX:
	 * the disk's own size is the limit, ENOSPC a write's failure) and
	 * never evictable: a durable copy is policy, not cache.  Unused
	 * (zeroed) in the spill tier's struct: spill.c has its own tier. */
	struct tc__tier tier;
};

/* Open (or retry opening) the folder: 0, or -1 with disk_err set. */
int tc__durable_open_root(struct tc__durable *d);
/* A tier with no metadata over folder `root` (made if missing), for the
 * spill tier; its artifacts are added by the caller.  NULL on OOM. */
struct tc__durable *tc__durable_new_bare(const char *shown, const char *root);

#endif /* TC_DURABLE_INTERNAL_H */
