/*
 * load.c - the global store's state rebuilt from its backend at start:
 * nodes, artifact records, replicas, keys, and groups with their members.
 *
 * Leases are not stored, so nothing loaded is routed until its node
 * registers again; groups and members get one lease's grace to return
 * before a missing node counts against them.
 */
#include <errno.h>
#include <stdio.h>

#include "common/alloc.h"
#include "gs_internal.h"
#include "net/ev.h"

/* ------------------------------------------------------------ loading */

static int load_node(void *arg, uint64_t id, const struct tc__gsp_node *n)
{
	struct gnode *gn = tc__gs_node_add(arg, id, n);

	return gn ? 0 : -ENOMEM;
}

static int load_art(void *arg, const struct tc__gsp_artifact *a)
{
	struct gart *ga =
		tc__gs_art_get_or_add(arg, a->id, a->size, a->nchunks);

	if (!ga)
		return -ENOMEM;
	ga->recorded = true;
	snprintf(ga->policy, sizeof(ga->policy), "%s", a->policy);
	return 0;
}

static int load_rep(void *arg, uint64_t node_id,
		    const struct tc__gsp_replica *r)
{
	struct gnode *n = tc__gs_node_get(arg, node_id);

	return n ? tc__gs_rep_set(arg, n, r) : 0;
}

static int load_key(void *arg, const char *key, const char *id, uint64_t gen)
{
	struct gs *gs = arg;
	struct gkey *k = tc__calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	snprintf(k->name, sizeof(k->name), "%s", key);
	snprintf(k->id, sizeof(k->id), "%s", id);
	k->gen = gen;
	return tc__map_put(&gs->keys, k->name, k);
}

static int load_group(void *arg, const struct tc__gsp_group *rec,
		      int64_t deadline_unix)
{
	struct gs *gs = arg;
	struct ggroup *g;
	uint64_t now = tc__now_ms();
	int64_t left;

	if (rec->ranks < 1 || rec->ranks > TC_GSP_MAX_RANKS ||
	    rec->state > TC_GSP_GSTATE_ABORT)
		return 0; /* not a row this store wrote: skip it */
	g = tc__gs_group_new(rec->name, rec->ranks, rec->timeout_ms);
	if (!g)
		return -ENOMEM;
	g->rec = *rec;
	g->rec.members = NULL;
	g->rec.nmembers = 0;
	g->rec.nprepared = 0;
	left = deadline_unix - tc__gs_wall_ms();
	g->deadline_unix = deadline_unix;
	g->deadline = now + (uint64_t)(left > 0 ? left : 0);
	/* Leases are not stored: every node gets one lease to register
	 * again before its ranks' groups hold it against them. */
	g->grace_until = now + (uint64_t)gs->cfg->lease_ms;
	g->decided_at = now;
	if (tc__map_put(&gs->groups, g->rec.name, g) < 0) {
		tc__gs_group_free(g);
		return -ENOMEM;
	}
	if (g->rec.state == TC_GSP_GSTATE_OPEN)
		tc__gs_open_link(gs, g);
	gs->rank_slots += g->rec.ranks;
	return 0;
}

static int load_member(void *arg, const char *group,
		       const struct tc__gsp_member *row)
{
	struct gs *gs = arg;
	struct ggroup *g = tc__map_get(&gs->groups, group);
	struct gmember *m;

	if (!g || row->rank >= g->rec.ranks)
		return 0;
	m = &g->m[row->rank];
	if (!m->joined)
		g->njoined++;
	m->joined = true;
	m->prepared = row->prepared;
	g->rec.nprepared += row->prepared;
	m->node = row->node[0] ? tc__map_get(&gs->node_by_name, row->node) :
				 NULL;
	m->node_epoch = m->node ? m->node->info.epoch : 0;
	m->lease_ms = row->lease_ms >= TC_GSP_MIN_LEASE_MS ?
			      row->lease_ms :
			      TC_GSP_MIN_LEASE_MS;
	/* one full lease to renew after the store's restart */
	m->lease_until = tc__now_ms() + (uint64_t)m->lease_ms +
			 (uint64_t)gs->cfg->lease_ms;
	snprintf(m->staged, sizeof(m->staged), "%s", row->id);
	return 0;
}

int tc__gs_load(struct gs *gs)
{
	struct tc__gs_load_cb cb = { gs,       load_node,  load_art,   load_rep,
				     load_key, load_group, load_member };

	return gs->ops->load(gs->be, &cb);
}
