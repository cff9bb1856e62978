/*
 * gpu_tier_internal.h - what the GPU tier's files share: the tier's and
 * its jobs' state, and the few functions one file calls in another.
 *
 *   gpu_tier.c          replicas, budgets, requests, fills, leases (the loop)
 *   gpu_tier_sources.c  where a fill copies from besides the host replica:
 *                       a sibling GPU's replica, other views' replicas
 *   gpu_tier_json.c     status, metrics and an artifact's replica list
 *
 * Not for the rest of the daemon: gpu_tier.h is its interface.
 */
#ifndef TC_GPU_TIER_INTERNAL_H
#define TC_GPU_TIER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "gpu_parts.h"
#include "gpu_tier.h"
#include "obj.h"
#include "xfer/jobs.h"
#include "xfer/xfer.h"

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
/* Sibling views one fill copies parts from, at most (view parts:
 * gpu_tier_sources.c). */
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
	 * GPUs (gpu_tier_sources.c): ready replicas, each leased until
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

static inline int gt_dev_index(const struct tc__gpu_tier *t,
			       const struct tc__gpu_dev *d)
{
	return (int)(d - t->devs);
}

static inline struct tc__gpu_replica *gt_rep_of(const struct tc__replica *b)
{
	return b ? tc__replica_owner(b, struct tc__gpu_replica, base) : NULL;
}

static inline struct tc__gpu_dev *gt_dev_of(const struct tc__tier *tier)
{
	return tc__replica_owner(tier, struct tc__gpu_dev, tier);
}

static inline bool gt_ready(const struct tc__gpu_replica *r)
{
	return r->base.state == TC_REPLICA_READY;
}

/* The device's ready replicas, most recently used first:
 * for (r = gt_ready_first(d); r; r = gt_ready_next(r)). */
static inline struct tc__gpu_replica *
gt_ready_first(const struct tc__gpu_dev *d)
{
	return gt_rep_of(d->tier.lru_head);
}

static inline struct tc__gpu_replica *
gt_ready_next(const struct tc__gpu_replica *r)
{
	return gt_rep_of(r->base.lru_next);
}

/* Bytes the spare holds (charged, but shown apart from used_bytes, as
 * the host tier's spare segment is). */
static inline uint64_t gt_spare_bytes(const struct tc__gpu_dev *d)
{
	return d->spare ? d->spare->base.bytes : 0;
}

/* gpu_tier.c: a replica whose artifact is gone; its allocation may
 * become the device's spare. */
void tc__gt_replica_free(struct tc__gpu_tier *t, struct tc__gpu_replica *r);

/* gpu_tier_sources.c: the sibling replica to fill from (loop). */
struct tc__gpu_replica *tc__gt_sibling_of(struct tc__gpu_tier *t,
					  struct tc__obj *o, int dst);
/* gpu_tier_sources.c: view parts -- chosen and led on the loop, waited
 * for and published on the workers, verified on the worker, ended on the
 * loop. */
void tc__gt_parts_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			 struct fill_job *j);
void tc__gt_lead_begin(struct tc__gpu_tier *t, struct tc__obj *o,
		       struct tc__gpu_replica *r, struct fill_job *j);
int tc__gt_prep_wait(void *gate, const struct tc__xfer_part *p);
void tc__gt_prep_end(void *gate);
void tc__gt_lead_progress(void *arg, const struct tc__xfer *x, uint32_t k);
uint64_t tc__gt_pipe_stall_ms(void);
int tc__gt_parts_verify(struct fill_job *j);
void tc__gt_parts_end(struct tc__gpu_tier *t, struct fill_job *j,
		      struct tc__gpu_replica *r);

/* gpu_tier_json.c: an artifact's GPU replicas for `tcast inspect`. */
void tc__gt_obj_gpu_json(const struct tc__obj *o, void *arr);

#endif
