/*
 * binding.c - BIND, SWAP and UNBIND: GPU memory the daemon owns for one
 * client at stable addresses, refilled in place (docs/gpu.md).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "gpu_tier.h"
#include "xfer/xfer.h"
#include "server_internal.h"
#include "tcast/errors.h"

/*
 * A binding is GPU memory the daemon owns for one client, holding a copy
 * of an artifact at stable addresses: the client maps it read-only once,
 * and SWAP refills the same memory in place with another artifact of the
 * same layout, so the client's pointers stay valid.  A swap does not wait
 * for the client's kernels: the caller pauses its readers around it.
 * A binding made or swapped with TC_BIND_F_PUBLISH is also a source of
 * what it holds (peers read it through the peer server's staging, the
 * global store lists it as tier gpu): announced once a fill or swap
 * succeeded, withdrawn before a swap rewrites it and before it is freed.
 * Its GPU memory is a private replica (replica.h): charged to the GPU's
 * tier, never on its LRU, so never evicted and counted in the budget
 * like any replica; FILLING until its first fill is done, then READY
 * (a swap rewrites it in place, READY all along).
 * Invariant: busy => a fill job owns `mem` until it is done.
 */
struct binding {
	uint64_t handle;
	char id[TC_ID_LEN + 1]; /* the artifact it holds now */
	struct tc__buf layout;	/* names, dtypes, shapes, offsets */
	uint8_t uuid[TC_GPU_UUID_BYTES];
	int dev;		/* the daemon's ordinal, once charged */
	struct tc__replica rep; /* private: its charge (rep.bytes) */
	struct tc__gpu_mem mem; /* daemon-owned allocation */
	bool busy;
	bool dead;    /* unbound or its client gone: free when not busy */
	bool publish; /* a source once filled (TC_BIND_F_PUBLISH) */
	char pub_id[TC_ID_LEN + 1]; /* what peers are told it holds, or "" */
	struct binding *next;
};

/* Peers and the cluster stop reading it (before a rewrite or a free). */
static void binding_unpublish(struct server *s, struct binding *bd)
{
	if (!bd->pub_id[0])
		return;
	tc__objs_notify_gpu(&s->objs, bd->pub_id, NULL, bd->dev, bd->mem.dptr,
			    bd->mem.size, false);
	bd->pub_id[0] = '\0';
}

static void binding_free(struct server *s, struct binding *bd)
{
	binding_unpublish(s, bd);
	tc__gpu_release_later(&bd->mem); /* off the loop */
	tc__gpu_tier_bind_release(s->gpu, bd->dev, &bd->rep);
	tc__buf_release(&bd->layout);
	tc__free(bd);
}

static void binding_unlink(struct conn *c, struct binding *bd)
{
	for (struct binding **pp = &c->bindings; *pp; pp = &(*pp)->next)
		if (*pp == bd) {
			*pp = bd->next;
			return;
		}
}

static struct binding *binding_find(struct conn *c, uint64_t handle)
{
	for (struct binding *bd = c->bindings; bd; bd = bd->next)
		if (bd->handle == handle && !bd->dead)
			return bd;
	return NULL;
}

struct bind_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct binding *bd;
	struct tc__obj *o;	     /* source, leased for the job */
	struct tc__gpu_replica *rep; /* GPU source, leased, or NULL */
	int phase;		     /* 1: driver, 2: allocate + fill */
	bool swap;
	bool copying;		    /* counted in tc__gpu_tier_copy_begin */
	bool pinned;		    /* copy from o's pinned host copy (`pin`) */
	struct tc__gpu_pinning pin; /* borrowed from o->gpu: o is leased */
	/* Without a replica on this GPU: the host copy or a sibling GPU's
	 * replica, chosen as the tier chooses for its replicas (measured;
	 * the sibling leased until bind_finish). */
	struct tc__gpu_peer_fill pf;
	bool peer_chosen; /* pf was begun: end it (peer_done) */
	int nthreads;
	double copy_seconds; /* the fill, allocation excluded */
	int rc;
	char err[512];
};

