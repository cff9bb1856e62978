/*
 * handlers.c - the global store's requests about nodes, replicas,
 * artifacts, keys, routing and status, and the table through which the
 * loop (server.c) dispatches every request type, groups' (groups.c)
 * included.
 *
 * A handler runs on the loop thread against the in-memory state; when it
 * changes something it writes through the backend in the turn's
 * transaction (tc__gs_be_write), and its reply is sent only after the
 * turn commits.  Heartbeats and lookups touch memory only.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gs_internal.h"
#include "net/ev.h"
#include "tcast/errors.h"

/* ------------------------------------------------------------ handlers */

static struct gnode *requester(struct gs *gs, struct gconn *c, const char *name)
{
	if (name[0])
		return tc__map_get(&gs->node_by_name, name);
	return c->node;
}

static int on_register(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		       struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_node info;
	struct tc__gsp_replica *reps = NULL;
	struct gnode *n;
	uint32_t nrep;
	bool reattach;
	int ret;

	ret = tc__gsp_get_node(cur, &info, err, errlen);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u32(cur, &nrep) < 0) {
		snprintf(err, errlen, "replica count: truncated");
		return TC_EPROTO;
	}
	if (nrep > TC_GSP_MAX_REPL || nrep > cur->left / 19) {
		snprintf(err, errlen, "%u replicas in %zu bytes (at most %d)",
			 nrep, cur->left, TC_GSP_MAX_REPL);
		return nrep > TC_GSP_MAX_REPL ? TC_ELIMIT : TC_EPROTO;
	}
	reps = tc__calloc(nrep ? nrep : 1, sizeof(*reps));
	if (!reps)
		return -ENOMEM;
	for (uint32_t i = 0; i < nrep; i++) {
		ret = tc__gsp_get_replica(cur, &reps[i], err, errlen);
		if (ret < 0) {
			for (uint32_t j = 0; j < i; j++)
				tc__gsp_replica_release(&reps[j]);
			tc__free(reps);
			return ret;
		}
	}
	ret = tc__gsp_end(cur, err, errlen);
	if (ret < 0)
		goto out_free;
	ret = tc__gs_be_write(gs);
	if (ret < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		goto out_free;
	}
	n = tc__map_get(&gs->node_by_name, info.name);
	reattach = n && n->info.epoch == info.epoch;
	if (!n) {
		n = tc__gs_node_add(gs, gs->nnodes + 1, &info);
		if (!n) {
			ret = -ENOMEM;
			goto out_free;
		}
	} else {
		/* The name is the node's identity: a newer registration (a
		 * restarted daemon, or one that reconnected) takes it over. */
		if (n->conn && n->conn != c)
			n->conn->node = NULL;
		n->info = info;
	}
	if (c->node && c->node != n)
		c->node->conn = NULL;
	n->conn = c;
	c->node = n;
	n->live = true;
	n->lease_until = tc__now_ms() + (uint64_t)gs->cfg->lease_ms;
	gs->ops->node_put(gs->be, n->id, &n->info);
	/* The list is the node's whole inventory: it replaces what we had. */
	tc__gs_rep_del_node(gs, n);
	gs->ops->replica_del_node(gs->be, n->id);
	for (uint32_t i = 0; i < nrep; i++) {
		ret = tc__gs_rep_set(gs, n, &reps[i]);
		if (ret < 0)
			goto out_free;
		gs->ops->replica_put(gs->be, n->id, &reps[i]);
	}
	gs->n_registers++;
	tc__log(TC_LOG_INFO,
		"node '%s' (id %llu, %s) registered from %s with %u "
		"replicas%s",
		n->info.name, (unsigned long long)n->id,
		n->info.peer_addr[0] ? n->info.peer_addr : "no peer server",
		c->addr, nrep, reattach ? " (same epoch: reattached)" : "");
	tc__buf_put_u64(out, n->id);
	tc__buf_put_u32(out, (uint32_t)gs->cfg->lease_ms);
	tc__buf_put_u32(out, (uint32_t)gs->cfg->heartbeat_ms);
	tc__buf_put_u8(out, reattach ? 1 : 0);
	ret = 0;
