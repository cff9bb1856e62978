/*
 * durable.c - the shared-disk tier (see durable.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/map.h"
#include "durable.h"
#include "durable_internal.h"
#include "format/format.h"
#include "gpu_tier.h"
#include "metrics.h"
#include "xfer/loader.h"
#include "xfer/xfer.h"
#include "net/ev.h"
#include "shm.h"
#include "tcast/errors.h"

struct tc__restore {
	struct tc__job job;
	struct tc__durable *d;
	struct tc__objs *objs;
	struct tc__dart *a; /* NULL once forgotten meanwhile */
	int phase;	    /* 1 = read the manifest, 2 = load */
	int io_threads;
	struct tc__jobs *pool;
	struct tc__source *src;
	struct tc__obj *o;
	struct tc__digest *chunks;
	/* Straight to a GPU (to.to_gpu): the loader fills gmem, which the
	 * tier adopts as the artifact's replica on gdev; no host copy.
	 * gfill is that replica, FILLING on the GPU's tier from the charge
	 * to the adoption, dropped if the load fails. */
	struct tc__restore_to to;
	struct tc__gpu_replica *gfill; /* loop only */
	int gdev;		       /* the daemon's ordinal, once charged */
	uint64_t gcharged;	       /* bytes charged (to allocate) */
	struct tc__gpu_mem gmem; /* the allocation while the load owns it */
	bool copying;		 /* counted in tc__gpu_tier_copy_begin */
	uint32_t open_waits;	 /* phase 1 runs while the tier opens */
	struct tc__gpu_load_stats gstats;
	uint64_t t0_ns;
	struct waiter {
		tc__durable_done_fn *fn;
		void *arg;
	} * w;
	uint32_t nw;
	int rc;
	char err[512];
};

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Temporaries a crash left behind (format.h: .tmp-<hex>-<random>): never
 * artifacts, removed at start so they do not pile up.  Those a live
 * writer still locks stay: several nodes may share the folder, and one
 * starting must not pull a write from under another. */
static void remove_temps(int rootfd)
{
	int fd = dup(rootfd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	size_t pl = strlen(TC_NATIVE_TMP_PREFIX);
	uint32_t n = 0, busy = 0;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(dir))) {
		int sub;

		if (strncmp(e->d_name, TC_NATIVE_TMP_PREFIX, pl))
			continue;
		if (!tc__native_tmp_unowned(rootfd, e->d_name)) {
			busy++;
			continue;
		}
		sub = openat(rootfd, e->d_name,
			     O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (sub >= 0) {
			unlinkat(sub, TC_NATIVE_DATA, 0);
			unlinkat(sub, TC_NATIVE_MANIFEST, 0);
			close(sub);
		}
		if (unlinkat(rootfd, e->d_name, AT_REMOVEDIR) == 0)
			n++;
	}
	closedir(dir);
	if (n)
		tc__log(TC_LOG_INFO,
			"removed %u unfinished write(s) left by a crash", n);
	if (busy)
		tc__log(TC_LOG_INFO,
			"left %u write(s) in progress in the shared folder "
			"(another daemon's, locked by their writer)",
			busy);
}

/* The byte spaces of the recorded copies: the shared-disk tier's READY
 * replicas, which every record has (tier.used less the copies being
 * written, FILLING), so no count beside the tier's can drift from it. */
static uint64_t recorded_bytes(const struct tc__durable *d)
{
	return d->tier.used - d->tier.filling_bytes;
}

/* What the tier's folder is called in messages. */
static const char *tier_name(const struct tc__durable *d)
{
	return d->spill ? "spill folder" : "shared disk";
}

/* Open <shared>/tcast, creating the subfolder; the shared folder itself
 * must exist (it is a mount, not ours to invent). */
static int open_root(struct tc__durable *d)
{
	struct statvfs vfs;
	int fd;

	if (d->rootfd >= 0)
		return 0;
	if (mkdir(d->root, 0777) < 0 && errno != EEXIST) {
		snprintf(d->disk_err, sizeof(d->disk_err),
			 "%s '%s' is unusable: %s", tier_name(d), d->shared,
			 strerror(errno));
		return -1;
	}
	fd = open(d->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(d->disk_err, sizeof(d->disk_err),
			 "%s '%s' is unusable: %s", tier_name(d), d->root,
			 strerror(errno));
		return -1;
	}
	/* root passes permission checks: a read-only mount is the case to
	 * catch, with the folder's own write bit for everyone else. */
	if ((fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) ||
	    faccessat(fd, ".", W_OK, AT_EACCESS) < 0) {
		snprintf(d->disk_err, sizeof(d->disk_err),
			 "%s '%s' is read-only", tier_name(d), d->root);
		close(fd);
		return -1;
	}
	d->rootfd = fd;
	d->disk_err[0] = '\0';
	remove_temps(fd);
	return 0;
}

/* ------------------------------------------------------------- the tier */

/* Durable copies are policy, not cache: none is ever a victim. */
static bool disk_evictable(struct tc__tier *t, struct tc__replica *r)
{
	(void)t;
	(void)r;
	return false;
}

static bool disk_evict(struct tc__tier *t, struct tc__replica *r, void *ctx)
{
	(void)r;
	(void)ctx;
	tc__log(TC_LOG_ERROR, "BUG: the %s tier was asked to evict a copy",
		t->name);
	return false;
}

static const struct tc__tier_ops disk_tier_ops = {
	.evictable = disk_evictable,
	.evict = disk_evict,
};

int tc__durable_fill_begin(struct tc__durable *d, uint64_t bytes,
			   struct tc__dart **out)
{
	struct tc__dart *a = tc__calloc(1, sizeof(*a));
	char err[256];
	int rc;

