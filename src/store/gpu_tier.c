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
 * functions below touch tier state, all on the loop thread.
 *
 * Each device is a struct tc__tier and each replica embeds a struct
 * tc__replica (replica.h): the budget, the LRU, leases and the choice of
 * victims are the shared core's; this file says how a victim goes
 * (gpu_evict, which may hand its allocation to the next fill) and words
 * a refusal (gpu_refuse).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/failpoint.h"
#include "common/compiler.h"
#include "common/log.h"
#include "config.h"
#include "format/view.h"
#include "xfer/gpu_loader.h"
#include "gpu_parts.h"
#include "gpu_tier.h"
#include "metrics.h"
#include "xfer/jobs.h"
#include "xfer/xfer.h"
#include "net/ev.h"
#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#define GT_DEFAULT_GRAN ((uint64_t)2 << 20)  /* until a device tells us */
#define GT_STAGE_MIN	((uint64_t)64 << 20) /* staged copy from this size */
/* Host replicas are pinned this much per driver call, and per job run
 * before a fill that arrived gets to go first: each call holds a driver
 * lock that stalls the process's other CUDA calls (~6 ms at 21 GB/s). */
#define GT_PIN_PIECE ((uint64_t)128 << 20)
#define GT_PIN_BURST GT_PIN_PIECE
/* Pinning waits this long after the last GPU copy: copies come in runs
 * (a client's swaps back to back, a model's fills), and a burst started
 * between two of them stalls the next one for the whole burst (on an
 * H200, 8 GiB swaps took 10-21 ms instead of 4.1 while a host replica was
 * pinned beside them; with this wait they stayed at 4.1 ms). */
#define GT_PIN_QUIET_MS 100
/* Sibling-GPU sources.  A replica whose artifact is ready on another GPU
 * may be filled from there by a peer copy instead of from the host
 * replica, whichever ran faster for that pair: the tier keeps the rate of
 * past fills per source kind (host -> GPU d, GPU s -> GPU d).  While a
 * pair or the destination's host rate is unknown, a fill first copies
 * GT_PROBE_BYTES (or the whole, when smaller) both ways, and takes the
 * faster for the rest.  Below GT_PROBE_MIN both copies are latency, not
 * bandwidth: they take the host replica (or the sibling, when there is
 * no host replica) and teach nothing. */
#define GT_PROBE_BYTES ((uint64_t)64 << 20)
/* How long a GPU's spare allocation waits for a put of its size before
 * it is released (a weight publisher puts every few seconds to minutes;
 * memory another program wants back after an rm should not wait longer). */
#define GT_SPARE_HOLD_MS 60000
#define GT_PROBE_MIN	 ((uint64_t)256 << 10)
/* Sibling views one fill copies parts from, at most (view parts below). */
#define GT_PART_SRCS 8

enum { GT_CLOSED, GT_OPENING, GT_OPEN, GT_FAILED };

/* One request waiting for the driver or for a fill.  Holds an artifact
 * lease so the artifact outlives the wait. */
struct gt_req {
	struct tc__obj *o;
	uint32_t device; /* daemon ordinal or TC_GPU_ANY_DEVICE */
	bool by_uuid;	 /* uuid names the device */
	uint8_t uuid[TC_GPU_UUID_BYTES]; /* when by_uuid */
	tc__gpu_tier_cb *cb;
	void *arg;
	struct gt_req *next;
};

struct tc__gpu_tier {
	const struct tc__store_config *cfg;
	struct tc__objs *objs;
	struct tc__jobs *jobs;
	struct tc__jobs *follow_jobs; /* fills that wait on a lead */
	int state;		      /* GT_* */
	bool stopping;		      /* daemon exit: submit no more jobs */
	unsigned copies_running;      /* fills, GPU imports, binding copies */
	uint64_t copy_end_ms;	      /* when the last of them ended */
	struct pin_job *parked;	      /* pinning that waits for them */
	int open_rc;		      /* when FAILED */
	char open_err[384];	      /* when FAILED */
	struct gt_req *open_waiters;  /* while OPENING, in arrival order */
	int driver_version;
	char driver_path[256];
	int ndev;
	struct tc__gpu_dev devs[TC_GPU_TIER_MAX_DEV];
	uint64_t n_fills, n_fill_failures, n_fill_bytes;
	uint64_t n_fill_pinned_bytes; /* copied from pinned host replicas */
	uint64_t pinned_host_bytes;   /* host replicas pinned now */
	uint64_t n_peer_fills, n_peer_fill_bytes; /* filled from a sibling */
	uint64_t n_peer_bind_fills;		  /* bindings filled so */
	uint64_t n_peer_bind_bytes;
	uint64_t n_probes;	  /* fills that measured both */
	uint64_t n_part_fills;	  /* fills with parts from sibling views */
	uint64_t n_part_bytes;	  /* bytes those parts copied */
	uint64_t n_part_rejected; /* such fills whose digests were wrong */
	/* Of the part fills, those that copied parts from a lead (a view
	 * fill still running), the bytes so copied, and the bytes planned
	 * so that came from host memory (the lead failed or stalled). */
	uint64_t n_pipe_fills, n_pipe_bytes, n_pipe_fallback_bytes;
	uint64_t n_pipe_leads;	    /* fills others followed */
	uint64_t n_fill_host_bytes; /* replica fills' copies from host
				       replicas (probes, refills included) */
	/* Measured rates (GB/s) of fills by source: host_rate[d] from host
	 * replicas to GPU d, peer_rate[s][d] from GPU s to GPU d; peer_link
	 * [s][d]: 0 unknown, 1 the pair has a direct link, 2 staged. */
	struct gt_rate {
		double gbps; /* running mean of the last few fills */
		uint32_t n;  /* fills measured */
	} host_rate[TC_GPU_TIER_MAX_DEV],
		peer_rate[TC_GPU_TIER_MAX_DEV][TC_GPU_TIER_MAX_DEV];
	uint8_t peer_link[TC_GPU_TIER_MAX_DEV][TC_GPU_TIER_MAX_DEV];
};

