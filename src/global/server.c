/*
 * server.c - the global store's event loop, state and routing (gs.h).
 *
 * One thread.  A connection first runs the cluster handshake (net/auth.h),
 * then sends frames (proto/gsp.h).  Requests of one loop turn run against
 * the in-memory state and write through the backend inside one
 * transaction; before the loop sleeps it commits, and only then are the
 * turn's replies sent (group commit: nothing is acknowledged that a kill -9
 * could lose).  Heartbeats touch memory only.
 *
 * Routing state is in memory: nodes (by id and name), artifacts (by id)
 * with their replicas, keys.  A node whose lease lapses stays known but
 * leaves routing; re-registering (with its full replica list) brings it
 * back.  After a restart every node is out of routing until it registers.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/map.h"
#include "gs.h"
#include "net/auth.h"
#include "net/tls.h"
#include "net/ev.h"
#include "net/tcp.h"
#include "proto/gsp.h"
#include "tcast/errors.h"

#define FRAMES_PER_TURN 64		    /* frames of one conn per turn */
#define OUT_PAUSE	((size_t)16 << 20)  /* stop reading past this */
#define OUT_MAX		((size_t)256 << 20) /* drop the client past this */
#define TICK_MS		250
#define GROUPS_OPEN_MAX 4096  /* open groups at once */
#define GROUPS_MAX	65536 /* groups kept, decided included */
#define GROUP_KEEP_MS	((uint64_t)3600 * 1000) /* a decided group's record */
#define GROUP_SLOTS_MAX ((size_t)1 << 20)	/* ranks over all kept groups */

struct gnode;

struct grep {
	struct gnode *node;
	uint8_t tier;
	uint32_t device;
	uint64_t size;
	uint32_t nchunks;
	uint8_t *have; /* owned; NULL = complete */
};

struct gart {
	char id[TC_GSP_MAX_ID + 1];
	uint64_t size;
	uint32_t nchunks;
	char policy[TC_GSP_MAX_POLICY + 1];
	bool recorded; /* the backend has its record */
	struct grep *reps;
	size_t nreps, cap;
};

struct gconn;

struct gnode {
	uint64_t id;
	struct tc__gsp_node info;
	bool live;	      /* registered since start and lease valid */
	uint64_t lease_until; /* tc__now_ms() */
	uint32_t uploads;     /* last heartbeat */
	uint32_t handouts;    /* times named first lately (decays) */
	uint64_t heartbeats;
	struct gconn *conn; /* the connection it registered on */
	size_t nreps;
};

struct gkey {
	char name[TC_GSP_MAX_KEY + 1];
	char id[TC_GSP_MAX_ID + 1];
	uint64_t gen;
};

/* One rank of a group.  Joined once it sent GROUP_JOIN; its lease then
 * runs until lease_until unless renewed (by joining again or preparing);
 * `node` (NULL: tied to none) is the node whose heartbeat lease it also
 * depends on, as it was at `node_epoch`. */
struct gmember {
	bool joined, prepared;
	struct gnode *node;
	uint64_t node_epoch;
	uint32_t lease_ms;
	uint64_t lease_until; /* tc__now_ms() */
	char staged[TC_GSP_MAX_ID + 1];
};

/*
 * A group of ranks that commit or abort together.  rec holds what the
 * wire carries (members aside); m[] has one slot per expected rank.
 * Invariant: rec.state moves only open -> commit|abort, in group_decide(),
 * after the database's compare-and-swap agreed; open groups are on the
 * gs->open list, decided ones are not.
 */
struct ggroup {
	struct tc__gsp_group rec;
	uint64_t deadline;     /* tc__now_ms() */
	int64_t deadline_unix; /* the same, wall clock (persisted) */
	uint64_t grace_until; /* after a restart: nodes get a lease to return */
	uint64_t decided_at;  /* tc__now_ms(), for pruning */
	uint32_t njoined;
	struct gmember *m;
	struct ggroup *open_next, *open_prev;
};

struct gconn {
	struct gs *gs;
	int fd;
	char addr[TC_TCP_ADDRSTR];
	bool authed, closing, in_turn;
	bool last_word; /* closing after a protocol error: try to send why */
	struct tc__auth auth;
	struct tc__tls *tls; /* NULL: plain TCP */
	bool tls_done;	     /* the TLS handshake is over */
	uint8_t *in;
	size_t in_cap, in_off, in_len;
	struct tc__buf out;
	size_t out_off;
	struct gnode *node;
	uint64_t last_ms;
	struct gconn *next, *prev; /* all connections */
	struct gconn *turn_next;   /* replied to this turn */
	struct gconn *reap_next;   /* closing: freed after the turn */
	struct gconn *again_next;  /* frames left for the next turn */
	/* a GROUP_GET waiting for a decision (at most one per connection) */
	struct ggroup *wait_g;
	uint32_t wait_req;
	uint32_t cur_req; /* req_id of the frame being handled */
	uint64_t wait_until;
};

struct gs {
	const struct tc__gs_config *cfg;
	const struct tc__gs_backend_ops *ops;
	struct tc__gs_backend *be;
	struct tc__auth_secret sec;
	struct tc__tls_ctx *tls; /* NULL: TLS off */
	struct tc__ev *ev;
	int lfd, sigfd, setsize;
	char bound[TC_TCP_ADDRSTR];
	struct gnode **nodes; /* index id - 1 */
	size_t nnodes;
	struct tc__map node_by_name, arts, keys, groups;
	struct ggroup *open; /* undecided groups */
	size_t nopen;
	size_t rank_slots; /* sum of ranks over kept groups (memory bound) */
	struct gconn *conns, *turn, *reap;
	int nconns;
	bool txn, txn_failed;
	uint64_t started_ms;
	/* figures */
	uint64_t n_lookups, n_commits, n_writes, n_registers, n_expired,
		n_auth_fail, n_proto_err, n_heartbeats, n_group_commits,
		n_group_aborts, n_key_get, /* KEY_GET requests */
		n_keys_get; /* KEYS_GET requests (up to 1024 keys each) */
	uint64_t nkeys_hist;
	struct tc__ratelimit rl_auth, rl_conns, rl_proto;
};

/* ------------------------------------------------------------ helpers */

static int be_write(struct gs *gs)
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

static struct gnode *node_get(struct gs *gs, uint64_t id)
{
	return id >= 1 && id <= gs->nnodes ? gs->nodes[id - 1] : NULL;
}

