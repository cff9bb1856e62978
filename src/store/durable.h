/*
 * durable.h - the shared-disk tier: durable, ha and cold artifacts.
 *
 * A durable artifact has a copy in tcast's native layout under
 * <shared_disk>/tcast/<hex of id>/ (format.h) and a row in the daemon's
 * SQLite metadata (mdb.h).  The order is always disk copy first (temp
 * folder, fsync, rename, fsync), metadata second, acknowledgement last,
 * so nothing acknowledged is lost and no record points at a partial copy.
 * After a restart, a crash or kill -9 the records come back at start;
 * bytes are loaded from the disk copy when a request first needs them
 * (tc__durable_restore), their chunk digests checked against the
 * manifest.  Keys naming durable artifacts are recorded with their
 * history.  The host copy of a durable artifact is evictable: the disk
 * copy remains and is loaded again on use.
 *
 * The disk is allowed to fail: a missing, read-only or full shared folder
 * makes durable requests fail with a message (a "must" failure) while the
 * daemon serves everything else; the folder is tried again at the next
 * durable request.  Loop thread only, except tc__durable_write, which a
 * worker runs.
 */
#ifndef TC_DURABLE_H
#define TC_DURABLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/hash.h"
#include "config.h"
#include "gpu/vmm.h"
#include "xfer/jobs.h"
#include "mdb.h"
#include "obj.h"

#define TC_DURABLE_SUBDIR "tcast" /* under shared_disk */

struct tc__durable;

/* A durable artifact known to this daemon (on disk; maybe in memory). */
/* Policy ha's replica on another node, as this daemon knows it (memory
 * only: a restart forgets it, and says so). */
enum tc__ha_state {
	TC_HA_NONE,    /* not asked for since this daemon started */
	TC_HA_PENDING, /* a node is being chosen or is pulling it */
	TC_HA_DONE,    /* node ha_node holds a replica */
	TC_HA_FAILED,  /* no node could make one: ha_why says why */
};

struct tc__dart {
	struct tc__mdb_artifact rec;
	enum tc__policy policy;
	enum tc__ha_state ha; /* policy ha: its replica on another node */
	char ha_node[65];     /* DONE: the node holding it */
	char ha_why[512];     /* FAILED: why, per node tried */
	uint64_t ha_unix_ms;  /* when ha last changed */
	struct tc__restore *restore; /* the load running now, or NULL */
	void *writing;		     /* spill tier: its write running now
					(spill.c), or NULL: on disk */
	/* Its copy, a replica of its folder's tier.  Spill tier: of the
	 * spill's tier (spill.c), FILLING while written, READY on disk, on
	 * that tier's LRU (touched when spilled or loaded).  Shared disk:
	 * of the shared-disk tier (durable_internal.h), FILLING while a put
	 * or import writes it (the dart is then a fill, not in the table),
	 * READY once recorded, never on an LRU's victim list (the tier
	 * says no to every eviction). */
	struct tc__replica rep;
};

/* Open the tier for cfg.  Without shared_disk, *out is NULL and every
 * durable request is refused (tc__durable_check).  The state folder is
 * required (TC_EBADCONFIG when unusable); the shared folder is not: when
 * it is missing or read-only, the daemon starts and says so.  Records
 * are loaded; keys are recreated in objs. */
int tc__durable_open(const struct tc__store_config *cfg, struct tc__objs *objs,
		     struct tc__durable **out, char *err, size_t errlen);
void tc__durable_close(struct tc__durable *d);

/* Can a request with this policy be honoured now?  0, or TC_EPOLICY
 * with the reason (no shared_disk configured, the folder is missing, not
 * writable...).  Retries opening an unusable folder. */
int tc__durable_check(struct tc__durable *d, enum tc__policy p, char *err,
		      size_t errlen);
/* The folder's fd for a worker (valid until close). */
int tc__durable_dirfd(const struct tc__durable *d);
const char *tc__durable_root(const struct tc__durable *d);

/* Threads writing a data file at once: O_DIRECT writes are synchronous,
 * so this is the queue depth the disk sees (4 reached ~5x the speed of
 * dd's buffered writes on the dev VM's virtio disk). */
#define TC_DURABLE_WRITERS 4

/* Worker: write o's bytes (its sealed host copy) to the shared disk.
 * Returns 0 or a negative code with err set; nothing half-written stays. */
