/*
 * obj.c - artifacts, keys, budget, LRU, leases.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/log.h"
#include "common/names.h"
#include "xfer/loader.h"
#include "net/ev.h"
#include "mdb.h"
#include "obj.h"
#include "format/canon.h"
#include "proto/proto.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct tc__tier_ops host_tier_ops;

void tc__objs_init(struct tc__objs *s, uint64_t budget)
{
	memset(s, 0, sizeof(*s));
	tc__map_init(&s->by_id);
	tc__map_init(&s->keys);
	tc__tier_init(&s->host, "host", budget, &host_tier_ops, s);
}

static struct tc__obj *obj_of(const struct tc__replica *r)
{
	return r ? tc__replica_owner(r, struct tc__obj, host) : NULL;
}

struct tc__obj *tc__objs_first(const struct tc__objs *s)
{
	return obj_of(s->host.lru_head);
}

struct tc__obj *tc__objs_next(const struct tc__obj *o)
{
	return obj_of(o->host.lru_next);
}

struct tc__obj *tc__obj_new(void)
{
	struct tc__obj *o = tc__calloc(1, sizeof(*o));

	if (!o)
		return NULL;
	tc__table_init(&o->table);
	tc__buf_init(&o->attach_body);
	tc__replica_init(&o->host);
	o->created_ms = unix_ms();
	o->host.last_use_ns = tc__now_ns();
	return o;
}

void tc__obj_free(struct tc__obj *o)
{
	if (!o)
		return;
	/* GPU replicas first: they unpin the host mapping. */
	if (o->gpu)
		o->gpu_ops->free(o);
	tc__shm_free(o->shm);
	tc__table_release(&o->table);
	tc__buf_release(&o->attach_body);
	tc__free(o->chunks);
	tc__free(o);
}

static void notify_replica(struct tc__objs *s, const struct tc__obj *o, bool up)
{
	if (s->observer && s->observer->replica && o->shm && o->shm->ro_fd >= 0)
		s->observer->replica(s->observer->arg, o, up);
}

void tc__objs_notify_gpu(struct tc__objs *s, const char *id,
			 const struct tc__obj *o, int ordinal, uint64_t dptr,
			 uint64_t size, bool up)
{
	const struct tc__objs_observer *ob = s->observer;

	if (up && (!o || !o->nchunks))
		return;
	if (ob && ob->gpu_replica)
		ob->gpu_replica(ob->arg, id, up ? &o->table : NULL,
				up ? o->chunks : NULL, up ? o->nchunks : 0,
				ordinal, dptr, size, up);
	if (s->hooks.gpu)
		s->hooks.gpu(s->hooks.arg, id, up ? &o->table : NULL,
			     up ? tc__policy_name(o->policy) : NULL, ordinal,
			     up);
}

static void notify_key(struct tc__objs *s, const char *key, const char *id)
{
	if (s->observer && s->observer->key)
		s->observer->key(s->observer->arg, key, id);
}

int tc__obj_finish(struct tc__obj *o, const struct tc__digest *chunks,
		   uint64_t nchunks)
{
	int rc = tc__canon_root(&o->table, chunks, nchunks, &o->digest);

	if (rc < 0)
		return rc;
	tc__digest_id(&o->digest, o->id);
	/* Kept so a peer can verify each chunk it pulls on its own. */
	tc__free(o->chunks);
	o->chunks = NULL;
	o->nchunks = 0;
	if (nchunks) {
		o->chunks = tc__malloc(nchunks * sizeof(*chunks));
		if (!o->chunks)
			return -ENOMEM;
		memcpy(o->chunks, chunks, nchunks * sizeof(*chunks));
		o->nchunks = nchunks;
	}
	/* The host attach reply; an artifact imported straight to a GPU has
	 * no host replica to attach (yet). */
	if (!o->shm)
		return 0;
	tc__buf_put_str(&o->attach_body, o->id);
	tc__buf_put_u64(&o->attach_body, o->shm->size);
	tc__proto_put_table(&o->attach_body, &o->table);
	return o->attach_body.oom ? -ENOMEM : 0;
}

/* ------------------------------------------------------------------ LRU */

/* Only a live artifact moves on the LRU list: touching a removed one that
 * is still leased leaves it off the list (replica.c). */
void tc__objs_touch(struct tc__objs *s, struct tc__obj *o)
{
	tc__replica_touch(&o->host);
}

/* Forget `o`, whose last lease went or which had none: its charge goes
 * back to the host tier. */