static struct gnode *node_add(struct gs *gs, uint64_t id,
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

static struct gart *art_get_or_add(struct gs *gs, const char *id, uint64_t size,
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
static int rep_set(struct gs *gs, struct gnode *n,
		   const struct tc__gsp_replica *r)
{
	struct gart *a = art_get_or_add(gs, r->id, r->size, r->nchunks);
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

static bool rep_del(struct gs *gs, struct gnode *n, const char *id, int tier,
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
static void rep_del_node(struct gs *gs, struct gnode *n)
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
static uint32_t distance(const struct gnode *me, const struct gnode *n)
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

static uint32_t xorshift(void)
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
static size_t rank_sources(struct gs *gs, struct gart *a, struct gnode *me,
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
		d = r->tier == TC_GSP_TIER_SHARED ? 5 : distance(me, r->node);
		load = (uint64_t)r->node->uploads + r->node->handouts;
		if (load > 0xffff)
			load = 0xffff;
		c[n].r = r;
		c[n].score = d << 40 | (uint64_t)r->tier << 36 |
			     (uint64_t)(r->have ? 1 : 0) << 32 | load << 16 |
			     (xorshift() & 0xffff);
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

/* ------------------------------------------------------------ replies */

static void reply_err(struct gconn *c, const struct tc__gsp_hdr *h, int code,
		      const char *msg)
{
	size_t off =
		tc__gsp_reply_begin(&c->out, h->type, h->req_id, code, msg);

	tc__gsp_finish(&c->out, off);
}

static void turn_add(struct gconn *c)
{
	if (c->in_turn)
		return;
	c->in_turn = true;
	c->turn_next = c->gs->turn;
	c->gs->turn = c;
}

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
	ret = be_write(gs);
	if (ret < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		goto out_free;
	}
	n = tc__map_get(&gs->node_by_name, info.name);
	reattach = n && n->info.epoch == info.epoch;
	if (!n) {
		n = node_add(gs, gs->nnodes + 1, &info);
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
	rep_del_node(gs, n);
	gs->ops->replica_del_node(gs->be, n->id);
	for (uint32_t i = 0; i < nrep; i++) {
		ret = rep_set(gs, n, &reps[i]);
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
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		goto out_rel;
	}
	ret = rep_set(gs, c->node, &r);
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
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	if (rep_del(gs, c->node, id, tier, device))
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
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	tc__log(TC_LOG_INFO, "node '%s' left the cluster (shutdown)",
		c->node->info.name);
	rep_del_node(gs, c->node);
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
	if ((ret = be_write(gs)) < 0) {
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
		n = rank_sources(gs, a, requester(gs, c, req), max, src);
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
		pc[n].score = (uint64_t)distance(me, nd) << 40 | load << 16 |
			      (xorshift() & 0xffff);
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

/* ------------------------------------------------------------ groups */

/* A handler's return value: the reply is sent later (a GROUP_GET that
 * waits for its group's decision). */
#define DEFERRED 1

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool node_up(const struct gnode *n, uint64_t now)
{
	return n->live && n->lease_until >= now;
}

static void open_link(struct gs *gs, struct ggroup *g)
{
	g->open_prev = NULL;
	g->open_next = gs->open;
	if (gs->open)
		gs->open->open_prev = g;
	gs->open = g;
	gs->nopen++;
}

static void open_unlink(struct gs *gs, struct ggroup *g)
{
	if (g->open_prev)
		g->open_prev->open_next = g->open_next;
	else
		gs->open = g->open_next;
	if (g->open_next)
		g->open_next->open_prev = g->open_prev;
	g->open_next = g->open_prev = NULL;
	gs->nopen--;
}

static struct ggroup *group_new(const char *name, uint32_t ranks,
				uint32_t timeout_ms)
{
	struct ggroup *g = tc__calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->m = tc__calloc(ranks, sizeof(*g->m));
	if (!g->m) {
		tc__free(g);
		return NULL;
	}
	snprintf(g->rec.name, sizeof(g->rec.name), "%s", name);
	g->rec.ranks = ranks;
	g->rec.timeout_ms = timeout_ms;
	g->rec.by_rank = -1;
	return g;
}

static void group_free(struct ggroup *g)
{
	if (!g)
		return;
	tc__free(g->m);
	tc__free(g);
}

/* The group's record as GROUP_* replies carry it. */
static void put_group(struct gs *gs, const struct ggroup *g,
		      struct tc__buf *out)
{
	struct tc__gsp_group rec = g->rec;
	uint64_t now = tc__now_ms();
	uint32_t k = 0;

	rec.members =
		tc__calloc(g->njoined ? g->njoined : 1, sizeof(*rec.members));
	if (!rec.members) {
		out->oom = true; /* the connection is dropped, not lied to */
		return;
	}
	for (uint32_t r = 0; r < g->rec.ranks && k < g->njoined; r++) {
		const struct gmember *m = &g->m[r];
		struct tc__gsp_member *o = &rec.members[k];

		if (!m->joined)
			continue;
		o->rank = r;
		snprintf(o->node, sizeof(o->node), "%s",
			 m->node ? m->node->info.name : "");
		o->lease_ms = m->lease_ms;
		o->lease_left_ms = m->lease_until > now ?
					   (uint32_t)(m->lease_until - now) :
					   0;
		o->prepared = m->prepared;
		snprintf(o->id, sizeof(o->id), "%s", m->staged);
		k++;
	}
	rec.nmembers = k;
	rec.deadline_left_ms = rec.state == TC_GSP_GSTATE_OPEN &&
					       g->deadline > now ?
				       (uint32_t)(g->deadline - now) :
				       0;
	tc__gsp_put_group(out, &rec);
	tc__free(rec.members);
}

static void reply_group(struct gconn *c, int type, uint32_t req_id,
			const struct ggroup *g)
{
	size_t off = tc__gsp_reply_begin(&c->out, type, req_id, 0, NULL);

	put_group(c->gs, g, &c->out);
	tc__gsp_finish(&c->out, off);
	turn_add(c);
}

/*
 * Decide group g: `state` (commit or abort) with its reason, as one
 * compare-and-swap in the database transaction of this turn (the reply,
 * and every waiter's, is sent only after it commits).  Returns 0, or
 * TC_ECONFLICT when g was decided already, or a backend error.
 */
__attribute__((format(printf, 6, 7))) static int
group_decide(struct gs *gs, struct ggroup *g, int state, int32_t by_rank,
	     const char *by_node, const char *fmt, ...)
{
	struct tc__gsp_group rec;
	va_list ap;
	int ret;

	if (g->rec.state != TC_GSP_GSTATE_OPEN)
		return TC_ECONFLICT;
	if ((ret = be_write(gs)) < 0)
		return ret;
	rec = g->rec;
	rec.state = (uint8_t)state;
	rec.decided_ms = (uint64_t)wall_ms();
	rec.by_rank = by_rank;
	snprintf(rec.by_node, sizeof(rec.by_node), "%s",
		 by_node ? by_node : "");
	va_start(ap, fmt);
	vsnprintf(rec.reason, sizeof(rec.reason), fmt, ap);
	va_end(ap);
	ret = gs->ops->group_decide(gs->be, &rec);
	if (ret < 0) {
		tc__log(TC_LOG_ERROR,
			"group '%s': the database refused the decision %s: %s",
			g->rec.name, tc__gsp_group_state_name(state),
			tc_strerror(ret));
		return ret;
	}
	g->rec = rec;
	g->decided_at = tc__now_ms();
	open_unlink(gs, g);
	if (state == TC_GSP_GSTATE_COMMIT)
		gs->n_group_commits++;
	else
		gs->n_group_aborts++;
	gs->n_writes++;
	tc__log(state == TC_GSP_GSTATE_COMMIT ? TC_LOG_INFO : TC_LOG_WARN,
		"group '%s': %s (%s)", g->rec.name,
		tc__gsp_group_state_name(state), g->rec.reason);
	/* Everyone waiting hears it in this turn, after the commit. */
	for (struct gconn *c = gs->conns; c; c = c->next)
		if (c->wait_g == g && !c->closing) {
			c->wait_g = NULL;
			reply_group(c, TC_GSP_GROUP_GET, c->wait_req, g);
		}
	return 0;
}

/* Rank r's membership, renewed: every message from a rank counts. */
static void member_renew(struct gmember *m)
{
	m->lease_until = tc__now_ms() + m->lease_ms;
}

/* The first reason group g cannot commit any more, or none: its
 * deadline, a member's node out of the cluster or restarted, a member's
 * lease not renewed.  Aborts it when there is one. */
static void group_check(struct gs *gs, struct ggroup *g, uint64_t now)
{
	if (now >= g->deadline) {
		char missing[256];
		size_t off = 0;
		int32_t first = -1;
		uint32_t n = 0;

		missing[0] = '\0';
		for (uint32_t r = 0; r < g->rec.ranks; r++) {
			if (g->m[r].prepared)
				continue;
			if (first < 0)
				first = (int32_t)r;
			if (n++ < 16 && off < sizeof(missing))
				off += (size_t)snprintf(missing + off,
							sizeof(missing) - off,
							"%s%u",
							n > 1 ? "," : "", r);
		}
		group_decide(gs, g, TC_GSP_GSTATE_ABORT, first,
			     first >= 0 && g->m[first].node ?
				     g->m[first].node->info.name :
				     "",
			     "timed out after %u ms: %u of %u ranks not "
			     "prepared (%s%s)",
			     g->rec.timeout_ms, n, g->rec.ranks, missing,
			     n > 16 ? ",..." : "");
		return;
	}
	for (uint32_t r = 0; r < g->rec.ranks; r++) {
		struct gmember *m = &g->m[r];
		struct gnode *n = m->node;

		if (!m->joined)
			continue;
		if (n && now >= g->grace_until && !node_up(n, now)) {
			if (n->lease_until < now)
				group_decide(gs, g, TC_GSP_GSTATE_ABORT,
					     (int32_t)r, n->info.name,
					     "node '%s' lease expired (no "
					     "heartbeat for %d ms): rank %u "
					     "on it cannot switch",
					     n->info.name, gs->cfg->lease_ms,
					     r);
			else
				group_decide(gs, g, TC_GSP_GSTATE_ABORT,
					     (int32_t)r, n->info.name,
					     "node '%s' left the cluster: "
					     "rank %u on it cannot switch",
					     n->info.name, r);
			return;
		}
		if (n && n->info.epoch != m->node_epoch) {
			group_decide(gs, g, TC_GSP_GSTATE_ABORT, (int32_t)r,
				     n->info.name,
				     "node '%s' restarted (new epoch) "
				     "after rank %u joined",
				     n->info.name, r);
			return;
		}
		if (now > m->lease_until) {
			group_decide(gs, g, TC_GSP_GSTATE_ABORT, (int32_t)r,
				     n ? n->info.name : "",
				     "rank %u%s%s%s: lease not renewed for "
				     "%u ms (the rank's process is gone or "
				     "stuck)",
				     r, n ? " on node '" : "",
				     n ? n->info.name : "", n ? "'" : "",
				     m->lease_ms);
			return;
		}
	}
}

static struct ggroup *group_find(struct gs *gs, const char *name, char *err,
				 size_t errlen)
{
	struct ggroup *g = tc__map_get(&gs->groups, name);

	if (!g)
		snprintf(err, errlen, "no group '%s' (create it first)", name);
	return g;
}

static int rank_check(const struct ggroup *g, uint32_t rank, char *err,
		      size_t errlen)
{
	if (rank < g->rec.ranks)
		return 0;
	snprintf(err, errlen, "rank %u of group '%s', which has %u ranks", rank,
		 g->rec.name, g->rec.ranks);
	return TC_EINVAL;
}

static int on_group_create(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			   struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct ggroup *g;
	int ret;

	ret = tc__gsp_get_group_req(cur, TC_GSP_GROUP_CREATE, &q, err, errlen);
	if (ret < 0)
		return ret;
	g = tc__map_get(&gs->groups, q.group);
	if (g) {
		/* Every rank may create it: the same shape is the same group.
		 */
		if (g->rec.ranks != q.ranks) {
			snprintf(err, errlen,
				 "group '%s' exists with %u ranks, not %u",
				 q.group, g->rec.ranks, q.ranks);
			return TC_ECONFLICT;
		}
		put_group(gs, g, out);
		return 0;
	}
	/* Each rank is a slot of memory: bound them, so that a client with
	 * the secret cannot make the store allocate without limit. */
	if (gs->nopen >= GROUPS_OPEN_MAX || gs->groups.count >= GROUPS_MAX ||
	    gs->rank_slots + q.ranks > GROUP_SLOTS_MAX) {
		snprintf(err, errlen,
			 "%zu groups open and %zu kept with %zu ranks (at most "
			 "%d, %d and %zu; decided groups are forgotten an hour "
			 "after their decision)",
			 gs->nopen, gs->groups.count, gs->rank_slots,
			 GROUPS_OPEN_MAX, GROUPS_MAX, GROUP_SLOTS_MAX);
		return TC_ELIMIT;
	}
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	g = group_new(q.group, q.ranks, q.timeout_ms);
	if (!g)
		return -ENOMEM;
	g->rec.created_ms = (uint64_t)wall_ms();
	g->deadline = tc__now_ms() + q.timeout_ms;
	g->deadline_unix = (int64_t)g->rec.created_ms + q.timeout_ms;
	ret = gs->ops->group_put(gs->be, &g->rec, g->deadline_unix);
	if (ret == 0 && tc__map_put(&gs->groups, g->rec.name, g) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		group_free(g);
		snprintf(err, errlen, "metadata store write failed");
		return ret;
	}
	open_link(gs, g);
	gs->rank_slots += g->rec.ranks;
	gs->n_writes++;
	tc__log(TC_LOG_INFO, "group '%s' created: %u ranks, %u ms", q.group,
		q.ranks, q.timeout_ms);
	put_group(gs, g, out);
	return 0;
}

static void member_row(const struct ggroup *g, uint32_t r,
		       struct tc__gsp_member *row)
{
	const struct gmember *m = &g->m[r];

	memset(row, 0, sizeof(*row));
	row->rank = r;
	snprintf(row->node, sizeof(row->node), "%s",
		 m->node ? m->node->info.name : "");
	row->lease_ms = m->lease_ms;
	row->prepared = m->prepared;
	snprintf(row->id, sizeof(row->id), "%s", m->staged);
}

static int on_group_join(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			 struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct tc__gsp_member row;
	struct gnode *n = NULL;
	struct gmember *m;
	struct ggroup *g;
	int ret;

	ret = tc__gsp_get_group_req(cur, TC_GSP_GROUP_JOIN, &q, err, errlen);
	if (ret < 0)
		return ret;
	if (!(g = group_find(gs, q.group, err, errlen)))
		return TC_ENOTFOUND;
	if ((ret = rank_check(g, q.rank, err, errlen)) < 0)
		return ret;
	m = &g->m[q.rank];
	if (g->rec.state != TC_GSP_GSTATE_OPEN) {
		put_group(gs, g, out); /* decided: nothing to renew */
		return 0;
	}
	if (q.node[0]) {
		n = tc__map_get(&gs->node_by_name, q.node);
		/* A renewal needs the node known, not live: after the store's
		 * restart it is not live until it registers again, and the
		 * sweep gives it a lease for that.  A new join needs it live.
		 */
		if (!n || (!node_up(n, tc__now_ms()) &&
			   !(m->joined && m->node == n))) {
			snprintf(err, errlen,
				 "node '%s' is not live in the cluster (never "
				 "registered, or its lease lapsed): rank %u "
				 "cannot join group '%s' on it",
				 q.node, q.rank, q.group);
			return TC_ENOTFOUND;
		}
	} else {
		n = c->node; /* a daemon's own connection: its node */
	}
	if (m->joined && m->node == n && m->lease_ms == q.lease_ms) {
		/* a renewal: memory only, like a heartbeat */
		member_renew(m);
		put_group(gs, g, out);
		return 0;
	}
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	if (!m->joined)
		g->njoined++;
	m->joined = true;
	m->node = n;
	m->node_epoch = n ? n->info.epoch : 0;
	m->lease_ms = q.lease_ms;
	member_renew(m);
	member_row(g, q.rank, &row);
	gs->ops->member_put(gs->be, g->rec.name, &row);
	gs->n_writes++;
	put_group(gs, g, out);
	return 0;
}

static int on_group_prepare(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			    struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct tc__gsp_member row;
	struct gmember *m;
	struct ggroup *g;
	uint32_t np = 0;
	int ret;

	ret = tc__gsp_get_group_req(cur, TC_GSP_GROUP_PREPARE, &q, err, errlen);
	if (ret < 0)
		return ret;
	if (!(g = group_find(gs, q.group, err, errlen)))
		return TC_ENOTFOUND;
	if ((ret = rank_check(g, q.rank, err, errlen)) < 0)
		return ret;
	m = &g->m[q.rank];
	if (m->prepared) {
		if (strcmp(m->staged, q.id)) {
			snprintf(err, errlen,
				 "rank %u of group '%s' prepared '%s' "
				 "already, not '%s'",
				 q.rank, q.group, m->staged, q.id);
			return TC_ECONFLICT;
		}
		put_group(gs, g, out); /* the same report again */
		return 0;
	}
	if (g->rec.state == TC_GSP_GSTATE_ABORT) {
		snprintf(err, errlen, "group '%s' was aborted: %s", q.group,
			 g->rec.reason);
		return TC_ECONFLICT;
	}
	if (!m->joined) {
		snprintf(err, errlen,
			 "rank %u has not joined group '%s' (join with its "
			 "node and lease first)",
			 q.rank, q.group);
		return TC_ENOTFOUND;
	}
	if ((ret = be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	m->prepared = true;
	snprintf(m->staged, sizeof(m->staged), "%s", q.id);
	member_renew(m);
	member_row(g, q.rank, &row);
	gs->ops->member_put(gs->be, g->rec.name, &row);
	gs->n_writes++;
	for (uint32_t r = 0; r < g->rec.ranks; r++)
		np += g->m[r].prepared;
	g->rec.nprepared = np;
	if (np == g->rec.ranks) {
		ret = group_decide(gs, g, TC_GSP_GSTATE_COMMIT, -1, "",
				   "all %u ranks prepared", np);
		if (ret < 0 && ret != TC_ECONFLICT) {
			snprintf(err, errlen, "metadata store write failed");
			return ret;
		}
	}
	put_group(gs, g, out);
	return 0;
}

static int on_group_abort(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			  struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct ggroup *g;
	int ret;

	ret = tc__gsp_get_group_req(cur, TC_GSP_GROUP_ABORT, &q, err, errlen);
	if (ret < 0)
		return ret;
	if (!(g = group_find(gs, q.group, err, errlen)))
		return TC_ENOTFOUND;
	if (q.rank != TC_GSP_NO_RANK &&
	    (ret = rank_check(g, q.rank, err, errlen)) < 0)
		return ret;
	/* Whoever decided first decided: the reply says which way. */
	if (g->rec.state == TC_GSP_GSTATE_OPEN) {
		const struct gnode *n =
			q.rank != TC_GSP_NO_RANK ? g->m[q.rank].node : NULL;

		if (q.rank == TC_GSP_NO_RANK)
			ret = group_decide(
				gs, g, TC_GSP_GSTATE_ABORT, -1, "",
				"aborted by %s: %s",
				c->node ? c->node->info.name : c->addr,
				q.reason[0] ? q.reason : "no reason given");
		else
			ret = group_decide(
				gs, g, TC_GSP_GSTATE_ABORT, (int32_t)q.rank,
				n ? n->info.name : "", "rank %u aborted: %s",
				q.rank,
				q.reason[0] ? q.reason : "no reason given");
		if (ret < 0 && ret != TC_ECONFLICT) {
			snprintf(err, errlen, "metadata store write failed");
			return ret;
		}
	}
	put_group(gs, g, out);
	return 0;
}

static int on_group_get(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct ggroup *g;
	int ret;

	ret = tc__gsp_get_group_req(cur, TC_GSP_GROUP_GET, &q, err, errlen);
	if (ret < 0)
		return ret;
	if (!(g = group_find(gs, q.group, err, errlen)))
		return TC_ENOTFOUND;
	if (g->rec.state != TC_GSP_GSTATE_OPEN || q.wait_ms == 0) {
		put_group(gs, g, out);
		return 0;
	}
	/* One wait per connection: an earlier one is answered now. */
	if (c->wait_g)
		reply_group(c, TC_GSP_GROUP_GET, c->wait_req, c->wait_g);
	c->wait_g = g;
	c->wait_req = c->cur_req;
	c->wait_until = tc__now_ms() + q.wait_ms;
	return DEFERRED;
}

/* Answer the waits that ran out; abort the groups that cannot commit;
 * forget decided groups after GROUP_KEEP_MS. */
static void groups_tick(struct gs *gs, uint64_t now)
{
	static uint64_t last_prune;
	struct ggroup *g, *next;

	for (g = gs->open; g; g = next) {
		next = g->open_next; /* a decision unlinks g */
		group_check(gs, g, now);
	}
	for (struct gconn *c = gs->conns; c; c = c->next)
		if (c->wait_g && !c->closing && now >= c->wait_until) {
			g = c->wait_g;
			c->wait_g = NULL;
			reply_group(c, TC_GSP_GROUP_GET, c->wait_req, g);
		}
	if (now - last_prune >= 10000) {
		struct tc__map_entry *e;
		size_t b, n = 0;
		struct ggroup *drop[64];

		last_prune = now;
		for (e = tc__map_next(&gs->groups, NULL, &b); e && n < 64;
		     e = tc__map_next(&gs->groups, e, &b)) {
			g = e->val;
			if (g->rec.state != TC_GSP_GSTATE_OPEN &&
			    now - g->decided_at > GROUP_KEEP_MS)
				drop[n++] = g;
		}
		if (n && be_write(gs) == 0)
			for (size_t i = 0; i < n; i++) {
				gs->ops->group_del(gs->be, drop[i]->rec.name);
				tc__map_del(&gs->groups, drop[i]->rec.name);
				gs->rank_slots -= drop[i]->rec.ranks;
				group_free(drop[i]);
			}
	}
}

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

typedef int handler(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		    struct tc__buf *out, char *err, size_t errlen);

static handler *const handlers[TC_GSP__MAX] = {
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
	[TC_GSP_GROUP_CREATE] = on_group_create,
	[TC_GSP_GROUP_JOIN] = on_group_join,
	[TC_GSP_GROUP_PREPARE] = on_group_prepare,
	[TC_GSP_GROUP_ABORT] = on_group_abort,
	[TC_GSP_GROUP_GET] = on_group_get,
	[TC_GSP_PEERS] = on_peers,
	[TC_GSP_KEYS_GET] = on_keys_get,
};

/* ------------------------------------------------------------ connections */

static void conn_close(struct gconn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	c->reap_next = c->gs->reap;
	c->gs->reap = c;
	if (why)
		tc__log(TC_LOG_INFO, "connection %s%s%s closed: %s", c->addr,
			c->node ? " of node " : "",
			c->node ? c->node->info.name : "", why);
	tc__ev_del(c->gs->ev, c->fd);
}

static void conn_free(struct gconn *c)
{
	struct gs *gs = c->gs;

	if (c->node && c->node->conn == c)
		c->node->conn = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		gs->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	tc__tls_free(c->tls);
	close(c->fd);
	tc__auth_wipe(&c->auth);
	tc__free(c->in);
	tc__buf_release(&c->out);
	tc__free(c);
	gs->nconns--;
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask);

static void conn_watch(struct gconn *c)
{
	int mask = 0;

	if (c->closing)
		return;
	if (!c->authed) {
		return; /* on_conn_io keeps the handshake's own mask */
	} else {
		if (c->out.len - c->out_off < OUT_PAUSE)
			mask |= TC_EV_READ;
		if (c->out.len > c->out_off)
			mask |= TC_EV_WRITE;
	}
	if (tc__ev_mask(c->gs->ev, c->fd) != mask)
		tc__ev_add(c->gs->ev, c->fd, mask, on_conn_io, c);
}

/* Run the complete frames in c->in (up to FRAMES_PER_TURN). */
static void conn_frames(struct gconn *c)
{
	struct gs *gs = c->gs;
	char err[1024];

	for (int k = 0; k < FRAMES_PER_TURN && !c->closing; k++) {
		bool old; /* failpoint gs.old_store */
		struct tc__gsp_hdr h;
		struct tc__cur cur;
		size_t off, before;
		int ret;

		if (c->in_len - c->in_off < TC_GSP_HDR)
			break;
		ret = tc__gsp_hdr_decode(c->in + c->in_off, &h, err,
					 sizeof(err));
		old = false;
		if (ret == 0 && h.type == TC_GSP_KEYS_GET &&
		    tc__failpoint("gs.old_store", "KEYS_GET")) {
			/* Tests: answer as a store older than KEYS_GET, which
			 * does not know the type, closes, and says nothing. */
			snprintf(err, sizeof(err), "unknown message type %u",
				 h.type);
			ret = TC_EPROTO;
			old = true;
		}
		if (ret == 0 && (h.flags & TC_GSP_REPLY)) {
			snprintf(err, sizeof(err),
				 "a reply frame from a "
				 "client");
			ret = TC_EPROTO;
		}
		if (ret < 0) {
			gs->n_proto_err++;
			tc__log_rl(&gs->rl_proto, TC_LOG_WARN,
				   "protocol error from %s: %s", c->addr, err);
			if (h.type > 0 && h.type < TC_GSP__MAX && !old)
				reply_err(c, &h, ret, err);
			turn_add(c);
			conn_close(c, NULL);
			c->last_word = true;
			break;
		}
		if (c->in_len - c->in_off < TC_GSP_HDR + (size_t)h.body_len)
			break;
		tc__cur_init(&cur, c->in + c->in_off + TC_GSP_HDR, h.body_len);
		c->in_off += TC_GSP_HDR + (size_t)h.body_len;
		before = c->out.len;
		off = tc__gsp_reply_begin(&c->out, h.type, h.req_id, 0, NULL);
		err[0] = '\0';
		c->cur_req = h.req_id;
		ret = handlers[h.type](gs, c, &cur, &c->out, err, sizeof(err));
		if (ret == DEFERRED) {
			c->out.len = before; /* answered when decided */
		} else if (ret < 0) {
			c->out.len = before;
			if (!err[0])
				snprintf(err, sizeof(err), "%s",
					 tc_strerror(ret));
			reply_err(c, &h, ret, err);
			if (ret == TC_EPROTO) {
				gs->n_proto_err++;
				tc__log_rl(&gs->rl_proto, TC_LOG_WARN,
					   "protocol error from %s in %s: %s",
					   c->addr, tc__gsp_name(h.type), err);
				conn_close(c, NULL);
				c->last_word = true;
			}
		} else {
			tc__gsp_finish(&c->out, off);
		}
		turn_add(c);
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->out.oom)
		conn_close(c, "out of memory for replies");
}

/* recv(2)/send(2) on the non-blocking socket, through TLS when it is
 * on: -1 with errno (EPROTO for a TLS error) like the calls. */
static ssize_t conn_recv(struct gconn *c, void *p, size_t n)
{
	ssize_t r;
	int ev;

	if (!c->tls)
		return recv(c->fd, p, n, 0);
	r = tc__tls_recv(c->tls, p, n, &ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

static ssize_t conn_send(struct gconn *c, const void *p, size_t n)
{
	ssize_t r;
	int ev;

	if (!c->tls)
		return send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	r = tc__tls_send(c->tls, p, n, &ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

static void conn_read(struct gconn *c)
{
	for (int rounds = 0; rounds < 4 && !c->closing; rounds++) {
		size_t want = TC_GSP_HDR;
		ssize_t r;
		int ret;

		if (c->in_len - c->in_off >= TC_GSP_HDR) {
			uint32_t bl;

			memcpy(&bl, c->in + c->in_off + 16, 4);
			bl = le32toh(bl);
			if (bl <= TC_GSP_MAX_BODY &&
			    c->in_len - c->in_off < TC_GSP_HDR + (size_t)bl)
				want = TC_GSP_HDR + bl -
				       (c->in_len - c->in_off);
		}
		if (want < 65536)
			want = 65536;
		ret = tc__rxbuf_room(
			&c->in, &c->in_cap, &c->in_off, &c->in_len, want,
			TC_GSP_HDR + (size_t)TC_GSP_MAX_BODY + 65536);
		if (ret < 0) {
			conn_close(c, "receive buffer");
			return;
		}
		r = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			conn_close(c, r == 0	      ? "peer closed" :
				      errno == EPROTO ? "TLS error" :
							strerror(errno));
			return;
		}
		c->in_len += (size_t)r;
		c->last_ms = tc__now_ms();
		conn_frames(c);
		if (c->out.len - c->out_off >= OUT_PAUSE)
			break;
		/* TLS may hold decrypted bytes that epoll cannot see */
		if ((size_t)r < want && !tc__tls_pending(c->tls))
			break;
	}
}

static void conn_flush(struct gconn *c)
{
	while (c->out.len > c->out_off && !c->closing) {
		ssize_t r = conn_send(c, c->out.data + c->out_off,
				      c->out.len - c->out_off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r < 0) {
			conn_close(c, strerror(errno));
			return;
		}
		c->out_off += (size_t)r;
	}
	if (c->out_off == c->out.len) {
		c->out.len = 0;
		c->out_off = 0;
	} else if (c->out.len - c->out_off > OUT_MAX) {
		conn_close(c, "client does not read its replies");
	}
}

/* A client whose request was malformed is dropped, but first told why
 * (its replies up to the error, which name the field): one send that
 * never blocks, whatever it manages. */
static void last_word(struct gconn *c)
{
	if (c->out.len > c->out_off &&
	    conn_send(c, c->out.data + c->out_off, c->out.len - c->out_off) > 0)
		tc__log(TC_LOG_DEBUG, "told %s why it is dropped", c->addr);
	c->last_word = false;
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct gconn *c = arg;
	struct gs *gs = c->gs;

	if (c->closing)
		return;
	if (c->tls && !c->tls_done) {
		char why[512];
		int want, ret = tc__tls_handshake_io(c->tls, &want, why,
						     sizeof(why));

		if (ret == -EAGAIN) {
			tc__ev_add(ev, fd, want, on_conn_io, c);
			return;
		}
		if (ret < 0) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, why);
			conn_close(c, NULL);
			return;
		}
		c->tls_done = true;
		tc__log(TC_LOG_DEBUG, "%s: %s", c->addr,
			tc__tls_describe(c->tls));
	}
	if (!c->authed) {
		int want, ret = tc__auth_io_tls(&c->auth, fd, c->tls, &want);

		if (ret == -EAGAIN) {
			tc__ev_add(ev, fd, want, on_conn_io, c);
			return;
		}
		if (ret < 0) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, c->auth.err);
			conn_close(c, NULL);
			return;
		}
		if (c->auth.peer_role != TC_AUTH_ROLE_DAEMON &&
		    c->auth.peer_role != TC_AUTH_ROLE_TOOL) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN,
				   "refused %s: a %s may not use the global "
				   "store",
				   c->addr,
				   tc__auth_role_name(c->auth.peer_role));
			conn_close(c, NULL);
			return;
		}
		c->authed = true;
		tc__log(TC_LOG_DEBUG, "%s authenticated as '%s' (%s)", c->addr,
			c->auth.peer_name,
			tc__auth_role_name(c->auth.peer_role));
		tc__auth_wipe(&c->auth);
		conn_watch(c);
		return;
	}
	if (mask & TC_EV_WRITE)
		turn_add(c); /* flushed after the turn's commit */
	if (mask & TC_EV_READ)
		conn_read(c);
	conn_watch(c);
}

static void on_accept(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct gs *gs = arg;

	for (int i = 0; i < 64; i++) {
		struct gconn *c;
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				tc__log_rl(&gs->rl_conns, TC_LOG_WARN,
					   "accept: %s", strerror(errno));
			return;
		}
		if (gs->nconns >= gs->cfg->max_conns || cfd >= gs->setsize) {
			char a[TC_TCP_ADDRSTR];

			tc__tcp_peer_str(cfd, a, sizeof(a));
			tc__log_rl(&gs->rl_conns, TC_LOG_WARN,
				   "refused %s: %d connections already", a,
				   gs->nconns);
			close(cfd);
			continue;
		}
		c = tc__calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->gs = gs;
		c->fd = cfd;
		tc__tcp_tune(cfd);
		tc__tcp_peer_str(cfd, c->addr, sizeof(c->addr));
		c->last_ms = tc__now_ms();
		/* The auth deadline bounds the TLS handshake too (tick). */
		tc__auth_init_server(&c->auth, &gs->sec, TC_AUTH_ROLE_GLOBAL,
				     TC_AUTH_ROLE_ANY, "global",
				     gs->cfg->handshake_ms);
		if (gs->tls && tc__tls_new(gs->tls, cfd, true, &c->tls) < 0) {
			close(cfd);
			tc__free(c);
			continue;
		}
		c->next = gs->conns;
		if (gs->conns)
			gs->conns->prev = c;
		gs->conns = c;
		gs->nconns++;
		tc__ev_add(ev, cfd, TC_EV_READ, on_conn_io, c);
	}
}

/* Commit the turn's writes, then send the turn's replies. */
static void before_sleep(struct tc__ev *ev, void *arg)
{
	struct gs *gs = arg;
	struct gconn *c, *next, *again = NULL;

	if (gs->txn) {
		int ret;

		if (tc__failpoint("gs.commit_fail", ""))
			ret = -EIO;
		else
			ret = gs->ops->commit(gs->be);
		gs->txn = false;
		gs->n_commits++;
		if (ret < 0) {
			/* Nothing of this turn is durable: answer nobody,
			 * so every client retries. */
			gs->ops->rollback(gs->be);
			tc__log(TC_LOG_ERROR,
				"commit failed: dropping this turn's "
				"connections so that their clients retry");
			for (c = gs->turn; c; c = c->turn_next) {
				conn_close(c, "commit failed");
				c->last_word = false;
			}
		}
		if (tc__failpoint("gs.crash_after_commit", ""))
			_exit(99);
	}
	for (c = gs->turn; c; c = next) {
		next = c->turn_next;
		c->in_turn = false;
		c->turn_next = NULL;
		conn_flush(c);
		if (c->closing && c->last_word)
			last_word(c);
		/* frames left over from a busy turn run in the next one */
		if (!c->closing && c->authed &&
		    (c->in_len - c->in_off >= TC_GSP_HDR ||
		     tc__tls_pending(c->tls)) &&
		    c->out.len - c->out_off < OUT_PAUSE) {
			c->again_next = again;
			again = c;
		}
		conn_watch(c);
	}
	gs->turn = NULL;
	while (gs->reap) {
		c = gs->reap;
		gs->reap = c->reap_next;
		conn_free(c);
	}
	for (c = again; c; c = next) {
		next = c->again_next;
		c->again_next = NULL;
		if (c->closing)
			continue;
		if (tc__tls_pending(c->tls))
			conn_read(c); /* runs the frames too */
		else
			conn_frames(c);
		conn_watch(c);
		tc__ev_no_sleep(ev);
	}
}

static void tick(struct tc__ev *ev, void *arg)
{
	struct gs *gs = arg;
	uint64_t now = tc__now_ms();
	static uint64_t last_decay;

	for (size_t i = 0; i < gs->nnodes; i++) {
		struct gnode *n = gs->nodes[i];

		if (n && n->live && n->lease_until < now) {
			n->live = false;
			gs->n_expired++;
			tc__log(TC_LOG_WARN,
				"node '%s' lease expired (no heartbeat for %d "
				"ms): out of routing until it is heard again",
				n->info.name, gs->cfg->lease_ms);
		}
	}
	groups_tick(gs, now);
	if (now - last_decay >= 1000) {
		last_decay = now;
		for (size_t i = 0; i < gs->nnodes; i++)
			if (gs->nodes[i])
				gs->nodes[i]->handouts /= 2;
	}
	for (struct gconn *c = gs->conns; c; c = c->next) {
		if (c->closing)
			continue;
		if (!c->authed && tc__auth_expired(&c->auth, now)) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, c->auth.err);
			conn_close(c, NULL);
		} else if (c->authed && !c->node &&
			   now - c->last_ms > (uint64_t)gs->cfg->idle_ms) {
			conn_close(c, "idle");
		}
	}
}

static void on_signal(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si))
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			tc__log(TC_LOG_INFO, "signal %u: stopping",
				si.ssi_signo);
			tc__ev_stop(ev);
		}
}

