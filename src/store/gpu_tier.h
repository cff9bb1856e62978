/*
 * gpu_tier.h - the daemon's GPU tier: per-device replicas of host
 * artifacts, their budgets, leases and eviction.
 *
 * A GPU replica is one exportable VMM allocation (src/gpu/vmm.h) on one
 * device holding a copy of an artifact's byte space, made from the sealed
 * memfd by a worker job.  Clients import the exported fd read-only; the
 * daemon hands out the same fd (SCM_RIGHTS dups it) to every attacher.
 *
 * The driver is loaded lazily, by a job, at the first GPU request, so a
 * machine that never asks for a GPU never loads libcuda; a failed load is
 * sticky (TC_ENODEV with the reason).  Devices are the daemon's CUDA
 * ordinals; clients name them by UUID.
 *
 * Lifetimes: a replica lives inside its artifact (struct tc__obj.gpu).  A
 * GPU lease holds one artifact lease too, so an artifact is never freed
 * (nor evicted from host memory) while a client maps one of its replicas.
 * A replica without leases is evicted, least recently used first, when a
 * new replica on its device needs room, and freed with its artifact
 * (eviction, rm).  A client's mapping outlives all of that: the driver
 * frees the memory when the last handle and mapping are gone.  One
 * exception, on purpose: an evicted replica's allocation may be refilled
 * with another artifact of the same size (the driver scrubs freed memory
 * under the next copy), so a client that kept a mapping past its release
 * may see other bytes; replicas whose lease ended with a connection, not
 * a release, are never reused.
 *
 * Everything here runs on the loop thread, except the bodies of the jobs
 * (driver load, allocation + copy), which touch only their own data.
 */
#ifndef TC_GPU_TIER_H
#define TC_GPU_TIER_H

#include <stdbool.h>
#include <stdint.h>

#include "gpu/vmm.h"
#include "replica.h"
#include "xfer/gpu_loader.h"

#define TC_GPU_TIER_MAX_DEV 32 /* devices the tier manages */

struct tc__obj;
struct tc__objs;
struct tc__jobs;
struct tc__store_config;
struct tc__gpu_tier;
struct tc__gpu_pipe;
struct gt_req;

/* One device as the tier sees it.  Its tier (replica.h) holds the
 * budget; used counts its replicas only, FILLING (attach fills, fills
 * begun by tc__gpu_tier_fill_begin, bindings before their first fill) or
 * READY (bindings private, off the LRU); its LRU lists ready replicas,
 * most recent first. */
struct tc__gpu_dev {
	struct tc__gpu_info info; /* from enumeration (no context made) */
	struct tc__tier tier;	  /* budget, used, LRU, evictions */
	char name[16];		  /* "GPU <ordinal>": the tier's name */
	uint64_t gran;		  /* VMM granularity, 0 until first alloc */
	uint64_t reused;	  /* evictions whose allocation was refilled */
	/* The spare: the allocation of a put that found its content here
	 * already, or of a replica whose artifact was removed, kept for the
	 * next put of exactly its size (a put's cuMemCreate + map + export
	 * is 3-5 ms of its begin on an H200, beside another allocation's
	 * release).  A READY replica of this tier with no artifact, at the
	 * LRU's tail: charged like any other, the first victim.  At most
	 * one; NULL when none (or gpu_spare is off). */
	struct tc__gpu_replica *spare;
	uint64_t spare_since_ms; /* when it was kept (dropped unused after
				    GT_SPARE_HOLD_MS) */
	uint64_t spares_kept;	 /* allocations kept as the spare */
	uint64_t spares_used;	 /* of which taken by a put or a fill */
	uint32_t nreplicas;	 /* replicas here, filling or ready,
				    bindings included */
	bool touched;		 /* a context exists (we allocated here) */
};

/*
 * One artifact's copy on one device.  Its base (replica.h) is charged to
 * dev->tier; its leases are client attaches not yet released.  Invariant:
 * base READY => mem complete and filled, on the device's LRU list;
 * FILLING with o => a fill job is in flight (it holds an artifact lease)
 * and `waiters` are the requests to answer when it ends; FILLING without
 * o => a fill begun by tc__gpu_tier_fill_begin, owned by the import,
 * restore or put that fills its own allocation (mem stays empty until
 * adopted).  A GPU replica is
 * never EVICTING: one whose artifact was removed while clients map it
 * stays READY and goes at its last unlease.
 */