static void obj_gone(struct tc__objs *s, struct tc__obj *o)
{
	tc__map_del(&s->by_id, o->id);
	tc__replica_gone(&o->host, false);
	tc__obj_free(o);
}

/* Take `o` out of the table and the LRU list; free it now when no lease
 * holds it, else when the last lease goes. */
static void obj_kill(struct tc__objs *s, struct tc__obj *o)
{
	if (o->dead)
		return;
	o->dead = true;
	notify_replica(s, o, false);
	tc__replica_evict(&o->host);
	if (o->shm && s->hooks.removed)
		s->hooks.removed(s->hooks.arg, o);
	if (o->host.leases == 0) {
		obj_gone(s, o);
	} else {
		/* Replicas no client maps go now; the rest at release. */
		if (o->gpu)
			o->gpu_ops->trim(o);
	}
}

void tc__objs_kill(struct tc__objs *s, struct tc__obj *o)
{
	obj_kill(s, o);
}

void tc__objs_release(struct tc__objs *s)
{
	struct tc__map_entry *e;
	size_t b;

	for (e = tc__map_next(&s->by_id, NULL, &b); e;
	     e = tc__map_next(&s->by_id, e, &b)) {
		if (!((struct tc__obj *)e->val)->dead)
			notify_replica(s, e->val, false);
		tc__obj_free(e->val);
	}
	for (e = tc__map_next(&s->keys, NULL, &b); e;
	     e = tc__map_next(&s->keys, e, &b)) {
		struct tc__key *k = e->val;

		tc__free(k->name);
		tc__free(k);
	}
	tc__map_release(&s->by_id);
	tc__map_release(&s->keys);
}

/* --------------------------------------------------------------- policy */

static const char *const policy_names[] = {
	[TC_POLICY_CACHE] = "cache",	 [TC_POLICY_COLD] = "cold",
	[TC_POLICY_DURABLE] = "durable", [TC_POLICY_HA] = "ha",
	[TC_POLICY_WARM] = "warm",	 [TC_POLICY_PINNED] = "pinned",
};

int tc__policy_parse(const char *name, enum tc__policy *out, char *err,
		     size_t errlen)
{
	if (!name || !*name) {
		*out = TC_POLICY_CACHE;
		return 0;
	}
	for (size_t i = 0; i < TC_ARRAY_SIZE(policy_names); i++)
		if (!strcmp(name, policy_names[i])) {
			*out = (enum tc__policy)i;
			return 0;
		}
	snprintf(err, errlen,
		 "unknown policy '%s' (known: cache, warm, pinned, durable, "
		 "ha, cold)",
		 name);
	return TC_EINVAL;
}

const char *tc__policy_name(enum tc__policy p)
{
	return (size_t)p < TC_ARRAY_SIZE(policy_names) ? policy_names[p] :
							 "cache";
}

bool tc__policy_on_disk(enum tc__policy p)
{
	return p == TC_POLICY_DURABLE || p == TC_POLICY_HA ||
	       p == TC_POLICY_COLD;
}

/* Overflow "evict": the profiles that may evict others to fit.  warm and
 * pinned reject instead. */
static bool policy_evicts(enum tc__policy p)
{
	return p != TC_POLICY_WARM && p != TC_POLICY_PINNED;
}

/* ----------------------------------------------------- the host tier */

/* Held by clients (the tier skips leased ones), pinned, or on GPUs only
 * (evicting it would free no host memory) stays. */
static bool host_evictable(struct tc__tier *t, struct tc__replica *r)
{
	struct tc__obj *o = obj_of(r);

	return o->policy != TC_POLICY_PINNED && o->host.bytes;
}

static bool host_evict(struct tc__tier *t, struct tc__replica *r, void *ctx)
{
	struct tc__objs *s = t->arg;
	struct tc__obj *o = obj_of(r);

	tc__log(TC_LOG_INFO, "evicting '%s' (%llu bytes) to make room", o->id,
		(unsigned long long)o->host.bytes);
	if (s->evicting)
		s->evicting(s->evicting_arg, o);
	obj_kill(s, o);
	return true;
}

