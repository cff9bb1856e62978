/*
 * ops_cluster.c - the daemon's side of the cluster: the artifact table's
 * hooks feed the cluster thread (cluster.h), and CLUSTER_RESOLVE answers
 * "which artifact is this key, cluster-wide, and who holds it" for a
 * local client.  The resolve itself is a blocking call to the global
 * store, so it runs on an I/O worker; the loop never waits on the
 * network.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/compiler.h"
#include "common/log.h"
#include "durable.h"
#include "gpu_tier.h"
#include "gsc.h"
#include "obj.h"
#include "proto/gsp.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "server_internal.h"

static void hook_added(void *arg, const struct tc__obj *o)
{
	tc__cluster_replica_add(arg, o->id, TC_GSP_TIER_HOST, 0,
				o->table.total_bytes, &o->table,
				tc__policy_name(o->policy));
}

static void hook_removed(void *arg, const struct tc__obj *o)
{
	tc__cluster_replica_del(arg, o->id, TC_GSP_TIER_HOST, 0);
}

/* A GPU replica is a source of tier gpu, device = the daemon's ordinal
 * (peers read it through the peer server's device-to-host staging). */
static void hook_gpu(void *arg, const char *id, const struct tc__table *t,
		     const char *policy, int ordinal, bool up)
{
	if (up)
		tc__cluster_replica_add(arg, id, TC_GSP_TIER_GPU,
					(uint32_t)ordinal, t->total_bytes, t,
					policy);
	else
		tc__cluster_replica_del(arg, id, TC_GSP_TIER_GPU,
					(uint32_t)ordinal);
}

static void hook_key(void *arg, const char *key, const char *id,
		     const char *prev, uint64_t gen)
{
	if (!tc__key_node_local(key))
		tc__cluster_key_set(arg, key, id, prev, gen);
}

static void hook_filling(void *arg, const char *id, const struct tc__table *t,
			 const char *policy, bool up)
{
	tc__cluster_filling(arg, id, t, policy, up);
}

static void hook_filling_have(void *arg, const char *id, const uint64_t *chunks,
			      uint32_t n)
{
	tc__cluster_filling_have(arg, id, chunks, n);
}

int tc__srv_cluster_start(struct server *s, char *err, size_t errlen)
{
	int rc = tc__cluster_start(s->cfg, &s->cluster, err, errlen);

	if (rc < 0 || !s->cluster)
		return rc;
	tc__durable_set_clustered(s->durable, true);
	s->objs.hooks.arg = s->cluster;
	s->objs.hooks.added = hook_added;
	s->objs.hooks.removed = hook_removed;
	s->objs.hooks.key_moved = hook_key;
	s->objs.hooks.filling = hook_filling;
	s->objs.hooks.filling_have = hook_filling_have;
	s->objs.hooks.gpu = hook_gpu;
	/* What the daemon already holds (recovered from the shared disk at
	 * start) joins the inventory too. */
	for (struct tc__obj *o = tc__objs_first(&s->objs); o;
	     o = tc__objs_next(o)) {
		if (o->shm)
			hook_added(s->cluster, o);
		for (int i = 0; o->gpu && i < TC_GPU_TIER_MAX_DEV; i++)
			if (o->gpu->rep[i] && o->gpu->rep[i]->announced)
				hook_gpu(s->cluster, o->id, &o->table,
					 tc__policy_name(o->policy), i, true);
	}
	{
		struct tc__map_entry *e;
		size_t b;

		for (e = tc__map_next(&s->objs.keys, NULL, &b); e;
		     e = tc__map_next(&s->objs.keys, e, &b)) {
			struct tc__key *k = e->val;

			if (k->id[0])
				hook_key(s->cluster, k->name, k->id, "",
					 k->gen);
		}
	}
	tc__log(TC_LOG_INFO, "joining the cluster at %s", s->cfg->global);
	return 0;
}

void tc__srv_cluster_stop(struct server *s)
{
	memset(&s->objs.hooks, 0, sizeof(s->objs.hooks));
	tc__cluster_stop(s->cluster);
	s->cluster = NULL;
}