struct tc__gpu_replica {
	struct tc__replica base; /* state, bytes, leases, LRU */
	struct tc__obj *o;	 /* the artifact it copies; NULL while a
				    fill_begin fill runs */
	struct tc__gpu_dev *dev; /* where it lives (tier-owned) */
	struct tc__gpu_mem mem;	 /* owned: allocation, mapping, exported fd */
	double fill_seconds;	 /* allocation + copy time */
	double alloc_seconds;	 /* of which allocation */
	bool fill_pinned;	 /* the copy ran from pinned host memory */
	int fill_src;		 /* -1: from the host replica; >= 0: a peer
				    copy from that GPU's replica; -2: made
				    by an import, put or restore */
	double fill_gbps;	 /* the copy's rate (allocation excluded) */
	uint64_t part_bytes;	 /* of its bytes, copied from sibling GPUs'
				    replicas of other views of the same
				    source (a view's parts; "peer_bytes") */
	/* While it fills as a lead (gpu_parts.h): the progress other view
	 * fills copy its ranges by (a reference), else NULL. */
	struct tc__gpu_pipe *pipe;
	bool reused;		/* filled in an evicted replica's memory */
	bool no_reuse;		/* may be mapped without a lease: when
				   evicted, release, never refill */
	bool announced;		/* peers and the cluster know it */
	struct gt_req *waiters; /* requests waiting for the fill */
};

/* Per-artifact GPU state (struct tc__obj.gpu), NULL until the first GPU
 * request for it.  The host mapping is registered (pinned) once: by the
 * first fill job of a small artifact, after the first fill of a large one
 * (which goes through staging); it is unregistered when the artifact is
 * freed (by a worker, for large ones). */
enum { GT_REG_NONE, GT_REG_BUSY, GT_REG_DONE, GT_REG_FAILED };
struct tc__obj_gpu {
	struct tc__gpu_tier *tier;
	struct tc__gpu_replica *rep[TC_GPU_TIER_MAX_DEV]; /* by daemon ordinal
							   */
	int reg_state;					  /* GT_REG_* */
	struct tc__gpu_pinning pin; /* the host mapping, when GT_REG_DONE */
};

/* Called on the loop thread when a pending request is answered: rep is the
 * ready replica (rc 0) or NULL with rc < 0 and a message.  The callee takes
 * a lease (tc__gpu_replica_lease) if it replies with the replica; the
 * artifact is guaranteed alive during the call. */
typedef void tc__gpu_tier_cb(void *arg, struct tc__obj *o,
			     struct tc__gpu_replica *rep, int rc,
			     const char *err);

/* Create the tier (no driver is loaded).  Fills run on `jobs`, except
 * those that wait for a sibling view's fill in progress (followers): they
 * run on `follow_jobs`, an elastic pool, so a waiting follower never holds
 * a thread that the lead, an import or a put's digest needs.  Drain
 * `follow_jobs` before `jobs` (followers wait on leads, never the other
 * way).  Returns 0 or -ENOMEM. */
int tc__gpu_tier_new(const struct tc__store_config *cfg, struct tc__objs *objs,
		     struct tc__jobs *jobs, struct tc__jobs *follow_jobs,
		     struct tc__gpu_tier **out);
/* Daemon exit, before tc__jobs_free: submit no more jobs (requests and
 * OOM retries fail with TC_ECLOSED), so draining the pool ends. */
void tc__gpu_tier_stop(struct tc__gpu_tier *t);
/* Free the tier.  Every artifact must be freed first (tc__objs_release);
 * jobs must be finished (tc__jobs_free).  NULL is a no-op. */
void tc__gpu_tier_free(struct tc__gpu_tier *t);

/*
 * Find or make o's replica on a device: the daemon's ordinal `device`, or,
 * when `uuid` is non-NULL, the GPU with that UUID (and `device` must be
 * TC_GPU_ANY_DEVICE (proto.h) or that GPU's ordinal).  Returns 0 with *rep
 * ready (the caller replies at once), 1 when the answer will come through
 * cb(arg, ...) later (loading the driver or filling the replica), or an error
 * with a message: TC_ENODEV (no driver), TC_EDEVICE (no such GPU here),
 * TC_ENOSPACE (the device's budget is held by leased replicas), TC_EINVAL or
 * -ENOMEM.
 */
int tc__gpu_tier_attach(struct tc__gpu_tier *t, struct tc__obj *o,
			uint32_t device, const uint8_t *uuid,
			tc__gpu_tier_cb *cb, void *arg,
			struct tc__gpu_replica **rep, char *err, size_t errlen);

/* ---- imports straight to a GPU (the loader fills the allocation) ---- */

/* Open the tier now if it is closed: only after a worker has loaded the
 * driver (tc__gpu_init), so this costs a device enumeration.  Returns 0,
 * TC_EBUSY (an asynchronous open is in flight), or the sticky open error. */