static void host_refuse(struct tc__tier *t, uint64_t bytes, bool too_big,
			char *err, size_t errlen)
{
	struct tc__objs *s = t->arg;
	struct tc__map_entry *e;
	uint64_t pinned = 0;
	size_t b;

	if (too_big) {
		tc__tier_refusal(t, bytes, too_big, err, errlen);
		return;
	}
	/* Walk the table, not the LRU list: a removed artifact is off the
	 * list, and only unleased ones count as pinned (leased bytes are
	 * the tier's leased_bytes, removed ones included). */
	for (e = tc__map_next(&s->by_id, NULL, &b); e;
	     e = tc__map_next(&s->by_id, e, &b)) {
		struct tc__obj *o = e->val;

		if (!o->host.leases && o->policy == TC_POLICY_PINNED)
			pinned += o->host.bytes;
	}
	snprintf(err, errlen,
		 "host budget exhausted: need %llu bytes, %llu of %llu "
		 "free; %llu held by clients, %llu pinned, %llu being filled",
		 (unsigned long long)bytes,
		 (unsigned long long)(t->budget - t->used),
		 (unsigned long long)t->budget,
		 (unsigned long long)t->leased_bytes,
		 (unsigned long long)pinned,
		 (unsigned long long)t->filling_bytes);
}

static const struct tc__tier_ops host_tier_ops = {
	.evictable = host_evictable,
	.evict = host_evict,
	.refuse = host_refuse,
};

int tc__objs_fill(struct tc__objs *s, struct tc__obj *o, uint64_t bytes,
		  enum tc__policy policy, char *err, size_t errlen)
{
	size_t n;
	int rc = tc__replica_fill(&o->host, &s->host, bytes,
				  policy_evicts(policy), NULL, err, errlen);

	if (rc == TC_ENOSPACE && !policy_evicts(policy) &&
	    bytes <= s->host.budget && (n = strlen(err)) < errlen)
		snprintf(err + n, errlen - n,
			 " (this policy does not evict others)");
	return rc;
}

/* A fill that will not become a replica: its charge goes (gone). */
static void fill_gone(struct tc__obj *o)
{
	if (o->host.state == TC_REPLICA_FILLING)
		tc__replica_gone(&o->host, false);
}

void tc__objs_fill_free(struct tc__objs *s, struct tc__obj *o)
{
	(void)s;
	if (!o)
		return;
	fill_gone(o);
	tc__obj_free(o);
}

int tc__objs_insert(struct tc__objs *s, struct tc__obj *o, struct tc__obj **out)
{
	struct tc__obj *old = tc__map_get(&s->by_id, o->id);
	enum tc__policy o_policy = o->policy;
	struct tc__map_entry *e;
	size_t b;

	if (old) {
		/* Same content already held: keep one copy, with the
		 * stronger of the two policies.  A copy removed while clients
		 * still lease it is the same bytes, so it comes back to life
		 * rather than living on beside a twin with the same id. */
		bool gained = !old->shm && o->shm;

		if (gained) {
			/* A host copy of content held on GPUs only: the
			 * artifact gains it (its charge moves along). */
			uint64_t bytes = o->host.bytes;

			old->shm = o->shm;
			o->shm = NULL;
			fill_gone(o);
			tc__replica_recharge(&old->host, bytes);
			tc__buf_release(&old->attach_body);
			old->attach_body = o->attach_body;
			tc__buf_init(&o->attach_body);
		} else {
			fill_gone(o); /* the new fill's charge goes */
		}
		tc__obj_free(o);
		if (old->dead) {
			old->dead = false;
			tc__replica_revive(&old->host);
			notify_replica(s, old, true);
		} else if (gained) {
			notify_replica(s, old, true);
		}
		if (old->shm && s->hooks.added)
			s->hooks.added(s->hooks.arg, old);
		/* enum tc__policy runs from weakest to strongest. */
		if (o_policy > old->policy)
			old->policy = o_policy;
		tc__objs_touch(s, old);
		*out = old;
		return 0;
	}
	if (tc__map_put(&s->by_id, o->id, o) < 0)
		return -ENOMEM;
	/* Keys keep naming an evicted artifact's id; when the same content
	 * is loaded again they name this object, so count them, or rm of
	 * one of them would take the artifact from the others. */
	o->nkeys = 0;
	for (e = tc__map_next(&s->keys, NULL, &b); e;
	     e = tc__map_next(&s->keys, e, &b))
		if (!strcmp(((struct tc__key *)e->val)->id, o->id))
			o->nkeys++;
	/* A host fill becomes READY; an artifact held on GPUs only (no
	 * host fill, 0 bytes) joins the tier as it is. */
	if (o->host.state == TC_REPLICA_FILLING)
		tc__replica_ready(&o->host);
	else
		tc__replica_adopt(&o->host, &s->host, 0);
	s->inserted++;
	notify_replica(s, o, true);
	if (o->shm && s->hooks.added)
		s->hooks.added(s->hooks.arg, o);
	*out = o;
	return 0;
}

