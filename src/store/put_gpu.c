/*
 * put_gpu.c - CREATE_GPU, SEAL_GPU and ABORT_GPU: a put of tensors that
 * already live on a GPU, landing in a GPU replica device to device.
 *
 * The daemon allocates the replica (charged to that GPU's budget) and hands
 * the client a writable VMM fd; the client maps it and copies its tensors
 * in device to device; SEAL_GPU hashes the bytes (device to host through
 * pinned staging, BLAKE3 on the CPU: the id is the same content id a host
 * put of the same tensors gets) and keeps the allocation as the artifact's
 * replica on that GPU.  A client that copied with the fused copy+hash
 * sends its chunk digests with SEAL_GPU; when it runs as the daemon's own
 * uid (which could change the daemon's memory anyway) they stand for the
 * hash, as a pull's verified digests do for a host put; any other uid's
 * replica is hashed whatever it says.  No host copy is made; a policy with
 * a shared-disk copy (durable, cold; ha without its replica on another
 * node, which pulls a host copy) gets it written from the replica at
 * SEAL_GPU, hashed on the same read (GPU -> disk through pinned staging,
 * the transfer engine's pair: xfer.h).  Like SEAL after
 * an unmapped memfd, the seal trusts the client to have released its writable
 * mapping (libtcast does, before it sends SEAL_GPU); GPU sharing is one trust
 * domain per uid (docs/gpu.md).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/names.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "gpu_tier.h"
#include "metrics.h"
#include "server_internal.h"
#include "tcast/errors.h"

/*
 * A GPU put between CREATE_GPU and SEAL_GPU.  Invariant: busy => a job
 * owns `mem` and `o`; fill != NULL => a FILLING replica of GPU `dev`'s
 * tier holds `charged` bytes for it (adopted at the seal, dropped when
 * the put fails, is aborted or its client goes).
 */
struct gpu_put {
	uint64_t handle;
	struct tc__obj *o; /* owned until inserted; o->shm is NULL */
	char key[TC_KEY_MAX + 1];
	uint32_t flags;
	uint64_t expect_gen;
	uint64_t t0_ns;
	uint64_t alloc_ns[2];	    /* phase 2's driver calls, start and end */
	struct persist_req persist; /* the TTL and the shared-disk copy */
	uint8_t uuid[TC_GPU_UUID_BYTES];
	int dev;		/* the daemon's ordinal, once charged */
	uint64_t charged;	/* GPU budget bytes */
	struct tc__gpu_mem mem; /* the replica-to-be */
	struct tc__digest *dig; /* SEAL_GPU's digests, adopted (same uid) */
	bool busy;  /* a job runs for it (its connection is paused) */
	bool spare; /* mem was kept from an earlier allocation */
	/* Its FILLING replica on GPU dev's tier, once charged. */
	struct tc__gpu_replica *fill;
	struct gpu_put *next;
};

static void gput_free(struct server *s, struct gpu_put *p)
{
	tc__srv_persist_end(s, &p->persist); /* its disk copy's fill */
	tc__gpu_release_later(&p->mem);	     /* off the loop: ~5 ms per 8 GiB */
	tc__free(p->dig);
	tc__gpu_tier_fill_drop(s->gpu, &p->fill);
	tc__obj_free(p->o);
	tc__free(p);
}

