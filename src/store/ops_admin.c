/*
 * ops_admin.c - the read-mostly verbs: HELLO (the handshake), STATUS,
 * LIST, INSPECT (large tables on a worker), RM, and PROGRESS (which only
 * the daemon sends).  Loop thread only.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/io.h"
#include "common/log.h"
#include "gpu_tier.h"
#include "xfer/jobs.h"
#include "xfer/loader.h"
#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"
#include "tcast/version.h"

#include "durable.h"
#include "spill.h"
#include "cluster.h"
#include "server_internal.h"

int on_hello(struct conn *c, struct req *r)
{
	uint32_t ver, pid;
	size_t off;
	int rc;

	if (tc__cur_read_u32(&r->body, &ver) < 0 ||
	    tc__cur_read_u32(&r->body, &pid) < 0)
		return TC_EPROTO;
	rc = tc__srv_read_str(c, r, "client name", c->name, sizeof(c->name));
	if (rc < 0)
		return rc;
	if ((rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	if (ver != TC_PROTO_VERSION) {
		snprintf(c->err, sizeof(c->err),
			 "client speaks protocol %u, daemon %u", ver,
			 TC_PROTO_VERSION);
		return TC_EVERSION;
	}
	c->hello = true;
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u32(&c->out, TC_PROTO_VERSION);
	tc__buf_put_u64(&c->out, c->srv->epoch);
	tc__buf_put_u32(&c->out, (uint32_t)getpid());
	tc__buf_put_str(&c->out, TC_VERSION_STRING);
	tc__srv_reply_end(c, off);
	return 0;
}

int on_status(struct conn *c, struct req *r)
{
	struct server *s = c->srv;
	char *gpu, *cfg;
	json_t *j, *g = NULL, *cj = NULL;
	int n = 0, rc = tc__srv_body_end(c, r);

	if (rc < 0)
		return rc;
	for (struct tc__obj *o = tc__objs_first(&s->objs); o;
	     o = tc__objs_next(o))
		n++;
	/* Built with jansson: the socket path may hold quotes or control
	 * characters, and the reply must stay valid JSON. */
	gpu = tc__gpu_tier_status_json(s->gpu);
	if (gpu)
		g = json_loads(gpu, 0, NULL);
	free(gpu);
	cfg = tc__config_json(s->cfg);
	if (cfg)
		cj = json_loads(cfg, 0, NULL);
	free(cfg);
	j = json_pack(
		"{s:s, s:i, s:I, s:s?, s:I, s:i, s:i, s:I, s:I, s:I, s:I, s:I, "
		"s:I, s:I, s:I, s:I, s:I, s:i, s:s, s:i, s:I, s:I, s:o, s:o, s:i, "
		"s:i, s:i}",
		"version", TC_VERSION_STRING, "pid", (int)getpid(), "epoch",
		(json_int_t)s->epoch, "socket", s->cfg->socket, "uptime_ms",
		(json_int_t)(tc__now_ms() - s->start_ms), "clients", s->nconns,
		"artifacts", n, "keys", (json_int_t)s->objs.keys.count,
		"host_used_bytes",
		(json_int_t)(s->objs.host.used - tc__srv_spare_charged(s)),
		"host_budget_bytes", (json_int_t)s->objs.host.budget,
		"evictions", (json_int_t)s->objs.host.evictions, "attaches",
		(json_int_t)s->n_attach, "imports", (json_int_t)s->n_import,
		"puts", (json_int_t)s->n_put, "puts_verified_by_pull",
		(json_int_t)s->n_put_verified, "gpu_puts_hashed_by_client",
		(json_int_t)s->n_put_gpu_client_hashed, "protocol_errors",
		(json_int_t)s->n_proto_err, "io_threads", s->cfg->io_threads,
		"io_engine", tc__io_engine_name(s->cfg->io_engine),
		"jobs_pending",
		tc__jobs_pending(s->jobs) + tc__jobs_pending(s->io_jobs),
		"host_spare_bytes", (json_int_t)(s->spare ? s->spare->size : 0),
		"gpu_attaches", (json_int_t)s->n_attach_gpu, "gpu",
		g ? g : json_null(), "config", cj ? cj : json_null(),
		"max_clients", s->max_clients, "max_clients_per_uid",
		s->max_per_uid, "max_clients_per_pid", s->max_per_pid);
	if (j) {
		json_int_t dn = 0, db = 0;

		/* Of host_used_bytes: FILLING replicas (imports, puts and
		 * restores still loading), not a spare being made. */
		uint64_t spare_filling = s->spare_rep.state ==
							 TC_REPLICA_FILLING ?
						 s->spare_rep.bytes :
						 0;

		uint64_t rb, rn;

		/* What the loaders read from source files, all imports
		 * together (shared reads counted once). */
		tc__load_counters(&rb, &rn);
		json_object_set_new(
			j, "loader",
			json_pack("{s:I, s:I, s:I, s:I}", "read_bytes",
				  (json_int_t)rb, "reads", (json_int_t)rn,
				  "imports_joined",
				  (json_int_t)s->n_import_joined,
				  "view_shared_bytes",
				  (json_int_t)s->n_view_shared_bytes));
		/* Whether segments get 2 MiB pages (common/io.h). */
		json_object_set_new(j, "host_huge_pages",
				    json_pack("{s:s, s:b}", "kernel",
					      tc__shm_huge_mode(), "used",
					      tc__shm_huge((size_t)1 << 30)));
		json_object_set_new(
			j, "host_filling_bytes",
			json_integer((json_int_t)(s->objs.host.filling_bytes -
						  spare_filling)));

		/* In memory but also on the shared disk: a stop keeps them
		 * (what `daemon stop` says it drops leaves them out). */
		for (struct tc__obj *o = tc__objs_first(&s->objs); o;
		     o = tc__objs_next(o))
			if (tc__durable_has(s->durable, o->id)) {
				dn++;
				db += (json_int_t)o->host.bytes;
			}
		json_object_set_new(j, "durable",
				    tc__durable_status_json(s->durable));
		json_object_set_new(j, "durable_artifacts", json_integer(dn));
		json_object_set_new(j, "durable_bytes", json_integer(db));
		json_object_set_new(j, "spill",
				    tc__spill_status_json(s->spill));
	}
	if (j && s->cluster) {
		char *cl = tc__cluster_status_json(s->cluster);
		json_t *clj = cl ? json_loads(cl, 0, NULL) : NULL;

		free(cl);
		if (clj)
			json_object_set_new(j, "cluster", clj);
	}
	tc__srv_reply_json(c, r, j ? json_dumps(j, JSON_COMPACT) : NULL);
	json_decref(j);
	return 0;
}