/* Hex digits an id prefix needs, as git asks for short object names. */
#define TC_ID_PREFIX_MIN 4

/* The hex digits of `ref` when it has the shape of an id prefix ("tc2:ab12"
 * or "ab12"), else NULL.  No id length is assumed: ids may grow. */
static const char *prefix_hex(const char *ref)
{
	size_t plen = strlen(TC_ID_PREFIX);
	const char *h = strncmp(ref, TC_ID_PREFIX, plen) ? ref : ref + plen;

	if (!*h)
		return NULL;
	for (const char *p = h; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
		      (*p >= 'A' && *p <= 'F')))
			return NULL;
	return h;
}

/* The one live artifact whose id starts with `ref` (a unique prefix, as in
 * git), looked up after keys so that a key always wins.  NULL with *rc
 * TC_ENOTFOUND (no match, or not an id prefix) or TC_EINVAL (ambiguous, or
 * "tc2:" with fewer than TC_ID_PREFIX_MIN digits). */
static struct tc__obj *objs_by_prefix(struct tc__objs *s, const char *ref,
				      char *err, size_t errlen, int *rc)
{
	const char *hex = prefix_hex(ref);
	size_t n, plen = strlen(TC_ID_PREFIX), used = 0, b;
	struct tc__obj *found = NULL;
	struct tc__map_entry *e;
	char list[512] = "";
	int matches = 0;

	*rc = TC_ENOTFOUND;
	if (!hex) {
		snprintf(err, errlen, "no key or artifact '%s'", ref);
		return NULL;
	}
	n = strlen(hex);
	if (n < TC_ID_PREFIX_MIN) {
		if (hex != ref)
			*rc = TC_EINVAL;
		snprintf(err, errlen,
			 "no key '%s', and an id prefix needs at least %d hex "
			 "digits",
			 ref, TC_ID_PREFIX_MIN);
		return NULL;
	}
	for (e = tc__map_next(&s->by_id, NULL, &b); e;
	     e = tc__map_next(&s->by_id, e, &b)) {
		struct tc__obj *o = e->val;

		if (o->dead || strlen(o->id) < plen ||
		    strncasecmp(o->id + plen, hex, n))
			continue;
		if (++matches == 1)
			found = o;
		if (used < sizeof(list))
			used += (size_t)snprintf(list + used,
						 sizeof(list) - used, "%s%s",
						 matches > 1 ? ", " : "",
						 o->id);
	}
	if (matches == 0) {
		snprintf(err, errlen, "no key or artifact '%s'", ref);
		return NULL;
	}
	if (matches > 1) {
		*rc = TC_EINVAL;
		snprintf(err, errlen,
			 "id prefix '%s' is ambiguous: %d artifacts match (%s)",
			 ref, matches, list);
		return NULL;
	}
	*rc = 0;
	return found;
}

struct tc__obj *tc__objs_resolve(struct tc__objs *s, const char *ref, char *err,
				 size_t errlen, int *rc)
{
	struct tc__obj *o;
	struct tc__key *k;

	*rc = TC_ENOTFOUND;
	if (tc__is_id(ref)) {
		o = tc__map_get(&s->by_id, ref);
		if (o && !o->dead) {
			*rc = 0;
			return o;
		}
		snprintf(err, errlen, "no artifact '%s' (evicted or removed)",
			 ref);
		return NULL;
	}
	k = tc__map_get(&s->keys, ref);
	if (!k)
		return objs_by_prefix(s, ref, err, errlen, rc);
	o = k->id[0] ? tc__map_get(&s->by_id, k->id) : NULL;
	if (!o || o->dead) {
		if (k->moved && k->id[0])
			snprintf(err, errlen,
				 "key '%s' moved to '%s' (generation %llu) on "
				 "another node, which this daemon does not "
				 "hold; pull it: tcast pull %s",
				 ref, k->id, (unsigned long long)k->gen, ref);
		else if (!k->id[0])
			snprintf(
				err, errlen,
				"key '%s' (generation %llu) names no artifact: "
				"the one it named is no longer held (removed)",
				ref, (unsigned long long)k->gen);
		else
			snprintf(err, errlen,
				 "key '%s' (generation %llu) points to '%s', "
				 "which is no longer held (evicted or removed)",
				 ref, (unsigned long long)k->gen, k->id);
		return NULL;
	}
	*rc = 0;
	return o;
}

void tc__objs_lease(struct tc__objs *s, struct tc__obj *o)
{
	tc__replica_lease(&o->host); /* touches it too */
}

