/*
 * ops_import.c - IMPORT: a safetensors file (or a folder's shards, which
 * the client opens and sends) loaded into a new artifact, in host memory
 * or straight to a GPU, with PROGRESS frames for a client that asks.
 *
 * Two phases on the I/O workers (imports may block for good in a hung
 * mount, so they have their own elastic pool): parse, then (a FILLING
 * host replica charged on the loop in between) load and seal.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/names.h"
#include "format/format.h"
#include "format/view.h"
#include "gpu/vmm.h"
#include "xfer/gpu_loader.h"
#include "gpu_tier.h"
#include "xfer/jobs.h"
#include "xfer/loader.h"
#include "xfer/view_ranges.h"
#include "xfer/xfer.h"
#include "metrics.h"
#include "net/net.h"
#include "obj.h"
#include "proto/proto.h"
#include "shm.h"
#include "tcast/errors.h"

#include "durable.h"
#include "server_internal.h"

/* What makes two imports' files the same bytes (joins, shared view
 * reads): device, inode, size and modification time. */
struct file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
};

static struct file_id file_id_of(const struct stat *st)
{
	return (struct file_id){ st->st_dev, st->st_ino, st->st_size,
				 st->st_mtim };
}

static bool file_id_eq(const struct file_id *a, const struct file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec;
}

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
	/* TC_RF_VIEW: the spec (owned), then the runs it reads; the
	 * source's table is replaced by the view's once planned. */
	char *view;
	struct tc__load_plan lplan;
	struct tc__obj *o;
	struct tc__digest *chunks;
	struct tc__load_progress prog;
	uint64_t total_bytes; /* for PROGRESS; set on the loop before phase 2 */
	uint64_t t0_ns;
	int io_threads;
	int gpu_threads; /* the GPU loader's (gpu_load_threads) */
	/* Straight to a GPU (TC_RF_GPU): the loader fills a new allocation
	 * that the tier adopts as the artifact's only replica.  gpu_fill is
	 * its FILLING replica on that GPU's tier from the charge on the loop
	 * to the adoption (or to import_free, which drops it). */
	bool gpu;
	uint8_t gpu_uuid[TC_GPU_UUID_BYTES];
	int gpu_ref; /* >= 0: the client named the GPU by this ordinal of
			an environment like the daemon's (gpu_uuid unset) */
	struct tc__gpu_replica *gpu_fill; /* loop only */
	int gpu_dev;		 /* the daemon's ordinal, once charged */
	uint64_t gpu_charged;	 /* bytes charged (to allocate) */
	struct tc__gpu_mem gmem; /* the allocation while the job owns it */
	double gpu_seconds;
	struct tc__gpu_load_stats gpu_stats;
	int io_engine;
	bool gpu_copying;	    /* counted in tc__gpu_tier_copy_begin */
	struct persist_req persist; /* the policy's shared-disk part */
	struct server *s;
	struct key_gate gate; /* the key, decided by the global store */
	int rc;
	char err[512];
	/* Once inserted, for the reply (which may wait for an ha replica):
	 * what the import inserted or the copy already held, its time. */
	struct tc__obj *done_o;
	uint64_t done_ns;
	bool done_dedup;
	/* Concurrent identical imports read once: a host import of one
	 * regular file (joinable()) leads while it reads, listed in
	 * s->importing; another of the same file (device, inode, size,
	 * modification time) and policy arriving meanwhile joins it instead
	 * of reading, and is answered with what the leader inserted (as an
	 * import of content already held) -- or, when the leader fails,
	 * runs on its own. */
	struct file_id fid;
	bool lead;			/* in s->importing */
	struct import_job *next_lead;	/* s->importing */
	struct import_job *joined;	/* followers, while lead */
	struct import_job *next_joined; /* a follower's link */
	/* Concurrent view imports to GPUs share reads (vs_begin): `vs`
	 * while listed in s->viewing as a leader; `vs_from` the leader
	 * whose allocation holds vs_runs (taken out of lplan), vs_src[i]
	 * where run i lies in its byte space. */
	struct view_share *vs;		 /* owned (a reference) or NULL */
	struct import_job *next_viewing; /* s->viewing */
	struct view_share *vs_from;	 /* a reference, or NULL */
	struct tc__load_run *vs_runs;	 /* owned, vs_nruns */
	uint64_t *vs_src;		 /* owned, vs_nruns */
	uint64_t vs_nruns;
	uint64_t vs_shared;	  /* out: bytes copied from the leader */
	struct file_id *vs_files; /* owned: the source's files, src->nfiles */
};

struct view_share;
static void vs_put(struct view_share *vs);
static void vs_begin(struct server *s, struct import_job *j);
static void vs_unlist(struct server *s, struct import_job *j);
static void vs_ready(struct import_job *j, int rc);
static void vs_lead_end(struct import_job *j);
static int vs_follow(struct import_job *j, uint64_t nbytes);
static int vs_abandon(struct import_job *j, int rc);

static void lead_end(struct import_job *j, struct tc__obj *o);