static void bind_run(struct tc__job *job)
{
	struct bind_job *j = (struct bind_job *)job;
	struct binding *bd = j->bd;
	uint64_t t0 = tc__now_ns();
	/* The fastest source the artifact has (choose_source): the replica
	 * on this GPU device to device, else what the tier's measured choice
	 * says between a sibling GPU's replica and the host copy (pinned, or
	 * through the staging ring).  A BIND allocates (bd->mem is empty), a
	 * SWAP refills in place. */
	struct tc__xfer x = { .from = j->rep ? TC_XFER_FROM_GPU :
					       TC_XFER_FROM_HOST,
			      .host = j->o->shm ? j->o->shm->map : NULL,
			      .pin = j->pinned ? &j->pin : NULL,
			      .staged = true,
			      .gpu_src = j->rep ? &j->rep->mem : NULL,
			      .bytes = j->o->table.total_bytes,
			      .to = TC_XFER_TO_GPU,
			      .gpu_dst = &bd->mem,
			      .ordinal = bd->dev,
			      .alloc_bytes = bd->rep.bytes,
			      .nthreads = j->nthreads };

	if (j->phase == 1) {
		j->rc = tc__gpu_init(j->err, sizeof(j->err));
		return;
	}
	if (!j->rep) {
		j->rc = tc__gpu_tier_peer_run(&j->pf, &x, j->err,
					      sizeof(j->err));
		j->copy_seconds = j->pf.copy_seconds;
		return;
	}
	j->rc = tc__xfer_run(&x, j->err, sizeof(j->err));
	j->copy_seconds = (double)(tc__now_ns() - t0) / 1e9 - x.alloc_seconds;
}

/* A new binding's reply: handle, id, size, GPU, table and the fd. */
static int bind_reply_new(struct conn *c, const struct req *r,
			  struct bind_job *j)
{
	struct binding *bd = j->bd;
	struct tc__obj *o = j->o;
	size_t off;
	char uuid[TC_GPU_UUID_STRLEN];

	tc__gpu_uuid_format(bd->uuid, uuid);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, bd->handle);
	tc__buf_put_str(&c->out, bd->id);
	tc__buf_put_u64(&c->out, bd->mem.size);
	tc__buf_put_str(&c->out, uuid);
	tc__proto_put_table(&c->out, &o->table);
	if (tc__srv_reply_fds(c, off, &bd->mem.fd, 1, false) < 0) {
		c->out.len = off;
		return -ENOMEM;
	}
	tc__srv_reply_end(c, off);
	return 0;
}

/* The success reply of a BIND (with its fd) or a SWAP (the new id); none
 * for a binding unbound meanwhile. */
static int bind_reply(struct conn *c, const struct req *r, void *arg)
{
	struct bind_job *j = arg;
	size_t off;
	int rc;

	if (!j->bd)
		return 0;
	if (j->swap) {
		off = tc__srv_reply_begin(c, r);
		tc__buf_put_str(&c->out, j->bd->id);
		tc__srv_reply_end(c, off);
		return 0;
	}
	rc = bind_reply_new(c, r, j);
	if (rc < 0) {
		/* No binding the client could not name. */
		binding_unlink(c, j->bd);
		binding_free(c->srv, j->bd);
		j->bd = NULL;
	}
	return rc;
}

/*
 * Pick what a binding on bd->dev is filled from, fastest first: a ready
 * replica of the artifact on that same GPU (device to device: an HBM copy,
 * against ~55 GB/s for the fastest host copy); else, when another GPU
 * holds a ready replica, the tier's measured choice between that sibling
 * (a peer copy) and the host copy (a probe of both the first time a pair
 * is seen: tc__gpu_tier_peer_choose); else the host copy once it is pinned
 * (the pinned rate), else the host copy through the staging rings.
 * Leases the replica or sibling for the copy.  Returns 0, or TC_ENOTSUP
 * when the artifact has neither a host copy nor a ready replica on a GPU.
 */
static int choose_source(struct server *s, struct bind_job *j, char *err,
			 size_t errlen)
{
	struct tc__obj *o = j->o;
	struct tc__gpu_replica *rep = o->gpu ? o->gpu->rep[j->bd->dev] : NULL;

	if (rep && rep->base.state == TC_REPLICA_READY) {
		j->rep = rep;
		tc__gpu_replica_lease(s->gpu, rep);
		return 0;
	}
	j->pf.dst = j->bd->dev;
	j->pf.bytes = o->table.total_bytes;
	j->pf.has_host = o->shm != NULL;
	tc__gpu_tier_peer_choose(s->gpu, o, &j->pf);
	j->peer_chosen = true;
	if (!o->shm && j->pf.sib_dev < 0) {
		snprintf(err, errlen,
			 "'%s' has no host copy and no ready replica on a GPU "
			 "to fill the binding from",
			 o->id);
		return TC_ENOTSUP;
	}
	if (o->shm && o->gpu && o->gpu->reg_state == GT_REG_DONE) {
		j->pinned = true;
		j->pin = o->gpu->pin;
	}
	return 0;
}

static const char *source_name(const struct bind_job *j, char *buf, size_t len)
{
	if (j->rep)
		return "its replica on that GPU (device to device)";
	if (j->pf.use_peer) {
		snprintf(buf, len, "its replica on GPU %d (%s)", j->pf.sib_dev,
			 j->pf.link == 2 ? "peer copy staged by the driver" :
					   "peer copy");
		return buf;
	}
	return j->pinned ? "its pinned host copy" :
			   "its host copy (staging rings)";
}

