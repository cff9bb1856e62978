/*
 * server.c - connections, framing, fd passing and request handlers.
 *
 * Everything here runs on the loop thread.  Frames are parsed from a
 * per-connection input buffer; fds received with SCM_RIGHTS go to a small
 * per-connection queue and are taken by the frame that declares them.  A
 * stream socket delivers a frame's fds with its first byte, so when every
 * complete frame is handled and no partial frame is buffered, fds left in
 * the queue were sent with no frame to claim them: a protocol error.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/names.h"
#include "format/format.h"
#include "gpu_loader.h"
#include "gpu_tier.h"
#include "jobs.h"
#include "loader.h"
#include "metrics.h"
#include "net/ev.h"
#include "net/net.h"
#include "obj.h"
#include "proto/proto.h"
#include "server.h"
#include "tcast/errors.h"
#include "tcast/version.h"

#include "server_internal.h"

static void conn_close(struct conn *c, const char *why);
static void send_progress(struct conn *c, uint64_t now_ms);

/* ------------------------------------------------------------ replies */

/* Begin a reply frame with status 0; returns the header offset. */
size_t tc__srv_reply_begin(struct conn *c, const struct req *r)
{
	size_t off = tc__frame_begin(&c->out, r->h.type, TC_PF_REPLY,
				     r->h.req_id, 0);

	if (r->t0_ns)
		tc__metrics_request(r->h.type, tc__now_ns() - r->t0_ns);
	tc__buf_put_i32(&c->out, 0);
	return off;
}

void tc__srv_reply_end(struct conn *c, size_t off)
{
	tc__frame_finish(&c->out, off);
	if (c->out.oom)
		conn_close(c, "out of memory building a reply");
}

/*
 * Attach fds to the reply frame that starts at `off`.  The queue owns what
 * it sends: a borrowed fd (owned false) is duplicated here, because the
 * object it belongs to may be freed, and its number reused for another
 * client's file, by a later frame of this same connection (RELEASE+RM,
 * ABORT, UNBIND) before this reply leaves.  `owned` fds are taken as they
 * are.  Every queued fd is closed after its frame is sent or when the
 * connection ends; on failure nothing is taken.
 */
int tc__srv_reply_fds(struct conn *c, size_t off, const int *fds, int n,
		      bool owned)
{
	int mine[TC_PROTO_MAX_FDS];
	struct out_fds *o;

	if (n < 0 || n > TC_PROTO_MAX_FDS)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		mine[i] = owned ? fds[i] : fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
		if (mine[i] < 0) {
			int e = errno;

			while (i-- > 0)
				close(mine[i]);
			return -e;
		}
	}
	if (c->nofds == c->cap_ofds) {
		int cap = c->cap_ofds ? c->cap_ofds * 2 : 4;
		struct out_fds *p =
			tc__reallocarray(c->ofds, (size_t)cap, sizeof(*p));

		if (!p) {
			if (!owned)
				for (int i = 0; i < n; i++)
					close(mine[i]);
			return -ENOMEM;
		}
		c->ofds = p;
		c->cap_ofds = cap;
	}
	o = &c->ofds[c->nofds++];
	o->at = off;
	memcpy(o->fds, mine, (size_t)n * sizeof(int));
	o->n = n;
	/* Patch nfds in the already written header. */
	c->out.data[off + 20] = (uint8_t)n;
	return 0;
}

void tc__srv_reply_error(struct conn *c, const struct req *r, int rc)
{
	size_t off;

	if (!c->err[0])
		snprintf(c->err, sizeof(c->err), "%s", tc_strerror(rc));
	tc__log(TC_LOG_DEBUG, "%s from pid %d failed: %s: %s",
		tc__proto_name(r->h.type), (int)c->pid, tc_err_name(rc),
		c->err);
	tc__metrics_error(rc);
	if (r->t0_ns)
		tc__metrics_request(r->h.type, tc__now_ns() - r->t0_ns);
	off = tc__frame_begin(&c->out, r->h.type, TC_PF_REPLY, r->h.req_id, 0);
	tc__buf_put_i32(&c->out, rc);
	tc__buf_put_str(&c->out, c->err);
	tc__srv_reply_end(c, off);
}

static void reply_status(struct conn *c, const struct req *r, int rc)
{
	if (rc < 0)
		tc__srv_reply_error(c, r, rc);
	else
		tc__srv_reply_end(c, tc__srv_reply_begin(c, r));
}

static void reply_json(struct conn *c, const struct req *r, char *json)
{
	size_t off;

	if (!json) {
		tc__srv_reply_error(c, r, -ENOMEM);
		return;
	}
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_str(&c->out, json);
	tc__srv_reply_end(c, off);
	free(json);
}

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

/* ----------------------------------------------------------- handlers */

int tc__srv_read_str(struct conn *c, struct req *r, const char *what, char *dst,
		     size_t dstlen)
{
	const char *s;
	size_t n;
	int rc = tc__cur_read_str(&r->body, TC_PROTO_MAX_STR, &s, &n);

	if (rc < 0) {
		snprintf(c->err, sizeof(c->err), "%s: %s", what,
			 rc == TC_ELIMIT ? "too long" : "malformed string");
		return rc;
	}
	/* Every string a client sends (key, path, policy, client name)
	 * passes here: UTF-8, no control characters, no NUL inside. */
	rc = tc__name_check(what, s, n, dstlen - 1, TC_NAME_EMPTY_OK, c->err,
			    sizeof(c->err));
	if (rc < 0)
		return rc;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* Every byte of a body belongs to a field: bytes after the last one are a
 * malformed frame, refused before the request does anything. */
int tc__srv_body_end(struct conn *c, struct req *r)
{
	if (r->body.left == 0)
		return 0;
	snprintf(c->err, sizeof(c->err),
		 "%zu unexpected bytes after the %s body", r->body.left,
		 tc__proto_name(r->h.type));
	return TC_EPROTO;
}

static int on_hello(struct conn *c, struct req *r)
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

static int on_status(struct conn *c, struct req *r)
{
	struct server *s = c->srv;
	char *gpu, *cfg;
	json_t *j, *g = NULL, *cj = NULL;
	int n = 0, rc = tc__srv_body_end(c, r);

	if (rc < 0)
		return rc;
	for (struct tc__obj *o = s->objs.lru_head; o; o = o->lru_next)
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
		"s:I, s:I, s:I, s:i, s:s, s:i, s:I, s:I, s:o, s:o, s:i, s:i, s:i}",
		"version", TC_VERSION_STRING, "pid", (int)getpid(), "epoch",
		(json_int_t)s->epoch, "socket", s->cfg->socket, "uptime_ms",
		(json_int_t)(tc__now_ms() - s->start_ms), "clients", s->nconns,
		"artifacts", n, "keys", (json_int_t)s->objs.keys.count,
		"host_used_bytes",
		(json_int_t)(s->objs.used - s->spare_charged),
		"host_budget_bytes", (json_int_t)s->objs.budget, "evictions",
		(json_int_t)s->objs.evictions, "attaches",
		(json_int_t)s->n_attach, "imports", (json_int_t)s->n_import,
		"puts", (json_int_t)s->n_put, "protocol_errors",
		(json_int_t)s->n_proto_err, "io_threads", s->cfg->io_threads,
		"io_engine", tc__io_engine_name(s->cfg->io_engine),
		"jobs_pending",
		tc__jobs_pending(s->jobs) + tc__jobs_pending(s->io_jobs),
		"host_spare_bytes", (json_int_t)(s->spare ? s->spare->size : 0),
		"gpu_attaches", (json_int_t)s->n_attach_gpu, "gpu",
		g ? g : json_null(), "config", cj ? cj : json_null(),
		"max_clients", s->max_clients, "max_clients_per_uid",
		s->max_per_uid, "max_clients_per_pid", s->max_per_pid);
	reply_json(c, r, j ? json_dumps(j, JSON_COMPACT) : NULL);
	json_decref(j);
	return 0;
}

/* Publish `o` under `key` after insert; fills c->err on failure. */
static int publish_key(struct conn *c, struct tc__obj *o, const char *key,
		       uint32_t flags, uint64_t expect_gen, uint64_t *gen)
{
	*gen = 0;
	if (!key[0])
		return 0;
	return tc__objs_key_set(&c->srv->objs, key, o->id, flags & TC_RF_EXPECT,
				expect_gen, gen, c->err, sizeof(c->err));
}

/* Reply of IMPORT and SEAL: id, bytes, tensors, nanoseconds, deduped, gen. */
static void reply_created(struct conn *c, const struct req *r,
			  struct tc__obj *o, uint64_t ns, bool dedup,
			  uint64_t gen)
{
	size_t off = tc__srv_reply_begin(c, r);

	tc__buf_put_str(&c->out, o->id);
	tc__buf_put_u64(&c->out, o->table.total_bytes);
	tc__buf_put_u32(&c->out, o->table.ntensors);
	tc__buf_put_u64(&c->out, ns);
	tc__buf_put_u32(&c->out, dedup);
	tc__buf_put_u64(&c->out, gen);
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

	j->rc = tc__shm_spare_new(j->size, &j->seg);
}

