/*
 * test_replica.c - src/store/replica.c alone: the life cycle, the LRU,
 * the budget and the leases that the host, GPU, spill and shared-disk
 * tiers share.
 *
 * The tier here is a toy owner: items embed a struct tc__replica, its
 * evict op records the order of its victims and lets them go, and items
 * flagged `keep` are not evictable (as the host keeps pinned artifacts).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "store/replica.h"
#include "tcast/errors.h"

#define MSG 512

#ifdef TC_DEBUG
#define tier_ok(t) tc__tier_ok(t)
#else
#define tier_ok(t) true
#endif

struct item {
	struct tc__replica r;
	char name;
	bool keep; /* not evictable */
};

/* Victims of the last evictions, in order, as their names. */
static char victims[16];
static size_t nvictims;
static void *last_ctx;

static bool toy_evictable(struct tc__tier *t, struct tc__replica *r)
{
	return !tc__replica_owner(r, struct item, r)->keep;
}

static bool toy_evict(struct tc__tier *t, struct tc__replica *r, void *ctx)
{
	struct item *it = tc__replica_owner(r, struct item, r);

	if (nvictims < sizeof(victims) - 1)
		victims[nvictims++] = it->name;
	last_ctx = ctx;
	assert_int_equal(tc__replica_gone(r, false), 0);
	return true;
}

static const struct tc__tier_ops toy_ops = {
	.evictable = toy_evictable,
	.evict = toy_evict,
};

static int setup(void **state)
{
	(void)state;
	memset(victims, 0, sizeof(victims));
	nvictims = 0;
	last_ctx = NULL;
	/* Refused transitions log "BUG: ..." on purpose here. */
	tc__log_level = TC_LOG_ERROR - 1;
	return 0;
}

static void item_init(struct item *it, char name)
{
	memset(it, 0, sizeof(*it));
	tc__replica_init(&it->r);
	it->name = name;
}

/* Names on the LRU list, most recent first; checks the back links. */
static void lru_names(const struct tc__tier *t, char *out, size_t n)
{
	const struct tc__replica *prev = NULL;
	size_t i = 0;

	for (const struct tc__replica *r = t->lru_head; r; r = r->lru_next) {
		assert_ptr_equal(r->lru_prev, prev);
		assert_int_equal(r->state, TC_REPLICA_READY);
		if (i + 1 < n)
			out[i++] = tc__replica_owner(r, struct item, r)->name;
		prev = r;
	}
	assert_ptr_equal(t->lru_tail, prev);
	out[i] = '\0';
	assert_true(tier_ok(t));
}

static void must_contain(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("'%s' does not mention '%s'", hay, needle);
}