static void gput_unlink(struct conn *c, struct gpu_put *p)
{
	for (struct gpu_put **pp = &c->gpu_puts; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

static struct gpu_put *gput_find(struct conn *c, uint64_t handle)
{
	for (struct gpu_put *p = c->gpu_puts; p; p = p->next)
		if (p->handle == handle)
			return p;
	return NULL;
}

struct gput_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct gpu_put *p; /* NULL once sealed or freed */
	int phase;	   /* 1: driver, 2: allocate, 3: hash (SEAL_GPU) */
	int nthreads;
	bool copying; /* counted in tc__gpu_tier_copy_begin */
	double seconds;
	/* A sealed put: what the reply says. */
	struct tc__obj *o;
	bool dedup;
	uint64_t ns;
	char key[TC_KEY_MAX + 1];
	uint32_t flags;
	uint64_t expect_gen;
	struct persist_req persist;
	struct server *s;
	struct key_gate gate; /* SEAL_GPU's key, decided by the global store */
	int rc;
	char err[512];
};

/*
 * A kept allocation (the GPU's spare, or a victim's) still holds its old
 * bytes where no tensor lies: the alignment padding between tensors.  A
 * new allocation reads as zeros there (the driver scrubs what it hands
 * out), and the id covers the whole byte space, so the padding is zeroed
 * before the daemon hashes it -- one memset per gap on one stream.  The
 * fused copy writes zeros there itself, so a put sealed with its digests
 * needs none of this.
 */
static int zero_gaps(const struct gpu_put *p, char *err, size_t errlen)
{
	const struct tc__table *t = &p->o->table;
	struct tc__gpu_stream *st = NULL;
	uint64_t at = 0;
	int rc;

	rc = tc__gpu_stream_create(p->dev, &st, err, errlen);
	for (uint32_t i = 0; rc == 0 && i <= t->ntensors; i++) {
		uint64_t next = i < t->ntensors ? t->tensors[i].offset :
						  t->total_bytes;

		if (next > at)
			rc = tc__gpu_memset8(p->dev, p->mem.dptr + at, 0,
					     next - at, st, err, errlen);
		if (i < t->ntensors &&
		    t->tensors[i].offset + t->tensors[i].nbytes > at)
			at = t->tensors[i].offset + t->tensors[i].nbytes;
	}
	if (st) {
		if (rc == 0)
			rc = tc__gpu_stream_sync(st, err, errlen);
		tc__gpu_stream_free(st);
	}
	return rc;
}

static void gput_run(struct tc__job *job)
{
	struct gput_job *j = (struct gput_job *)job;
	struct gpu_put *p = j->p;
	struct tc__obj *o = p->o;
	uint64_t n = o->table.total_bytes, nchunks, t0 = tc__now_ns();
	struct tc__digest *chunks;

	if (j->phase == 1) {
		j->rc = tc__gpu_init(j->err, sizeof(j->err));
		return;
	}
	if (j->phase == 2) {
		p->alloc_ns[0] = tc__now_ns();
		j->rc = tc__gpu_alloc(p->dev, p->charged, 0, &p->mem, j->err,
				      sizeof(j->err));
		p->alloc_ns[1] = tc__now_ns();
		return;
	}
	nchunks = tc__chunk_count(n);
	chunks = tc__calloc(nchunks ? nchunks : 1, sizeof(*chunks));
	if (!chunks) {
		j->rc = -ENOMEM;
		snprintf(j->err, sizeof(j->err), "out of memory");
		return;
	}
	/* Clients see only what the table says; the rounding tail is zero,
	 * as in every other replica. */
	if (p->mem.size > n)
		j->rc = tc__gpu_memset8(p->dev, p->mem.dptr + n, 0,
					p->mem.size - n, NULL, j->err,
					sizeof(j->err));
	if (j->rc == 0 && p->spare && !p->dig)
		j->rc = zero_gaps(p, j->err, sizeof(j->err));
	if (j->rc == 0 && p->dig)
		memcpy(chunks, p->dig, nchunks * sizeof(*chunks));
	/* Hashed (unless adopted) and, for a policy with a shared-disk
	 * copy, written there from the same read of the replica (GPU ->
	 * disk through pinned staging: xfer.h). */
	if (j->rc == 0)
		j->rc = tc__srv_persist_hash_gpu(&p->persist, o, &p->mem,
						 j->nthreads, chunks, nchunks,
						 p->dig != NULL, j->err,
						 sizeof(j->err));
	tc__free(chunks);
	if (j->rc == 0)
		tc__srv_key_gate_run(j->s, &j->gate, p->key, o->id, p->flags,
				     p->expect_gen);
	j->seconds = (double)(tc__now_ns() - t0) / 1e9;
}

/* SEAL_GPU's hash is done: insert (or join the artifact with the same id)
 * and keep the allocation as its replica on that GPU.  The put is over
 * whether or not its client still waits for the reply. */
static int seal_insert(struct gput_job *j)
{
	struct server *s = j->c->srv;
	struct gpu_put *p = j->p;
	struct tc__obj *o = NULL;
	int rc;

	j->ns = tc__now_ns() - p->t0_ns;
	p->o->load_seconds = (double)j->ns / 1e9;
	rc = tc__objs_insert(&s->objs, p->o, &o);
	if (rc < 0)
		return rc;
	j->dedup = o != p->o;
	j->o = o;
	p->o = NULL; /* the table's now (or freed as a duplicate) */
	/* The allocation becomes o's READY replica on that GPU (or goes with
	 * its fill when the same content is there already). */
	tc__gpu_tier_fill_adopt(s->gpu, o, &p->fill, &p->mem, j->seconds);
	s->n_put++;
	s->n_put_gpu_client_hashed += p->dig != NULL;
	tc__metrics_path(TC_MPATH_PUT, o->table.total_bytes, j->ns);
	tc__log(TC_LOG_INFO,
		"put '%s' on GPU %d from device memory: %llu bytes, %s "
		"in %.3f s (%.2f GB/s)%s",
		o->id, p->dev, (unsigned long long)o->table.total_bytes,
		p->dig ? "sealed with the client's digests" : "hashed",
		j->seconds,
		j->seconds > 0 ?
			(double)o->table.total_bytes / j->seconds / 1e9 :
			0.0,
		j->dedup ? " (already held)" : "");
	memcpy(j->key, p->key, sizeof(j->key));
	j->flags = p->flags;
	j->expect_gen = p->expect_gen;
	j->persist = p->persist;
	p->persist.fill = NULL; /* the copy's now */
	/* Records the shared-disk copy written before (a durable policy)
	 * and sets the TTL.  A failed must takes back what this put added. */
	j->c->err[0] = '\0';
	rc = tc__srv_persist_commit(j->c, &j->persist, o, NULL, 0);
	if (rc < 0) {
		snprintf(j->err, sizeof(j->err), "%s", j->c->err);
		tc__srv_key_gate_undo(s, &j->gate, j->key, o->id);
		if (!j->dedup)
			tc__objs_discard_new(&s->objs, o);
		j->o = NULL;
	}
	return rc;
}

/* The success reply: CREATE_GPU's handle, size, table and fd; SEAL_GPU's
 * result once the key is published. */
static int gput_reply(struct conn *c, const struct req *r, void *arg)
{
	struct gput_job *j = arg;
	struct gpu_put *p = j->p;
	uint64_t gen;
	size_t off;
	int rc;

	if (j->phase == 3) {
		rc = tc__srv_publish_key(c, j->o->id, j->key, j->flags,
					 j->expect_gen, &j->gate, &gen);
		if (rc < 0) {
			if (!j->dedup)
				tc__objs_discard_new(&c->srv->objs, j->o);
			return rc;
		}
		tc__srv_reply_created(c, r, j->o, j->ns, j->dedup, gen,
				      &j->persist);
		return 0;
	}
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, p->handle);
	tc__buf_put_u64(&c->out, p->mem.size);
	tc__proto_put_table(&c->out, &p->o->table);
	/* 1: a kept allocation, holding old bytes: the client zeroes what
	 * it does not write (older clients stop reading before it). */
	tc__buf_put_u8(&c->out, p->spare ? 1 : 0);
	if (tc__srv_reply_fds(c, off, &p->mem.fd, 1, false) < 0) {
		c->out.len = off;
		/* No put the client could not name. */
		gput_unlink(c, p);
		gput_free(c->srv, p);
		j->p = NULL;
		snprintf(c->err, sizeof(c->err),
			 "cannot pass the allocation's fd: out of descriptors");
		return TC_EBUSY;
	}
	tc__srv_reply_end(c, off);
	/* Where a GPU put's begin goes, for bench/profile_put.py: before
	 * the allocation (decode, the first job hop, the charge), the
	 * driver's create + map + export, and after it (the second hop,
	 * the reply with its table). */
	tc__log(TC_LOG_DEBUG,
		"CREATE_GPU of %u tensors: %.2f ms from arrival to reply: "
		"%.2f before the allocation, %.2f allocating%s, %.2f after",
		p->o->table.ntensors,
		(double)(tc__now_ns() - (r->t0_ns ? r->t0_ns : p->t0_ns)) / 1e6,
		(double)(p->alloc_ns[0] - (r->t0_ns ? r->t0_ns : p->t0_ns)) /
			1e6,
		(double)(p->alloc_ns[1] - p->alloc_ns[0]) / 1e6,
		p->spare ? " (a kept allocation)" : "",
		(double)(tc__now_ns() - p->alloc_ns[1]) / 1e6);
	return 0;
}