static void import_free(struct import_job *j)
{
	if (j->lead)
		lead_end(j, NULL); /* failed: the followers read themselves */
	vs_unlist(j->s, j);
	vs_put(j->vs);
	vs_put(j->vs_from);
	tc__free(j->vs_runs);
	tc__free(j->vs_src);
	tc__free(j->vs_files);
	if (j->gpu_copying)
		tc__gpu_tier_copy_end(j->c->srv->gpu);
	if (j->gpu_fill) {
		tc__gpu_release(&j->gmem);
		tc__gpu_tier_fill_drop(j->c->srv->gpu, &j->gpu_fill);
	}
	if (j->fd >= 0)
		close(j->fd);
	for (uint32_t i = 0; i < j->nshards; i++)
		tc__free(j->shard_names[i]);
	tc__free(j->shard_names);
	tc__source_free(j->src);
	tc__free(j->view);
	tc__load_plan_release(&j->lplan);
	/* Every exit returns what the job charged: a load that failed (a
	 * shard that shrank, a bad file, a GPU error, a cancel) leaves its
	 * FILLING replica, which goes, and the budget as it found it. */
	tc__objs_fill_free(&j->s->objs, j->o);
	tc__srv_persist_end(j->s, &j->persist); /* and its disk copy's */
	tc__free(j->chunks);
	tc__free(j);
}

/*
 * Receive the shard fds a client sends for a folder it resolved (on the
 * socket IMPORT carried: TC_IMPORT_FDS_PER_MSG per message, then EOF) and
 * open the source from them.  The client has them open and sends them at
 * once, so the whole exchange gets SHARD_TIMEOUT_MS: this runs on an I/O
 * worker, and a client trickling messages (or bytes without fds) must
 * not hold one for longer.  One that sends more or fewer fds than it
 * named, or a message without any, is refused.
 */
#define SHARD_TIMEOUT_MS 10000

