/*
 * ops_put.c - puts (CREATE, SEAL, ABORT: a client fills a segment the
 * daemon made, then seals it into an artifact), the host memory a new
 * artifact gets (the spare segment, else a fresh one), and the publish
 * and reply steps that imports share.  Loop thread only; hashing runs on
 * a worker.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/names.h"
#include "format/canon.h"
#include "format/format.h"
#include "gpu_tier.h"
#include "xfer/jobs.h"
#include "xfer/loader.h"
#include "metrics.h"
#include "obj.h"
#include "proto/gsp.h"
#include "proto/proto.h"
#include "shm.h"
#include "tcast/errors.h"

#include "durable.h"
#include "server_internal.h"

/* ------------------------------------------------- publish and reply */

/* Reply of IMPORT and SEAL: id, bytes, tensors, nanoseconds, deduped, gen,
 * persistence, degraded. */
void tc__srv_reply_created(struct conn *c, const struct req *r,
			   struct tc__obj *o, uint64_t ns, bool dedup,
			   uint64_t gen, const struct persist_req *p)
{
	tc__srv_reply_created_ex(c, r, o, ns, dedup, gen, p, NULL, 0);
}

void tc__srv_reply_created_ex(struct conn *c, const struct req *r,
			      struct tc__obj *o, uint64_t ns, bool dedup,
			      uint64_t gen, const struct persist_req *p,
			      const uint64_t *extra, int nextra)
{
	size_t off = tc__srv_reply_begin(c, r);

	tc__buf_put_str(&c->out, o->id);
	tc__buf_put_u64(&c->out, o->table.total_bytes);
	tc__buf_put_u32(&c->out, o->table.ntensors);
	tc__buf_put_u64(&c->out, ns);
	tc__buf_put_u32(&c->out, dedup);
	tc__buf_put_u64(&c->out, gen);
	tc__srv_put_durability(c, p, o);
	for (int i = 0; i < nextra; i++)
		tc__buf_put_u64(&c->out, extra[i]);
	tc__srv_reply_end(c, off);
}

/* -------------------------------------------------------------- spare */

struct spare_job {
	struct tc__job job;
	struct server *s;
	uint64_t size; /* charged to the budget when submitted */
	struct tc__shm *seg;
	int rc;
};

static void spare_run(struct tc__job *job)
{
	struct spare_job *j = (struct spare_job *)job;

	/* Tests: an allocation as slow as on a loaded host. */
	if (tc__failpoint("spare_slow", ""))
		nanosleep(&(struct timespec){ 3, 0 }, NULL);
	j->rc = tc__shm_spare_new(j->size, &j->seg);
}

static void spare_done(struct tc__job *job)
{
	struct spare_job *j = (struct spare_job *)job;
	struct server *s = j->s;

	s->spare_filling = false;
	if (s->spare_given_up) {
		/* A request took the charge back (gone) while we allocated. */
		s->spare_given_up = false;
		tc__shm_free(j->seg);
	} else if (j->rc == 0 && !s->spare && !s->stopping) {
		s->spare = j->seg; /* the replica's charge now covers it */
		tc__replica_ready(&s->spare_rep);
	} else {
		if (j->rc < 0)
			tc__log(TC_LOG_WARN,
				"cannot prepare a %llu-byte spare: %s",
				(unsigned long long)j->size,
				tc_strerror(j->rc));
		tc__shm_free(j->seg);
		tc__replica_gone(&s->spare_rep, false);
	}
	tc__free(j);
}

uint64_t tc__srv_spare_charged(const struct server *s)
{
	return tc__replica_charged(&s->spare_rep) ? s->spare_rep.bytes : 0;
}

/* Start allocating the next spare when the daemon is idle and the budget
 * has free room (a spare never evicts anything). */