struct resolve_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct tc__cluster *cl;
	char what[TC_PROTO_MAX_STR];
	uint32_t max;
	int rc;
	char id[TC_GSP_MAX_ID + 1];
	uint64_t gen;
	struct tc__gsp_source src[TC_GSP_MAX_SOURCES];
	uint32_t nsrc;
	char err[512];
};

static void resolve_run(struct tc__job *job)
{
	struct resolve_job *j = (struct resolve_job *)job;

	j->rc = tc__cluster_resolve(j->cl, j->what, j->id, &j->gen, j->src,
				    j->max, &j->nsrc, j->err, sizeof(j->err));
}

static int resolve_reply(struct conn *c, const struct req *r, void *arg)
{
	struct resolve_job *j = arg;
	size_t off = tc__srv_reply_begin(c, r);

	tc__buf_put_str(&c->out, j->id);
	tc__buf_put_u64(&c->out, j->gen);
	tc__buf_put_u32(&c->out, j->nsrc);
	for (uint32_t i = 0; i < j->nsrc; i++)
		tc__gsp_put_source(&c->out, &j->src[i]);
	tc__srv_reply_end(c, off);
	return 0;
}

static void resolve_done(struct tc__job *job)
{
	struct resolve_job *j = (struct resolve_job *)job;

	tc__srv_finish(j->c, &j->r, j->rc, j->err, resolve_reply, j);
	tc__free(j);
}

/* CLUSTER_RESOLVE: str key or id, u32 max sources (0: the store's
 * default) -> str id, u64 generation (0 for an id), u32 n, n sources. */
int on_cluster_resolve(struct conn *c, struct req *r)
{
	struct resolve_job *j;
	char what[TC_PROTO_MAX_STR];
	uint32_t max;
	int rc = tc__srv_read_str(c, r, "key or id", what, sizeof(what));

	if (rc < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &max) < 0) {
		snprintf(c->err, sizeof(c->err), "max sources: truncated");
		return TC_EPROTO;
	}
	if ((rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	if (!c->srv->cluster) {
		snprintf(c->err, sizeof(c->err),
			 "this daemon is not in a cluster (no 'global' in "
			 "its configuration)");
		return TC_ENOTSUP;
	}
	if (strlen(what) > TC_GSP_MAX_KEY) {
		snprintf(c->err, sizeof(c->err),
			 "key or id: %zu bytes (at most %d)", strlen(what),
			 TC_GSP_MAX_KEY);
		return TC_ELIMIT;
	}
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->c = c;
	j->r = *r;
	j->cl = c->srv->cluster;
	snprintf(j->what, sizeof(j->what), "%s", what);
	j->max = max == 0 || max > TC_GSP_MAX_SOURCES ? 8 : max;
	j->job.run = resolve_run;
	j->job.done = resolve_done;
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->io_jobs, &j->job);
	return 0; /* the reply comes when the job is done */
}

/* ------------------------------------------------------------ GROUP */

struct group_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct tc__cluster *cl;
	uint32_t op;
	struct tc__gsp_group_req q;
	struct tc__gsp_group rec;
	int rc;
	char err[512];
};

/* Longest wait one relayed GET holds a worker for; the client asks again
 * (the CLI and the SDK do). */
#define GROUP_WAIT_MAX_MS 5000

static void group_run(struct tc__job *job)
{
	struct group_job *j = (struct group_job *)job;
	struct tc__gsp_group_req join = j->q;

	if (j->op != TC_PROTO_GROUP_HOLD) {
		j->rc = tc__cluster_group(j->cl, (int)j->op, &j->q, &j->rec,
					  j->err, sizeof(j->err));
		return;
	}
	if (j->q.ranks) {
		j->rc = tc__cluster_group(j->cl, TC_GSP_GROUP_CREATE, &j->q,
					  &j->rec, j->err, sizeof(j->err));
		tc__gsp_group_release(&j->rec);
		if (j->rc < 0)
			return;
	}
	join.node[0] = '\0'; /* the node's connection: this node */
	j->rc = tc__cluster_group(j->cl, TC_GSP_GROUP_JOIN, &join, &j->rec,
				  j->err, sizeof(j->err));
}

static int group_reply(struct conn *c, const struct req *r, void *arg)
{
	struct group_job *j = arg;
	size_t off = tc__srv_reply_begin(c, r);

	tc__gsp_put_group(&c->out, &j->rec);
	tc__srv_reply_end(c, off);
	return 0;
}

