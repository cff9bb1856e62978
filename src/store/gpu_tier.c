/*
 * gpu_tier.c - GPU replicas of artifacts: lazy driver load, per-device
 * budgets, fill jobs, leases, LRU eviction.
 *
 * State machine of the tier: CLOSED (driver never asked for) -> OPENING (a
 * job loads the driver and lists devices; requests queue) -> OPEN, or
 * FAILED (sticky: every request gets the load error).  A replica is created
 * by the first request for (artifact, device): budget reserved on the loop
 * (an evicted replica of the same size may give its allocation), then a
 * job allocates unless given one, copies from the pinned host mapping or
 * through staging rings, and zeroes the tail; requests for it meanwhile
 * wait on the replica.  Host mappings are pinned by background jobs that
 * yield to every GPU copy (pin_later).  Only done() callbacks and the
 * tier's functions (here and in the two files named below) touch tier
 * state, all on the loop thread.
 *
 * Each device is a struct tc__tier and each replica embeds a struct
 * tc__replica (replica.h): the budget, the LRU, leases and the choice of
 * victims are the shared core's; this file says how a victim goes
 * (gpu_evict, which may hand its allocation to the next fill) and words
 * a refusal (gpu_refuse).
 *
 * Where a fill copies from besides the host replica (sibling GPUs, other
 * views' replicas) is gpu_tier_sources.c; what the tier shows (status,
 * metrics, inspect) is gpu_tier_json.c; gpu_tier_internal.h is what the
 * three share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "config.h"
#include "xfer/gpu_loader.h"
#include "gpu_tier_internal.h"
#include "metrics.h"
#include "xfer/jobs.h"
#include "xfer/xfer.h"
#include "net/ev.h"
#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"

/* ------------------------------------------------------ replicas, tiers */

static struct tc__obj_gpu *obj_gpu(struct tc__gpu_tier *t, struct tc__obj *o);

/* A ready replica is announced to the peer server (which serves it when
 * the artifact has no host replica here) and the cluster (a source of
 * tier gpu); withdrawn before its memory goes.  An artifact removed
 * while leased keeps its replicas for its clients only. */
static void replica_announce(struct tc__gpu_tier *t, struct tc__gpu_replica *r,
			     bool up)
{
	if (up == r->announced || (up && (r->o->dead || !r->o->nchunks)))
		return;
	r->announced = up;
	tc__objs_notify_gpu(t->objs, r->o->id, r->o, gt_dev_index(t, r->dev),
			    r->mem.dptr, r->mem.size, up);
}

/* Free a replica (filling after a failed fill, or ready and unleased but
 * at daemon exit): uncharge, unmap, release -- or, with `keep`, hand its
 * allocation (mapping and exported fd) over instead. */
static void replica_free_keep(struct tc__gpu_tier *t, struct tc__gpu_replica *r,
			      struct tc__gpu_mem *keep)
{
	struct tc__gpu_dev *d = r->dev;

	replica_announce(t, r, false);
	r->o->gpu->rep[gt_dev_index(t, d)] = NULL;
	/* Leased only at daemon exit (obj_gpu_free): forced. */
	tc__replica_gone(&r->base, true);
	d->nreplicas--;
	if (keep) {
		*keep = r->mem;
		tc__gpu_mem_init(&r->mem);
	}
	/* Off the loop: cuMemRelease of 8 GiB is 5-7 ms. */
	tc__gpu_release_later(&r->mem);
	tc__free(r);
}

/* ---------------------------------------------------------------- spare */

/* Drop the device's spare: uncharged, its allocation released. */
static void spare_drop(struct tc__gpu_dev *d)
{
	struct tc__gpu_replica *sp = d->spare;

	if (!sp)
		return;
	d->spare = NULL;
	tc__replica_gone(&sp->base, true);
	tc__gpu_release_later(&sp->mem);
	tc__free(sp);
}

/*
 * Keep `mem` (an allocation nobody maps any more, its charge already
 * given back) as d's spare when the daemon keeps one, d has none and its
 * bytes fit the budget without evicting anything; else release it.
 * Whatever it held stays in it: every client of the daemon may read
 * every artifact (one uid, docs/gpu.md), and a put overwrites it all.
 */
static void spare_keep(struct tc__gpu_tier *t, struct tc__gpu_dev *d,
		       struct tc__gpu_mem *mem)
{
	struct tc__gpu_replica *sp = NULL;
	char err[256];

	if (!mem->dptr)
		return;
	if (t->cfg->gpu_spare && !t->stopping && !d->spare &&
	    (sp = tc__calloc(1, sizeof(*sp)))) {
		tc__replica_init(&sp->base);
		if (tc__replica_fill(&sp->base, &d->tier, mem->size, false,
				     NULL, err, sizeof(err)) == 0) {
			sp->dev = d;
			sp->mem = *mem;
			sp->fill_src = -2;
			tc__gpu_mem_init(mem);
			tc__replica_ready(&sp->base);
			tc__replica_age(&sp->base); /* the first victim */
			d->spare = sp;
			d->spare_since_ms = tc__now_ms();
			d->spares_kept++;
			return;
		}
		tc__free(sp);
	}
	tc__gpu_release_later(mem);
}

/* Move d's spare into *reuse when it is exactly `bytes`; true if so. */
static bool spare_take(struct tc__gpu_dev *d, uint64_t bytes,
		       struct tc__gpu_mem *reuse)
{
	struct tc__gpu_replica *sp = d->spare;

	if (!sp || sp->mem.size != bytes)
		return false;
	d->spare = NULL;
	tc__replica_gone(&sp->base, true);
	*reuse = sp->mem;
	tc__free(sp);
	d->spares_used++;
	return true;
}

/* A replica whose artifact is gone (removed, expired, freed): its
 * allocation may become the device's spare. */
void tc__gt_replica_free(struct tc__gpu_tier *t, struct tc__gpu_replica *r)
{
	struct tc__gpu_dev *d = r->dev;
	struct tc__gpu_mem keep;

	if (!gt_ready(r) || r->no_reuse) {
		replica_free_keep(t, r, NULL);
		return;
	}
	tc__gpu_mem_init(&keep);
	replica_free_keep(t, r, &keep);
	spare_keep(t, d, &keep);
}

/* A victim chosen by the device's tier (tc__tier_evict: unleased, ready,
 * least recently used first).  With `ctx` (a struct tc__gpu_mem *reuse),
 * the first victim whose allocation is exactly reuse->size bytes is not
 * released but moved into *reuse: a new replica of that size is filled in
 * it, because memory the driver has just freed is scrubbed while the next
 * copy runs (measured on an H200: a 16 GiB copy into a new allocation made
 * right after freeing as much ran at 49 GB/s, at 54-55 otherwise). */