static void gput_done(struct tc__job *job)
{
	struct gput_job *j = (struct gput_job *)job;
	struct conn *c = j->c;
	struct server *s = c->srv;
	struct gpu_put *p = j->p;
	int rc = j->rc;

	if (rc == 0 && j->phase == 1) {
		rc = tc__gpu_tier_open_now(s->gpu, j->err, sizeof(j->err));
		if (rc == 0)
			rc = tc__gpu_tier_fill_begin(s->gpu, p->uuid,
						     p->o->table.total_bytes,
						     &p->fill, &p->dev,
						     &p->charged, &p->mem,
						     j->err, sizeof(j->err));
		/* An allocation of that size was kept (the GPU's spare, or
		 * a victim of the same size): no driver call to wait for. */
		if (rc == 0 && p->mem.dptr) {
			p->alloc_ns[0] = p->alloc_ns[1] = tc__now_ns();
			p->spare = true;
		} else if (rc == 0) {
			j->phase = 2;
			tc__jobs_submit(s->jobs, &j->job);
			return;
		}
	}
	if (j->copying)
		tc__gpu_tier_copy_end(s->gpu);
	p->busy = false;
	if (rc == 0 && j->phase == 3) {
		rc = seal_insert(j);
		if (rc == 0) { /* o and mem were handed on */
			gput_unlink(c, p);
			gput_free(s, p);
			j->p = NULL;
		}
	}
	if (rc < 0 && j->p) {
		/* A failed create or seal leaves nothing behind. */
		gput_unlink(c, p);
		gput_free(s, p);
		j->p = NULL;
	}
	tc__srv_finish(c, &j->r, rc, j->err, gput_reply, j);
	tc__free(j);
}