static int open_client_shards(struct import_job *j)
{
	int *fds = tc__calloc(j->nshards, sizeof(*fds)), rc = 0;
	uint64_t end = tc__now_ms() + SHARD_TIMEOUT_MS;
	uint32_t got = 0;

	if (!fds)
		return -ENOMEM;
	for (;;) {
		struct pollfd p = { j->fd, POLLIN, 0 };
		int batch[TC_MAX_FDS_PER_MSG], nb = 0;
		uint64_t now = tc__now_ms();
		char byte[8];
		ssize_t n;
		int pr;

		pr = now >= end ? 0 : poll(&p, 1, (int)(end - now));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			rc = -errno;
			snprintf(j->err, sizeof(j->err),
				 "'%s': waiting for shards: %s", j->display,
				 strerror(errno));
			break;
		}
		if (pr == 0) {
			snprintf(j->err, sizeof(j->err),
				 "'%s': the client sent %u of %u shards in "
				 "%d ms",
				 j->display, got, j->nshards, SHARD_TIMEOUT_MS);
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
		if (n > 0 && nb == 0) {
			snprintf(j->err, sizeof(j->err),
				 "'%s': the client sent a message without "
				 "shard fds (after %u of %u)",
				 j->display, got, j->nshards);
			rc = TC_EPROTO;
			break;
		}
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

/* Phase 2 straight to a GPU: the loader fills a new allocation.  With a
 * durable policy it also writes the shared-disk copy from the bytes it
 * reads (the artifact will have no host copy to write from), committed
 * under the id once the digests are known. */
static void import_load_gpu(struct import_job *j, uint64_t n);

static void import_run_gpu(struct import_job *j, uint64_t n)
{
	import_load_gpu(j, n);
	vs_lead_end(j); /* before the allocation changes hands */
}

static void import_load_gpu(struct import_job *j, uint64_t n)
{
	struct persist_req *p = &j->persist;
	struct tc__native_tmp tmp;
	struct tc__gpu_load_opts lo = { .nthreads = j->gpu_threads,
					.depth = 2,
					.direct = -1,
					.stage_chunks = 1,
					.io = j->io_engine };
	struct tc__xfer x = { .from = TC_XFER_FROM_FILES,
			      .files = j->src,
			      .plan = j->view ? &j->lplan : NULL,
			      .to = TC_XFER_TO_GPU,
			      .gpu_dst = &j->gmem,
			      .ordinal = j->gpu_dev,
			      .alloc_bytes = j->gpu_charged,
			      .nthreads = j->io_threads,
			      .load = &lo,
			      .chunks = j->chunks,
			      .prog = &j->prog };

	if (p->tee) {
		/* A disk that cannot take the copy fails the import before
		 * anything is read (posix_fallocate: ENOSPC at once). */
		j->rc = tc__native_begin(p->dirfd, p->root,
					 j->src->table.total_bytes, &tmp,
					 j->err, sizeof(j->err));
		if (j->rc < 0)
			return;
		lo.tee = &tmp;
	}
	j->rc = tc__xfer_run(&x, j->err, sizeof(j->err));
	j->gpu_stats = x.stats;
	vs_ready(j, j->rc);
	if (j->vs_from)
		j->rc = j->rc == 0 ? vs_follow(j, x.bytes) :
				     vs_abandon(j, j->rc);
	/* Tests: a load as slow as a large one (STATUS shows its fill), and
	 * one that fails midway, its allocation made and filled. */
	if (j->rc == 0 && tc__failpoint("import_gpu_slow", j->display))
		nanosleep(&(struct timespec){ 1, 500000000 }, NULL);
	if (j->rc == 0 && tc__failpoint("import_gpu_fail", j->display)) {
		j->rc = -EIO;
		snprintf(j->err, sizeof(j->err),
			 "'%s': read failed midway (failpoint "
			 "import_gpu_fail)",
			 j->display);
	}
	if (j->rc == 0) {
		j->gpu_seconds = x.stats.seconds;
		j->o->table = j->src->table;
		tc__table_init(&j->src->table);
		j->rc = tc__obj_finish(j->o, j->chunks, n);
	}
	/* A native folder's bytes must hash to its manifest's. */
	if (j->rc == 0)
		j->rc = tc__native_check(j->src, j->chunks, n, j->o->id, j->err,
					 sizeof(j->err));
	if (!p->tee)
		return;
	if (j->rc < 0) {
		tc__native_abort(&tmp);
		return;
	}
	p->rc = tc__native_commit(&tmp, p->root, j->o->id, &j->o->table,
				  j->chunks, n, 0, p->err, sizeof(p->err));
	p->written = true;
}

static void import_work(struct import_job *j);

/*
 * TC_RF_VIEW: plan the view against the laid-out source, turn it into the
 * file runs the GPU loader reads (view_ranges.h), and make the view's
 * table the one loaded and kept.  The artifact is then an ordinary one:
 * its bytes are the view's byte space, its id their digest.  Transposes
 * and casts are refused here: the client's view kernel makes them
 * (docs/formats.md, "Views of a file on a GPU").
 */
static int plan_view(struct import_job *j)
{
	struct tc__view_spec spec;
	struct tc__view_plan v;
	int rc;

	rc = tc__view_spec_parse(j->view, strlen(j->view), &spec, j->err,
				 sizeof(j->err));
	if (rc < 0)
		return rc;
	rc = tc__view_plan(&j->src->table, "", &spec, &v, j->err,
			   sizeof(j->err));
	tc__view_spec_release(&spec);
	if (rc < 0)
		return rc;
	for (uint32_t i = 0; i < v.out.ntensors && rc == 0; i++)
		if (v.t[i].flags) {
			snprintf(j->err, sizeof(j->err),
				 "view of '%s': tensor '%s' is transposed or "
				 "cast: the daemon loads slices and subsets "
				 "only (the client transforms)",
				 j->display, v.out.tensors[i].name);
			rc = TC_ENOTSUP;
		}
	if (rc == 0)
		rc = tc__view_ranges(j->src, &v, NULL, 0, &j->lplan, j->err,
				     sizeof(j->err));
	if (rc == 0) {
		/* The plan's gather runs go now: releasing the plan below
		 * finds them by the table's count, which moves away. */
		for (uint32_t i = 0; i < v.out.ntensors; i++) {
			tc__free(v.t[i].runs);
			v.t[i].runs = NULL;
		}
		/* The runs borrow the view table's names: it moves whole. */
		tc__table_release(&j->src->table);
		j->src->table = v.out;
		tc__table_init(&v.out);
		/* A native folder's manifest is the whole artifact's. */
		j->src->expect_id[0] = '\0';
	}
	tc__view_plan_release(&v);
	return rc;
}

static void import_run(struct tc__job *job)
{
	struct import_job *j = (struct import_job *)job;

	import_work(j);
	/* Loaded and hashed: the id is known, so the global store can
	 * decide the key now (a daemon in a cluster). */
	if (j->phase == 2 && j->rc == 0)
		tc__srv_key_gate_run(j->s, &j->gate, j->key, j->o->id, j->flags,
				     j->expect_gen);
}

static void import_work(struct import_job *j)
{
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
		if (j->rc == 0 && j->view)
			j->rc = plan_view(j);
		/* Load the driver here, off the loop: the loop then only
		 * lists devices. */
		if (j->rc == 0 && j->gpu)
			j->rc = tc__gpu_init(j->err, sizeof(j->err));
		return;
	}
	/* Phase 2: a FILLING replica charged on the loop; load and seal. */
	n = tc__chunk_count(j->src->table.total_bytes);
	j->chunks = tc__calloc(n ? n : 1, sizeof(*j->chunks));
	if (!j->chunks) {
		j->rc = -ENOMEM;
		return;
	}
	if (j->gpu) {
		import_run_gpu(j, n);
		return;
	}
	/* Tests: a host load slow enough for concurrent identical imports
	 * to find it still reading (and join it). */
	if (tc__failpoint("import_slow", j->display))
		nanosleep(&(struct timespec){ 1, 500000000 }, NULL);
	j->rc = tc__shm_prepare_fill(j->o->shm);
	if (j->rc < 0) {
		snprintf(j->err, sizeof(j->err), "cannot map segment: %s",
			 strerror(-j->rc));
		return;
	}
	struct tc__xfer x = { .from = TC_XFER_FROM_FILES,
			      .files = j->src,
			      .to = TC_XFER_TO_HOST,
			      .host_dst = j->o->shm->rw_map,
			      .host_fd = j->o->shm->fd,
			      .nthreads = j->io_threads,
			      .chunks = j->chunks,
			      .prog = &j->prog };

	j->rc = tc__xfer_run(&x, j->err, sizeof(j->err));
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
	/* A native folder's bytes must hash to its manifest's. */
	if (j->rc == 0)
		j->rc = tc__native_check(j->src, j->chunks, n, j->o->id, j->err,
					 sizeof(j->err));
	if (j->rc == 0)
		tc__srv_persist_write(&j->persist, j->o, j->chunks, n);
}

/* The client's ordinal is the daemon's (same CUDA environment): its
 * UUID, from the driver the tier opened. */
static int resolve_ref(struct import_job *j)
{
	struct tc__gpu_info info;
	int rc = tc__gpu_device_info(j->gpu_ref, &info, j->err, sizeof(j->err));

	if (rc == 0)
		memcpy(j->gpu_uuid, info.uuid, sizeof(j->gpu_uuid));
	return rc;
}

static void import_done(struct tc__job *job);

static void import_fail(struct import_job *j, int rc, const char *msg)
{
	struct conn *c = j->c;

	if (c->progress_job == j)
		c->progress_job = NULL;
	tc__srv_finish(c, &j->r, rc, msg, NULL, NULL);
	import_free(j);
}

/* Publish the key and reply; j->done_o is what the import inserted (or
 * the copy already held, dedup). */
static int import_reply(struct conn *c, const struct req *r, void *arg)
{
	struct import_job *j = arg;
	uint64_t gen;
	int rc;

	rc = tc__srv_publish_key(c, j->done_o->id, j->key, j->flags,
				 j->expect_gen, &j->gate, &gen);
	if (rc < 0) {
		/* The key moved while we loaded: what this import added
		 * goes again, so the failure leaves nothing. */
		tc__srv_key_gate_undo(c->srv, &j->gate, j->key, j->done_o->id);
		if (!j->done_dedup)
			tc__objs_discard_new(&c->srv->objs, j->done_o);
		return rc;
	}
	tc__durable_key_changed(c->srv->durable, &c->srv->objs, j->key);
	{
		/* A view: what the loader read, for the client's
		 * diagnostics. */
		uint64_t rd[2] = { j->gpu_stats.read_bytes,
				   j->gpu_stats.reads };

		tc__srv_reply_created_ex(c, r, j->done_o, j->done_ns,
					 j->done_dedup, gen, &j->persist, rd,
					 j->view ? 2 : 0);
	}
	return 0;
}

static void import_release(void *arg)
{
	import_free(arg);
}

static void import_done(struct tc__job *job)
{
	struct import_job *j = (struct import_job *)job;
	struct conn *c = j->c;
	struct server *s = c->srv;
	struct tc__obj *o;
	uint64_t ns;
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
			/* Straight to a GPU: a FILLING replica of that
			 * GPU's tier, not host memory; the artifact has no
			 * host replica. */
			rc = tc__gpu_tier_open_now(s->gpu, j->err,
						   sizeof(j->err));
			if (rc == 0 && j->gpu_ref >= 0)
				rc = resolve_ref(j);
			/* The GPU's spare allocation when it is of this
			 * size (a model replaced by one of its shape): no
			 * driver allocation, and no memory the driver has
			 * just freed to scrub under the copies. */
			if (rc == 0)
				rc = tc__gpu_tier_fill_begin(
					s->gpu, j->gpu_uuid,
					j->src->table.total_bytes, &j->gpu_fill,
					&j->gpu_dev, &j->gpu_charged, &j->gmem,
					j->err, sizeof(j->err));
			if (rc < 0) {
				import_fail(j, rc, j->err);
				return;
			}
		} else {
			/* A FILLING host replica: segment and table charge */
			rc = tc__srv_artifact_memory(s, j->o, bytes, extra,
						     j->policy, j->err,
						     sizeof(j->err));
			if (rc < 0) {
				import_fail(j, rc, j->err);
				return;
			}
		}
		j->o->policy = j->policy;
		snprintf(j->o->source, sizeof(j->o->source), "import:%s",
			 j->display);
		j->total_bytes = j->src->table.total_bytes;
		/* A write before the reply (the tee's too): its copy is a
		 * FILLING replica of the shared-disk tier from now. */
		tc__srv_persist_begin(s, &j->persist, j->total_bytes);
		j->phase = 2;
		if (j->gpu) {
			tc__gpu_tier_copy_begin(s->gpu);
			j->gpu_copying = true;
			vs_begin(s, j);
		}
		tc__jobs_submit(s->io_jobs, &j->job);
		/* The size is known now: tell a watching client at once. */
		if (c->progress_job == j && !c->closing) {
			c->progress_next_ms = 0;
			tc__srv_send_progress(c, tc__now_ms());
		}
		return;
	}
	/* Phase 2 finished: the artifact is complete and sealed. */
	if (c->progress_job == j)
		c->progress_job = NULL;
	vs_unlist(s, j);
	s->n_view_shared_bytes += j->vs_shared;
	ns = tc__now_ns() - j->t0_ns;
	j->o->load_seconds = (double)ns / 1e9;
	o = j->o;
	/* Tests: the insert fails after the global store moved the key. */
	rc = tc__failpoint("import_insert_fail", j->display) ?
		     -ENOMEM :
		     tc__objs_insert(&s->objs, j->o, &o);
	if (rc < 0) {
		tc__srv_key_gate_undo(s, &j->gate, j->key, j->o->id);
		import_fail(j, rc, "out of memory");
		return;
	}
	bool dedup = o != j->o;

	j->o = NULL; /* owned by the table now (or freed as a duplicate),
			and so is its charge */
	tc__gpu_tier_host_added(s->gpu, o);
	if (j->gpu) {
		/* The allocation becomes o's replica, READY (or goes with
		 * its fill when the same content is already on that GPU):
		 * the job owns neither it nor its charge from here. */
		tc__gpu_tier_fill_adopt(s->gpu, o, &j->gpu_fill, &j->gmem,
					j->gpu_seconds);
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
			"'%s'%s to GPU %d: %.2f GB/s, read with %s%s, %llu "
			"bytes with O_DIRECT, %llu bytes asked in %llu "
			"reads%s; first copy at %.1f ms, threads reading "
			"%.3f s and waiting for the bus %.3f s, %.1f ms "
			"after the last copy",
			j->display, j->view ? " (a view)" : "", j->gpu_dev,
			st->seconds > 0 ?
				(double)st->bytes / st->seconds / 1e9 :
				0.0,
			st->uring_bytes ? "io_uring" : "pread", why,
			(unsigned long long)st->direct_bytes,
			(unsigned long long)st->read_bytes,
			(unsigned long long)st->reads,
			st->tee_bytes ? ", the shared-disk copy written from "
					"the same read" :
					"",
			st->first_copy_seconds * 1e3, st->read_thread_seconds,
			st->wait_thread_seconds, st->tail_seconds * 1e3);
	}
	j->done_o = o;
	j->done_ns = ns;
	j->done_dedup = dedup;
	if (j->lead)
		lead_end(j, o);
	/* Recorded (or its write started) even when the client went; a
	 * failed must takes back what this import added. */
	c->err[0] = '\0';
	rc = tc__srv_persist_commit(c, &j->persist, o, j->chunks,
				    tc__chunk_count(o->table.total_bytes));
	if (rc < 0) {
		tc__srv_key_gate_undo(s, &j->gate, j->key, o->id);
		if (!dedup)
			tc__objs_discard_new(&s->objs, o);
	}
	snprintf(j->err, sizeof(j->err), "%s", c->err);
	tc__srv_finish_created(c, &j->r, rc, j->err, import_reply, j,
			       import_release, &j->persist, o);
}