static void group_done(struct tc__job *job)
{
	struct group_job *j = (struct group_job *)job;
	struct conn *c = j->c;

	/* Held from now on, even when the connection already closed: then
	 * conn_free, which runs after this, ends it (the group aborts). */
	if (j->rc == 0 && j->op == TC_PROTO_GROUP_HOLD &&
	    j->rec.state == TC_GSP_GSTATE_OPEN) {
		if (tc__cluster_hold_add(j->cl, (uintptr_t)c, &j->q) == 0)
			c->holds++;
		else
			j->rc = -ENOMEM;
	}
	tc__srv_finish(c, &j->r, j->rc, j->err, group_reply, j);
	tc__gsp_group_release(&j->rec);
	tc__free(j);
}

/* GROUP: a group of the global store, relayed (proto/proto.h). */
int on_group(struct conn *c, struct req *r)
{
	struct group_job *j;
	int rc;

	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	rc = tc__proto_get_group(&r->body, &j->op, &j->q, c->err,
				 sizeof(c->err));
	if (rc == 0 && !c->srv->cluster) {
		snprintf(c->err, sizeof(c->err),
			 "this daemon is not in a cluster (no 'global' in "
			 "its configuration)");
		rc = TC_ENOTSUP;
	}
	if (rc < 0) {
		tc__free(j);
		return rc;
	}
	if (j->op == TC_GSP_GROUP_GET && j->q.wait_ms > GROUP_WAIT_MAX_MS)
		j->q.wait_ms = GROUP_WAIT_MAX_MS;
	j->c = c;
	j->r = *r;
	j->cl = c->srv->cluster;
	j->job.run = group_run;
	j->job.done = group_done;
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->io_jobs, &j->job);
	return 0; /* the reply comes when the global store answered */
}

/* ------------------------------------------------------------ key sync */

/*
 * Other nodes' key moves (docs/cluster.md "Keys across the cluster"):
 * every key_sync_ms the loop copies the keys this daemon has (at most
 * KEY_SYNC_MAX a round, the next ones the round after), an I/O worker
 * asks the global store for their ids and generations, up to 1024 keys a
 * request (KEYS_GET; key by key with KEY_GET from a store older than
 * that message), and
 * the loop adopts every key the cluster has at a newer generation, unless
 * the key changed here meanwhile.  One round at a time; the loop never
 * waits on the network.
 */
#define KEY_SYNC_MAX 1024

struct ksync_ent {
	char key[TC_KEY_MAX + 1];
	char id[TC_ID_LEN + 1]; /* what the key named here */
	uint64_t gen;
	char nid[TC_GSP_MAX_ID + 1]; /* what it names cluster-wide */
	uint64_t ngen;
	int rc;
};

struct ksync_job {
	struct tc__job job;
	struct server *s;
	struct tc__cluster *cl;
	struct ksync_ent *e;
	uint32_t n;
};

/* Ask key by key (KEY_GET) from entry `from` on: a store older than
 * KEYS_GET. */
static void ksync_each(struct ksync_job *j, uint32_t from)
{
	char err[256];

	for (uint32_t i = from; i < j->n; i++) {
		struct ksync_ent *e = &j->e[i];

		e->rc = tc__cluster_key_get(j->cl, e->key, e->nid, &e->ngen,
					    err, sizeof(err));
		if (e->rc == TC_ENODAEMON || e->rc == TC_ECLOSED ||
		    e->rc == -ETIMEDOUT) {
			for (uint32_t k = i + 1; k < j->n; k++)
				j->e[k].rc = e->rc; /* the store went away */
			break;
		}
	}
}

/* The round's keys in batches of TC_GSP_MAX_KEYS_GET (KEYS_GET): one
 * round trip for up to 1024 keys instead of one per key. */