	*out = NULL;
	if (!a)
		return -ENOMEM;
	/* No budget: this cannot be refused (the disk's ENOSPC is the
	 * write's failure). */
	rc = tc__replica_fill(&a->rep, &d->tier, bytes, false, NULL, err,
			      sizeof(err));
	if (rc < 0) {
		tc__log(TC_LOG_ERROR, "BUG: %s", err);
		tc__free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void tc__durable_fill_drop(struct tc__durable *d, struct tc__dart **fill)
{
	struct tc__dart *a = fill ? *fill : NULL;

	(void)d;
	if (!a)
		return;
	if (tc__replica_charged(&a->rep))
		tc__replica_gone(&a->rep, true);
	tc__free(a);
	*fill = NULL;
}

void tc__durable_write_failed(struct tc__durable *d)
{
	if (d)
		d->write_failures++;
}

int tc__durable_open_root(struct tc__durable *d)
{
	return open_root(d);
}

struct tc__durable *tc__durable_new_bare(const char *shown, const char *root)
{
	struct tc__durable *d = tc__calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->rootfd = -1;
	tc__map_init(&d->arts);
	snprintf(d->shared, sizeof(d->shared), "%s", shown);
	snprintf(d->root, sizeof(d->root), "%s", root);
	return d;
}

static int load_art(void *arg, const struct tc__mdb_artifact *r)
{
	struct tc__durable *d = arg;
	struct tc__dart *a;
	char why[128];

	if (!tc__is_id(r->id) || tc__map_get(&d->arts, r->id))
		return 0;
	a = tc__calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->rec = *r;
	if (tc__policy_parse(r->policy, &a->policy, why, sizeof(why)) < 0 ||
	    !tc__policy_on_disk(a->policy))
		a->policy = TC_POLICY_DURABLE;
	if (tc__map_put(&d->arts, a->rec.id, a) < 0) {
		tc__free(a);
		return -ENOMEM;
	}
	/* On disk already: a READY replica of the tier. */
	tc__replica_adopt(&a->rep, &d->tier, r->bytes);
	return 0;
}

static int load_key(void *arg, const char *key, const struct tc__mdb_version *v,
		    uint32_t n)
{
	return tc__objs_key_restore(arg, key, v, n);
}

int tc__durable_open(const struct tc__store_config *cfg, struct tc__objs *objs,
		     struct tc__durable **out, char *err, size_t errlen)
{
	struct tc__durable *d;
	char state[PATH_MAX + 16], sock[sizeof(cfg->socket)];
	uint64_t t0 = tc__now_ns();
	int rc;

	*out = NULL;
	if (!cfg->shared_disk[0])
		return 0;
	if (cfg->state_dir[0]) {
		snprintf(state, sizeof(state), "%s", cfg->state_dir);
	} else {
		snprintf(sock, sizeof(sock), "%s", cfg->socket);
		snprintf(state, sizeof(state), "%s/state", dirname(sock));
	}
	d = tc__calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->rootfd = -1;
	d->cold_ttl_ns = (uint64_t)cfg->cold_ttl_ms * 1000000;
	tc__map_init(&d->arts);
	tc__tier_init(&d->tier, "shared disk", UINT64_MAX, &disk_tier_ops, d);
	snprintf(d->shared, sizeof(d->shared), "%s", cfg->shared_disk);
	snprintf(d->root, sizeof(d->root), "%s/%s", cfg->shared_disk,
		 TC_DURABLE_SUBDIR);
	rc = tc__mdb_open(state, &d->db, err, errlen);
	if (rc < 0)
		goto out_free;
	rc = tc__mdb_load_artifacts(d->db, load_art, d, err, errlen);
	if (rc == 0)
		rc = tc__mdb_load_keys(d->db, load_key, objs, err, errlen);
	if (rc < 0)
		goto out_free;
	if (open_root(d) < 0)
		tc__log(TC_LOG_WARN,
			"%s: durable, ha and cold requests fail "
			"until it is usable",
			d->disk_err);
	tc__log(TC_LOG_INFO,
		"durable tier: %s, metadata in %s/%s, %zu artifacts (%llu "
		"bytes) known, loaded in %.1f ms",
		d->root, state, TC_MDB_FILE, d->arts.count,
		(unsigned long long)recorded_bytes(d),
		(double)(tc__now_ns() - t0) / 1e6);
	*out = d;
	return 0;

out_free:
	tc__durable_close(d);
	return rc;
}

void tc__durable_close(struct tc__durable *d)
{
	struct tc__map_entry *e;
	size_t b;

	if (!d)
		return;
	for (e = tc__map_next(&d->arts, NULL, &b); e;
	     e = tc__map_next(&d->arts, e, &b)) {
		struct tc__dart *a = e->val;

		/* A restore still running keeps its job; it sees a NULL
		 * dart.  The daemon is exiting: the pool is gone first. */
		if (a->restore)
			a->restore->a = NULL;
		tc__free(a);
	}
	tc__map_release(&d->arts);
	tc__mdb_close(d->db);
	if (d->rootfd >= 0)
		close(d->rootfd);
	tc__free(d);
}

int tc__durable_check(struct tc__durable *d, enum tc__policy p, char *err,
		      size_t errlen)
{
	if (!tc__policy_on_disk(p))
		return 0;
	if (!d) {
		snprintf(err, errlen,
			 "policy '%s' needs a shared-disk tier, which this "
			 "daemon does not have (set shared_disk in its "
			 "configuration, or use cache, warm or pinned)",
			 tc__policy_name(p));
		return TC_EPOLICY;
	}
	if (open_root(d) < 0) {
		snprintf(err, errlen, "policy '%s': %s", tc__policy_name(p),
			 d->disk_err);
		return TC_EPOLICY;
	}
	return 0;
}

int tc__durable_dirfd(const struct tc__durable *d)
{
	return d ? d->rootfd : -1;
}

const char *tc__durable_root(const struct tc__durable *d)
{
	return d ? d->root : "";
}

int tc__durable_write_bytes(int dirfd, const char *root, const char *id,
			    const void *base, const struct tc__table *t,
			    const struct tc__digest *chunks, uint64_t nchunks,
			    char *err, size_t errlen)
{
	struct tc__native_tmp w;
	struct tc__xfer x = { .from = TC_XFER_FROM_HOST,
			      .host = base,
			      .bytes = t->total_bytes,
			      .to = TC_XFER_TO_DISK,
			      .disk_dst = &w,
			      .writers = TC_DURABLE_WRITERS };
	int rc;

	rc = tc__native_have(dirfd, root, id, err, errlen);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	rc = tc__native_begin(dirfd, root, t->total_bytes, &w, err, errlen);
	if (rc < 0)
		return rc;
	rc = tc__xfer_run(&x, err, errlen);
	return tc__native_commit(&w, root, id, t, chunks, nchunks,
				 rc < 0 ? rc : x.sink_rc, err, errlen);
}

int tc__durable_write(int dirfd, const char *root, const struct tc__obj *o,
		      const struct tc__digest *chunks, uint64_t nchunks,
		      char *err, size_t errlen)
{
	if (!o->shm || !o->shm->map) {
		snprintf(err, errlen,
			 "'%s' has no sealed host copy to write to the shared "
			 "disk",
			 o->id);
		return TC_ENOTSUP;
	}
	return tc__durable_write_bytes(dirfd, root, o->id, o->shm->map,
				       &o->table, chunks, nchunks, err, errlen);
}

/*
 * The byte space of x's source (host memory or a GPU allocation, filled
 * in by the caller) to a new copy on disk, hashed into chunks on the way
 * unless `have` (the chunks are given), then o finished (its id) and the
 * copy committed under it.  Returns the hashing's result; *disk_rc gets
 * the disk's.
 */
static int hash_write(int dirfd, const char *root, struct tc__obj *o,
		      struct tc__xfer *x, struct tc__digest *chunks,
		      uint64_t nchunks, bool have, int *disk_rc, char *err,
		      size_t errlen)
{
	struct tc__native_tmp w;
	uint64_t size = o->table.total_bytes;
	char why[512];
	int rc = 0;

	x->bytes = size;
	x->chunks = have ? NULL : chunks;
	*disk_rc = tc__native_begin(dirfd, root, size, &w, err, errlen);
	if (*disk_rc < 0) {
		/* The disk failed already: the put fails with its reason,
		 * but the hash still runs (the caller frees by the id). */
		if (!have && x->from == TC_XFER_FROM_GPU)
			rc = tc__gpu_hash_chunks(x->gpu_src, size, x->nthreads,
						 chunks, why, sizeof(why));
		else if (!have)
			rc = tc__hash_chunks(x->host, size, x->nthreads,
					     chunks);
		return rc == 0 ? tc__obj_finish(o, chunks, nchunks) : rc;
	}
	x->to = TC_XFER_TO_DISK;
	x->disk_dst = &w;
	x->writers = TC_DURABLE_WRITERS;
	rc = tc__xfer_run(x, why, sizeof(why));
	if (rc == 0)
		rc = tc__obj_finish(o, chunks, nchunks);
	if (rc < 0) {
		tc__native_abort(&w);
		*disk_rc = rc;
		snprintf(err, errlen, "cannot hash '%s': %s", o->id,
			 why[0] && x->from == TC_XFER_FROM_GPU ?
				 why :
				 tc_strerror(rc));
		return rc;
	}
	*disk_rc = tc__native_commit(&w, root, o->id, &o->table, chunks,
				     nchunks, x->sink_rc, err, errlen);
	return 0;
}

int tc__durable_hash_write(int dirfd, const char *root, struct tc__obj *o,
			   int nthreads, struct tc__digest *chunks,
			   uint64_t nchunks, int *disk_rc, char *err,
			   size_t errlen)
{
	struct tc__xfer x = { .from = TC_XFER_FROM_HOST,
			      .host = o->shm->map,
			      .nthreads = nthreads };

	return hash_write(dirfd, root, o, &x, chunks, nchunks, false, disk_rc,
			  err, errlen);
}

int tc__durable_hash_write_gpu(int dirfd, const char *root, struct tc__obj *o,
			       const struct tc__gpu_mem *mem, int nthreads,
			       struct tc__digest *chunks, uint64_t nchunks,
			       bool have, int *disk_rc, char *err,
			       size_t errlen)
{
	struct tc__xfer x = { .from = TC_XFER_FROM_GPU,
			      .gpu_src = mem,
			      .ordinal = mem->device,
			      .nthreads = nthreads };

	return hash_write(dirfd, root, o, &x, chunks, nchunks, have, disk_rc,
			  err, errlen);
}

int tc__durable_record(struct tc__durable *d, const struct tc__obj *o,
		       enum tc__policy p, uint64_t ttl_ms,
		       struct tc__dart **fill, char *err, size_t errlen)
{
	struct tc__dart *a = tc__map_get(&d->arts, o->id);
	struct tc__mdb_artifact r;
	bool fresh = !a;
	int rc;

	memset(&r, 0, sizeof(r));
	if (a) {
		r = a->rec;
		/* The stronger policy stays (as a deduplicated import). */
		if (p > a->policy)
			snprintf(r.policy, sizeof(r.policy), "%s",
				 tc__policy_name(p));
	} else {
		snprintf(r.id, sizeof(r.id), "%s", o->id);
		snprintf(r.policy, sizeof(r.policy), "%s", tc__policy_name(p));
		r.bytes = o->table.total_bytes;
		r.ntensors = o->table.ntensors;
		r.created_ms = unix_ms();
		snprintf(r.source, sizeof(r.source), "%s", o->source);
	}
	if (ttl_ms)
		r.expires_ms = unix_ms() + ttl_ms;
	rc = tc__mdb_artifact_put(d->db, &r, err, errlen);
	if (rc < 0)
		goto out_drop_fill;
	if (fresh) {
		/* The write's FILLING replica becomes the record's; a
		 * record without one (out of memory at its start) joins
		 * the tier now. */
		if (fill && *fill) {
			a = *fill;
			*fill = NULL;
		} else {
			a = tc__calloc(1, sizeof(*a));
		}
		if (a)
			a->rec = r;
		/* The map borrows the key: the dart's own copy of the id. */
		if (!a || tc__map_put(&d->arts, a->rec.id, a) < 0) {
			tc__durable_fill_drop(d, &a);
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out_drop_fill;
		}
		if (tc__replica_charged(&a->rep)) {
			tc__replica_recharge(&a->rep, r.bytes);
			tc__replica_ready(&a->rep);
		} else {
			tc__replica_adopt(&a->rep, &d->tier, r.bytes);
		}
		d->written++;
	}
	a->rec = r;
	if (tc__policy_parse(r.policy, &a->policy, err, errlen) < 0)
		a->policy = p;
	rc = 0;

out_drop_fill:
	/* Recorded before (a deduplicated write), or not recorded: the
	 * write's copy is not a replica of its own. */
	tc__durable_fill_drop(d, fill);
	return rc;
}

bool tc__durable_has(struct tc__durable *d, const char *id)
{
	return d && tc__map_get(&d->arts, id);
}

struct tc__dart *tc__durable_find(struct tc__durable *d, struct tc__objs *objs,
				  const char *ref)
{
	struct tc__key *k;

	if (!d)
		return NULL;
	if (tc__is_id(ref))
		return tc__map_get(&d->arts, ref);
	k = tc__map_get(&objs->keys, ref);
	return k && k->id[0] ? tc__map_get(&d->arts, k->id) : NULL;
}

int tc__durable_forget(struct tc__durable *d, const char *id, bool keep_disk,
		       char *err, size_t errlen)
{
	struct tc__dart *a = d ? tc__map_get(&d->arts, id) : NULL;
	int rc;

	if (!a)
		return 0;
	/* The record first: a crash between the two leaves a folder no
	 * record names (harmless), never a record naming nothing. */
	rc = d->db ? tc__mdb_artifact_del(d->db, id, err, errlen) : 0;
	if (rc < 0)
		return rc;
	tc__map_del(&d->arts, id);
	if (a->restore)
		a->restore->a = NULL;
	if (tc__replica_charged(&a->rep)) /* a spilled copy: off its tier */
		tc__replica_gone(&a->rep, true);
	tc__free(a);
	if (keep_disk)
		return 0;
	if (open_root(d) == 0 && (rc = tc__native_remove(d->rootfd, id)) < 0)
		tc__log(TC_LOG_WARN, "cannot remove '%s/%s': %s", d->root,
			id + strlen(TC_ID_PREFIX), tc_strerror(rc));
	return 0;
}

void tc__durable_key_changed(struct tc__durable *d, struct tc__objs *objs,
			     const char *key)
{
	struct tc__key *k;
	struct tc__key_version *h;
	struct tc__mdb_version v;
	char err[256];

	if (!d || !d->db || !(k = tc__map_get(&objs->keys, key)) || !k->nhist)
		return;
	if (!tc__map_get(&d->arts, k->id) && !tc__mdb_key_known(d->db, key))
		return;
	h = &k->hist[(k->nhist - 1) % TC_KEY_HISTORY];
	v.gen = h->gen;
	snprintf(v.id, sizeof(v.id), "%s", h->id);
	v.unix_ms = h->unix_ms;
	if (tc__mdb_key_set(d->db, key, &v, TC_KEY_HISTORY, err, sizeof(err)) <
	    0)
		tc__log(TC_LOG_ERROR, "key '%s': %s", key, err);
}

void tc__durable_key_removed(struct tc__durable *d, const char *key)
{
	char err[256];

	if (d && d->db && tc__mdb_key_known(d->db, key) &&
	    tc__mdb_key_del(d->db, key, err, sizeof(err)) < 0)
		tc__log(TC_LOG_ERROR, "key '%s': %s", key, err);
}

/* -------------------------------------------------------------- restore */

/* A load from the spill folder failed because of the copy itself (a
 * changed, cut or vanished file): the copy goes, so no request reads it
 * again.  The artifact is then gone, as an eviction without a spill. */
static bool spill_copy_bad(int rc)
{
	return rc == TC_EDIGEST || rc == TC_EBADFILE || rc == -EIO ||
	       rc == -ENOENT;
}

static void restore_finish(struct tc__restore *r, struct tc__obj *o)
{
	struct tc__durable *d = r->d;
	char id[TC_ID_LEN + 1] = "", err[256];

	if (r->a) {
		r->a->restore = NULL;
		tc__replica_touch(&r->a->rep); /* spill tier: its LRU */
		if (d->spill && spill_copy_bad(r->rc))
			snprintf(id, sizeof(id), "%s", r->a->rec.id);
	}
	if (r->rc < 0)
		r->d->restore_failures++;
	else
		r->d->restores++;
	if (r->copying)
		tc__gpu_tier_copy_end(r->to.tier);
	/* A failed GPU load gives its allocation back and its FILLING
	 * replica goes, before the waiters run (one of them may start
	 * another). */
	if (r->gfill) {
		tc__gpu_release(&r->gmem);
		tc__gpu_tier_fill_drop(r->to.tier, &r->gfill);
	}
	for (uint32_t i = 0; i < r->nw; i++)
		r->w[i].fn(r->w[i].arg, o, r->rc, r->err, r->to.to_gpu);
	if (id[0]) {
		struct tc__dart *a = tc__map_get(&d->arts, id);

		/* Unless a waiter started another load of it meanwhile. */
		if (a && !a->restore && !a->writing) {
			tc__log(TC_LOG_WARN,
				"%s: its spilled copy is unusable; removing it",
				id);
			tc__durable_forget(d, id, false, err, sizeof(err));
		}
	}
	tc__source_free(r->src);
	tc__objs_fill_free(r->objs, r->o); /* a failed fill goes */
	tc__free(r->chunks);
	tc__free(r->w);
	tc__free(r);
}

/* Worker, to a GPU: the data file straight into gmem through the GPU
 * loader, then the id and the manifest's check from the chunk digests it
 * computed (on the GPU where the kernels run). */
static void restore_run_gpu(struct tc__restore *r, uint64_t n)
{
	struct tc__gpu_load_opts lo = { .nthreads = r->to.gpu_threads,
					.depth = 2,
					.direct = -1,
					.stage_chunks = 1,
					.io = r->to.io_engine };
	struct tc__xfer x = { .from = TC_XFER_FROM_FILES,
			      .files = r->src,
			      .to = TC_XFER_TO_GPU,
			      .gpu_dst = &r->gmem,
			      .ordinal = r->gdev,
			      .alloc_bytes = r->gcharged,
			      .nthreads = r->io_threads,
			      .load = &lo,
			      .chunks = r->chunks };

	r->rc = tc__xfer_run(&x, r->err, sizeof(r->err));
	r->gstats = x.stats;
	if (r->rc < 0)
		return;
	r->o->table = r->src->table;
	tc__table_init(&r->src->table);
	r->rc = tc__obj_finish(r->o, r->chunks, n);
	if (r->rc == 0)
		r->rc = tc__native_check(r->src, r->chunks, n, r->o->id, r->err,
					 sizeof(r->err));
}

/* How long a GPU restore waits for a driver load another request began
 * (TC_EBUSY from the tier), in steps of OPEN_WAIT_US. */
#define OPEN_WAIT_US	2000
#define OPEN_WAIT_STEPS 5000

static void restore_run(struct tc__job *job)
{
	struct tc__restore *r = (struct tc__restore *)job;
	uint64_t n;

	if (r->phase == 1 && r->open_waits) {
		usleep(OPEN_WAIT_US);
		return;
	}
	if (r->phase == 1) {
		char path[PATH_MAX + 96];

		snprintf(path, sizeof(path), "%s/%s", r->d->root,
			 r->o->id + strlen(TC_ID_PREFIX));
		r->rc = tc__source_open(path, &r->src, r->err, sizeof(r->err));
		if (r->rc == 0 && strcmp(r->src->expect_id, r->o->id)) {
			snprintf(r->err, sizeof(r->err),
				 "'%s' holds %s, not %s", path,
				 r->src->expect_id[0] ? r->src->expect_id :
							"no native artifact",
				 r->o->id);
			r->rc = TC_EDIGEST;
		}
		/* The driver is loaded here, off the loop (sticky: a no-op
		 * once loaded). */
		if (r->rc == 0 && r->to.to_gpu)
			r->rc = tc__gpu_init(r->err, sizeof(r->err));
		return;
	}
	n = tc__chunk_count(r->src->table.total_bytes);
	r->chunks = tc__calloc(n ? n : 1, sizeof(*r->chunks));
	if (!r->chunks) {
		r->rc = -ENOMEM;
		return;
	}
	if (r->to.to_gpu) {
		restore_run_gpu(r, n);
		return;
	}
	r->rc = tc__shm_prepare_fill(r->o->shm);
	if (r->rc == 0) {
		struct tc__xfer x = { .from = TC_XFER_FROM_FILES,
				      .files = r->src,
				      .to = TC_XFER_TO_HOST,
				      .host_dst = r->o->shm->rw_map,
				      .host_fd = r->o->shm->fd,
				      .nthreads = r->io_threads,
				      .chunks = r->chunks };

		r->rc = tc__xfer_run(&x, r->err, sizeof(r->err));
	}
	if (r->rc == 0)
		r->rc = tc__shm_seal(r->o->shm);
	if (r->rc < 0) {
		if (!r->err[0])
			snprintf(r->err, sizeof(r->err), "%s",
				 tc_strerror(r->rc));
		return;
	}
	r->o->table = r->src->table;
	tc__table_init(&r->src->table);
	r->rc = tc__obj_finish(r->o, r->chunks, n);
	if (r->rc == 0)
		r->rc = tc__native_check(r->src, r->chunks, n, r->o->id, r->err,
					 sizeof(r->err));
}

/* Loop, after phase 1 of a GPU restore: the tier open, the GPU's budget
 * charged (evicting unleased replicas), then phase 2.  Returns 0 when the
 * job was submitted again (phase 1 to wait for the tier, or phase 2). */
static int restore_gpu_charge(struct tc__restore *r)
{
	int rc = tc__gpu_tier_open_now(r->to.tier, r->err, sizeof(r->err));

	if (rc == TC_EBUSY && r->open_waits < OPEN_WAIT_STEPS) {
		/* Another request is loading the driver: wait for it. */
		r->open_waits++;
		r->err[0] = '\0';
		tc__jobs_submit(r->pool, &r->job);
		return 0;
	}
	if (rc == 0)
		rc = tc__gpu_tier_fill_begin(r->to.tier, r->to.uuid,
					     r->src->table.total_bytes,
					     &r->gfill, &r->gdev, &r->gcharged,
					     NULL, r->err, sizeof(r->err));
	if (rc < 0)
		return rc;
	tc__gpu_mem_init(&r->gmem);
	tc__gpu_tier_copy_begin(r->to.tier);
	r->copying = true;
	r->phase = 2;
	tc__jobs_submit(r->pool, &r->job);
	return 0;
}

/* Loop, a GPU restore done: the artifact goes into the table with no host
 * copy and its replica on that GPU. */
static void restore_done_gpu(struct tc__restore *r)
{
	const struct tc__gpu_load_stats *st = &r->gstats;
	double secs = (double)(tc__now_ns() - r->t0_ns) / 1e9;
	struct tc__obj *o = r->o;
	int gdev = r->gdev;
	char why[96] = "";

	tc__gpu_tier_copy_end(r->to.tier);
	r->copying = false;
	r->o->host.bytes = 0; /* charged to the GPU, not host memory */
	if (tc__objs_insert(r->objs, r->o, &o) < 0) {
		r->rc = -ENOMEM;
		snprintf(r->err, sizeof(r->err), "out of memory");
		restore_finish(r, NULL);
		return;
	}
	r->o = NULL;
	/* The allocation and its charge are the replica's from here, READY
	 * (or the fill goes when the same content is on that GPU already:
	 * kept, ready or filling, the request uses that one).  Only OOM
	 * leaves o without a replica there. */
	if (tc__gpu_tier_fill_adopt(r->to.tier, o, &r->gfill, &r->gmem,
				    st->seconds) < 0) {
		r->rc = -ENOMEM;
		snprintf(r->err, sizeof(r->err),
			 "out of memory adopting the GPU replica of %s", o->id);
		restore_finish(r, NULL);
		return;
	}
	r->d->restores_gpu++;
	r->d->restored_gpu_bytes += st->bytes;
	if (st->uring_errno)
		snprintf(why, sizeof(why), " (io_uring unavailable: %s)",
			 strerror(st->uring_errno));
	tc__log(TC_LOG_INFO,
		"loaded %s from the %s, straight to the GPU replica "
		"on GPU %d: %llu bytes in %.3f s (loader %.2f GB/s), read with "
		"%s%s, %llu bytes with O_DIRECT, chunk digests checked against "
		"the manifest (hashed on the %s)",
		o->id, tier_name(r->d), gdev,
		(unsigned long long)o->table.total_bytes, secs,
		st->seconds > 0 ? (double)st->bytes / st->seconds / 1e9 : 0.0,
		st->uring_bytes ? "io_uring" : "pread", why,
		(unsigned long long)st->direct_bytes,
		st->gpu_hash ? "GPU" : "host");
	restore_finish(r, o);
}

static void restore_done(struct tc__job *job)
{
	struct tc__restore *r = (struct tc__restore *)job;
	struct tc__obj *o;
	uint64_t bytes, extra;

	if (r->rc == 0 && r->phase == 1 && r->to.to_gpu) {
		r->rc = restore_gpu_charge(r);
		if (r->rc == 0)
			return;
	} else if (r->rc == 0 && r->phase == 1) {
		bytes = tc__shm_round(r->src->table.total_bytes);
		extra = tc__table_cost(&r->src->table);
		/* A FILLING host replica until it is inserted. */
		r->rc = tc__objs_fill(r->objs, r->o, bytes + extra,
				      r->a ? r->a->policy : TC_POLICY_DURABLE,
				      r->err, sizeof(r->err));
		if (r->rc == 0) {
			r->rc = tc__shm_create("tcast-artifact", bytes,
					       &r->o->shm);
			if (r->rc < 0)
				snprintf(r->err, sizeof(r->err),
					 "cannot create a %llu-byte segment: "
					 "%s",
					 (unsigned long long)bytes,
					 tc_strerror(r->rc));
		}
		if (r->rc == 0) {
			r->phase = 2;
			tc__jobs_submit(r->pool, &r->job);
			return;
		}
	}
	if (r->rc < 0) {
		tc__log(TC_LOG_ERROR, "cannot load %s from the %s%s: %s",
			r->o->id, tier_name(r->d),
			r->to.to_gpu ? " straight to a GPU replica" : "",
			r->err[0] ? r->err : tc_strerror(r->rc));
		restore_finish(r, NULL);
		return;
	}
	r->o->policy = r->a ? r->a->policy : TC_POLICY_DURABLE;
	r->o->load_seconds = (double)(tc__now_ns() - r->t0_ns) / 1e9;
	snprintf(r->o->source, sizeof(r->o->source), "disk:%s/%s", r->d->root,
		 r->o->id + strlen(TC_ID_PREFIX));
	if (r->d->spill && r->a) {
		/* A cache artifact back from its spill: what it was. */
		snprintf(r->o->source, sizeof(r->o->source), "%s",
			 r->a->rec.source);
		r->o->expires_ms = r->a->rec.expires_ms;
	}
	if (r->to.to_gpu) {
		restore_done_gpu(r);
		return;
	}
	o = r->o;
	if (tc__objs_insert(r->objs, r->o, &o) < 0) {
		r->rc = -ENOMEM;
		snprintf(r->err, sizeof(r->err), "out of memory");
		restore_finish(r, NULL);
		return;
	}
	r->o = NULL; /* and its charge */
	r->d->restored_host_bytes += o->table.total_bytes;
	tc__log(TC_LOG_INFO,
		"loaded %s from the %s into host memory (%llu bytes in %.3f s, "
		"chunk digests checked against the manifest)",
		o->id, tier_name(r->d),
		(unsigned long long)o->table.total_bytes, o->load_seconds);
	restore_finish(r, o);
}

int tc__durable_restore(struct tc__durable *d, struct tc__dart *a,
			struct tc__objs *objs, struct tc__jobs *pool,
			int io_threads, const struct tc__restore_to *to,
			tc__durable_done_fn *done, void *arg, char *err,
			size_t errlen)
{
	struct tc__restore *r = a->restore;
	struct waiter *w;

	if (!r) {
		if (open_root(d) < 0) {
			snprintf(err, errlen, "'%s' is on the %s: %s",
				 a->rec.id, tier_name(d), d->disk_err);
			return TC_EPOLICY;
		}
		r = tc__calloc(1, sizeof(*r));
		if (!r || !(r->o = tc__obj_new())) {
			tc__free(r);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		snprintf(r->o->id, sizeof(r->o->id), "%s", a->rec.id);
		r->d = d;
		r->objs = objs;
		r->a = a;
		r->phase = 1;
		r->pool = pool;
		r->io_threads = io_threads;
		if (to)
			r->to = *to;
		r->gdev = -1;
		tc__gpu_mem_init(&r->gmem);
		r->t0_ns = tc__now_ns();
		r->job.run = restore_run;
		r->job.done = restore_done;
		a->restore = r;
		tc__jobs_submit(pool, &r->job);
	}
	w = tc__realloc(r->w, (r->nw + 1) * sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->w = w;
	r->w[r->nw].fn = done;
	r->w[r->nw].arg = arg;
	r->nw++;
	return 0;
}

/* ----------------------------------------------------------------- time */

void tc__durable_tick(struct tc__durable *d, struct tc__objs *objs)
{
	uint64_t now = unix_ms(), mono = tc__now_ns();
	char(*gone)[TC_ID_LEN + 1] = NULL, err[256];
	struct tc__map_entry *e;
	size_t b, ngone = 0;

	if (!d)
		return;
	for (e = tc__map_next(&d->arts, NULL, &b); e;
	     e = tc__map_next(&d->arts, e, &b)) {
		struct tc__dart *a = e->val;
		struct tc__obj *o = tc__map_get(&objs->by_id, a->rec.id);

		if (o && o->dead)
			o = NULL;
		if (a->rec.expires_ms && now >= a->rec.expires_ms &&
		    !a->restore && !a->writing) {
			/* Removed after the walk: the map cannot change
			 * under it. */
			void *g =
				tc__realloc(gone, (ngone + 1) * sizeof(*gone));

			if (g) {
				gone = g;
				memcpy(gone[ngone++], a->rec.id, TC_ID_LEN + 1);
			}
			continue;
		}
		/* cold: the host copy is kept for a TTL after its last use;
		 * the disk copy serves the next one. */
		if (!d->spill && o && o->policy == TC_POLICY_COLD &&
		    !o->host.leases && o->host.bytes &&
		    mono - o->host.last_use_ns > d->cold_ttl_ns) {
			tc__objs_kill(objs, o);
			d->cold_dropped++;
		}
	}
	for (size_t i = 0; i < ngone; i++) {
		struct tc__obj *o = tc__map_get(&objs->by_id, gone[i]);

		tc__log(TC_LOG_INFO, "%s: its TTL passed; removing it",
			gone[i]);
		/* A spilled artifact's copy in memory has its own TTL
		 * (the server's tick); it may be durable too by now. */
		if (o && !o->dead && !d->spill)
			tc__objs_rm(objs, gone[i], err, sizeof(err));
		if (tc__durable_forget(d, gone[i], false, err, sizeof(err)) < 0)
			tc__log(TC_LOG_ERROR, "%s: %s", gone[i], err);
		else
			d->expired++;
	}
	tc__free(gone);
}

/* ----------------------------------------------------------------- JSON */

json_t *tc__durable_status_json(struct tc__durable *d)
{
	json_t *j;

	if (!d)
		return json_null();
	j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		      "s:I, s:I, s:I, s:I}",
		      "shared_disk", d->root, "state",
		      d->rootfd >= 0 ? "ok" : "unavailable", "error",
		      d->disk_err, "artifacts", (json_int_t)d->arts.count,
		      "bytes", (json_int_t)recorded_bytes(d), "written",
		      (json_int_t)d->written, "write_failures",
		      (json_int_t)d->write_failures, "restores",
		      (json_int_t)d->restores, "restore_failures",
		      (json_int_t)d->restore_failures, "expired",
		      (json_int_t)d->expired, "cold_dropped",
		      (json_int_t)d->cold_dropped, "restores_gpu",
		      (json_int_t)d->restores_gpu, "restored_host_bytes",
		      (json_int_t)d->restored_host_bytes, "restored_gpu_bytes",
		      (json_int_t)d->restored_gpu_bytes);
	/* The tier as the replica core sees it, as each GPU's in "gpu":
	 * used_bytes = the copies recorded (READY) plus those being written
	 * (filling_bytes); no budget (null). */
	if (!j)
		return NULL;
	json_object_set_new(j, "used_bytes",
			    json_integer((json_int_t)d->tier.used));
	json_object_set_new(j, "filling_bytes",
			    json_integer((json_int_t)d->tier.filling_bytes));
	json_object_set_new(j, "replicas",
			    json_integer((json_int_t)d->tier.nreplicas));
	json_object_set_new(j, "budget_bytes", json_null());
	return j;
}

void tc__durable_counts(struct tc__durable *d, struct tc__metrics_disk *out)
{
	memset(out, 0, sizeof(*out));
	if (!d)
		return;
	out->replicas = d->tier.nreplicas;
	out->bytes = d->tier.used;
	out->filling_bytes = d->tier.filling_bytes;
	out->write_failures = d->write_failures;
}

static const char *const ha_names[] = { "none", "pending", "done", "failed" };

const char *tc__durable_degraded(struct tc__durable *d, const char *id,
				 enum tc__policy p, char *buf, size_t len)
{
	struct tc__dart *a = d && id ? tc__map_get(&d->arts, id) : NULL;

	if (p != TC_POLICY_HA)
		return NULL;
	if (!d || !d->clustered) {
		snprintf(buf, len,
			 "ha: no replica on another node (this "
			 "daemon is not part of a cluster)");
		return buf;
	}
	switch (a ? a->ha : TC_HA_NONE) {
	case TC_HA_DONE:
		return NULL;
	case TC_HA_PENDING:
		snprintf(buf, len,
			 "ha: replica on another node pending (still being "
			 "made; inspect shows when it is)");
		break;
	case TC_HA_FAILED:
		snprintf(buf, len, "ha: no replica on another node: %s",
			 a->ha_why);
		break;
	default:
		snprintf(buf, len,
			 "ha: no replica on another node known (none made "
			 "since this daemon started; a put or import of it "
			 "makes one)");
	}
	return buf;
}

void tc__durable_ha_set(struct tc__durable *d, const char *id,
			enum tc__ha_state st, const char *node, const char *why)
{
	struct tc__dart *a = d ? tc__map_get(&d->arts, id) : NULL;

	if (!a)
		return;
	a->ha = st;
	snprintf(a->ha_node, sizeof(a->ha_node), "%s", node ? node : "");
	snprintf(a->ha_why, sizeof(a->ha_why), "%s", why ? why : "");
	a->ha_unix_ms = unix_ms();
}

char *tc__durable_ha_ids(struct tc__durable *d, size_t *n)
{
	struct tc__map_entry *e;
	size_t b, k = 0;
	char *ids;

	*n = 0;
	if (!d || !d->arts.count)
		return NULL;
	ids = tc__malloc(d->arts.count * (TC_ID_LEN + 1));
	if (!ids)
		return NULL;
	for (e = tc__map_next(&d->arts, NULL, &b); e;
	     e = tc__map_next(&d->arts, e, &b)) {
		const struct tc__dart *a = e->val;

		if (a->policy == TC_POLICY_HA)
			memcpy(ids + (k++) * (TC_ID_LEN + 1), a->rec.id,
			       TC_ID_LEN + 1);
	}
	*n = k;
	return ids;
}

enum tc__ha_state tc__durable_ha_state(struct tc__durable *d, const char *id)
{
	struct tc__dart *a = d ? tc__map_get(&d->arts, id) : NULL;

	return a ? a->ha : TC_HA_NONE;
}

void tc__durable_set_clustered(struct tc__durable *d, bool on)
{
	if (d)
		d->clustered = on;
}

json_t *tc__durable_obj_json(struct tc__durable *d, const char *id)
{
	struct tc__dart *a = d ? tc__map_get(&d->arts, id) : NULL;
	const char *why;
	json_t *deg, *j;
	char path[PATH_MAX + 96], buf[768];

	if (!a)
		return NULL;
	deg = json_array();
	why = tc__durable_degraded(d, id, a->policy, buf, sizeof(buf));
	if (why)
		json_array_append_new(deg, json_string(why));
	snprintf(path, sizeof(path), "%s/%s", d->root,
		 id + strlen(TC_ID_PREFIX));
	j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "state", "durable",
		      "policy", tc__policy_name(a->policy), "path", path,
		      "created_ms", (json_int_t)a->rec.created_ms, "expires_ms",
		      (json_int_t)a->rec.expires_ms, "degraded", deg);
	/* The replica on another node, as this daemon knows it now. */
	if (j && a->policy == TC_POLICY_HA)
		json_object_set_new(j, "ha",
				    json_pack("{s:s, s:s, s:s, s:I}", "state",
					      ha_names[a->ha], "node",
					      a->ha_node, "error", a->ha_why,
					      "changed_ms",
					      (json_int_t)a->ha_unix_ms));
	return j;
}

json_t *tc__durable_entry_json(struct tc__durable *d, struct tc__objs *objs,
			       const struct tc__dart *a)
{
	json_t *keys = json_array(), *one;
	struct tc__map_entry *ke;
	char path[PATH_MAX + 96];
	size_t kb;

	for (ke = tc__map_next(&objs->keys, NULL, &kb); ke;
	     ke = tc__map_next(&objs->keys, ke, &kb)) {
		struct tc__key *k = ke->val;

		if (!strcmp(k->id, a->rec.id))
			json_array_append_new(keys, json_string(k->name));
	}
	snprintf(path, sizeof(path), "%s/%s", d->root,
		 a->rec.id + strlen(TC_ID_PREFIX));
	/* The id is the digest's hex behind its prefix. */
	one = json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:s, s:s, "
			"s:I, s:o}",
			"id", a->rec.id, "digest",
			a->rec.id + strlen(TC_ID_PREFIX), "digest_algorithm",
			"blake3", "keys", keys, "tensors",
			(json_int_t)a->rec.ntensors, "bytes",
			(json_int_t)a->rec.bytes, "mem_bytes", (json_int_t)0,
			"leases", (json_int_t)0, "policy",
			tc__policy_name(a->policy), "source", a->rec.source,
			"created_ms", (json_int_t)a->rec.created_ms, "replicas",
			json_pack("[{s:s, s:s, s:I}]", "tier",
				  d->spill ? "spill" : "disk", "path", path,
				  "bytes", (json_int_t)a->rec.bytes));
	if (!one)
		return NULL;
	if (d->spill)
		json_object_set_new(one, "spill",
				    tc__spill_obj_json(d, a->rec.id));
	else
		json_object_set_new(one, "durable",
				    tc__durable_obj_json(d, a->rec.id));
	return one;
}

json_t *tc__durable_list_json(struct tc__durable *d, struct tc__objs *objs,
			      struct tc__durable *skip)
{
	json_t *arr = json_array();
	struct tc__map_entry *e;
	size_t b;

	if (!d)
		return arr;
	for (e = tc__map_next(&d->arts, NULL, &b); e;
	     e = tc__map_next(&d->arts, e, &b)) {
		struct tc__dart *a = e->val;
		struct tc__obj *o = tc__map_get(&objs->by_id, a->rec.id);
		json_t *one;

		if ((o && !o->dead) || tc__durable_has(skip, a->rec.id))
			continue;
		one = tc__durable_entry_json(d, objs, a);
		if (one)
			json_array_append_new(arr, one);
	}
	return arr;
}

json_t *tc__spill_obj_json(struct tc__durable *d, const char *id)
{
	struct tc__dart *a = d ? tc__map_get(&d->arts, id) : NULL;
	char path[PATH_MAX + 96];

	if (!a)
		return NULL;
	snprintf(path, sizeof(path), "%s/%s", d->root,
		 id + strlen(TC_ID_PREFIX));
	return json_pack("{s:s, s:s}", "state",
			 a->writing ? "writing" : "spilled", "path", path);
}