/* Loads the driver and lists devices (no context is created). */
struct open_job {
	struct tc__job job;
	struct tc__gpu_tier *t;
	int rc;
	int ndev;
	int version;
	char path[256];
	struct tc__gpu_info infos[TC_GPU_TIER_MAX_DEV];
	char err[384];
};

/* A sibling view replica a fill copies parts from: ready (leased) or
 * still filling (a lead, followed through its pipe; then `mem` is set
 * by the wait on the worker). */
struct gt_prep {
	struct tc__gpu_replica *rep; /* ready, leased; done() only; or NULL */
	struct tc__gpu_pipe *pipe;   /* a lead's progress (a reference), or
					NULL */
	uint64_t stall_ms;	     /* the wait's bound without progress */
	struct tc__gpu_mem mem;	     /* its allocation (borrowed) */
};

/* Fills one replica.  run() sees only these fields. */
struct fill_job {
	struct tc__job job;
	struct tc__gpu_tier *t;
	struct tc__gpu_replica *r; /* done() only */
	struct tc__obj *o;	   /* held by the job until it is freed */
	int ordinal;
	const void *src;      /* the artifact's read-only host mapping */
	uint64_t src_bytes;   /* bytes to copy (the byte space) */
	uint64_t map_bytes;   /* bytes of the mapping (page-rounded) */
	uint64_t alloc_bytes; /* bytes to allocate */
	bool do_register;     /* pin the host mapping first */
	bool staged;	      /* copy through the loader's staging ring */
	int nthreads;	      /* threads of a staged copy */
	bool retried;	      /* evicted once after an OOM already */
	bool reused;	      /* mem is an evicted replica's allocation */
	/* The source: the host replica or a sibling GPU's (leased by the
	 * job, so neither evicted nor freed, until done()). */
	struct tc__gpu_peer_fill pf;
	/* A view's parts copied from other views of its source on sibling
	 * GPUs (view parts below): ready replicas, each leased until
	 * done(), or fills still running (leads), each followed through its
	 * pipe; `chunks` (o's) checks the result. */
	struct tc__xfer_part *parts; /* owned, nparts; src -> prep[k].mem,
					gate -> prep[k] when it fills */
	uint32_t nparts;
	struct gt_prep prep[GT_PART_SRCS];
	int nprep;
	/* This fill as a lead: other views' fills copy its first ranges
	 * as it completes them (a reference; NULL when it is none). */
	struct tc__gpu_pipe *pipe;
	uint64_t gated_len;		 /* bytes planned from leads */
	const struct tc__digest *chunks; /* o's: the job holds o */
	uint64_t part_bytes;		 /* out: copied from parts */
	uint64_t gated_bytes;		 /* out: of which from leads */
	bool parts_rejected;		 /* out: refilled from the host */
	char parts_why[256];		 /* out: why, when rejected */
	int reg_rc;
	char reg_err[256];
	struct tc__gpu_mem mem;
	struct tc__gpu_pinning pin; /* the pinned host mapping to copy from */
	uint64_t gran;
	int rc;
	bool oom;
	double seconds;
	double alloc_seconds;
	char err[384];
};

static int dev_index(const struct tc__gpu_tier *t, const struct tc__gpu_dev *d)
{
	return (int)(d - t->devs);
}

/* ------------------------------------------------------ replicas, tiers */

/* One more measured fill of `bytes` in `seconds` for a source kind. */
static void rate_add(struct gt_rate *r, uint64_t bytes, double seconds)
{
	double g;

	if (bytes < GT_PROBE_MIN || seconds <= 0)
		return;
	g = (double)bytes / seconds / 1e9;
	r->gbps = r->n ? (r->gbps + g) / 2 : g;
	r->n++;
}

static struct tc__gpu_replica *rep_of(const struct tc__replica *b)
{
	return b ? tc__replica_owner(b, struct tc__gpu_replica, base) : NULL;
}

static struct tc__gpu_dev *dev_of(const struct tc__tier *tier)
{
	return tc__replica_owner(tier, struct tc__gpu_dev, tier);
}

static bool replica_ready(const struct tc__gpu_replica *r)
{
	return r->base.state == TC_REPLICA_READY;
}

/* The device's ready replicas, most recently used first:
 * for (r = ready_first(d); r; r = ready_next(r)). */
static struct tc__gpu_replica *ready_first(const struct tc__gpu_dev *d)
{
	return rep_of(d->tier.lru_head);
}