static bool gpu_evict(struct tc__tier *tier, struct tc__replica *b, void *ctx)
{
	struct tc__gpu_tier *t = tier->arg;
	struct tc__gpu_dev *d = gt_dev_of(tier);
	struct tc__gpu_replica *r = gt_rep_of(b);
	struct tc__gpu_mem *reuse = ctx;
	struct tc__obj *o = r->o;

	if (r == d->spare) {
		if (!(reuse && !reuse->dptr &&
		      spare_take(d, reuse->size, reuse)))
			spare_drop(d);
		return false; /* no artifact lost a copy */
	}
	tc__log(TC_LOG_INFO,
		"evicting GPU %d replica of '%s' (%llu bytes) to make room",
		gt_dev_index(t, d), o->id, (unsigned long long)r->base.bytes);
	if (reuse && !reuse->dptr && !r->no_reuse &&
	    r->mem.size == reuse->size) {
		d->reused++;
		replica_free_keep(t, r, reuse);
	} else {
		replica_free_keep(t, r, NULL); /* room: never the spare */
	}
	/* An artifact held only on GPUs is gone with its last replica. */
	if (!o->shm && tc__gpu_tier_obj_empty(o))
		tc__objs_kill(t->objs, o);
	return true;
}

/* Why `bytes` do not fit on the device: what clients hold, what is being
 * filled (FILLING replicas: attach fills, imports, restores and puts to
 * this GPU, bindings before their first fill) and what bindings hold
 * (READY private replicas, never victims). */
static void gpu_refuse(struct tc__tier *tier, uint64_t bytes, bool too_big,
		       char *err, size_t errlen)
{
	struct tc__gpu_dev *d = gt_dev_of(tier);
	int i = gt_dev_index(tier->arg, d);
	uint64_t bound = tier->used - tier->filling_bytes;
	char extra[64] = "";

	if (too_big) {
		snprintf(err, errlen,
			 "needs %llu bytes but the budget of GPU %d (%s) is "
			 "%llu bytes",
			 (unsigned long long)bytes, i, d->info.uuid_str,
			 (unsigned long long)tier->budget);
		return;
	}
	for (struct tc__gpu_replica *r = gt_ready_first(d); r;
	     r = gt_ready_next(r))
		bound -= r->base.bytes;
	if (bound)
		snprintf(extra, sizeof(extra), ", %llu bound",
			 (unsigned long long)bound);
	snprintf(err, errlen,
		 "GPU %d budget exhausted: need %llu bytes, %llu of "
		 "%llu free; %llu held by clients, %llu being filled%s",
		 i, (unsigned long long)bytes,
		 (unsigned long long)(tier->budget - tier->used),
		 (unsigned long long)tier->budget,
		 (unsigned long long)tier->leased_bytes,
		 (unsigned long long)tier->filling_bytes, extra);
}

static const struct tc__tier_ops gpu_tier_ops = {
	.evict = gpu_evict,
	.refuse = gpu_refuse,
};

/* Evict unleased ready replicas of `d` until `need` more bytes fit (need
 * 0: until `want` bytes were freed).  Returns the number evicted. */
static uint32_t evict(struct tc__gpu_dev *d, uint64_t need, uint64_t want,
		      struct tc__gpu_mem *reuse)
{
	return tc__tier_evict(&d->tier, need, want, reuse);
}

/* Charge `bytes` to d as replica `r`'s fill (FILLING), evicting unleased
 * replicas if needed, and keeping an allocation of `bytes` for reuse,
 * when `reuse` is given and a victim has one (reuse->dptr is then
 * non-zero).  Every charge of a GPU tier is a replica's: no raw
 * reservation. */
static int reserve(struct tc__gpu_dev *d, struct tc__replica *r, uint64_t bytes,
		   struct tc__gpu_mem *reuse, char *err, size_t errlen)
{
	int rc;

	if (reuse) {
		tc__gpu_mem_init(reuse);
		reuse->size = bytes;
	}
	rc = tc__replica_fill(r, &d->tier, bytes, true, reuse, err, errlen);
	if (reuse && !reuse->dptr)
		tc__gpu_mem_init(reuse); /* nothing kept: size back to 0 */
	if (rc < 0 && reuse)
		tc__gpu_release(reuse);
	return rc;
}

/* ------------------------------------------------------------ lifecycle */

int tc__gpu_tier_new(const struct tc__store_config *cfg, struct tc__objs *objs,
		     struct tc__jobs *jobs, struct tc__jobs *follow_jobs,
		     struct tc__gpu_tier **out)
{
	struct tc__gpu_tier *t = tc__calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->cfg = cfg;
	t->objs = objs;
	t->jobs = jobs;
	t->follow_jobs = follow_jobs;
	t->state = GT_CLOSED;
	*out = t;
	return 0;
}

static void pin_drop_parked(struct tc__gpu_tier *t);

void tc__gpu_tier_stop(struct tc__gpu_tier *t)
{
	t->stopping = true;
	for (int i = 0; i < t->ndev; i++)
		spare_drop(&t->devs[i]);
	pin_drop_parked(t); /* before the mappings go */
}

void tc__gpu_tier_free(struct tc__gpu_tier *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->ndev; i++)
		spare_drop(&t->devs[i]); /* a start that failed skips stop */
	for (int i = 0; i < t->ndev; i++)
		if (t->devs[i].nreplicas)
			tc__log(TC_LOG_WARN,
				"GPU %d: %u replicas outlive the tier", i,
				t->devs[i].nreplicas);
	tc__gpu_release_wait(); /* before the driver goes */
	if (t->state == GT_OPEN)
		tc__gpu_stage_pool_drain(); /* every job has ended */
	tc__free(t);
}

/* ------------------------------------------------------------- requests */

static void req_free(struct tc__gpu_tier *t, struct gt_req *q)
{
	struct tc__obj *o = q->o;

	tc__free(q);
	tc__objs_unlease(t->objs, o); /* may free a removed artifact */
}

static void fill_run(struct tc__job *job);
static void fill_done(struct tc__job *job);

/* Loop: run a fill job on its pool. */
static void fill_submit(struct tc__gpu_tier *t, struct fill_job *j)
{
	tc__jobs_submit(j->gated_len ? t->follow_jobs : t->jobs, &j->job);
}

/* Route q to its device: 0 with *rep ready, 1 when q now waits on a fill
 * (owned by the replica), or an error (q still the caller's). */
static int route(struct tc__gpu_tier *t, struct gt_req *q,
		 struct tc__gpu_replica **rep, char *err, size_t errlen)
{
	struct tc__obj *o = q->o;
	struct tc__gpu_replica *r, *sib;
	struct tc__gpu_dev *d = NULL;
	struct fill_job *j;
	uint64_t gran, bytes;
	int i, rc;

