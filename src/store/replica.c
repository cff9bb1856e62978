/*
 * replica.c - the shared life cycle, LRU, budget and leases of replicas
 * (replica.h).  Knows no tier: what differs comes through tc__tier_ops.
 */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "net/ev.h"
#include "replica.h"
#include "tcast/errors.h"

static const char *const state_names[] = {
	[TC_REPLICA_IDLE] = "idle",
	[TC_REPLICA_FILLING] = "filling",
	[TC_REPLICA_READY] = "ready",
	[TC_REPLICA_EVICTING] = "evicting",
};

const char *tc__replica_state_name(enum tc__replica_state s)
{
	return (size_t)s < sizeof(state_names) / sizeof(state_names[0]) ?
		       state_names[s] :
		       "?";
}

/* A transition the caller should never have asked for: say so, change
 * nothing (replica.h). */
static int refuse_bug(const struct tc__replica *r, const char *what)
{
	tc__log(TC_LOG_ERROR,
		"BUG: replica %s refused in state %s (%u leases, %llu bytes)",
		what, tc__replica_state_name(r->state), r->leases,
		(unsigned long long)r->bytes);
	return TC_EINVAL;
}

bool tc__replica_charged(const struct tc__replica *r)
{
	return r->state != TC_REPLICA_IDLE;
}

/* ------------------------------------------------------------------ LRU */

static void lru_unlink(struct tc__tier *t, struct tc__replica *r)
{
	if (r->lru_prev)
		r->lru_prev->lru_next = r->lru_next;
	else if (t->lru_head == r)
		t->lru_head = r->lru_next;
	if (r->lru_next)
		r->lru_next->lru_prev = r->lru_prev;
	else if (t->lru_tail == r)
		t->lru_tail = r->lru_prev;
	r->lru_prev = r->lru_next = NULL;
}

static void lru_push(struct tc__tier *t, struct tc__replica *r)
{
	r->lru_prev = NULL;
	r->lru_next = t->lru_head;
	if (t->lru_head)
		t->lru_head->lru_prev = r;
	t->lru_head = r;
	if (!t->lru_tail)
		t->lru_tail = r;
}

static bool on_lru(const struct tc__replica *r)
{
	return r->state == TC_REPLICA_READY && !r->private_;
}

/* ---------------------------------------------------------------- tiers */

#ifdef TC_DEBUG
bool tc__tier_ok(const struct tc__tier *t)
{
	const struct tc__replica *prev = NULL;
	uint64_t lru_bytes = 0;

	for (const struct tc__replica *r = t->lru_head; r; r = r->lru_next) {
		if (r->lru_prev != prev || r->tier != t || !on_lru(r))
			return false;
		lru_bytes += r->bytes;
		prev = r;
	}
	return t->lru_tail == prev && lru_bytes + t->filling_bytes <= t->used &&
	       t->leased_bytes <= t->used;
}
#endif

void tc__tier_init(struct tc__tier *t, const char *name, uint64_t budget,
		   const struct tc__tier_ops *ops, void *arg)
{
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->ops = ops;
	t->arg = arg;
	t->budget = budget;
}

uint32_t tc__tier_evict(struct tc__tier *t, uint64_t need, uint64_t want,
			void *ctx)
{
	struct tc__replica *r, *prev;
	uint64_t freed = 0;
	uint32_t n = 0;

	for (r = t->lru_tail; r; r = prev) {
		prev = r->lru_prev;
		if (need ? t->used + need <= t->budget : freed >= want)
			break;
		if (r->leases ||
		    (t->ops->evictable && !t->ops->evictable(t, r)))
			continue;
		freed += r->bytes;
		n++;
		/* The owner takes r off the tier (and may free it); prev is
		 * another artifact's replica, untouched by that. */
		if (t->ops->evict(t, r, ctx))
			t->evictions++;
	}
	return n;
}