static struct tc__gpu_replica *ready_next(const struct tc__gpu_replica *r)
{
	return rep_of(r->base.lru_next);
}

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
	tc__objs_notify_gpu(t->objs, r->o->id, r->o, dev_index(t, r->dev),
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
	r->o->gpu->rep[dev_index(t, d)] = NULL;
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

/* Bytes the spare holds (charged, but shown apart from used_bytes, as
 * the host tier's spare segment is). */
static uint64_t spare_bytes(const struct tc__gpu_dev *d)
{
	return d->spare ? d->spare->base.bytes : 0;
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
static void replica_free(struct tc__gpu_tier *t, struct tc__gpu_replica *r)
{
	struct tc__gpu_dev *d = r->dev;
	struct tc__gpu_mem keep;

	if (!replica_ready(r) || r->no_reuse) {
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
	struct tc__gpu_dev *d = dev_of(tier);
	struct tc__gpu_replica *r = rep_of(b);
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
		dev_index(t, d), o->id, (unsigned long long)r->base.bytes);
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
	struct tc__gpu_dev *d = dev_of(tier);
	int i = dev_index(tier->arg, d);
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
	for (struct tc__gpu_replica *r = ready_first(d); r; r = ready_next(r))
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

/* The ready replica of o on another GPU than `dst` to fill from, or NULL:
 * a pair never measured first (to learn it), else the fastest pair. */
static struct tc__gpu_replica *sibling_of(struct tc__gpu_tier *t,
					  struct tc__obj *o, int dst)
{
	struct tc__gpu_replica *best = NULL;
	double bg = -1;

	for (int s = 0; s < t->ndev; s++) {
		struct tc__gpu_replica *r = o->gpu->rep[s];
		const struct gt_rate *pr = &t->peer_rate[s][dst];
		double g;

		if (s == dst || !r || !replica_ready(r))
			continue;
		g = pr->n ? pr->gbps : 1e300;
		if (g > bg) {
			best = r;
			bg = g;
		}
	}
	return best;
}

/* ------------------------------------------------- sibling-GPU sources */

void tc__gpu_tier_peer_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			      struct tc__gpu_peer_fill *pf)
{
	struct tc__gpu_replica *sib;
	const struct gt_rate *pr, *hr;
	int s;

	pf->sib = NULL;
	pf->sib_dev = -1;
	pf->use_peer = pf->probe = false;
	if (t->state != GT_OPEN || !o->gpu || pf->dst < 0 || pf->dst >= t->ndev)
		return;
	sib = sibling_of(t, o, pf->dst);
	if (!sib || (pf->has_host && pf->bytes < GT_PROBE_MIN))
		return; /* the host replica: tiny, or no sibling */
	s = dev_index(t, sib->dev);
	pf->sib = sib;
	pf->sib_dev = s;
	pf->sib_mem = sib->mem;
	tc__replica_lease(&sib->base);
	pr = &t->peer_rate[s][pf->dst];
	hr = &t->host_rate[pf->dst];
	if (!pf->has_host)
		pf->use_peer = true; /* the only source */
	else if (pr->n && hr->n)
		pf->use_peer = pr->gbps > hr->gbps;
	else
		pf->probe = true;
}

/* Drop pf's lease on its sibling source. */
static void sib_unlease(struct tc__gpu_tier *t, struct tc__gpu_peer_fill *pf)
{
	struct tc__gpu_replica *sr = pf->sib;

	if (!sr)
		return;
	pf->sib = NULL;
	if (tc__replica_unlease(&sr->base) == 0 && sr->o->dead)
		replica_free(t, sr);
}

/* Copy the first n bytes of the byte space into the sink, from the host
 * replica or (peer) the sibling's; *secs: the copy alone (no allocation,
 * no pinning).  `keep_tail`: a probe's partial copy, completed later. */
static int peer_copy(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
		     bool peer, uint64_t n, bool keep_tail, double *secs,
		     char *err, size_t errlen)
{
	uint64_t t0 = tc__now_ns();
	int rc;

	x->from = peer ? TC_XFER_FROM_PEER : TC_XFER_FROM_HOST;
	x->gpu_src = peer ? &pf->sib_mem : NULL;
	x->bytes = n;
	x->keep_tail = keep_tail;
	x->alloc_seconds = 0;
	x->alloc_oom = false;
	rc = tc__xfer_run(x, err, errlen);
	pf->host_bytes += x->host_bytes;
	pf->alloc_seconds += x->alloc_seconds;
	pf->oom = x->alloc_oom;
	*secs = (double)(tc__now_ns() - t0) / 1e9 - x->alloc_seconds;
	if (*secs <= 0)
		*secs = 1e-9;
	return rc;
}

/* Measure both sources on the first GT_PROBE_BYTES (the same bytes, so
 * the content does not care which ran last) and choose the faster.  Two
 * rounds, host then sibling, then sibling then host, each source keeping
 * its best: whichever runs first writes into fresh memory and pays its
 * first-touch costs (the driver scrubbing what was just freed; page
 * faults on the fake driver), and the first host copy also sets up its
 * staging; one round in one order leaned towards the sibling.  A sibling
 * that fails to copy loses: the host replica serves.  Returns the host
 * copies' result; *whole when the probe copied everything. */
static int peer_probe(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
		      bool *whole, char *err, size_t errlen)
{
	uint64_t p = pf->bytes < GT_PROBE_BYTES ? pf->bytes : GT_PROBE_BYTES;
	double th = 0, tp = 0, t;
	bool peer_ok = true;
	int rc;

	*whole = false;
	pf->probe_bytes = p;
	for (int round = 0; round < 2; round++) {
		for (int k = 0; k < 2; k++) {
			bool peer = (k == 1) != (round == 1);

			if (peer && !peer_ok)
				continue;
			rc = peer_copy(pf, x, peer, p, true, &t, err, errlen);
			if (rc < 0 && !peer)
				return rc;
			if (rc < 0) {
				tc__log(TC_LOG_WARN,
					"GPU %d cannot copy from GPU %d's "
					"replica (the host replica serves): %s",
					pf->dst, pf->sib_dev, err);
				err[0] = '\0';
				peer_ok = false;
				continue;
			}
			if (peer)
				tp = tp > 0 && tp < t ? tp : t;
			else
				th = th > 0 && th < t ? th : t;
		}
	}
	pf->probe_host_gbps = (double)p / th / 1e9;
	if (!peer_ok) {
		pf->use_peer = false;
		pf->probe_peer_gbps = 0;
		/* A failed peer copy may have left part of the probe range
		 * after the host's last copy. */
		return peer_copy(pf, x, false, p, true, &t, err, errlen);
	}
	pf->probe_peer_gbps = (double)p / tp / 1e9;
	pf->use_peer = tp < th;
	*whole = p == pf->bytes;
	if (*whole) {
		pf->copy_seconds = pf->use_peer ? tp : th;
		/* Both sources wrote the same bytes; the tail still wants
		 * its zeros (the probe's copies kept it). */
		if (x->gpu_dst->size > p)
			return tc__gpu_memset8(x->ordinal, x->gpu_dst->dptr + p,
					       0, x->gpu_dst->size - p, NULL,
					       err, errlen);
	}
	return 0;
}

int tc__gpu_tier_peer_run(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
			  char *err, size_t errlen)
{
	bool whole = false;
	int rc = 0;

	if (pf->sib_dev >= 0) {
		int can =
			tc__gpu_can_access_peer(pf->dst, pf->sib_dev, NULL, 0);

		pf->link = can < 0 ? 0 : can ? 1 : 2;
	}
	if (pf->probe)
		rc = peer_probe(pf, x, &whole, err, errlen);
	if (rc == 0 && !whole) {
		rc = peer_copy(pf, x, pf->use_peer, pf->bytes, false,
			       &pf->copy_seconds, err, errlen);
		if (rc < 0 && pf->use_peer && pf->has_host && !pf->oom) {
			/* The host replica is still there: it serves. */
			tc__log(TC_LOG_WARN,
				"GPU %d cannot copy from GPU %d's replica (the "
				"host replica serves): %s",
				pf->dst, pf->sib_dev, err);
			err[0] = '\0';
			pf->use_peer = false;
			rc = peer_copy(pf, x, false, pf->bytes, false,
				       &pf->copy_seconds, err, errlen);
		}
	}
	return rc;
}

void tc__gpu_tier_peer_done(struct tc__gpu_tier *t,
			    struct tc__gpu_peer_fill *pf, int rc,
			    enum tc__gpu_peer_kind kind)
{
	int i = pf->dst, s = pf->sib_dev;

	if (s >= 0 && pf->link)
		t->peer_link[s][i] = (uint8_t)pf->link;
	if (rc == 0 && pf->probe && pf->probe_bytes) {
		t->n_probes++;
		rate_add(&t->host_rate[i], pf->probe_bytes,
			 (double)pf->probe_bytes / pf->probe_host_gbps / 1e9);
		if (pf->probe_peer_gbps > 0)
			rate_add(&t->peer_rate[s][i], pf->probe_bytes,
				 (double)pf->probe_bytes / pf->probe_peer_gbps /
					 1e9);
		tc__log(TC_LOG_INFO,
			"GPU %d from GPU %d (%s) measured on %llu bytes (best "
			"of two rounds each): %.2f GB/s, from host memory "
			"%.2f GB/s: %s serves",
			i, s,
			pf->link == 1 ? "direct link" : "staged by the driver",
			(unsigned long long)pf->probe_bytes,
			pf->probe_peer_gbps, pf->probe_host_gbps,
			pf->use_peer ? "the sibling" : "the host replica");
	}
	if (rc == 0 && pf->copy_seconds > 0 &&
	    !(pf->probe && pf->probe_bytes == pf->bytes))
		rate_add(pf->use_peer ? &t->peer_rate[s][i] : &t->host_rate[i],
			 pf->bytes, pf->copy_seconds);
	if (rc == 0 && pf->use_peer) {
		if (kind == TC_GPU_PEER_BIND) {
			t->n_peer_bind_fills++;
			t->n_peer_bind_bytes += pf->bytes;
		} else {
			t->n_peer_fills++;
			t->n_peer_fill_bytes += pf->bytes;
		}
	}
	sib_unlease(t, pf);
}

/* ------------------------------------------------------------ view parts */

/* A kept view's parts (gpu_parts.h) are the ranges of its byte space
 * that are one contiguous range of its source's: the replicated tensors
 * of a tensor-parallel rank's view, held whole by every rank's view.
 * When no replica of the view itself is on another GPU, its fill copies
 * such ranges from other views of the same source on sibling GPUs (GPU
 * to GPU) and only the rest from host memory: from ready replicas, and
 * from fills still running (leads) as they complete those ranges, which
 * a lead copies first.  The metadata is the client's word, so the new
 * replica is kept only if its chunk digests, computed on its GPU, are the
 * view's; else it is filled again from host memory alone.
 *
 * Who waits on whom: a fill that follows a lead is never a lead itself,
 * and a lead waits on nobody, so no two fills wait on each other.  A
 * follower runs on the tier's elastic follow pool, so its wait holds no
 * thread of the job pool, where the lead (submitted first), imports and
 * puts' digests run; each wait ends after TC_GPU_PIPE_STALL_MS without
 * progress in any case. */

/* Loop: run a fill job on its pool. */
static void fill_submit(struct tc__gpu_tier *t, struct fill_job *j)
{
	tc__jobs_submit(j->gated_len ? t->follow_jobs : t->jobs, &j->job);
}

/* Worker: a gated part's wait and its end (xfer.h). */
static int prep_wait(void *gate, const struct tc__xfer_part *p)
{
	struct gt_prep *g = gate;

	return tc__gpu_pipe_wait(g->pipe, p->src_off, p->len, g->stall_ms,
				 &g->mem);
}

static void prep_end(void *gate)
{
	tc__gpu_pipe_copied(((struct gt_prep *)gate)->pipe);
}

/* Worker: the lead completed first range k. */
static void lead_progress(void *arg, const struct tc__xfer *x, uint32_t k)
{
	struct fill_job *j = arg;

	/* Tests: the followers find their lead failed (and fill from host
	 * memory) while its own fill goes on. */
	if (tc__failpoint("gpu_fill_lead_fail", j->o->id)) {
		tc__gpu_pipe_end(j->pipe, -ECANCELED, NULL);
		return;
	}
	tc__gpu_pipe_publish(j->pipe, x->gpu_dst,
			     x->first[k].off + x->first[k].len);
}

/* How long a follower waits for a lead that makes no progress. */
static uint64_t pipe_stall_ms(void)
{
	return tc__failpoint_num("gpu_pipe_stall_ms", 0, UINT64_MAX,
				 TC_GPU_PIPE_STALL_MS);
}

/* The replica of view v on a sibling GPU of `dst` j may copy parts from:
 * a ready one, else a lead's fill still running (*lead), on a pair not
 * measured slower than the host copy; NULL when none. */
static struct tc__gpu_replica *
part_source(struct tc__gpu_tier *t, struct tc__obj *v, int dst, bool *lead)
{
	const struct gt_rate *hr = &t->host_rate[dst];
	struct tc__gpu_replica *filling = NULL;

	*lead = false;
	for (int s = 0; s < t->ndev; s++) {
		struct tc__gpu_replica *r = v->gpu->rep[s];
		const struct gt_rate *pr = &t->peer_rate[s][dst];

		if (s == dst || !r || (pr->n && hr->n && pr->gbps <= hr->gbps))
			continue;
		if (replica_ready(r))
			return r;
		if (!filling && r->pipe && tc__gpu_pipe_live(r->pipe))
			filling = r;
	}
	*lead = filling != NULL;
	return filling;
}

/* Give j the ranges of o it can copy from other views of o's source on
 * sibling GPUs of j->ordinal: wherever one of o's parts and one of theirs
 * cover the same source bytes (at least TC_VIEW_PART_MIN of them), those
 * bytes are the same in both views.  A ready view replica used is leased
 * until done; a lead's fill is followed through its pipe (only its first
 * ranges, which it copies before anything else); at most GT_PART_SRCS
 * sources.  Nothing on OOM or malformed metadata: the host serves. */
static void parts_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			 struct fill_job *j)
{
	const char *of = tc__table_meta(&o->table, "tcast.view_of");
	struct tc__xfer_part *mine, *theirs, *pc = NULL;
	uint32_t nmine, ntheirs, npc = 0, cap = 0;
	struct tc__map_entry *e;
	uint64_t stall = 0;
	size_t b;

	if (!of || !o->shm || o->nchunks != tc__chunk_count(j->src_bytes) ||
	    !tc__view_parts_parse(&o->table, &mine, &nmine))
		return;
	for (e = tc__map_next(&t->objs->by_id, NULL, &b);
	     e && j->nprep < GT_PART_SRCS;
	     e = tc__map_next(&t->objs->by_id, e, &b)) {
		struct tc__obj *v = e->val;
		struct gt_prep *g = &j->prep[j->nprep];
		const char *vof;
		struct tc__gpu_replica *vr;
		bool lead;

		if (v == o || v->dead || !v->gpu ||
		    !(vof = tc__table_meta(&v->table, "tcast.view_of")) ||
		    strcmp(vof, of))
			continue;
		vr = part_source(t, v, j->ordinal, &lead);
		if (!vr)
			continue;
		if (lead) {
			if (!stall)
				stall = pipe_stall_ms();
			if (!tc__view_parts_overlap(mine, nmine, vr->pipe->lead,
						    vr->pipe->nlead, &g->mem, g,
						    &pc, &npc, &cap))
				continue;
			g->pipe = vr->pipe;
			g->stall_ms = stall;
			tc__gpu_pipe_get(g->pipe);
			if (!g->pipe->followed) {
				g->pipe->followed = true;
				t->n_pipe_leads++;
			}
			g->pipe->followers++;
			tc__log(TC_LOG_INFO,
				"GPU %d fill of view '%s' follows GPU %d's "
				"fill of view '%s': the ranges they share are "
				"copied GPU to GPU as that fill completes them",
				j->ordinal, o->id, dev_index(t, vr->dev),
				v->id);
		} else {
			if (!tc__view_parts_parse(&v->table, &theirs, &ntheirs))
				continue;
			ntheirs = tc__view_parts_overlap(mine, nmine, theirs,
							 ntheirs, &g->mem, NULL,
							 &pc, &npc, &cap);
			tc__free(theirs);
			if (!ntheirs)
				continue;
			g->rep = vr;
			g->mem = vr->mem;
			/* With its artifact: an rm of that view must not free
			 * the replica under the copy. */
			tc__gpu_replica_lease(t, vr);
		}
		j->nprep++;
	}
	tc__free(mine);
	j->nparts = tc__view_parts_trim(pc, npc);
	for (uint32_t k = 0; k < j->nparts; k++)
		if (pc[k].gate)
			j->gated_len += pc[k].len;
	if (j->nparts)
		j->parts = pc;
	else
		tc__free(pc);
}

/* Make j, the fill of view o with no part from a lead, a lead: its first
 * ranges (the spans of the source's tensors its parts hold whole; all of
 * its parts when the source is not held here) go first, and its progress
 * is published for fills of other views that begin while it runs.  No
 * pipe on OOM: then nobody follows it. */
static void lead_begin(struct tc__gpu_tier *t, struct tc__obj *o,
		       struct tc__gpu_replica *r, struct fill_job *j)
{
	const char *of = tc__table_meta(&o->table, "tcast.view_of");
	struct tc__xfer_part *mine, *lead;
	struct tc__obj *src;
	uint32_t nmine, nlead;

	if (j->gated_len || !of || !o->shm ||
	    o->nchunks != tc__chunk_count(j->src_bytes) ||
	    !tc__view_parts_parse(&o->table, &mine, &nmine))
		return;
	src = tc__map_get(&t->objs->by_id, of);
	tc__view_parts_lead(mine, nmine, src && !src->dead ? &src->table : NULL,
			    &lead, &nlead);
	tc__free(mine);
	if (nlead && tc__gpu_pipe_new(lead, nlead, &j->pipe) == 0) {
		tc__gpu_pipe_get(j->pipe);
		r->pipe = j->pipe; /* the replica's reference */
	}
}

/* On the loop, j's fill has ended (rc): as a lead, its replica r (ready
 * when rc is 0) is leased for the followers still copying from it; as a
 * follower, the last one done drops that lease.  Then the leases on the
 * ready view replicas it copied from go. */
static void parts_end(struct tc__gpu_tier *t, struct fill_job *j,
		      struct tc__gpu_replica *r)
{
	if (j->pipe) {
		struct tc__gpu_pipe *p = j->pipe;

		if (j->rc == 0 && p->followers > 0 && !p->held) {
			tc__gpu_replica_lease(t, r);
			p->held = r;
		}
		r->pipe = NULL;
		tc__gpu_pipe_put(p); /* the replica's */
		tc__gpu_pipe_put(p); /* the job's */
		j->pipe = NULL;
	}
	for (int k = 0; k < j->nprep; k++) {
		struct gt_prep *g = &j->prep[k];
		struct tc__gpu_replica *vr = g->rep;

		if (g->pipe) {
			if (--g->pipe->followers == 0 && g->pipe->held) {
				tc__gpu_replica_unlease(t, g->pipe->held);
				g->pipe->held = NULL;
			}
			tc__gpu_pipe_put(g->pipe);
		}
		if (vr)
			tc__gpu_replica_unlease(t, vr);
		*g = (struct gt_prep){ 0 };
	}
	j->nprep = 0;
	tc__free(j->parts);
	j->parts = NULL;
	j->nparts = 0;
}

/* On the worker, after a fill with parts: are the new replica's chunk
 * digests the view's?  Computed on its GPU.  Returns 0 when they are, else
 * a reason in j->parts_why and nonzero. */
static int parts_verify(struct fill_job *j)
{
	uint64_t n = tc__chunk_count(j->src_bytes);
	struct tc__digest *d = tc__calloc(n ? n : 1, sizeof(*d));
	int rc;

	if (!d) {
		snprintf(j->parts_why, sizeof(j->parts_why), "out of memory");
		return -ENOMEM;
	}
	rc = tc__gpu_hash_chunks_dev(&j->mem, j->src_bytes, d, j->parts_why,
				     sizeof(j->parts_why));
	if (rc == 0 && memcmp(d, j->chunks, n * sizeof(*d))) {
		snprintf(j->parts_why, sizeof(j->parts_why),
			 "its chunk digests are not the artifact's (the "
			 "metadata's parts do not hold its bytes)");
		rc = TC_EINVAL;
	}
	tc__free(d);
	return rc;
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
	if (r && replica_ready(r)) {
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
	sib = sibling_of(t, o, i);
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
		parts_choose(t, o, j);
		lead_begin(t, o, r, j);
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
			 dev_index(t, d), d->info.name);
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
	*dev = dev_index(t, d);
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
	int dev = dev_index(t, d);

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
			return o->gpu->rep[i] && replica_ready(o->gpu->rep[i]) ?
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
				      .part_wait = prep_wait,
				      .part_end = prep_end };

		if (j->pipe) {
			x.first = j->pipe->first;
			x.nfirst = j->pipe->nlead;
			x.first_done = lead_progress;
			x.first_arg = j;
		}
		j->pf.alloc_seconds = 0;
		j->rc = tc__gpu_tier_peer_run(&j->pf, &x, j->err,
					      sizeof(j->err));
		j->part_bytes = j->rc == 0 ? x.part_bytes : 0;
		j->gated_bytes = j->rc == 0 ? x.gated_bytes : 0;
		if (j->part_bytes && parts_verify(j) != 0) {
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
	int i = dev_index(t, d);

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
			(unsigned long long)pipe_stall_ms());
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
		parts_end(t, j, r); /* ready: a lead's may be leased */
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
			replica_free(t, r);
	} else {
		t->n_fill_failures++;
		tc__log(TC_LOG_WARN, "cannot make a GPU %d replica of '%s': %s",
			i, o->id, j->err);
		parts_end(t, j, r);
		replica_free(t, r); /* from FILLING */
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
		replica_free(t, r);
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
		if (!replica_ready(r))
			TC_BUG("freeing an artifact while a GPU replica fills");
		replica_free(g->tier, r);
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

		if (r && replica_ready(r) && r->base.leases == 0)
			replica_free(o->gpu->tier, r);
	}
}

