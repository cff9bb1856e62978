/*
 * srv_durable.c - the server's side of the shared-disk tier (durable.h):
 * policies checked at the request, the disk write of a put or import
 * (before the reply, or after it with TC_RF_NOWAIT), requests for an
 * artifact whose bytes are only on disk (loaded, then the request runs
 * again), rm with or without the disk copy, TTLs.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/alloc.h"
#include "common/io.h"
#include "common/log.h"
#include "durable.h"
#include "spill.h"
#include "format/format.h"
#include "gpu_tier.h"
#include "xfer/gpu_loader.h"
#include "xfer/loader.h"
#include "server_internal.h"
#include "tcast/errors.h"

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tc__srv_durable_init(struct server *s, char *err, size_t errlen)
{
	return tc__durable_open(s->cfg, &s->objs, &s->durable, err, errlen);
}

/* ---------------------------------------------------------------- puts */

int tc__srv_persist_prepare(struct conn *c, struct persist_req *p,
			    enum tc__policy pol, uint32_t flags,
			    uint64_t ttl_ms)
{
	struct tc__durable *d = c->srv->durable;
	int rc;

	memset(p, 0, sizeof(*p));
	p->policy = pol;
	p->ttl_ms = ttl_ms;
	p->dirfd = -1;
	if (!tc__policy_on_disk(pol))
		return 0;
	rc = tc__durable_check(d, pol, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	p->on = true;
	p->wait = !(flags & TC_RF_NOWAIT);
	if (flags & TC_RF_GPU) {
		/* Straight to a GPU there is no host copy to write from
		 * after the reply: the loader writes the disk copy from
		 * the bytes it reads, so the write ends with the load and
		 * the import is durable when it replies, NOWAIT or not. */
		p->tee = true;
		p->wait = true;
	}
	p->dirfd = tc__durable_dirfd(d);
	snprintf(p->root, sizeof(p->root), "%s", tc__durable_root(d));
	return 0;
}

void tc__srv_persist_begin(struct server *s, struct persist_req *p,
			   uint64_t bytes)
{
	if (!p->on || !p->wait || p->fill || !s->durable)
		return;
	/* Out of memory: the write goes on, counted once recorded. */
	tc__durable_fill_begin(s->durable, bytes, &p->fill);
}

void tc__srv_persist_end(struct server *s, struct persist_req *p)
{
	tc__durable_fill_drop(s->durable, &p->fill);
}

void tc__srv_persist_write(struct persist_req *p, const struct tc__obj *o,
			   const struct tc__digest *chunks, uint64_t n)
{
	if (!p->on || !p->wait)
		return;
	p->rc = tc__durable_write(p->dirfd, p->root, o, chunks, n, p->err,
				  sizeof(p->err));
	p->written = true;
}

int tc__srv_persist_hash(struct persist_req *p, struct tc__obj *o, int nthreads,
			 struct tc__digest *chunks, uint64_t n)
{
	int rc;

	if ((!p->on || !p->wait) && tc__faults_dear()) {
		/* Where a fault per page of the fresh mapping costs more
		 * than copying the page out (docs/design.md). */
		rc = tc__hash_chunks_fd(o->shm->fd, o->table.total_bytes,
					nthreads, chunks);
		return rc == 0 ? tc__obj_finish(o, chunks, n) : rc;
	}
	/* The sealed mapping is fresh: its page tables in few calls, not a
	 * fault per few pages while hashing (faults are dear on VMs). */
	tc__populate((void *)o->shm->map, o->shm->size, 0);
	if (!p->on || !p->wait) {
		rc = tc__hash_chunks(o->shm->map, o->table.total_bytes,
				     nthreads, chunks);
		return rc == 0 ? tc__obj_finish(o, chunks, n) : rc;
	}
	rc = tc__durable_hash_write(p->dirfd, p->root, o, nthreads, chunks, n,
				    &p->rc, p->err, sizeof(p->err));
	p->written = true;
	return rc;
}

int tc__srv_persist_hash_gpu(struct persist_req *p, struct tc__obj *o,
			     const struct tc__gpu_mem *mem, int nthreads,
			     struct tc__digest *chunks, uint64_t n, bool have,
			     char *err, size_t errlen)
{
	int rc = 0;

	if (!p->on || !p->wait) {
		if (!have)
			rc = tc__gpu_hash_chunks(mem, o->table.total_bytes,
						 nthreads, chunks, err, errlen);
		return rc == 0 ? tc__obj_finish(o, chunks, n) : rc;
	}
	rc = tc__durable_hash_write_gpu(p->dirfd, p->root, o, mem, nthreads,
					chunks, n, have, &p->rc, p->err,
					sizeof(p->err));
	p->written = true;
	if (rc < 0)
		snprintf(err, errlen, "%s", p->err);
	return rc;
}

/* A write after the reply (TC_RF_NOWAIT): the artifact is leased so it
 * stays in memory until its bytes are on disk. */
struct persist_job {
	struct tc__job job;
	struct server *s;
	struct tc__obj *o;
	struct persist_req p;
	struct tc__digest *chunks;
	uint64_t n;
};

static void persist_run(struct tc__job *job)
{
	struct persist_job *j = (struct persist_job *)job;

	j->p.wait = true;
	tc__srv_persist_write(&j->p, j->o, j->chunks, j->n);
}

static void persist_done(struct tc__job *job)
{
	struct persist_job *j = (struct persist_job *)job;
	struct tc__durable *d = j->s->durable;
	struct tc__map_entry *e;
	size_t b;
	int rc = j->p.rc;

	if (rc == 0 && j->o->dead) {
		/* Removed while it was being written: not durable after
		 * all, and its copy goes. */
		tc__native_remove(j->p.dirfd, j->o->id);
		rc = TC_ENOTFOUND;
		snprintf(j->p.err, sizeof(j->p.err), "removed meanwhile");
	} else if (rc == 0) {
		rc = tc__durable_record(d, j->o, j->p.policy, j->p.ttl_ms,
					&j->p.fill, j->p.err, sizeof(j->p.err));
	} else {
		tc__durable_write_failed(d);
	}
	/* Not recorded: its FILLING replica leaves the tier. */
	tc__durable_fill_drop(d, &j->p.fill);
	if (rc < 0) {
		tc__log(TC_LOG_ERROR, "%s is not durable: %s", j->o->id,
			j->p.err);
		snprintf(j->o->persist_err, sizeof(j->o->persist_err), "%s",
			 j->p.err);
	} else {
		/* Keys published meanwhile are recorded now. */
		for (e = tc__map_next(&j->s->objs.keys, NULL, &b); e;
		     e = tc__map_next(&j->s->objs.keys, e, &b)) {
			struct tc__key *k = e->val;

			if (!strcmp(k->id, j->o->id))
				tc__durable_key_changed(d, &j->s->objs,
							k->name);
		}
		/* Durable now: ha's replica on another node next (nobody
		 * waits; inspect tells). */
		if (j->p.policy == TC_POLICY_HA)
			tc__srv_ha_start(j->s, j->o, false, NULL, NULL);
	}
	j->o->persisting = false;
	tc__objs_unlease(&j->s->objs, j->o);
	tc__free(j->chunks);
	tc__free(j);
}

int tc__srv_persist_commit(struct conn *c, struct persist_req *p,
			   struct tc__obj *o, const struct tc__digest *chunks,
			   uint64_t n)
{
	struct server *s = c->srv;
	struct persist_job *j;
	int rc;

	if (p->ttl_ms)
		o->expires_ms = unix_ms() + p->ttl_ms;
	if (!p->on || tc__durable_has(s->durable, o->id)) {
		if (p->on) /* already durable: a deduplicated put (its
			      write's FILLING replica goes) */
			return tc__durable_record(s->durable, o, p->policy,
						  p->ttl_ms, &p->fill, c->err,
						  sizeof(c->err));
		return 0;
	}
	if (p->wait) {
		if (p->rc < 0 || !p->written) {
			snprintf(c->err, sizeof(c->err), "%s",
				 p->written ? p->err :
					      "not written to the shared disk");
			/* Nothing of it is on disk (the writer cleans up):
			 * its FILLING replica goes. */
			if (p->written)
				tc__durable_write_failed(s->durable);
			tc__srv_persist_end(s, p);
			return p->rc < 0 ? p->rc : TC_EPOLICY;
		}
		/* Durable: the FILLING replica becomes the record's, READY */
		rc = tc__durable_record(s->durable, o, p->policy, p->ttl_ms,
					&p->fill, c->err, sizeof(c->err));
		return rc;
	}
	if (o->persisting)
		return 0;
	j = tc__calloc(1, sizeof(*j));
	if (!j || !(j->chunks = tc__calloc(n ? n : 1, sizeof(*chunks)))) {
		tc__free(j);
		snprintf(c->err, sizeof(c->err), "out of memory");
		return -ENOMEM;
	}
	memcpy(j->chunks, chunks, n * sizeof(*chunks));
	j->n = n;
	j->s = s;
	j->o = o;
	j->p = *p;
	/* The write after the reply: its FILLING replica from now until
	 * persist_done records or drops it. */
	j->p.wait = true;
	tc__srv_persist_begin(s, &j->p, o->table.total_bytes);
	o->persisting = true;
	o->persist_err[0] = '\0';
	tc__objs_lease(&s->objs, o);
	j->job.run = persist_run;
	j->job.done = persist_done;
	tc__jobs_submit(s->jobs, &j->job);
	return 0;
}

void tc__srv_put_durability(struct conn *c, const struct persist_req *p,
			    const struct tc__obj *o)
{
	struct tc__durable *d = c->srv->durable;
	const char *why;
	uint32_t state = TC_PERSIST_MEMORY;
	char buf[768];

	if (tc__durable_has(d, o->id))
		state = TC_PERSIST_DURABLE;
	else if (o->persisting)
		state = TC_PERSIST_PENDING;
	why = p ? tc__durable_degraded(d, o->id, p->policy, buf, sizeof(buf)) :
		  NULL;
	/* Not durable yet (written after the reply): its replica on
	 * another node comes after that. */
	if (why && p->policy == TC_POLICY_HA && state == TC_PERSIST_PENDING &&
	    c->srv->cluster)
		why = "ha: replica on another node pending (made once the "
		      "artifact is durable)";
	tc__buf_put_u32(&c->out, state);
	tc__buf_put_str(&c->out, why ? why : "");
}

/* ------------------------------------------------ requests that wait */

/* A request for an artifact whose bytes are on the shared disk only (or
 * not where it needs them): it runs again, whole, once they are loaded. */
struct retry {
	struct conn *c;
	struct req r;
	uint8_t *body;	 /* owned copy */
	uint32_t origin; /* TC_ORIGIN_* of the load that ran */
	bool spill;	 /* loaded from the spill folder */
};

/* Run the request again, whole: its handler finds the artifact now. */
static int rerun(struct conn *c, const struct req *r, void *arg)
{
	struct retry *w = arg;
	struct req again = *r;

	tc__cur_init(&again.body, w->body, r->h.body_len);
	again.nfds = 0;
	again.origin = w->origin;
	tc__srv_dispatch(c, &again);
	return 0;
}

static void retry_done(void *arg, struct tc__obj *o, int rc, const char *err,
		       bool to_gpu)
{
	struct retry *w = arg;

	if (rc == 0 && o->shm)
		tc__gpu_tier_host_added(w->c->srv->gpu, o);
	if (w->spill)
		w->origin = to_gpu ? TC_ORIGIN_SPILL_GPU : TC_ORIGIN_SPILL_HOST;
	else
		w->origin = to_gpu ? TC_ORIGIN_SHARED_GPU :
				     TC_ORIGIN_SHARED_HOST;
	tc__srv_finish(w->c, &w->r, rc, err, rerun, w);
	tc__free(w->body);
	tc__free(w);
}

/* A request for it runs again once its spill write has ended: then it
 * loads from the spill folder, or fails with why it is gone. */
static void spill_waited(void *arg, int rc, const char *err)
{
	struct retry *w = arg;

	tc__srv_finish(w->c, &w->r, rc, err, rerun, w);
	tc__free(w->body);
	tc__free(w);
}

bool tc__srv_durable_lacks(struct server *s, const struct tc__obj *o,
			   const uint8_t *gpu_uuid)
{
	if (o->shm || (!tc__durable_has(s->durable, o->id) &&
		       !tc__durable_has(tc__spill_tier(s->spill), o->id)))
		return false;
	return !gpu_uuid ||
	       !tc__gpu_tier_find(s->gpu, (struct tc__obj *)o, gpu_uuid);
}

int tc__srv_durable_miss(struct conn *c, struct req *r, const char *ref, int rc,
			 const uint8_t *gpu_uuid)
{
	struct server *s = c->srv;
	struct tc__restore_to to = { 0 };
	struct tc__durable *d = s->durable;
	struct tc__dart *a = NULL;
	struct retry *w;
	size_t used = r->h.body_len - r->body.left;
	int rc2;

	if (rc != TC_ENOTFOUND)
		return rc;
	/* The shared disk first: a copy there is the one that must be
	 * kept; a spilled copy of the same content is only a cache. */
	if (!(a = tc__durable_find(d, &s->objs, ref))) {
		d = tc__spill_tier(s->spill);
		a = tc__durable_find(d, &s->objs, ref);
	}
	if (!a)
		return rc;
	w = tc__calloc(1, sizeof(*w));
	if (!w || !(w->body = tc__malloc(r->h.body_len ? r->h.body_len : 1))) {
		tc__free(w);
		return -ENOMEM;
	}
	/* The handler read the body already: copy it from its start. */
	memcpy(w->body, r->body.p - used, r->h.body_len);
	w->c = c;
	w->r = *r;
	w->spill = d != s->durable;
	if (gpu_uuid) {
		/* A GPU request: the data file straight into a replica on
		 * that GPU through the loader, not through host memory. */
		to.to_gpu = true;
		to.tier = s->gpu;
		memcpy(to.uuid, gpu_uuid, TC_GPU_UUID_BYTES);
		to.io_engine = s->cfg->io_engine;
		to.gpu_threads = tc__cfg_gpu_load_threads(s->cfg);
	}
	if (a->writing) {
		/* Evicted a moment ago and still being spilled. */
		rc2 = tc__spill_wait(s->spill, a, spill_waited, w);
		if (rc2 < 0)
			snprintf(c->err, sizeof(c->err), "out of memory");
	} else {
		rc2 = tc__durable_restore(d, a, &s->objs, s->io_jobs,
					  s->cfg->io_threads, &to, retry_done,
					  w, c->err, sizeof(c->err));
	}
	if (rc2 < 0) {
		tc__free(w->body);
		tc__free(w);
		return rc2;
	}
	tc__srv_defer(c);
	return 0;
}

/* INSPECT of an artifact whose bytes are on the shared disk or in the
 * spill folder only.  Its manifest holds everything INSPECT answers, so
 * only the manifest is read (on a worker: the folder may be a network
 * mount); restoring the bytes, as an attach would, would read the whole
 * artifact into host memory to print its table. */
struct disk_inspect {
	struct tc__job job;
	struct conn *c;
	struct req r;
	json_t *head; /* the LIST entry, consumed by the worker */
	int dirfd;
	char name[TC_ID_LEN + 1];
	char root[PATH_MAX];
	char *json;
	int rc;
	char err[512];
};

static void disk_inspect_run(struct tc__job *job)
{
	struct disk_inspect *j = (struct disk_inspect *)job;
	struct tc__native n;
	char why[400];

	j->rc = tc__native_read_at(j->dirfd, j->name, &n, why, sizeof(why));
	if (j->rc < 0) {
		snprintf(j->err, sizeof(j->err), "%s/%s: %s", j->root, j->name,
			 why);
		json_decref(j->head);
	} else {
		j->json = tc__table_inspect_finish(j->head, &n.table);
		tc__native_release(&n);
		if (!j->json)
			j->rc = -ENOMEM;
	}
	j->head = NULL;
}

static int disk_inspect_reply(struct conn *c, const struct req *r, void *arg)
{
	struct disk_inspect *j = arg;

	tc__srv_reply_json(c, r, j->json);
	j->json = NULL; /* freed by the reply */
	return 0;
}

static void disk_inspect_done(struct tc__job *job)
{
	struct disk_inspect *j = (struct disk_inspect *)job;

	tc__srv_finish(j->c, &j->r, j->rc, j->err, disk_inspect_reply, j);
	free(j->json); /* not sent: failed, or the connection closed */
	tc__free(j);
}

int tc__srv_durable_inspect_miss(struct conn *c, struct req *r, const char *ref,
				 int rc)
{
	struct server *s = c->srv;
	struct tc__durable *d = s->durable;
	struct tc__dart *a;
	struct disk_inspect *j;

	if (rc != TC_ENOTFOUND)
		return rc;
	if (!(a = tc__durable_find(d, &s->objs, ref))) {
		d = tc__spill_tier(s->spill);
		a = tc__durable_find(d, &s->objs, ref);
	}
	/* Still being spilled: no manifest yet; the request waits for the
	 * write like an attach would, then runs again. */
	if (!a || a->writing)
		return tc__srv_durable_miss(c, r, ref, rc, NULL);
	if (tc__durable_dirfd(d) < 0) {
		snprintf(c->err, sizeof(c->err),
			 "'%s' is on the shared disk, but '%s' cannot be "
			 "opened now",
			 ref, tc__durable_root(d));
		return -EIO;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j || !(j->head = tc__durable_entry_json(d, &s->objs, a))) {
		tc__free(j);
		return -ENOMEM;
	}
	j->c = c;
	j->r = *r;
	j->dirfd = tc__durable_dirfd(d);
	snprintf(j->name, sizeof(j->name), "%s",
		 a->rec.id + strlen(TC_ID_PREFIX));
	snprintf(j->root, sizeof(j->root), "%s", tc__durable_root(d));
	j->job.run = disk_inspect_run;
	j->job.done = disk_inspect_done;
	tc__srv_defer(c);
	tc__jobs_submit(s->jobs, &j->job);
	return 0;
}

/* ------------------------------------------------------------------ rm */

int tc__srv_durable_rm(struct conn *c, const char *ref, uint32_t flags)
{
	struct server *s = c->srv;
	struct tc__durable *d = s->durable, *sp = tc__spill_tier(s->spill);
	struct tc__dart *a = tc__durable_find(d, &s->objs, ref);
	struct tc__dart *sa = tc__durable_find(sp, &s->objs, ref);
	char id[TC_ID_LEN + 1] = "", err[256];
	bool is_key = !tc__is_id(ref) && tc__map_get(&s->objs.keys, ref);
	int rc;

	if (a || sa)
		snprintf(id, sizeof(id), "%s", a ? a->rec.id : sa->rec.id);
	rc = tc__objs_rm(&s->objs, ref, c->err, sizeof(c->err));
	if (rc == TC_ENOTFOUND && id[0] && !is_key) {
		/* On disk only: nothing in memory to remove. */
		struct tc__map_entry *e;
		size_t b;

		for (e = tc__map_next(&s->objs.keys, NULL, &b); e;
		     e = tc__map_next(&s->objs.keys, e, &b)) {
			struct tc__key *k = e->val;

			if (!strcmp(k->id, id))
				k->id[0] = '\0';
		}
		rc = 0;
	}
	if (rc < 0)
		return rc;
	if (is_key)
		tc__durable_key_removed(d, ref);
	if (!id[0])
		return 0;
	if (is_key) {
		/* rm KEY removes the artifact when no other key names it. */
		struct tc__map_entry *e;
		size_t b;

		for (e = tc__map_next(&s->objs.keys, NULL, &b); e;
		     e = tc__map_next(&s->objs.keys, e, &b))
			if (!strcmp(((struct tc__key *)e->val)->id, id))
				return 0;
	}
	/* A spilled copy is cache: it goes whatever the flags say (a write
	 * still running removes what it wrote when it ends). */
	if (tc__durable_has(sp, id) &&
	    tc__durable_forget(sp, id, false, err, sizeof(err)) < 0)
		tc__log(TC_LOG_WARN, "%s: %s", id, err);
	if (!a)
		return 0;
	return tc__durable_forget(d, id, flags & TC_RM_KEEP_DISK, c->err,
				  sizeof(c->err));
}

/* ---------------------------------------------------------------- time */

void tc__srv_durable_tick(struct server *s, uint64_t now_ms)
{
	uint64_t now = unix_ms();
	char(*gone)[TC_ID_LEN + 1] = NULL, err[256];
	struct tc__map_entry *e;
	size_t b, ngone = 0;

	if (now_ms - s->durable_tick_ms < 1000)
		return;
	s->durable_tick_ms = now_ms;
	tc__durable_tick(s->durable, &s->objs);
	tc__durable_tick(tc__spill_tier(s->spill), &s->objs);
	/* TTLs of artifacts that are not durable. */
	for (e = tc__map_next(&s->objs.by_id, NULL, &b); e;
	     e = tc__map_next(&s->objs.by_id, e, &b)) {
		struct tc__obj *o = e->val;
		void *g;

		if (o->dead || !o->expires_ms || now < o->expires_ms ||
		    tc__durable_has(s->durable, o->id))
			continue;
		g = tc__realloc(gone, (ngone + 1) * sizeof(*gone));
		if (!g)
			break;
		gone = g;
		memcpy(gone[ngone++], o->id, TC_ID_LEN + 1);
	}
	for (size_t i = 0; i < ngone; i++) {
		tc__log(TC_LOG_INFO, "%s: its TTL passed; removing it",
			gone[i]);
		tc__objs_rm(&s->objs, gone[i], err, sizeof(err));
	}
	tc__free(gone);
}

/* ---------------------------------------------------------------- JSON */

void tc__srv_durable_inspect(struct server *s, const struct tc__obj *o,
			     void *head)
{
	json_t *j = head, *dj = tc__durable_obj_json(s->durable, o->id);
	json_t *sj = tc__spill_obj_json(tc__spill_tier(s->spill), o->id);

	if (!j) {
		json_decref(dj);
		json_decref(sj);
		return;
	}
	if (sj) {
		json_t *reps = json_object_get(j, "replicas");

		if (json_is_array(reps))
			json_array_append_new(
				reps,
				json_pack("{s:s, s:O, s:I}", "tier", "spill",
					  "path", json_object_get(sj, "path"),
					  "bytes",
					  (json_int_t)o->table.total_bytes));
		json_object_set_new(j, "spill", sj);
	}
	if (dj) {
		json_t *reps = json_object_get(j, "replicas");

		if (json_is_array(reps))
			json_array_append_new(
				reps,
				json_pack("{s:s, s:O, s:I}", "tier", "disk",
					  "path", json_object_get(dj, "path"),
					  "bytes",
					  (json_int_t)o->table.total_bytes));
	} else if (o->persisting || o->persist_err[0]) {
		dj = json_pack("{s:s, s:s}", "state",
			       o->persisting ? "pending" : "failed", "error",
			       o->persist_err);
	}
	if (dj)
		json_object_set_new(j, "durable", dj);
	if (o->expires_ms)
		json_object_set_new(j, "expires_ms",
				    json_integer((json_int_t)o->expires_ms));
}