/* ------------------------------------- concurrent view imports to GPUs */

/*
 * Views of one file or sharded folder loaded straight to different GPUs at
 * once (a tensor-parallel group's tc_import_view, one per rank) share the
 * reads of the byte ranges both views hold: the replicated tensors.  Each
 * such import is listed in s->viewing while it loads, with a view_share
 * that says when its bytes are in.  A later one of the same files (each
 * one's device, inode, size, modification time, in the same order) to
 * another GPU takes out of its own plan every run whose range lies inside
 * a run of the first's in the same file, loads
 * the rest, then copies those ranges from the first one's allocation (GPU
 * to GPU) and hashes its replica on its GPU.  The first one's job keeps
 * its allocation until its followers have copied (or a minute has passed:
 * then a follower still waiting reads its ranges itself, as it does when
 * the first one fails).  STATUS loader.view_shared_bytes counts the bytes
 * so copied instead of read.
 */
enum { VS_LOADING, VS_READY, VS_FAILED, VS_GONE };

#define VS_LEAD_WAIT_S	 60  /* a leader waits this long for followers */
#define VS_FOLLOW_WAIT_S 600 /* a follower, for its leader's load */

struct view_share {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* state, waiting and copying changes */
	int refs;	     /* the leader's job and each follower's */
	int state;	     /* VS_* */
	int waiting;	     /* followers not done with it yet */
	int copying;	     /* followers copying from `mem` now */
	const struct tc__gpu_mem *mem; /* the leader's allocation, READY */
};