static void spare_done(struct tc__job *job)
{
	struct spare_job *j = (struct spare_job *)job;
	struct server *s = j->s;

	s->spare_filling = false;
	if (j->rc == 0 && !s->spare && !s->stopping) {
		s->spare = j->seg; /* the charge now covers it */
	} else {
		s->spare_charged -= j->size;
		if (j->rc < 0)
			tc__log(TC_LOG_WARN,
				"cannot prepare a %llu-byte spare: %s",
				(unsigned long long)j->size,
				tc_strerror(j->rc));
		tc__shm_free(j->seg);
		tc__objs_unreserve(&s->objs, j->size);
	}
	tc__free(j);
}

/* Start allocating the next spare when the daemon is idle and the budget
 * has free room (a spare never evicts anything). */
static void spare_refill(struct server *s)
{
	struct spare_job *j;
	char err[256];
	uint64_t bytes = tc__shm_round(s->spare_target);

	/* Called every tick: a full budget must cost a comparison, not a
	 * failed reservation (which walks every artifact for its message). */
	if (!s->spare_target || s->spare || s->spare_filling || s->stopping ||
	    tc__jobs_pending(s->jobs) || bytes > s->objs.budget ||
	    s->objs.used > s->objs.budget - bytes)
		return;
	if (tc__objs_reserve(&s->objs, bytes, TC_POLICY_WARM, err,
			     sizeof(err)) < 0)
		return;
	j = tc__calloc(1, sizeof(*j));
	if (!j) {
		tc__objs_unreserve(&s->objs, bytes);
		return;
	}
	j->s = s;
	j->size = bytes;
	s->spare_charged += bytes;
	j->job.run = spare_run;
	j->job.done = spare_done;
	s->spare_filling = true;
	tc__jobs_submit(s->jobs, &j->job);
}

static void spare_drop(struct server *s)
{
	if (!s->spare)
		return;
	s->spare_charged -= s->spare->size;
	tc__objs_unreserve(&s->objs, s->spare->size);
	tc__shm_free(s->spare);
	s->spare = NULL;
}

/*
 * Reserve `bytes` (page-rounded) for a new artifact and give it memory:
 * the spare when it is big enough (its pages exist already), else a fresh
 * segment.  Returns 0, TC_ENOSPACE or -errno with `err` set.
 */
static int artifact_memory(struct server *s, uint64_t bytes, uint64_t extra,
			   enum tc__policy pol, struct tc__shm **out, char *err,
			   size_t errlen)
{
	struct tc__shm *seg = NULL;
	int rc;

	*out = NULL;
	if (s->spare && bytes <= s->spare->size) {
		seg = s->spare;
		s->spare = NULL;
		s->spare_charged -= seg->size;
		tc__objs_unreserve(&s->objs, seg->size);
	} else if (s->spare && s->objs.used + bytes + extra > s->objs.budget) {
		/* A spare too small for this request gives up its room
		 * before any artifact is evicted for it. */
		spare_drop(s);
	}
	/* The segment and the table's host memory (extra) together. */
	rc = tc__objs_reserve(&s->objs, bytes + extra, pol, err, errlen);
	if (rc < 0) {
		tc__shm_free(seg);
		return rc;
	}
	if (seg) {
		if (tc__shm_spare_take(seg, bytes) == 0) {
			*out = seg;
			return 0;
		}
		tc__shm_free(seg); /* fall back to a fresh segment */
	}
	rc = tc__shm_create("tcast-artifact", bytes, out);
	if (rc < 0) {
		tc__objs_unreserve(&s->objs, bytes + extra);
		snprintf(err, errlen, "cannot create a %llu-byte segment: %s",
			 (unsigned long long)bytes, tc_strerror(rc));
	}
	return rc;
}

/* ------------------------------------------------------------- import */

struct import_job {
	struct tc__job job;
	struct conn *c;
	struct req r; /* header copy; body consumed */
	int phase;    /* 1 = parse, 2 = load */
	int fd;	      /* the file, or the shard socket, the client passed */
	char **shard_names; /* TC_RF_SHARDS: owned, nshards of them */
	uint32_t nshards;
	char display[TC_PROTO_MAX_STR];
	char key[TC_KEY_MAX + 1];
	enum tc__policy policy;
	uint32_t flags;
	uint64_t expect_gen;
	struct tc__source *src;
	struct tc__obj *o;
	struct tc__digest *chunks;
	struct tc__load_progress prog;
	uint64_t total_bytes; /* for PROGRESS; set on the loop before phase 2 */
	uint64_t t0_ns;
	int io_threads;
	/* Straight to a GPU (TC_RF_GPU): the loader fills a new allocation
	 * that the tier adopts as the artifact's only replica. */
	bool gpu;
	uint8_t gpu_uuid[TC_GPU_UUID_BYTES];
	uint64_t host_charged;	 /* host budget reserved for j->o, until
				    tc__objs_insert takes it over */
	int gpu_dev;		 /* the daemon's ordinal, once charged */
	uint64_t gpu_charged;	 /* bytes charged to that GPU's budget */
	struct tc__gpu_mem gmem; /* the allocation while the job owns it */
	double gpu_seconds;
	struct tc__gpu_load_stats gpu_stats;
	int io_engine;
	bool gpu_copying; /* counted in tc__gpu_tier_copy_begin */
	int rc;
	char err[512];
};

static void import_free(struct import_job *j)
{
	if (j->gpu_copying)
		tc__gpu_tier_copy_end(j->c->srv->gpu);
	if (j->gpu_charged) {
		tc__gpu_release(&j->gmem);
		tc__gpu_tier_unreserve(j->c->srv->gpu, j->gpu_dev,
				       j->gpu_charged);
	}
	/* Every exit returns what the job reserved: a load that failed (a
	 * shard that shrank, a bad file, a GPU error, a cancel) leaves the
	 * budget as it found it. */
	if (j->host_charged)
		tc__objs_unreserve(&j->c->srv->objs, j->host_charged);
	if (j->fd >= 0)
		close(j->fd);
	for (uint32_t i = 0; i < j->nshards; i++)
		tc__free(j->shard_names[i]);
	tc__free(j->shard_names);
	tc__source_free(j->src);
	tc__obj_free(j->o);
	tc__free(j->chunks);
	tc__free(j);
}

/*
 * Receive the shard fds a client sends for a folder it resolved (on the
 * socket IMPORT carried: TC_IMPORT_FDS_PER_MSG per message, then EOF) and
 * open the source from them.  A client that stalls is given up on after
 * SHARD_TIMEOUT_MS per message; one that sends more or fewer fds than it
 * named is refused.
 */
#define SHARD_TIMEOUT_MS 10000

static int open_client_shards(struct import_job *j)
{
	int *fds = tc__calloc(j->nshards, sizeof(*fds)), rc = 0;
	uint32_t got = 0;

	if (!fds)
		return -ENOMEM;
	for (;;) {
		struct pollfd p = { j->fd, POLLIN, 0 };
		int batch[TC_MAX_FDS_PER_MSG], nb = 0;
		char byte[8];
		ssize_t n;

		if (poll(&p, 1, SHARD_TIMEOUT_MS) != 1) {
			snprintf(j->err, sizeof(j->err),
				 "'%s': the client sent %u of %u shards and "
				 "then nothing",
				 j->display, got, j->nshards);
			rc = TC_EPROTO;
			break;
		}
		n = tc__fdpass_recv(j->fd, byte, sizeof(byte), batch, &nb,
				    TC_MAX_FDS_PER_MSG);
		if (n < 0 && n != -EAGAIN && n != -EINTR) {
			snprintf(j->err, sizeof(j->err),
				 "'%s': receiving shards: %s", j->display,
				 tc_strerror((int)n));
			rc = TC_EPROTO;
			break;
		}
		if (n == 0 && nb == 0)
			break; /* EOF: all sent */
		for (int i = 0; i < nb; i++) {
			if (got < j->nshards)
				fds[got++] = batch[i];
			else {
				close(batch[i]);
				rc = TC_EPROTO;
			}
		}
		if (rc < 0) {
			snprintf(j->err, sizeof(j->err),
				 "'%s': the client sent more shards than the "
				 "%u it named",
				 j->display, j->nshards);
			break;
		}
	}
	if (rc == 0 && got != j->nshards) {
		snprintf(j->err, sizeof(j->err),
			 "'%s': the client named %u shards but sent %u",
			 j->display, j->nshards, got);
		rc = TC_EPROTO;
	}
	if (rc == 0)
		rc = tc__source_open_shards(fds,
					    (const char *const *)j->shard_names,
					    j->nshards, j->display, &j->src,
					    j->err, sizeof(j->err));
	for (uint32_t i = 0; i < got; i++)
		close(fds[i]);
	tc__free(fds);
	return rc;
}