static void ksync_run(struct tc__job *job)
{
	struct ksync_job *j = (struct ksync_job *)job;
	struct tc__gsc_keyval *v = tc__calloc(TC_GSP_MAX_KEYS_GET, sizeof(*v));
	const char **keys = tc__calloc(TC_GSP_MAX_KEYS_GET, sizeof(*keys));
	char err[256];

	for (uint32_t i = 0; v && keys && i < j->n;) {
		uint32_t m = TC_MIN(j->n - i, (uint32_t)TC_GSP_MAX_KEYS_GET);
		int rc;

		for (uint32_t k = 0; k < m; k++)
			keys[k] = j->e[i + k].key;
		rc = tc__cluster_keys_get(j->cl, keys, m, v, err, sizeof(err));
		if (rc == TC_ENOTSUP) {
			ksync_each(j, i);
			goto out_free;
		}
		for (uint32_t k = 0; k < m; k++) {
			struct ksync_ent *e = &j->e[i + k];

			e->rc = rc < 0 ? rc : v[k].rc;
			if (e->rc == 0) {
				snprintf(e->nid, sizeof(e->nid), "%s", v[k].id);
				e->ngen = v[k].gen;
			}
		}
		if (rc < 0) {
			for (uint32_t k = i + m; k < j->n; k++)
				j->e[k].rc = rc;
			goto out_free;
		}
		i += m;
	}
	if (!v || !keys)
		ksync_each(j, 0); /* no memory for a batch */
out_free:
	tc__free(v);
	tc__free(keys);
}

static void ksync_done(struct tc__job *job)
{
	struct ksync_job *j = (struct ksync_job *)job;
	struct server *s = j->s;

	for (uint32_t i = 0; i < j->n && s->cluster; i++) {
		struct ksync_ent *e = &j->e[i];
		int rc;

		if (e->rc < 0 || e->ngen <= e->gen || !tc__is_id(e->nid))
			continue;
		rc = tc__objs_key_moved_away(&s->objs, e->key, e->id, e->gen,
					     e->nid, e->ngen);
		if (rc <= 0)
			continue;
		s->key_sync_moved++;
		tc__durable_key_changed(s->durable, &s->objs, e->key);
		tc__log(TC_LOG_INFO,
			"key '%s' moved to '%s' (generation %llu) on another "
			"node%s",
			e->key, e->nid, (unsigned long long)e->ngen,
			tc__map_get(&s->objs.by_id, e->nid) ?
				"" :
				": not held here (tcast pull it)");
	}
	s->key_sync_rounds++;
	s->key_sync_busy = false;
	tc__free(j->e);
	tc__free(j);
}

void tc__srv_key_sync_tick(struct server *s, uint64_t now_ms)
{
	struct tc__map_entry *e;
	struct ksync_job *j;
	uint32_t total = 0, idx = 0;
	size_t b;

	if (!s->cluster || !s->cfg->key_sync_ms || s->key_sync_busy ||
	    now_ms < s->key_sync_next_ms)
		return;
	s->key_sync_next_ms = now_ms + (uint64_t)s->cfg->key_sync_ms;
	if (!tc__cluster_connected(s->cluster))
		return;
	for (e = tc__map_next(&s->objs.keys, NULL, &b); e;
	     e = tc__map_next(&s->objs.keys, e, &b))
		total++;
	if (!total)
		return;
	j = tc__calloc(1, sizeof(*j));
	if (j)
		j->e = tc__calloc(total < KEY_SYNC_MAX ? total : KEY_SYNC_MAX,
				  sizeof(*j->e));
	if (!j || !j->e) {
		tc__free(j);
		return; /* the next round tries again */
	}
	if (s->key_sync_start >= total)
		s->key_sync_start = 0;
	for (e = tc__map_next(&s->objs.keys, NULL, &b);
	     e && j->n < KEY_SYNC_MAX; e = tc__map_next(&s->objs.keys, e, &b)) {
		const struct tc__key *k = e->val;
		struct ksync_ent *x;

		if (idx++ < s->key_sync_start || tc__key_node_local(k->name))
			continue;
		x = &j->e[j->n++];
		snprintf(x->key, sizeof(x->key), "%s", k->name);
		snprintf(x->id, sizeof(x->id), "%s", k->id);
		x->gen = k->gen;
	}
	s->key_sync_start = idx >= total ? 0 : idx;
	if (!j->n) {
		tc__free(j->e);
		tc__free(j);
		return;
	}
	j->s = s;
	j->cl = s->cluster;
	j->job.run = ksync_run;
	j->job.done = ksync_done;
	s->key_sync_busy = true;
	tc__jobs_submit(s->io_jobs, &j->job);
}
