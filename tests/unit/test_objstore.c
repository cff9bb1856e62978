/*
 * test_objstore.c - src/store without a daemon: artifacts, keys, budget,
 * LRU and leases (obj.c), the configuration (config.c), memfd segments
 * (shm.c), the parallel loader and chunk hasher (loader.c) and the worker
 * pool (jobs.c).
 *
 * (Named test_objstore, not test_store, so its target does not clash with
 * tests/integration/test_store.c.)
 *
 * Artifacts are built the way the daemon builds them (ops_put.c on_create
 * and seal_run): a laid-out table, a memfd segment filled and sealed, chunk
 * digests, tc__obj_finish.  Every test frees what it made: at the end the
 * store is released and the budget's used bytes are checked to return.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
#include <jansson.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/log.h"
#include "format/format.h"
#include "net/ev.h"
#include "proto/proto.h"
#include "store/config.h"
#include "xfer/gpu_loader.h"
#include "xfer/jobs.h"
#include "xfer/loader.h"
#include "store/obj.h"
#include "format/canon.h"
#include "store/shm.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tlib.h"

#define MSG 1024

static uint64_t PG; /* page size: the unit artifacts are charged in */

static int setup_group(void **state)
{
	(void)state;
	PG = (uint64_t)sysconf(_SC_PAGESIZE);
	/* Eviction logs at INFO; keep the test output readable. */
	tc__log_level = TC_LOG_ERROR;
	return 0;
}

static int teardown_alloc(void **state)
{
	(void)state;
	tc__alloc_fail_after(-1);
	return 0;
}

static void must_contain(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("'%s' does not mention '%s'", hay, needle);
}

/* ------------------------------------------------------------- artifacts */

/*
 * An artifact of one U8 tensor `name` of `nbytes` bytes whose byte i is
 * seed + 31 * i, built like seal_run does.  The same (name, nbytes, seed)
 * always gives the same id.  Charged mem_bytes = page-rounded size.
 */
static struct tc__obj *make_obj(const char *name, uint64_t nbytes, uint8_t seed,
				enum tc__policy pol)
{
	struct tc__obj *o = tc__obj_new();
	struct tc__tensor *x;
	struct tc__digest *chunks;
	uint64_t n, bytes;
	uint8_t *p;

	assert_non_null(o);
	o->table.tensors = tc__calloc(1, sizeof(*o->table.tensors));
	assert_non_null(o->table.tensors);
	o->table.ntensors = 1;
	x = &o->table.tensors[0];
	x->name = tc__strdup(name);
	x->dtype = TC_DTYPE_U8;
	x->ndim = 1;
	x->shape[0] = nbytes;
	x->nbytes = nbytes;
	assert_int_equal(tc__table_layout(&o->table), 0);
	bytes = tc__shm_round(o->table.total_bytes);
	assert_int_equal(tc__shm_create("t-obj", bytes, &o->shm), 0);
	assert_int_equal(tc__shm_map_rw(o->shm), 0);
	p = o->shm->rw_map;
	for (uint64_t i = 0; i < nbytes; i++)
		p[i] = (uint8_t)(seed + 31 * i);
	assert_int_equal(tc__shm_seal(o->shm), 0);
	n = tc__chunk_count(o->table.total_bytes);
	chunks = calloc(n ? n : 1, sizeof(*chunks));
	assert_non_null(chunks);
	assert_int_equal(tc__hash_chunks(o->shm->map, o->table.total_bytes, 1,
					 chunks),
			 0);
	assert_int_equal(tc__obj_finish(o, chunks, n), 0);
	free(chunks);
	o->host.bytes = bytes;
	o->policy = pol;
	snprintf(o->source, sizeof(o->source), "test:%s", name);
	return o;
}

/* Fill (a FILLING host replica of o->host.bytes) and insert like the
 * daemon; returns the fill's code.  *out is the artifact now in the store
 * (an older copy after dedup). */
static int add(struct tc__objs *s, struct tc__obj *o, struct tc__obj **out)
{
	char err[MSG];
	struct tc__obj *got = NULL;
	int rc =
		tc__objs_fill(s, o, o->host.bytes, o->policy, err, sizeof(err));

	if (rc < 0) {
		tc__objs_fill_free(s, o);
		if (out)
			*out = NULL;
		return rc;
	}
	assert_int_equal(tc__objs_insert(s, o, &got), 0);
	assert_non_null(got);
	if (out)
		*out = got;
	return 0;
}

/* One page artifact, distinct per seed. */
static struct tc__obj *page_obj(uint8_t seed, enum tc__policy pol)
{
	char name[16];

	snprintf(name, sizeof(name), "t%u", seed);
	return make_obj(name, 100, seed, pol);
}

static struct tc__obj *added(struct tc__objs *s, uint8_t seed,
			     enum tc__policy pol)
{
	struct tc__obj *o;

	assert_int_equal(add(s, page_obj(seed, pol), &o), 0);
	return o;
}

static void check_store(struct tc__objs *s);

static bool held(struct tc__objs *s, const char *ref)
{
	char err[MSG];
	int rc;

	check_store(s);
	return tc__objs_resolve(s, ref, err, sizeof(err), &rc) != NULL;
}

static json_t *parse(char *s)
{
	json_error_t e;
	json_t *j;

	assert_non_null(s);
	j = json_loads(s, 0, &e);
	if (!j)
		fail_msg("bad JSON '%s': %s", s, e.text);
	free(s);
	return j;
}

/*
 * The store's invariants (what obj.c would check in an obj_table_ok):
 * the LRU list holds exactly the live artifacts, each indexed by its id;
 * every other indexed artifact is a removed one that clients still lease;
 * nkeys counts the keys naming each artifact; every artifact's memory is
 * charged.
 */
static void check_store(struct tc__objs *s)
{
	struct tc__map_entry *e, *f;
	struct tc__obj *prev = NULL;
	uint64_t charged = 0;
	size_t b, b2, live = 0;

	for (struct tc__obj *o = tc__objs_first(s); o;
	     o = tc__objs_next(o), live++) {
		assert_ptr_equal(o->host.lru_prev, prev ? &prev->host : NULL);
		assert_false(o->dead);
		assert_int_equal(o->host.state, TC_REPLICA_READY);
		assert_ptr_equal(tc__map_get(&s->by_id, o->id), o);
		prev = o;
	}
	assert_ptr_equal(s->host.lru_tail, prev ? &prev->host : NULL);
	for (e = tc__map_next(&s->by_id, NULL, &b); e;
	     e = tc__map_next(&s->by_id, e, &b)) {
		struct tc__obj *o = e->val;
		uint32_t nkeys = 0;

		assert_string_equal(e->key, o->id);
		charged += o->host.bytes;
		if (o->dead) {
			assert_true(o->host.leases > 0);
			assert_int_equal(o->host.state, TC_REPLICA_EVICTING);
			live++; /* counted with the list for the total */
		}
		for (f = tc__map_next(&s->keys, NULL, &b2); f;
		     f = tc__map_next(&s->keys, f, &b2))
			nkeys += !strcmp(((struct tc__key *)f->val)->id, o->id);
		assert_int_equal(o->nkeys, nkeys);
	}
	assert_int_equal(live, s->by_id.count);
	assert_true(charged <= s->host.used);
#ifdef TC_DEBUG
	assert_true(tc__tier_ok(&s->host));
#endif
}

/*
 * Room taken without an artifact, as a load takes it before it has one:
 * a FILLING replica of an empty object (tc__objs_fill), given back by
 * unreserve (the latest of that size goes) or by release_all.
 */
static struct {
	struct tc__objs *s;
	struct tc__obj *o;
} fills[32];
static int nfills;

static int reserve(struct tc__objs *s, uint64_t bytes, enum tc__policy p,
		   char *err, size_t errlen)
{
	struct tc__obj *o = tc__obj_new();
	int rc;

	assert_non_null(o);
	assert_true(nfills < (int)(sizeof(fills) / sizeof(fills[0])));
	rc = tc__objs_fill(s, o, bytes, p, err, errlen);
	if (rc < 0) {
		assert_int_equal(o->host.state, TC_REPLICA_IDLE);
		tc__obj_free(o);
		return rc;
	}
	assert_int_equal(o->host.state, TC_REPLICA_FILLING);
	fills[nfills].s = s;
	fills[nfills++].o = o;
	return 0;
}

static void unreserve(struct tc__objs *s, uint64_t bytes)
{
	for (int i = nfills - 1; i >= 0; i--)
		if (fills[i].s == s && fills[i].o->host.bytes == bytes) {
			tc__objs_fill_free(s, fills[i].o);
			fills[i] = fills[--nfills];
			return;
		}
	fail_msg("no reservation of %llu bytes", (unsigned long long)bytes);
}

/* Give back what reserve took for `s` (a test's end). */
static void unreserve_all(struct tc__objs *s)
{
	for (int i = nfills - 1; i >= 0; i--)
		if (fills[i].s == s) {
			tc__objs_fill_free(s, fills[i].o);
			fills[i] = fills[--nfills];
		}
}

static void release_all(struct tc__objs *s)
{
	check_store(s);
	unreserve_all(s);
	tc__objs_release(s);
}

/*
 * A host fill is a FILLING replica: charged (used and filling bytes) from
 * tc__objs_fill, never a victim, READY at insert, gone when it fails; a
 * duplicate's fill is uncharged, or moves to an artifact that had no host
 * copy.
 */