void tc__srv_spare_refill(struct server *s)
{
	struct spare_job *j;
	char err[256];
	uint64_t bytes = tc__shm_round(s->spare_target);

	/* Called every tick: a full budget must cost a comparison, not a
	 * failed charge (which walks every artifact for its message). */
	if (!s->spare_target || s->spare || s->spare_filling || s->stopping ||
	    tc__jobs_pending(s->jobs) || bytes > s->objs.host.budget ||
	    s->objs.host.used > s->objs.host.budget - bytes)
		return;
	/* Out of fds lately: the spare's memfd, made on a worker, would
	 * race accept_shed for the reserve's slot. */
	if (s->reserve_fd < 0 || tc__now_ms() < s->fd_short_ms + 5000)
		return;
	/* A private replica: charged like any other, never evicted. */
	if (tc__replica_set_private(&s->spare_rep) < 0 ||
	    tc__replica_fill(&s->spare_rep, &s->objs.host, bytes, false, NULL,
			     err, sizeof(err)) < 0)
		return;
	j = tc__calloc(1, sizeof(*j));
	if (!j) {
		tc__replica_gone(&s->spare_rep, false);
		return;
	}
	j->s = s;
	j->size = bytes;
	j->job.run = spare_run;
	j->job.done = spare_done;
	s->spare_filling = true;
	tc__jobs_submit(s->jobs, &j->job);
}

void tc__srv_spare_drop(struct server *s)
{
	if (!s->spare && s->spare_filling && !s->spare_given_up &&
	    tc__replica_charged(&s->spare_rep)) {
		/* Its pages are being made: the room goes back now (a request
		 * needs it, and the job may take a while on a loaded host),
		 * the segment when the job is done. */
		tc__replica_gone(&s->spare_rep, false);
		s->spare_given_up = true;
		return;
	}
	if (!s->spare)
		return;
	tc__replica_gone(&s->spare_rep, false);
	tc__shm_free(s->spare);
	s->spare = NULL;
}

/*
 * Begin `o`'s host replica as a FILLING one of `bytes` (page-rounded) +
 * `extra` (its table's host memory) and give it memory: the spare when it
 * is big enough (its pages exist already), else a fresh segment, in
 * o->shm.  On failure nothing stays charged.  Returns 0, TC_ENOSPACE or
 * -errno with `err` set.
 */
int tc__srv_artifact_memory(struct server *s, struct tc__obj *o, uint64_t bytes,
			    uint64_t extra, enum tc__policy pol, char *err,
			    size_t errlen)
{
	struct tc__shm *seg = NULL;
	int rc;

	if (s->spare && bytes <= s->spare->size) {
		seg = s->spare;
		s->spare = NULL;
		tc__replica_gone(&s->spare_rep, false); /* its room is o's */
	} else if (tc__replica_charged(&s->spare_rep) &&
		   s->objs.host.used + bytes + extra > s->objs.host.budget) {
		/* A spare too small for this request, or still being made,
		 * gives up its room before any artifact is evicted for it. */
		tc__srv_spare_drop(s);
	}
	/* The segment and the table's host memory (extra) together. */
	rc = tc__objs_fill(&s->objs, o, bytes + extra, pol, err, errlen);
	if (rc < 0) {
		tc__shm_free(seg);
		return rc;
	}
	if (seg) {
		if (tc__shm_spare_take(seg, bytes) == 0) {
			o->shm = seg;
			return 0;
		}
		tc__shm_free(seg); /* fall back to a fresh segment */
	}
	rc = tc__shm_create("tcast-artifact", bytes, &o->shm);
	if (rc < 0) {
		tc__replica_gone(&o->host, false);
		snprintf(err, errlen, "cannot create a %llu-byte segment: %s",
			 (unsigned long long)bytes, tc_strerror(rc));
	}
	return rc;
}

/* ---------------------------------------------------------------- put */