/* A replica filled and ready, charged `bytes`. */
static void make_ready(struct tc__tier *t, struct item *it, char name,
		       uint64_t bytes)
{
	char err[MSG];

	item_init(it, name);
	assert_int_equal(tc__replica_fill(&it->r, t, bytes, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_ready(&it->r), 0);
}

static void test_replica__life_cycle(void **state)
{
	struct tc__tier t;
	struct item a;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	item_init(&a, 'a');
	assert_int_equal(a.r.state, TC_REPLICA_IDLE);
	assert_false(tc__replica_charged(&a.r));
	assert_int_equal(tc__replica_fill(&a.r, &t, 40, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(a.r.state, TC_REPLICA_FILLING);
	assert_int_equal(t.used, 40);
	assert_int_equal(t.filling_bytes, 40);
	assert_int_equal(t.nreplicas, 1);
	assert_null(t.lru_head); /* a filling replica is not on the list */
	assert_int_equal(tc__replica_ready(&a.r), 0);
	assert_int_equal(a.r.state, TC_REPLICA_READY);
	assert_int_equal(t.filling_bytes, 0);
	assert_ptr_equal(t.lru_head, &a.r);
	assert_int_equal(tc__replica_evict(&a.r), 0);
	assert_int_equal(a.r.state, TC_REPLICA_EVICTING);
	assert_null(t.lru_head);
	assert_int_equal(t.used, 40); /* charged until gone */
	assert_int_equal(tc__replica_revive(&a.r), 0);
	assert_ptr_equal(t.lru_head, &a.r);
	assert_int_equal(tc__replica_evict(&a.r), 0);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(a.r.state, TC_REPLICA_IDLE);
	assert_null(a.r.tier);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_int_equal(t.nreplicas, 0);

	/* A failed fill goes straight from FILLING. */
	assert_int_equal(tc__replica_fill(&a.r, &t, 30, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_int_equal(t.filling_bytes, 0);

	/* Adopt: charged by the adoption itself (no room made), ready at
	 * once; a recharge moves the tier's used with it. */
	assert_int_equal(tc__replica_adopt(&a.r, &t, 20), 0);
	assert_int_equal(t.used, 20);
	assert_int_equal(t.filling_bytes, 0);
	assert_ptr_equal(t.lru_head, &a.r);
	assert_int_equal(tc__replica_recharge(&a.r, 25), 0);
	assert_int_equal(t.used, 25);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_null(t.lru_head);
}

static void test_replica__illegal_transitions(void **state)
{
	struct tc__tier t;
	struct item a;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	item_init(&a, 'a');
	/* From IDLE: nothing but fill, adopt or set_private. */
	assert_int_equal(tc__replica_ready(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_evict(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_revive(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_gone(&a.r, false), TC_EINVAL);
	assert_int_equal(tc__replica_lease(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_unlease(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_recharge(&a.r, 5), TC_EINVAL);
	assert_int_equal(a.r.state, TC_REPLICA_IDLE);
	assert_int_equal(a.r.leases, 0);

	/* FILLING: not evicted, not revived, not filled twice. */
	assert_int_equal(tc__replica_fill(&a.r, &t, 10, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_fill(&a.r, &t, 10, false, NULL, err,
					  sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__replica_adopt(&a.r, &t, 10), TC_EINVAL);
	assert_int_equal(tc__replica_evict(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_revive(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_set_private(&a.r), TC_EINVAL);
	assert_int_equal(t.used, 10);

	/* READY: not ready again, not revived; not gone while leased. */
	assert_int_equal(tc__replica_ready(&a.r), 0);
	assert_int_equal(tc__replica_ready(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_revive(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_lease(&a.r), 0);
	assert_int_equal(tc__replica_gone(&a.r, false), TC_EINVAL);
	assert_int_equal(a.r.state, TC_REPLICA_READY);
	assert_int_equal(t.used, 10);

	/* EVICTING while leased: still charged; not evicted twice; gone
	 * once the lease goes. */
	assert_int_equal(tc__replica_evict(&a.r), 0);
	assert_int_equal(tc__replica_evict(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_ready(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_gone(&a.r, false), TC_EINVAL);
	assert_int_equal(tc__replica_unlease(&a.r), 0);
	assert_int_equal(tc__replica_unlease(&a.r), TC_EINVAL);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_int_equal(t.leased_bytes, 0);

	/* Daemon exit: force lets a leased replica go. */
	make_ready(&t, &a, 'a', 10);
	assert_int_equal(tc__replica_lease(&a.r), 0);
	assert_int_equal(tc__replica_gone(&a.r, true), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_int_equal(t.leased_bytes, 0);
	assert_int_equal(t.nreplicas, 0);
}

static void test_replica__lru_order(void **state)
{
	struct tc__tier t;
	struct item a, b, c;
	char names[8];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	make_ready(&t, &a, 'a', 10);
	make_ready(&t, &b, 'b', 10);
	make_ready(&t, &c, 'c', 10);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "cba");
	tc__replica_touch(&a.r);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "acb");
	tc__replica_touch(&a.r); /* already the head */
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "acb");
	assert_int_equal(tc__replica_lease(&b.r), 0); /* a lease touches */
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "bac");
	assert_int_equal(tc__replica_unlease(&b.r), 0);
	/* Want 15 bytes freed: the two least recently used go, in order. */
	assert_int_equal(tc__tier_evict(&t, 0, 15, &t), 2);
	assert_string_equal(victims, "ca");
	assert_ptr_equal(last_ctx, &t);
	assert_int_equal(t.evictions, 2);
	assert_int_equal(t.used, 10);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "b");
	assert_int_equal(tc__replica_gone(&b.r, false), 0);
}

/* Aged: to the tail, the next victim -- from the head, from the middle,
 * and the tail itself staying put; a victim chosen from there first. */
static void test_replica__age(void **state)
{
	struct tc__tier t;
	struct item a, b, c;
	char names[8];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	make_ready(&t, &a, 'a', 10);
	make_ready(&t, &b, 'b', 10);
	make_ready(&t, &c, 'c', 10);
	tc__replica_age(&c.r);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "bac");
	tc__replica_age(&a.r);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "bca");
	tc__replica_age(&a.r);
	lru_names(&t, names, sizeof(names));
	assert_string_equal(names, "bca");
	assert_int_equal(tc__tier_evict(&t, 0, 5, NULL), 1);
	assert_string_equal(victims, "a");
	assert_int_equal(tc__replica_gone(&b.r, false), 0);
	assert_int_equal(tc__replica_gone(&c.r, false), 0);
}

static void test_replica__victims(void **state)
{
	struct tc__tier t;
	struct item a, b, c, d, f, g, h, x;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	item_init(&g, 'g');
	item_init(&h, 'h');
	item_init(&x, 'x');
	make_ready(&t, &a, 'a', 20); /* oldest: leased */
	make_ready(&t, &b, 'b', 20); /* not evictable */
	make_ready(&t, &c, 'c', 20);
	make_ready(&t, &d, 'd', 20);
	item_init(&f, 'f'); /* filling */
	assert_int_equal(tc__replica_fill(&f.r, &t, 20, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_lease(&a.r), 0);
	b.keep = true;
	assert_int_equal(t.used, 100);

	/* A fill of 30 more bytes needs two victims; a (leased), b (kept)
	 * and f (filling) are skipped, so c then d go, and no more than
	 * needed. */
	assert_int_equal(tc__replica_fill(&g.r, &t, 30, true, NULL, err,
					  sizeof(err)),
			 0);
	assert_string_equal(victims, "cd");
	assert_int_equal(t.used, 90);
	assert_int_equal(t.evictions, 2);
	assert_int_equal(a.r.state, TC_REPLICA_READY);
	assert_int_equal(b.r.state, TC_REPLICA_READY);
	assert_int_equal(f.r.state, TC_REPLICA_FILLING);

	/* Nothing more can go: refused, with the reason, charging nothing
	 * (the fills f and g count as being filled). */
	assert_int_equal(tc__replica_fill(&x.r, &t, 20, true, NULL, err,
					  sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "toy budget exhausted: need 20 bytes, 10 of 100 "
			  "free; 20 held by clients, 50 being filled");
	assert_int_equal(x.r.state, TC_REPLICA_IDLE);
	assert_string_equal(victims, "cd");
	assert_int_equal(t.used, 90);

	/* Only 10 bytes fit without evicting: b (kept) is still there. */
	assert_int_equal(tc__replica_fill(&h.r, &t, 10, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(t.used, 100);
	assert_int_equal(tc__replica_gone(&h.r, false), 0);
	assert_int_equal(tc__replica_gone(&g.r, false), 0);
	assert_int_equal(tc__replica_unlease(&a.r), 0);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(tc__replica_gone(&b.r, false), 0);
	assert_int_equal(tc__replica_gone(&f.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
	assert_int_equal(t.nreplicas, 0);
}

static void test_replica__budget(void **state)
{
	struct tc__tier t;
	struct item a, b;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	/* More than the whole budget: refused before any eviction. */
	make_ready(&t, &a, 'a', 50);
	item_init(&b, 'b');
	assert_int_equal(tc__replica_fill(&b.r, &t, 101, true, NULL, err,
					  sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "needs 101 bytes but the toy budget is 100 bytes");
	assert_int_equal(b.r.state, TC_REPLICA_IDLE);
	assert_int_equal(nvictims, 0);
	/* Fits only by evicting, which the caller does not allow. */
	assert_int_equal(tc__replica_fill(&b.r, &t, 60, false, NULL, err,
					  sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "50 of 100 free");
	assert_int_equal(nvictims, 0);
	/* Allowed: a goes, b is charged. */
	assert_int_equal(tc__replica_fill(&b.r, &t, 60, true, NULL, err,
					  sizeof(err)),
			 0);
	assert_string_equal(victims, "a");
	assert_int_equal(t.used, 60);
	assert_int_equal(tc__replica_gone(&b.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
}

/*
 * all_or_nothing (the spill folder): when evicting every replica that may
 * go would not make room, nothing is evicted; when it would, only as many
 * as needed go.  Without it the tier evicts what it can, then refuses.
 */
static void test_replica__all_or_nothing(void **state)
{
	struct tc__tier t;
	struct item a, b, k, n;
	char err[MSG];

	for (int aon = 0; aon < 2; aon++) {
		setup(state);
		tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
		t.all_or_nothing = aon;
		make_ready(&t, &a, 'a', 20);
		make_ready(&t, &b, 'b', 20);
		make_ready(&t, &k, 'k', 50);
		k.keep = true; /* not evictable: 40 bytes may go */
		item_init(&n, 'n');
		/* 90 needs 80 freed; only 40 may go. */
		assert_int_equal(tc__replica_fill(&n.r, &t, 90, true, NULL, err,
						  sizeof(err)),
				 TC_ENOSPACE);
		assert_int_equal(n.r.state, TC_REPLICA_IDLE);
		if (aon) {
			assert_int_equal(nvictims, 0);
			assert_int_equal(t.used, 90);
		} else {
			assert_string_equal(victims, "ab");
			assert_int_equal(t.used, 50);
		}
		assert_true(tier_ok(&t));
		if (aon) {
			/* 40 needs 30 freed: a (least recent) and b go. */
			assert_int_equal(tc__replica_fill(&n.r, &t, 40, true,
							  NULL, err,
							  sizeof(err)),
					 0);
			assert_string_equal(victims, "ab");
			assert_int_equal(t.used, 90);
			assert_int_equal(tc__replica_gone(&n.r, false), 0);
		}
		assert_int_equal(tc__replica_gone(&k.r, false), 0);
		assert_int_equal(t.used, 0);
		assert_true(tier_ok(&t));
	}
}

/* A tier with no budget whose replicas are never victims, as the shared
 * disk's (durable.c): fills are never refused or make room, and an
 * eviction asked for anything evicts nothing. */
static bool never_evictable(struct tc__tier *t, struct tc__replica *r)
{
	return false;
}

static const struct tc__tier_ops never_ops = {
	.evictable = never_evictable,
	.evict = toy_evict,
};

static void test_replica__unlimited_never_evictable(void **state)
{
	struct tc__tier t;
	struct item a, b, f;
	char err[MSG];

	tc__tier_init(&t, "shared disk", UINT64_MAX, &never_ops, NULL);
	make_ready(&t, &a, 'a', UINT64_C(1) << 50);
	make_ready(&t, &b, 'b', UINT64_C(1) << 50);
	item_init(&f, 'f');
	assert_int_equal(tc__replica_fill(&f.r, &t, UINT64_C(1) << 40, true,
					  NULL, err, sizeof(err)),
			 0);
	assert_int_equal(t.filling_bytes, UINT64_C(1) << 40);
	assert_int_equal(tc__tier_evict(&t, 0, UINT64_MAX, NULL), 0);
	assert_int_equal(nvictims, 0);
	assert_int_equal(t.evictions, 0);
	assert_int_equal(t.nreplicas, 3);
	assert_true(tier_ok(&t));
	/* A failed write: its FILLING replica goes, the others stay. */
	assert_int_equal(tc__replica_gone(&f.r, false), 0);
	assert_int_equal(t.filling_bytes, 0);
	assert_int_equal(t.used, UINT64_C(1) << 51);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(tc__replica_gone(&b.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
}

static void test_replica__private(void **state)
{
	struct tc__tier t;
	struct item a, p, q;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	make_ready(&t, &a, 'a', 40);
	item_init(&p, 'p');
	assert_int_equal(tc__replica_set_private(&p.r), 0);
	assert_int_equal(tc__replica_fill(&p.r, &t, 40, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_ready(&p.r), 0);
	tc__replica_touch(&p.r);
	/* Charged, counted, but never on the list, so never a victim. */
	assert_int_equal(t.used, 80);
	assert_int_equal(t.nreplicas, 2);
	assert_ptr_equal(t.lru_head, &a.r);
	assert_ptr_equal(t.lru_tail, &a.r);
	item_init(&q, 'q');
	assert_int_equal(tc__replica_fill(&q.r, &t, 70, true, NULL, err,
					  sizeof(err)),
			 TC_ENOSPACE);
	assert_string_equal(victims, "a");
	assert_int_equal(p.r.state, TC_REPLICA_READY);
	assert_int_equal(t.used, 40);
	assert_int_equal(tc__replica_gone(&p.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
}

/* A default refusal when the tier gives no wording; a lease taken while
 * filling counts as held once ready; recharges keep the counters. */
static void test_replica__counters(void **state)
{
	struct tc__tier t;
	struct item a;
	char err[MSG];

	tc__tier_init(&t, "toy", 100, &toy_ops, NULL);
	item_init(&a, 'a');
	assert_int_equal(tc__replica_fill(&a.r, &t, 30, false, NULL, err,
					  sizeof(err)),
			 0);
	assert_int_equal(tc__replica_lease(&a.r), 0);
	assert_int_equal(t.leased_bytes, 30);
	assert_int_equal(tc__replica_recharge(&a.r, 50), 0);
	assert_int_equal(t.used, 50);
	assert_int_equal(t.leased_bytes, 50);
	assert_int_equal(t.filling_bytes, 50);
	assert_int_equal(tc__replica_ready(&a.r), 0);
	assert_int_equal(t.filling_bytes, 0);
	assert_int_equal(tc__replica_unlease(&a.r), 0);
	assert_int_equal(t.leased_bytes, 0);
	assert_int_equal(tc__replica_gone(&a.r, false), 0);
	assert_int_equal(t.used, 0);
	assert_true(tier_ok(&t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_replica__life_cycle, setup),
		cmocka_unit_test_setup(test_replica__illegal_transitions,
				       setup),
		cmocka_unit_test_setup(test_replica__lru_order, setup),
		cmocka_unit_test_setup(test_replica__age, setup),
		cmocka_unit_test_setup(test_replica__victims, setup),
		cmocka_unit_test_setup(test_replica__budget, setup),
		cmocka_unit_test_setup(test_replica__all_or_nothing, setup),
		cmocka_unit_test_setup(test_replica__unlimited_never_evictable,
				       setup),
		cmocka_unit_test_setup(test_replica__private, setup),
		cmocka_unit_test_setup(test_replica__counters, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