void tc__objs_unlease(struct tc__objs *s, struct tc__obj *o)
{
	if (o->host.leases == 0)
		return;
	if (tc__replica_unlease(&o->host) == 0 && o->dead)
		obj_gone(s, o);
}

/* ------------------------------------------------------------------ keys */

static void key_record(struct tc__key *k, const char *id)
{
	struct tc__key_version *v = &k->hist[k->nhist % TC_KEY_HISTORY];

	v->gen = k->gen;
	snprintf(v->id, sizeof(v->id), "%s", id);
	v->unix_ms = unix_ms();
	k->nhist++;
	k->moved = false; /* tc__objs_key_moved_away sets it after */
}

static void key_retarget(struct tc__objs *s, struct tc__key *k, const char *id)
{
	struct tc__obj *o;

	if (k->id[0] && (o = tc__map_get(&s->by_id, k->id)) && o->nkeys)
		o->nkeys--;
	snprintf(k->id, sizeof(k->id), "%s", id);
	if (id[0] && (o = tc__map_get(&s->by_id, id)))
		o->nkeys++;
	notify_key(s, k->name, id);
}

static int key_name_ok(const char *key, char *err, size_t errlen)
{
	size_t n = strlen(key);

	if (n == 0 || n > TC_KEY_MAX) {
		snprintf(err, errlen, "key must be 1..%d bytes", TC_KEY_MAX);
		return TC_EINVAL;
	}
	if (tc__is_id(key)) {
		snprintf(err, errlen, "key '%s' looks like an artifact id",
			 key);
		return TC_EINVAL;
	}
	return tc__name_check("key", key, n, TC_KEY_MAX, 0, err, errlen);
}

/* A compare-and-swap that expected another generation: TC_ECONFLICT, and
 * the message says where the key is now ("tail" adds what was not done). */
static int gen_conflict(const struct tc__key *k, const char *key,
			uint64_t expect_gen, const char *tail, char *err,
			size_t errlen)
{
	char to[sizeof(k->id) + 32];

	if (k->id[0])
		snprintf(to, sizeof(to), "it points to '%s'", k->id);
	else
		snprintf(to, sizeof(to), "it names no artifact");
	snprintf(err, errlen, "key '%s' is at generation %llu, not %llu (%s)%s",
		 key, (unsigned long long)k->gen,
		 (unsigned long long)expect_gen, to, tail);
	return TC_ECONFLICT;
}
int tc__objs_key_target(struct tc__objs *s, const char *key, const char *id,
			char *full, char *err, size_t errlen)
{
	struct tc__obj *o;
	int rc = key_name_ok(key, err, errlen);

	full[0] = '\0';
	if (rc < 0)
		return rc;
	o = tc__map_get(&s->by_id, id);
	if ((!o || o->dead) && !tc__is_id(id)) {
		o = objs_by_prefix(s, id, err, errlen, &rc);
		if (!o)
			return rc;
	} else if (!o || o->dead) {
		snprintf(err, errlen, "no artifact '%s'", id);
		return TC_ENOTFOUND;
	}
	snprintf(full, TC_ID_LEN + 1, "%s", o->id);
	return 0;
}

bool tc__key_node_local(const char *key)
{
	return !strncmp(key, TC_KEY_NODE_PREFIX,
			sizeof(TC_KEY_NODE_PREFIX) - 1);
}

bool tc__objs_key_exists(struct tc__objs *s, const char *key)
{
	return tc__map_get(&s->keys, key) != NULL;
}

void tc__objs_key_id(struct tc__objs *s, const char *key, char *id, size_t len)
{
	struct tc__key *k = tc__map_get(&s->keys, key);

	snprintf(id, len, "%s", k ? k->id : "");
}

/* A new key of no generation yet, in s->keys, or NULL (out of memory). */
static struct tc__key *key_new(struct tc__objs *s, const char *key)
{
	struct tc__key *k = tc__calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->name = tc__strdup(key);
	if (!k->name || tc__map_put(&s->keys, k->name, k) < 0) {
		tc__free(k->name);
		tc__free(k);
		return NULL;
	}
	return k;
}