/* ----------------------------------------------------------------- JSON */

/* Where a replica's bytes came from: "host", "gpu N" (a peer copy from
 * that GPU's replica), or "import" (the loader, a put, a restore). */
static const char *fill_source_name(const struct tc__gpu_replica *r)
{
	static const char *const gpus[] = {
		"gpu 0",  "gpu 1",  "gpu 2",  "gpu 3", "gpu 4",	 "gpu 5",
		"gpu 6",  "gpu 7",  "gpu 8",  "gpu 9", "gpu 10", "gpu 11",
		"gpu 12", "gpu 13", "gpu 14", "gpu 15"
	};

	if (r->fill_src == -2)
		return "import";
	if (r->fill_src < 0)
		return "host";
	return r->fill_src < 16 ? gpus[r->fill_src] : "gpu";
}

static void obj_gpu_json(const struct tc__obj *o, void *arr)
{
	if (!o->gpu)
		return;
	for (int i = 0; i < TC_GPU_TIER_MAX_DEV; i++) {
		const struct tc__gpu_replica *r = o->gpu->rep[i];

		if (!r)
			continue;
		json_array_append_new(
			arr,
			json_pack(
				"{s:s, s:s, s:i, s:I, s:I, s:s, s:f, s:f, s:b, "
				"s:b, s:s, s:f, s:I}",
				"tier", "gpu", "device", r->dev->info.uuid_str,
				"ordinal", i, "bytes",
				(json_int_t)r->base.bytes, "leases",
				(json_int_t)r->base.leases, "state",
				replica_ready(r) ? "ready" : "filling",
				"fill_seconds", r->fill_seconds,
				"alloc_seconds", r->alloc_seconds, "pinned",
				r->fill_pinned, "reused_allocation", r->reused,
				"fill_source", fill_source_name(r), "fill_gbps",
				r->fill_gbps, "peer_bytes",
				(json_int_t)r->part_bytes));
	}
}