int tc__srv_read_create(struct conn *c, struct req *r, struct tc__table *t,
			char *key, size_t keylen, char *policy,
			size_t policylen, uint32_t *flags, uint64_t *expect_gen,
			uint64_t *ttl_ms)
{
	int rc;

	rc = tc__proto_get_table(&r->body, 0, t, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	/* Names are checked here, at put, not first at export (where a
	 * tensor called __metadata__ used to be refused) or in JSON (where
	 * bad UTF-8 used to vanish). */
	rc = tc__table_check_names(t, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	if ((rc = tc__srv_read_str(c, r, "key", key, keylen)) < 0 ||
	    (rc = tc__srv_read_str(c, r, "policy", policy, policylen)) < 0)
		return rc;
	*ttl_ms = 0;
	if (tc__cur_read_u32(&r->body, flags) < 0 ||
	    tc__cur_read_u64(&r->body, expect_gen) < 0 ||
	    ((*flags & TC_RF_TTL) && tc__cur_read_u64(&r->body, ttl_ms) < 0))
		return TC_EPROTO;
	return 0;
}

static struct pending *pending_take(struct conn *c, uint64_t handle);
static void pending_free(struct conn *c, struct pending *p);

int on_create(struct conn *c, struct req *r)
{
	struct pending *p;
	char policy[32];
	enum tc__policy pol;
	uint64_t bytes, extra, ttl_ms = 0;
	size_t off;
	int rc, fd;

	if (c->npending >= MAX_PENDING_PUTS) {
		snprintf(c->err, sizeof(c->err),
			 "%d puts already unsealed on this connection",
			 MAX_PENDING_PUTS);
		return TC_ELIMIT;
	}
	p = tc__calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->o = tc__obj_new();
	if (!p->o) {
		tc__free(p);
		return -ENOMEM;
	}
	rc = tc__srv_read_create(c, r, &p->o->table, p->key, sizeof(p->key),
				 policy, sizeof(policy), &p->flags,
				 &p->expect_gen, &ttl_ms);
	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		goto out_free;
	rc = tc__policy_parse(policy, &pol, c->err, sizeof(c->err));
	if (rc == 0)
		rc = tc__srv_persist_prepare(c, &p->persist, pol, p->flags,
					     ttl_ms);
	if (rc < 0)
		goto out_free;
	rc = tc__srv_key_precheck(c, p->key, p->flags, p->expect_gen);
	if (rc < 0)
		goto out_free;
	rc = tc__table_layout(&p->o->table);
	if (rc < 0) {
		snprintf(c->err, sizeof(c->err), "artifact too large");
		goto out_free;
	}
	if (p->o->table.ntensors > c->srv->cfg->max_tensors) {
		snprintf(c->err, sizeof(c->err),
			 "%u tensors; this daemon takes at most %u per "
			 "artifact (max_tensors)",
			 p->o->table.ntensors, c->srv->cfg->max_tensors);
		rc = TC_ELIMIT;
		goto out_free;
	}
	bytes = tc__shm_round(p->o->table.total_bytes);
	extra = tc__table_cost(&p->o->table);
	rc = tc__srv_artifact_memory(c->srv, p->o, bytes, extra, pol, c->err,
				     sizeof(c->err));
	if (rc < 0)
		goto out_free;
	p->o->policy = pol;
	snprintf(p->o->source, sizeof(p->o->source), "put:pid %d%s%s",
		 (int)c->pid, c->name[0] ? " " : "", c->name);
	p->handle = ++c->next_handle;
	p->t0_ns = tc__now_ns();
	p->next = c->pending;
	c->pending = p;
	c->npending++;

	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, p->handle);
	tc__buf_put_u64(&c->out, p->o->shm->size);
	tc__proto_put_table(&c->out, &p->o->table);
	fd = p->o->shm->fd;
	if (tc__srv_reply_fds(c, off, &fd, 1, false) < 0) {
		/* No half-built frame, and no put the client cannot name. */
		c->out.len = off;
		pending_free(c, pending_take(c, p->handle));
		snprintf(c->err, sizeof(c->err),
			 "cannot pass the segment's fd: out of descriptors");
		return TC_EBUSY;
	}
	tc__srv_reply_end(c, off);
	return 0;

out_free:
	tc__objs_fill_free(&c->srv->objs, p->o);
	tc__free(p);
	return rc;
}

static struct pending *pending_take(struct conn *c, uint64_t handle)
{
	for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next)
		if ((*pp)->handle == handle) {
			struct pending *p = *pp;

			*pp = p->next;
			c->npending--;
			return p;
		}
	return NULL;
}

/* The unsealed put a SEAL or ABORT names; NULL with *rc and c->err set. */
static struct pending *pending_of_req(struct conn *c, struct req *r, int *rc)
{
	struct pending *p;
	uint64_t handle;

	if (tc__cur_read_u64(&r->body, &handle) < 0) {
		*rc = TC_EPROTO;
		return NULL;
	}
	if ((*rc = tc__srv_body_end(c, r)) < 0)
		return NULL;
	p = pending_take(c, handle);
	if (!p) {
		snprintf(c->err, sizeof(c->err), "no unsealed put %llu",
			 (unsigned long long)handle);
		*rc = TC_ENOTFOUND;
	}
	return p;
}