int tc__objs_key_adopt(struct tc__objs *s, const char *key, const char *id,
		       uint64_t gen)
{
	struct tc__key *k = tc__map_get(&s->keys, key);

	if (!k) {
		k = key_new(s, key);
		if (!k)
			return -ENOMEM;
	} else if (k->gen == gen && !strcmp(k->id, id)) {
		return 0; /* already recorded */
	}
	/* The cluster's generation, even where it skips numbers (other
	 * nodes moved the key meanwhile): one number per version, the same
	 * on every node that asks the global store. */
	k->gen = gen;
	if (strcmp(k->id, id))
		key_retarget(s, k, id);
	key_record(k, id);
	return 0;
}

int tc__objs_key_moved_away(struct tc__objs *s, const char *key,
			    const char *had_id, uint64_t had_gen,
			    const char *id, uint64_t gen)
{
	struct tc__key *k = tc__map_get(&s->keys, key);
	int rc;

	if (!k || k->gen != had_gen || strcmp(k->id, had_id))
		return 0;
	rc = tc__objs_key_adopt(s, key, id, gen);
	if (rc < 0)
		return rc;
	k->moved = true;
	return 1;
}

int tc__objs_key_set(struct tc__objs *s, const char *key, const char *id,
		     bool expect, uint64_t expect_gen, uint64_t *gen, char *err,
		     size_t errlen)
{
	struct tc__key *k;
	char full[TC_ID_LEN + 1];
	int rc = tc__objs_key_target(s, key, id, full, err, errlen);

	*gen = 0;
	if (rc < 0)
		return rc;
	id = full;
	k = tc__map_get(&s->keys, key);
	if (!k) {
		if (expect && expect_gen != 0) {
			snprintf(err, errlen,
				 "key '%s' does not exist (expected generation "
				 "%llu)",
				 key, (unsigned long long)expect_gen);
			return TC_ECONFLICT;
		}
		k = key_new(s, key);
		if (!k)
			return -ENOMEM;
		k->gen = 1;
		key_retarget(s, k, id);
		key_record(k, id);
		*gen = k->gen;
		if (s->hooks.key_moved)
			s->hooks.key_moved(s->hooks.arg, key, id, "", k->gen);
		return 0;
	}
	if (!expect) {
		if (!strcmp(k->id, id)) {
			*gen = k->gen;
			return 0;
		}
		snprintf(err, errlen,
			 "key '%s' points to '%s' (generation %llu); moving it "
			 "needs compare-and-swap (expect generation %llu)",
			 key, k->id[0] ? k->id : "nothing",
			 (unsigned long long)k->gen,
			 (unsigned long long)k->gen);
		*gen = k->gen;
		return TC_ECONFLICT;
	}
	if (expect_gen != k->gen) {
		*gen = k->gen;
		return gen_conflict(k, key, expect_gen, "", err, errlen);
	}
	if (strcmp(k->id, id)) {
		char prev[TC_ID_LEN + 1];

		snprintf(prev, sizeof(prev), "%s", k->id);
		k->gen++;
		key_retarget(s, k, id);
		key_record(k, id);
		if (s->hooks.key_moved)
			s->hooks.key_moved(s->hooks.arg, key, id, prev, k->gen);
	}
	*gen = k->gen;
	return 0;
}

int tc__objs_key_restore(struct tc__objs *s, const char *key,
			 const struct tc__mdb_version *v, uint32_t n)
{
	struct tc__key *k;

	if (n == 0 || tc__map_get(&s->keys, key))
		return 0;
	k = tc__calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->name = tc__strdup(key);
	if (!k->name || tc__map_put(&s->keys, k->name, k) < 0) {
		tc__free(k->name);
		tc__free(k);
		return -ENOMEM;
	}
	/* Only the newest TC_KEY_HISTORY fit the ring. */
	for (uint32_t i = n > TC_KEY_HISTORY ? n - TC_KEY_HISTORY : 0; i < n;
	     i++) {
		struct tc__key_version *h = &k->hist[k->nhist % TC_KEY_HISTORY];

		h->gen = v[i].gen;
		snprintf(h->id, sizeof(h->id), "%s", v[i].id);
		h->unix_ms = v[i].unix_ms;
		k->nhist++;
	}
	k->gen = v[n - 1].gen;
	snprintf(k->id, sizeof(k->id), "%s", v[n - 1].id);
	return 0;
}

int tc__objs_key_precheck(struct tc__objs *s, const char *key, bool expect,
			  uint64_t expect_gen, char *err, size_t errlen)
{
	struct tc__key *k;
	int rc;

	if (!key[0])
		return 0;
	rc = key_name_ok(key, err, errlen);
	if (rc < 0 || !expect)
		return rc;
	k = tc__map_get(&s->keys, key);
	if (!k && expect_gen != 0) {
		snprintf(err, errlen,
			 "key '%s' does not exist (expected generation %llu); "
			 "nothing was loaded",
			 key, (unsigned long long)expect_gen);
		return TC_ECONFLICT;
	}
	if (k && k->gen != expect_gen)
		return gen_conflict(k, key, expect_gen, "; nothing was loaded",
				    err, errlen);
	return 0;
}