static void import_run(struct tc__job *job)
{
	struct import_job *j = (struct import_job *)job;
	uint64_t n;

	if (j->phase == 1) {
		/* Tests: a read that never returns (a hung mount). */
		tc__failpoint_hang("import_hang", j->display);
		if (j->nshards)
			j->rc = open_client_shards(j);
		else
			j->rc = tc__source_open_fd(j->fd, j->display, &j->src,
						   j->err, sizeof(j->err));
		if (j->rc == 0) {
			char why[400];

			j->rc = tc__table_check_names(&j->src->table, why,
						      sizeof(why));
			if (j->rc < 0)
				snprintf(j->err, sizeof(j->err), "'%s': %s",
					 j->display, why);
		}
		if (j->rc == 0) {
			j->rc = tc__table_layout(&j->src->table);
			if (j->rc < 0)
				snprintf(j->err, sizeof(j->err),
					 "'%s': artifact too large",
					 j->display);
		}
		/* Load the driver here, off the loop: the loop then only
		 * lists devices. */
		if (j->rc == 0 && j->gpu)
			j->rc = tc__gpu_init(j->err, sizeof(j->err));
		return;
	}
	/* Phase 2: memory was reserved on the loop; fill and seal it. */
	n = tc__chunk_count(j->src->table.total_bytes);
	j->chunks = tc__calloc(n ? n : 1, sizeof(*j->chunks));
	if (!j->chunks) {
		j->rc = -ENOMEM;
		return;
	}
	if (j->gpu) {
		struct tc__gpu_load_opts lo = { .nthreads = j->io_threads,
						.depth = 2,
						.direct = -1,
						.stage_chunks = 1,
						.io = j->io_engine };
		struct tc__gpu_load_stats *st = &j->gpu_stats;
		uint64_t total = j->src->table.total_bytes;

		j->rc = tc__gpu_alloc(j->gpu_dev, j->gpu_charged, 0, &j->gmem,
				      j->err, sizeof(j->err));
		if (j->rc == 0)
			j->rc = tc__gpu_load_source(j->src, &j->gmem, &lo,
						    j->chunks, &j->prog, st,
						    j->err, sizeof(j->err));
		/* Clients see only what the artifact says: zero the tail. */
		if (j->rc == 0 && j->gmem.size > total)
			j->rc = tc__gpu_memset8(j->gpu_dev,
						j->gmem.dptr + total, 0,
						j->gmem.size - total, NULL,
						j->err, sizeof(j->err));
		if (j->rc < 0)
			return;
		j->gpu_seconds = st->seconds;
		j->o->table = j->src->table;
		tc__table_init(&j->src->table);
		j->rc = tc__obj_finish(j->o, j->chunks, n);
		return;
	}
	j->rc = tc__shm_map_rw(j->o->shm);
	if (j->rc < 0) {
		snprintf(j->err, sizeof(j->err), "cannot map segment: %s",
			 strerror(-j->rc));
		return;
	}
	j->rc = tc__load_source(j->src, j->o->shm->rw_map, j->io_threads,
				j->chunks, &j->prog, j->err, sizeof(j->err));
	if (j->rc < 0)
		return;
	j->rc = tc__shm_seal(j->o->shm);
	if (j->rc < 0) {
		snprintf(j->err, sizeof(j->err), "cannot seal segment: %s",
			 tc_strerror(j->rc));
		return;
	}
	/* The table moves into the artifact; the source keeps its files. */
	j->o->table = j->src->table;
	tc__table_init(&j->src->table);
	j->rc = tc__obj_finish(j->o, j->chunks, n);
}

static void import_done(struct tc__job *job);

static void import_fail(struct import_job *j, int rc, const char *msg)
{
	struct conn *c = j->c;

	if (c->progress_job == j)
		c->progress_job = NULL;
	c->jobs--;
	c->paused = false;
	if (!c->closing) {
		snprintf(c->err, sizeof(c->err), "%s",
			 msg && *msg ? msg : tc_strerror(rc));
		tc__srv_reply_error(c, &j->r, rc);
		tc__srv_conn_flush(c);
		tc__srv_conn_process(c);
	}
	import_free(j);
}

static void import_done(struct tc__job *job)
{
	struct import_job *j = (struct import_job *)job;
	struct conn *c = j->c;
	struct server *s = c->srv;
	struct tc__obj *o;
	uint64_t gen, ns;
	int rc;

	if (j->rc < 0) {
		import_fail(j, j->rc, j->err);
		return;
	}
	if (j->phase == 1) {
		uint64_t bytes = tc__shm_round(j->src->table.total_bytes);
		uint64_t extra = tc__table_cost(&j->src->table);

		if (j->src->table.ntensors > s->cfg->max_tensors) {
			snprintf(j->err, sizeof(j->err),
				 "'%s' has %u tensors; this daemon takes at "
				 "most %u per artifact (max_tensors)",
				 j->display, j->src->table.ntensors,
				 s->cfg->max_tensors);
			import_fail(j, TC_ELIMIT, j->err);
			return;
		}
		j->o = tc__obj_new();
		if (!j->o) {
			import_fail(j, -ENOMEM, "out of memory");
			return;
		}
		if (j->gpu) {
			/* Straight to a GPU: charge its budget, not host
			 * memory; the artifact has no host replica. */
			rc = tc__gpu_tier_open_now(s->gpu, j->err,
						   sizeof(j->err));
			if (rc == 0)
				rc = tc__gpu_tier_reserve_new(
					s->gpu, j->gpu_uuid,
					j->src->table.total_bytes, &j->gpu_dev,
					&j->gpu_charged, j->err,
					sizeof(j->err));
			if (rc < 0) {
				import_fail(j, rc, j->err);
				return;
			}
			bytes = 0;
		} else {
			rc = artifact_memory(s, bytes, extra, j->policy,
					     &j->o->shm, j->err,
					     sizeof(j->err));
			if (rc < 0) {
				import_fail(j, rc, j->err);
				return;
			}
			bytes += extra;
			/* the reservation: segment and table charge */
			j->host_charged = bytes;
		}
		j->o->mem_bytes = bytes;
		j->o->policy = j->policy;
		snprintf(j->o->source, sizeof(j->o->source), "import:%s",
			 j->display);
		j->total_bytes = j->src->table.total_bytes;
		j->phase = 2;
		if (j->gpu) {
			tc__gpu_tier_copy_begin(s->gpu);
			j->gpu_copying = true;
		}
		tc__jobs_submit(s->io_jobs, &j->job);
		/* The size is known now: tell a watching client at once. */
		if (c->progress_job == j && !c->closing) {
			c->progress_next_ms = 0;
			send_progress(c, tc__now_ms());
		}
		return;
	}
	/* Phase 2 finished: the artifact is complete and sealed. */
	if (c->progress_job == j)
		c->progress_job = NULL;
	ns = tc__now_ns() - j->t0_ns;
	j->o->load_seconds = (double)ns / 1e9;
	o = j->o;
	rc = tc__objs_insert(&s->objs, j->o, &o);
	if (rc < 0) {
		import_fail(j, rc, "out of memory");
		return;
	}
	bool dedup = o != j->o;

	j->o = NULL; /* owned by the table now (or freed as a duplicate) */
	j->host_charged = 0; /* and so is its charge */
	tc__gpu_tier_host_added(s->gpu, o);
	if (j->gpu) {
		/* The allocation becomes o's replica (or is dropped when the
		 * same content is already on that GPU): the job owns neither
		 * it nor its charge from here. */
		tc__gpu_tier_adopt(s->gpu, o, j->gpu_dev, &j->gmem,
				   j->gpu_charged, j->gpu_seconds);
		j->gpu_charged = 0;
	}
	s->n_import++;
	tc__metrics_path(j->gpu ? TC_MPATH_IMPORT_GPU : TC_MPATH_IMPORT_HOST,
			 o->table.total_bytes, ns);
	tc__log(TC_LOG_INFO,
		"imported '%s' as %s: %u tensors, %llu bytes in "
		"%.3f s%s",
		j->display, o->id, o->table.ntensors,
		(unsigned long long)o->table.total_bytes, (double)ns / 1e9,
		dedup ? " (already held)" : "");
	if (j->gpu) {
		const struct tc__gpu_load_stats *st = &j->gpu_stats;
		char why[96] = "";

		/* What the loader did, for whoever wonders why a load was
		 * slow: the engine, and how much bypassed the page cache. */
		if (st->uring_errno)
			snprintf(why, sizeof(why),
				 " (io_uring unavailable: %s)",
				 strerror(st->uring_errno));
		tc__log(TC_LOG_INFO,
			"'%s' to GPU %d: %.2f GB/s, read with %s%s, %llu bytes "
			"with O_DIRECT",
			j->display, j->gpu_dev,
			st->seconds > 0 ?
				(double)st->bytes / st->seconds / 1e9 :
				0.0,
			st->uring_bytes ? "io_uring" : "pread", why,
			(unsigned long long)st->direct_bytes);
	}
	c->jobs--;
	c->paused = false;
	if (!c->closing) {
		c->err[0] = '\0';
		rc = publish_key(c, o, j->key, j->flags, j->expect_gen, &gen);
		if (rc < 0) {
			/* The key moved while we loaded: what this import
			 * added goes again, so the failure leaves nothing. */
			if (!dedup)
				tc__objs_discard_new(&s->objs, o);
			tc__srv_reply_error(c, &j->r, rc);
		} else
			reply_created(c, &j->r, o, ns, dedup, gen);
		tc__srv_conn_flush(c);
		tc__srv_conn_process(c);
	}
	import_free(j);
}