/* ----------------------------------------------------- read-only verbs */

int on_list(struct conn *c, struct req *r)
{
	struct server *s = c->srv;
	json_t *more, *spilled;
	int rc = tc__srv_body_end(c, r);

	if (rc < 0)
		return rc;
	more = tc__durable_list_json(s->durable, &s->objs, NULL);
	/* Spilled artifacts out of memory too (once: the shared disk's
	 * listing has those that are durable as well). */
	spilled = tc__durable_list_json(tc__spill_tier(s->spill), &s->objs,
					s->durable);
	json_array_extend(more, spilled);
	json_decref(spilled);
	tc__srv_reply_json(c, r,
			   tc__objs_list_json(&s->objs,
					      tc__srv_spare_charged(s), more));
	return 0;
}

/* INSPECT of a large artifact costs ~5 us and ~160 bytes per tensor: the
 * table half is built on a worker (the object leased meanwhile), and the
 * connection waits like for any job, so the loop serves others. */
struct inspect_job {
	struct tc__job job;
	struct conn *c;
	struct req r; /* header copy; body consumed */
	struct tc__obj *o;
	void *head;
	char *json;
};

static void inspect_run(struct tc__job *job)
{
	struct inspect_job *j = (struct inspect_job *)job;

	j->json = tc__obj_inspect_finish(j->head, j->o);
}

static int inspect_reply(struct conn *c, const struct req *r, void *arg)
{
	struct inspect_job *j = arg;

	tc__srv_reply_json(c, r, j->json);
	j->json = NULL; /* freed by the reply */
	return 0;
}

static void inspect_done(struct tc__job *job)
{
	struct inspect_job *j = (struct inspect_job *)job;

	tc__objs_unlease(&j->c->srv->objs, j->o);
	tc__srv_finish(j->c, &j->r, 0, NULL, inspect_reply, j);
	free(j->json); /* not sent: the connection closed */
	tc__free(j);
}

int on_inspect(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR];
	struct inspect_job *j;
	struct tc__obj *o;
	int rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return tc__srv_durable_inspect_miss(c, r, ref, rc);
	if (o->table.ntensors < 1024) {
		void *head = tc__objs_inspect_head(&c->srv->objs, o);

		tc__srv_durable_inspect(c->srv, o, head);
		tc__srv_reply_json(c, r, tc__obj_inspect_finish(head, o));
		return 0;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->head = tc__objs_inspect_head(&c->srv->objs, o);
	tc__srv_durable_inspect(c->srv, o, j->head);
	j->c = c;
	j->r = *r;
	j->o = o;
	tc__objs_lease(&c->srv->objs, o);
	j->job.run = inspect_run;
	j->job.done = inspect_done;
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0; /* the reply comes when the job is done */
}

int on_rm(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR];
	uint32_t flags = 0;
	int rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref));

	/* Flags are optional: clients before them send none. */
	if (rc == 0 && r->body.left && tc__cur_read_u32(&r->body, &flags) < 0)
		rc = TC_EPROTO;
	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	if (flags & ~TC_RM_KEEP_DISK) {
		snprintf(c->err, sizeof(c->err), "unknown RM flags %#x", flags);
		return TC_EINVAL;
	}
	rc = tc__srv_durable_rm(c, ref, flags);
	if (rc < 0)
		return rc;
	tc__log(TC_LOG_INFO, "pid %d removed '%s'", (int)c->pid, ref);
	tc__srv_reply_status(c, r, 0);
	return 0;
}

int on_progress(struct conn *c, struct req *r)
{
	snprintf(c->err, sizeof(c->err), "PROGRESS is sent by the daemon only");
	return TC_EPROTO;
}
