/*
 * host_copy.c - a host copy of an artifact held on GPUs only (a put of
 * GPU memory, an import straight to a GPU), made from one of its GPU
 * replicas when a request needs host memory: ATTACH, and so tc_export
 * and `tcast export`, which write an attached mapping to a file.
 *
 * The bytes go GPU -> host through the transfer engine (xfer.h): chunk
 * by chunk into the new memfd (through its mapping, or through pinned
 * staging and its file where page faults are dear), hashed on the way
 * (on the GPU where the kernels run), and the id they make must be the
 * artifact's: a replica that no longer holds what its id says is never
 * copied on.  The new host copy is charged to host memory like any other
 * (evicting what the policy allows) and joins the artifact at insert
 * (tc__objs_insert: "a host copy of content held on GPUs only"); then the
 * request runs again, whole, and finds it.  Loop thread, but the copy,
 * which runs on a worker.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "net/ev.h"
#include "gpu_tier.h"
#include "obj.h"
#include "server_internal.h"
#include "shm.h"
#include "tcast/errors.h"
#include "xfer/xfer.h"

struct host_copy {
	struct tc__job job;
	struct conn *c;
	struct req r;
	uint8_t *body; /* owned copy of the request's body */
	struct server *s;
	struct tc__obj *src;	     /* the artifact, leased */
	struct tc__gpu_replica *rep; /* its READY replica, leased */
	struct tc__obj *o;	     /* the copy: a FILLING host replica,
					owned until inserted */
	char id[TC_ID_LEN + 1];	     /* what the bytes must hash to */
	int nthreads;
	uint64_t t0_ns;
	double seconds; /* the copy (and hash) */
	int rc;
	char err[512];
};

/* A READY replica of o on any GPU, or NULL. */
static struct tc__gpu_replica *ready_replica(const struct tc__obj *o)
{
	if (!o->gpu)
		return NULL;
	for (int d = 0; d < TC_GPU_TIER_MAX_DEV; d++) {
		struct tc__gpu_replica *rep = o->gpu->rep[d];

		if (rep && rep->base.state == TC_REPLICA_READY)
			return rep;
	}
	return NULL;
}

static void host_copy_run(struct tc__job *job)
{
	struct host_copy *j = (struct host_copy *)job;
	struct tc__obj *o = j->o;
	uint64_t n = o->table.total_bytes, nchunks = tc__chunk_count(n);
	uint64_t t0 = tc__now_ns();
	struct tc__digest *chunks;

	chunks = tc__calloc(nchunks ? nchunks : 1, sizeof(*chunks));
	if (!chunks) {
		j->rc = -ENOMEM;
		snprintf(j->err, sizeof(j->err), "out of memory");
		return;
	}
	j->rc = tc__shm_prepare_fill(o->shm);
	if (j->rc == 0) {
		struct tc__xfer x = { .from = TC_XFER_FROM_GPU,
				      .gpu_src = &j->rep->mem,
				      .bytes = n,
				      .to = TC_XFER_TO_HOST,
				      .host_dst = o->shm->rw_map,
				      .host_fd = o->shm->fd,
				      .nthreads = j->nthreads,
				      .chunks = chunks };

		j->rc = tc__xfer_run(&x, j->err, sizeof(j->err));
		if (j->rc == 0 && x.sink_rc < 0)
			j->rc = x.sink_rc;
	} else {
		snprintf(j->err, sizeof(j->err), "cannot map a new segment: %s",
			 tc_strerror(j->rc));
	}
	if (j->rc == 0 && (j->rc = tc__shm_seal(o->shm)) < 0)
		snprintf(j->err, sizeof(j->err), "cannot seal the copy: %s",
			 tc_strerror(j->rc));
	if (j->rc == 0)
		j->rc = tc__obj_finish(o, chunks, nchunks);
	if (j->rc == 0 && strcmp(o->id, j->id)) {
		snprintf(j->err, sizeof(j->err),
			 "the GPU replica of %s holds %s: not copied to host "
			 "memory",
			 j->id, o->id);
		j->rc = TC_EDIGEST;
	}
	tc__free(chunks);
	j->seconds = (double)(tc__now_ns() - t0) / 1e9;
}