/* A put that served what it held while filling ends without becoming a
 * replica (abort, failed seal, the client gone): peers and the cluster
 * stop counting on it. */
static void filling_end(struct server *s, struct pending *p)
{
	const struct tc__objs_observer *ob = s->objs.observer;
	const struct tc__objs_hooks *hk = &s->objs.hooks;

	if (!p->serving[0])
		return;
	if (ob && ob->filling)
		ob->filling(ob->arg, p->serving, -1, NULL, NULL, 0, false);
	if (hk->filling)
		hk->filling(hk->arg, p->serving, NULL, NULL, false);
	p->serving[0] = '\0';
}

static void pending_free(struct conn *c, struct pending *p)
{
	tc__free(p->served);
	filling_end(c->srv, p);
	tc__srv_persist_end(c->srv, &p->persist); /* and its disk copy's */
	tc__objs_fill_free(&c->srv->objs, p->o);  /* the fill goes */
	tc__free(p);
}

struct seal_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct pending *p;
	struct tc__digest *chunks;
	uint64_t nchunks;
	int io_threads;
	bool verified; /* sealed with its pull's digests, not hashed */
	int rc;
	struct tc__obj *o; /* once inserted: p->o, or the copy held already */
	uint64_t ns;
	struct server *s;
	struct key_gate gate; /* the key, decided by the global store */
};

static void seal_run(struct tc__job *job)
{
	struct seal_job *j = (struct seal_job *)job;
	struct tc__obj *o = j->p->o;

	j->nchunks = tc__chunk_count(o->table.total_bytes);
	j->chunks = tc__calloc(j->nchunks ? j->nchunks : 1, sizeof(*j->chunks));
	if (!j->chunks) {
		j->rc = -ENOMEM;
		return;
	}
	if (j->p->served && j->p->nchunks == j->nchunks &&
	    (!j->p->persist.on || !j->p->persist.wait)) {
		/* Its pull checked every chunk against these (PUT_SERVE
		 * made sure they hash with the table to the served id). */
		memcpy(j->chunks, j->p->served,
		       j->nchunks * sizeof(*j->chunks));
		j->rc = tc__obj_finish(o, j->chunks, j->nchunks);
		j->verified = j->rc == 0;
	} else {
		j->rc = tc__srv_persist_hash(&j->p->persist, o, j->io_threads,
					     j->chunks, j->nchunks);
	}
	tc__free(j->p->served);
	j->p->served = NULL;
	if (j->rc == 0)
		tc__srv_key_gate_run(j->s, &j->gate, j->p->key, o->id,
				     j->p->flags, j->p->expect_gen);
}

static int seal_reply(struct conn *c, const struct req *r, void *arg)
{
	struct seal_job *j = arg;
	struct pending *p = j->p;
	bool dedup = j->o != p->o;
	uint64_t gen;
	int rc;

	rc = tc__srv_publish_key(c, j->o->id, p->key, p->flags, p->expect_gen,
				 &j->gate, &gen);
	if (rc == 0) {
		tc__durable_key_changed(c->srv->durable, &c->srv->objs, p->key);
		tc__srv_reply_created(c, r, j->o, j->ns, dedup, gen,
				      &p->persist);
	} else {
		tc__srv_key_gate_undo(c->srv, &j->gate, p->key, j->o->id);
		if (!dedup)
			tc__objs_discard_new(&c->srv->objs, j->o);
	}
	return rc;
}

static void seal_release(void *arg)
{
	struct seal_job *j = arg;

	tc__srv_persist_end(j->s, &j->p->persist); /* recorded: a no-op */
	tc__free(j->p);
	tc__free(j->chunks);
	tc__free(j);
}