/* TC_RF_SHARDS: u32 n, then n shard names (for messages only). */
static int read_shard_names(struct conn *c, struct req *r, struct import_job *j)
{
	uint32_t n;
	char name[TC_PROTO_MAX_STR];
	int rc;

	if (tc__cur_read_u32(&r->body, &n) < 0)
		return TC_EPROTO;
	if (n == 0 || n > TC_MAX_SHARDS) {
		snprintf(c->err, sizeof(c->err), "%u shards (1..%d)", n,
			 TC_MAX_SHARDS);
		return TC_ELIMIT;
	}
	/* Each name takes at least 4 bytes of the body: no allocation
	 * larger than what was received. */
	if ((size_t)n * 4 > r->body.left)
		return TC_EPROTO;
	j->shard_names = tc__calloc(n, sizeof(*j->shard_names));
	if (!j->shard_names)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		rc = tc__srv_read_str(c, r, "shard name", name, sizeof(name));
		if (rc < 0)
			return rc;
		j->shard_names[i] = tc__strdup(name);
		if (!j->shard_names[i])
			return -ENOMEM;
		j->nshards = i + 1;
	}
	return 0;
}

static int on_import(struct conn *c, struct req *r)
{
	struct import_job *j;
	char policy[32];
	struct stat st;
	int rc;

	if (r->nfds != 1) {
		snprintf(c->err, sizeof(c->err),
			 "IMPORT needs exactly one fd (the file or folder)");
		return TC_EPROTO;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fd = -1;
	if ((rc = tc__srv_read_str(c, r, "path", j->display,
				   sizeof(j->display))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "key", j->key, sizeof(j->key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "policy", policy, sizeof(policy))) < 0)
		goto out_free;
	if (tc__cur_read_u32(&r->body, &j->flags) < 0 ||
	    tc__cur_read_u64(&r->body, &j->expect_gen) < 0) {
		rc = TC_EPROTO;
		goto out_free;
	}
	if (j->flags & TC_RF_GPU) {
		char uuid[TC_PROTO_MAX_STR];
		uint32_t dev;

		if (tc__cur_read_u32(&r->body, &dev) < 0) {
			rc = TC_EPROTO;
			goto out_free;
		}
		rc = tc__srv_read_str(c, r, "GPU uuid", uuid, sizeof(uuid));
		if (rc < 0)
			goto out_free;
		if (tc__gpu_uuid_parse(uuid, j->gpu_uuid) < 0) {
			snprintf(c->err, sizeof(c->err), "bad GPU uuid '%s'",
				 uuid);
			rc = TC_EINVAL;
			goto out_free;
		}
		j->gpu = true;
	}
	if (j->flags & TC_RF_SHARDS) {
		rc = read_shard_names(c, r, j);
		if (rc < 0)
			goto out_free;
	}
	if ((rc = tc__srv_body_end(c, r)) < 0)
		goto out_free;
	rc = tc__policy_parse(policy, &j->policy, c->err, sizeof(c->err));
	if (rc < 0)
		goto out_free;
	/* A key the import could never publish under (a bad name, a CAS
	 * generation that does not match) fails now: before anything is
	 * read, reserved or evicted.  publish_key checks again at the end. */
	rc = tc__objs_key_precheck(&c->srv->objs, j->key,
				   j->flags & TC_RF_EXPECT, j->expect_gen,
				   c->err, sizeof(c->err));
	if (rc < 0)
		goto out_free;
	/* Only a regular file, or for a folder the socket its shards come
	 * on; a FIFO or device would block a worker or read forever, and a
	 * folder fd would have us open paths with our rights, not the
	 * client's. */
	if (fstat(r->fds[0], &st) < 0 ||
	    !((S_ISREG(st.st_mode) && !(j->flags & TC_RF_SHARDS)) ||
	      (S_ISSOCK(st.st_mode) && (j->flags & TC_RF_SHARDS)))) {
		snprintf(c->err, sizeof(c->err),
			 S_ISDIR(st.st_mode) ?
				 "'%s' is a folder: the client resolves it "
				 "and sends its shards (TC_RF_SHARDS)" :
				 "'%s' is not a regular file (or, with "
				 "TC_RF_SHARDS, a socket)",
			 j->display);
		rc = TC_EINVAL;
		goto out_free;
	}
	j->fd = r->fds[0];
	r->fds[0] = -1;
	j->c = c;
	j->r = *r;
	j->phase = 1;
	j->io_threads = c->srv->cfg->io_threads;
	j->io_engine = c->srv->cfg->io_engine;
	j->t0_ns = tc__now_ns();
	j->job.run = import_run;
	j->job.done = import_done;
	c->jobs++;
	c->paused = true;
	if (j->flags & TC_RF_PROGRESS) {
		c->progress_job = j;
		c->progress_req = r->h.req_id;
		c->progress_next_ms = tc__now_ms() + PROGRESS_MS;
	}
	tc__jobs_submit(c->srv->io_jobs, &j->job);
	return 0; /* the reply comes when the job is done */

out_free:
	for (uint32_t i = 0; i < j->nshards; i++)
		tc__free(j->shard_names[i]);
	tc__free(j->shard_names);
	tc__free(j);
	return rc;
}

static void send_progress(struct conn *c, uint64_t now_ms)
{
	struct import_job *j = c->progress_job;
	size_t off;

	if (!j || j->phase != 2 || now_ms < c->progress_next_ms)
		return;
	c->progress_next_ms = now_ms + PROGRESS_MS;
	off = tc__frame_begin(&c->out, TC_MSG_PROGRESS, 0, c->progress_req, 0);
	tc__buf_put_u64(&c->out, atomic_load(&j->prog.done_bytes));
	/* Not j->src->table: the worker moves it into the artifact. */
	tc__buf_put_u64(&c->out, j->total_bytes);
	tc__srv_reply_end(c, off);
	tc__srv_conn_flush(c);
}

static int on_progress(struct conn *c, struct req *r)
{
	snprintf(c->err, sizeof(c->err), "PROGRESS is sent by the daemon only");
	return TC_EPROTO;
}

/* ---------------------------------------------------------------- put */

static struct pending *pending_take(struct conn *c, uint64_t handle);
static void pending_free(struct conn *c, struct pending *p);

static int on_create(struct conn *c, struct req *r)
{
	struct pending *p;
	char policy[32];
	enum tc__policy pol;
	uint64_t bytes, extra;
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
	rc = tc__proto_get_table(&r->body, 0, &p->o->table, c->err,
				 sizeof(c->err));
	if (rc < 0)
		goto out_free;
	/* Names are checked here, at put, not first at export (where a
	 * tensor called __metadata__ used to be refused) or in JSON (where
	 * bad UTF-8 used to vanish). */
	rc = tc__table_check_names(&p->o->table, c->err, sizeof(c->err));
	if (rc < 0)
		goto out_free;
	if ((rc = tc__srv_read_str(c, r, "key", p->key, sizeof(p->key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "policy", policy, sizeof(policy))) < 0)
		goto out_free;
	if (tc__cur_read_u32(&r->body, &p->flags) < 0 ||
	    tc__cur_read_u64(&r->body, &p->expect_gen) < 0) {
		rc = TC_EPROTO;
		goto out_free;
	}
	if ((rc = tc__srv_body_end(c, r)) < 0)
		goto out_free;
	rc = tc__policy_parse(policy, &pol, c->err, sizeof(c->err));
	if (rc < 0)
		goto out_free;
	rc = tc__objs_key_precheck(&c->srv->objs, p->key,
				   p->flags & TC_RF_EXPECT, p->expect_gen,
				   c->err, sizeof(c->err));
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
	rc = artifact_memory(c->srv, bytes, extra, pol, &p->o->shm, c->err,
			     sizeof(c->err));
	if (rc < 0)
		goto out_free;
	p->o->mem_bytes = bytes + extra;
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
	tc__obj_free(p->o);
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

static void pending_free(struct conn *c, struct pending *p)
{
	tc__objs_unreserve(&c->srv->objs, p->o->mem_bytes);
	tc__obj_free(p->o);
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
	int rc;
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
	j->rc = tc__hash_chunks(o->shm->map, o->table.total_bytes,
				j->io_threads, j->chunks);
	if (j->rc == 0)
		j->rc = tc__obj_finish(o, j->chunks, j->nchunks);
}

static void seal_done(struct tc__job *job)
{
	struct seal_job *j = (struct seal_job *)job;
	struct conn *c = j->c;
	struct pending *p = j->p;
	struct tc__obj *o = NULL;
	uint64_t gen, ns = tc__now_ns() - p->t0_ns;
	int rc = j->rc;

	c->jobs--;
	c->paused = false;
	if (rc == 0) {
		p->o->load_seconds = (double)ns / 1e9;
		rc = tc__objs_insert(&c->srv->objs, p->o, &o);
	}
	if (rc < 0) {
		pending_free(c, p);
	} else {
		bool dedup = o != p->o;

		c->srv->n_put++;
		tc__metrics_path(TC_MPATH_PUT, o->table.total_bytes, ns);
		tc__gpu_tier_host_added(c->srv->gpu, o);
		if (!c->closing) {
			c->err[0] = '\0';
			rc = publish_key(c, o, p->key, p->flags, p->expect_gen,
					 &gen);
			if (rc == 0)
				reply_created(c, &j->r, o, ns, dedup, gen);
			else if (!dedup)
				tc__objs_discard_new(&c->srv->objs, o);
		}
		tc__free(p);
	}
	if (!c->closing) {
		if (rc < 0)
			tc__srv_reply_error(c, &j->r, rc);
		tc__srv_conn_flush(c);
		tc__srv_conn_process(c);
	}
	tc__free(j->chunks);
	tc__free(j);
}

static int on_seal(struct conn *c, struct req *r)
{
	struct seal_job *j;
	struct pending *p;
	int rc;

	p = pending_of_req(c, r, &rc);
	if (!p)
		return rc;
	rc = tc__shm_seal(p->o->shm);
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
	j->io_threads = c->srv->cfg->io_threads;
	j->job.run = seal_run;
	j->job.done = seal_done;
	c->jobs++;
	c->paused = true;
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0; /* the reply comes when the job is done */
}

static int on_abort(struct conn *c, struct req *r)
{
	struct pending *p;
	int rc;

	p = pending_of_req(c, r, &rc);
	if (!p)
		return rc;
	pending_free(c, p);
	reply_status(c, r, 0);
	return 0;
}

/* ------------------------------------------------------- attach/release */

static int on_attach(struct conn *c, struct req *r)
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
		return rc;
	if (!o->shm) {
		snprintf(c->err, sizeof(c->err),
			 "'%s' is held on a GPU only (it was imported straight "
			 "to one): attach it on that GPU, or import it without "
			 "a device for host memory",
			 o->id);
		return TC_ENOTSUP;
	}
	if (lease_add(c, o, NULL) < 0)
		return -ENOMEM;
	c->srv->n_attach++;
	tc__metrics_path(TC_MPATH_ATTACH_HOST, o->table.total_bytes,
			 tc__now_ns() - r->t0_ns);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put(&c->out, o->attach_body.data, o->attach_body.len);
	if (tc__srv_reply_fds(c, off, &o->shm->ro_fd, 1, false) < 0) {
		/* The lease would be held with no reply to release it. */
		c->out.len = off;
		lease_drop(c, lease_find(c, o->id));
		return -ENOMEM;
	}
	tc__srv_reply_end(c, off);
	return 0;
}

static int on_release(struct conn *c, struct req *r)
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
	struct req r; /* header copy; body consumed */
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

static void attach_gpu_done(void *arg, struct tc__obj *o,
			    struct tc__gpu_replica *rep, int rc,
			    const char *err)
{
	struct gpu_wait *w = arg;
	struct conn *c = w->c;

	c->jobs--;
	c->paused = false;
	if (!c->closing) {
		c->err[0] = '\0';
		if (rc == 0)
			rc = reply_gpu(c, &w->r, o, rep);
		else
			snprintf(c->err, sizeof(c->err), "%s",
				 err && *err ? err : tc_strerror(rc));
		if (rc < 0)
			tc__srv_reply_error(c, &w->r, rc);
		tc__srv_conn_flush(c);
		tc__srv_conn_process(c);
	}
	tc__free(w);
}

static int on_attach_gpu(struct conn *c, struct req *r)
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
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return rc;
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
		c->jobs++;
		c->paused = true;
		return 0;
	}
	tc__free(w);
	if (rc < 0)
		return rc;
	return reply_gpu(c, r, o, rep);
}