static void vs_put(struct view_share *vs)
{
	int n;

	if (!vs)
		return;
	pthread_mutex_lock(&vs->lock);
	n = --vs->refs;
	pthread_mutex_unlock(&vs->lock);
	if (n)
		return;
	pthread_cond_destroy(&vs->cond);
	pthread_mutex_destroy(&vs->lock);
	tc__free(vs);
}

/* j's files as they are now (fstat of the fds the source holds): false
 * when one cannot be told. */
static bool vs_identify(struct import_job *j)
{
	uint32_t n = j->src->nfiles;

	j->vs_files = tc__calloc(n ? n : 1, sizeof(*j->vs_files));
	if (!j->vs_files)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		struct stat st;

		if (fstat(j->src->files[i].fd, &st) < 0)
			return false;
		j->vs_files[i] = file_id_of(&st);
	}
	return true;
}

/* The same files in the same order: one file, or the same shards of a
 * folder (whose runs then name the same file by the same index). */
static bool same_source(const struct import_job *a, const struct import_job *b)
{
	if (a->src->nfiles != b->src->nfiles)
		return false;
	for (uint32_t i = 0; i < a->src->nfiles; i++)
		if (!file_id_eq(&a->vs_files[i], &b->vs_files[i]))
			return false;
	return true;
}

/* One run's file range, when it is contiguous in the file. */
static bool run_range(const struct tc__load_run *r, uint64_t *off,
		      uint64_t *len)
{
	if (r->count > 1 && r->stride != r->len)
		return false;
	*off = r->off;
	*len = r->len * r->count;
	return true;
}

/* On the loop, as j's load is submitted: follow the first listed view
 * import of the same file to another GPU that reads some of j's runs
 * (moving those runs out of j's plan into j->vs_runs, each with where
 * it lies in the leader's byte space), then list j as a leader itself. */