static int gput_submit(struct conn *c, struct req *r, struct gpu_put *p,
		       int phase)
{
	struct gput_job *j = tc__calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->c = c;
	j->r = *r;
	j->p = p;
	j->phase = phase;
	j->s = c->srv;
	j->nthreads = c->srv->cfg->io_threads;
	if (phase == 3) {
		int rc = tc__srv_key_gate_init(c, &j->gate, p->key, p->flags);

		if (rc < 0) {
			tc__free(j);
			return rc;
		}
	}
	j->job.run = gput_run;
	j->job.done = gput_done;
	if (phase == 3) {
		/* Staging copies: background pinning waits for them. */
		tc__gpu_tier_copy_begin(c->srv->gpu);
		j->copying = true;
		/* The shared-disk tier counts the copy as FILLING while
		 * the seal writes it. */
		tc__srv_persist_begin(c->srv, &p->persist,
				      p->o->table.total_bytes);
	}
	p->busy = true;
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->jobs, &j->job);
	return 0;
}

int on_create_gpu(struct conn *c, struct req *r)
{
	char policy[32], uuid[TC_PROTO_MAX_STR];
	uint64_t ttl_ms = 0;
	enum tc__policy pol;
	struct gpu_put *p;
	uint32_t n = 0;
	int rc;

	for (p = c->gpu_puts; p; p = p->next)
		n++;
	if (c->npending + n >= MAX_PENDING_PUTS) {
		snprintf(c->err, sizeof(c->err),
			 "%d puts already unsealed on this connection",
			 MAX_PENDING_PUTS);
		return TC_ELIMIT;
	}
	p = tc__calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	tc__gpu_mem_init(&p->mem);
	p->o = tc__obj_new();
	if (!p->o) {
		tc__free(p);
		return -ENOMEM;
	}
	/* CREATE's body, then the GPU it goes to. */
	rc = tc__srv_read_create(c, r, &p->o->table, p->key, sizeof(p->key),
				 policy, sizeof(policy), &p->flags,
				 &p->expect_gen, &ttl_ms);
	if (rc < 0)
		goto out_free;
	if ((rc = tc__srv_read_str(c, r, "GPU uuid", uuid, sizeof(uuid))) < 0 ||
	    (rc = tc__srv_body_end(c, r)) < 0)
		goto out_free;
	if (tc__gpu_uuid_parse(uuid, p->uuid) < 0) {
		snprintf(c->err, sizeof(c->err), "bad GPU uuid '%s'", uuid);
		rc = TC_EINVAL;
		goto out_free;
	}
	rc = tc__policy_parse(policy, &pol, c->err, sizeof(c->err));
	/* durable and cold: the shared-disk copy is written from the GPU
	 * replica at SEAL_GPU, before the reply (TC_RF_GPU: there is no
	 * host copy to write from after it). */
	if (rc == 0)
		rc = tc__srv_persist_prepare(c, &p->persist, pol,
					     p->flags | TC_RF_GPU, ttl_ms);
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
	/* Held on that GPU only, like an import straight to a GPU: its
	 * budget is charged, not host memory. */
	p->o->host.bytes = 0;
	p->o->policy = pol;
	snprintf(p->o->source, sizeof(p->o->source),
		 "put (GPU memory):pid %d%s%s", (int)c->pid,
		 c->name[0] ? " " : "", c->name);
	p->handle = ++c->next_handle;
	p->t0_ns = tc__now_ns();
	rc = gput_submit(c, r, p, 1);
	if (rc < 0)
		goto out_free;
	p->next = c->gpu_puts;
	c->gpu_puts = p;
	return 0;

out_free:
	tc__obj_free(p->o);
	tc__free(p);
	return rc;
}