static void bind_finish(struct bind_job *j, int rc)
{
	struct conn *c = j->c;
	struct binding *bd = j->bd;
	char src[64];

	/* Which source served, and how fast: per source, for whoever asks
	 * why a swap took what it took. */
	if (rc == 0 && j->phase == 2)
		tc__log(TC_LOG_INFO,
			"binding %llu %s '%s' from %s: %llu bytes in %.4f s "
			"(%.1f GB/s)",
			(unsigned long long)bd->handle,
			j->swap ? "swapped to" : "filled with", bd->id,
			source_name(j, src, sizeof(src)),
			(unsigned long long)j->o->table.total_bytes,
			j->copy_seconds,
			j->copy_seconds > 0 ? (double)j->o->table.total_bytes /
						      j->copy_seconds / 1e9 :
					      0.0);
	/* Filled: a source now, if asked (j->o, leased, gives the digests).
	 */
	if (rc == 0 && j->phase == 2 && bd->publish && !bd->dead &&
	    j->o->nchunks) {
		snprintf(bd->pub_id, sizeof(bd->pub_id), "%s", bd->id);
		tc__objs_notify_gpu(&c->srv->objs, bd->id, j->o, bd->dev,
				    bd->mem.dptr, bd->mem.size, true);
	}
	if (rc == 0 && j->phase == 2 && bd->rep.state == TC_REPLICA_FILLING)
		tc__replica_ready(&bd->rep);
	if (j->rep)
		tc__gpu_replica_unlease(c->srv->gpu, j->rep);
	if (j->peer_chosen)
		tc__gpu_tier_peer_done(c->srv->gpu, &j->pf,
				       j->phase == 2 ? rc : -1,
				       TC_GPU_PEER_BIND);
	if (j->copying)
		tc__gpu_tier_copy_end(c->srv->gpu);
	tc__objs_unlease(&c->srv->objs, j->o);
	bd->busy = false;
	if (rc < 0 && j->swap) {
		/* Part of the memory may hold the new artifact: say so. */
		bd->id[0] = '\0';
		snprintf(j->err + strlen(j->err),
			 sizeof(j->err) - strlen(j->err),
			 " (the binding's content is undefined until a swap "
			 "succeeds)");
	}
	/* Gone before the frames that waited run: a failed BIND leaves no
	 * binding, an unbound one goes now that no job owns it. */
	if ((rc < 0 && !j->swap) || bd->dead) {
		binding_unlink(c, bd);
		binding_free(c->srv, bd);
		j->bd = NULL;
	}
	tc__srv_finish(c, &j->r, rc, j->err, bind_reply, j);
	tc__free(j);
}

static void bind_done(struct tc__job *job)
{
	struct bind_job *j = (struct bind_job *)job;
	struct conn *c = j->c;
	struct server *s = c->srv;
	struct binding *bd = j->bd;
	int rc = j->rc;

	if (rc == 0 && j->phase == 1) {
		rc = tc__gpu_tier_open_now(s->gpu, j->err, sizeof(j->err));
		if (rc == 0)
			rc = tc__gpu_tier_bind_charge(s->gpu, bd->uuid,
						      j->o->table.total_bytes,
						      &bd->rep, &bd->dev,
						      j->err, sizeof(j->err));
		if (rc == 0)
			rc = choose_source(s, j, j->err, sizeof(j->err));
		if (rc == 0) {
			j->phase = 2;
			tc__gpu_tier_copy_begin(s->gpu);
			j->copying = true;
			tc__jobs_submit(s->jobs, &j->job);
			return;
		}
	}
	bind_finish(j, rc);
}

/* Start a fill job of bd from artifact o (phase 1 when the tier may need
 * the driver, else straight to 2). */
static int bind_start(struct conn *c, struct req *r, struct binding *bd,
		      struct tc__obj *o, bool swap)
{
	struct bind_job *j = tc__calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->c = c;
	j->r = *r;
	j->bd = bd;
	j->o = o;
	j->swap = swap;
	j->phase = swap ? 2 : 1;
	j->nthreads = c->srv->cfg->io_threads;
	if (swap) {
		int rc = choose_source(c->srv, j, c->err, sizeof(c->err));

		if (rc < 0) {
			tc__free(j);
			return rc;
		}
	}
	/* A swap rewrites what peers may be reading: they stop first (the
	 * wait is one chunk's copy at most). */
	binding_unpublish(c->srv, bd);
	tc__objs_lease(&c->srv->objs, o);
	bd->busy = true;
	j->job.run = bind_run;
	j->job.done = bind_done;
	if (j->phase == 2) {
		tc__gpu_tier_copy_begin(c->srv->gpu);
		j->copying = true;
	}
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0;
}

