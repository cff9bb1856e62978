/*
 * state.c - the global store's routing state in memory, and the ranking
 * of an artifact's replicas for a requester.
 *
 * Routing state is in memory: nodes (by id and name), artifacts (by id)
 * with their replicas, keys.  A node whose lease lapses stays known but
 * leaves routing; re-registering (with its full replica list) brings it
 * back.  After a restart every node is out of routing until it registers.
 *
 * Every change the handlers make to it goes through the backend too
 * (tc__gs_be_write opens the turn's transaction); these functions touch
 * memory only, so that loading at start can use them as well.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gs_internal.h"
#include "net/ev.h"

/* ------------------------------------------------------------ helpers */

int tc__gs_be_write(struct gs *gs)
{
	int ret;

	if (gs->txn)
		return 0;
	ret = gs->ops->begin(gs->be);
	if (ret == 0) {
		gs->txn = true;
		gs->txn_failed = false;
	}
	return ret;
}

struct gnode *tc__gs_node_get(struct gs *gs, uint64_t id)
{
	return id >= 1 && id <= gs->nnodes ? gs->nodes[id - 1] : NULL;
}

struct gnode *tc__gs_node_add(struct gs *gs, uint64_t id,
			      const struct tc__gsp_node *info)
{
	struct gnode *n;

	if (id > gs->nnodes) {
		struct gnode **nn =
			tc__reallocarray(gs->nodes, id, sizeof(*nn));

		if (!nn)
			return NULL;
		memset(nn + gs->nnodes, 0, (id - gs->nnodes) * sizeof(*nn));
		gs->nodes = nn;
		gs->nnodes = id;
	}
	n = tc__calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->id = id;
	n->info = *info;
	if (tc__map_put(&gs->node_by_name, n->info.name, n) < 0) {
		tc__free(n);
		return NULL;
	}
	gs->nodes[id - 1] = n;
	return n;
}

struct gart *tc__gs_art_get_or_add(struct gs *gs, const char *id, uint64_t size,
				   uint32_t nchunks)
{
	struct gart *a = tc__map_get(&gs->arts, id);

	if (a)
		return a;
	a = tc__calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	snprintf(a->id, sizeof(a->id), "%s", id);
	a->size = size;
	a->nchunks = nchunks;
	if (tc__map_put(&gs->arts, a->id, a) < 0) {
		tc__free(a);
		return NULL;
	}
	return a;
}

static struct grep *rep_find(struct gart *a, struct gnode *n, int tier,
			     uint32_t device)
{
	for (size_t i = 0; i < a->nreps; i++)
		if (a->reps[i].node == n && a->reps[i].tier == tier &&
		    a->reps[i].device == device)
			return &a->reps[i];
	return NULL;
}

/* Insert or update a replica in memory (`have` copied). */
int tc__gs_rep_set(struct gs *gs, struct gnode *n,
		   const struct tc__gsp_replica *r)
{
	struct gart *a = tc__gs_art_get_or_add(gs, r->id, r->size, r->nchunks);
	struct grep *p;
	uint8_t *have = NULL;

	if (!a)
		return -ENOMEM;
	if (r->have) {
		size_t bl = tc__gsp_bitmap_len(r->nchunks);

		have = tc__malloc(bl ? bl : 1);
		if (!have)
			return -ENOMEM;
		memcpy(have, r->have, bl);
	}
	p = rep_find(a, n, r->tier, r->device);
	if (!p) {
		if (a->nreps == a->cap) {
			size_t cap = a->cap ? 2 * a->cap : 4;
			struct grep *nr =
				tc__reallocarray(a->reps, cap, sizeof(*nr));

			if (!nr) {
				tc__free(have);
				return -ENOMEM;
			}
			a->reps = nr;
			a->cap = cap;
		}
		p = &a->reps[a->nreps++];
		memset(p, 0, sizeof(*p));
		p->node = n;
		p->tier = r->tier;
		p->device = r->device;
		n->nreps++;
	}
	tc__free(p->have);
	p->have = have;
	p->size = r->size;
	p->nchunks = r->nchunks;
	if (!a->size) {
		a->size = r->size;
		a->nchunks = r->nchunks;
	}
	return 0;
}

static void rep_remove_at(struct gart *a, size_t i)
{
	a->reps[i].node->nreps--;
	tc__free(a->reps[i].have);
	a->reps[i] = a->reps[--a->nreps];
}

bool tc__gs_rep_del(struct gs *gs, struct gnode *n, const char *id, int tier,
		    uint32_t device)
{
	struct gart *a = tc__map_get(&gs->arts, id);

	if (!a)
		return false;
	for (size_t i = 0; i < a->nreps; i++)
		if (a->reps[i].node == n && a->reps[i].tier == tier &&
		    a->reps[i].device == device) {
			rep_remove_at(a, i);
			return true;
		}
	return false;
}