static void test_objstore__fill_life(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b, *g, *got;
	char err[MSG], want[64];
	uint64_t bytes;

	(void)state;
	tc__objs_init(&s, 8 * PG);
	a = make_obj("f", 5000, 1, TC_POLICY_CACHE);
	bytes = a->host.bytes;
	assert_int_equal(tc__objs_fill(&s, a, bytes, a->policy, err, MSG), 0);
	assert_int_equal(a->host.state, TC_REPLICA_FILLING);
	assert_int_equal(s.host.used, bytes);
	assert_int_equal(s.host.filling_bytes, bytes);
	assert_null(tc__objs_first(&s)); /* not on the LRU */
	/* Room for the rest only: the fill is not evicted for it. */
	b = make_obj("other", 100, 2, TC_POLICY_CACHE);
	assert_int_equal(tc__objs_fill(&s, b, 8 * PG, TC_POLICY_CACHE, err,
				       MSG),
			 TC_ENOSPACE);
	assert_int_equal(b->host.state, TC_REPLICA_IDLE);
	snprintf(want, sizeof(want), "%llu being filled",
		 (unsigned long long)bytes);
	if (!strstr(err, want))
		fail_msg("'%s' does not mention '%s'", err, want);
	assert_int_equal(s.host.used, bytes);
	assert_int_equal(tc__objs_fill(&s, b, 8 * PG - bytes, TC_POLICY_CACHE,
				       err, MSG),
			 0);
	assert_int_equal(s.host.used, 8 * PG);
	/* A failed fill goes: used returns to what it was. */
	tc__objs_fill_free(&s, b);
	assert_int_equal(s.host.used, bytes);
	assert_int_equal(s.host.filling_bytes, bytes);
	tc__objs_fill_free(&s, a);
	assert_int_equal(s.host.used, 0);
	assert_int_equal(s.host.filling_bytes, 0);
	assert_int_equal(s.host.nreplicas, 0);

	/* Insert: READY, on the LRU. */
	a = make_obj("f", 5000, 1, TC_POLICY_CACHE);
	assert_int_equal(add(&s, a, &got), 0);
	assert_ptr_equal(got, a);
	assert_int_equal(a->host.state, TC_REPLICA_READY);
	assert_ptr_equal(tc__objs_first(&s), a);
	assert_int_equal(s.host.filling_bytes, 0);
	/* The same content filled again: charged while it loads, uncharged
	 * when it turns out to be held already. */
	b = make_obj("f", 5000, 1, TC_POLICY_CACHE);
	assert_int_equal(tc__objs_fill(&s, b, bytes, b->policy, err, MSG), 0);
	assert_int_equal(s.host.used, 2 * bytes);
	assert_int_equal(tc__objs_insert(&s, b, &got), 0);
	assert_ptr_equal(got, a);
	assert_int_equal(s.host.used, bytes);
	assert_int_equal(s.host.filling_bytes, 0);
	assert_int_equal(s.host.nreplicas, 1);
	check_store(&s);

	/* Held on GPUs only (no host copy, 0 bytes), then filled on the
	 * host: the artifact gains the fill's bytes, charged once. */
	g = make_obj("g", 3000, 3, TC_POLICY_CACHE);
	tc__shm_free(g->shm);
	g->shm = NULL;
	g->host.bytes = 0;
	assert_int_equal(tc__objs_insert(&s, g, &got), 0);
	assert_ptr_equal(got, g);
	assert_int_equal(g->host.state, TC_REPLICA_READY);
	assert_int_equal(s.host.used, bytes);
	b = make_obj("g", 3000, 3, TC_POLICY_CACHE);
	assert_int_equal(add(&s, b, &got), 0);
	assert_ptr_equal(got, g);
	assert_non_null(g->shm);
	assert_int_equal(g->host.bytes, tc__shm_round(3000));
	assert_int_equal(s.host.used, bytes + tc__shm_round(3000));
	assert_int_equal(s.host.filling_bytes, 0);
	assert_int_equal(s.host.nreplicas, 2);
	release_all(&s);
}

/* ---------------------------------------------------------------- budget */