static int on_release_gpu(struct conn *c, struct req *r)
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

/* ----------------------------------------------------- read-only verbs */

static int on_list(struct conn *c, struct req *r)
{
	int rc = tc__srv_body_end(c, r);

	if (rc < 0)
		return rc;
	reply_json(c, r,
		   tc__objs_list_json(&c->srv->objs, c->srv->spare_charged));
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

static void inspect_done(struct tc__job *job)
{
	struct inspect_job *j = (struct inspect_job *)job;
	struct conn *c = j->c;

	c->jobs--;
	c->paused = false;
	tc__objs_unlease(&c->srv->objs, j->o);
	if (!c->closing) {
		c->err[0] = '\0';
		reply_json(c, &j->r, j->json);
		tc__srv_conn_flush(c);
		tc__srv_conn_process(c);
	} else {
		free(j->json);
	}
	tc__free(j);
}

static int on_inspect(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR];
	struct inspect_job *j;
	struct tc__obj *o;
	int rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	o = tc__objs_resolve(&c->srv->objs, ref, c->err, sizeof(c->err), &rc);
	if (!o)
		return rc;
	if (o->table.ntensors < 1024) {
		reply_json(c, r, tc__objs_inspect_json(&c->srv->objs, o));
		return 0;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->head = tc__objs_inspect_head(&c->srv->objs, o);
	j->c = c;
	j->r = *r;
	j->o = o;
	tc__objs_lease(&c->srv->objs, o);
	j->job.run = inspect_run;
	j->job.done = inspect_done;
	c->jobs++;
	c->paused = true;
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0; /* the reply comes when the job is done */
}

static int on_rm(struct conn *c, struct req *r)
{
	char ref[TC_PROTO_MAX_STR];
	int rc = tc__srv_read_str(c, r, "reference", ref, sizeof(ref));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	rc = tc__objs_rm(&c->srv->objs, ref, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	tc__log(TC_LOG_INFO, "pid %d removed '%s'", (int)c->pid, ref);
	reply_status(c, r, 0);
	return 0;
}

static int on_key_set(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1], id[TC_ID_LEN + 1];
	uint32_t flags;
	uint64_t expect, gen;
	size_t off;
	int rc;

	if ((rc = tc__srv_read_str(c, r, "key", key, sizeof(key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "artifact id", id, sizeof(id))) < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &flags) < 0 ||
	    tc__cur_read_u64(&r->body, &expect) < 0 ||
	    tc__srv_body_end(c, r) < 0)
		return TC_EPROTO;
	rc = tc__objs_key_set(&c->srv->objs, key, id, flags & TC_RF_EXPECT,
			      expect, &gen, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, gen);
	tc__srv_reply_end(c, off);
	return 0;
}

static int on_keys(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1];
	char *json;
	int rc = tc__srv_read_str(c, r, "key", key, sizeof(key));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	json = tc__objs_keys_json(&c->srv->objs, key, &rc, c->err,
				  sizeof(c->err));
	if (rc < 0)
		return rc;
	reply_json(c, r, json);
	return 0;
}

/* ----------------------------------------------------------- dispatch */

#define MSG_NOAUTH  0x1
#define MSG_FDS_IN  0x2
#define MSG_FDS_OUT 0x4
#define MSG_NOREPLY 0x8

typedef int handler_fn(struct conn *c, struct req *r);

static const struct {
	handler_fn *fn;
	int flags;
} handlers[TC_MSG__MAX] = {
#define MSG(name, id, handler, flags) [id] = { handler, flags },
#include "proto/msgs.def"
#undef MSG
};

/*
 * Handle one complete frame.  A handler returns 0 when it has replied, will
 * reply when its job is done, or owes no reply (MSG_NOREPLY); or a negative
 * code, which is sent back as the reply.  dispatch returns 0 to go on, or a
 * negative code after which the connection is closed (protocol error).
 */
static int dispatch(struct conn *c, struct req *r)
{
	int rc, fl = handlers[r->h.type].flags;

	c->err[0] = '\0';
	if (r->h.flags & TC_PF_REPLY) {
		snprintf(c->err, sizeof(c->err), "client sent a reply frame");
		rc = TC_EPROTO;
	} else if (!c->hello && !(fl & MSG_NOAUTH)) {
		snprintf(c->err, sizeof(c->err), "%s before HELLO",
			 tc__proto_name(r->h.type));
		rc = TC_EPROTO;
	} else if (r->nfds && !(fl & MSG_FDS_IN)) {
		snprintf(c->err, sizeof(c->err), "%s carries unexpected fds",
			 tc__proto_name(r->h.type));
		rc = TC_EPROTO;
	} else {
		rc = handlers[r->h.type].fn(c, r);
		if (rc >= 0)
			return 0;
	}
	if (!(fl & MSG_NOREPLY))
		tc__srv_reply_error(c, r, rc);
	/* A malformed frame means we no longer trust the stream. */
	return rc == TC_EPROTO || rc == TC_EVERSION ? rc : 0;
}

