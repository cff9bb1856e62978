/*
 * groups.c - groups of ranks (a tensor-parallel model's processes) that
 * commit or abort together: create, join, prepare, abort, and a wait for
 * the decision; the sweep that aborts groups that can no longer commit.
 *
 * The decision is one compare-and-swap in the database inside the turn's
 * transaction (group_decide), so every rank, and every waiter, hears the
 * same answer, and only after it is durable.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "gs_internal.h"
#include "net/ev.h"
#include "tcast/errors.h"

#define GROUPS_OPEN_MAX 4096  /* open groups at once */
#define GROUPS_MAX	65536 /* groups kept, decided included */
#define GROUP_KEEP_MS	((uint64_t)3600 * 1000) /* a decided group's record */
#define GROUP_SLOTS_MAX ((size_t)1 << 20)	/* ranks over all kept groups */

/* ------------------------------------------------------------ groups */

int64_t tc__gs_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool node_up(const struct gnode *n, uint64_t now)
{
	return n->live && n->lease_until >= now;
}

void tc__gs_open_link(struct gs *gs, struct ggroup *g)
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

struct ggroup *tc__gs_group_new(const char *name, uint32_t ranks,
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

void tc__gs_group_free(struct ggroup *g)
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
	tc__gs_turn_add(c);
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
	if ((ret = tc__gs_be_write(gs)) < 0)
		return ret;
	rec = g->rec;
	rec.state = (uint8_t)state;
	rec.decided_ms = (uint64_t)tc__gs_wall_ms();
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

/* Which ranks a request on a group may name (group_req). */
enum rank_rule {
	RANK_UNUSED,  /* the request's rank is not looked at */
	RANK_OR_NONE, /* a rank of the group, or TC_GSP_NO_RANK */
	RANK_NEEDED,  /* a rank of the group */
};

/* Decode a `type` request on an existing group: *q, and *g the group.
 * 0, or the decoder's error, TC_ENOTFOUND (no such group) or TC_EINVAL (a
 * rank the group does not have), said in err; *g is NULL on every
 * failure. */
static int group_req(struct gs *gs, struct tc__cur *cur, int type,
		     enum rank_rule rule, struct tc__gsp_group_req *q,
		     struct ggroup **g, char *err, size_t errlen)
{
	int ret = tc__gsp_get_group_req(cur, type, q, err, errlen);

	*g = NULL;
	if (ret < 0)
		return ret;
	*g = tc__map_get(&gs->groups, q->group);
	if (!*g) {
		snprintf(err, errlen, "no group '%s' (create it first)",
			 q->group);
		return TC_ENOTFOUND;
	}
	if (rule == RANK_UNUSED ||
	    (rule == RANK_OR_NONE && q->rank == TC_GSP_NO_RANK) ||
	    q->rank < (*g)->rec.ranks)
		return 0;
	snprintf(err, errlen, "rank %u of group '%s', which has %u ranks",
		 q->rank, (*g)->rec.name, (*g)->rec.ranks);
	*g = NULL;
	return TC_EINVAL;
}

int tc__gs_on_group_create(struct gs *gs, struct gconn *c, struct tc__cur *cur,
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
	if ((ret = tc__gs_be_write(gs)) < 0) {
		snprintf(err, errlen, "metadata store unavailable");
		return ret;
	}
	g = tc__gs_group_new(q.group, q.ranks, q.timeout_ms);
	if (!g)
		return -ENOMEM;
	g->rec.created_ms = (uint64_t)tc__gs_wall_ms();
	g->deadline = tc__now_ms() + q.timeout_ms;
	g->deadline_unix = (int64_t)g->rec.created_ms + q.timeout_ms;
	ret = gs->ops->group_put(gs->be, &g->rec, g->deadline_unix);
	if (ret == 0 && tc__map_put(&gs->groups, g->rec.name, g) < 0)
		ret = -ENOMEM;
	if (ret < 0) {
		tc__gs_group_free(g);
		snprintf(err, errlen, "metadata store write failed");
		return ret;
	}
	tc__gs_open_link(gs, g);
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

int tc__gs_on_group_join(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			 struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct tc__gsp_member row;
	struct gnode *n = NULL;
	struct gmember *m;
	struct ggroup *g;
	int ret;

	ret = group_req(gs, cur, TC_GSP_GROUP_JOIN, RANK_NEEDED, &q, &g, err,
			errlen);
	if (ret < 0)
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
	if ((ret = tc__gs_be_write(gs)) < 0) {
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

int tc__gs_on_group_prepare(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			    struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct tc__gsp_member row;
	struct gmember *m;
	struct ggroup *g;
	uint32_t np = 0;
	int ret;

	ret = group_req(gs, cur, TC_GSP_GROUP_PREPARE, RANK_NEEDED, &q, &g, err,
			errlen);
	if (ret < 0)
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
	if ((ret = tc__gs_be_write(gs)) < 0) {
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

int tc__gs_on_group_abort(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			  struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct ggroup *g;
	int ret;

	ret = group_req(gs, cur, TC_GSP_GROUP_ABORT, RANK_OR_NONE, &q, &g, err,
			errlen);
	if (ret < 0)
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

int tc__gs_on_group_get(struct gs *gs, struct gconn *c, struct tc__cur *cur,
			struct tc__buf *out, char *err, size_t errlen)
{
	struct tc__gsp_group_req q;
	struct ggroup *g;
	int ret;

	ret = group_req(gs, cur, TC_GSP_GROUP_GET, RANK_UNUSED, &q, &g, err,
			errlen);
	if (ret < 0)
		return ret;
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
	return GS_DEFERRED;
}

/* Answer the waits that ran out; abort the groups that cannot commit;
 * forget decided groups after GROUP_KEEP_MS. */
void tc__gs_groups_tick(struct gs *gs, uint64_t now)
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
			/* Not now - decided_at: a group decided during this
			 * tick has decided_at > now, and the difference
			 * would wrap and drop it at once. */
			if (g->rec.state != TC_GSP_GSTATE_OPEN &&
			    now > g->decided_at + GROUP_KEEP_MS)
				drop[n++] = g;
		}
		if (n && tc__gs_be_write(gs) == 0)
			for (size_t i = 0; i < n; i++) {
				gs->ops->group_del(gs->be, drop[i]->rec.name);
				tc__map_del(&gs->groups, drop[i]->rec.name);
				gs->rank_slots -= drop[i]->rec.ranks;
				tc__gs_group_free(drop[i]);
			}
	}
}