static void test_objstore__budget(void **state)
{
	struct tc__objs s;
	char err[MSG];

	tc__objs_init(&s, 10 * PG);
	assert_int_equal(s.host.used, 0);
	assert_int_equal(reserve(&s, 4 * PG, TC_POLICY_CACHE, err, sizeof(err)),
			 0);
	assert_int_equal(s.host.used, 4 * PG);
	assert_int_equal(
		reserve(&s, 6 * PG, TC_POLICY_PINNED, err, sizeof(err)), 0);
	assert_int_equal(s.host.used, 10 * PG);
	/* Full, nothing to evict: refused for every policy. */
	for (int p = TC_POLICY_CACHE; p <= TC_POLICY_PINNED; p++) {
		assert_int_equal(reserve(&s, 1, p, err, sizeof(err)),
				 TC_ENOSPACE);
		must_contain(err, "host budget exhausted");
		assert_int_equal(s.host.used, 10 * PG);
	}
	unreserve(&s, 6 * PG);
	assert_int_equal(s.host.used, 4 * PG);
	/* Zero bytes always fit. */
	assert_int_equal(reserve(&s, 0, TC_POLICY_WARM, err, sizeof(err)), 0);
	/* More than the whole budget: a different message. */
	assert_int_equal(reserve(&s, 10 * PG + 1, TC_POLICY_CACHE, err,
				 sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "host budget is");
	assert_int_equal(reserve(&s, UINT64_MAX, TC_POLICY_CACHE, err,
				 sizeof(err)),
			 TC_ENOSPACE);
	unreserve(&s, 4 * PG);
	assert_int_equal(s.host.used, 0);
	release_all(&s);
}

/* Artifacts in LRU order from the head (most recent) as seeds. */
static void expect_lru(struct tc__objs *s, const uint8_t *seeds, int n)
{
	struct tc__obj *prev = NULL;
	int i = 0;

	for (struct tc__obj *o = tc__objs_first(s); o;
	     o = tc__objs_next(o), i++) {
		char name[16];

		assert_true(i < n);
		snprintf(name, sizeof(name), "t%u", seeds[i]);
		assert_string_equal(o->table.tensors[0].name, name);
		assert_ptr_equal(o->host.lru_prev, prev ? &prev->host : NULL);
		assert_false(o->dead);
		prev = o;
	}
	assert_ptr_equal(s->host.lru_tail, prev ? &prev->host : NULL);
	assert_int_equal(i, n);
	check_store(s);
}

static void test_objstore__lru_order(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b, *c, *d;
	char err[MSG], ida[TC_ID_LEN + 1], idb[TC_ID_LEN + 1],
		idc[TC_ID_LEN + 1];

	tc__objs_init(&s, 3 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	b = added(&s, 2, TC_POLICY_CACHE);
	c = added(&s, 3, TC_POLICY_CACHE);
	memcpy(ida, a->id, sizeof(ida));
	memcpy(idb, b->id, sizeof(idb));
	memcpy(idc, c->id, sizeof(idc));
	expect_lru(&s, (const uint8_t[]){ 3, 2, 1 }, 3);
	assert_int_equal(s.host.used, 3 * PG);
	assert_int_equal(s.inserted, 3);

	/* A use moves an artifact to the head. */
	tc__objs_touch(&s, a);
	expect_lru(&s, (const uint8_t[]){ 1, 3, 2 }, 3);
	tc__objs_touch(&s, a); /* already the head */
	expect_lru(&s, (const uint8_t[]){ 1, 3, 2 }, 3);
	tc__objs_touch(&s, c);
	expect_lru(&s, (const uint8_t[]){ 3, 1, 2 }, 3);

	/* A full budget evicts from the tail: b, then a. */
	d = added(&s, 4, TC_POLICY_CACHE);
	assert_int_equal(s.host.evictions, 1);
	assert_false(held(&s, idb));
	assert_true(held(&s, ida));
	expect_lru(&s, (const uint8_t[]){ 4, 3, 1 }, 3);
	assert_int_equal(reserve(&s, 2 * PG, TC_POLICY_CACHE, err, sizeof(err)),
			 0);
	assert_int_equal(s.host.evictions, 3);
	assert_false(held(&s, ida));
	assert_false(held(&s, idc));
	assert_true(held(&s, d->id));
	expect_lru(&s, (const uint8_t[]){ 4 }, 1);
	assert_int_equal(s.host.used, 3 * PG);
	unreserve(&s, 2 * PG);
	/* Leasing also counts as a use. */
	a = added(&s, 1, TC_POLICY_CACHE);
	expect_lru(&s, (const uint8_t[]){ 1, 4 }, 2);
	tc__objs_lease(&s, d);
	expect_lru(&s, (const uint8_t[]){ 4, 1 }, 2);
	tc__objs_unlease(&s, d);
	release_all(&s);
}

static void test_objstore__evict_skips_leased_pinned(void **state)
{
	struct tc__objs s;
	struct tc__obj *leased, *pinned, *cache, *warm;
	char err[MSG], want[256];

	tc__objs_init(&s, 4 * PG);
	/* Oldest first, so the leased and pinned ones are at the tail. */
	leased = added(&s, 1, TC_POLICY_CACHE);
	pinned = added(&s, 2, TC_POLICY_PINNED);
	cache = added(&s, 3, TC_POLICY_CACHE);
	warm = added(&s, 4, TC_POLICY_WARM);
	/* The lease is a use; two more uses put the leased and pinned ones
	 * back at the tail. */
	tc__objs_lease(&s, leased);
	tc__objs_touch(&s, cache);
	tc__objs_touch(&s, warm);
	expect_lru(&s, (const uint8_t[]){ 4, 3, 1, 2 }, 4);

	/* A cache reservation may evict cache and warm artifacts (warm
	 * only refuses to evict others for itself), never leased or
	 * pinned ones. */
	assert_int_equal(reserve(&s, 2 * PG, TC_POLICY_CACHE, err, sizeof(err)),
			 0);
	assert_int_equal(s.host.evictions, 2);
	assert_true(held(&s, leased->id));
	assert_true(held(&s, pinned->id));
	expect_lru(&s, (const uint8_t[]){ 1, 2 }, 2);

	/* Nothing evictable is left: the message says who holds what. */
	assert_int_equal(reserve(&s, PG, TC_POLICY_CACHE, err, sizeof(err)),
			 TC_ENOSPACE);
	snprintf(want, sizeof(want),
		 "need %llu bytes, 0 of %llu free; %llu held by clients, "
		 "%llu pinned",
		 (unsigned long long)PG, (unsigned long long)(4 * PG),
		 (unsigned long long)PG, (unsigned long long)PG);
	must_contain(err, want);
	assert_int_equal(s.host.evictions, 2);
	unreserve(&s, 2 * PG);

	/* Unleased, the first one is evictable again; pinned never. */
	tc__objs_unlease(&s, leased);
	assert_int_equal(reserve(&s, 3 * PG, TC_POLICY_CACHE, err, sizeof(err)),
			 0);
	assert_int_equal(s.host.evictions, 3);
	assert_true(held(&s, pinned->id));
	unreserve(&s, 3 * PG);
	assert_int_equal(reserve(&s, 4 * PG, TC_POLICY_CACHE, err, sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "0 held by clients");
	release_all(&s);
}

static void test_objstore__warm_pinned_refuse(void **state)
{
	struct tc__objs s;
	char err[MSG];

	tc__objs_init(&s, 2 * PG);
	added(&s, 1, TC_POLICY_CACHE);
	added(&s, 2, TC_POLICY_CACHE);
	/* Warm and pinned never evict others, even plain cache ones. */
	assert_int_equal(add(&s, page_obj(3, TC_POLICY_WARM), NULL),
			 TC_ENOSPACE);
	assert_int_equal(add(&s, page_obj(4, TC_POLICY_PINNED), NULL),
			 TC_ENOSPACE);
	assert_int_equal(reserve(&s, PG, TC_POLICY_WARM, err, sizeof(err)),
			 TC_ENOSPACE);
	must_contain(err, "this policy does not evict others");
	assert_int_equal(s.host.evictions, 0);
	assert_int_equal(s.host.used, 2 * PG);
	release_all(&s);
	/* With room they fit. */
	tc__objs_init(&s, 2 * PG);
	added(&s, 3, TC_POLICY_WARM);
	added(&s, 4, TC_POLICY_PINNED);
	assert_int_equal(s.host.used, 2 * PG);
	release_all(&s);
}

/* The ENOSPACE message counts memory that clients still map after the
 * artifact was removed: it is held by clients as much as a live lease. */
static void test_objstore__enospace_counts_removed_leased(void **state)
{
	struct tc__objs s;
	struct tc__obj *a;
	char err[MSG], id[TC_ID_LEN + 1];

	tc__objs_init(&s, 2 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	memcpy(id, a->id, sizeof(id));
	tc__objs_lease(&s, a);
	assert_int_equal(tc__objs_rm(&s, id, err, sizeof(err)), 0);
	added(&s, 2, TC_POLICY_PINNED);
	assert_int_equal(reserve(&s, PG, TC_POLICY_CACHE, err, sizeof(err)),
			 TC_ENOSPACE);
	{
		char want[128];

		snprintf(want, sizeof(want), "%llu held by clients",
			 (unsigned long long)PG);
		must_contain(err, want);
	}
	tc__objs_unlease(&s, a);
	assert_int_equal(s.host.used, PG);
	assert_int_equal(reserve(&s, PG, TC_POLICY_CACHE, err, sizeof(err)), 0);
	unreserve(&s, PG);
	release_all(&s);
}

/* ----------------------------------------------------------------- insert */

static void test_objstore__insert_dedup(void **state)
{
	static const struct {
		enum tc__policy first, second, want;
	} cases[] = {
		{ TC_POLICY_CACHE, TC_POLICY_CACHE, TC_POLICY_CACHE },
		{ TC_POLICY_CACHE, TC_POLICY_WARM, TC_POLICY_WARM },
		{ TC_POLICY_CACHE, TC_POLICY_PINNED, TC_POLICY_PINNED },
		{ TC_POLICY_WARM, TC_POLICY_CACHE, TC_POLICY_WARM },
		{ TC_POLICY_WARM, TC_POLICY_PINNED, TC_POLICY_PINNED },
		{ TC_POLICY_PINNED, TC_POLICY_CACHE, TC_POLICY_PINNED },
		{ TC_POLICY_PINNED, TC_POLICY_WARM, TC_POLICY_PINNED },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tc__objs s;
		struct tc__obj *a, *b, *got;

		tc__objs_init(&s, 8 * PG);
		a = make_obj("w", 5000, 9, cases[i].first);
		b = make_obj("w", 5000, 9, cases[i].second);
		assert_string_equal(a->id, b->id);
		assert_int_equal(a->host.bytes, tc__shm_round(5000));
		assert_int_equal(add(&s, a, &got), 0);
		assert_ptr_equal(got, a);
		/* The second copy is freed; its reservation comes back. */
		assert_int_equal(add(&s, b, &got), 0);
		assert_ptr_equal(got, a);
		assert_int_equal(s.host.used, a->host.bytes);
		assert_int_equal(s.inserted, 1);
		assert_int_equal(s.by_id.count, 1);
		if (a->policy != cases[i].want)
			fail_msg("dedup of %s then %s kept %s, not %s",
				 tc__policy_name(cases[i].first),
				 tc__policy_name(cases[i].second),
				 tc__policy_name(a->policy),
				 tc__policy_name(cases[i].want));
		release_all(&s);
	}

	/* Same bytes, different name or different bytes: different ids. */
	{
		struct tc__obj *a = make_obj("w", 5000, 9, TC_POLICY_CACHE),
			       *b = make_obj("v", 5000, 9, TC_POLICY_CACHE),
			       *c = make_obj("w", 5000, 10, TC_POLICY_CACHE),
			       *d = make_obj("w", 4999, 9, TC_POLICY_CACHE);

		assert_string_not_equal(a->id, b->id);
		assert_string_not_equal(a->id, c->id);
		assert_string_not_equal(a->id, d->id);
		tc__obj_free(a);
		tc__obj_free(b);
		tc__obj_free(c);
		tc__obj_free(d);
	}
}

static void test_objstore__obj_finish(void **state)
{
	struct tc__obj *o =
		make_obj("layer/0.w", 3 * PG + 5, 7, TC_POLICY_CACHE);
	struct tc__digest td, chunk, root;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__table t;
	struct tc__cur c;
	char id[TC_ID_LEN + 1], err[MSG];
	const char *s;
	size_t n;
	uint64_t size;

	/* id = BLAKE3(canonical table || chunk digests). */
	tc__canon_table(&b, &o->table);
	assert_false(b.oom);
	tc__hash256(o->shm->map, o->table.total_bytes, &chunk);
	tc__digest_root(b.data, b.len, &chunk, 1, &root);
	tc__buf_release(&b);
	/* And not the protocol's table encoding (the wire does not name
	 * artifacts). */
	tc__proto_put_table(&b, &o->table);
	tc__digest_root(b.data, b.len, &chunk, 1, &td);
	tc__buf_release(&b);
	assert_false(tc__digest_eq(&td, &root));
	tc__digest_id(&root, id);
	assert_string_equal(o->id, id);
	assert_true(tc__is_id(o->id));

	/* attach_body: id, segment size, then the table. */
	tc__cur_init(&c, o->attach_body.data, o->attach_body.len);
	assert_int_equal(tc__cur_read_str(&c, 128, &s, &n), 0);
	assert_int_equal(n, TC_ID_LEN);
	assert_memory_equal(s, o->id, n);
	assert_int_equal(tc__cur_read_u64(&c, &size), 0);
	assert_int_equal(size, o->shm->size);
	assert_int_equal(size, 4 * PG);
	assert_int_equal(tc__proto_get_table(&c, 1, &t, err, sizeof(err)), 0);
	assert_int_equal(c.left, 0);
	assert_int_equal(t.ntensors, 1);
	assert_string_equal(t.tensors[0].name, "layer/0.w");
	assert_int_equal(t.total_bytes, 3 * PG + 5);
	tc__table_release(&t);
	tc__obj_free(o);
	tc__obj_free(NULL);
}

/* ----------------------------------------------------------------- leases */

static void test_objstore__rm_leased(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *a2, *got;
	char err[MSG], id[TC_ID_LEN + 1];
	json_t *j;

	tc__objs_init(&s, 4 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	memcpy(id, a->id, sizeof(id));
	tc__objs_lease(&s, a);
	tc__objs_lease(&s, a);
	assert_int_equal(a->host.leases, 2);

	/* rm hides it at once; the memory stays charged while mapped. */
	assert_int_equal(tc__objs_rm(&s, id, err, sizeof(err)), 0);
	assert_false(held(&s, id));
	assert_int_equal(s.host.used, PG);
	assert_int_equal(tc__objs_rm(&s, id, err, sizeof(err)), TC_ENOTFOUND);
	j = parse(tc__objs_list_json(&s, 0, NULL));
	assert_int_equal(json_array_size(json_object_get(j, "artifacts")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "used_bytes")),
			 PG);
	json_decref(j);
	/* A key cannot be pointed at it. */
	{
		uint64_t gen;

		assert_int_equal(tc__objs_key_set(&s, "k", id, false, 0, &gen,
						  err, sizeof(err)),
				 TC_ENOTFOUND);
	}

	/* The same content is put again while the removed copy is still
	 * mapped: that copy comes back (one object per id), and the new
	 * one's reservation is returned. */
	assert_int_equal(add(&s, page_obj(1, TC_POLICY_CACHE), &a2), 0);
	assert_ptr_equal(a2, a);
	assert_false(a->dead);
	assert_true(held(&s, id));
	assert_int_equal(s.host.used, PG);
	assert_int_equal(s.by_id.count, 1);
	expect_lru(&s, (const uint8_t[]){ 1 }, 1);

	/* Revived, it outlives its leases. */
	tc__objs_unlease(&s, a);
	tc__objs_unlease(&s, a);
	assert_int_equal(a->host.leases, 0);
	tc__objs_unlease(&s, a); /* no lease left: a no-op */
	assert_int_equal(s.host.used, PG);
	assert_ptr_equal(
		tc__objs_resolve(&s, id, err, sizeof(err), &(int){ 0 }), a);

	/* rm of an unleased artifact frees it at once. */
	assert_int_equal(tc__objs_rm(&s, id, err, sizeof(err)), 0);
	assert_int_equal(s.host.used, 0);
	assert_int_equal(s.by_id.count, 0);

	/* rm by key of a leased artifact: freed at the last unlease. */
	got = added(&s, 2, TC_POLICY_CACHE);
	{
		uint64_t gen;

		assert_int_equal(tc__objs_key_set(&s, "m", got->id, false, 0,
						  &gen, err, sizeof(err)),
				 0);
	}
	tc__objs_lease(&s, got);
	assert_int_equal(tc__objs_rm(&s, "m", err, sizeof(err)), 0);
	assert_int_equal(s.host.used, PG);
	assert_true(got->dead);
	/* Another hold on the removed artifact (a GPU fill job's, a waiter's
	 * reply) leaves it off the LRU list: once there, it was listed, and
	 * freed at its last lease while still linked. */
	tc__objs_lease(&s, got);
	check_store(&s);
	assert_null(tc__objs_first(&s));
	tc__objs_unlease(&s, got);
	assert_true(got->dead);
	tc__objs_unlease(&s, got);
	assert_int_equal(s.host.used, 0);
	assert_int_equal(s.by_id.count, 0);
	release_all(&s);
}

/* ------------------------------------------------------------------- keys */

static int kset(struct tc__objs *s, const char *key, const char *id,
		bool expect, uint64_t eg, uint64_t *gen, char *err)
{
	err[0] = '\0';
	return tc__objs_key_set(s, key, id, expect, eg, gen, err, MSG);
}

static void test_objstore__keys_cas(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b;
	char err[MSG];
	uint64_t gen;

	tc__objs_init(&s, 4 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	b = added(&s, 2, TC_POLICY_CACHE);

	/* Create: generation 1. */
	assert_int_equal(kset(&s, "m", a->id, false, 0, &gen, err), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(a->nkeys, 1);
	/* Same target again: a no-op, with or without expect. */
	assert_int_equal(kset(&s, "m", a->id, false, 0, &gen, err), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(kset(&s, "m", a->id, true, 1, &gen, err), 0);
	assert_int_equal(gen, 1);
	/* Moving without expect: conflict naming the generation. */
	assert_int_equal(kset(&s, "m", b->id, false, 0, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(gen, 1);
	must_contain(err, "compare-and-swap");
	must_contain(err, a->id);
	/* CAS with the wrong generation, and with 0 (create only). */
	assert_int_equal(kset(&s, "m", b->id, true, 2, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(gen, 1);
	must_contain(err, "generation 1, not 2");
	assert_int_equal(kset(&s, "m", b->id, true, 0, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(gen, 1);
	assert_ptr_equal(tc__objs_resolve(&s, "m", err, MSG, &(int){ 0 }), a);
	/* CAS with the right one moves it. */
	assert_int_equal(kset(&s, "m", b->id, true, 1, &gen, err), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(a->nkeys, 0);
	assert_int_equal(b->nkeys, 1);
	assert_ptr_equal(tc__objs_resolve(&s, "m", err, MSG, &(int){ 0 }), b);
	/* The old generation no longer works. */
	assert_int_equal(kset(&s, "m", a->id, true, 1, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(gen, 2);

	/* expect 0 on a new key creates it; another expect does not. */
	assert_int_equal(kset(&s, "n", a->id, true, 0, &gen, err), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(kset(&s, "o", a->id, true, 5, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(gen, 0);
	must_contain(err, "does not exist");
	assert_null(tc__objs_resolve(&s, "o", err, MSG, &(int){ 0 }));
	/* A target that does not exist. */
	assert_int_equal(
		kset(&s, "p",
		     "tc2:0000000000000000000000000000000000000000000000000000000000000000",
		     false, 0, &gen, err),
		TC_ENOTFOUND);
	assert_int_equal(kset(&s, "p", "nonsense", false, 0, &gen, err),
			 TC_ENOTFOUND);
	assert_int_equal(s.keys.count, 2);
	release_all(&s);
}

static void test_objstore__key_names(void **state)
{
	struct tc__objs s;
	struct tc__obj *a;
	char err[MSG], name[TC_KEY_MAX + 2];
	uint64_t gen;
	static const char *const bad[] = {
		"",
		"a\nb",
		"\x01",
		"tab\there",
		"del\x7f",
		"esc\x1b[0m",
		"end\x1f",
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	};
	static const char *const good[] = {
		"m",
		"org/model:v1",
		"tc2:0123",
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
		"TC2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"\xc3\xa9t\xc3\xa9",
		" spaced ",
		"../x",
	};

	tc__objs_init(&s, 4 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kset(&s, bad[i], a->id, false, 0, &gen, err),
				 TC_EINVAL);
		assert_int_equal(gen, 0);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(kset(&s, good[i], a->id, false, 0, &gen, err),
				 0);
	memset(name, 'k', sizeof(name));
	name[TC_KEY_MAX] = '\0';
	assert_int_equal(kset(&s, name, a->id, false, 0, &gen, err), 0);
	name[TC_KEY_MAX] = 'k';
	name[TC_KEY_MAX + 1] = '\0';
	assert_int_equal(kset(&s, name, a->id, false, 0, &gen, err), TC_EINVAL);
	must_contain(err, "1..512 bytes");
	assert_int_equal(s.keys.count, sizeof(good) / sizeof(good[0]) + 1);
	release_all(&s);
}

static void test_objstore__key_history(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b;
	char err[MSG], *txt;
	uint64_t gen;
	json_t *j, *h;
	int rc;

	tc__objs_init(&s, 4 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	b = added(&s, 2, TC_POLICY_CACHE);
	/* Generation g points at a when g is odd, at b when even. */
	assert_int_equal(kset(&s, "m", a->id, false, 0, &gen, err), 0);
	for (uint64_t g = 2; g <= 100; g++) {
		assert_int_equal(kset(&s, "m", g % 2 ? a->id : b->id, true,
				      g - 1, &gen, err),
				 0);
		assert_int_equal(gen, g);
	}
	txt = tc__objs_keys_json(&s, "m", &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	j = parse(txt);
	assert_string_equal(json_string_value(json_object_get(j, "key")), "m");
	assert_string_equal(json_string_value(json_object_get(j, "id")), b->id);
	assert_int_equal(json_integer_value(json_object_get(j, "generation")),
			 100);
	assert_true(json_is_true(json_object_get(j, "held")));
	h = json_object_get(j, "history");
	assert_int_equal(json_array_size(h), TC_KEY_HISTORY);
	for (size_t i = 0; i < json_array_size(h); i++) {
		json_t *v = json_array_get(h, i);
		uint64_t g = 100 - i;

		assert_int_equal(
			json_integer_value(json_object_get(v, "generation")),
			g);
		assert_string_equal(json_string_value(json_object_get(v, "id")),
				    g % 2 ? a->id : b->id);
		assert_true(json_integer_value(json_object_get(v, "unix_ms")) >
			    1600000000000ll);
	}
	json_decref(j);

	/* A short history is not padded. */
	assert_int_equal(kset(&s, "short", a->id, false, 0, &gen, err), 0);
	assert_int_equal(kset(&s, "short", b->id, true, 1, &gen, err), 0);
	j = parse(tc__objs_keys_json(&s, "short", &rc, err, sizeof(err)));
	h = json_object_get(j, "history");
	assert_int_equal(json_array_size(h), 2);
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(h, 0), "generation")),
			 2);
	json_decref(j);

	/* No such key. */
	assert_null(tc__objs_keys_json(&s, "nope", &rc, err, sizeof(err)));
	assert_int_equal(rc, TC_ENOTFOUND);
	must_contain(err, "'nope'");
	release_all(&s);
}

static void test_objstore__resolve(void **state)
{
	struct tc__objs s;
	struct tc__obj *a;
	char err[MSG], id[TC_ID_LEN + 1];
	uint64_t gen;
	int rc;

	tc__objs_init(&s, PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	memcpy(id, a->id, sizeof(id));
	assert_int_equal(kset(&s, "m", id, false, 0, &gen, err), 0);
	assert_ptr_equal(tc__objs_resolve(&s, "m", err, MSG, &rc), a);
	assert_int_equal(rc, 0);
	assert_ptr_equal(tc__objs_resolve(&s, id, err, MSG, &rc), a);
	assert_int_equal(rc, 0);

	/* Evicted: the key stays and says which artifact is gone. */
	assert_int_equal(reserve(&s, PG, TC_POLICY_CACHE, err, MSG), 0);
	assert_null(tc__objs_resolve(&s, "m", err, MSG, &rc));
	assert_int_equal(rc, TC_ENOTFOUND);
	must_contain(err, id);
	must_contain(err, "no longer held");
	must_contain(err, "generation 1");
	assert_null(tc__objs_resolve(&s, id, err, MSG, &rc));
	assert_int_equal(rc, TC_ENOTFOUND);
	must_contain(err, id);
	{
		json_t *j = parse(tc__objs_keys_json(&s, "m", &rc, err, MSG));

		assert_string_equal(json_string_value(json_object_get(j, "id")),
				    id);
		assert_true(json_is_false(json_object_get(j, "held")));
		json_decref(j);
	}
	unreserve(&s, PG);

	/* The same content back: the key works again. */
	a = added(&s, 1, TC_POLICY_CACHE);
	assert_ptr_equal(tc__objs_resolve(&s, "m", err, MSG, &rc), a);

	/* Unknown names and ids. */
	assert_null(tc__objs_resolve(&s, "nope", err, MSG, &rc));
	assert_int_equal(rc, TC_ENOTFOUND);
	must_contain(err, "'nope'");
	assert_null(tc__objs_resolve(
		&s,
		"tc2:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		err, MSG, &rc));
	assert_int_equal(rc, TC_ENOTFOUND);
	release_all(&s);
}

static void test_objstore__rm(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b;
	char err[MSG], ida[TC_ID_LEN + 1];
	uint64_t gen;
	int rc;

	tc__objs_init(&s, 4 * PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	b = added(&s, 2, TC_POLICY_CACHE);
	memcpy(ida, a->id, sizeof(ida));
	assert_int_equal(kset(&s, "k1", ida, false, 0, &gen, err), 0);
	assert_int_equal(kset(&s, "k2", ida, false, 0, &gen, err), 0);
	assert_int_equal(kset(&s, "kb", b->id, false, 0, &gen, err), 0);
	assert_int_equal(a->nkeys, 2);

	/* rm of one key keeps an artifact that another key names. */
	assert_int_equal(tc__objs_rm(&s, "k1", err, MSG), 0);
	assert_true(held(&s, ida));
	assert_false(held(&s, "k1"));
	assert_int_equal(a->nkeys, 1);
	/* rm of the last key takes the artifact with it. */
	assert_int_equal(tc__objs_rm(&s, "k2", err, MSG), 0);
	assert_false(held(&s, ida));
	assert_int_equal(s.host.used, PG);

	/* rm by id: the keys naming it stay, pointing nowhere. */
	memcpy(ida, b->id, sizeof(ida));
	assert_int_equal(tc__objs_rm(&s, ida, err, MSG), 0);
	assert_int_equal(s.host.used, 0);
	{
		json_t *j = parse(tc__objs_keys_json(&s, "kb", &rc, err, MSG));

		assert_string_equal(json_string_value(json_object_get(j, "id")),
				    "");
		assert_true(json_is_false(json_object_get(j, "held")));
		assert_int_equal(json_array_size(json_object_get(j, "history")),
				 1);
		json_decref(j);
	}
	assert_null(tc__objs_resolve(&s, "kb", err, MSG, &rc));
	must_contain(err, "names no artifact");
	/* ...and can be pointed somewhere again with CAS. */
	a = added(&s, 1, TC_POLICY_CACHE);
	assert_int_equal(kset(&s, "kb", a->id, false, 0, &gen, err),
			 TC_ECONFLICT);
	assert_int_equal(kset(&s, "kb", a->id, true, 1, &gen, err), 0);
	assert_int_equal(gen, 2);
	/* rm of a key pointing nowhere. */
	assert_int_equal(kset(&s, "kx", a->id, false, 0, &gen, err), 0);
	memcpy(ida, a->id, sizeof(ida));
	assert_int_equal(tc__objs_rm(&s, ida, err, MSG), 0);
	assert_int_equal(tc__objs_rm(&s, "kx", err, MSG), 0);
	assert_int_equal(tc__objs_rm(&s, "kx", err, MSG), TC_ENOTFOUND);
	must_contain(err, "'kx'");
	assert_int_equal(
		tc__objs_rm(
			&s,
			"tc2:0000000000000000000000000000000000000000000000000000000000000000",
			err, MSG),
		TC_ENOTFOUND);
	assert_int_equal(s.host.used, 0);
	release_all(&s);
}

/* Two keys name an artifact that is evicted and then loaded again: the
 * keys find it again, so removing one key must not take the artifact from
 * the other. */
static void test_objstore__rm_key_after_reload(void **state)
{
	struct tc__objs s;
	struct tc__obj *a;
	char err[MSG], id[TC_ID_LEN + 1];
	uint64_t gen;

	tc__objs_init(&s, PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	memcpy(id, a->id, sizeof(id));
	assert_int_equal(kset(&s, "k1", id, false, 0, &gen, err), 0);
	assert_int_equal(kset(&s, "k2", id, false, 0, &gen, err), 0);
	assert_int_equal(reserve(&s, PG, TC_POLICY_CACHE, err, MSG), 0);
	assert_false(held(&s, "k1"));
	unreserve(&s, PG);
	a = added(&s, 1, TC_POLICY_CACHE);
	assert_true(held(&s, "k1"));
	assert_true(held(&s, "k2"));
	assert_int_equal(tc__objs_rm(&s, "k1", err, MSG), 0);
	assert_true(held(&s, "k2"));
	assert_true(held(&s, id));
	assert_int_equal(tc__objs_rm(&s, "k2", err, MSG), 0);
	assert_false(held(&s, id));
	assert_int_equal(s.host.used, 0);
	release_all(&s);
}

static void test_objstore__policy_parse(void **state)
{
	enum tc__policy p;
	char err[MSG];

	assert_int_equal(tc__policy_parse(NULL, &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_CACHE);
	assert_int_equal(tc__policy_parse("", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_CACHE);
	assert_int_equal(tc__policy_parse("cache", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_CACHE);
	assert_int_equal(tc__policy_parse("warm", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_WARM);
	assert_int_equal(tc__policy_parse("pinned", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_PINNED);
	/* Known here; whether the shared disk can honour them is the
	 * server's check (tests/integration/test_durable.c). */
	assert_int_equal(tc__policy_parse("durable", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_DURABLE);
	assert_true(tc__policy_on_disk(p));
	assert_int_equal(tc__policy_parse("ha", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_HA);
	assert_int_equal(tc__policy_parse("cold", &p, err, MSG), 0);
	assert_int_equal(p, TC_POLICY_COLD);
	assert_true(tc__policy_on_disk(p));
	assert_false(tc__policy_on_disk(TC_POLICY_PINNED));
	assert_int_equal(tc__policy_parse("Pinned", &p, err, MSG), TC_EINVAL);
	must_contain(err, "unknown policy 'Pinned'");
	assert_string_equal(tc__policy_name(TC_POLICY_CACHE), "cache");
	assert_string_equal(tc__policy_name(TC_POLICY_WARM), "warm");
	assert_string_equal(tc__policy_name(TC_POLICY_PINNED), "pinned");
}

/* ------------------------------------------------------------------- JSON */

static void test_objstore__json(void **state)
{
	struct tc__objs s;
	struct tc__obj *a, *b;
	char err[MSG], hex[TC_DIGEST_HEX + 1];
	uint64_t gen;
	json_t *j, *arts, *x, *r;
	int rc;

	tc__objs_init(&s, 8 * PG);
	a = added(&s, 1, TC_POLICY_PINNED);
	b = make_obj("big", 2 * PG, 3, TC_POLICY_WARM);
	/* Metadata goes through inspect. */
	b->table.meta = tc__calloc(1, sizeof(*b->table.meta));
	b->table.nmeta = 1;
	b->table.meta[0].key = tc__strdup("format");
	b->table.meta[0].val = tc__strdup("pt");
	assert_int_equal(add(&s, b, &b), 0);
	b->load_seconds = 1.5;
	tc__objs_lease(&s, b);
	assert_int_equal(kset(&s, "m1", a->id, false, 0, &gen, err), 0);
	assert_int_equal(kset(&s, "m2", a->id, false, 0, &gen, err), 0);

	j = parse(tc__objs_list_json(&s, 0, NULL));
	assert_int_equal(json_integer_value(json_object_get(j, "used_bytes")),
			 3 * PG);
	assert_int_equal(json_integer_value(json_object_get(j, "budget_bytes")),
			 8 * PG);
	arts = json_object_get(j, "artifacts");
	assert_int_equal(json_array_size(arts), 2);
	/* Most recent first: b (leased last). */
	x = json_array_get(arts, 0);
	assert_string_equal(json_string_value(json_object_get(x, "id")), b->id);
	tc__digest_hex(&b->digest, hex);
	assert_string_equal(json_string_value(json_object_get(x, "digest")),
			    hex);
	assert_int_equal(json_integer_value(json_object_get(x, "tensors")), 1);
	assert_int_equal(json_integer_value(json_object_get(x, "bytes")),
			 2 * PG);
	assert_int_equal(json_integer_value(json_object_get(x, "mem_bytes")),
			 2 * PG);
	assert_int_equal(json_integer_value(json_object_get(x, "leases")), 1);
	assert_string_equal(json_string_value(json_object_get(x, "policy")),
			    "warm");
	assert_string_equal(json_string_value(json_object_get(x, "source")),
			    "test:big");
	assert_true(json_integer_value(json_object_get(x, "created_ms")) >
		    1600000000000ll);
	assert_true(json_real_value(json_object_get(x, "load_seconds")) == 1.5);
	assert_int_equal(json_array_size(json_object_get(x, "keys")), 0);
	r = json_object_get(x, "replicas");
	assert_true(json_array_size(r) >= 1);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(r, 0), "tier")),
			    "host");
	x = json_array_get(arts, 1);
	assert_string_equal(json_string_value(json_object_get(x, "id")), a->id);
	assert_string_equal(json_string_value(json_object_get(x, "policy")),
			    "pinned");
	assert_int_equal(json_integer_value(json_object_get(x, "leases")), 0);
	{
		json_t *k = json_object_get(x, "keys");
		bool m1 = false, m2 = false;

		assert_int_equal(json_array_size(k), 2);
		for (size_t i = 0; i < 2; i++) {
			const char *n = json_string_value(json_array_get(k, i));

			m1 |= !strcmp(n, "m1");
			m2 |= !strcmp(n, "m2");
		}
		assert_true(m1 && m2);
	}
	json_decref(j);

	j = parse(tc__objs_inspect_json(&s, b));
	assert_string_equal(json_string_value(json_object_get(j, "id")), b->id);
	assert_int_equal(json_integer_value(json_object_get(j, "chunk_bytes")),
			 TC_CHUNK_BYTES);
	x = json_array_get(json_object_get(j, "tensor_table"), 0);
	assert_non_null(x);
	assert_string_equal(json_string_value(json_object_get(x, "name")),
			    "big");
	assert_string_equal(json_string_value(json_object_get(x, "dtype")),
			    "U8");
	assert_int_equal(json_integer_value(json_array_get(
				 json_object_get(x, "shape"), 0)),
			 2 * PG);
	assert_int_equal(json_integer_value(json_object_get(x, "offset")), 0);
	assert_int_equal(json_integer_value(json_object_get(x, "nbytes")),
			 2 * PG);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(j, "metadata"), "format")),
			    "pt");
	json_decref(j);

	j = parse(tc__objs_keys_json(&s, NULL, &rc, err, MSG));
	assert_int_equal(rc, 0);
	arts = json_object_get(j, "keys");
	assert_int_equal(json_array_size(arts), 2);
	for (size_t i = 0; i < 2; i++) {
		x = json_array_get(arts, i);
		assert_string_equal(json_string_value(json_object_get(x, "id")),
				    a->id);
		assert_int_equal(
			json_integer_value(json_object_get(x, "generation")),
			1);
		assert_true(json_is_true(json_object_get(x, "held")));
		assert_null(json_object_get(x, "history"));
	}
	json_decref(j);
	/* "" is the whole list too. */
	j = parse(tc__objs_keys_json(&s, "", &rc, err, MSG));
	assert_int_equal(json_array_size(json_object_get(j, "keys")), 2);
	json_decref(j);

	tc__objs_unlease(&s, b);
	release_all(&s);

	/* An empty store. */
	tc__objs_init(&s, 0);
	j = parse(tc__objs_list_json(&s, 0, NULL));
	assert_int_equal(json_array_size(json_object_get(j, "artifacts")), 0);
	json_decref(j);
	j = parse(tc__objs_keys_json(&s, NULL, &rc, err, MSG));
	assert_int_equal(json_array_size(json_object_get(j, "keys")), 0);
	json_decref(j);
	release_all(&s);
}

/* ----------------------------------------------------------------- config */

static char *write_tmp(const char *dir, const char *name, const char *text)
{
	char *p = malloc(strlen(dir) + strlen(name) + 2);
	FILE *f;

	assert_non_null(p);
	sprintf(p, "%s/%s", dir, name);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return p;
}

static void test_objstore__config_defaults(void **state)
{
	struct tc__store_config c;
	long pages = sysconf(_SC_PHYS_PAGES);

	memset(&c, 0x5a, sizeof(c));
	tc__config_defaults(&c);
	assert_true(strlen(c.socket) > 0);
	assert_true(strstr(c.socket, "daemon.sock") != NULL ||
		    getenv("TCAST_SOCKET"));
	/* Half of RAM. */
	assert_int_equal(c.host_bytes, (uint64_t)pages * PG / 2);
	assert_true(c.io_threads >= 1 && c.io_threads <= 16);
	assert_int_equal(c.job_threads, 2);
	assert_int_equal(c.max_clients, 1024);
	assert_int_equal(c.log_level, TC_LOG_INFO);
	assert_string_equal(c.log_file, "");
	assert_int_equal(c.handshake_ms, 10000);
	assert_int_equal(c.max_outbuf, (uint64_t)256 << 20);
	assert_int_equal(c.gpu_bytes, 0);
	assert_int_equal(c.gpu_percent, 90);
}

static void test_objstore__config_load(void **state)
{
	char *dir = t_tmpdir(), *p, err[MSG];
	struct tc__store_config c, d;

	p = write_tmp(dir, "all.yaml",
		      "# every key\n"
		      "socket: /run/x/d.sock\n"
		      "host_memory: 8GiB\n"
		      "io_threads: 7\n"
		      "job_threads: 3\n"
		      "max_clients: 99\n"
		      "log_level: debug\n"
		      "log_file: /var/log/tcast.log\n"
		      "handshake_ms: 2500\n"
		      "max_client_buffer: 64MiB\n"
		      "gpu_memory: 40GiB\n"
		      "io_engine: pread\n"
		      "gpu_pin_host: on_use\n");
	tc__config_defaults(&c);
	assert_int_equal(c.io_engine, TC_IO_AUTO);
	assert_true(c.pin_eager);
	assert_int_equal(tc__config_load(&c, p, err, sizeof(err)), 0);
	assert_string_equal(c.socket, "/run/x/d.sock");
	assert_int_equal(c.host_bytes, (uint64_t)8 << 30);
	assert_int_equal(c.io_threads, 7);
	assert_int_equal(c.job_threads, 3);
	assert_int_equal(c.max_clients, 99);
	assert_int_equal(c.log_level, TC_LOG_DEBUG);
	assert_string_equal(c.log_file, "/var/log/tcast.log");
	assert_int_equal(c.handshake_ms, 2500);
	assert_int_equal(c.max_outbuf, (uint64_t)64 << 20);
	assert_int_equal(c.gpu_bytes, (uint64_t)40 << 30);
	assert_int_equal(c.io_engine, TC_IO_PREAD);
	assert_false(c.pin_eager);
	free(p);

	/* The GPU budget as a share of each GPU. */
	p = write_tmp(dir, "pct.yaml", "gpu_memory: 80%\n");
	tc__config_defaults(&c);
	assert_int_equal(tc__config_load(&c, p, err, sizeof(err)), 0);
	assert_int_equal(c.gpu_percent, 80);
	assert_int_equal(c.gpu_bytes, 0);
	free(p);

	/* Quoted scalars and flow style are still a flat mapping. */
	p = write_tmp(dir, "flow.yaml",
		      "{host_memory: \"1.5G\", 'log_level': WARN}\n");
	tc__config_defaults(&c);
	assert_int_equal(tc__config_load(&c, p, err, sizeof(err)), 0);
	assert_int_equal(c.host_bytes, 1500000000);
	assert_int_equal(c.log_level, TC_LOG_WARN);
	free(p);

	/* An empty file (or only comments) changes nothing. */
	p = write_tmp(dir, "empty.yaml", "# nothing\n");
	tc__config_defaults(&c);
	tc__config_defaults(&d);
	assert_int_equal(tc__config_load(&c, p, err, sizeof(err)), 0);
	assert_memory_equal(&c, &d, sizeof(c));
	free(p);

	/* A missing file: -errno and the path. */
	tc__config_defaults(&c);
	assert_int_equal(tc__config_load(&c, "/nonexistent/tcast.yaml", err,
					 sizeof(err)),
			 -ENOENT);
	must_contain(err, "/nonexistent/tcast.yaml");
	t_rmtree(dir);
	free(dir);
}

/* Loading `text` fails with TC_EBADCONFIG and a message holding each of
 * the NULL-terminated needles ("%F" stands for the file's path). */
static void expect_bad_config(const char *dir, const char *text, ...)
{
	char *p = write_tmp(dir, "bad.yaml", text), err[MSG];
	struct tc__store_config c;
	const char *needle;
	va_list ap;

	tc__config_defaults(&c);
	err[0] = '\0';
	if (tc__config_load(&c, p, err, sizeof(err)) != TC_EBADCONFIG)
		fail_msg("config '%s' was not refused (%s)", text, err);
	va_start(ap, text);
	while ((needle = va_arg(ap, const char *))) {
		char buf[512];

		if (!strncmp(needle, "%F", 2)) {
			snprintf(buf, sizeof(buf), "%s%s", p, needle + 2);
			needle = buf;
		}
		must_contain(err, needle);
	}
	va_end(ap);
	free(p);
}

static void test_objstore__config_bad(void **state)
{
	char *dir = t_tmpdir();

	/* Unknown key: file, line and key. */
	expect_bad_config(dir, "io_threads: 2\n\nbogus_key: 1\n",
			  "%F:3:", "'bogus_key'", "unknown key", NULL);
	expect_bad_config(dir, "Socket: /x\n", "'Socket'", NULL);
	/* Nested mappings and lists. */
	expect_bad_config(dir, "socket: /x\nnested:\n  a: 1\n",
			  "%F:3:", "nested", NULL);
	expect_bad_config(dir, "log_level: [info, debug]\n", "%F:1:", "lists",
			  NULL);
	expect_bad_config(dir, "log_level:\n  - info\n", "lists", NULL);
	expect_bad_config(dir, "- socket: /x\n", "lists", NULL);
	expect_bad_config(dir, "just a scalar\n", "expected a mapping", NULL);
	/* Not YAML at all. */
	expect_bad_config(dir, "a: [b\n", "%F:", NULL);
	expect_bad_config(dir, "a: 'unterminated\n", "%F:", NULL);
	/* Bad sizes. */
	expect_bad_config(dir, "host_memory: 8XiB\n", "%F:1:", "'host_memory'",
			  "'8XiB' is not a size", NULL);
	expect_bad_config(dir, "host_memory: -1\n", "'host_memory'", NULL);
	expect_bad_config(dir, "host_memory: \"\"\n", "'host_memory'", NULL);
	expect_bad_config(dir, "host_memory:\n", "'host_memory'", NULL);
	expect_bad_config(dir, "host_memory: 0\n", "'host_memory'", NULL);
	expect_bad_config(dir, "max_client_buffer: 1e30\n",
			  "'max_client_buffer'", NULL);
	/* Integers out of range or not integers. */
	expect_bad_config(dir, "io_threads: 0\n", "'io_threads'", "1..64",
			  NULL);
	expect_bad_config(dir, "io_threads: 65\n", "'io_threads'", NULL);
	expect_bad_config(dir, "job_threads: 2.5\n", "'job_threads'", NULL);
	expect_bad_config(dir, "max_clients: lots\n", "'max_clients'", NULL);
	expect_bad_config(dir, "max_clients: 65001\n", "'max_clients'", NULL);
	expect_bad_config(dir, "handshake_ms: 0\n", "'handshake_ms'", NULL);
	expect_bad_config(dir, "log_level: loud\n", "'log_level'", NULL);
	expect_bad_config(dir, "io_engine: fast\n", "'io_engine'",
			  "'fast' is not auto, io_uring, pread or mmap", NULL);
	expect_bad_config(dir, "gpu_pin_host: always\n", "'gpu_pin_host'",
			  "'always' is not eager or on_use", NULL);
	expect_bad_config(dir, "gpu_memory: 101%\n", "'gpu_memory'",
			  "percentage", NULL);
	expect_bad_config(dir, "gpu_memory: 0%\n", "'gpu_memory'", NULL);
	expect_bad_config(dir, "gpu_memory: \"%\"\n", "'gpu_memory'", NULL);
	expect_bad_config(dir, "gpu_memory: half%\n", "'gpu_memory'", NULL);
	expect_bad_config(dir, "gpu_memory: 12345678901234567%\n",
			  "'gpu_memory'", NULL);
	expect_bad_config(dir, "gpu_memory: 0\n", "'gpu_memory'", NULL);
	expect_bad_config(dir, "gpu_memory: 8XiB\n", "'gpu_memory'", NULL);
	/* Paths that do not fit. */
	{
		char *text = malloc(PATH_MAX + 64);

		assert_non_null(text);
		strcpy(text, "socket: /");
		memset(text + 9, 'a', 200);
		strcpy(text + 209, "\n");
		expect_bad_config(dir, text, "'socket'", NULL);
		strcpy(text, "log_file: /");
		memset(text + 11, 'a', PATH_MAX);
		strcpy(text + 11 + PATH_MAX, "\n");
		expect_bad_config(dir, text, "'log_file'", NULL);
		free(text);
	}
	t_rmtree(dir);
	free(dir);
}

static void test_objstore__parse_size(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} good[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "1B", 1 },
		{ "1K", 1000 },
		{ "1k", 1000 },
		{ "1KB", 1000 },
		{ "2M", 2000000 },
		{ "3G", 3000000000ull },
		{ "4T", 4000000000000ull },
		{ "1KiB", 1024 },
		{ "1MiB", 1048576 },
		{ "8GiB", 8ull << 30 },
		{ "2TiB", 2ull << 40 },
		{ "1.5KiB", 1536 },
		{ "1.5G", 1500000000ull },
		{ "512 MiB", 512ull << 20 },
	};
	static const char *const bad[] = {
		"",	 "-1",	   "-1K",
		"8XiB",	 "abc",	   "1kib",
		"1KIB",	 "1Ki",	   "1 GiB ",
		"K",	 "1e30",   "nan",
		"inf",	 "1EiB",   "1PiB",
		"1GiBs", "1.5.5G", "16777216TiB" /* 2^64 */,
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 0xdead;
		if (tc__parse_size(good[i].s, &v) != 0)
			fail_msg("'%s' refused", good[i].s);
		assert_int_equal(v, good[i].v);
	}
	assert_int_equal(tc__parse_size("16777215TiB", &v), 0);
	assert_int_equal(v, 16777215ull << 40);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 0xdead;
		if (tc__parse_size(bad[i], &v) != TC_EINVAL)
			fail_msg("'%s' accepted as %llu", bad[i],
				 (unsigned long long)v);
		assert_int_equal(v, 0xdead);
	}
	assert_int_equal(tc__parse_size(NULL, &v), TC_EINVAL);
}

/* ------------------------------------------------------------------- shm */

static void test_objstore__shm_seal(void **state)
{
	struct tc__shm *seg;
	char path[64];
	uint8_t *p;
	int fd, seals;

	assert_int_equal(tc__shm_round(0), PG);
	assert_int_equal(tc__shm_round(1), PG);
	assert_int_equal(tc__shm_round(PG), PG);
	assert_int_equal(tc__shm_round(PG + 1), 2 * PG);
	assert_int_equal(tc__shm_round(UINT64_MAX), UINT64_MAX);
	assert_int_equal(tc__shm_create("t", UINT64_MAX, &seg), -EFBIG);
	assert_null(seg);

	assert_int_equal(tc__shm_create("t", 0, &seg), 0);
	assert_int_equal(seg->size, PG);
	tc__shm_free(seg);
	tc__shm_free(NULL);

	assert_int_equal(tc__shm_create("t", 3 * PG - 1, &seg), 0);
	assert_int_equal(seg->size, 3 * PG);
	assert_null(seg->rw_map);
	assert_int_equal(seg->ro_fd, -1);
	/* Sealed against resize from birth. */
	assert_int_equal(ftruncate(seg->fd, 0), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(seg->fd, 4 * PG), -1);
	assert_int_equal(errno, EPERM);

	assert_int_equal(tc__shm_map_rw(seg), 0);
	assert_int_equal(tc__shm_map_rw(seg), 0); /* idempotent */
	p = seg->rw_map;
	for (uint64_t i = 0; i < seg->size; i++)
		p[i] = (uint8_t)(i * 13);
	assert_int_equal(tc__shm_seal(seg), 0);
	assert_null(seg->rw_map);
	assert_non_null(seg->map);
	assert_true(seg->ro_fd >= 0);
	for (uint64_t i = 0; i < seg->size; i++)
		assert_int_equal(((const uint8_t *)seg->map)[i],
				 (uint8_t)(i * 13));
	seals = fcntl(seg->fd, F_GET_SEALS);
	assert_int_equal(seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
				  F_SEAL_SEAL),
			 F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
				 F_SEAL_SEAL);
	assert_int_equal(fcntl(seg->fd, F_ADD_SEALS, 0), -1); /* SEAL_SEAL */

	/* A writable reopen (what a client could try with the fd it was
	 * handed) cannot write, map writable or resize. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", seg->fd);
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(pwrite(fd, "x", 1, 5), -1);
	assert_int_equal(errno, EPERM);
	assert_ptr_equal(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			      0),
			 MAP_FAILED);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(fd, 0), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(fallocate(fd, 0, 0, 8 * PG), -1);
	close(fd);
	/* The read-only fd readers get is read-only. */
	assert_int_equal(fcntl(seg->ro_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_int_equal(write(seg->ro_fd, "x", 1), -1);
	assert_ptr_equal(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED,
			      seg->ro_fd, 0),
			 MAP_FAILED);
	/* A private copy-on-write mapping is fine and writes nothing back. */
	p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, seg->ro_fd, 0);
	assert_true(p != MAP_FAILED);
	p[0] = 0xff;
	assert_int_equal(((const uint8_t *)seg->map)[0], 0);
	munmap(p, PG);
	/* The bytes are unchanged. */
	for (uint64_t i = 0; i < seg->size; i++)
		assert_int_equal(((const uint8_t *)seg->map)[i],
				 (uint8_t)(i * 13));
	tc__shm_free(seg);
}

static void test_objstore__shm_seal_busy(void **state)
{
	struct tc__shm *seg;
	void *other;

	assert_int_equal(tc__shm_create("t", PG, &seg), 0);
	assert_int_equal(tc__shm_map_rw(seg), 0);
	/* A second writable shared mapping (a client that kept its fill
	 * mapping) blocks the seal. */
	other = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, seg->fd, 0);
	assert_true(other != MAP_FAILED);
	((uint8_t *)other)[1] = 42;
	assert_int_equal(tc__shm_seal(seg), TC_EBUSY);
	assert_null(seg->map);
	assert_int_equal(seg->ro_fd, -1);
	/* Once it is gone the seal goes through, with its writes kept. */
	munmap(other, PG);
	assert_int_equal(tc__shm_seal(seg), 0);
	assert_int_equal(((const uint8_t *)seg->map)[1], 42);
	tc__shm_free(seg);

	/* A private (copy-on-write) mapping does not block it.  (A shared
	 * read-only mapping of the writable fd does on kernels before 6.7,
	 * so it is not tested.) */
	assert_int_equal(tc__shm_create("t", PG, &seg), 0);
	other = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, seg->fd, 0);
	assert_true(other != MAP_FAILED);
	assert_int_equal(tc__shm_seal(seg), 0);
	munmap(other, PG);
	tc__shm_free(seg);
}

/* ---------------------------------------------------------------- loader */

#define MiB ((uint64_t)1 << 20)

static void ref_chunks(const uint8_t *p, uint64_t size, struct tc__digest *d)
{
	for (uint64_t k = 0; k * TC_CHUNK_BYTES < size; k++) {
		uint64_t off = k * TC_CHUNK_BYTES,
			 n = size - off < TC_CHUNK_BYTES ? size - off :
							   TC_CHUNK_BYTES;
		tc__hash256(p + off, n, &d[k]);
	}
}

static void test_objstore__hash_chunks(void **state)
{
	static const uint64_t sizes[] = { 0,	   1,		4 * MiB - 1,
					  4 * MiB, 4 * MiB + 1, 13 * MiB };
	static const int threads[] = { 1, 2, 4, 0, 64 };
	uint64_t max = 13 * MiB;
	uint8_t *buf = malloc(max);
	struct tc__digest ref[4], got[5];

	assert_non_null(buf);
	for (uint64_t i = 0; i < max; i++)
		buf[i] = (uint8_t)((i * 2654435761u) >> 13);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uint64_t n = tc__chunk_count(sizes[s]);

		memset(ref, 0, sizeof(ref));
		ref_chunks(buf, sizes[s], ref);
		for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]);
		     t++) {
			memset(got, 0xee, sizeof(got));
			assert_int_equal(tc__hash_chunks(buf, sizes[s],
							 threads[t], got),
					 0);
			assert_memory_equal(got, ref, n * sizeof(ref[0]));
			/* Nothing written past the last chunk. */
			assert_int_equal(((uint8_t *)&got[n])[0], 0xee);
		}
	}
	free(buf);
}

struct big_src {
	char *dir, *path;
	uint64_t header_end; /* 8 + N */
	uint64_t data_bytes;
};

/* A safetensors file of a few tensors whose sizes straddle chunk (4 MiB)
 * and window (1 MiB) boundaries, with an empty tensor in between. */
static void make_big_src(struct big_src *b)
{
	static const struct {
		const char *name, *dtype;
		uint64_t n, esize;
	} ts[] = {
		{ "a", "U8", 5 * MiB + 3, 1 }, { "e", "F32", 0, 4 },
		{ "b", "F32", MiB + 1, 4 },    { "c", "I16", 2 * MiB + 5, 2 },
		{ "d", "U8", 1, 1 },
	};
	char hdr[1024];
	size_t hl = 0;
	uint64_t off = 0;
	uint8_t *data;
	FILE *f;

	hl += snprintf(hdr + hl, sizeof(hdr) - hl,
		       "{\"__metadata__\":{\"format\":\"pt\"}");
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		uint64_t nb = ts[i].n * ts[i].esize;

		hl += snprintf(hdr + hl, sizeof(hdr) - hl,
			       ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],"
			       "\"data_offsets\":[%llu,%llu]}",
			       ts[i].name, ts[i].dtype,
			       (unsigned long long)ts[i].n,
			       (unsigned long long)off,
			       (unsigned long long)(off + nb));
		off += nb;
	}
	hl += snprintf(hdr + hl, sizeof(hdr) - hl, "}");
	while (hl % 8)
		hdr[hl++] = ' ';
	b->dir = t_tmpdir();
	b->path = malloc(strlen(b->dir) + 32);
	assert_non_null(b->path);
	sprintf(b->path, "%s/big.safetensors", b->dir);
	b->header_end = 8 + hl;
	b->data_bytes = off;
	data = malloc(off);
	assert_non_null(data);
	for (uint64_t i = 0; i < off; i++)
		data[i] = (uint8_t)(i ^ (i >> 8) ^ (i >> 17));
	f = fopen(b->path, "wb");
	assert_non_null(f);
	for (int i = 0; i < 8; i++)
		fputc((int)(((uint64_t)hl >> (8 * i)) & 0xff), f);
	assert_int_equal(fwrite(hdr, 1, hl, f), hl);
	assert_int_equal(fwrite(data, 1, off, f), off);
	fclose(f);
	free(data);
}

static void free_big_src(struct big_src *b)
{
	t_rmtree(b->dir);
	free(b->dir);
	free(b->path);
}

/* Load `path` with `nthreads` and check every byte against pread, the
 * padding against zero, the chunk digests and the progress counter. */
static void check_load(const char *path, int nthreads)
{
	struct tc__source *src;
	struct tc__load_progress prog;
	struct tc__digest *chunks, *ref;
	uint64_t total, n, covered = 0;
	uint8_t *dst, *tmp;
	char err[MSG];
	int rc;

	rc = tc__source_open(path, &src, err, sizeof(err));
	if (rc)
		fail_msg("%s: %s", path, err);
	assert_int_equal(tc__table_layout(&src->table), 0);
	total = src->table.total_bytes;
	n = tc__chunk_count(total);
	dst = calloc(1, total ? total : 1);
	chunks = calloc(n + 1, sizeof(*chunks));
	ref = calloc(n + 1, sizeof(*ref));
	assert_non_null(dst);
	assert_non_null(chunks);
	assert_non_null(ref);
	atomic_init(&prog.done_bytes, 0);
	atomic_init(&prog.cancel, 0);
	rc = tc__load_source(src, dst, nthreads, chunks, &prog, err,
			     sizeof(err));
	if (rc)
		fail_msg("load %s: %s", path, err);
	assert_int_equal(atomic_load(&prog.done_bytes), total);
	for (uint32_t i = 0; i < src->table.ntensors; i++) {
		const struct tc__tensor *x = &src->table.tensors[i];
		int fd = src->files[x->src_file].fd;

		tmp = malloc(x->nbytes + 1);
		assert_non_null(tmp);
		assert_int_equal(pread(fd, tmp, x->nbytes,
				       (off_t)x->src_offset),
				 (ssize_t)x->nbytes);
		if (memcmp(dst + x->offset, tmp, x->nbytes))
			fail_msg("%s: tensor '%s' differs from the file", path,
				 x->name);
		free(tmp);
		/* Padding before this tensor stays zero. */
		for (uint64_t k = covered; k < x->offset; k++)
			assert_int_equal(dst[k], 0);
		covered = x->offset + x->nbytes;
	}
	assert_int_equal(covered, total);
	ref_chunks(dst, total, ref);
	assert_memory_equal(chunks, ref, n * sizeof(*ref));
	free(dst);
	free(chunks);
	free(ref);
	tc__source_free(src);
}

static void test_objstore__load_source(void **state)
{
	static const char *const files[] = {
		TC_TEST_DATA "/dtypes.safetensors",
		TC_TEST_DATA "/many-tensors.safetensors",
		TC_TEST_DATA "/tiny-llama",
	};
	struct big_src b;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		check_load(files[i], 1);
		check_load(files[i], 4);
	}
	make_big_src(&b);
	for (int t = 1; t <= 4; t *= 2)
		check_load(b.path, t);
	check_load(b.path, 7);
	free_big_src(&b);
}

/* The file shrinks between parsing and loading: an error, never SIGBUS
 * and never a silent hole. */
static void test_objstore__load_truncated(void **state)
{
	/* Cut inside the first tensor, in a later one, and at the data
	 * start. */
	for (int cut = 0; cut < 3; cut++) {
		struct big_src b;
		struct tc__source *src;
		struct tc__digest *chunks;
		uint64_t keep;
		uint8_t *dst;
		char err[MSG];
		int rc;

		make_big_src(&b);
		rc = tc__source_open(b.path, &src, err, sizeof(err));
		if (rc)
			fail_msg("%s", err);
		assert_int_equal(tc__table_layout(&src->table), 0);
		keep = cut == 0 ? MiB : cut == 1 ? b.data_bytes - 10 : 0;
		assert_int_equal(truncate(b.path, (off_t)(b.header_end + keep)),
				 0);
		dst = calloc(1, src->table.total_bytes);
		chunks = calloc(tc__chunk_count(src->table.total_bytes),
				sizeof(*chunks));
		assert_non_null(dst);
		assert_non_null(chunks);
		for (int t = 1; t <= 4; t *= 4) {
			err[0] = '\0';
			rc = tc__load_source(src, dst, t, chunks, NULL, err,
					     sizeof(err));
			assert_int_equal(rc, TC_EBADFILE);
			must_contain(err, "shrank");
			must_contain(err, "big.safetensors");
		}
		free(dst);
		free(chunks);
		tc__source_free(src);
		free_big_src(&b);
	}
}

/* The same with a copy of a checked-in file, cut in half. */
static void test_objstore__load_truncated_copy(void **state)
{
	char *dir = t_tmpdir(), path[512], err[MSG];
	struct tc__source *src;
	struct tc__digest *chunks;
	size_t len;
	char *bytes = t_slurp(TC_TEST_DATA "/many-tensors.safetensors", &len);
	uint8_t *dst;
	FILE *f;

	assert_non_null(bytes);
	snprintf(path, sizeof(path), "%s/copy.safetensors", dir);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(bytes, 1, len, f), len);
	fclose(f);
	free(bytes);
	assert_int_equal(tc__source_open(path, &src, err, sizeof(err)), 0);
	assert_int_equal(tc__table_layout(&src->table), 0);
	assert_int_equal(truncate(path, (off_t)(len / 2)), 0);
	dst = calloc(1, src->table.total_bytes);
	chunks = calloc(tc__chunk_count(src->table.total_bytes),
			sizeof(*chunks));
	assert_non_null(dst);
	assert_non_null(chunks);
	assert_int_equal(tc__load_source(src, dst, 2, chunks, NULL, err,
					 sizeof(err)),
			 TC_EBADFILE);
	must_contain(err, "copy.safetensors");
	free(dst);
	free(chunks);
	tc__source_free(src);
	t_rmtree(dir);
	free(dir);
}

static void test_objstore__load_cancel(void **state)
{
	struct big_src b;
	struct tc__source *src;
	struct tc__load_progress prog;
	struct tc__digest *chunks;
	uint8_t *dst;
	char err[MSG];

	make_big_src(&b);
	assert_int_equal(tc__source_open(b.path, &src, err, sizeof(err)), 0);
	assert_int_equal(tc__table_layout(&src->table), 0);
	dst = calloc(1, src->table.total_bytes);
	chunks = calloc(tc__chunk_count(src->table.total_bytes),
			sizeof(*chunks));
	assert_non_null(dst);
	assert_non_null(chunks);
	atomic_init(&prog.done_bytes, 0);
	atomic_init(&prog.cancel, 1);
	assert_int_equal(tc__load_source(src, dst, 2, chunks, &prog, err,
					 sizeof(err)),
			 -ECANCELED);
	assert_int_equal(atomic_load(&prog.done_bytes), 0);
	free(dst);
	free(chunks);
	tc__source_free(src);
	free_big_src(&b);
}

/* ------------------------------------------------------------------ jobs */

#define NJOBS 1000

struct tjob {
	struct tc__job job;
	int index;
	pthread_t ran_on;
	int ran, done;
	int sleep_ms;
};

static pthread_t loop_thread;
static atomic_int n_run, n_done, n_done_elsewhere, n_done_before_run;
static struct tc__ev *loop;

static void tjob_run(struct tc__job *j)
{
	struct tjob *t = (struct tjob *)j;

	if (t->sleep_ms) {
		struct timespec ts = { 0, (long)t->sleep_ms * 1000000 };

		nanosleep(&ts, NULL);
	}
	t->ran_on = pthread_self();
	t->ran = 1;
	n_run++;
}

static void tjob_done(struct tc__job *j)
{
	struct tjob *t = (struct tjob *)j;

	if (!pthread_equal(pthread_self(), loop_thread))
		n_done_elsewhere++;
	if (!t->ran)
		n_done_before_run++;
	t->done++;
	if (++n_done == NJOBS && loop)
		tc__ev_stop(loop);
}

/* A watchdog so a lost completion fails the test instead of hanging. */
static uint64_t deadline_ms;

static void tick(struct tc__ev *ev, void *arg)
{
	(void)arg;
	if (tc__now_ms() > deadline_ms)
		tc__ev_stop(ev);
}

static void test_objstore__jobs_complete(void **state)
{
	struct tc__jobs *p;
	struct tjob *jobs = calloc(NJOBS, sizeof(*jobs));
	int off_loop = 0;

	assert_non_null(jobs);
	loop_thread = pthread_self();
	n_run = n_done = n_done_elsewhere = n_done_before_run = 0;
	loop = tc__ev_new(1024);
	assert_non_null(loop);
	assert_int_equal(tc__jobs_new(4, loop, &p), 0);
	for (int i = 0; i < NJOBS; i++) {
		jobs[i].job.run = tjob_run;
		jobs[i].job.done = tjob_done;
		jobs[i].index = i;
		tc__jobs_submit(p, &jobs[i].job);
	}
	assert_true(tc__jobs_pending(p) > 0);
	deadline_ms = tc__now_ms() + 60000;
	tc__ev_set_hooks(loop, NULL, tick, 100, NULL);
	assert_int_equal(tc__ev_run(loop), 0);
	assert_int_equal(n_done, NJOBS);
	assert_int_equal(n_run, NJOBS);
	assert_int_equal(tc__jobs_pending(p), 0);
	/* done() on the loop thread, after run(), exactly once; run() on a
	 * worker. */
	assert_int_equal(n_done_elsewhere, 0);
	assert_int_equal(n_done_before_run, 0);
	for (int i = 0; i < NJOBS; i++) {
		assert_int_equal(jobs[i].done, 1);
		off_loop += !pthread_equal(jobs[i].ran_on, loop_thread);
	}
	assert_int_equal(off_loop, NJOBS);
	tc__jobs_free(p);
	tc__ev_free(loop);
	loop = NULL;
	free(jobs);
}

static void test_objstore__jobs_free_waits(void **state)
{
	struct tc__jobs *p;
	struct tc__ev *ev = tc__ev_new(1024);
	struct tjob jobs[12];

	assert_non_null(ev);
	loop_thread = pthread_self();
	loop = NULL;
	n_run = n_done = n_done_elsewhere = n_done_before_run = 0;
	memset(jobs, 0, sizeof(jobs));
	assert_int_equal(tc__jobs_new(3, ev, &p), 0);
	for (int i = 0; i < 12; i++) {
		jobs[i].job.run = tjob_run;
		jobs[i].job.done = tjob_done;
		jobs[i].sleep_ms = 20;
		tc__jobs_submit(p, &jobs[i].job);
	}
	assert_int_equal(tc__jobs_pending(p), 12);
	/* No loop runs: free must wait for the running and the queued jobs
	 * and run every done() here before it returns. */
	tc__jobs_free(p);
	assert_int_equal(n_run, 12);
	assert_int_equal(n_done, 12);
	assert_int_equal(n_done_elsewhere, 0);
	assert_int_equal(n_done_before_run, 0);
	for (int i = 0; i < 12; i++)
		assert_int_equal(jobs[i].done, 1);
	/* Its eventfd is no longer watched. */
	tc__ev_free(ev);

	/* A pool with nothing submitted frees at once. */
	ev = tc__ev_new(1024);
	assert_int_equal(tc__jobs_new(2, ev, &p), 0);
	tc__jobs_free(p);
	tc__jobs_free(NULL);
	tc__ev_free(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_objstore__budget),
		cmocka_unit_test(test_objstore__lru_order),
		cmocka_unit_test(test_objstore__evict_skips_leased_pinned),
		cmocka_unit_test(test_objstore__warm_pinned_refuse),
		cmocka_unit_test(test_objstore__enospace_counts_removed_leased),
		cmocka_unit_test(test_objstore__insert_dedup),
		cmocka_unit_test(test_objstore__fill_life),
		cmocka_unit_test(test_objstore__obj_finish),
		cmocka_unit_test(test_objstore__rm_leased),
		cmocka_unit_test(test_objstore__keys_cas),
		cmocka_unit_test(test_objstore__key_names),
		cmocka_unit_test(test_objstore__key_history),
		cmocka_unit_test(test_objstore__resolve),
		cmocka_unit_test(test_objstore__rm),
		cmocka_unit_test(test_objstore__rm_key_after_reload),
		cmocka_unit_test(test_objstore__policy_parse),
		cmocka_unit_test(test_objstore__json),
		cmocka_unit_test(test_objstore__config_defaults),
		cmocka_unit_test(test_objstore__config_load),
		cmocka_unit_test(test_objstore__config_bad),
		cmocka_unit_test(test_objstore__parse_size),
		cmocka_unit_test(test_objstore__shm_seal),
		cmocka_unit_test(test_objstore__shm_seal_busy),
		cmocka_unit_test(test_objstore__hash_chunks),
		cmocka_unit_test(test_objstore__load_source),
		cmocka_unit_test(test_objstore__load_truncated),
		cmocka_unit_test(test_objstore__load_truncated_copy),
		cmocka_unit_test(test_objstore__load_cancel),
		cmocka_unit_test_teardown(test_objstore__jobs_complete,
					  teardown_alloc),
		cmocka_unit_test(test_objstore__jobs_free_waits),
	};

	return cmocka_run_group_tests(tests, setup_group, NULL);
}