int tc__gpu_tier_open_now(struct tc__gpu_tier *t, char *err, size_t errlen);
/*
 * A fill whose artifact is not in the table yet (an import or a restore
 * straight to a GPU, a put of CUDA tensors: the caller's worker fills an
 * allocation of its own) is a FILLING replica of that GPU's tier from its
 * start, like a host fill: charged (granularity-rounded, evicting
 * unleased replicas when needed), counted in the tier's filling_bytes,
 * never a victim; READY once tc__gpu_tier_fill_adopt makes it the
 * artifact's; gone (tc__gpu_tier_fill_drop) when the fill fails, is
 * aborted or its client goes away.  No GPU charge is a raw reservation.
 */

/* Begin a fill of `bytes` on the GPU with this UUID.  On success *fill is
 * the FILLING replica, owned by the caller until fill_adopt or fill_drop;
 * *dev: the daemon's ordinal; *charged: the granularity-rounded bytes (to
 * allocate).  With `reuse` (else NULL; empty on entry), an allocation of
 * exactly *charged bytes already made on that GPU -- the device's spare,
 * or an unleased replica evicted for the room -- is moved into *reuse
 * (reuse->dptr != 0), its bytes as they were: the caller fills every
 * byte.  Returns 0, TC_EDEVICE, TC_ENOTSUP, TC_ENOSPACE (saying what
 * clients hold and what is being filled) or -ENOMEM with a message; *fill
 * is then NULL. */
int tc__gpu_tier_fill_begin(struct tc__gpu_tier *t,
			    const uint8_t uuid[TC_GPU_UUID_BYTES],
			    uint64_t bytes, struct tc__gpu_replica **fill,
			    int *dev, uint64_t *charged,
			    struct tc__gpu_mem *reuse, char *err,
			    size_t errlen);
/* The fill failed or was given up: the replica goes and its charge comes
 * back; *fill becomes NULL (NULL: a no-op).  The caller releases its own
 * allocation. */
void tc__gpu_tier_fill_drop(struct tc__gpu_tier *t,
			    struct tc__gpu_replica **fill);
/* The fill is done: `mem` (filled) becomes o's READY replica on the
 * fill's GPU, charged as much as it is; *mem is left empty and *fill
 * NULL.  When o already has a replica there (the same content arrived
 * another way) or on OOM, the fill goes instead (charge back; mem kept as
 * the device's spare when it has none, else released).  Returns 0 when o has a
 * replica on that GPU now, else -ENOMEM. */
int tc__gpu_tier_fill_adopt(struct tc__gpu_tier *t, struct tc__obj *o,
			    struct tc__gpu_replica **fill,
			    struct tc__gpu_mem *mem, double seconds);
/* A binding's memory (binding.c) is a private replica `r` (replica.h):
 * charged as fill_begin charges (granularity-rounded, evicting unleased
 * replicas when needed; r->bytes says how much), FILLING until the caller
 * makes it READY, never on the device's LRU, so never evicted.  *dev: the
 * daemon's ordinal.  Returns 0, TC_EDEVICE, TC_ENOTSUP or TC_ENOSPACE
 * with a message (r stays IDLE), or TC_EINVAL when r is charged already. */
int tc__gpu_tier_bind_charge(struct tc__gpu_tier *t,
			     const uint8_t uuid[TC_GPU_UUID_BYTES],
			     uint64_t bytes, struct tc__replica *r, int *dev,
			     char *err, size_t errlen);
/* Give back the charge of a binding's replica on the daemon's `dev`
 * (nothing when r was never charged). */
void tc__gpu_tier_bind_release(struct tc__gpu_tier *t, int dev,
			       struct tc__replica *r);
/* True when o has no GPU replica (filling or ready). */
bool tc__gpu_tier_obj_empty(const struct tc__obj *o);

/* A GPU copy other than a replica fill (an import straight to a GPU, a
 * binding's fill) begins or has ended, on the loop thread: the tier pins
 * host copies in the background only while none runs, since pinning
 * stalls the process's other driver calls. */
void tc__gpu_tier_copy_begin(struct tc__gpu_tier *t);
void tc__gpu_tier_copy_end(struct tc__gpu_tier *t);
/* Every tick of the daemon's loop: pinning parked behind GPU copies goes
 * on once they have been quiet for a while.  t may be NULL. */
void tc__gpu_tier_tick(struct tc__gpu_tier *t);

/* o, a host artifact, was just sealed and inserted.  With gpu_pin_host:
 * eager (the default) and a GPU already in use, a large one is pinned in
 * the background now, so that its first GPU replica fills from pinned
 * memory too (else it is pinned after that first fill). */
void tc__gpu_tier_host_added(struct tc__gpu_tier *t, struct tc__obj *o);

/* The ready replica of o on the GPU with this UUID, or NULL. */
struct tc__gpu_replica *
tc__gpu_tier_find(struct tc__gpu_tier *t, struct tc__obj *o,
		  const uint8_t uuid[TC_GPU_UUID_BYTES]);