static void vs_begin(struct server *s, struct import_job *j)
{
	struct tc__load_plan *p = &j->lplan;
	struct import_job *l;

	if (!j->gpu || !j->view || !vs_identify(j))
		return;
	for (l = s->viewing; l && !j->vs_from; l = l->next_viewing) {
		uint64_t k = 0, n = 0;

		if (l->gpu_dev == j->gpu_dev || !same_source(l, j))
			continue;
		j->vs_runs = tc__calloc(p->nruns ? p->nruns : 1,
					sizeof(*j->vs_runs));
		j->vs_src =
			tc__calloc(p->nruns ? p->nruns : 1, sizeof(*j->vs_src));
		if (!j->vs_runs || !j->vs_src)
			break;
		/* Where each run lies in the leader's byte space, if it
		 * does; at least one run stays j's own (the loader wants a
		 * plan with runs). */
		for (uint64_t i = 0; i < p->nruns; i++) {
			const struct tc__load_run *r = &p->runs[i];
			uint64_t ro, rl, qo, ql;

			j->vs_src[i] = UINT64_MAX;
			if (!run_range(r, &ro, &rl) || rl < TC_VIEW_PART_MIN)
				continue;
			for (uint64_t q = 0; q < l->lplan.nruns; q++) {
				const struct tc__load_run *w =
					&l->lplan.runs[q];

				if (w->file == r->file &&
				    run_range(w, &qo, &ql) && qo <= ro &&
				    ro + rl <= qo + ql) {
					j->vs_src[i] = w->dst + (ro - qo);
					n++;
					break;
				}
			}
		}
		if (n && n == p->nruns) {
			j->vs_src[0] = UINT64_MAX;
			n--;
		}
		if (!n) {
			tc__free(j->vs_runs);
			tc__free(j->vs_src);
			j->vs_runs = NULL;
			j->vs_src = NULL;
			continue;
		}
		/* Move the shared runs out of the plan, in order (vs_src is
		 * compacted alongside: entry n <= entry i). */
		n = 0;
		for (uint64_t i = 0; i < p->nruns; i++) {
			if (j->vs_src[i] == UINT64_MAX) {
				p->runs[k++] = p->runs[i];
				continue;
			}
			j->vs_runs[n] = p->runs[i];
			j->vs_src[n++] = j->vs_src[i];
		}
		p->nruns = k;
		j->vs_nruns = n;
		j->vs_from = l->vs;
		pthread_mutex_lock(&l->vs->lock);
		l->vs->refs++;
		l->vs->waiting++;
		pthread_mutex_unlock(&l->vs->lock);
		tc__log(TC_LOG_DEBUG,
			"view import of '%s' to GPU %d takes %llu runs from "
			"the one to GPU %d",
			j->display, j->gpu_dev, (unsigned long long)n,
			l->gpu_dev);
	}
	j->vs = tc__calloc(1, sizeof(*j->vs));
	if (!j->vs)
		return;
	pthread_mutex_init(&j->vs->lock, NULL);
	pthread_cond_init(&j->vs->cond, NULL);
	j->vs->refs = 1;
	j->vs->state = VS_LOADING;
	j->next_viewing = s->viewing;
	s->viewing = j;
}

/* On the loop: j's load is over; no later import may follow it. */
static void vs_unlist(struct server *s, struct import_job *j)
{
	for (struct import_job **pp = &s->viewing; *pp;
	     pp = &(*pp)->next_viewing)
		if (*pp == j) {
			*pp = j->next_viewing;
			break;
		}
}

/* On the worker, the leader's load is done (rc): followers may copy. */
static void vs_ready(struct import_job *j, int rc)
{
	if (!j->vs)
		return;
	/* Tests: followers find their leader failed (and read themselves)
	 * while the leader's own import goes on. */
	if (rc == 0 && tc__failpoint("import_view_lead_fail", j->display))
		rc = -EIO;
	pthread_mutex_lock(&j->vs->lock);
	if (j->vs->state == VS_LOADING) {
		j->vs->state = rc == 0 ? VS_READY : VS_FAILED;
		j->vs->mem = &j->gmem;
		pthread_cond_broadcast(&j->vs->cond);
	}
	pthread_mutex_unlock(&j->vs->lock);
}

/* On the worker, before the leader's job gives its allocation up: wait
 * for the followers (at most VS_LEAD_WAIT_S), then for any copy still
 * reading it. */
static void vs_lead_end(struct import_job *j)
{
	struct view_share *vs = j->vs;
	struct timespec until;

	if (!vs)
		return;
	vs_ready(j, -ECANCELED); /* failed before its load ended */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += VS_LEAD_WAIT_S;
	pthread_mutex_lock(&vs->lock);
	while (vs->waiting > 0 && vs->state == VS_READY &&
	       pthread_cond_timedwait(&vs->cond, &vs->lock, &until) == 0)
		;
	vs->state = VS_GONE;
	pthread_cond_broadcast(&vs->cond);
	while (vs->copying > 0)
		pthread_cond_wait(&vs->cond, &vs->lock);
	pthread_mutex_unlock(&vs->lock);
}