/* Drop every replica of node n (memory only). */
void tc__gs_rep_del_node(struct gs *gs, struct gnode *n)
{
	struct tc__map_entry *e;
	size_t b;

	if (!n->nreps)
		return;
	for (e = tc__map_next(&gs->arts, NULL, &b); e;
	     e = tc__map_next(&gs->arts, e, &b)) {
		struct gart *a = e->val;

		for (size_t i = 0; i < a->nreps;)
			if (a->reps[i].node == n)
				rep_remove_at(a, i);
			else
				i++;
	}
}

/* ------------------------------------------------------------ routing */

static bool label_eq(const char *a, const char *b)
{
	return a[0] && b[0] && !strcmp(a, b);
}

/* 0 same node, 1 same host, 2 same rack (and zone), 3 same zone, 4 other.
 * Labels nest: a rack is only the same rack within the same zone. */
uint32_t tc__gs_distance(const struct gnode *me, const struct gnode *n)
{
	if (!me)
		return 4;
	if (me == n)
		return 0;
	if (label_eq(me->info.host, n->info.host) &&
	    (!me->info.zone[0] || label_eq(me->info.zone, n->info.zone)))
		return 1;
	if (label_eq(me->info.zone, n->info.zone)) {
		if (label_eq(me->info.rack, n->info.rack))
			return 2;
		return 3;
	}
	if (!me->info.zone[0] && !n->info.zone[0] &&
	    label_eq(me->info.rack, n->info.rack))
		return 2;
	return 4;
}

struct cand {
	struct grep *r;
	uint64_t score;
};

static int cand_cmp(const void *x, const void *y)
{
	const struct cand *a = x, *b = y;

	return a->score < b->score ? -1 : a->score > b->score;
}

uint32_t tc__gs_xorshift(void)
{
	static uint32_t s = 2463534242u;

	s ^= s << 13;
	s ^= s >> 17;
	s ^= s << 5;
	return s;
}

/*
 * Rank the live replicas of `a` for requester `me` (may be NULL): by
 * distance (shared disk last), then tier (host memory, GPU, disk), then
 * complete before partial, then load (uploads in flight plus how often the
 * store named it first lately), then at random.  Writes at most `max`.
 */
size_t tc__gs_rank_sources(struct gs *gs, struct gart *a, struct gnode *me,
			   size_t max, struct tc__gsp_source *out)
{
	struct cand stackc[64], *c = stackc;
	size_t n = 0, k;
	uint64_t now = tc__now_ms();

	if (a->nreps > 64) {
		c = tc__calloc(a->nreps, sizeof(*c));
		if (!c)
			return 0;
	}
	for (size_t i = 0; i < a->nreps; i++) {
		struct grep *r = &a->reps[i];
		uint64_t d, load;

		if (!r->node->live || r->node->lease_until < now)
			continue;
		d = r->tier == TC_GSP_TIER_SHARED ?
			    5 :
			    tc__gs_distance(me, r->node);
		load = (uint64_t)r->node->uploads + r->node->handouts;
		if (load > 0xffff)
			load = 0xffff;
		c[n].r = r;
		c[n].score = d << 40 | (uint64_t)r->tier << 36 |
			     (uint64_t)(r->have ? 1 : 0) << 32 | load << 16 |
			     (tc__gs_xorshift() & 0xffff);
		n++;
	}
	qsort(c, n, sizeof(*c), cand_cmp);
	k = n < max ? n : max;
	for (size_t i = 0; i < k; i++) {
		struct grep *r = c[i].r;
		struct tc__gsp_source *s = &out[i];

		s->node_id = r->node->id;
		snprintf(s->name, sizeof(s->name), "%s", r->node->info.name);
		snprintf(s->peer_addr, sizeof(s->peer_addr), "%s",
			 r->node->info.peer_addr);
		s->tier = r->tier;
		s->device = r->device;
		s->complete = r->have ? 0 : 1;
		s->distance = (uint32_t)(c[i].score >> 40);
		s->uploads = r->node->uploads;
	}
	/* The first remote source is the one a receiver starts from: count
	 * it, so the next receiver's ranking spreads the load. */
	for (size_t i = 0; i < k; i++)
		if (c[i].r->node != me) {
			if (c[i].r->node->handouts < 0xffff)
				c[i].r->node->handouts++;
			break;
		}
	if (c != stackc)
		tc__free(c);
	gs->n_lookups++;
	return k;
}