static void seal_done(struct tc__job *job)
{
	struct seal_job *j = (struct seal_job *)job;
	struct conn *c = j->c;
	struct pending *p = j->p;
	int rc = j->rc;
	char why[sizeof(c->err)];

	j->ns = tc__now_ns() - p->t0_ns;
	if (rc == 0) {
		p->o->load_seconds = (double)j->ns / 1e9;
		rc = tc__objs_insert(&c->srv->objs, p->o, &j->o);
		if (rc < 0)
			tc__srv_key_gate_undo(c->srv, &j->gate, p->key,
					      p->o->id);
	}
	if (rc < 0) {
		pending_free(c, p);
		tc__srv_finish(c, &j->r, rc, NULL, NULL, NULL);
	} else {
		c->srv->n_put++;
		c->srv->n_put_verified += j->verified;
		tc__metrics_path(TC_MPATH_PUT, j->o->table.total_bytes, j->ns);
		tc__gpu_tier_host_added(c->srv->gpu, j->o);
		/* The disk copy is recorded (or its write starts) even when
		 * the client went: the bytes are durable whoever waits.  A
		 * failed must takes back what this put added. */
		c->err[0] = '\0';
		rc = tc__srv_persist_commit(c, &p->persist, j->o, j->chunks,
					    j->nchunks);
		if (rc < 0) {
			tc__srv_key_gate_undo(c->srv, &j->gate, p->key,
					      j->o->id);
			if (j->o == p->o)
				tc__objs_discard_new(&c->srv->objs, j->o);
		}
		snprintf(why, sizeof(why), "%s", c->err);
		tc__free(j->chunks);
		j->chunks = NULL;
		tc__srv_finish_created(c, &j->r, rc, why, seal_reply, j,
				       seal_release, &p->persist, j->o);
		return;
	}
	tc__free(j->chunks);
	tc__free(j);
}

int on_seal(struct conn *c, struct req *r)
{
	struct seal_job *j;
	struct pending *p;
	int rc;

	p = pending_of_req(c, r, &rc);
	if (!p)
		return rc;
	/* A compare-and-swap the global store cannot check now fails
	 * before the seal, so the client may seal again later. */
	rc = tc__srv_key_gate_init(c, NULL, p->key, p->flags);
	if (rc == 0)
		rc = tc__shm_seal(p->o->shm);
	if (rc == TC_ENODAEMON) {
		p->next = c->pending;
		c->pending = p;
		c->npending++;
		return rc;
	}
	if (rc < 0) {
		snprintf(c->err, sizeof(c->err),
			 rc == TC_EBUSY ?
				 "cannot seal put %llu: a writable mapping of "
				 "it still exists (unmap before sealing)" :
				 "cannot seal put %llu: %s",
			 (unsigned long long)p->handle, tc_strerror(rc));
		/* Back to pending: the client may unmap and seal again. */
		p->next = c->pending;
		c->pending = p;
		c->npending++;
		return rc;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j) {
		pending_free(c, p);
		return -ENOMEM;
	}
	j->c = c;
	j->r = *r;
	j->p = p;
	j->s = c->srv;
	j->io_threads = c->srv->cfg->io_threads;
	tc__srv_key_gate_init(c, &j->gate, p->key, p->flags); /* ok above */
	j->job.run = seal_run;
	j->job.done = seal_done;
	/* A write before the reply: the shared-disk tier counts its copy
	 * as FILLING while seal_run writes it. */
	tc__srv_persist_begin(c->srv, &p->persist, p->o->table.total_bytes);
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0; /* the reply comes when the job is done */
}

int on_abort(struct conn *c, struct req *r)
{
	struct pending *p;
	int rc;

	p = pending_of_req(c, r, &rc);
	if (!p)
		return rc;
	pending_free(c, p);
	tc__srv_reply_status(c, r, 0);
	return 0;
}

void tc__srv_puts_free(struct conn *c)
{
	while (c->pending) {
		struct pending *p = c->pending;

		c->pending = p->next;
		pending_free(c, p);
	}
}

/* ----------------------------------------------------- serve while filling */

static struct pending *pending_find(struct conn *c, uint64_t handle)
{
	for (struct pending *p = c->pending; p; p = p->next)
		if (p->handle == handle)
			return p;
	return NULL;
}

/* PUT_SERVE: u64 handle, str id, u64 nchunks, nchunks x 32-byte chunk
 * digests.  The put fills artifact `id` (tcast pull): from now on the
 * daemon serves each chunk PUT_HAVE names to peers, and the cluster knows
 * it as a partial replica, so other receivers of a fan-out pull from
 * here.  The digests must hash, with the put's table, to `id`: what is
 * served under an id is what the id vouches for. */