/* The unsealed GPU put `handle` names; NULL with *rc. */
static struct gpu_put *gput_of_handle(struct conn *c, uint64_t handle, int *rc)
{
	struct gpu_put *p = gput_find(c, handle);

	if (!p || p->busy) {
		snprintf(c->err, sizeof(c->err),
			 p ? "GPU put %llu is busy" :
			     "no unsealed GPU put %llu",
			 (unsigned long long)handle);
		*rc = p ? TC_EBUSY : TC_ENOTFOUND;
		return NULL;
	}
	return p;
}

int on_seal_gpu(struct conn *c, struct req *r)
{
	const uint8_t *raw;
	struct gpu_put *p;
	uint64_t handle, n;
	int rc;

	rc = tc__proto_get_seal_gpu(&r->body, &handle, &n, &raw, c->err,
				    sizeof(c->err));
	if (rc < 0)
		return rc;
	p = gput_of_handle(c, handle, &rc);
	if (!p)
		return rc;
	if (n && n != tc__chunk_count(p->o->table.total_bytes)) {
		snprintf(
			c->err, sizeof(c->err),
			"SEAL_GPU: %llu chunk digests for a put of %llu chunks",
			(unsigned long long)n,
			(unsigned long long)tc__chunk_count(
				p->o->table.total_bytes));
		return TC_EINVAL;
	}
	if (n && c->uid == geteuid()) {
		p->dig = tc__malloc(n * sizeof(*p->dig));
		if (!p->dig)
			return -ENOMEM;
		memcpy(p->dig, raw, n * TC_DIGEST_BYTES);
	}
	return gput_submit(c, r, p, 3);
}

int on_abort_gpu(struct conn *c, struct req *r)
{
	struct gpu_put *p;
	uint64_t handle;
	int rc;

	if (tc__cur_read_u64(&r->body, &handle) < 0)
		return TC_EPROTO;
	if ((rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	p = gput_of_handle(c, handle, &rc);
	if (!p)
		return rc;
	gput_unlink(c, p);
	gput_free(c->srv, p);
	tc__srv_reply_status(c, r, 0);
	return 0;
}

void tc__srv_gpu_puts_free(struct conn *c)
{
	while (c->gpu_puts) {
		struct gpu_put *p = c->gpu_puts;

		c->gpu_puts = p->next;
		gput_free(c->srv, p);
	}
}