/* A lease of r ends without the client's release (its connection closed):
 * r's allocation is never refilled with another artifact when evicted. */
void tc__gpu_replica_keep_private(struct tc__gpu_replica *r);

/* Take / drop one client lease on a ready replica.  A lease also holds the
 * artifact (tc__objs_lease); dropping the last artifact lease of a removed
 * artifact frees it, replicas included. */
void tc__gpu_replica_lease(struct tc__gpu_tier *t, struct tc__gpu_replica *r);
void tc__gpu_replica_unlease(struct tc__gpu_tier *t, struct tc__gpu_replica *r);

/* ---- sibling-GPU sources: the measured choice of a fill's source ---- */

/* What kind of fill a peer choice serves (counted apart in STATUS
 * gpu.peer). */
enum tc__gpu_peer_kind {
	TC_GPU_PEER_REPLICA, /* a replica of the tier (fills, fill_bytes) */
	TC_GPU_PEER_BIND,    /* a binding's fill or swap (bind_fills) */
};

/*
 * One fill of `bytes` of an artifact onto GPU `dst` that may copy from
 * the artifact's ready replica on another GPU (a sibling) instead of from
 * its host replica: which one is measured, never assumed (docs/gpu.md,
 * "Sibling-GPU sources").  Three steps: tc__gpu_tier_peer_choose on the
 * loop thread (leases the sibling), tc__gpu_tier_peer_run on the fill's
 * worker (touches only this struct and the transfer), then
 * tc__gpu_tier_peer_done on the loop thread (learns the rates, counts,
 * drops the lease).  Replica fills and binding fills both go through them,
 * so both make the same choice from the same figures.
 * Invariant: sib != NULL <=> sib_dev >= 0, and then sib is leased.
 */
struct tc__gpu_peer_fill {
	/* choose: in */
	int dst;	/* the daemon's ordinal to fill */
	uint64_t bytes; /* the byte space to copy */
	bool has_host;	/* the artifact has a host replica */
	/* choose: out */
	struct tc__gpu_replica *sib; /* the sibling, leased, or NULL */
	struct tc__gpu_mem sib_mem;  /* its allocation (borrowed) */
	int sib_dev;		     /* its ordinal, or -1: none */
	bool use_peer;		     /* copy from the sibling (run: what was
					done in the end) */
	bool probe;		     /* measure both first, then choose */
	/* run: out */
	int link;		/* 1 direct, 2 staged, 0 unknown */
	double probe_host_gbps; /* the best of the probe's rounds */
	double probe_peer_gbps; /* 0: the sibling failed to copy */
	uint64_t probe_bytes;	/* bytes each probe copy moved */
	double copy_seconds;	/* the fill's copy alone */
	double alloc_seconds;	/* allocations the copies made */
	uint64_t host_bytes;	/* copied from the host replica, every copy
				   (probes included); the caller zeroes it */
	bool oom;		/* an allocation ran out of memory */
};

struct tc__xfer;

/* Begin pf (its `dst`, `bytes` and `has_host` set by the caller) for o:
 * no sibling (pf->sib_dev -1: the host replica serves), or the sibling
 * that serves or is probed against the host replica, leased until
 * tc__gpu_tier_peer_done.  Below the probe's minimum with a host replica
 * no sibling is taken.  Loop thread. */
void tc__gpu_tier_peer_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			      struct tc__gpu_peer_fill *pf);
/* Run the fill on a worker: `x` is the transfer from the host replica
 * (host, pin, staged, nthreads) to the GPU sink (gpu_dst, ordinal,
 * alloc_bytes) of pf->bytes; its source is switched per copy.  A probe
 * copies the first 64 MiB from both sources twice, in both orders, and
 * keeps each source's best round (the first write into fresh memory pays
 * first-touch costs the second does not); a sibling that fails falls back
 * to the host replica.  Returns 0 or the transfer's error with `err`. */
int tc__gpu_tier_peer_run(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
			  char *err, size_t errlen);
/* The fill ended with `rc` (loop thread): the pair's link and rates are
 * learnt, a fill from the sibling counted for `kind`, the lease dropped. */
void tc__gpu_tier_peer_done(struct tc__gpu_tier *t,
			    struct tc__gpu_peer_fill *pf, int rc,
			    enum tc__gpu_peer_kind kind);

/* The "gpu" member of STATUS (a malloc'd string, NULL on OOM).  An
 * artifact's own GPU entries come through its tc__obj_gpu_ops (obj.h). */
char *tc__gpu_tier_status_json(struct tc__gpu_tier *t);

/* Publish each opened device's replicas, bytes, budget, evictions and
 * leases to the metrics (metrics.h); nothing before the driver is open. */
void tc__gpu_tier_publish_metrics(struct tc__gpu_tier *t);

#endif /* TC_GPU_TIER_H */