	*rep = NULL;
	if (t->stopping) {
		snprintf(err, errlen, "the daemon is shutting down");
		return TC_ECLOSED;
	}
	if (q->by_uuid) {
		char s[TC_GPU_UUID_STRLEN];

		for (i = 0; i < t->ndev; i++)
			if (!memcmp(t->devs[i].info.uuid, q->uuid,
				    TC_GPU_UUID_BYTES)) {
				d = &t->devs[i];
				break;
			}
		tc__gpu_uuid_format(q->uuid, s);
		if (!d) {
			snprintf(err, errlen,
				 "GPU '%s' is not visible to the daemon (it "
				 "sees %d GPUs; check CUDA_VISIBLE_DEVICES of "
				 "the daemon)",
				 s, t->ndev);
			return TC_EDEVICE;
		}
		if (q->device != TC_GPU_ANY_DEVICE &&
		    q->device != (uint32_t)i) {
			snprintf(err, errlen,
				 "GPU '%s' is the daemon's GPU %d, not %u", s,
				 i, q->device);
			return TC_EINVAL;
		}
	} else {
		if (q->device >= (uint32_t)t->ndev) {
			snprintf(err, errlen,
				 "no GPU %u in the daemon (it sees %d GPUs)",
				 q->device, t->ndev);
			return TC_EDEVICE;
		}
		i = (int)q->device;
		d = &t->devs[i];
	}
	if (!d->info.vmm || !d->info.posix_fd) {
		snprintf(err, errlen,
			 "GPU %d (%s) cannot share memory as POSIX fds (no "
			 "VMM or no POSIX-fd handles)",
			 i, d->info.name);
		return TC_ENOTSUP;
	}
	r = o->gpu ? o->gpu->rep[i] : NULL;
	if (r && gt_ready(r)) {
		tc__replica_touch(&r->base);
		*rep = r;
		return 0;
	}
	if (r) {
		q->next = r->waiters;
		r->waiters = q;
		return 1;
	}
	if (!obj_gpu(t, o))
		return -ENOMEM;
	sib = tc__gt_sibling_of(t, o, i);
	if (!o->shm && !sib) {
		snprintf(
			err, errlen,
			"'%s' is held on other GPUs only (imported straight to "
			"a GPU) and none of them is ready to copy from; "
			"attach it there or import it again",
			o->id);
		return TC_ENOTSUP;
	}
	gran = d->gran ? d->gran : GT_DEFAULT_GRAN;
	bytes = o->table.total_bytes ? o->table.total_bytes : 1;
	bytes = (bytes + gran - 1) / gran * gran;
	r = tc__calloc(1, sizeof(*r));
	j = tc__calloc(1, sizeof(*j));
	if (!r || !j) {
		tc__free(r);
		tc__free(j);
		return -ENOMEM;
	}
	tc__replica_init(&r->base);
	r->fill_src = -1;
	/* The spare allocation when it is of this size (its charge goes
	 * and this fill's comes), else a victim's of this size if room must
	 * be made: either way no allocation, and nothing freshly freed for
	 * the driver to scrub under the copy. */
	tc__gpu_mem_init(&j->mem);
	if (spare_take(d, bytes, &j->mem))
		rc = reserve(d, &r->base, bytes, NULL, err, errlen);
	else
		rc = reserve(d, &r->base, bytes, &j->mem, err, errlen);
	if (rc < 0) {
		tc__gpu_release_later(&j->mem); /* taken, then refused */
		tc__free(r);
		tc__free(j);
		return rc;
	}
	r->o = o;
	r->dev = d;
	tc__gpu_mem_init(&r->mem);
	o->gpu->rep[i] = r;
	d->nreplicas++;

	j->t = t;
	j->r = r;
	j->o = o;
	j->ordinal = i;
	j->src = o->shm ? o->shm->map : NULL;
	j->src_bytes = o->table.total_bytes;
	j->map_bytes = o->shm ? o->shm->size : 0;
	j->alloc_bytes = bytes;
	j->pf.dst = i;
	j->pf.bytes = j->src_bytes;
	j->pf.has_host = j->src != NULL;
	tc__gpu_tier_peer_choose(t, o, &j->pf);
	j->chunks = o->chunks;
	if (j->pf.sib_dev < 0) {
		tc__gt_parts_choose(t, o, j);
		tc__gt_lead_begin(t, o, r, j);
	}
	/* A pinned host replica is copied from directly.  Otherwise large
	 * ones go through staging rings (pinning 16 GiB first would cost
	 * more than the copy: 0.5-1 s) and are pinned in the background,
	 * off the clients' path (pin_later: from their seal, or after this
	 * fill); small ones are pinned first, once. */
	if (!o->shm || (j->pf.use_peer && !j->pf.probe)) {
		/* The host replica plays no part. */
	} else if (o->gpu->reg_state == GT_REG_DONE) {
		j->pin = o->gpu->pin; /* stays pinned: the job holds o */
	} else if (o->table.total_bytes >= GT_STAGE_MIN) {
		j->staged = true;
		j->nthreads = t->cfg->io_threads; /* at most: see copy_host */
	} else if (o->gpu->reg_state == GT_REG_NONE) {
		o->gpu->reg_state = GT_REG_BUSY;
		j->do_register = true;
	}
	j->reused = j->mem.dptr != 0;
	j->job.run = fill_run;
	j->job.done = fill_done;
	tc__objs_lease(t->objs, o); /* the job's own hold */
	t->copies_running++;
	q->next = NULL;
	r->waiters = q;
	fill_submit(t, j);
	return 1;
}

/* Answer a request that waited for the driver. */
static void answer_routed(struct tc__gpu_tier *t, struct gt_req *q)
{
	struct tc__gpu_replica *rep;
	char err[512];
	int rc;

	err[0] = '\0';
	rc = route(t, q, &rep, err, sizeof(err));
	if (rc == 1)
		return; /* waits on a fill now */
	q->cb(q->arg, q->o, rep, rc, err);
	req_free(t, q);
}

static void open_run(struct tc__job *job)
{
	struct open_job *j = (struct open_job *)job;
	const char *path = NULL;
	int n;

	j->rc = tc__gpu_init(j->err, sizeof(j->err));
	if (j->rc < 0)
		return;
	if (tc__gpu_driver_version(&j->version, &path, NULL, 0) == 0 && path)
		snprintf(j->path, sizeof(j->path), "%s", path);
	n = tc__gpu_device_count(j->err, sizeof(j->err));
	if (n < 0) {
		j->rc = n;
		return;
	}
	if (n > TC_GPU_TIER_MAX_DEV)
		n = TC_GPU_TIER_MAX_DEV;
	for (int i = 0; i < n; i++) {
		j->rc = tc__gpu_device_info(i, &j->infos[i], j->err,
					    sizeof(j->err));
		if (j->rc < 0)
			return;
	}
	j->ndev = n;
}