void tc__tier_refusal(const struct tc__tier *t, uint64_t bytes, bool too_big,
		      char *err, size_t errlen)
{
	if (too_big)
		snprintf(err, errlen,
			 "needs %llu bytes but the %s budget is %llu bytes",
			 (unsigned long long)bytes, t->name,
			 (unsigned long long)t->budget);
	else
		snprintf(err, errlen,
			 "%s budget exhausted: need %llu bytes, %llu of %llu "
			 "free; %llu held by clients, %llu being filled",
			 t->name, (unsigned long long)bytes,
			 (unsigned long long)(t->budget - t->used),
			 (unsigned long long)t->budget,
			 (unsigned long long)t->leased_bytes,
			 (unsigned long long)t->filling_bytes);
}

static int refuse(struct tc__tier *t, uint64_t bytes, bool too_big, char *err,
		  size_t errlen)
{
	if (t->ops->refuse)
		t->ops->refuse(t, bytes, too_big, err, errlen);
	else
		tc__tier_refusal(t, bytes, too_big, err, errlen);
	return TC_ENOSPACE;
}

/* Would evicting every replica that may go make room for `bytes`? */
static bool room_possible(struct tc__tier *t, uint64_t bytes)
{
	uint64_t may_go = 0;

	for (struct tc__replica *r = t->lru_tail; r; r = r->lru_prev)
		if (!r->leases &&
		    (!t->ops->evictable || t->ops->evictable(t, r)))
			may_go += r->bytes;
	return t->used - may_go + bytes <= t->budget;
}

/* Charge `bytes` for a replica that enters the tier now (fill), evicting
 * first when `may_evict` (with t->all_or_nothing only when that makes
 * room).  Every charge is a replica's: there is no raw reservation. */
static int tier_charge(struct tc__tier *t, uint64_t bytes, bool may_evict,
		       void *ctx, char *err, size_t errlen)
{
	if (bytes > t->budget)
		return refuse(t, bytes, true, err, errlen);
	if (t->used + bytes > t->budget && may_evict &&
	    (!t->all_or_nothing || room_possible(t, bytes)))
		tc__tier_evict(t, bytes, 0, ctx);
	if (t->used + bytes > t->budget)
		return refuse(t, bytes, false, err, errlen);
	t->used += bytes;
	return 0;
}

static void tier_uncharge(struct tc__tier *t, uint64_t bytes)
{
	if (bytes > t->used) {
		tc__log(TC_LOG_ERROR,
			"BUG: %s tier uncharges %llu bytes of %llu used",
			t->name, (unsigned long long)bytes,
			(unsigned long long)t->used);
		bytes = t->used;
	}
	t->used -= bytes;
}

/* ------------------------------------------------------------ replicas */

void tc__replica_init(struct tc__replica *r)
{
	memset(r, 0, sizeof(*r));
}

int tc__replica_set_private(struct tc__replica *r)
{
	if (r->state != TC_REPLICA_IDLE)
		return refuse_bug(r, "set_private");
	r->private_ = true;
	return 0;
}

/* r becomes charged to t with `bytes` already in t->used. */
static void enter(struct tc__replica *r, struct tc__tier *t, uint64_t bytes,
		  enum tc__replica_state s)
{
	r->tier = t;
	r->bytes = bytes;
	r->state = s;
	/* An adopted replica may say when it was last used (a host artifact:
	 * when it was made, before its load). */
	if (s == TC_REPLICA_FILLING || !r->last_use_ns)
		r->last_use_ns = tc__now_ns();
	t->nreplicas++;
	if (r->leases)
		t->leased_bytes += bytes;
	if (s == TC_REPLICA_FILLING)
		t->filling_bytes += bytes;
	if (on_lru(r))
		lru_push(t, r);
}

int tc__replica_fill(struct tc__replica *r, struct tc__tier *t, uint64_t bytes,
		     bool may_evict, void *ctx, char *err, size_t errlen)
{
	int rc;

	if (r->state != TC_REPLICA_IDLE)
		return refuse_bug(r, "fill");
	rc = tier_charge(t, bytes, may_evict, ctx, err, errlen);
	if (rc < 0)
		return rc;
	enter(r, t, bytes, TC_REPLICA_FILLING);
	return 0;
}