int tc__durable_write(int dirfd, const char *root, const struct tc__obj *o,
		      const struct tc__digest *chunks, uint64_t nchunks,
		      char *err, size_t errlen);
/* Worker: the same from any mapping of an artifact's byte space (`base`,
 * t->total_bytes long) named `id` (the spill tier writes from its own
 * mapping of an evicted artifact's memfd). */
int tc__durable_write_bytes(int dirfd, const char *root, const char *id,
			    const void *base, const struct tc__table *t,
			    const struct tc__digest *chunks, uint64_t nchunks,
			    char *err, size_t errlen);
/* Worker, a put that waits for its disk copy: hash o's sealed bytes into
 * chunks (nchunks of them) with nthreads threads and finish o (its id)
 * while TC_DURABLE_WRITERS threads write the same bytes to the shared
 * disk, then commit the copy under the id.  The disk and the CPU work at
 * once.  Returns the hashing's result (0, or negative: o has no id);
 * *disk_rc gets the disk's (0, or negative with err set). */
int tc__durable_hash_write(int dirfd, const char *root, struct tc__obj *o,
			   int nthreads, struct tc__digest *chunks,
			   uint64_t nchunks, int *disk_rc, char *err,
			   size_t errlen);
/* Worker, a put of GPU memory that waits for its disk copy: the same
 * from the allocation `mem` (o's byte space, o->shm NULL), read out
 * through pinned staging by nthreads threads and written by
 * TC_DURABLE_WRITERS (xfer.h, GPU -> DISK).  `have`: chunks hold the
 * digests already (adopted from the client), else they are computed on
 * the way (on the GPU where the kernels run).  Returns the hashing's
 * result; *disk_rc gets the disk's. */
int tc__durable_hash_write_gpu(int dirfd, const char *root, struct tc__obj *o,
			       const struct tc__gpu_mem *mem, int nthreads,
			       struct tc__digest *chunks, uint64_t nchunks,
			       bool have, int *disk_rc, char *err,
			       size_t errlen);
/* Loop, before a worker writes a copy of `bytes` bytes: its FILLING
 * replica on the shared-disk tier, in a dart of its own (*out, not in
 * the tier's table: the id may not be known yet).  Hand it to
 * tc__durable_record, or drop it with tc__durable_fill_drop when the
 * write fails or is not recorded.  Returns 0, or -ENOMEM (*out NULL: the
 * write goes on uncounted until recorded). */
int tc__durable_fill_begin(struct tc__durable *d, uint64_t bytes,
			   struct tc__dart **out);
/* Loop: the write of *fill failed or is not needed: its replica leaves
 * the tier and it is freed; *fill becomes NULL.  NULL or *fill NULL: a
 * no-op. */
void tc__durable_fill_drop(struct tc__durable *d, struct tc__dart **fill);
/* Loop: a put's or import's write of a copy failed (STATUS counts it). */
void tc__durable_write_failed(struct tc__durable *d);
/* Loop: record o as durable (after tc__durable_write succeeded).  ttl_ms
 * 0 = no expiry.  `fill` (may be NULL, or point at NULL) is the write's
 * FILLING replica: it becomes the record's, READY, or is dropped when o
 * was recorded already or on failure; *fill is NULL on return.  A record
 * without one joins the tier READY.  Returns 0, -ENOMEM or -EIO (the
 * metadata could not be committed: not durable). */
int tc__durable_record(struct tc__durable *d, const struct tc__obj *o,
		       enum tc__policy p, uint64_t ttl_ms,
		       struct tc__dart **fill, char *err, size_t errlen);
/* The durable artifact `ref` (id or key) names, or NULL. */
struct tc__dart *tc__durable_find(struct tc__durable *d, struct tc__objs *objs,
				  const char *ref);
bool tc__durable_has(struct tc__durable *d, const char *id);
/* Forget artifact id: its record, and its disk copy unless keep_disk.
 * 0 when it was not durable. */
int tc__durable_forget(struct tc__durable *d, const char *id, bool keep_disk,
		       char *err, size_t errlen);
/* A key changed (created, moved) or went: record it when it names a
 * durable artifact or was recorded before.  Errors are logged. */
void tc__durable_key_changed(struct tc__durable *d, struct tc__objs *objs,
			     const char *key);
void tc__durable_key_removed(struct tc__durable *d, const char *key);

