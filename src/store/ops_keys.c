/*
 * ops_keys.c - KEY_SET (publish a key onto an artifact, with
 * compare-and-swap) and KEYS (a key's version history), and the key gate
 * that every publish (KEY_SET, an import's or a put's key) goes through
 * in a cluster: the global store decides a compare-and-swap, or a key
 * new here, before the daemon acknowledges it (struct key_gate).  Loop
 * thread, except tc__srv_key_gate_run (an I/O worker); the key table
 * itself lives in obj.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/log.h"
#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "durable.h"
#include "server_internal.h"

/* ------------------------------------------------------------ the gate */

int tc__srv_key_precheck(struct conn *c, const char *key, uint32_t flags,
			 uint64_t expect_gen)
{
	/* In a cluster the generation is the global store's: it decides
	 * the compare-and-swap at SEAL (struct key_gate). */
	int rc = tc__srv_key_gate_init(c, NULL, key, flags);

	if (rc == 0)
		rc = tc__objs_key_precheck(&c->srv->objs, key,
					   (flags & TC_RF_EXPECT) &&
						   (!c->srv->cluster ||
						    tc__key_node_local(key)),
					   expect_gen, c->err, sizeof(c->err));
	return rc;
}

int tc__srv_key_gate_init(struct conn *c, struct key_gate *g, const char *key,
			  uint32_t flags)
{
	struct server *s = c->srv;
	bool expect = flags & TC_RF_EXPECT;

	if (g)
		memset(g, 0, sizeof(*g));
	if (!key[0] || !s->cluster || tc__key_node_local(key))
		return 0;
	/* A plain set of a key this daemon has is a confirm when it names
	 * the same artifact here (the global store heard of the key when it
	 * was made).  Naming another, or nothing (removed), the global store
	 * decides: its key may have moved on to exactly this artifact (a
	 * `tcast pull KEY` of the key's current version), which the daemon
	 * then adopts at the cluster's generation; else it is a conflict. */
	if (!expect && tc__objs_key_exists(&s->objs, key)) {
		if (!g || !tc__cluster_connected(s->cluster))
			return 0; /* local compare (tc__objs_key_set) */
		g->had = true;
		tc__objs_key_id(&s->objs, key, g->local_id,
				sizeof(g->local_id));
		g->on = true;
		return 0;
	}
	if (!tc__cluster_connected(s->cluster)) {
		if (!expect)
			return 0; /* made here, published when it is back */
		snprintf(c->err, sizeof(c->err),
			 "the global store at %s is unreachable: a "
			 "compare-and-swap of key '%s' cannot be checked "
			 "cluster-wide, so nothing was done (retry when it is "
			 "back)",
			 s->cfg->global, key);
		return TC_ENODAEMON;
	}
	if (g)
		g->on = true;
	return 0;
}

void tc__srv_key_gate_run(struct server *s, struct key_gate *g, const char *key,
			  const char *id, uint32_t flags, uint64_t expect_gen)
{
	bool expect = flags & TC_RF_EXPECT;
	char why[sizeof(g->err)];

	if (!g->on)
		return;
	if (g->had && !strcmp(g->local_id, id)) {
		g->on = false; /* the same artifact: a local confirm */
		return;
	}
	g->rc = tc__cluster_key_cas(s->cluster, key, id, expect, expect_gen,
				    &g->gen, why, sizeof(why));
	if (g->rc == TC_ENODAEMON && !expect) {
		/* Nothing to compare: made here, published when the store is
		 * back (a later conflict there is logged and counted). */
		g->on = false;
		g->rc = 0;
		return;
	}
	if (g->rc == TC_ECONFLICT)
		snprintf(g->err, sizeof(g->err),
			 "%s (cluster-wide: the global store decides the keys "
			 "of a daemon in a cluster)",
			 why);
	else if (g->rc < 0)
		snprintf(g->err, sizeof(g->err), "%s", why);
}

struct undo_job {
	struct tc__job job;
	struct tc__cluster *cl;
	char key[TC_KEY_MAX + 1];
	char id[TC_ID_LEN + 1];
	uint64_t gen, back;
	int rc;
	char err[512];
};

static void undo_run(struct tc__job *job)
{
	struct undo_job *j = (struct undo_job *)job;

	j->rc = tc__cluster_key_undo(j->cl, j->key, j->id, j->gen, &j->back,
				     j->err, sizeof(j->err));
}

static void undo_done(struct tc__job *job)
{
	struct undo_job *j = (struct undo_job *)job;

	if (j->rc == 0)
		tc__log(TC_LOG_WARN,
			"key '%s': this node could not keep '%s' after the "
			"global store moved the key to it (generation %llu); "
			"moved it back (generation %llu)",
			j->key, j->id, (unsigned long long)j->gen,
			(unsigned long long)j->back);
	else if (j->rc < 0)
		tc__log(TC_LOG_WARN,
			"key '%s': this node could not keep '%s' after the "
			"global store moved the key to it (generation %llu), "
			"and could not move it back: %s",
			j->key, j->id, (unsigned long long)j->gen, j->err);
	tc__free(j);
}