/* ------------------------------------------------------------ loading */

static int load_node(void *arg, uint64_t id, const struct tc__gsp_node *n)
{
	struct gnode *gn = node_add(arg, id, n);

	return gn ? 0 : -ENOMEM;
}

static int load_art(void *arg, const struct tc__gsp_artifact *a)
{
	struct gart *ga = art_get_or_add(arg, a->id, a->size, a->nchunks);

	if (!ga)
		return -ENOMEM;
	ga->recorded = true;
	snprintf(ga->policy, sizeof(ga->policy), "%s", a->policy);
	return 0;
}

static int load_rep(void *arg, uint64_t node_id,
		    const struct tc__gsp_replica *r)
{
	struct gnode *n = node_get(arg, node_id);

	return n ? rep_set(arg, n, r) : 0;
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
	g = group_new(rec->name, rec->ranks, rec->timeout_ms);
	if (!g)
		return -ENOMEM;
	g->rec = *rec;
	g->rec.members = NULL;
	g->rec.nmembers = 0;
	g->rec.nprepared = 0;
	left = deadline_unix - wall_ms();
	g->deadline_unix = deadline_unix;
	g->deadline = now + (uint64_t)(left > 0 ? left : 0);
	/* Leases are not stored: every node gets one lease to register
	 * again before its ranks' groups hold it against them. */
	g->grace_until = now + (uint64_t)gs->cfg->lease_ms;
	g->decided_at = now;
	if (tc__map_put(&gs->groups, g->rec.name, g) < 0) {
		group_free(g);
		return -ENOMEM;
	}
	if (g->rec.state == TC_GSP_GSTATE_OPEN)
		open_link(gs, g);
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

static void gs_release(struct gs *gs)
{
	struct tc__map_entry *e;
	size_t b;

	while (gs->conns)
		conn_free(gs->conns);
	for (e = tc__map_next(&gs->arts, NULL, &b); e;
	     e = tc__map_next(&gs->arts, e, &b)) {
		struct gart *a = e->val;

		for (size_t i = 0; i < a->nreps; i++)
			tc__free(a->reps[i].have);
		tc__free(a->reps);
		tc__free(a);
	}
	for (e = tc__map_next(&gs->keys, NULL, &b); e;
	     e = tc__map_next(&gs->keys, e, &b))
		tc__free(e->val);
	for (e = tc__map_next(&gs->groups, NULL, &b); e;
	     e = tc__map_next(&gs->groups, e, &b))
		group_free(e->val);
	tc__map_release(&gs->groups);
	for (size_t i = 0; i < gs->nnodes; i++)
		tc__free(gs->nodes[i]);
	tc__free(gs->nodes);
	tc__map_release(&gs->arts);
	tc__map_release(&gs->keys);
	tc__map_release(&gs->node_by_name);
	if (gs->be)
		gs->ops->close(gs->be);
	if (gs->ev)
		tc__ev_free(gs->ev);
	if (gs->lfd >= 0)
		close(gs->lfd);
	if (gs->sigfd >= 0)
		close(gs->sigfd);
	tc__auth_secret_wipe(&gs->sec);
	tc__tls_ctx_free(gs->tls);
}

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void write_side_file(const char *dir, const char *name, const char *s)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", s);
	fclose(f);
	rename(tmp, path);
}