/* What obj.c calls on an artifact's GPU replicas (obj.h). */
static const struct tc__obj_gpu_ops gpu_replica_ops = {
	.free = obj_gpu_free,
	.trim = obj_gpu_trim,
	.json = obj_gpu_json,
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

void tc__gpu_tier_publish_metrics(struct tc__gpu_tier *t)
{
	for (int i = 0; t->state == GT_OPEN && i < t->ndev; i++) {
		struct tc__gpu_dev *d = &t->devs[i];
		struct tc__metrics_tier m = { .replicas = d->nreplicas,
					      .budget = d->tier.budget,
					      .used = d->tier.used -
						      spare_bytes(d),
					      .evictions = d->tier.evictions };

		for (struct tc__gpu_replica *r = ready_first(d); r;
		     r = ready_next(r)) {
			m.bytes += r->o ? r->base.bytes : 0; /* not the spare */
			m.leases += r->base.leases;
		}
		tc__metrics_set_gpu(i, d->info.uuid_str, &m);
	}
}

/* The sibling-GPU sources as measured: fills from a sibling, probes, the
 * host rate per device and the peer rate per pair (only what was seen). */
static json_t *peer_json(const struct tc__gpu_tier *t)
{
	json_t *host = json_array(), *pairs = json_array(), *j;

	for (int d = 0; d < t->ndev; d++) {
		const struct gt_rate *h = &t->host_rate[d];

		if (h->n)
			json_array_append_new(
				host,
				json_pack("{s:i, s:f, s:i}", "ordinal", d,
					  "gbps", h->gbps, "fills", (int)h->n));
		for (int s = 0; s < t->ndev; s++) {
			const struct gt_rate *p = &t->peer_rate[s][d];
			uint8_t l = t->peer_link[s][d];

			if (!p->n && !l)
				continue;
			json_array_append_new(
				pairs,
				json_pack("{s:i, s:i, s:s, s:f, s:i, s:s}",
					  "src", s, "dst", d, "link",
					  l == 1 ? "direct" :
					  l == 2 ? "staged" :
						   "unknown",
					  "gbps", p->gbps, "fills", (int)p->n,
					  "choice",
					  !p->n || !h->n    ? "probe" :
					  p->gbps > h->gbps ? "peer" :
							      "host"));
		}
	}
	j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
		      "fills", (json_int_t)t->n_peer_fills, "fill_bytes",
		      (json_int_t)t->n_peer_fill_bytes, "bind_fills",
		      (json_int_t)t->n_peer_bind_fills, "bind_fill_bytes",
		      (json_int_t)t->n_peer_bind_bytes, "part_fills",
		      (json_int_t)t->n_part_fills, "part_fill_bytes",
		      (json_int_t)t->n_part_bytes, "part_rejected",
		      (json_int_t)t->n_part_rejected, "probes",
		      (json_int_t)t->n_probes, "host_rates", host, "pairs",
		      pairs);
	/* Part fills that copied from fills still running (leads). */
	if (j) {
		json_object_set_new(j, "pipelined_fills",
				    json_integer((json_int_t)t->n_pipe_fills));
		json_object_set_new(j, "pipelined_bytes",
				    json_integer((json_int_t)t->n_pipe_bytes));
		json_object_set_new(
			j, "pipelined_fallback_bytes",
			json_integer((json_int_t)t->n_pipe_fallback_bytes));
		json_object_set_new(j, "pipelined_leads",
				    json_integer((json_int_t)t->n_pipe_leads));
	}
	return j;
}

