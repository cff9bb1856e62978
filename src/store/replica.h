/*
 * replica.h - replicas and tiers: the one life cycle, LRU, budget and
 * lease scheme that every place holding a copy of an artifact shares.
 *
 * An artifact is metadata (tensor table, digest, policy, keys); its bytes
 * live in replicas, each charged to one tier: host memory (obj.c), one GPU
 * (gpu_tier.c, one tier per device), the spill folder (spill.c), the
 * shared disk (durable.c: no budget, never evictable; its copies are
 * policy, not cache).  A replica moves through one life cycle:
 *
 *   IDLE --fill--> FILLING --ready--> READY --evict--> EVICTING
 *   EVICTING --gone--> IDLE
 *   FILLING --gone (the fill failed, or its client went)--> IDLE
 *   EVICTING --revive (the same content came back)--> READY
 *   IDLE --adopt (needs no room: an artifact on GPUs only, 0 bytes)--> READY
 *
 * Every charged state (FILLING, READY, EVICTING) holds `bytes` of the
 * tier's budget, and nothing else does: a fill is charged as a FILLING
 * replica from its start, on every tier.  READY replicas are on the
 * tier's LRU list, most recently used first, unless private: a private
 * replica (a binding: one client's memory) is charged like any other but
 * never on the list, so never chosen for eviction.  A replica with leases
 * is never chosen either, nor is a FILLING one (it is not on the list); an
 * EVICTING one is off the list and leaves (gone) when its owner sees its
 * last lease go.
 *
 * What differs between tiers comes through struct tc__tier_ops: whether a
 * READY unleased replica may go (the host keeps pinned artifacts) and how
 * it goes (free a segment, release a VMM allocation), and the wording of
 * a refusal.  The tier never frees anything itself.
 *
 * This module includes nothing else of the store: obj.c and gpu_tier.c
 * include it, never the other way.  Loop thread only.
 *
 * Illegal transitions (ready() on a READY replica, gone() on a leased one,
 * ...) are the caller's bug: the call changes nothing, logs "BUG: ..." and
 * returns TC_EINVAL, so the unit test can check each refusal while the
 * daemon, which cannot make them, keeps running.
 */
#ifndef TC_REPLICA_H
#define TC_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tc__tier;
struct tc__replica;

enum tc__replica_state {
	TC_REPLICA_IDLE,     /* charged to no tier (new, or gone) */
	TC_REPLICA_FILLING,  /* charged; bytes arriving; never a victim */
	TC_REPLICA_READY,    /* charged; complete; on the LRU unless private */
	TC_REPLICA_EVICTING, /* charged; leaving, off the LRU; waits for its
				leases to go */
};

/* What a tier does that the others do not.  Members may be NULL. */
struct tc__tier_ops {
	/* May `r` (READY, unleased, not private) be evicted now?  NULL: yes. */
	bool (*evictable)(struct tc__tier *t, struct tc__replica *r);
	/* Evict `r`, chosen by tc__tier_evict: the owner must take it off the
	 * tier before returning (tc__replica_evict, then tc__replica_gone, or
	 * tc__replica_gone straight from READY) and may free it.  `ctx` is
	 * tc__tier_evict's, passed through.  Returns true when an artifact's
	 * copy went (counted in the tier's evictions), false when `r` was
	 * one the tier keeps for itself (the GPU's spare allocation). */
	bool (*evict)(struct tc__tier *t, struct tc__replica *r, void *ctx);
	/* Write why `bytes` do not fit into err[errlen]: `too_big` when they
	 * exceed the whole budget; `leased` and `filling` are the bytes that
	 * could not be evicted for those reasons.  NULL: tc__tier_refusal's
	 * default wording. */
	void (*refuse)(struct tc__tier *t, uint64_t bytes, bool too_big,
		       char *err, size_t errlen);
};

/*
 * One place replicas live, with one budget.  Invariants: used = the bytes
 * of every charged replica, and nothing else (there are no raw
 * reservations: a fill whose artifact does not exist yet is a FILLING
 * replica already); leased_bytes = the bytes of charged replicas with
 * leases; filling_bytes = the bytes of FILLING replicas; the LRU holds
 * exactly the READY, non-private replicas.
 */
struct tc__tier {
	const char *name; /* borrowed: "host", "GPU 0", for messages */
	const struct tc__tier_ops *ops; /* borrowed, never NULL */
	void *arg;			/* the owner's, for ops */
	uint64_t budget;		/* bytes the tier may hold */
	uint64_t used;			/* bytes charged (see above) */
	uint64_t leased_bytes;		/* of which held by leases */
	uint64_t filling_bytes;		/* of which being filled */
	uint64_t evictions;		/* replicas evicted for room */
	uint32_t nreplicas;		/* charged replicas */
	/* Charging: refuse before evicting anything when evicting every
	 * replica that may go would still not make room (a tier whose
	 * victims' bytes go at once, the spill folder's files), rather than
	 * evict some and then refuse.  Set by the owner after init. */
	bool all_or_nothing;
	struct tc__replica *lru_head; /* most recently used */
	struct tc__replica *lru_tail; /* eviction starts here */
};