int tc__gs_run(const struct tc__gs_config *cfg, int ready_fd, char *err,
	       size_t errlen)
{
	struct gs gs = { 0 };
	struct tc__gs_load_cb cb = { &gs,      load_node,  load_art,   load_rep,
				     load_key, load_group, load_member };
	struct rlimit rl;
	sigset_t mask;
	char pid[32];
	int ret;

	gs.cfg = cfg;
	gs.ops = &tc__gs_sqlite;
	gs.lfd = gs.sigfd = -1;
	tc__map_init(&gs.node_by_name);
	tc__map_init(&gs.arts);
	tc__map_init(&gs.keys);
	tc__map_init(&gs.groups);
	gs.started_ms = tc__now_ms();
	if (!cfg->secret_file[0]) {
		snprintf(err, errlen,
			 "no cluster secret: set cluster_secret_file in the "
			 "config or pass --cluster-secret-file (openssl rand "
			 "-hex 32 > FILE; chmod 600 FILE)");
		return TC_EBADCONFIG;
	}
	ret = tc__auth_load_secret(cfg->secret_file, &gs.sec, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__tls_ctx_new(&cfg->tls, &gs.tls, err, errlen);
	if (ret < 0)
		goto out;
	ret = mkdir_p(cfg->state_dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create state directory '%s': %s",
			 cfg->state_dir, strerror(-ret));
		goto out;
	}
	ret = gs.ops->open(cfg->db, cfg->sync_full, &gs.be, err, errlen);
	if (ret < 0)
		goto out;
	ret = gs.ops->load(gs.be, &cb);
	if (ret < 0) {
		snprintf(err, errlen, "cannot load '%s': %s", cfg->db,
			 tc_strerror(ret));
		goto out;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	gs.setsize = cfg->max_conns + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < (rlim_t)gs.setsize)
		gs.setsize = (int)rl.rlim_cur;
	gs.ev = tc__ev_new(gs.setsize);
	if (!gs.ev) {
		ret = -errno;
		snprintf(err, errlen, "event loop: %s", strerror(errno));
		goto out;
	}
	ret = tc__tcp_listen(cfg->listen, 1024, &gs.lfd, gs.bound,
			     sizeof(gs.bound), err, errlen);
	if (ret < 0)
		goto out;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	gs.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	tc__ev_add(gs.ev, gs.lfd, TC_EV_READ, on_accept, &gs);
	if (gs.sigfd >= 0)
		tc__ev_add(gs.ev, gs.sigfd, TC_EV_READ, on_signal, &gs);
	tc__ev_set_hooks(gs.ev, before_sleep, tick, TICK_MS, &gs);
	write_side_file(cfg->state_dir, "global.addr", gs.bound);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	write_side_file(cfg->state_dir, "global.pid", pid);
	tc__log(TC_LOG_INFO,
		"global store listening on %s (db %s, %zu nodes, %zu "
		"artifacts, %zu keys known; lease %d ms; TLS %s%s)",
		gs.bound, cfg->db, gs.node_by_name.count, gs.arts.count,
		gs.keys.count, cfg->lease_ms, gs.tls ? "on as " : "off",
		tc__tls_ctx_subject(gs.tls));
	if (ready_fd >= 0) {
		char one = 1;

		if (write(ready_fd, &one, 1) < 0)
			tc__log(TC_LOG_WARN, "ready pipe: %s", strerror(errno));
		close(ready_fd);
	}
	ret = tc__ev_run(gs.ev);
	before_sleep(gs.ev, &gs); /* commit and answer what is pending */
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/global.pid", cfg->state_dir);
		unlink(path);
	}
	tc__log(TC_LOG_INFO, "global store stopped");
out:
	gs_release(&gs);
	return ret;
}