int on_put_serve(struct conn *c, struct req *r)
{
	const struct tc__objs_observer *ob = c->srv->objs.observer;
	const struct tc__objs_hooks *hk = &c->srv->objs.hooks;
	struct tc__digest root, *chunks = NULL;
	char id[TC_ID_LEN + 2], got[TC_ID_LEN + 1];
	const uint8_t *raw;
	struct pending *p;
	struct tc__obj *o;
	uint64_t handle, n;
	int rc;

	rc = tc__proto_get_put_serve(&r->body, &handle, id, sizeof(id), &n,
				     &raw, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	p = pending_find(c, handle);
	if (!p) {
		snprintf(c->err, sizeof(c->err), "no unsealed put %llu",
			 (unsigned long long)handle);
		return TC_ENOTFOUND;
	}
	if (!tc__is_id(id) || n != tc__chunk_count(p->o->table.total_bytes)) {
		snprintf(c->err, sizeof(c->err),
			 "PUT_SERVE: '%.80s' is not an id of this put's %llu "
			 "chunks",
			 id, (unsigned long long)n);
		return TC_EINVAL;
	}
	chunks = tc__malloc((n ? n : 1) * sizeof(*chunks));
	if (!chunks)
		return -ENOMEM;
	memcpy(chunks, raw, n * TC_DIGEST_BYTES);
	rc = tc__canon_root(&p->o->table, chunks, n, &root);
	if (rc == 0) {
		tc__digest_id(&root, got);
		if (strcmp(got, id)) {
			snprintf(c->err, sizeof(c->err),
				 "PUT_SERVE: this put's table and those "
				 "digests make %s, not %s",
				 got, id);
			rc = TC_EDIGEST;
		}
	}
	o = rc == 0 ? tc__map_get(&c->srv->objs.by_id, id) : NULL;
	/* Held here already, or served already: nothing to add. */
	if (rc == 0 && !(o && o->shm) && !p->serving[0]) {
		snprintf(p->serving, sizeof(p->serving), "%s", id);
		p->nchunks = n;
		if (ob && ob->filling)
			ob->filling(ob->arg, id, p->o->shm->fd, &p->o->table,
				    chunks, n, true);
		if (hk->filling)
			hk->filling(hk->arg, id, &p->o->table,
				    tc__policy_name(p->o->policy), true);
		/* The daemon's owner can change the daemon's memory anyway:
		 * its pull's verification stands for the seal's hash.  Any
		 * other uid's put is hashed at SEAL, whatever it says. */
		if (c->uid == geteuid() && !p->served) {
			p->served = chunks;
			chunks = NULL;
		}
	}
	tc__free(chunks);
	if (rc < 0)
		return rc;
	tc__srv_reply_status(c, r, 0);
	return 0;
}

/* PUT_HAVE (no reply): u64 handle, u32 flags, u32 n <= 65536, n x u64
 * chunk: those chunks of a serving put are written and verified (the
 * client checked each against its digest); with flag 1 (FETCHING) they
 * are being fetched from a sealed source (peers ask it for others). */
int on_put_have(struct conn *c, struct req *r)
{
	const struct tc__objs_observer *ob = c->srv->objs.observer;
	const struct tc__objs_hooks *hk = &c->srv->objs.hooks;
	uint64_t handle, *ks;
	struct pending *p;
	uint32_t n, flags;

	struct tc__cur cur;
	const uint8_t *raw;

	if (tc__proto_get_put_have(&r->body, &handle, &flags, &n, &raw, c->err,
				   sizeof(c->err)) < 0)
		return TC_EPROTO;
	p = pending_find(c, handle);
	if (!p || !p->serving[0] || !n)
		return 0; /* sealed or aborted meanwhile: nothing to do */
	ks = tc__malloc(n * sizeof(*ks));
	if (!ks)
		return -ENOMEM;
	tc__cur_init(&cur, raw, (size_t)n * 8);
	for (uint32_t i = 0; i < n; i++) {
		if (tc__cur_read_u64(&cur, &ks[i]) < 0 || ks[i] >= p->nchunks) {
			tc__free(ks);
			snprintf(c->err, sizeof(c->err),
				 "PUT_HAVE: chunk out of range");
			return TC_EPROTO;
		}
	}
	if (ob && ob->filling_have)
		ob->filling_have(ob->arg, p->serving, ks, n, flags & 1);
	if (hk->filling_have && !(flags & 1))
		hk->filling_have(hk->arg, p->serving, ks, n);
	tc__free(ks);
	return 0;
}