/*
 * A copy of an artifact's bytes in one tier.  Embedded in the owner's
 * struct (struct tc__obj, struct tc__gpu_replica), which reaches back with
 * container_of-style arithmetic (tc__replica_owner).  Zeroed or
 * tc__replica_init'ed: IDLE.
 */
struct tc__replica {
	struct tc__tier *tier;	      /* charged to, or NULL when IDLE */
	enum tc__replica_state state; /* see the life cycle above */
	bool private_;		      /* never on the LRU (a binding) */
	uint64_t bytes;		      /* charged to tier->used */
	uint32_t leases;	      /* holders that map or read it */
	uint64_t last_use_ns;	      /* monotonic; LRU order */
	struct tc__replica *lru_prev; /* neighbours on the tier's LRU */
	struct tc__replica *lru_next;
};

#define tc__replica_owner(r, type, member) \
	((type *)(void *)((char *)(r)-offsetof(type, member)))

/* ---- tiers ---- */

void tc__tier_init(struct tc__tier *t, const char *name, uint64_t budget,
		   const struct tc__tier_ops *ops, void *arg);
/* Evict READY replicas that are unleased, not private and evictable,
 * least recently used first, through ops->evict, until `need` more bytes
 * fit the budget (need 0: until `want` bytes were freed).  Returns the
 * number evicted (each counted in t->evictions). */
uint32_t tc__tier_evict(struct tc__tier *t, uint64_t need, uint64_t want,
			void *ctx);
/* The default wording of a refusal: "<name> budget exhausted: need N
 * bytes, F of B free; L held by clients, P being filled", or "needs N
 * bytes but the <name> budget is B bytes". */
void tc__tier_refusal(const struct tc__tier *t, uint64_t bytes, bool too_big,
		      char *err, size_t errlen);

/* ---- the life cycle of one replica ---- */

void tc__replica_init(struct tc__replica *r);
/* IDLE -> FILLING: charge `bytes` to t, evicting first when `may_evict`
 * (ctx goes to ops->evict; with t->all_or_nothing only when that makes
 * room).  Returns 0, TC_ENOSPACE with the reason in err (ops->refuse, else
 * tc__tier_refusal), or TC_EINVAL (not IDLE). */
int tc__replica_fill(struct tc__replica *r, struct tc__tier *t, uint64_t bytes,
		     bool may_evict, void *ctx, char *err, size_t errlen);
/* FILLING -> READY (on the LRU unless private).  0 or TC_EINVAL. */
int tc__replica_ready(struct tc__replica *r);
/* IDLE -> READY, charging `bytes` to t without making room or checking
 * the budget: for a replica whose bytes need no room (an artifact held on
 * GPUs only joins the host tier with 0).  Fills go through
 * tc__replica_fill.  0 or TC_EINVAL. */
int tc__replica_adopt(struct tc__replica *r, struct tc__tier *t,
		      uint64_t bytes);
/* Change the bytes a charged replica holds (its filled size differs from
 * its reservation; the tier's used follows).  0 or TC_EINVAL. */
int tc__replica_recharge(struct tc__replica *r, uint64_t bytes);
/* READY -> EVICTING: off the LRU; the owner calls tc__replica_gone when
 * no lease is left.  0 or TC_EINVAL. */
int tc__replica_evict(struct tc__replica *r);
/* EVICTING -> READY: the same content came back while leases held it.
 * 0 or TC_EINVAL. */
int tc__replica_revive(struct tc__replica *r);
/* FILLING, READY or EVICTING -> IDLE: uncharge the bytes.  Refused
 * (TC_EINVAL) while leased, except with `force` (daemon exit). */
int tc__replica_gone(struct tc__replica *r, bool force);
/* Mark r private (never on the LRU), before fill or adopt.  0 or
 * TC_EINVAL (not IDLE). */
int tc__replica_set_private(struct tc__replica *r);

/* Used now: last_use, and to the LRU's head when READY. */
void tc__replica_touch(struct tc__replica *r);
/* As if never used: r goes to the LRU's tail, the next victim (a GPU
 * tier's spare allocation, which holds no artifact). */
void tc__replica_age(struct tc__replica *r);
/* Take one lease (and touch): FILLING, READY or EVICTING.  0 or
 * TC_EINVAL. */
int tc__replica_lease(struct tc__replica *r);
/* Drop one lease.  Returns the leases left, or TC_EINVAL when none was
 * held. */
int tc__replica_unlease(struct tc__replica *r);

bool tc__replica_charged(const struct tc__replica *r);
const char *tc__replica_state_name(enum tc__replica_state s);

#ifdef TC_DEBUG
/* The tier's invariants that its own fields can show: the LRU's links,
 * that it holds only READY non-private replicas charged here, and that
 * their bytes plus filling_bytes fit in used.  For tests and assert(). */
bool tc__tier_ok(const struct tc__tier *t);
#endif

#endif /* TC_REPLICA_H */