void tc__srv_key_gate_undo(struct server *s, const struct key_gate *g,
			   const char *key, const char *id)
{
	struct undo_job *j;

	if (!g || !g->on || g->rc < 0 || !g->gen || !key[0] || !s->cluster)
		return;
	j = tc__calloc(1, sizeof(*j));
	if (!j) {
		tc__log(TC_LOG_WARN,
			"key '%s' names '%s' cluster-wide, which this node "
			"could not keep (out of memory to take it back)",
			key, id);
		return;
	}
	j->cl = s->cluster;
	snprintf(j->key, sizeof(j->key), "%s", key);
	snprintf(j->id, sizeof(j->id), "%s", id);
	j->gen = g->gen;
	j->job.run = undo_run;
	j->job.done = undo_done;
	tc__jobs_submit(s->io_jobs, &j->job);
}

int tc__srv_publish_key(struct conn *c, const char *id, const char *key,
			uint32_t flags, uint64_t expect_gen,
			const struct key_gate *g, uint64_t *gen)
{
	int rc;

	*gen = 0;
	if (!key[0])
		return 0;
	if (!g || !g->on)
		return tc__objs_key_set(&c->srv->objs, key, id,
					flags & TC_RF_EXPECT, expect_gen, gen,
					c->err, sizeof(c->err));
	if (g->rc < 0) {
		snprintf(c->err, sizeof(c->err), "%s", g->err);
		return g->rc;
	}
	rc = tc__objs_key_adopt(&c->srv->objs, key, id, g->gen);
	if (rc == 0)
		*gen = g->gen;
	return rc;
}

/* ------------------------------------------------------------ KEY_SET */

struct key_job {
	struct tc__job job;
	struct conn *c;
	struct req r;
	struct server *s;
	char key[TC_KEY_MAX + 1];
	char id[TC_ID_LEN + 1];
	uint32_t flags;
	uint64_t expect;
	struct key_gate gate;
};

static int key_set_reply(struct conn *c, const struct req *r, void *arg)
{
	struct key_job *j = arg;
	uint64_t gen;
	size_t off;
	int rc = tc__srv_publish_key(c, j->id, j->key, j->flags, j->expect,
				     &j->gate, &gen);

	if (rc < 0)
		return rc;
	tc__durable_key_changed(c->srv->durable, &c->srv->objs, j->key);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, gen);
	tc__srv_reply_end(c, off);
	return 0;
}

static void key_set_run(struct tc__job *job)
{
	struct key_job *j = (struct key_job *)job;

	tc__srv_key_gate_run(j->s, &j->gate, j->key, j->id, j->flags,
			     j->expect);
}

static void key_set_done(struct tc__job *job)
{
	struct key_job *j = (struct key_job *)job;

	tc__srv_finish(j->c, &j->r, 0, NULL, key_set_reply, j);
	tc__free(j);
}

int on_key_set(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1], id[TC_ID_LEN + 1];
	struct key_job *j;
	uint32_t flags;
	uint64_t expect, gen;
	size_t off;
	int rc;

	if ((rc = tc__srv_read_str(c, r, "key", key, sizeof(key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "artifact id", id, sizeof(id))) < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &flags) < 0 ||
	    tc__cur_read_u64(&r->body, &expect) < 0 ||
	    tc__srv_body_end(c, r) < 0)
		return TC_EPROTO;
	j = tc__calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	/* The gate needs the full id, and a key and artifact the local
	 * table would take, before it asks anyone. */
	if ((rc = tc__srv_key_gate_init(c, &j->gate, key, flags)) < 0 ||
	    (j->gate.on &&
	     (rc = tc__objs_key_target(&c->srv->objs, key, id, j->id, c->err,
				       sizeof(c->err))) < 0)) {
		tc__free(j);
		return rc;
	}
	if (!j->gate.on) {
		tc__free(j);
		rc = tc__objs_key_set(&c->srv->objs, key, id,
				      flags & TC_RF_EXPECT, expect, &gen,
				      c->err, sizeof(c->err));
		if (rc < 0)
			return rc;
		tc__durable_key_changed(c->srv->durable, &c->srv->objs, key);
		off = tc__srv_reply_begin(c, r);
		tc__buf_put_u64(&c->out, gen);
		tc__srv_reply_end(c, off);
		return 0;
	}
	j->c = c;
	j->r = *r;
	j->s = c->srv;
	snprintf(j->key, sizeof(j->key), "%s", key);
	j->flags = flags;
	j->expect = expect;
	j->job.run = key_set_run;
	j->job.done = key_set_done;
	tc__srv_defer(c);
	tc__jobs_submit(c->srv->io_jobs, &j->job);
	return 0; /* the reply comes when the global store answered */
}

int on_keys(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1];
	char *json;
	int rc = tc__srv_read_str(c, r, "key", key, sizeof(key));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	json = tc__objs_keys_json(&c->srv->objs, key, &rc, c->err,
				  sizeof(c->err));
	if (rc < 0)
		return rc;
	tc__srv_reply_json(c, r, json);
	return 0;
}