out_free:
	for (uint32_t i = 0; i < nrep; i++)
		tc__gsp_replica_release(&reps[i]);
	tc__free(reps);
	return ret;
}

static int need_node(struct gconn *c, char *err, size_t errlen)
{
	if (c->node)
		return 0;
	snprintf(err, errlen,
		 "this connection has no registered node (register first)");
	return TC_ENOTFOUND;
}

static int on_heartbeat(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			struct tc__buf *out, char *err, size_t errlen)
{
	uint32_t uploads;
	uint64_t txbps;
	int ret;

	if (tc__cur_read_u32(cur, &uploads) < 0 ||
	    tc__cur_read_u64(cur, &txbps) < 0) {
		snprintf(err, errlen, "heartbeat: truncated");
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0 ||
	    (ret = need_node(c, err, errlen)) < 0)
		return ret;
	if (!c->node->live)
		tc__log(TC_LOG_INFO,
			"node '%s' is back (heartbeat after its "
			"lease lapsed)",
			c->node->info.name);
	c->node->live = true;
	c->node->lease_until = tc__now_ms() + (uint64_t)gs->cfg->lease_ms;
	c->node->uploads = uploads;
	c->node->heartbeats++;
	gs->n_heartbeats++;
	return 0;
}

static int on_replica_add(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			  struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_replica r;
	struct tc__gsp_artifact a = { 0 };
	struct gart *ga;
	uint8_t has_art;
	int ret;

	ret = tc__gsp_get_replica(cur, &r, err, errlen);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u8(cur, &has_art) < 0 || has_art > 1) {
		snprintf(err, errlen, "artifact flag: truncated or not 0/1");
		ret = TC_EPROTO;
		goto out_rel;
	}
	if (has_art) {
		ret = tc__gsp_get_artifact(cur, &a, err, errlen);
		if (ret < 0)
			goto out_rel;
		if (strcmp(a.id, r.id) || a.size != r.size ||
		    a.nchunks != r.nchunks) {
			snprintf(err, errlen,
				 "artifact record '%s' does not match its "
				 "replica",
				 a.id);
			ret = TC_EINVAL;
			goto out_rel;
		}
	}
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0 ||
	    (ret = need_node(c, err, errlen)) < 0)
		goto out_rel;
	ga = tc__map_get(&gs->arts, r.id);
	if (ga && ga->size &&
	    (ga->size != r.size || ga->nchunks != r.nchunks)) {
		snprintf(err, errlen,
			 "artifact '%s' is %llu bytes in %u chunks, not %llu "
			 "in %u",
			 r.id, (unsigned long long)ga->size, ga->nchunks,
			 (unsigned long long)r.size, r.nchunks);
		ret = TC_EINVAL;
		goto out_rel;
	}
	if ((ret = tc__gs_be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		goto out_rel;
	}
	ret = tc__gs_rep_set(gs, c->node, &r);
	if (ret < 0)
		goto out_rel;
	gs->ops->replica_put(gs->be, c->node->id, &r);
	ga = tc__map_get(&gs->arts, r.id);
	if (has_art && ga && !ga->recorded) {
		snprintf(ga->policy, sizeof(ga->policy), "%s", a.policy);
		if (gs->ops->artifact_put(gs->be, &a) == 0)
			ga->recorded = true;
	}
	gs->n_writes++;
out_rel:
	tc__gsp_replica_release(&r);
	tc__gsp_artifact_release(&a);
	return ret;
}