/* Run the request again, whole: its handler finds the host copy now. */
static int rerun(struct conn *c, const struct req *r, void *arg)
{
	struct host_copy *j = arg;
	struct req again = *r;

	tc__cur_init(&again.body, j->body, r->h.body_len);
	again.nfds = 0;
	tc__srv_dispatch(c, &again);
	return 0;
}

static void host_copy_done(struct tc__job *job)
{
	struct host_copy *j = (struct host_copy *)job;
	struct server *s = j->s;
	struct tc__obj *o = NULL;
	int rc = j->rc, dev = j->rep->mem.device;

	tc__gpu_replica_unlease(s->gpu, j->rep);
	j->rep = NULL; /* may be evicted from here on */
	if (rc == 0 && j->src->dead) {
		rc = TC_ENOTFOUND;
		snprintf(j->err, sizeof(j->err), "'%s' was removed meanwhile",
			 j->id);
	}
	if (rc == 0) {
		j->o->load_seconds = j->seconds;
		rc = tc__objs_insert(&s->objs, j->o, &o);
		if (rc == 0)
			j->o = NULL; /* joined the artifact (or freed) */
		else
			snprintf(j->err, sizeof(j->err), "out of memory");
	}
	if (rc == 0) {
		tc__gpu_tier_host_added(s->gpu, o);
		tc__log(TC_LOG_INFO,
			"made a host copy of %s from its replica on GPU %d: "
			"%llu bytes in %.3f s (%.2f GB/s), chunk digests "
			"checked",
			o->id, dev, (unsigned long long)o->table.total_bytes,
			j->seconds,
			j->seconds > 0 ? (double)o->table.total_bytes /
						 j->seconds / 1e9 :
					 0.0);
	} else {
		tc__log(TC_LOG_WARN, "cannot make a host copy of %s: %s", j->id,
			j->err[0] ? j->err : tc_strerror(rc));
	}
	tc__objs_unlease(&s->objs, j->src);
	tc__objs_fill_free(&s->objs, j->o); /* a failed copy's charge goes */
	tc__srv_finish(j->c, &j->r, rc, j->err, rerun, j);
	tc__free(j->body);
	tc__free(j);
}

int tc__srv_host_from_gpu(struct conn *c, struct req *r, struct tc__obj *src)
{
	struct server *s = c->srv;
	struct tc__gpu_replica *rep = ready_replica(src);
	size_t used = r->h.body_len - r->body.left;
	uint64_t bytes, extra;
	struct host_copy *j;
	int rc;

	if (!rep) {
		snprintf(c->err, sizeof(c->err),
			 "'%s' is held on a GPU only and its replica there is "
			 "not ready: attach it on that GPU",
			 src->id);
		return TC_ENOTSUP;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j || !(j->body = tc__malloc(r->h.body_len ? r->h.body_len : 1)) ||
	    !(j->o = tc__obj_new()) ||
	    tc__table_copy(&j->o->table, &src->table) < 0) {
		if (j) {
			tc__obj_free(j->o);
			tc__free(j->body);
		}
		tc__free(j);
		return -ENOMEM;
	}
	/* The handler read the body already: copy it from its start. */
	memcpy(j->body, r->body.p - used, r->h.body_len);
	j->o->policy = src->policy;
	snprintf(j->o->source, sizeof(j->o->source), "%s", src->source);
	bytes = tc__shm_round(src->table.total_bytes);
	extra = tc__table_cost(&src->table);
	/* src's GPU replica and src itself stay while the copy runs: an
	 * eviction for this charge must not take the source. */
	tc__gpu_replica_lease(s->gpu, rep);
	tc__objs_lease(&s->objs, src);
	rc = tc__srv_artifact_memory(s, j->o, bytes, extra, src->policy, c->err,
				     sizeof(c->err));
	if (rc < 0) {
		tc__objs_unlease(&s->objs, src);
		tc__gpu_replica_unlease(s->gpu, rep);
		tc__obj_free(j->o);
		tc__free(j->body);
		tc__free(j);
		return rc;
	}
	j->c = c;
	j->r = *r;
	j->s = s;
	j->src = src;
	j->rep = rep;
	snprintf(j->id, sizeof(j->id), "%s", src->id);
	j->nthreads = s->cfg->io_threads;
	j->t0_ns = tc__now_ns();
	j->job.run = host_copy_run;
	j->job.done = host_copy_done;
	tc__srv_defer(c);
	tc__jobs_submit(s->jobs, &j->job);
	return 0;
}
