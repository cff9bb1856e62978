/*
 * spill.c - the spill tier (see spill.h).
 *
 * The tier is a struct tc__durable with no metadata (durable_internal.h):
 * its darts are the spilled artifacts, found and loaded back by the same
 * code as durable ones.  What is the spill's own: the folder emptied at
 * start, the write of an evicted artifact from a mapping of its memfd
 * that outlives the artifact, the budget and its LRU, and the requests
 * that wait for a write still running.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "durable.h"
#include "durable_internal.h"
#include "format/format.h"
#include "metrics.h"
#include "net/ev.h"
#include "spill.h"
#include "tcast/errors.h"

struct tc__spill {
	struct tc__durable *d; /* owned: folder, artifacts, loads */
	struct tc__jobs *pool; /* borrowed: writes run here */
	uint64_t budget;       /* spill_bytes; 0 while auto and unknown */
	/* The folder as a tier of the replica core (replica.h): budget
	 * spill_bytes, used = the copies on disk or being written (each a
	 * dart's replica), their LRU; all_or_nothing, since a victim's
	 * files leave its name at once. */
	struct tc__tier tier;
	bool budget_auto; /* half the free space, measured once */
	/* Bytes being written: the memory of artifacts evicted but not on
	 * disk yet, held beyond the host budget until their write ends, so
	 * it is bounded (at most inflight_max, or one artifact alone). */
	uint64_t inflight;
	uint64_t inflight_max;
	uint32_t writing;		 /* writes running */
	uint64_t spilled, spilled_bytes; /* writes that ended on disk */
	uint64_t dropped, dropped_bytes; /* evicted and not spilled */
	uint64_t removed;		 /* spilled copies its LRU removed */
	uint64_t kept;	     /* evicted again with its copy already there */
	char last_drop[320]; /* why the last one was dropped */
};

static const struct tc__tier_ops spill_tier_ops; /* below */

struct waiter {
	tc__spill_wait_fn *fn;
	void *arg;
};

/* One evicted artifact on its way to the folder.  The artifact itself is
 * gone from the table when this runs: `map` is the job's own read-only
 * mapping of its memfd (the pages live while mapped) and `table` and
 * `chunks` are copies. */
struct spill_write {
	struct tc__job job;
	struct tc__spill *sp;
	char id[TC_ID_LEN + 1];
	void *map; /* owned; unmapped by the worker once written */
	uint64_t map_len;
	struct tc__table table;	   /* owned copy */
	struct tc__digest *chunks; /* owned copy */
	uint64_t nchunks;
	uint64_t bytes; /* charged to inflight and the tier's bytes */
	int rootfd;	/* the tier's, borrowed */
	char root[PATH_MAX + 16];
	/* Folders the LRU took out of the names (renamed), removed by the
	 * worker before it writes: unlinking large files is not the loop's
	 * work. */
	char (*trash)[TC_DIGEST_HEX + 48];
	uint32_t ntrash;
	struct waiter *w; /* requests waiting for this write */
	uint32_t nw;
	uint64_t t0_ns;
	int rc;
	char err[512];
};

/* ---------------------------------------------------------------- folder */