/* On the worker, the follower's own load failed: it copies nothing. */
static int vs_abandon(struct import_job *j, int rc)
{
	struct view_share *vs = j->vs_from;

	pthread_mutex_lock(&vs->lock);
	vs->waiting--;
	pthread_cond_broadcast(&vs->cond);
	pthread_mutex_unlock(&vs->lock);
	return rc;
}

/* On the worker, after the follower's own load: its shared runs, copied
 * from the leader's GPU, or read here when the leader failed or went;
 * then the digests of the whole byte space (on its GPU). */
static int vs_follow(struct import_job *j, uint64_t nbytes)
{
	struct view_share *vs = j->vs_from;
	struct timespec until;
	bool copy;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += VS_FOLLOW_WAIT_S;
	pthread_mutex_lock(&vs->lock);
	while (vs->state == VS_LOADING &&
	       pthread_cond_timedwait(&vs->cond, &vs->lock, &until) == 0)
		;
	copy = vs->state == VS_READY;
	if (copy)
		vs->copying++;
	pthread_mutex_unlock(&vs->lock);
	for (uint64_t i = 0; copy && rc == 0 && i < j->vs_nruns; i++) {
		const struct tc__load_run *r = &j->vs_runs[i];

		rc = tc__gpu_peer_copy(&j->gmem, r->dst, vs->mem, j->vs_src[i],
				       r->len * r->count, NULL, j->err,
				       sizeof(j->err));
		if (rc == 0)
			j->vs_shared += r->len * r->count;
	}
	pthread_mutex_lock(&vs->lock);
	if (copy)
		vs->copying--;
	vs->waiting--;
	pthread_cond_broadcast(&vs->cond);
	pthread_mutex_unlock(&vs->lock);
	if (!copy || rc < 0) {
		/* Read them here: the same runs, one buffer each. */
		struct tc__load_plan one = { .nruns = 1 };

		if (rc < 0)
			tc__log(TC_LOG_WARN,
				"view import of '%s': cannot copy from the "
				"other GPU (reading instead): %s",
				j->display, j->err);
		j->vs_shared = 0;
		rc = 0;
		for (uint64_t i = 0; rc == 0 && i < j->vs_nruns; i++) {
			struct tc__load_run r = j->vs_runs[i];
			uint64_t len = r.len * r.count, cur = 0;
			uint8_t *buf = tc__malloc(len);

			if (!buf) {
				rc = -ENOMEM;
				break;
			}
			r.dst = 0;
			one.runs = &r;
			one.size = len;
			rc = tc__load_plan_range(j->src, &one, buf, 0, len,
						 &cur, false, NULL, j->err,
						 sizeof(j->err));
			if (rc == 0)
				rc = tc__gpu_mem_write(&j->gmem,
						       j->vs_runs[i].dst, buf,
						       len, NULL, j->err,
						       sizeof(j->err));
			tc__free(buf);
		}
	}
	if (rc == 0)
		rc = tc__gpu_hash_chunks(&j->gmem, nbytes, j->io_threads,
					 j->chunks, j->err, sizeof(j->err));
	return rc;
}

/* ------------------------------------------- concurrent identical imports */

/* A host import of one regular file, with nothing that makes it its own:
 * no GPU, view, shards or TTL, no shared-disk copy, no key the global
 * store decides. */
static bool joinable(const struct import_job *j)
{
	return !(j->flags &
		 (TC_RF_GPU | TC_RF_SHARDS | TC_RF_VIEW | TC_RF_TTL)) &&
	       !j->persist.on && !j->gate.on;
}

/* Join a leader reading the same file for the same policy; false when
 * there is none.  A follower that asked for progress frames gets none
 * (only a reader sends them), then its answer. */
static bool join(struct server *s, struct import_job *j)
{
	struct import_job *l;

	for (l = s->importing; l; l = l->next_lead)
		if (file_id_eq(&l->fid, &j->fid) && l->policy == j->policy)
			break;
	if (!l)
		return false;
	j->next_joined = l->joined;
	l->joined = j;
	s->n_import_joined++;
	tc__log(TC_LOG_DEBUG,
		"import of '%s' joins the one reading it already (pid %d)",
		j->display, (int)l->c->pid);
	return true;
}

/* Answer a follower with `o`, which its leader inserted: an import of
 * content already held. */
static void follower_done(struct import_job *f, struct tc__obj *o)
{
	struct conn *c = f->c;

	if (c->progress_job == f)
		c->progress_job = NULL;
	f->done_o = o;
	f->done_ns = tc__now_ns() - f->t0_ns;
	f->done_dedup = true;
	c->srv->n_import++;
	tc__log(TC_LOG_INFO,
		"imported '%s' as %s: read once for this and a concurrent "
		"import of the same file, in %.3f s",
		f->display, o->id, (double)f->done_ns / 1e9);
	c->err[0] = '\0';
	tc__srv_finish_created(c, &f->r, 0, "", import_reply, f, import_release,
			       &f->persist, o);
}

/* The leader j is done: with o, every follower is answered with it;
 * without (j failed), each reads on its own now. */