char *tc__gpu_tier_status_json(struct tc__gpu_tier *t)
{
	static const char *const states[] = { "not loaded", "loading", "ready",
					      "unavailable" };
	json_t *j, *devs = json_array();
	char *s;

	for (int i = 0; i < t->ndev; i++) {
		struct tc__gpu_dev *d = &t->devs[i];
		uint32_t leases = 0;
		json_t *dj;

		for (struct tc__gpu_replica *r = ready_first(d); r;
		     r = ready_next(r))
			leases += r->base.leases;
		/* filling_bytes: of used_bytes, the FILLING replicas (attach
		 * fills, imports, restores and puts to this GPU, bindings
		 * before their first fill), as host_filling_bytes is the
		 * host tier's. */
		dj = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, "
			       "s:I, s:I, s:I}",
			       "ordinal", i, "uuid", d->info.uuid_str, "name",
			       d->info.name, "pci_bus_id", d->info.pci_bus_id,
			       "total_bytes", (json_int_t)d->info.total_bytes,
			       "budget_bytes", (json_int_t)d->tier.budget,
			       "used_bytes",
			       (json_int_t)(d->tier.used - spare_bytes(d)),
			       "filling_bytes",
			       (json_int_t)d->tier.filling_bytes, "replicas",
			       (json_int_t)d->nreplicas, "leases",
			       (json_int_t)leases, "evictions",
			       (json_int_t)d->tier.evictions,
			       "reused_allocations", (json_int_t)d->reused);
		if (dj)
			json_object_set_new(
				dj, "spare",
				json_pack("{s:I, s:I, s:I}", "bytes",
					  (json_int_t)spare_bytes(d), "kept",
					  (json_int_t)d->spares_kept, "used",
					  (json_int_t)d->spares_used));
		/* Only where we already have a context: a status query
		 * must not create one (hundreds of MiB on a real GPU). */
		if (dj && d->touched) {
			uint64_t fr, tot;

			if (tc__gpu_mem_info(i, &fr, &tot, NULL, 0) == 0) {
				json_object_set_new(
					dj, "driver_free_bytes",
					json_integer((json_int_t)fr));
				json_object_set_new(
					dj, "driver_total_bytes",
					json_integer((json_int_t)tot));
			}
		}
		json_array_append_new(devs, dj);
	}
	j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I}", "state",
		      states[t->state], "pin_host",
		      t->cfg->pin_eager ? "eager" : "on_use", "devices", devs,
		      "fills", (json_int_t)t->n_fills, "fill_failures",
		      (json_int_t)t->n_fill_failures, "fill_bytes",
		      (json_int_t)t->n_fill_bytes, "fill_pinned_bytes",
		      (json_int_t)t->n_fill_pinned_bytes, "pinned_host_bytes",
		      (json_int_t)t->pinned_host_bytes);
	if (j) {
		json_object_set_new(j, "peer", peer_json(t));
		/* Of fill_bytes, what replica fills copied from host
		 * replicas (the rest came from sibling GPUs). */
		json_object_set_new(
			j, "fill_host_bytes",
			json_integer((json_int_t)t->n_fill_host_bytes));
	}
	if (j && t->state == GT_FAILED)
		json_object_set_new(j, "error", json_string(t->open_err));
	if (j && t->state == GT_OPEN) {
		json_object_set_new(j, "driver_version",
				    json_integer(t->driver_version));
		json_object_set_new(j, "library", json_string(t->driver_path));
	}
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}