/* Remove folder `name` of `parent` and the native files in it. */
static int remove_folder(int parent, const char *name)
{
	int sub = openat(parent, name,
			 O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	if (sub < 0)
		return unlinkat(parent, name, 0) < 0 ? -errno : 0;
	unlinkat(sub, TC_NATIVE_DATA, 0);
	unlinkat(sub, TC_NATIVE_MANIFEST, 0);
	close(sub);
	return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* Everything in the tier's folder goes at start: what a previous daemon
 * spilled is cache, which a restart does not keep. */
static void empty_folder(struct tc__durable *d)
{
	/* A new open file, not a dup: a dup shares the offset that
	 * opening the folder's readdir (its temporaries) left at the end. */
	int fd = openat(d->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	uint32_t n = 0, left = 0;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(dir))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (remove_folder(d->rootfd, e->d_name) == 0)
			n++;
		else
			left++;
	}
	closedir(dir);
	if (n || left)
		tc__log(left ? TC_LOG_WARN : TC_LOG_INFO,
			"spill folder '%s' emptied at start: %u entr%s removed"
			"%s",
			d->root, n, n == 1 ? "y" : "ies",
			left ? "; some could not be (not ours?)" : "");
}

static void measure_budget(struct tc__spill *sp)
{
	struct statvfs v;

	if (!sp->budget_auto || sp->budget || sp->d->rootfd < 0 ||
	    fstatvfs(sp->d->rootfd, &v) < 0)
		return;
	sp->budget = (uint64_t)v.f_bavail * v.f_frsize / 2;
	tc__log(TC_LOG_INFO,
		"spill_bytes auto: %llu bytes (half the free space of '%s')",
		(unsigned long long)sp->budget, sp->d->root);
}

int tc__spill_open(const struct tc__store_config *cfg, struct tc__jobs *pool,
		   struct tc__spill **out, char *err, size_t errlen)
{
	struct tc__spill *sp;
	char root[PATH_MAX + 16];

	*out = NULL;
	if (!cfg->spill_dir[0])
		return 0;
	sp = tc__calloc(1, sizeof(*sp));
	snprintf(root, sizeof(root), "%s/%s", cfg->spill_dir, TC_SPILL_SUBDIR);
	if (sp)
		sp->d = tc__durable_new_bare(cfg->spill_dir, root);
	if (!sp || !sp->d) {
		tc__free(sp);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	sp->d->spill = true;
	sp->pool = pool;
	sp->budget_auto = cfg->spill_bytes == TC_SPILL_AUTO;
	sp->budget = sp->budget_auto ? 0 : cfg->spill_bytes;
	tc__tier_init(&sp->tier, "spill", sp->budget, &spill_tier_ops, sp);
	sp->tier.all_or_nothing = true;
	/* Bounded so that a burst of evictions cannot hold more than twice
	 * the host budget while its writes run. */
	sp->inflight_max = cfg->host_bytes;
	/* The node's own folder (not a mount we must not invent): made when
	 * missing. */
	if (mkdir(cfg->spill_dir, 0700) < 0 && errno != EEXIST)
		tc__log(TC_LOG_WARN, "cannot create spill_dir '%s': %s",
			cfg->spill_dir, strerror(errno));
	if (tc__durable_open_root(sp->d) < 0) {
		tc__log(TC_LOG_WARN,
			"%s: evicted cache artifacts are dropped, not spilled, "
			"until it is usable",
			sp->d->disk_err);
	} else {
		empty_folder(sp->d);
		measure_budget(sp);
	}
	tc__log(TC_LOG_INFO, "spill tier: %s, %s%llu bytes", sp->d->root,
		sp->budget_auto ? "spill_bytes auto, " : "spill_bytes ",
		(unsigned long long)sp->budget);
	*out = sp;
	return 0;
}

void tc__spill_close(struct tc__spill *sp)
{
	if (!sp)
		return;
	tc__durable_close(sp->d);
	tc__free(sp);
}

struct tc__durable *tc__spill_tier(struct tc__spill *sp)
{
	return sp ? sp->d : NULL;
}

/* ---------------------------------------------------------------- write */

static void write_free(struct spill_write *j)
{
	if (j->map)
		munmap(j->map, j->map_len);
	tc__table_release(&j->table);
	tc__free(j->chunks);
	tc__free(j->trash);
	tc__free(j->w);
	tc__free(j);
}

static void write_run(struct tc__job *job)
{
	struct spill_write *j = (struct spill_write *)job;

	for (uint32_t i = 0; i < j->ntrash; i++)
		remove_folder(j->rootfd, j->trash[i]);
	j->rc = tc__durable_write_bytes(j->rootfd, j->root, j->id, j->map,
					&j->table, j->chunks, j->nchunks,
					j->err, sizeof(j->err));
	/* The memory goes back as soon as it is on disk (or not). */
	munmap(j->map, j->map_len);
	j->map = NULL;
}

static void write_done(struct tc__job *job)
{
	static struct tc__ratelimit rl;
	struct spill_write *j = (struct spill_write *)job;
	struct tc__spill *sp = j->sp;
	struct tc__durable *d = sp->d;
	struct tc__dart *a = tc__map_get(&d->arts, j->id);
	bool own = a && a->writing == j;
	char msg[640], ferr[256];
	int rc = 0;

	sp->inflight -= j->bytes;
	sp->writing--;
	if (own)
		a->writing = NULL;
	msg[0] = '\0';
	if (j->rc == 0 && own) {
		sp->spilled++;
		sp->spilled_bytes += j->bytes;
		d->written++;
		tc__replica_ready(&a->rep); /* on disk: on the tier's LRU */
		tc__log(TC_LOG_INFO,
			"spilled %s (%llu bytes) to '%s' in %.3f s; it loads "
			"from there when next needed",
			j->id, (unsigned long long)j->bytes, d->root,
			(double)(tc__now_ns() - j->t0_ns) / 1e9);
	} else if (j->rc == 0) {
		/* Removed (rm, TTL) while it was written: the copy goes
		 * too, unless the same content was spilled again since. */
		if (!a)
			tc__native_remove(d->rootfd, j->id);
		rc = TC_ENOTFOUND;
		snprintf(msg, sizeof(msg), "'%s' was removed", j->id);
	} else {
		/* Nothing of it is on disk (the writer cleans up). */
		if (own)
			tc__durable_forget(d, j->id, true, ferr, sizeof(ferr));
		d->write_failures++;
		sp->dropped++;
		sp->dropped_bytes += j->bytes;
		snprintf(sp->last_drop, sizeof(sp->last_drop), "%s: %s", j->id,
			 j->err);
		tc__log_rl(&rl, TC_LOG_WARN,
			   "cannot spill %s to '%s': %s; dropped, as with no "
			   "spill folder",
			   j->id, d->root, j->err);
		rc = TC_ENOTFOUND;
		snprintf(msg, sizeof(msg),
			 "'%s' was evicted from host memory and could not be "
			 "spilled: %s",
			 j->id, j->err);
	}
	for (uint32_t i = 0; i < j->nw; i++)
		j->w[i].fn(j->w[i].arg, rc, msg);
	write_free(j);
}

/* A write that will not run: the copies its make_room renamed away
 * still go (rare: out of memory). */
static void discard(struct spill_write *j)
{
	for (uint32_t i = 0; i < j->ntrash; i++)
		remove_folder(j->rootfd, j->trash[i]);
	write_free(j);
}

/* Say why `o` is dropped rather than spilled (a "may" failure: a log
 * line and a counter, nothing to the caller). */
static void drop(struct tc__spill *sp, const struct tc__obj *o, const char *fmt,
		 ...) __attribute__((format(printf, 3, 4)));
static void drop(struct tc__spill *sp, const struct tc__obj *o, const char *fmt,
		 ...)
{
	static struct tc__ratelimit rl;
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	sp->dropped++;
	sp->dropped_bytes += o->table.total_bytes;
	snprintf(sp->last_drop, sizeof(sp->last_drop), "%s: %s", o->id, why);
	tc__log_rl(&rl, TC_LOG_WARN,
		   "not spilling %s (%llu bytes): %s; dropped", o->id,
		   (unsigned long long)o->table.total_bytes, why);
}

/* The tier's ops: a copy being written or loaded stays. */
static bool spill_evictable(struct tc__tier *t, struct tc__replica *r)
{
	struct tc__dart *a = tc__replica_owner(r, struct tc__dart, rep);

	(void)t;
	return !a->writing && !a->restore;
}

/* The least recently used copy goes for room: out of its name now (a
 * rename, so a later spill of the same content writes a new folder; no
 * fsync: nothing here must survive a crash), its files with the write
 * `ctx` (struct spill_write), or here when out of memory. */
static bool spill_evict(struct tc__tier *t, struct tc__replica *r, void *ctx)
{
	struct tc__spill *sp = t->arg;
	struct tc__durable *d = sp->d;
	struct tc__dart *a = tc__replica_owner(r, struct tc__dart, rep);
	struct spill_write *j = ctx;
	char err[256], id[TC_ID_LEN + 1];
	void *tr = tc__realloc(j->trash, (j->ntrash + 1) * sizeof(*j->trash));
	uint64_t rnd = 0;

	snprintf(id, sizeof(id), "%s", a->rec.id);
	tc__log(TC_LOG_INFO,
		"spill folder full: removing the spilled copy of %s "
		"(%llu bytes, least recently used)",
		id, (unsigned long long)a->rec.bytes);
	sp->removed++;
	if (!tr) {
		/* Its files go now, on the loop (rare). */
		tc__durable_forget(d, id, false, err, sizeof(err));
		return true;
	}
	j->trash = tr;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = tc__now_ns();
	snprintf(j->trash[j->ntrash], sizeof(j->trash[0]), "%s%s-rm-%016llx",
		 TC_NATIVE_TMP_PREFIX, id + strlen(TC_ID_PREFIX),
		 (unsigned long long)rnd);
	if (renameat(d->rootfd, id + strlen(TC_ID_PREFIX), d->rootfd,
		     j->trash[j->ntrash]) == 0)
		j->ntrash++;
	/* Off the tier with its record (durable.c gones the replica). */
	tc__durable_forget(d, id, true, err, sizeof(err));
	return true;
}

static const struct tc__tier_ops spill_tier_ops = {
	.evictable = spill_evictable,
	.evict = spill_evict,
};

void tc__spill_evicting(void *arg, struct tc__obj *o)
{
	struct tc__spill *sp = arg;
	struct tc__durable *d = sp ? sp->d : NULL;
	uint64_t bytes = o->table.total_bytes;
	struct spill_write *j;
	struct tc__dart *a;
	char msg[256];
	void *map;

	/* warm and pinned never spill, and the disk policies have their
	 * shared-disk copy: only cache's "may" is honoured here. */
	if (!sp || o->policy != TC_POLICY_CACHE || !o->shm || !o->shm->map ||
	    o->shm->ro_fd < 0)
		return;
	a = tc__map_get(&d->arts, o->id);
	if (a) {
		/* Loaded from its spill and evicted again: the copy is
		 * there (or being written). */
		tc__replica_touch(&a->rep);
		sp->kept++;
		return;
	}
	if (o->nchunks != tc__chunk_count(bytes)) {
		drop(sp, o, "its chunk digests are not known");
		return;
	}
	if (tc__durable_open_root(d) < 0) {
		drop(sp, o, "%s", d->disk_err);
		return;
	}
	measure_budget(sp);
	sp->tier.budget = sp->budget;
	if (bytes > sp->budget) {
		drop(sp, o, "larger than spill_bytes (%llu)",
		     (unsigned long long)sp->budget);
		return;
	}
	if (sp->inflight && sp->inflight + bytes > sp->inflight_max) {
		drop(sp, o,
		     "%llu bytes are being spilled already (at most the host "
		     "budget at once)",
		     (unsigned long long)sp->inflight);
		return;
	}
	j = tc__calloc(1, sizeof(*j));
	a = tc__calloc(1, sizeof(*a));
	if (!j || !a) {
		tc__free(j);
		tc__free(a);
		drop(sp, o, "out of memory");
		return;
	}
	tc__table_init(&j->table);
	j->sp = sp;
	j->rootfd = d->rootfd;
	/* Its copy: a FILLING replica of the folder's tier, charged now,
	 * evicting least recently used copies for room only when that
	 * makes enough (all_or_nothing). */
	if (tc__replica_fill(&a->rep, &sp->tier, bytes, true, j, msg,
			     sizeof(msg)) < 0) {
		tc__free(a);
		drop(sp, o,
		     "the spill folder is full (spill_bytes %llu, %llu used, "
		     "of which %u copies being written or loaded)",
		     (unsigned long long)sp->budget,
		     (unsigned long long)sp->tier.used, sp->writing);
		discard(j);
		return;
	}
	/* Our own mapping: it keeps the pages after the artifact and its
	 * segment are freed, until the worker has written them. */
	map = mmap(NULL, o->shm->size, PROT_READ, MAP_SHARED, o->shm->ro_fd, 0);
	j->chunks =
		tc__malloc((o->nchunks ? o->nchunks : 1) * sizeof(*j->chunks));
	if (map == MAP_FAILED || !j->chunks ||
	    tc__table_copy(&j->table, &o->table) < 0) {
		if (map != MAP_FAILED)
			munmap(map, o->shm->size);
		tc__replica_gone(&a->rep, false);
		tc__free(a);
		drop(sp, o, "cannot map it for the write: %s",
		     map == MAP_FAILED ? strerror(errno) : "out of memory");
		discard(j);
		return;
	}
	memcpy(j->chunks, o->chunks, o->nchunks * sizeof(*j->chunks));
	j->nchunks = o->nchunks;
	j->map = map;
	j->map_len = o->shm->size;
	j->bytes = bytes;
	snprintf(j->root, sizeof(j->root), "%s", d->root);
	snprintf(j->id, sizeof(j->id), "%s", o->id);
	j->t0_ns = tc__now_ns();
	j->job.run = write_run;
	j->job.done = write_done;

	snprintf(a->rec.id, sizeof(a->rec.id), "%s", o->id);
	snprintf(a->rec.policy, sizeof(a->rec.policy), "%s",
		 tc__policy_name(TC_POLICY_CACHE));
	a->rec.bytes = bytes;
	a->rec.ntensors = o->table.ntensors;
	a->rec.created_ms = o->created_ms;
	a->rec.expires_ms = o->expires_ms;
	snprintf(a->rec.source, sizeof(a->rec.source), "%s", o->source);
	a->policy = TC_POLICY_CACHE;
	a->writing = j;
	/* The map borrows the key: the dart's own copy of the id. */
	if (tc__map_put(&d->arts, a->rec.id, a) < 0) {
		tc__replica_gone(&a->rep, false);
		tc__free(a);
		drop(sp, o, "out of memory");
		discard(j);
		return;
	}
	sp->inflight += bytes;
	sp->writing++;
	tc__jobs_submit(sp->pool, &j->job);
}

int tc__spill_wait(struct tc__spill *sp, struct tc__dart *a,
		   tc__spill_wait_fn *fn, void *arg)
{
	struct spill_write *j = a->writing;
	struct waiter *w = tc__realloc(j->w, (j->nw + 1) * sizeof(*w));

	if (!w)
		return -ENOMEM;
	j->w = w;
	j->w[j->nw].fn = fn;
	j->w[j->nw].arg = arg;
	j->nw++;
	return 0;
}

/* ---------------------------------------------------------------- status */

json_t *tc__spill_status_json(struct tc__spill *sp)
{
	struct tc__durable *d;

	if (!sp)
		return json_null();
	d = sp->d;
	return json_pack(
		"{s:s, s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		"s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
		"dir", d->root, "state", d->rootfd >= 0 ? "ok" : "unavailable",
		"error", d->disk_err, "budget_bytes", (json_int_t)sp->budget,
		"budget_auto", sp->budget_auto, "bytes",
		(json_int_t)sp->tier.used, "artifacts",
		(json_int_t)d->arts.count, "writing", (json_int_t)sp->writing,
		"writing_bytes", (json_int_t)sp->inflight, "spilled",
		(json_int_t)sp->spilled, "spilled_bytes",
		(json_int_t)sp->spilled_bytes, "dropped",
		(json_int_t)sp->dropped, "dropped_bytes",
		(json_int_t)sp->dropped_bytes, "write_failures",
		(json_int_t)d->write_failures, "removed",
		(json_int_t)sp->removed, "kept", (json_int_t)sp->kept,
		"reloads", (json_int_t)d->restores, "reload_failures",
		(json_int_t)d->restore_failures, "reloaded_host_bytes",
		(json_int_t)d->restored_host_bytes, "reloaded_gpu_bytes",
		(json_int_t)d->restored_gpu_bytes, "last_drop", sp->last_drop);
}

void tc__spill_counts(struct tc__spill *sp, struct tc__metrics_spill *out)
{
	memset(out, 0, sizeof(*out));
	if (!sp)
		return;
	out->artifacts = sp->d->arts.count;
	out->bytes = sp->tier.used;
	out->budget = sp->budget;
	out->spilled = sp->spilled;
	out->spilled_bytes = sp->spilled_bytes;
	out->dropped = sp->dropped;
	out->removed = sp->removed;
	out->reloads = sp->d->restores;
	out->reload_failures = sp->d->restore_failures;
}