static void lead_end(struct import_job *j, struct tc__obj *o)
{
	struct server *s = j->s;
	struct import_job *f, *next;

	for (struct import_job **pp = &s->importing; *pp;
	     pp = &(*pp)->next_lead)
		if (*pp == j) {
			*pp = j->next_lead;
			break;
		}
	j->lead = false;
	f = j->joined;
	j->joined = NULL;
	for (; f; f = next) {
		next = f->next_joined;
		if (o)
			follower_done(f, o);
		else if (s->stopping)
			import_fail(f, TC_ECLOSED,
				    "the daemon is shutting down");
		else
			tc__jobs_submit(s->io_jobs, &f->job);
	}
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

int on_import(struct conn *c, struct req *r)
{
	struct import_job *j;
	uint64_t ttl_ms = 0;
	char policy[32];
	struct stat st;
	int rc;

	if (r->nfds != 1) {
		snprintf(c->err, sizeof(c->err),
			 "IMPORT needs exactly one fd (the file or folder)");
		return TC_EPROTO;
	}
	j = tc__calloc(1, sizeof(*j));
	if (j)
		j->gpu_ref = -1;
	if (!j)
		return -ENOMEM;
	j->fd = -1;
	if ((rc = tc__srv_read_str(c, r, "path", j->display,
				   sizeof(j->display))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "key", j->key, sizeof(j->key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "policy", policy, sizeof(policy))) < 0)
		goto out_free;
	if (tc__cur_read_u32(&r->body, &j->flags) < 0 ||
	    tc__cur_read_u64(&r->body, &j->expect_gen) < 0 ||
	    ((j->flags & TC_RF_TTL) &&
	     tc__cur_read_u64(&r->body, &ttl_ms) < 0)) {
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
		bool same_env;
		int k;

		rc = tc__srv_read_str(c, r, "GPU uuid", uuid, sizeof(uuid));
		if (rc < 0)
			goto out_free;
		k = tc__gpu_ordinal_ref_parse(uuid, &j->gpu_ref, &same_env);
		if (k == 1 && !same_env) {
			snprintf(
				c->err, sizeof(c->err),
				"cannot resolve the client's GPU '%.200s': its "
				"CUDA environment is not the daemon's, so its "
				"ordinals may not be; name the GPU by UUID",
				uuid);
			rc = TC_EDEVICE;
			goto out_free;
		}
		if (k == 0 && tc__gpu_uuid_parse(uuid, j->gpu_uuid) < 0)
			k = TC_EINVAL;
		if (k < 0) {
			snprintf(c->err, sizeof(c->err), "bad GPU uuid '%s'",
				 uuid);
			rc = TC_EINVAL;
			goto out_free;
		}
		j->gpu = true;
	}
	if (j->flags & TC_RF_VIEW) {
		if (!j->gpu) {
			snprintf(c->err, sizeof(c->err),
				 "IMPORT of a view (TC_RF_VIEW) loads "
				 "straight to a GPU only (TC_RF_GPU)");
			rc = TC_ENOTSUP;
			goto out_free;
		}
		rc = tc__proto_get_view_spec(&r->body, &j->view, c->err,
					     sizeof(c->err));
		if (rc < 0)
			goto out_free;
	}
	if (j->flags & TC_RF_SHARDS) {
		rc = read_shard_names(c, r, j);
		if (rc < 0)
			goto out_free;
	}
	if ((rc = tc__srv_body_end(c, r)) < 0)
		goto out_free;
	rc = tc__policy_parse(policy, &j->policy, c->err, sizeof(c->err));
	if (rc == 0)
		rc = tc__srv_persist_prepare(c, &j->persist, j->policy,
					     j->flags, ttl_ms);
	if (rc < 0)
		goto out_free;
	/* A key the import could never publish under (a bad name, a CAS
	 * generation that does not match) fails now: before anything is
	 * read, reserved or evicted.  publish_key checks again at the end. */
	/* In a cluster the generation is the global store's: it decides
	 * the compare-and-swap once the id is known (struct key_gate). */
	rc = tc__srv_key_gate_init(c, &j->gate, j->key, j->flags);
	if (rc == 0)
		rc = tc__objs_key_precheck(
			&c->srv->objs, j->key,
			(j->flags & TC_RF_EXPECT) && !j->gate.on, j->expect_gen,
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
	j->s = c->srv;
	j->r = *r;
	j->phase = 1;
	j->io_threads = c->srv->cfg->io_threads;
	j->gpu_threads = tc__cfg_gpu_load_threads(c->srv->cfg);
	j->io_engine = c->srv->cfg->io_engine;
	j->t0_ns = tc__now_ns();
	j->job.run = import_run;
	j->job.done = import_done;
	tc__srv_defer(c);
	if (j->flags & TC_RF_PROGRESS) {
		c->progress_job = j;
		c->progress_req = r->h.req_id;
		c->progress_next_ms = tc__now_ms() + PROGRESS_MS;
	}
	if (joinable(j)) {
		j->fid = file_id_of(&st);
		if (join(c->srv, j))
			return 0; /* answered when the leader is done */
		j->lead = true;
		j->next_lead = c->srv->importing;
		c->srv->importing = j;
	}
	tc__jobs_submit(c->srv->io_jobs, &j->job);
	return 0; /* the reply comes when the job is done */

out_free:
	for (uint32_t i = 0; i < j->nshards; i++)
		tc__free(j->shard_names[i]);
	tc__free(j->shard_names);
	tc__free(j->view);
	tc__free(j);
	return rc;
}

void tc__srv_send_progress(struct conn *c, uint64_t now_ms)
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