/*
 * A header that cannot be decoded (bad magic, version, type, flags or
 * length): say why in an error reply, then close, as docs/protocol.md
 * promises.  The reply echoes the header's type and req_id when the magic
 * says they are ours to read; else it is a HELLO reply with req_id 0 (a
 * connection-level error, see docs/protocol.md).
 */
static void header_error(struct conn *c, const uint8_t *in, int rc,
			 const char *why)
{
	uint32_t magic = (uint32_t)in[0] | (uint32_t)in[1] << 8 |
			 (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
	uint16_t type = (uint16_t)(in[6] | in[7] << 8);
	uint32_t req = 0;
	size_t off;

	if (magic == TC_PROTO_MAGIC) {
		req = (uint32_t)in[12] | (uint32_t)in[13] << 8 |
		      (uint32_t)in[14] << 16 | (uint32_t)in[15] << 24;
		if (type == 0 || type >= TC_MSG__MAX || !handlers[type].fn)
			type = TC_MSG_HELLO;
	} else {
		type = TC_MSG_HELLO;
	}
	off = tc__frame_begin(&c->out, type, TC_PF_REPLY, req, 0);
	tc__buf_put_i32(&c->out, rc);
	tc__buf_put_str(&c->out, why);
	tc__frame_finish(&c->out, off);
	tc__srv_conn_flush(c);
	conn_close(c, why);
}

/* Parse and dispatch every complete frame in the input buffer. */
void tc__srv_conn_process(struct conn *c)
{
	int budget = FRAMES_PER_TURN;
	size_t body_bytes = 0; /* decoding a big table costs per byte */
	char err[256];

	c->backlog = false;
	while (!c->closing && !c->paused) {
		size_t avail = c->in_len - c->in_off;
		struct req r;
		int rc;

		if (avail < TC_FRAME_HDR)
			break;
		rc = tc__frame_decode(c->in + c->in_off, &r.h, err,
				      sizeof(err));
		if (rc < 0) {
			c->srv->n_proto_err++;
			header_error(c, c->in + c->in_off, rc, err);
			return;
		}
		if (avail < TC_FRAME_HDR + (size_t)r.h.body_len)
			break;
		/* Before the request runs: this turn's share is spent, or
		 * the client has not read what it was sent.  Go on in a
		 * later turn (before_sleep), or once the queue drains. */
		if (budget == 0 || body_bytes >= BODY_BYTES_PER_TURN ||
		    c->out.len - c->out_off > OUT_PAUSE_BYTES ||
		    c->nofds >= OUT_PAUSE_FDS) {
			c->backlog = true;
			break;
		}
		budget--;
		body_bytes += r.h.body_len;
		if (r.h.nfds > c->nfdq) {
			c->srv->n_proto_err++;
			conn_close(c, "frame declares fds that did not arrive");
			return;
		}
		r.nfds = r.h.nfds;
		memcpy(r.fds, c->fdq, sizeof(int) * (size_t)r.nfds);
		c->nfdq -= r.nfds;
		memmove(c->fdq, c->fdq + r.nfds, sizeof(int) * (size_t)c->nfdq);
		tc__cur_init(&r.body, c->in + c->in_off + TC_FRAME_HDR,
			     r.h.body_len);
		c->in_off += TC_FRAME_HDR + r.h.body_len;
		r.t0_ns = tc__now_ns();
		rc = dispatch(c, &r);
		for (int i = 0; i < r.nfds; i++)
			if (r.fds[i] >= 0)
				close(r.fds[i]);
		if (rc < 0) {
			/* Say why before hanging up, if the socket takes it. */
			c->srv->n_proto_err++;
			tc__srv_conn_flush(c);
			conn_close(c, c->err[0] ? c->err : tc_strerror(rc));
			return;
		}
	}
	if (c->in_off == c->in_len) {
		c->in_off = c->in_len = 0;
		if (c->nfdq && !c->paused) {
			c->srv->n_proto_err++;
			tc__srv_conn_flush(c);
			conn_close(c, "fds sent with no frame to claim them");
			return;
		}
	}
	tc__srv_conn_flush(c);
}

/* --------------------------------------------------------------- I/O */

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask);

static void conn_update_events(struct conn *c)
{
	int mask = 0;

	if (c->closing)
		return;
	/* Read no more while frames already read wait their turn or the
	 * client leaves its replies unread: the input stays bounded. */
	if (!c->paused && !c->backlog &&
	    c->out.len - c->out_off <= OUT_PAUSE_BYTES)
		mask |= TC_EV_READ;
	if (c->out_off < c->out.len)
		mask |= TC_EV_WRITE;
	if (tc__ev_mask(c->srv->ev, c->fd) != mask)
		tc__ev_add(c->srv->ev, c->fd, mask, on_conn_io, c);
}

void tc__srv_conn_flush(struct conn *c)
{
	while (!c->closing && c->out_off < c->out.len) {
		size_t end = c->out.len;
		int *fds = NULL, nfds = 0;
		struct iovec iov;
		ssize_t n;

		/* fds travel with the first byte of their frame, so a send
		 * stops before the next frame that carries fds. */
		if (c->nofds && c->ofds[0].at == c->out_off) {
			fds = c->ofds[0].fds;
			nfds = c->ofds[0].n;
			if (c->nofds > 1)
				end = c->ofds[1].at;
		} else if (c->nofds) {
			end = c->ofds[0].at;
		}
		iov.iov_base = c->out.data + c->out_off;
		iov.iov_len = end - c->out_off;
		n = tc__fdpass_send(c->fd, &iov, 1, fds, nfds);
		if (n < 0) {
			if (n == -EAGAIN)
				break;
			tc__log(TC_LOG_DEBUG, "send to pid %d: %s", (int)c->pid,
				strerror((int)-n));
			conn_close(c, "send failed");
			return;
		}
		if (n > 0)
			c->out_progress_ms = tc__now_ms();
		if (nfds) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]); /* the queue's dups */
			memmove(c->ofds, c->ofds + 1,
				sizeof(*c->ofds) * (size_t)(--c->nofds));
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len) {
		c->out_off = c->out.len = 0;
		c->out_progress_ms = 0;
		/* Give back a big buffer once drained. */
		if (c->out.cap > ((size_t)1 << 20))
			tc__buf_release(&c->out);
	} else if (c->out.len - c->out_off > c->srv->cfg->max_outbuf) {
		conn_close(c, "client does not read its replies");
		return;
	} else if (!c->out_progress_ms) {
		c->out_progress_ms = tc__now_ms(); /* waiting from now */
	}
	conn_update_events(c);
}

static void conn_read(struct conn *c)
{
	int fds[TC_MAX_FDS_PER_MSG], nfds, rc;
	ssize_t n;

	/* Grows only as bytes really arrive, never from a declared
	 * length. */
	rc = tc__rxbuf_room(&c->in, &c->in_cap, &c->in_off, &c->in_len,
			    READ_CHUNK,
			    (size_t)TC_PROTO_MAX_BODY + 2 * READ_CHUNK);
	if (rc < 0) {
		conn_close(c, rc == -EMSGSIZE ? "frame too large" :
						"out of memory");
		return;
	}
	n = tc__fdpass_recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len,
			    fds, &nfds, TC_MAX_FDS_PER_MSG);
	if (n == -EAGAIN)
		return;
	if (n == TC_EPROTO) {
		conn_close(c, "too many or truncated fds");
		return;
	}
	if (n <= 0) {
		conn_close(c, n == 0 ? NULL : "receive failed");
		return;
	}
	if (c->nfdq + nfds > FDQ_MAX) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		conn_close(c, "too many fds in flight");
		return;
	}
	memcpy(c->fdq + c->nfdq, fds, sizeof(int) * (size_t)nfds);
	c->nfdq += nfds;
	c->in_len += (size_t)n;
	c->last_rx_ms = tc__now_ms();
	tc__srv_conn_process(c);
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct conn *c = arg;

	if (c->closing)
		return;
	if (mask & TC_EV_WRITE)
		tc__srv_conn_flush(c);
	if ((mask & TC_EV_READ) && !c->closing && !c->paused)
		conn_read(c);
}

static void conn_close(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	if (why)
		tc__log(TC_LOG_INFO, "closing connection of pid %d: %s",
			(int)c->pid, why);
	c->closing = true;
	tc__ev_del(c->srv->ev, c->fd);
	shutdown(c->fd, SHUT_RDWR);
}