/* Where a restore puts the bytes.  Host memory (to_gpu false): a sealed
 * memfd, the artifact's host replica.  A GPU (to_gpu): straight from the
 * data file into a new replica on the GPU with `uuid`, through the GPU
 * loader (pinned staging, the chunks hashed on the GPU where the kernels
 * run); no host copy is made. */
struct tc__gpu_tier;
struct tc__restore_to {
	bool to_gpu;
	struct tc__gpu_tier *tier;	 /* to_gpu: the daemon's GPU tier */
	uint8_t uuid[TC_GPU_UUID_BYTES]; /* to_gpu: which GPU */
	int io_engine;			 /* to_gpu: enum tc__io_engine */
	int gpu_threads; /* to_gpu: the loader's (tc__cfg_gpu_load_threads) */
};

/* Load a durable artifact's bytes from its disk copy into host memory or
 * straight to a GPU replica (`to`; NULL: host memory), checking every
 * chunk digest against the manifest.  done(arg, o, rc, err, to_gpu) runs
 * on the loop with the inserted artifact (or NULL and rc < 0), to_gpu
 * saying where the load that ran put the bytes; requests for an artifact
 * being loaded join the running load, wherever it loads to (a request
 * that needs the other place runs again and starts its own).  Returns 0
 * (done will run) or a negative code with err set (done will not run). */
typedef void tc__durable_done_fn(void *arg, struct tc__obj *o, int rc,
				 const char *err, bool to_gpu);
int tc__durable_restore(struct tc__durable *d, struct tc__dart *a,
			struct tc__objs *objs, struct tc__jobs *pool,
			int io_threads, const struct tc__restore_to *to,
			tc__durable_done_fn *done, void *arg, char *err,
			size_t errlen);

/* Once a second: artifacts whose TTL passed go (memory, disk, record);
 * cold artifacts' host copies unused for cold_ttl_ms are dropped (the
 * disk copy stays). */
void tc__durable_tick(struct tc__durable *d, struct tc__objs *objs);

/* Status and inspect: the tier's state and counters (with the tier's
 * used_bytes, filling_bytes and replicas: the replica core's view), and
 * one artifact's
 * durability ({"state": "durable", "path": ..., "degraded": [...]}), or
 * NULL when it is not durable. */
json_t *tc__durable_status_json(struct tc__durable *d);
/* The tier's gauges for metrics (all zero when d is NULL). */
struct tc__metrics_disk;
void tc__durable_counts(struct tc__durable *d, struct tc__metrics_disk *out);
json_t *tc__durable_obj_json(struct tc__durable *d, const char *id);
/* Artifacts of this tier not in memory, for LIST (an array of objects);
 * those `skip` (another tier, or NULL) also has are left to it. */
json_t *tc__durable_list_json(struct tc__durable *d, struct tc__objs *objs,
			      struct tc__durable *skip);
/* One such artifact's LIST entry (the head of its INSPECT answer too). */
json_t *tc__durable_entry_json(struct tc__durable *d, struct tc__objs *objs,
			       const struct tc__dart *a);
/* The spill tier's part of inspect for `id` ({"state": "spilled" or
 * "writing", "path": ...}), or NULL when it has no copy. */
json_t *tc__spill_obj_json(struct tc__durable *d, const char *id);
/* The "should" part of policy p that is not met for artifact id, written
 * into buf: ha's replica on another node when it is not made (not in a
 * cluster, pending, failed and why).  NULL when nothing is degraded. */
const char *tc__durable_degraded(struct tc__durable *d, const char *id,
				 enum tc__policy p, char *buf, size_t len);
/* Policy ha: record the state of id's replica on another node (node: the
 * one that holds it, or the one being asked; why: a failure's reason).
 * No-op when id is not recorded (removed meanwhile). */
void tc__durable_ha_set(struct tc__durable *d, const char *id,
			enum tc__ha_state st, const char *node,
			const char *why);
/* The ids of the recorded ha artifacts, TC_ID_LEN + 1 bytes each
 * (malloc'd; NULL with *n = 0 when none or out of memory). */
char *tc__durable_ha_ids(struct tc__durable *d, size_t *n);
/* TC_HA_NONE when id is not recorded. */
enum tc__ha_state tc__durable_ha_state(struct tc__durable *d, const char *id);
/* This daemon is in a cluster (ha replicas can be made): changes what a
 * replica never asked for is reported as. */
void tc__durable_set_clustered(struct tc__durable *d, bool on);

#endif /* TC_DURABLE_H */