void tc__objs_discard_new(struct tc__objs *s, struct tc__obj *o)
{
	if (o->nkeys == 0 && o->host.leases == 0 && !o->dead)
		obj_kill(s, o);
}

int tc__objs_rm(struct tc__objs *s, const char *ref, char *err, size_t errlen)
{
	struct tc__map_entry *e;
	struct tc__obj *o = NULL;
	struct tc__key *k;
	size_t b;
	int rc;

	if (!tc__is_id(ref) && !tc__map_get(&s->keys, ref)) {
		/* An id prefix names the artifact, as a full id does. */
		o = objs_by_prefix(s, ref, err, errlen, &rc);
		if (!o)
			return rc;
		ref = o->id;
	}
	if (tc__is_id(ref)) {
		o = tc__map_get(&s->by_id, ref);
		if (!o || o->dead) {
			snprintf(err, errlen, "no artifact '%s'", ref);
			return TC_ENOTFOUND;
		}
		/* Keys naming it lose their target but keep their history. */
		for (e = tc__map_next(&s->keys, NULL, &b); e;
		     e = tc__map_next(&s->keys, e, &b)) {
			k = e->val;
			if (!strcmp(k->id, ref)) {
				k->id[0] = '\0';
				notify_key(s, k->name, "");
			}
		}
		o->nkeys = 0;
		obj_kill(s, o);
		return 0;
	}
	k = tc__map_get(&s->keys, ref);
	if (!k) {
		snprintf(err, errlen, "no key or artifact '%s'", ref);
		return TC_ENOTFOUND;
	}
	o = k->id[0] ? tc__map_get(&s->by_id, k->id) : NULL;
	notify_key(s, k->name, "");
	tc__map_del(&s->keys, ref);
	if (o && o->nkeys)
		o->nkeys--;
	if (o && !o->dead && o->nkeys == 0)
		obj_kill(s, o);
	tc__free(k->name);
	tc__free(k);
	return 0;
}

/* ------------------------------------------------------------------ JSON */

static char *dump(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	return s;
}

static json_t *obj_summary(struct tc__objs *s, struct tc__obj *o)
{
	json_t *keys = json_array(), *reps;
	struct tc__map_entry *e;
	size_t b;
	char hex[TC_DIGEST_HEX + 1];

	for (e = tc__map_next(&s->keys, NULL, &b); e;
	     e = tc__map_next(&s->keys, e, &b)) {
		struct tc__key *k = e->val;

		if (!strcmp(k->id, o->id))
			json_array_append_new(keys, json_string(k->name));
	}
	tc__digest_hex(&o->digest, hex);
	reps = json_array();
	if (o->shm)
		json_array_append_new(
			reps, json_pack("{s:s, s:I}", "tier", "host", "bytes",
					(json_int_t)o->host.bytes));
	return json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:s, s:s, "
			 "s:I, s:f, s:o}",
			 "id", o->id, "digest", hex, "digest_algorithm",
			 "blake3", "keys", keys, "tensors",
			 (json_int_t)o->table.ntensors, "bytes",
			 (json_int_t)o->table.total_bytes, "mem_bytes",
			 (json_int_t)o->host.bytes, "leases",
			 (json_int_t)o->host.leases, "policy",
			 tc__policy_name(o->policy), "source", o->source,
			 "created_ms", (json_int_t)o->created_ms,
			 "load_seconds", o->load_seconds, "replicas", reps);
}

/* obj_summary plus the GPU replicas. */
static json_t *obj_json(struct tc__objs *s, struct tc__obj *o)
{
	json_t *j = obj_summary(s, o);

	if (j && o->gpu)
		o->gpu_ops->json(o, json_object_get(j, "replicas"));
	return j;
}

char *tc__objs_list_json(struct tc__objs *s, uint64_t not_artifacts, void *more)
{
	json_t *arr = json_array();

	for (struct tc__obj *o = tc__objs_first(s); o; o = tc__objs_next(o))
		json_array_append_new(arr, obj_json(s, o));
	if (more) {
		json_array_extend(arr, more);
		json_decref(more);
	}
	return dump(json_pack("{s:o, s:I, s:I}", "artifacts", arr, "used_bytes",
			      (json_int_t)(s->host.used - not_artifacts),
			      "budget_bytes", (json_int_t)s->host.budget));
}