static int on_replica_del(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			  struct tc__buf *out, char *err, size_t errlen)
{
	char id[TC_GSP_MAX_ID + 1];
	uint8_t tier;
	uint32_t device;
	int ret;

	if ((ret = tc__gsp_get_name(cur, "artifact id", id, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u8(cur, &tier) < 0 ||
	    tc__cur_read_u32(cur, &device) < 0 || tier > TC_GSP_MAX_TIER) {
		snprintf(err, errlen, "replica tier/device: truncated or bad");
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0 ||
	    (ret = need_node(c, err, errlen)) < 0)
		return ret;
	if ((ret = tc__gs_be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	if (tc__gs_rep_del(gs, c->node, id, tier, device))
		gs->ops->replica_del(gs->be, c->node->id, id, tier, device);
	gs->n_writes++;
	return 0;
}

static int on_deregister(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			 struct tc__buf *out, char *err, size_t errlen)
{
	int ret;

	if ((ret = tc__gsp_end(cur, err, errlen)) < 0 ||
	    (ret = need_node(c, err, errlen)) < 0)
		return ret;
	if ((ret = tc__gs_be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	tc__log(TC_LOG_INFO, "node '%s' left the cluster (shutdown)",
		c->node->info.name);
	tc__gs_rep_del_node(gs, c->node);
	gs->ops->replica_del_node(gs->be, c->node->id);
	c->node->live = false;
	c->node->conn = NULL;
	c->node = NULL;
	return 0;
}

static int on_artifact_get(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			   struct tc__buf *out, char *err, size_t errlen)
{
	char id[TC_GSP_MAX_ID + 1];
	struct tc__gsp_artifact a;
	int ret;

	if ((ret = tc__gsp_get_name(cur, "artifact id", id, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0 ||
	    (ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	ret = gs->ops->artifact_get(gs->be, id, &a);
	if (ret == TC_ENOTFOUND)
		snprintf(err, errlen, "no artifact record for '%s'", id);
	if (ret < 0)
		return ret;
	tc__gsp_put_artifact(out, &a);
	tc__gsp_artifact_release(&a);
	return 0;
}

static int on_key_set(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		      struct tc__buf *out, char *err, size_t errlen)
{
	char key[TC_GSP_MAX_KEY + 1], id[TC_GSP_MAX_ID + 1];
	char prev[TC_GSP_MAX_ID + 1];
	uint32_t flags;
	uint64_t expect, gen;
	struct gkey *k;
	struct timespec ts;
	int ret;

	if ((ret = tc__gsp_get_key(cur, key, err, errlen)) < 0 ||
	    (ret = tc__gsp_get_name(cur, "artifact id", id, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u32(cur, &flags) < 0 ||
	    tc__cur_read_u64(cur, &expect) < 0 ||
	    (flags & ~(TC_GSP_KF_EXPECT | TC_GSP_KF_PREV | TC_GSP_KF_AT)) ||
	    (flags & TC_GSP_KF_EXPECT && flags & TC_GSP_KF_PREV) ||
	    (flags & TC_GSP_KF_AT &&
	     flags & (TC_GSP_KF_EXPECT | TC_GSP_KF_PREV))) {
		snprintf(err, errlen,
			 "key flags: truncated, unknown, or AT, EXPECT and "
			 "PREV combined");
		return TC_EPROTO;
	}
	if ((flags & TC_GSP_KF_PREV) &&
	    (ret = tc__gsp_get_name(cur, "previous id", prev, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0)
		return ret;
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	k = tc__map_get(&gs->keys, key);
	if (flags & TC_GSP_KF_PREV) {
		if (k && strcmp(k->id, prev) && strcmp(k->id, id)) {
			snprintf(err, errlen,
				 "key '%s' names '%s' (generation %llu), not "
				 "'%s'",
				 key, k->id, (unsigned long long)k->gen, prev);
			return TC_ECONFLICT;
		}
		if (k && !strcmp(k->id, id)) {
			tc__buf_put_u64(out, k->gen); /* already there */
			return 0;
		}
	} else if (flags & TC_GSP_KF_EXPECT) {
		if ((k ? k->gen : 0) != expect) {
			snprintf(err, errlen,
				 "key '%s' is at generation %llu, not %llu",
				 key, (unsigned long long)(k ? k->gen : 0),
				 (unsigned long long)expect);
			return TC_ECONFLICT;
		}
	} else if (k && strcmp(k->id, id)) {
		snprintf(err, errlen,
			 "key '%s' names '%s' (generation %llu): moving it "
			 "needs compare-and-swap",
			 key, k->id, (unsigned long long)k->gen);
		return TC_ECONFLICT;
	}
	if (k && !strcmp(k->id, id) && !(flags & TC_GSP_KF_EXPECT)) {
		tc__buf_put_u64(out, k->gen); /* already there */
		return 0;
	}
	if ((ret = tc__gs_be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	if (!k) {
		k = tc__calloc(1, sizeof(*k));
		if (!k)
			return -ENOMEM;
		snprintf(k->name, sizeof(k->name), "%s", key);
		if (tc__map_put(&gs->keys, k->name, k) < 0) {
			tc__free(k);
			return -ENOMEM;
		}
	}
	gen = k->gen + 1;
	/* A key new here that a daemon made on its own keeps the daemon's
	 * generation (KF_AT): one number per version on both sides. */
	if (gen == 1 && (flags & TC_GSP_KF_AT) && expect > 1 &&
	    expect < (uint64_t)1 << 62)
		gen = expect;
	clock_gettime(CLOCK_REALTIME, &ts);
	ret = gs->ops->key_put(gs->be, key, id, gen,
			       (int64_t)ts.tv_sec * 1000 +
				       ts.tv_nsec / 1000000);
	if (ret < 0) {
		snprintf(err, errlen, "metadata store write failed");
		return ret;
	}
	snprintf(k->id, sizeof(k->id), "%s", id);
	k->gen = gen;
	gs->n_writes++;
	tc__buf_put_u64(out, gen);
	return 0;
}

static int on_key_get(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		      struct tc__buf *out, char *err, size_t errlen)
{
	char key[TC_GSP_MAX_KEY + 1];
	struct gkey *k;
	int ret;

	if ((ret = tc__gsp_get_key(cur, key, err, errlen)) < 0 ||
	    (ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	gs->n_key_get++;
	k = tc__map_get(&gs->keys, key);
	if (!k) {
		snprintf(err, errlen, "no key '%s' in the cluster", key);
		return TC_ENOTFOUND;
	}
	tc__buf_put_str(out, k->id);
	tc__buf_put_u64(out, k->gen);
	return 0;
}

/* KEYS_GET: every key's value in one reply, in the request's order;
 * keys the store does not have are answered "not found" in place. */
static int on_keys_get(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		       struct tc__buf *out, char *err, size_t errlen)
{
	char key[TC_GSP_MAX_KEY + 1];
	uint32_t n;
	int ret;

	if ((ret = tc__gsp_get_keys_count(cur, TC_GSP_MAX_KEYS_GET, &n, err,
					  errlen)) < 0)
		return ret;
	tc__buf_put_u32(out, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct gkey *k;

		if ((ret = tc__gsp_get_key(cur, key, err, errlen)) < 0)
			return ret;
		k = tc__map_get(&gs->keys, key);
		tc__gsp_put_key_entry(out, k ? k->id : NULL, k ? k->gen : 0);
	}
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	gs->n_keys_get++;
	return 0;
}

static int on_key_history(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			  struct tc__buf *out, char *err, size_t errlen)
{
	char key[TC_GSP_MAX_KEY + 1];
	struct tc__gs_history *h;
	uint32_t max;
	int ret, n;

	if ((ret = tc__gsp_get_key(cur, key, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u32(cur, &max) < 0) {
		snprintf(err, errlen, "history count: truncated");
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	if (max == 0 || max > TC_GSP_MAX_HISTORY)
		max = TC_GSP_MAX_HISTORY;
	h = tc__calloc(max, sizeof(*h));
	if (!h)
		return -ENOMEM;
	n = gs->ops->key_history(gs->be, key, h, (int)max);
	if (n < 0) {
		tc__free(h);
		return n;
	}
	tc__buf_put_u32(out, (uint32_t)n);
	for (int i = 0; i < n; i++) {
		tc__buf_put_u64(out, h[i].gen);
		tc__buf_put_str(out, h[i].id);
		tc__buf_put_u64(out, (uint64_t)h[i].time_ms);
	}
	tc__free(h);
	return 0;
}

static int put_sources(struct gs *gs, struct gconn *c, const char *id,
		       const char *req, uint32_t max, struct tc__buf *out)
{
	struct tc__gsp_source src[TC_GSP_MAX_SOURCES];
	struct gart *a = tc__map_get(&gs->arts, id);
	size_t n = 0;

	if (max == 0 || max > (uint32_t)gs->cfg->sources_max)
		max = (uint32_t)gs->cfg->sources_max;
	if (a)
		n = tc__gs_rank_sources(gs, a, requester(gs, c, req), max, src);
	else
		gs->n_lookups++;
	tc__buf_put_u32(out, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		tc__gsp_put_source(out, &src[i]);
	return 0;
}

static int get_query(struct tc__cur *cur, char *what, char *req, uint32_t *max,
		     bool key_ok, char *err, size_t errlen)
{
	int ret;

	ret = key_ok ? tc__gsp_get_key(cur, what, err, errlen) :
		       tc__gsp_get_name(cur, "artifact id", what, TC_GSP_MAX_ID,
					false, err, errlen);
	if (ret < 0)
		return ret;
	if ((ret = tc__gsp_get_name(cur, "requester", req, TC_GSP_MAX_NAME,
				    true, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u32(cur, max) < 0) {
		snprintf(err, errlen, "max sources: truncated");
		return TC_EPROTO;
	}
	return tc__gsp_end(cur, err, errlen);
}

static int on_sources(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		      struct tc__buf *out, char *err, size_t errlen)
{
	char id[TC_GSP_MAX_KEY + 1], req[TC_GSP_MAX_NAME + 1];
	uint32_t max;
	int ret = get_query(cur, id, req, &max, false, err, errlen);

	if (ret < 0)
		return ret;
	return put_sources(gs, c, id, req, max, out);
}

/* A key (or an artifact id) to the artifact id, its generation and its
 * ranked sources, in one round trip. */
static int on_resolve(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		      struct tc__buf *out, char *err, size_t errlen)
{
	char what[TC_GSP_MAX_KEY + 1], req[TC_GSP_MAX_NAME + 1];
	const char *id = what;
	uint64_t gen = 0;
	struct gkey *k;
	uint32_t max;
	int ret = get_query(cur, what, req, &max, true, err, errlen);

	if (ret < 0)
		return ret;
	k = tc__map_get(&gs->keys, what);
	if (k) {
		id = k->id;
		gen = k->gen;
	} else if (!tc__map_get(&gs->arts, what)) {
		snprintf(err, errlen, "no key or artifact '%s' in the cluster",
			 what);
		return TC_ENOTFOUND;
	}
	tc__buf_put_str(out, id);
	tc__buf_put_u64(out, gen);
	return put_sources(gs, c, id, req, max, out);
}

/* PEERS: where a replica of a new artifact may go (policy ha).  Every
 * live node with a peer address other than the requester, ranked like
 * sources (distance, then load, then at random); the requester itself is
 * never named, so an answer of none means "no other live node". */
struct pcand {
	struct gnode *n;
	uint64_t score;
};

static int pcand_cmp(const void *x, const void *y)
{
	const struct pcand *a = x, *b = y;

	return a->score < b->score ? -1 : a->score > b->score;
}

static int on_peers(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		    struct tc__buf *out, char *err, size_t errlen)
{
	char req[TC_GSP_MAX_NAME + 1];
	struct pcand *pc;
	struct gnode *me;
	uint64_t now = tc__now_ms();
	uint32_t max;
	size_t n = 0;
	int ret = tc__gsp_get_peers_req(cur, req, &max, err, errlen);

	if (ret < 0)
		return ret;
	if (max == 0 || max > (uint32_t)gs->cfg->sources_max)
		max = (uint32_t)gs->cfg->sources_max;
	me = requester(gs, c, req);
	pc = tc__calloc(gs->nnodes ? gs->nnodes : 1, sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	for (size_t i = 0; i < gs->nnodes; i++) {
		struct gnode *nd = gs->nodes[i];
		uint64_t load;

		if (!nd || nd == me || !nd->live || nd->lease_until < now ||
		    !nd->info.peer_addr[0] ||
		    (req[0] && !strcmp(nd->info.name, req)))
			continue;
		load = (uint64_t)nd->uploads + nd->handouts;
		if (load > 0xffff)
			load = 0xffff;
		pc[n].n = nd;
		pc[n].score = (uint64_t)tc__gs_distance(me, nd) << 40 |
			      load << 16 | (tc__gs_xorshift() & 0xffff);
		n++;
	}
	qsort(pc, n, sizeof(*pc), pcand_cmp);
	if (n > max)
		n = max;
	tc__buf_put_u32(out, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		struct tc__gsp_source s = { 0 };

		s.node_id = pc[i].n->id;
		snprintf(s.name, sizeof(s.name), "%s", pc[i].n->info.name);
		snprintf(s.peer_addr, sizeof(s.peer_addr), "%s",
			 pc[i].n->info.peer_addr);
		s.tier = TC_GSP_TIER_HOST;
		s.complete = 1;
		s.distance = (uint32_t)(pc[i].score >> 40);
		s.uploads = pc[i].n->uploads;
		tc__gsp_put_source(out, &s);
	}
	tc__free(pc);
	gs->n_lookups++;
	return 0;
}

/* ------------------------------------------------------------ status */

static json_t *status_json(struct gs *gs)
{
	json_t *j = json_object(), *nodes = json_array();
	uint64_t now = tc__now_ms(), nrep = 0, nlive = 0;
	struct tc__map_entry *e;
	size_t b;
	json_t **per =
		tc__calloc(gs->nnodes ? gs->nnodes : 1, sizeof(json_t *));

	for (size_t i = 0; i < gs->nnodes; i++) {
		struct gnode *n = gs->nodes[i];
		bool live;

		if (!n)
			continue;
		live = n->live && n->lease_until >= now;
		nlive += live;
		per[i] = json_object();
		json_array_append_new(
			nodes,
			json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:b, s:I, "
				  "s:I, s:i, s:I, s:o}",
				  "id", (json_int_t)n->id, "name", n->info.name,
				  "peer_addr", n->info.peer_addr, "zone",
				  n->info.zone, "rack", n->info.rack, "host",
				  n->info.host, "live", live, "lease_ms_left",
				  (json_int_t)(live ? n->lease_until - now : 0),
				  "epoch", (json_int_t)n->info.epoch, "uploads",
				  (int)n->uploads, "heartbeats",
				  (json_int_t)n->heartbeats, "replicas",
				  per[i]));
	}
	for (e = tc__map_next(&gs->arts, NULL, &b); e;
	     e = tc__map_next(&gs->arts, e, &b)) {
		struct gart *a = e->val;

		for (size_t i = 0; i < a->nreps; i++) {
			json_t *o = per[a->reps[i].node->id - 1];
			const char *t = tc__gsp_tier_name(a->reps[i].tier);
			json_t *v = json_object_get(o, t);

			json_object_set_new(
				o, t,
				json_integer(v ? json_integer_value(v) + 1 :
						 1));
			nrep++;
		}
	}
	tc__free(per);
	json_object_set_new(j, "listen", json_string(gs->bound));
	json_object_set_new(j, "tls", json_boolean(gs->tls != NULL));
	json_object_set_new(j, "pid", json_integer(getpid()));
	json_object_set_new(j, "backend", json_string(gs->ops->name));
	json_object_set_new(j, "db", json_string(gs->cfg->db));
	json_object_set_new(j, "uptime_ms",
			    json_integer((json_int_t)(now - gs->started_ms)));
	json_object_set_new(j, "lease_ms", json_integer(gs->cfg->lease_ms));
	json_object_set_new(j, "heartbeat_ms",
			    json_integer(gs->cfg->heartbeat_ms));
	json_object_set_new(j, "nodes_live", json_integer((json_int_t)nlive));
	json_object_set_new(j, "artifacts",
			    json_integer((json_int_t)gs->arts.count));
	json_object_set_new(j, "keys",
			    json_integer((json_int_t)gs->keys.count));
	json_object_set_new(j, "replicas", json_integer((json_int_t)nrep));
	json_object_set_new(j, "connections", json_integer(gs->nconns));
	json_object_set_new(j, "groups_open",
			    json_integer((json_int_t)gs->nopen));
	json_object_set_new(j, "groups",
			    json_integer((json_int_t)gs->groups.count));
	json_object_set_new(
		j, "counters",
		json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			  "s:I}",
			  "lookups", (json_int_t)gs->n_lookups, "commits",
			  (json_int_t)gs->n_commits, "writes",
			  (json_int_t)gs->n_writes, "registers",
			  (json_int_t)gs->n_registers, "heartbeats",
			  (json_int_t)gs->n_heartbeats, "lease_expiries",
			  (json_int_t)gs->n_expired, "auth_failures",
			  (json_int_t)gs->n_auth_fail, "group_commits",
			  (json_int_t)gs->n_group_commits, "group_aborts",
			  (json_int_t)gs->n_group_aborts, "key_gets",
			  (json_int_t)gs->n_key_get, "keys_gets",
			  (json_int_t)gs->n_keys_get));
	json_object_set_new(j, "nodes", nodes);
	return j;
}

static int on_status(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		     struct tc__buf *out, char *err, size_t errlen)
{
	json_t *j;
	char *s;
	int ret;

	if ((ret = tc__gsp_end(cur, err, errlen)) < 0)
		return ret;
	j = status_json(gs);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		return -ENOMEM;
	tc__buf_put_str(out, s);
	free(s);
	return 0;
}

/* ------------------------------------------------------------ dispatch */

gs_handler *const tc__gs_handlers[TC_GSP__MAX] = {
	[TC_GSP_REGISTER] = on_register,
	[TC_GSP_HEARTBEAT] = on_heartbeat,
	[TC_GSP_REPLICA_ADD] = on_replica_add,
	[TC_GSP_REPLICA_DEL] = on_replica_del,
	[TC_GSP_ARTIFACT_GET] = on_artifact_get,
	[TC_GSP_KEY_SET] = on_key_set,
	[TC_GSP_KEY_GET] = on_key_get,
	[TC_GSP_KEY_HISTORY] = on_key_history,
	[TC_GSP_SOURCES] = on_sources,
	[TC_GSP_RESOLVE] = on_resolve,
	[TC_GSP_STATUS] = on_status,
	[TC_GSP_DEREGISTER] = on_deregister,
	[TC_GSP_GROUP_CREATE] = tc__gs_on_group_create,
	[TC_GSP_GROUP_JOIN] = tc__gs_on_group_join,
	[TC_GSP_GROUP_PREPARE] = tc__gs_on_group_prepare,
	[TC_GSP_GROUP_ABORT] = tc__gs_on_group_abort,
	[TC_GSP_GROUP_GET] = tc__gs_on_group_get,
	[TC_GSP_PEERS] = on_peers,
	[TC_GSP_KEYS_GET] = on_keys_get,
};
