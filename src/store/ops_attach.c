/*
 * ops_attach.c - leases on replicas: ATTACH and RELEASE of an artifact's
 * host replica, ATTACH_GPU and RELEASE_GPU of a GPU replica (made on
 * demand by gpu_tier.c), and what a closed connection gives back.  Loop
 * thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gpu/vmm.h"
#include "gpu_tier.h"
#include "metrics.h"
#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "server_internal.h"

/* ------------------------------------------------------------- leases */

/* The host lease on artifact `id`.  One id is one object (a removed copy
 * that is still leased comes back to life rather than getting a twin), so
 * the id alone finds it, removed or not. */
static struct lease *lease_find(struct conn *c, const char *id)
{
	for (uint32_t i = 0; i < c->nleases; i++)
		if (!c->leases[i].rep && !strcmp(c->leases[i].o->id, id))
			return &c->leases[i];
	return NULL;
}

/* Take one lease on o's host replica (rep NULL) or on a GPU replica. */
static void lease_take(struct conn *c, struct tc__obj *o,
		       struct tc__gpu_replica *rep)
{
	if (rep)
		tc__gpu_replica_lease(c->srv->gpu, rep);
	else
		tc__objs_lease(&c->srv->objs, o);
}

static int lease_add(struct conn *c, struct tc__obj *o,
		     struct tc__gpu_replica *rep)
{
	for (uint32_t i = 0; i < c->nleases; i++)
		if (c->leases[i].o == o && c->leases[i].rep == rep) {
			c->leases[i].n++;
			lease_take(c, o, rep);
			return 0;
		}
	if (c->nleases == c->cap_leases) {
		uint32_t cap = c->cap_leases ? c->cap_leases * 2 : 8;
		struct lease *p = tc__reallocarray(c->leases, cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		c->leases = p;
		c->cap_leases = cap;
	}
	c->leases[c->nleases].o = o;
	c->leases[c->nleases].rep = rep;
	c->leases[c->nleases].n = 1;
	c->nleases++;
	lease_take(c, o, rep);
	return 0;
}

static void lease_drop(struct conn *c, struct lease *l)
{
	struct tc__gpu_replica *rep = l->rep;
	struct tc__obj *o = l->o;

	if (--l->n == 0)
		*l = c->leases[--c->nleases];
	if (rep)
		tc__gpu_replica_unlease(c->srv->gpu, rep);
	else
		tc__objs_unlease(&c->srv->objs, o);
}

void tc__srv_leases_free(struct conn *c)
{
	while (c->nleases) {
		struct lease *l = &c->leases[0];

		/* The client did not release it: its process may live on
		 * (a connection the daemon dropped) and still map the
		 * replica, so that memory must never show other bytes. */
		if (l->rep)
			tc__gpu_replica_keep_private(l->rep);
		while (l->n > 1)
			lease_drop(c, l);
		lease_drop(c, l);
	}
}

/* ------------------------------------------------------- attach/release */

int on_attach(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR];
	struct tc__obj *o;
	uint32_t flags;
	size_t off;
	int rc;

	rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref));
	if (rc < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &flags) < 0)
		return TC_EPROTO;
	if ((rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return tc__srv_durable_miss(c, r, ref, rc, NULL);
	/* Held on a GPU only (loaded there from the shared disk): the host
	 * copy comes from the disk too. */
	if (tc__srv_durable_lacks(c->srv, o, NULL))
		return tc__srv_durable_miss(c, r, o->id, TC_ENOTFOUND, NULL);
	/* Held on GPUs only (a put of GPU memory, an import straight to a
	 * GPU): the host copy comes from a GPU replica. */
	if (!o->shm)
		return tc__srv_host_from_gpu(c, r, o);
	if (lease_add(c, o, NULL) < 0)
		return -ENOMEM;
	c->srv->n_attach++;
	tc__metrics_path(TC_MPATH_ATTACH_HOST, o->table.total_bytes,
			 tc__now_ns() - r->t0_ns);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put(&c->out, o->attach_body.data, o->attach_body.len);
	tc__buf_put_u32(&c->out, r->origin);
	if (tc__srv_reply_fds(c, off, &o->shm->ro_fd, 1, false) < 0) {
		/* The lease would be held with no reply to release it. */
		c->out.len = off;
		lease_drop(c, lease_find(c, o->id));
		return -ENOMEM;
	}
	tc__srv_reply_end(c, off);
	return 0;
}

int on_release(struct conn *c, struct req *r)
{
	char id[TC_ID_LEN + 1];
	struct lease *l;

	if (tc__cur_read_strcpy(&r->body, id, sizeof(id)) < 0 ||
	    tc__srv_body_end(c, r) < 0)
		return TC_EPROTO;
	l = lease_find(c, id);
	if (!l) {
		tc__log(TC_LOG_WARN,
			"pid %d released '%s', which it does not "
			"hold",
			(int)c->pid, id);
		return 0; /* no reply to a fire-and-forget message */
	}
	lease_drop(c, l);
	return 0;
}

/* ------------------------------------------------------------ GPU tier */

/* An ATTACH_GPU waiting for the driver or a fill (gpu_tier.c answers). */
struct gpu_wait {
	struct conn *c;
	struct req r;	   /* header copy; body consumed */
	struct tc__obj *o; /* the answer, when it succeeded */
	struct tc__gpu_replica *rep;
};

/* Lease `rep` for c and reply: id, allocation size, GPU UUID, table, and
 * the exported fd (the reply queue sends its own dup of it, so a
 * RELEASE_GPU pipelined behind this request cannot change what leaves). */
static int reply_gpu(struct conn *c, const struct req *r, struct tc__obj *o,
		     struct tc__gpu_replica *rep)
{
	struct lease *l;
	size_t off;

	if (lease_add(c, o, rep) < 0)
		return -ENOMEM;
	c->srv->n_attach_gpu++;
	tc__metrics_path(TC_MPATH_ATTACH_GPU, o->table.total_bytes,
			 r->t0_ns ? tc__now_ns() - r->t0_ns : 0);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_str(&c->out, o->id);
	tc__buf_put_u64(&c->out, rep->mem.size);
	tc__buf_put_str(&c->out, rep->dev->info.uuid_str);
	tc__proto_put_table(&c->out, &o->table);
	tc__buf_put_u32(&c->out, r->origin);
	/* Where the replica's bytes came from and how fast (a client's
	 * diagnostics; older clients stop reading before). */
	tc__buf_put_u32(&c->out, (uint32_t)rep->fill_src);
	tc__buf_put_u64(&c->out, (uint64_t)(rep->fill_gbps * 1e6));
	if (tc__srv_reply_fds(c, off, &rep->mem.fd, 1, false) < 0) {
		/* Drop the half-built frame with the lease. */
		c->out.len = off;
		for (l = c->leases; l < c->leases + c->nleases; l++)
			if (l->rep == rep) {
				lease_drop(c, l);
				break;
			}
		return -ENOMEM;
	}
	tc__srv_reply_end(c, off);
	return 0;
}

static int attach_gpu_reply(struct conn *c, const struct req *r, void *arg)
{
	struct gpu_wait *w = arg;

	return reply_gpu(c, r, w->o, w->rep);
}

static void attach_gpu_done(void *arg, struct tc__obj *o,
			    struct tc__gpu_replica *rep, int rc,
			    const char *err)
{
	struct gpu_wait *w = arg;

	w->o = o;
	w->rep = rep;
	tc__srv_finish(w->c, &w->r, rc, err, attach_gpu_reply, w);
	tc__free(w);
}

int on_attach_gpu(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR], uuid_s[TC_GPU_UUID_STRLEN + 8];
	uint8_t uuid[TC_GPU_UUID_BYTES];
	struct tc__gpu_replica *rep;
	uint32_t device, flags;
	struct gpu_wait *w;
	struct tc__obj *o;
	int rc;

	if ((rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref))) < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &device) < 0 ||
	    tc__cur_read_u32(&r->body, &flags) < 0)
		return TC_EPROTO;
	if ((rc = tc__srv_read_str(c, r, "GPU UUID", uuid_s, sizeof(uuid_s))) <
	    0)
		return rc;
	if ((rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	if (flags) {
		snprintf(c->err, sizeof(c->err), "unknown ATTACH_GPU flags %#x",
			 flags);
		return TC_EINVAL;
	}
	if (uuid_s[0] && tc__gpu_uuid_parse(uuid_s, uuid) < 0) {
		snprintf(c->err, sizeof(c->err), "'%s' is not a GPU UUID",
			 uuid_s);
		return TC_EINVAL;
	}
	if (!uuid_s[0] && device == TC_GPU_ANY_DEVICE) {
		snprintf(c->err, sizeof(c->err),
			 "ATTACH_GPU names no device (no ordinal, no UUID)");
		return TC_EINVAL;
	}
	/* A durable artifact that is not in memory, or held without a host
	 * copy and not on this GPU, loads from the shared disk straight to
	 * a replica here (the GPU loader), never through host memory. */
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return tc__srv_durable_miss(c, r, ref, rc,
					    uuid_s[0] ? uuid : NULL);
	if (uuid_s[0] && tc__srv_durable_lacks(c->srv, o, uuid))
		return tc__srv_durable_miss(c, r, o->id, TC_ENOTFOUND, uuid);
	w = tc__calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->c = c;
	w->r = *r;
	rc = tc__gpu_tier_attach(c->srv->gpu, o, device,
				 uuid_s[0] ? uuid : NULL, attach_gpu_done, w,
				 &rep, c->err, sizeof(c->err));
	if (rc == 1) {
		/* Frames of this connection wait until the answer. */
		tc__srv_defer(c);
		return 0;
	}
	tc__free(w);
	if (rc < 0)
		return rc;
	return reply_gpu(c, r, o, rep);
}

int on_release_gpu(struct conn *c, struct req *r)
{
	char id[TC_ID_LEN + 1], uuid_s[TC_GPU_UUID_STRLEN + 8];
	uint8_t uuid[TC_GPU_UUID_BYTES];
	struct lease *l = NULL;

	if (tc__cur_read_strcpy(&r->body, id, sizeof(id)) < 0 ||
	    tc__cur_read_strcpy(&r->body, uuid_s, sizeof(uuid_s)) < 0 ||
	    tc__srv_body_end(c, r) < 0 || tc__gpu_uuid_parse(uuid_s, uuid) < 0)
		return TC_EPROTO;
	/* Prefer a live artifact's lease; a removed one keeps its id. */
	for (uint32_t i = 0; i < c->nleases; i++) {
		struct lease *x = &c->leases[i];

		if (!x->rep || strcmp(x->o->id, id) ||
		    memcmp(x->rep->dev->info.uuid, uuid, TC_GPU_UUID_BYTES))
			continue;
		if (!l || !x->o->dead)
			l = x;
	}
	if (!l) {
		tc__log(TC_LOG_WARN,
			"pid %d released '%s' on %s, which it does not hold",
			(int)c->pid, id, uuid_s);
		return 0; /* no reply to a fire-and-forget message */
	}
	lease_drop(c, l);
	return 0;
}