/* Free a closed connection: its leases, unsealed puts, queued fds. */
static void conn_free(struct conn *c)
{
	struct server *s = c->srv;

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
	while (c->pending) {
		struct pending *p = c->pending;

		c->pending = p->next;
		pending_free(c, p);
	}
	tc__srv_bindings_free(c);
	for (int i = 0; i < c->nfdq; i++)
		close(c->fdq[i]);
	for (int i = 0; i < c->nofds; i++)
		for (int k = 0; k < c->ofds[i].n; k++)
			close(c->ofds[i].fds[k]);
	close(c->fd);
	tc__free(c->in);
	tc__free(c->ofds);
	tc__free(c->leases);
	tc__buf_release(&c->out);
	s->nconns--;
	tc__free(c);
}

/* ------------------------------------------------------------- accept */

/*
 * Turn a connection away with a reason it can show: a HELLO reply with
 * req_id 0 (a connection-level error, docs/protocol.md), then close.  What
 * the client already sent is read and dropped first (fds closed), so the
 * close does not reset the connection before the client reads the reply.
 */
static void refuse(int fd, int rc, const char *fmt, ...)
{
	struct tc__buf b = TC_BUF_INIT;
	char msg[256];
	va_list ap;
	size_t off;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	off = tc__frame_begin(&b, TC_MSG_HELLO, TC_PF_REPLY, 0, 0);
	tc__buf_put_i32(&b, rc);
	tc__buf_put_str(&b, msg);
	tc__frame_finish(&b, off);
	if (!b.oom &&
	    send(fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* The client is gone or not reading: nothing to tell. */
	}
	tc__buf_release(&b);
	shutdown(fd, SHUT_WR);
	for (int i = 0; i < 4; i++) {
		uint8_t junk[4096];
		int fds[TC_MAX_FDS_PER_MSG], nfds = 0;
		struct iovec iov = { junk, sizeof(junk) };
		ssize_t n = tc__fdpass_recv(fd, iov.iov_base, iov.iov_len, fds,
					    &nfds, TC_MAX_FDS_PER_MSG);

		for (int k = 0; k < nfds; k++)
			close(fds[k]);
		if (n <= 0)
			break;
	}
	close(fd);
}

/* Close a connection that holds nothing, telling the client why: a
 * connection-level error (req_id 0) its next call returns. */
static void conn_close_told(struct conn *c, const char *why)
{
	size_t off = tc__frame_begin(&c->out, TC_MSG_HELLO, TC_PF_REPLY, 0, 0);

	tc__buf_put_i32(&c->out, TC_EBUSY);
	tc__buf_put_str(&c->out, why);
	tc__frame_finish(&c->out, off);
	tc__srv_conn_flush(c);
	conn_close(c, why);
}

/* Holds nothing the client could lose: no lease, put, binding, job or
 * unsent reply. */
static bool conn_empty(const struct conn *c)
{
	return !c->closing && !c->nleases && !c->npending && !c->bindings &&
	       !c->jobs && c->out_off == c->out.len;
}

/*
 * Every slot (or uid's share, uid != -1) is taken: close the connection
 * that holds nothing and has been quiet longest (at least
 * EVICT_MIN_IDLE_MS), so idle connections cannot lock a new client out.
 * Returns whether one was closed.
 */
static bool evict_idle(struct server *s, long uid, long pid, uint64_t now)
{
	struct conn *victim = NULL;

	for (struct conn *c = s->conns; c; c = c->next) {
		if ((uid >= 0 && c->uid != (uid_t)uid) ||
		    (pid >= 0 && c->pid != (pid_t)pid) || !conn_empty(c) ||
		    now - c->last_rx_ms < EVICT_MIN_IDLE_MS)
			continue;
		if (!victim || c->last_rx_ms < victim->last_rx_ms)
			victim = c;
	}
	if (!victim)
		return false;
	conn_close_told(victim, "the daemon closed this idle connection: its "
				"slot went to a new client (reconnect)");
	return true;
}

/* Live (not closing) connections, all or of one uid or pid. */
static int conns_live(const struct server *s, long uid, long pid)
{
	int n = 0;

	for (const struct conn *c = s->conns; c; c = c->next)
		if (!c->closing && (uid < 0 || c->uid == (uid_t)uid) &&
		    (pid < 0 || c->pid == (pid_t)pid))
			n++;
	return n;
}

/*
 * accept failed with EMFILE/ENFILE: the pending connection would wake the
 * loop again at once (a busy loop).  Spend the reserve fd to accept it and
 * turn it away, then take the reserve back; without a reserve, stop
 * accepting for a moment (on_tick resumes).
 */
static void accept_shed(struct server *s, int err)
{
	static struct tc__ratelimit rl;
	int fd;

	if (s->reserve_fd >= 0) {
		close(s->reserve_fd);
		s->reserve_fd = -1;
		fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			refuse(fd, TC_EBUSY,
			       "the daemon is out of file descriptors (%s); "
			       "try again later",
			       strerror(err));
		s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	tc__log_rl(&rl, TC_LOG_WARN,
		   "accept: %s: refusing new connections until fds are "
		   "free (%d clients)",
		   strerror(err), s->nconns);
	if (s->reserve_fd < 0) {
		tc__ev_del(s->ev, s->lfd);
		s->accept_resume_ms = tc__now_ms() + 100;
	}
}

static void on_accept(struct tc__ev *ev, int lfd, void *arg, int mask)
{
	static struct tc__ratelimit rl_uid, rl_full, rl_err;
	struct server *s = arg;

	for (int burst = 0; burst < 64; burst++) {
		uint64_t now = tc__now_ms();
		struct conn *c;
		pid_t pid;
		uid_t uid;
		gid_t gid;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				accept_shed(s, errno);
				if (s->reserve_fd < 0)
					return;
				continue;
			}
			if (errno != EAGAIN && errno != EINTR)
				tc__log_rl(&rl_err, TC_LOG_WARN,
					   "accept failed: %s",
					   strerror(errno));
			return;
		}
		if (tc__sock_peercred(fd, &pid, &uid, &gid) < 0 ||
		    (uid != getuid() && uid != 0)) {
			tc__log_rl(&rl_uid, TC_LOG_WARN,
				   "refused a connection from uid %u (pid %d)",
				   (unsigned)uid, (int)pid);
			refuse(fd, TC_EPERM,
			       "uid %u may not use this daemon (it serves uid "
			       "%u and root)",
			       (unsigned)uid, (unsigned)getuid());
			continue;
		}
		/* A process over its share, a uid over its share (root
		 * keeps the rest), or no slot left: an idle connection
		 * holding nothing (of that process or uid) gives its slot;
		 * else the newcomer is told why. */
		if (conns_live(s, -1, (long)pid) >= s->max_per_pid &&
		    !evict_idle(s, -1, (long)pid, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: it holds %d connections "
				   "(max_clients_per_pid)",
				   (int)pid, s->max_per_pid);
			refuse(fd, TC_EBUSY,
			       "process %d already holds %d connections to "
			       "the daemon (max_clients_per_pid)",
			       (int)pid, s->max_per_pid);
			continue;
		}
		if (uid != 0 &&
		    conns_live(s, (long)uid, -1) >= s->max_per_uid &&
		    !evict_idle(s, (long)uid, -1, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: uid %u holds %d "
				   "connections (max_clients_per_uid)",
				   (int)pid, (unsigned)uid, s->max_per_uid);
			refuse(fd, TC_EBUSY,
			       "uid %u already holds %d connections to the "
			       "daemon (max_clients_per_uid)",
			       (unsigned)uid, s->max_per_uid);
			continue;
		}
		if (conns_live(s, -1, -1) >= s->max_clients &&
		    !evict_idle(s, -1, -1, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: %d clients already "
				   "connected (max_clients)",
				   (int)pid, s->max_clients);
			refuse(fd, TC_EBUSY,
			       "the daemon serves %d clients already "
			       "(max_clients); try again later",
			       s->max_clients);
			continue;
		}
		c = tc__calloc(1, sizeof(*c));
		if (!c) {
			refuse(fd, -ENOMEM, "the daemon is out of memory");
			continue;
		}
		c->srv = s;
		c->fd = fd;
		c->pid = pid;
		c->uid = uid;
		c->accepted_ms = c->last_rx_ms = now;
		tc__buf_init(&c->out);
		if (tc__ev_add(s->ev, fd, TC_EV_READ, on_conn_io, c) < 0) {
			refuse(fd, TC_EBUSY,
			       "the daemon cannot watch more connections");
			tc__free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}

/* -------------------------------------------------------------- hooks */

static void before_sleep(struct tc__ev *ev, void *arg)
{
	struct server *s = arg;

	for (struct conn **pp = &s->conns; *pp;) {
		struct conn *c = *pp;

		/* One more share for each connection with frames waiting
		 * (round robin: every connection gets a turn per loop). */
		if (!c->closing && c->backlog && !c->paused &&
		    c->out.len - c->out_off <= OUT_PAUSE_BYTES &&
		    c->nofds < OUT_PAUSE_FDS) {
			tc__srv_conn_process(c);
			if (c->backlog && !c->paused &&
			    c->out.len - c->out_off <= OUT_PAUSE_BYTES &&
			    c->nofds < OUT_PAUSE_FDS)
				tc__ev_no_sleep(ev);
		}

		if (c->closing && c->jobs == 0) {
			*pp = c->next;
			conn_free(c);
		} else {
			pp = &c->next;
		}
	}
}

static void on_tick(struct tc__ev *ev, void *arg)
{
	struct server *s = arg;
	uint64_t now = tc__now_ms();

	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->closing)
			continue;
		if (!c->hello &&
		    now - c->accepted_ms > (uint64_t)s->cfg->handshake_ms)
			conn_close(c, "no HELLO within the handshake timeout");
		else if (c->out_progress_ms &&
			 now - c->out_progress_ms >
				 (uint64_t)s->cfg->write_stall_ms)
			conn_close(c, "client reads none of its replies "
				      "(write_stall_ms)");
		else if (s->cfg->idle_timeout_ms && conn_empty(c) &&
			 now - c->last_rx_ms >
				 (uint64_t)s->cfg->idle_timeout_ms)
			conn_close_told(c, "the daemon closed this idle "
					   "connection (idle_timeout_ms)");
		else if (c->progress_job)
			send_progress(c, now);
	}
	if (s->accept_resume_ms && now >= s->accept_resume_ms) {
		s->accept_resume_ms = 0;
		if (s->reserve_fd < 0)
			s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		tc__ev_add(s->ev, s->lfd, TC_EV_READ, on_accept, s);
	}
	spare_refill(s);
	tc__srv_metrics_publish(s, now, false);
}