static void open_done(struct tc__job *job)
{
	struct open_job *j = (struct open_job *)job;
	struct tc__gpu_tier *t = j->t;
	struct gt_req *q, *next, *list = NULL;

	/* Answer in arrival order. */
	for (q = t->open_waiters; q; q = next) {
		next = q->next;
		q->next = list;
		list = q;
	}
	t->open_waiters = NULL;
	if (j->rc < 0) {
		t->state = GT_FAILED;
		t->open_rc = j->rc == TC_ECUDA || j->rc == -ENOMEM ? j->rc :
								     TC_ENODEV;
		snprintf(t->open_err, sizeof(t->open_err),
			 "the daemon cannot use GPUs: %s", j->err);
		tc__log(TC_LOG_WARN, "%s", t->open_err);
		for (q = list; q; q = next) {
			next = q->next;
			q->cb(q->arg, q->o, NULL, t->open_rc, t->open_err);
			req_free(t, q);
		}
		tc__free(j);
		return;
	}
	t->state = GT_OPEN;
	t->ndev = j->ndev;
	t->driver_version = j->version;
	snprintf(t->driver_path, sizeof(t->driver_path), "%s", j->path);
	for (int i = 0; i < t->ndev; i++) {
		struct tc__gpu_dev *d = &t->devs[i];
		uint64_t total = j->infos[i].total_bytes, budget;

		d->info = j->infos[i];
		if (t->cfg->gpu_bytes) {
			budget = t->cfg->gpu_bytes;
			if (budget > total) {
				tc__log(TC_LOG_WARN,
					"gpu_memory %llu bytes exceeds GPU "
					"%d's %llu bytes: using all of it",
					(unsigned long long)budget, i,
					(unsigned long long)total);
				budget = total;
			}
		} else {
			budget =
				(uint64_t)((unsigned __int128)total *
					   (unsigned)t->cfg->gpu_percent / 100);
		}
		snprintf(d->name, sizeof(d->name), "GPU %d", i);
		tc__tier_init(&d->tier, d->name, budget, &gpu_tier_ops, t);
		tc__log(TC_LOG_INFO,
			"GPU %d: %s %s (%s), %llu bytes, budget %llu bytes%s",
			i, d->info.uuid_str, d->info.name, d->info.pci_bus_id,
			(unsigned long long)total,
			(unsigned long long)d->tier.budget,
			d->info.vmm && d->info.posix_fd ?
				"" :
				" (no VMM/POSIX-fd sharing: unusable)");
	}
	tc__log(TC_LOG_INFO, "GPU driver %d.%d loaded from '%s': %d GPUs",
		t->driver_version / 1000, t->driver_version % 1000 / 10,
		t->driver_path, t->ndev);
	for (q = list; q; q = next) {
		next = q->next;
		answer_routed(t, q);
	}
	tc__free(j);
}

int tc__gpu_tier_attach(struct tc__gpu_tier *t, struct tc__obj *o,
			uint32_t device, const uint8_t *uuid,
			tc__gpu_tier_cb *cb, void *arg,
			struct tc__gpu_replica **rep, char *err, size_t errlen)
{
	struct open_job *j;
	struct gt_req *q;
	int rc;

	*rep = NULL;
	if (t->stopping) {
		snprintf(err, errlen, "the daemon is shutting down");
		return TC_ECLOSED;
	}
	if (t->state == GT_FAILED) {
		snprintf(err, errlen, "%s", t->open_err);
		return t->open_rc;
	}
	q = tc__calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->o = o;
	q->device = device;
	q->by_uuid = uuid != NULL;
	if (uuid)
		memcpy(q->uuid, uuid, TC_GPU_UUID_BYTES);
	q->cb = cb;
	q->arg = arg;
	tc__objs_lease(t->objs, o);
	if (t->state == GT_OPEN) {
		rc = route(t, q, rep, err, errlen);
		if (rc != 1)
			req_free(t, q);
		return rc;
	}
	if (t->state == GT_CLOSED) {
		j = tc__calloc(1, sizeof(*j));
		if (!j) {
			req_free(t, q);
			return -ENOMEM;
		}
		j->t = t;
		j->job.run = open_run;
		j->job.done = open_done;
		t->state = GT_OPENING;
		tc__log(TC_LOG_INFO, "first GPU request: loading the driver");
		tc__jobs_submit(t->jobs, &j->job);
	}
	q->next = t->open_waiters;
	t->open_waiters = q;
	return 1;
}