int tc__replica_adopt(struct tc__replica *r, struct tc__tier *t, uint64_t bytes)
{
	if (r->state != TC_REPLICA_IDLE)
		return refuse_bug(r, "adopt");
	t->used += bytes; /* no room is made: see replica.h */
	enter(r, t, bytes, TC_REPLICA_READY);
	return 0;
}

int tc__replica_ready(struct tc__replica *r)
{
	if (r->state != TC_REPLICA_FILLING)
		return refuse_bug(r, "ready");
	r->tier->filling_bytes -= r->bytes;
	r->state = TC_REPLICA_READY;
	r->last_use_ns = tc__now_ns();
	if (on_lru(r))
		lru_push(r->tier, r);
	return 0;
}

int tc__replica_recharge(struct tc__replica *r, uint64_t bytes)
{
	struct tc__tier *t = r->tier;

	if (r->state == TC_REPLICA_IDLE)
		return refuse_bug(r, "recharge");
	t->used = t->used - r->bytes + bytes;
	if (r->leases)
		t->leased_bytes = t->leased_bytes - r->bytes + bytes;
	if (r->state == TC_REPLICA_FILLING)
		t->filling_bytes = t->filling_bytes - r->bytes + bytes;
	r->bytes = bytes;
	return 0;
}

int tc__replica_evict(struct tc__replica *r)
{
	if (r->state != TC_REPLICA_READY)
		return refuse_bug(r, "evict");
	if (on_lru(r))
		lru_unlink(r->tier, r);
	r->state = TC_REPLICA_EVICTING;
	return 0;
}

int tc__replica_revive(struct tc__replica *r)
{
	if (r->state != TC_REPLICA_EVICTING)
		return refuse_bug(r, "revive");
	r->state = TC_REPLICA_READY;
	if (on_lru(r))
		lru_push(r->tier, r);
	return 0;
}

int tc__replica_gone(struct tc__replica *r, bool force)
{
	struct tc__tier *t = r->tier;

	if (r->state == TC_REPLICA_IDLE || (r->leases && !force))
		return refuse_bug(r, "gone");
	if (on_lru(r))
		lru_unlink(t, r);
	if (r->state == TC_REPLICA_FILLING)
		t->filling_bytes -= r->bytes;
	if (r->leases)
		t->leased_bytes -= r->bytes;
	tier_uncharge(t, r->bytes);
	t->nreplicas--;
	r->state = TC_REPLICA_IDLE;
	r->tier = NULL;
	return 0;
}

/* ------------------------------------------------------------ use, leases */

void tc__replica_touch(struct tc__replica *r)
{
	r->last_use_ns = tc__now_ns();
	if (on_lru(r) && r->tier->lru_head != r) {
		lru_unlink(r->tier, r);
		lru_push(r->tier, r);
	}
}

void tc__replica_age(struct tc__replica *r)
{
	struct tc__tier *t = r->tier;

	r->last_use_ns = 0;
	if (!on_lru(r) || t->lru_tail == r)
		return;
	lru_unlink(t, r);
	r->lru_prev = t->lru_tail;
	t->lru_tail->lru_next = r; /* not empty: r was on it */
	t->lru_tail = r;
}

int tc__replica_lease(struct tc__replica *r)
{
	if (r->state == TC_REPLICA_IDLE)
		return refuse_bug(r, "lease");
	if (r->leases++ == 0)
		r->tier->leased_bytes += r->bytes;
	tc__replica_touch(r);
	return 0;
}

int tc__replica_unlease(struct tc__replica *r)
{
	if (r->leases == 0)
		return refuse_bug(r, "unlease");
	if (--r->leases == 0 && r->tier)
		r->tier->leased_bytes -= r->bytes;
	return (int)r->leases;
}