static void on_signal(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			tc__log(TC_LOG_INFO, "signal %u: shutting down",
				si.ssi_signo);
			tc__ev_stop(ev);
		}
	}
}

/* -------------------------------------------------------------- run */

/* fds kept for everything but clients: artifacts (two each), imports,
 * workers, the log. */
#define FD_HEADROOM 256
/* fds one client may hold at worst is more (queued input and output fds,
 * an import), but most hold one or two; EMFILE is handled either way. */
#define FDS_PER_CLIENT 4

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit, and size the client
 * limit so that clients cannot take the fds artifacts and imports need.
 * Returns the fd limit the event loop must cover.
 */
static int size_limits(struct server *s)
{
	const struct tc__store_config *cfg = s->cfg;
	struct rlimit rl;
	rlim_t want;
	int fit, nofile = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		want = rl.rlim_max;
		/* An unlimited hard limit still has the kernel's cap, and
		 * the loop keeps a slot per fd number: stay reasonable. */
		if (want == RLIM_INFINITY || want > (rlim_t)1 << 20)
			want = (rlim_t)1 << 20;
		if (rl.rlim_cur < want) {
			rl.rlim_cur = want;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				getrlimit(RLIMIT_NOFILE, &rl);
		}
		nofile = rl.rlim_cur > (rlim_t)1 << 20 ? 1 << 20 :
							 (int)rl.rlim_cur;
	}
	fit = (nofile - TC_MIN(FD_HEADROOM, nofile / 2)) / FDS_PER_CLIENT;
	if (fit < 1)
		fit = 1;
	s->max_clients = cfg->max_clients;
	if (s->max_clients > fit) {
		tc__log(TC_LOG_WARN,
			"max_clients %d lowered to %d: the fd limit is %d "
			"(raise the hard limit, ulimit -Hn, for more)",
			cfg->max_clients, fit, nofile);
		s->max_clients = fit;
	}
	s->max_per_uid =
		cfg->max_clients_per_uid ?
			TC_MIN(cfg->max_clients_per_uid, s->max_clients) :
			s->max_clients - s->max_clients / 8;
	if (s->max_per_uid < 1)
		s->max_per_uid = 1;
	s->max_per_pid =
		cfg->max_clients_per_pid ?
			TC_MIN(cfg->max_clients_per_pid, s->max_clients) :
			TC_MAX(TC_MIN(4, s->max_clients), s->max_clients / 4);
	return nofile;
}

int tc__server_run(const struct tc__store_config *cfg, int ready_fd, char *err,
		   size_t errlen)
{
	struct server s = { 0 };
	sigset_t mask;
	int rc;

	tc__log_set_format(cfg->log_format);
	s.cfg = cfg;
	s.lfd = s.sigfd = s.reserve_fd = -1;
	s.epoch =
		(uint64_t)time(NULL) * 1000000000u + tc__now_ns() % 1000000000u;
	s.start_ms = tc__now_ms();
	tc__objs_init(&s.objs, cfg->host_bytes);
	s.spare_target = cfg->host_spare != TC_SPARE_AUTO ?
				 TC_MIN(cfg->host_spare, cfg->host_bytes / 2) :
				 TC_MIN((uint64_t)1 << 30, cfg->host_bytes / 8);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	s.ev = tc__ev_new(size_limits(&s));
	if (!s.ev) {
		snprintf(err, errlen, "cannot create the event loop: %s",
			 strerror(errno));
		return -errno;
	}
	rc = tc__sock_prepare_dir(cfg->socket, err, errlen);
	if (rc < 0)
		goto out_ev;
	rc = tc__sock_listen(cfg->socket, 512, &s.lfd, err, errlen);
	if (rc < 0)
		goto out_ev;
	s.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.sigfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "signalfd: %s", strerror(errno));
		goto out_listen;
	}
	rc = tc__jobs_new(cfg->job_threads, s.ev, &s.jobs);
	if (rc == 0)
		rc = tc__jobs_new_elastic(cfg->job_threads, IO_JOBS_MAX, s.ev,
					  &s.io_jobs);
	if (rc < 0) {
		snprintf(err, errlen, "cannot start workers: %s",
			 strerror(-rc));
		tc__jobs_free(s.jobs);
		goto out_sig;
	}
	rc = tc__gpu_tier_new(cfg, &s.objs, s.jobs, &s.gpu);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		tc__jobs_free(s.io_jobs);
		tc__jobs_free(s.jobs);
		goto out_sig;
	}
	tc__ev_add(s.ev, s.lfd, TC_EV_READ, on_accept, &s);
	tc__ev_add(s.ev, s.sigfd, TC_EV_READ, on_signal, &s);
	tc__ev_set_hooks(s.ev, before_sleep, on_tick, 50, &s);
	tc__log(TC_LOG_INFO,
		"tcast daemon %s listening on '%s' (pid %d, host budget %llu "
		"bytes, %d io threads)",
		TC_VERSION_STRING, cfg->socket, (int)getpid(),
		(unsigned long long)cfg->host_bytes, cfg->io_threads);
	if (cfg->metrics_port) {
		/* Asked for and unavailable is a start-up error, not a
		 * silently missing endpoint. */
		rc = tc__metrics_start(cfg->metrics_port, err, errlen);
		if (rc < 0)
			goto out_stop;
		tc__log(TC_LOG_INFO, "metrics on http://127.0.0.1:%d/metrics",
			cfg->metrics_port);
	}
	tc__srv_metrics_publish(&s, tc__now_ms(), true);
	/* systemd Type=notify: ready once the socket accepts; a no-op
	 * without NOTIFY_SOCKET. */
	sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving on %s",
		   (int)getpid(), cfg->socket);
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) < 0) {
			/* The starter went away; keep serving anyway. */
		}
		close(ready_fd);
	}
	rc = tc__ev_run(s.ev);

	/* Shutdown: stop accepting, finish jobs, drop every connection. */
	sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
out_stop:
	tc__metrics_stop();
	tc__ev_del(s.ev, s.lfd);
	for (struct conn *c = s.conns; c; c = c->next)
		conn_close(c, NULL);
	tc__gpu_tier_stop(s.gpu);
	s.stopping = true;
	/* An import blocked in a read that never returns (a hung mount)
	 * must not hold the stop: give I/O jobs a moment, then leave them
	 * blocked (the process exits under them).  Their pool and their
	 * connections stay allocated: a blocked worker still uses them. */
	if (tc__jobs_free_within(s.io_jobs, STOP_IO_WAIT_MS) < 0)
		tc__log(TC_LOG_WARN,
			"stopping with imports still blocked in I/O");
	tc__jobs_free(s.jobs);
	spare_drop(&s);
	before_sleep(s.ev, &s);
	tc__objs_release(&s.objs);
	tc__gpu_tier_free(s.gpu);
	unlink(cfg->socket);
	tc__log(TC_LOG_INFO, "tcast daemon stopped");
out_sig:
	close(s.sigfd);
	if (s.reserve_fd >= 0)
		close(s.reserve_fd);
out_listen:
	close(s.lfd);
out_ev:
	tc__ev_free(s.ev);
	return rc;
}