void *tc__objs_inspect_head(struct tc__objs *s, struct tc__obj *o)
{
	return obj_json(s, o);
}

char *tc__obj_inspect_finish(void *head, const struct tc__obj *o)
{
	return tc__table_inspect_finish(head, &o->table);
}

char *tc__table_inspect_finish(void *head, const struct tc__table *t)
{
	json_t *j = head, *ts = json_array(), *meta = json_object();

	if (!j) {
		json_decref(ts);
		json_decref(meta);
		return NULL;
	}
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		json_t *shape = json_array();

		for (uint32_t d = 0; d < x->ndim; d++)
			json_array_append_new(
				shape, json_integer((json_int_t)x->shape[d]));
		json_array_append_new(
			ts,
			json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", x->name,
				  "dtype", tc_dtype_name(x->dtype), "shape",
				  shape, "offset", (json_int_t)x->offset,
				  "nbytes", (json_int_t)x->nbytes));
	}
	for (uint32_t i = 0; i < t->nmeta; i++)
		json_object_set_new(meta, t->meta[i].key,
				    json_string(t->meta[i].val));
	json_object_set_new(j, "tensor_table", ts);
	json_object_set_new(j, "metadata", meta);
	json_object_set_new(j, "chunk_bytes", json_integer(TC_CHUNK_BYTES));
	return dump(j);
}

char *tc__objs_inspect_json(struct tc__objs *s, struct tc__obj *o)
{
	return tc__obj_inspect_finish(tc__objs_inspect_head(s, o), o);
}

uint64_t tc__table_cost(const struct tc__table *t)
{
	/* The table itself, its names, and the ATTACH body that repeats it
	 * (name, dtype, rank, shape, offset, size), plus allocator slack. */
	uint64_t b = (uint64_t)t->ntensors * (sizeof(*t->tensors) + 64);

	for (uint32_t i = 0; i < t->ntensors; i++)
		b += 2 * (strlen(t->tensors[i].name) + 1) + 4 + 2 +
		     8 * (uint64_t)t->tensors[i].ndim + 16;
	for (uint32_t i = 0; i < t->nmeta; i++)
		b += 2 * (strlen(t->meta[i].key) + strlen(t->meta[i].val) + 2 +
			  8) +
		     64;
	/* The first page rides free: a small table costs less than the
	 * segment's page rounding, and small artifacts keep exact sizes. */
	return b > TC_TABLE_FREE_BYTES ? b - TC_TABLE_FREE_BYTES : 0;
}

static json_t *key_json(struct tc__objs *s, struct tc__key *k, int history)
{
	struct tc__obj *o = k->id[0] ? tc__map_get(&s->by_id, k->id) : NULL;
	json_t *j = json_pack("{s:s, s:s, s:I, s:b, s:b}", "key", k->name, "id",
			      k->id, "generation", (json_int_t)k->gen, "held",
			      o && !o->dead, "moved_elsewhere", k->moved);

	if (history) {
		json_t *h = json_array();
		uint32_t n = k->nhist < TC_KEY_HISTORY ? k->nhist :
							 TC_KEY_HISTORY;

		for (uint32_t i = 0; i < n; i++) {
			const struct tc__key_version *v =
				&k->hist[(k->nhist - 1 - i) % TC_KEY_HISTORY];

			json_array_append_new(
				h,
				json_pack("{s:I, s:s, s:I}", "generation",
					  (json_int_t)v->gen, "id", v->id,
					  "unix_ms", (json_int_t)v->unix_ms));
		}
		json_object_set_new(j, "history", h);
	}
	return j;
}

char *tc__objs_keys_json(struct tc__objs *s, const char *key, int *rc,
			 char *err, size_t errlen)
{
	struct tc__map_entry *e;
	json_t *arr;
	size_t b;

	*rc = 0;
	if (key && *key) {
		struct tc__key *k = tc__map_get(&s->keys, key);

		if (!k) {
			snprintf(err, errlen, "no key '%s'", key);
			*rc = TC_ENOTFOUND;
			return NULL;
		}
		return dump(key_json(s, k, 1));
	}
	arr = json_array();
	for (e = tc__map_next(&s->keys, NULL, &b); e;
	     e = tc__map_next(&s->keys, e, &b))
		json_array_append_new(arr, key_json(s, e->val, 0));
	return dump(json_pack("{s:o}", "keys", arr));
}