int on_bind(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR], uuid[TC_PROTO_MAX_STR];
	uint8_t raw[TC_GPU_UUID_BYTES];
	struct binding *bd;
	struct tc__obj *o;
	uint32_t flags;
	bool present;
	int rc;

	if ((rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref))) < 0)
		return rc;
	if ((rc = tc__proto_get_bind_flags(&r->body, false, &flags, &present,
					   c->err, sizeof(c->err))) < 0)
		return rc;
	if ((rc = tc__srv_read_str(c, r, "GPU uuid", uuid, sizeof(uuid))) < 0 ||
	    (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	if (tc__gpu_uuid_parse(uuid, raw) < 0) {
		snprintf(c->err, sizeof(c->err), "bad GPU uuid '%s'", uuid);
		return TC_EINVAL;
	}
	/* A durable artifact on the shared disk only loads straight to a
	 * replica on this GPU first; the binding is then filled from it
	 * device to device. */
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return tc__srv_durable_miss(c, r, ref, rc, raw);
	if (tc__srv_durable_lacks(c->srv, o, raw))
		return tc__srv_durable_miss(c, r, o->id, TC_ENOTFOUND, raw);
	bd = tc__calloc(1, sizeof(*bd));
	if (!bd)
		return -ENOMEM;
	memcpy(bd->uuid, raw, sizeof(raw));
	tc__replica_init(&bd->rep);
	bd->publish = flags & TC_BIND_F_PUBLISH;
	tc__gpu_mem_init(&bd->mem);
	tc__buf_init(&bd->layout);
	tc__proto_put_layout(&bd->layout, &o->table);
	if (bd->layout.oom) {
		binding_free(c->srv, bd);
		return -ENOMEM;
	}
	bd->handle = ++c->next_binding;
	snprintf(bd->id, sizeof(bd->id), "%s", o->id);
	bd->next = c->bindings;
	c->bindings = bd;
	rc = bind_start(c, r, bd, o, false);
	if (rc < 0) {
		binding_unlink(c, bd);
		binding_free(c->srv, bd);
	}
	return rc;
}

int on_swap(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR], old[TC_ID_LEN + 1];
	struct tc__buf lay = TC_BUF_INIT;
	struct binding *bd;
	struct tc__obj *o;
	uint64_t handle;
	uint32_t flags;
	bool has_flags;
	int rc, same;

	if (tc__cur_read_u64(&r->body, &handle) < 0)
		return TC_EPROTO;
	if ((rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref))) < 0)
		return rc;
	/* Optional flags (clients before them end at the reference). */
	if ((rc = tc__proto_get_bind_flags(&r->body, true, &flags, &has_flags,
					   c->err, sizeof(c->err))) < 0 ||
	    (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	bd = binding_find(c, handle);
	if (!bd) {
		snprintf(c->err, sizeof(c->err), "no binding %llu",
			 (unsigned long long)handle);
		return TC_ENOTFOUND;
	}
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return tc__srv_durable_miss(c, r, ref, rc, bd->uuid);
	if (tc__srv_durable_lacks(c->srv, o, bd->uuid))
		return tc__srv_durable_miss(c, r, o->id, TC_ENOTFOUND,
					    bd->uuid);
	tc__proto_put_layout(&lay, &o->table);
	same = !lay.oom && lay.len == bd->layout.len &&
	       !memcmp(lay.data, bd->layout.data, lay.len);
	tc__buf_release(&lay);
	if (!same) {
		snprintf(
			c->err, sizeof(c->err),
			"'%s' does not have the layout of the bound '%s' "
			"(tensor names, dtypes, shapes and offsets must match)",
			o->id, bd->id);
		return TC_ESHAPE;
	}
	if (has_flags)
		bd->publish = flags & TC_BIND_F_PUBLISH;
	memcpy(old, bd->id, sizeof(old));
	snprintf(bd->id, sizeof(bd->id), "%s", o->id);
	rc = bind_start(c, r, bd, o, true);
	if (rc < 0) /* nothing was written: it still holds the old one */
		memcpy(bd->id, old, sizeof(old));
	return rc;
}

int on_unbind(struct conn *c, struct req *r)
{
	struct binding *bd;
	uint64_t handle;

	if (tc__cur_read_u64(&r->body, &handle) < 0 ||
	    tc__srv_body_end(c, r) < 0)
		return TC_EPROTO;
	bd = binding_find(c, handle);
	if (!bd)
		return 0; /* fire and forget */
	bd->dead = true;
	if (!bd->busy) {
		binding_unlink(c, bd);
		binding_free(c->srv, bd);
	}
	return 0;
}

void tc__srv_bindings_free(struct conn *c)
{
	while (c->bindings) {
		struct binding *bd = c->bindings;

		c->bindings = bd->next;
		binding_free(c->srv, bd);
	}
}