int tc__gpu_tier_open_now(struct tc__gpu_tier *t, char *err, size_t errlen)
{
	struct open_job *j;

	if (t->state == GT_OPEN)
		return 0;
	if (t->state == GT_FAILED) {
		snprintf(err, errlen, "%s", t->open_err);
		return t->open_rc;
	}
	if (t->state == GT_OPENING) {
		snprintf(err, errlen,
			 "the daemon is still loading the GPU driver: retry");
		return TC_EBUSY;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->t = t;
	/* The caller's worker loaded the driver (tc__gpu_init is sticky), so
	 * this is only a device enumeration on the loop thread. */
	open_run(&j->job);
	open_done(&j->job); /* frees j */
	if (t->state != GT_OPEN) {
		snprintf(err, errlen, "%s", t->open_err);
		return t->open_rc;
	}
	return 0;
}

/* Charge `bytes` (granularity-rounded) on the GPU with this UUID to
 * replica `r` (FILLING); *dev: the daemon's ordinal. */
static int charge_on(struct tc__gpu_tier *t,
		     const uint8_t uuid[TC_GPU_UUID_BYTES], uint64_t bytes,
		     struct tc__replica *r, int *dev, struct tc__gpu_mem *reuse,
		     char *err, size_t errlen)
{
	struct tc__gpu_dev *d = NULL;
	uint64_t gran;
	int rc;

	*dev = -1;
	for (int i = 0; i < t->ndev; i++)
		if (!memcmp(t->devs[i].info.uuid, uuid, TC_GPU_UUID_BYTES))
			d = &t->devs[i];
	if (!d) {
		char s[TC_GPU_UUID_STRLEN];

		tc__gpu_uuid_format(uuid, s);
		snprintf(err, errlen,
			 "GPU '%s' is not visible to the daemon (it sees %d "
			 "GPUs)",
			 s, t->ndev);
		return TC_EDEVICE;
	}
	if (!d->info.vmm || !d->info.posix_fd) {
		snprintf(err, errlen,
			 "GPU %d (%s) cannot share memory as POSIX fds",
			 gt_dev_index(t, d), d->info.name);
		return TC_ENOTSUP;
	}
	gran = d->gran ? d->gran : GT_DEFAULT_GRAN;
	bytes = bytes ? bytes : 1;
	bytes = (bytes + gran - 1) / gran * gran;
	/* The spare first (its charge becomes this fill's), else a victim
	 * of the same size if room must be made. */
	if (reuse && spare_take(d, bytes, reuse))
		reuse = NULL;
	rc = reserve(d, r, bytes, reuse, err, errlen);
	if (rc < 0)
		return rc;
	d->nreplicas++;
	*dev = gt_dev_index(t, d);
	return 0;
}

int tc__gpu_tier_fill_begin(struct tc__gpu_tier *t,
			    const uint8_t uuid[TC_GPU_UUID_BYTES],
			    uint64_t bytes, struct tc__gpu_replica **fill,
			    int *dev, uint64_t *charged,
			    struct tc__gpu_mem *reuse, char *err, size_t errlen)
{
	struct tc__gpu_replica *r;
	int rc;

	*fill = NULL;
	*dev = -1;
	*charged = 0;
	r = tc__calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	tc__replica_init(&r->base);
	tc__gpu_mem_init(&r->mem);
	r->fill_src = -2;
	rc = charge_on(t, uuid, bytes, &r->base, dev, reuse, err, errlen);
	if (rc < 0) {
		if (reuse)
			tc__gpu_release_later(reuse); /* taken, then refused */
		tc__free(r);
		return rc;
	}
	r->dev = &t->devs[*dev];
	*charged = r->base.bytes;
	*fill = r;
	return 0;
}

void tc__gpu_tier_fill_drop(struct tc__gpu_tier *t,
			    struct tc__gpu_replica **fill)
{
	struct tc__gpu_replica *r = *fill;

	if (!r)
		return;
	*fill = NULL;
	/* FILLING, never leased, on no artifact: gone, its charge back. */
	tc__replica_gone(&r->base, false);
	r->dev->nreplicas--;
	tc__gpu_release(&r->mem);
	tc__free(r);
}

int tc__gpu_tier_bind_charge(struct tc__gpu_tier *t,
			     const uint8_t uuid[TC_GPU_UUID_BYTES],
			     uint64_t bytes, struct tc__replica *r, int *dev,
			     char *err, size_t errlen)
{
	int rc = tc__replica_set_private(r);

	if (rc < 0) {
		snprintf(err, errlen, "binding charged twice");
		return rc;
	}
	return charge_on(t, uuid, bytes, r, dev, NULL, err, errlen);
}

void tc__gpu_tier_bind_release(struct tc__gpu_tier *t, int dev,
			       struct tc__replica *r)
{
	if (!tc__replica_charged(r))
		return;
	tc__replica_gone(r, false);
	t->devs[dev].nreplicas--;
}

int tc__gpu_tier_fill_adopt(struct tc__gpu_tier *t, struct tc__obj *o,
			    struct tc__gpu_replica **fill,
			    struct tc__gpu_mem *mem, double seconds)
{
	struct tc__gpu_replica *r = *fill;
	struct tc__gpu_dev *d = r->dev;
	int dev = gt_dev_index(t, d);

	*fill = NULL;
	if (!obj_gpu(t, o) || o->gpu->rep[dev]) {
		/* Out of memory, or the same content is on that GPU already
		 * (ready, or filling for an attach): this fill goes, its
		 * allocation kept for the next put of its size (a loop that
		 * puts the same tensors again, a publisher's unchanged
		 * version). */
		*fill = r;
		tc__gpu_tier_fill_drop(t, fill);
		spare_keep(t, d, mem);
		return o->gpu && o->gpu->rep[dev] ? 0 : -ENOMEM;
	}
	r->o = o;
	r->mem = *mem;
	tc__gpu_mem_init(mem);
	/* The allocation may be larger than charged (the device's
	 * granularity was not known yet): charge what it is, as an attach
	 * fill does. */
	if (r->mem.size && r->mem.size != r->base.bytes)
		tc__replica_recharge(&r->base, r->mem.size);
	r->fill_seconds = seconds;
	r->fill_pinned = true;
	r->fill_src = -2;  /* the loader, a put or a restore filled it */
	d->touched = true; /* the fill made a context here */
	o->gpu->rep[dev] = r;
	tc__replica_ready(&r->base); /* on the LRU, used now */
	t->n_fills++;
	t->n_fill_bytes += o->table.total_bytes;
	replica_announce(t, r, true);
	return 0;
}

bool tc__gpu_tier_obj_empty(const struct tc__obj *o)
{
	if (!o->gpu)
		return true;
	for (int i = 0; i < TC_GPU_TIER_MAX_DEV; i++)
		if (o->gpu->rep[i])
			return false;
	return true;
}

struct tc__gpu_replica *tc__gpu_tier_find(struct tc__gpu_tier *t,
					  struct tc__obj *o,
					  const uint8_t uuid[TC_GPU_UUID_BYTES])
{
	if (t->state != GT_OPEN || !o->gpu)
		return NULL;
	for (int i = 0; i < t->ndev; i++)
		if (!memcmp(t->devs[i].info.uuid, uuid, TC_GPU_UUID_BYTES))
			return o->gpu->rep[i] && gt_ready(o->gpu->rep[i]) ?
				       o->gpu->rep[i] :
				       NULL;
	return NULL;
}

/* ----------------------------------------------------------------- fill */

static void fill_run(struct tc__job *job)
{
	struct fill_job *j = (struct fill_job *)job;
	uint64_t t0 = tc__now_ns();

	if (j->do_register) {
		/* Pin the sealed mapping once, so this and later copies run
		 * at the pinned rate.  A failure (RLIMIT_MEMLOCK, a driver
		 * that cannot pin read-only memory) only costs speed. */
		j->reg_rc = tc__gpu_pin(j->ordinal, (void *)j->src,
					j->map_bytes, j->map_bytes, &j->pin,
					j->reg_err, sizeof(j->reg_err));
	}
	/* An evicted replica's allocation of the same size is refilled in
	 * place (evict(): j->mem is given); else the transfer makes one. */
	j->alloc_seconds = (double)(tc__now_ns() - t0) / 1e9; /* the pin */
	/* Tests: a lead slow enough for the other ranks' fills to find it
	 * running whatever the machine's load. */
	if (j->pipe && tc__failpoint("gpu_fill_lead_slow", j->o->id))
		nanosleep(&(struct timespec){ 1, 500000000 }, NULL);
	{
		struct tc__xfer x = { .host = j->src,
				      .pin = &j->pin,
				      .staged = j->staged,
				      .to = TC_XFER_TO_GPU,
				      .gpu_dst = &j->mem,
				      .ordinal = j->ordinal,
				      .alloc_bytes = j->alloc_bytes,
				      .nthreads = j->nthreads,
				      .parts = j->parts,
				      .nparts = j->nparts,
				      .part_wait = tc__gt_prep_wait,
				      .part_end = tc__gt_prep_end };

		if (j->pipe) {
			x.first = j->pipe->first;
			x.nfirst = j->pipe->nlead;
			x.first_done = tc__gt_lead_progress;
			x.first_arg = j;
		}
		j->pf.alloc_seconds = 0;
		j->rc = tc__gpu_tier_peer_run(&j->pf, &x, j->err,
					      sizeof(j->err));
		j->part_bytes = j->rc == 0 ? x.part_bytes : 0;
		j->gated_bytes = j->rc == 0 ? x.gated_bytes : 0;
		if (j->part_bytes && tc__gt_parts_verify(j) != 0) {
			/* Not the view's bytes: the host copy alone, and
			 * nobody copies from this one meanwhile. */
			if (j->pipe)
				tc__gpu_pipe_end(j->pipe, -ECANCELED, NULL);
			j->parts_rejected = true;
			j->part_bytes = 0;
			x.parts = NULL;
			x.nparts = 0;
			x.nfirst = 0;
			j->rc = tc__gpu_tier_peer_run(&j->pf, &x, j->err,
						      sizeof(j->err));
		}
		j->alloc_seconds += j->pf.alloc_seconds;
		j->oom = j->pf.oom;
	}
	/* Followers copy the rest now, or (failed) fill from host memory:
	 * on failure this returns once none reads the allocation. */
	if (j->pipe)
		tc__gpu_pipe_end(j->pipe, j->rc, &j->mem);
	if (j->mem.dptr &&
	    tc__gpu_granularity(j->ordinal, &j->gran, NULL, NULL, 0) < 0)
		j->gran = 0;
	if (j->rc < 0)
		tc__gpu_release(&j->mem);
	j->seconds = (double)(tc__now_ns() - t0) / 1e9;
}

/* Pins a host replica in the background (when it is sealed, or after its
 * first large fill: gpu_pin_host), so that its GPU fills copy at the pinned
 * rate.  While the driver pins it holds a lock that stalls every other
 * driver call of the process (fills ran at 19 instead of 46 GB/s beside
 * it), so this is done a burst at a time, and only while no GPU copy runs:
 * otherwise the job is parked until the last one is done.  It holds o (an
 * artifact lease) only while a burst runs: a parked job leaves o evictable,
 * and freeing o drops it (pin_cancel). */
struct pin_job {
	struct tc__job job;
	struct tc__gpu_tier *t;
	struct tc__obj *o;
	struct pin_job *next; /* t->parked */
	int ordinal;
	void *map;
	uint64_t map_bytes;
	struct tc__gpu_pinning pin; /* pinned so far */
	int rc;			    /* 1 done, 0 more to pin, < 0 failed */
	double seconds;
	char err[256];
};

/* No GPU copy runs, and none ended in the last GT_PIN_QUIET_MS. */
static bool pin_may_run(const struct tc__gpu_tier *t, uint64_t now_ms)
{
	return !t->copies_running && now_ms - t->copy_end_ms >= GT_PIN_QUIET_MS;
}

static void pin_run(struct tc__job *job)
{
	struct pin_job *j = (struct pin_job *)job;
	uint64_t t0 = tc__now_ns();

	j->rc = tc__gpu_pin_more(&j->pin, j->ordinal, j->map, j->map_bytes,
				 GT_PIN_PIECE, GT_PIN_BURST, j->err,
				 sizeof(j->err));
	j->seconds += (double)(tc__now_ns() - t0) / 1e9;
}

static void pin_end(struct pin_job *j)
{
	struct tc__objs *objs = j->t->objs;
	struct tc__obj *o = j->o;

	tc__free(j);
	tc__objs_unlease(objs, o); /* may free o, unpinning it */
}

static void pin_done(struct tc__job *job)
{
	struct pin_job *j = (struct pin_job *)job;
	struct tc__gpu_tier *t = j->t;
	struct tc__obj *o = j->o;

	if (j->rc == 0 && (t->stopping || o->dead)) {
		tc__gpu_unpin(&j->pin); /* nobody will use it */
		o->gpu->reg_state = GT_REG_NONE;
	} else if (j->rc == 0 && !pin_may_run(t, tc__now_ms())) {
		j->next = t->parked;
		t->parked = j;
		tc__objs_unlease(t->objs, o); /* o is not dead: not freed */
		return;
	} else if (j->rc == 0) {
		tc__jobs_submit(t->jobs, &j->job);
		return;
	} else if (j->rc > 0) {
		o->gpu->reg_state = GT_REG_DONE;
		o->gpu->pin = j->pin;
		t->pinned_host_bytes += j->pin.bytes;
		tc__log(TC_LOG_INFO,
			"pinned the host copy of '%s' (%llu bytes, %.3f s of "
			"driver time): its next GPU replicas fill at the "
			"pinned rate",
			o->id, (unsigned long long)j->pin.bytes, j->seconds);
	} else {
		o->gpu->reg_state = GT_REG_FAILED;
		tc__log(TC_LOG_WARN,
			"cannot pin the host copy of '%s' (its GPU replicas "
			"fill through staging): %s",
			o->id, j->err);
	}
	pin_end(j);
}

/* The copies have been quiet long enough: parked pinning goes on. */
static void pin_resume(struct tc__gpu_tier *t)
{
	while (t->parked && pin_may_run(t, tc__now_ms())) {
		struct pin_job *j = t->parked;

		t->parked = j->next;
		tc__objs_lease(t->objs, j->o);
		tc__jobs_submit(t->jobs, &j->job);
	}
}

static void unpin_and_free(struct tc__gpu_tier *t, struct tc__gpu_pinning *pin,
			   struct tc__shm **shm);

/* o is being freed: drop its parked pin job, unpinning what it pinned. */
static void pin_cancel(struct tc__gpu_tier *t, struct tc__obj *o)
{
	for (struct pin_job **pp = &t->parked; *pp; pp = &(*pp)->next) {
		struct pin_job *j = *pp;

		if (j->o != o)
			continue;
		*pp = j->next;
		unpin_and_free(t, &j->pin, &o->shm);
		tc__free(j);
		return;
	}
}

static void pin_drop_parked(struct tc__gpu_tier *t)
{
	while (t->parked) {
		struct pin_job *j = t->parked;

		t->parked = j->next;
		tc__gpu_unpin(&j->pin);
		j->o->gpu->reg_state = GT_REG_NONE;
		tc__free(j); /* a parked job holds no lease */
	}
}

void tc__gpu_tier_copy_begin(struct tc__gpu_tier *t)
{
	t->copies_running++;
}

void tc__gpu_tier_copy_end(struct tc__gpu_tier *t)
{
	t->copies_running--;
	t->copy_end_ms = tc__now_ms();
}

void tc__gpu_tier_tick(struct tc__gpu_tier *t)
{
	uint64_t now, hold;

	if (!t)
		return;
	pin_resume(t);
	/* A spare nobody took gives its GPU memory back: `tcast rm` frees
	 * memory for other programs on that GPU within GT_SPARE_HOLD_MS. */
	now = tc__now_ms();
	hold = tc__failpoint_num("gpu_spare_hold_ms", 0, UINT64_MAX,
				 GT_SPARE_HOLD_MS); /* tests: not a minute */
	for (int i = 0; i < t->ndev; i++)
		if (t->devs[i].spare && now - t->devs[i].spare_since_ms > hold)
			spare_drop(&t->devs[i]);
}

static void pin_later(struct tc__gpu_tier *t, struct tc__obj *o, int ordinal)
{
	struct pin_job *j = tc__calloc(1, sizeof(*j));

	if (!j)
		return; /* only speed is lost */
	j->t = t;
	j->o = o;
	j->ordinal = ordinal;
	j->map = (void *)o->shm->map;
	j->map_bytes = o->shm->size;
	j->job.run = pin_run;
	j->job.done = pin_done;
	o->gpu->reg_state = GT_REG_BUSY;
	j->next = t->parked;
	t->parked = j; /* pin_resume submits it once no fill runs */
}

void tc__gpu_tier_host_added(struct tc__gpu_tier *t, struct tc__obj *o)
{
	int ordinal = -1;

	if (!t->cfg->pin_eager || t->state != GT_OPEN || t->stopping ||
	    o->dead || !o->shm || o->table.total_bytes < GT_STAGE_MIN)
		return;
	/* PORTABLE pinning serves every GPU, but needs some context: only
	 * one the daemon already made (a context costs hundreds of MiB on a
	 * GPU that may never be asked for). */
	for (int i = 0; i < t->ndev && ordinal < 0; i++)
		if (t->devs[i].touched)
			ordinal = i;
	if (ordinal < 0)
		return;
	if (!obj_gpu(t, o))
		return; /* only speed is lost */
	if (o->gpu->reg_state != GT_REG_NONE)
		return;
	pin_later(t, o, ordinal);
	pin_resume(t);
}

static void fill_done(struct tc__job *job)
{
	struct fill_job *j = (struct fill_job *)job;
	struct tc__gpu_tier *t = j->t;
	struct tc__gpu_replica *r = j->r;
	struct tc__gpu_dev *d = r->dev;
	struct tc__obj *o = r->o;
	struct gt_req *q, *next, *list;
	int i = gt_dev_index(t, d);

	if (j->do_register) {
		j->do_register = false;
		o->gpu->reg_state = j->reg_rc == 0 ? GT_REG_DONE :
						     GT_REG_FAILED;
		if (j->reg_rc == 0) {
			o->gpu->pin = j->pin;
			t->pinned_host_bytes += j->pin.bytes;
		}
		if (j->reg_rc < 0)
			tc__log(TC_LOG_WARN,
				"copying '%s' from pageable memory: %s", o->id,
				j->reg_err);
	}
	t->n_fill_host_bytes += j->pf.host_bytes;
	j->pf.host_bytes = 0;
	if (j->rc < 0 && j->oom && !j->retried && !t->stopping &&
	    evict(d, 0, r->base.bytes, NULL)) {
		/* The driver is fuller than our budget knows (other
		 * processes use this GPU): make room once and retry. */
		tc__log(TC_LOG_INFO, "GPU %d out of memory: retrying '%s'", i,
			o->id);
		j->retried = true;
		fill_submit(t, j);
		return;
	}
	list = r->waiters;
	r->waiters = NULL;
	if (j->rc == 0) {
		r->fill_src = j->pf.use_peer ? j->pf.sib_dev : -1;
		r->fill_gbps = j->pf.copy_seconds > 0 ?
				       (double)j->src_bytes /
					       j->pf.copy_seconds / 1e9 :
				       0;
	}
	if (j->part_bytes)
		j->pf.copy_seconds = 0; /* a mixed fill teaches no rate */
	tc__gpu_tier_peer_done(t, &j->pf, j->rc, TC_GPU_PEER_REPLICA);
	if (j->parts_rejected) {
		t->n_part_rejected++;
		tc__log(TC_LOG_WARN,
			"GPU %d replica of '%s' filled from host memory again: "
			"with parts from sibling views %s",
			i, o->id, j->parts_why);
	}
	if (j->rc == 0 && j->part_bytes) {
		r->part_bytes = j->part_bytes;
		t->n_part_fills++;
		t->n_part_bytes += j->part_bytes;
		tc__log(TC_LOG_INFO,
			"GPU %d replica of view '%s': %llu of %llu bytes from "
			"%d sibling view replicas (GPU to GPU; %llu of them "
			"from fills still running, as they completed them), "
			"digests checked",
			i, o->id, (unsigned long long)j->part_bytes,
			(unsigned long long)j->src_bytes, j->nprep,
			(unsigned long long)j->gated_bytes);
	}
	if (j->rc == 0 && j->gated_bytes && !j->parts_rejected) {
		t->n_pipe_fills++;
		t->n_pipe_bytes += j->gated_bytes;
	}
	if (j->rc == 0 && j->gated_len > j->gated_bytes) {
		t->n_pipe_fallback_bytes += j->gated_len - j->gated_bytes;
		tc__log(TC_LOG_WARN,
			"GPU %d replica of view '%s': %llu bytes from host "
			"memory instead of a sibling view's fill (it failed, "
			"gave up or completed nothing for %llu ms)",
			i, o->id,
			(unsigned long long)(j->gated_len - j->gated_bytes),
			(unsigned long long)tc__gt_pipe_stall_ms());
	}
	if (j->rc == 0) {
		r->mem = j->mem;
		tc__replica_recharge(&r->base, j->mem.size);
		if (j->gran)
			d->gran = j->gran;
		d->touched = true;
		tc__replica_ready(&r->base); /* on the LRU, used now */
		r->fill_seconds = j->seconds;
		r->alloc_seconds = j->alloc_seconds;
		/* Staging buffers are pinned too: only a pageable copy
		 * (registration refused) is not. */
		r->fill_pinned = j->staged || j->pin.nsegs;
		r->reused = j->reused;
		tc__gt_parts_end(t, j, r); /* ready: a lead's may be leased */
		replica_announce(t, r, true);
		t->n_fills++;
		t->n_fill_bytes += j->src_bytes;
		tc__metrics_path(TC_MPATH_GPU_FILL, j->src_bytes,
				 (uint64_t)(j->seconds * 1e9));
		if (j->pin.nsegs)
			t->n_fill_pinned_bytes += j->src_bytes;
		if (j->pf.use_peer)
			tc__log(TC_LOG_INFO,
				"GPU %d replica of '%s': %llu bytes in %.3f s "
				"(%.2f GB/s from GPU %d's replica, %s%s)",
				i, o->id, (unsigned long long)j->src_bytes,
				j->seconds, r->fill_gbps, j->pf.sib_dev,
				j->pf.link == 1 ?
					"peer copy" :
					"peer copy staged by the driver",
				j->reused ? ", into an evicted replica's "
					    "allocation" :
					    "");
		else
			tc__log(TC_LOG_INFO,
				"GPU %d replica of '%s': %llu bytes in %.3f s "
				"(%.2f GB/s from %s memory%s)",
				i, o->id, (unsigned long long)j->src_bytes,
				j->seconds,
				j->seconds > 0 ? (double)j->src_bytes /
							 j->seconds / 1e9 :
						 0.0,
				j->pin.nsegs ? "pinned" :
				j->staged    ? "staged" :
					       "pageable",
				j->reused ? ", into an evicted replica's "
					    "allocation" :
					    "");
		/* Hold it while answering: a waiter's reply path may run
		 * that client's next requests, releases included. */
		tc__replica_lease(&r->base);
		for (q = list; q; q = q->next)
			q->cb(q->arg, o, r, 0, NULL);
		if (tc__replica_unlease(&r->base) == 0 && o->dead)
			tc__gt_replica_free(t, r);
	} else {
		t->n_fill_failures++;
		tc__log(TC_LOG_WARN, "cannot make a GPU %d replica of '%s': %s",
			i, o->id, j->err);
		tc__gt_parts_end(t, j, r);
		tc__gt_replica_free(t, r); /* from FILLING */
		for (q = list; q; q = q->next)
			q->cb(q->arg, o, NULL, j->rc, j->err);
	}
	for (q = list; q; q = next) {
		next = q->next;
		req_free(t, q);
	}
	/* A host replica that fed a GPU through staging is pinned now, off
	 * the clients' path, for the next GPU that wants it. */
	if (j->rc == 0 && j->staged && !j->pf.use_peer &&
	    o->gpu->reg_state == GT_REG_NONE && !o->dead && !t->stopping)
		pin_later(t, o, i);
	t->copies_running--;
	t->copy_end_ms = tc__now_ms();
	tc__free(j);
	tc__objs_unlease(t->objs, o); /* the job's hold; may free o */
}

/* --------------------------------------------------------------- leases */

void tc__gpu_replica_lease(struct tc__gpu_tier *t, struct tc__gpu_replica *r)
{
	tc__replica_lease(&r->base); /* touches it too */
	tc__objs_lease(t->objs, r->o);
}

void tc__gpu_replica_keep_private(struct tc__gpu_replica *r)
{
	r->no_reuse = true;
}

void tc__gpu_replica_unlease(struct tc__gpu_tier *t, struct tc__gpu_replica *r)
{
	struct tc__obj *o = r->o;

	if (r->base.leases == 0)
		return;
	/* A removed artifact keeps only what clients still hold. */
	if (tc__replica_unlease(&r->base) == 0 && o->dead)
		tc__gt_replica_free(t, r);
	tc__objs_unlease(t->objs, o);
}

/* ------------------------------------------------------------ obj hooks */

/* Unpins a host replica's mapping and frees it, off the loop. */
struct unpin_job {
	struct tc__job job;
	struct tc__gpu_pinning pin;
	struct tc__shm *shm;
};

static void unpin_run(struct tc__job *job)
{
	struct unpin_job *j = (struct unpin_job *)job;

	tc__gpu_unpin(&j->pin);
	tc__shm_free(j->shm);
}

static void unpin_done(struct tc__job *job)
{
	tc__free(job);
}

/* Unpin `pin` (on `*shm`'s mapping), then let the mapping go.  A large one
 * costs ~6 ms per GiB, so a worker does it and takes the mapping over
 * (*shm becomes NULL); at shutdown, or short of memory, it happens here. */
static void unpin_and_free(struct tc__gpu_tier *t, struct tc__gpu_pinning *pin,
			   struct tc__shm **shm)
{
	struct unpin_job *j = NULL;

	if (!t->stopping && pin->bytes >= GT_STAGE_MIN)
		j = tc__calloc(1, sizeof(*j));
	if (!j) {
		tc__gpu_unpin(pin);
		return;
	}
	j->pin = *pin;
	j->shm = *shm;
	*shm = NULL;
	memset(pin, 0, sizeof(*pin));
	j->job.run = unpin_run;
	j->job.done = unpin_done;
	tc__jobs_submit(t->jobs, &j->job);
}

static void obj_gpu_free(struct tc__obj *o)
{
	struct tc__obj_gpu *g = o->gpu;

	if (!g)
		return;
	for (int i = 0; i < TC_GPU_TIER_MAX_DEV; i++) {
		struct tc__gpu_replica *r = g->rep[i];

		if (!r)
			continue;
		/* Only at daemon exit can a replica still be leased; a fill
		 * job holds its artifact, so none is filling here. */
		if (!gt_ready(r))
			TC_BUG("freeing an artifact while a GPU replica fills");
		tc__gt_replica_free(g->tier, r);
	}
	if (g->reg_state == GT_REG_DONE) {
		g->tier->pinned_host_bytes -= g->pin.bytes;
		unpin_and_free(g->tier, &g->pin, &o->shm);
	} else if (g->reg_state == GT_REG_BUSY) {
		pin_cancel(g->tier, o); /* a running job or fill holds o */
	}
	tc__free(g);
	o->gpu = NULL;
	o->gpu_ops = NULL;
}

static void obj_gpu_trim(struct tc__obj *o)
{
	if (!o->gpu)
		return;
	for (int i = 0; i < TC_GPU_TIER_MAX_DEV; i++) {
		struct tc__gpu_replica *r = o->gpu->rep[i];

		if (r && gt_ready(r) && r->base.leases == 0)
			tc__gt_replica_free(o->gpu->tier, r);
	}
}

/* What obj.c calls on an artifact's GPU replicas (obj.h). */
static const struct tc__obj_gpu_ops gpu_replica_ops = {
	.free = obj_gpu_free,
	.trim = obj_gpu_trim,
	.json = tc__gt_obj_gpu_json,
};

/* o's GPU state, made on first use; NULL when out of memory. */
static struct tc__obj_gpu *obj_gpu(struct tc__gpu_tier *t, struct tc__obj *o)
{
	if (!o->gpu) {
		o->gpu = tc__calloc(1, sizeof(*o->gpu));
		if (!o->gpu)
			return NULL;
		o->gpu->tier = t;
		o->gpu_ops = &gpu_replica_ops;
	}
	return o->gpu;
}
