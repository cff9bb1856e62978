/*
 * srv_ha.c - policy ha's "should": a replica on another node.
 *
 * Once an ha artifact is durable (recorded on the shared disk), this
 * daemon asks the global store for the live nodes with a peer address
 * other than itself, ranked by topology (PEERS), and asks the first one's
 * peer server to pull the artifact from this node's peer server
 * (REPLICATE_REQ, through cfg->ha: the daemon's main owns the peer
 * layer).  The next node is tried when one fails, up to HA_TRIES.  Both
 * calls block, so they run on an I/O worker; the loop only starts the
 * job, records its outcome on the artifact's durable record
 * (tc__durable_ha_set: what the reply's and inspect's "degraded" say)
 * and resumes the replies that wait for it.
 *
 * A put or import that waits for its persistence also waits for this,
 * at most ha_wait_ms: then it replies with "pending" and the
 * replication goes on; inspect shows how it ended.
 *
 * Every ha_check_ms the replicas are checked against the global store
 * (ha_check): the other node's copy is an ordinary cache artifact there,
 * which it may evict, and that node may leave; after a restart this
 * daemon knows nothing of the replicas it made.  A replica the store
 * names is recorded as the one; none named and the artifact in this
 * node's memory: another is made; none named and the bytes on the disk
 * only: recorded as failed, saying so, and made once they are in memory.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/compiler.h"
#include "common/log.h"
#include "durable.h"
#include "proto/gsp.h"
#include "tcast/errors.h"

#include "server_internal.h"

#define HA_TRIES   3		    /* nodes asked, at most */
#define HA_PULL_MS (10 * 60 * 1000) /* one node's pull, at most */

struct ha_wait {
	tc__srv_ha_cont *cont;
	void *arg;
	uint64_t deadline_ms; /* tc__now_ms() */
	struct ha_wait *next;
};

/* One replication in flight: at most one per artifact. */
struct ha_rep {
	struct tc__job job;
	struct server *s;
	struct tc__obj *o; /* leased: its host copy is what the node pulls */
	char id[TC_ID_LEN + 1];
	char source[160];      /* this node's peer server */
	struct ha_wait *waits; /* replies waiting for it */
	struct ha_rep *next;
	/* the worker's result */
	int rc;
	char node[TC_GSP_MAX_NAME + 1]; /* the node that holds it */
	char why[512];			/* every node tried, and why not */
};

static void waits_run(struct ha_wait *w)
{
	while (w) {
		struct ha_wait *next = w->next;

		w->cont(w->arg);
		tc__free(w);
		w = next;
	}
}

static void ha_run(struct tc__job *job)
{
	struct ha_rep *h = (struct ha_rep *)job;
	const struct tc__ha_ops *ops = h->s->cfg->ha;
	struct tc__gsp_source src[8];
	uint32_t n = 0;
	size_t used = 0;
	char err[512];
	int rc;

	rc = tc__cluster_peers(h->s->cluster, src, 8, &n, err, sizeof(err));
	if (rc < 0) {
		h->rc = rc;
		snprintf(h->why, sizeof(h->why),
			 "cannot ask the global store for nodes: %s", err);
		return;
	}
	if (!n) {
		h->rc = TC_ENOTFOUND;
		snprintf(h->why, sizeof(h->why),
			 "no other live node in the cluster");
		return;
	}
	h->rc = TC_ENOTFOUND;
	for (uint32_t i = 0; i < n && i < HA_TRIES; i++) {
		err[0] = '\0';
		rc = ops->replicate(ops->arg, src[i].peer_addr, h->id,
				    h->source, HA_PULL_MS, err, sizeof(err));
		if (rc == 0) {
			h->rc = 0;
			snprintf(h->node, sizeof(h->node), "%s", src[i].name);
			return;
		}
		h->rc = rc;
		if (used < sizeof(h->why))
			used += (size_t)snprintf(
				h->why + used, sizeof(h->why) - used,
				"%snode %s: %s", used ? "; " : "", src[i].name,
				err[0] ? err : tc_strerror(rc));
	}
}

static void ha_done(struct tc__job *job)
{
	struct ha_rep *h = (struct ha_rep *)job;
	struct server *s = h->s;

	for (struct ha_rep **p = &s->ha_reps; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			break;
		}
	if (h->rc == 0) {
		tc__durable_ha_set(s->durable, h->id, TC_HA_DONE, h->node,
				   NULL);
		tc__log(TC_LOG_INFO, "%s: ha replica made on node %s", h->id,
			h->node);
	} else {
		tc__durable_ha_set(s->durable, h->id, TC_HA_FAILED, NULL,
				   h->why);
		tc__log(TC_LOG_WARN, "%s: ha: no replica on another node: %s",
			h->id, h->why);
	}
	waits_run(h->waits);
	tc__objs_unlease(&s->objs, h->o);
	tc__free(h);
}

static struct ha_rep *rep_of(struct server *s, const char *id)
{
	for (struct ha_rep *h = s->ha_reps; h; h = h->next)
		if (!strcmp(h->id, id))
			return h;
	return NULL;
}

bool tc__srv_ha_start(struct server *s, struct tc__obj *o, bool wait,
		      tc__srv_ha_cont *cont, void *arg)
{
	struct ha_rep *h;
	struct ha_wait *w;

	/* Not in a cluster: the reply says so (tc__durable_degraded). */
	if (!s->cluster || !tc__durable_has(s->durable, o->id))
		return false;
	if (tc__durable_ha_state(s->durable, o->id) == TC_HA_DONE)
		return false;
	if (!s->cfg->ha) {
		tc__durable_ha_set(s->durable, o->id, TC_HA_FAILED, NULL,
				   "this daemon has no peer server "
				   "(peer_listen) for another node to pull "
				   "from");
		return false;
	}
	h = rep_of(s, o->id);
	if (!h && !o->shm) {
		/* The peer server sends host replicas only. */
		tc__durable_ha_set(s->durable, o->id, TC_HA_FAILED, NULL,
				   "its bytes are not in this node's host "
				   "memory (a GPU-only import), which is what "
				   "another node pulls from");
		return false;
	}
	if (!h) {
		h = tc__calloc(1, sizeof(*h));
		if (!h) {
			tc__durable_ha_set(s->durable, o->id, TC_HA_FAILED,
					   NULL, "out of memory");
			return false;
		}
		h->s = s;
		h->o = o;
		/* Kept in memory (and served) while a node pulls it. */
		tc__objs_lease(&s->objs, o);
		snprintf(h->id, sizeof(h->id), "%s", o->id);
		snprintf(h->source, sizeof(h->source), "%s",
			 s->cfg->peer_bound[0] ? s->cfg->peer_bound :
						 s->cfg->peer_listen);
		h->job.run = ha_run;
		h->job.done = ha_done;
		h->next = s->ha_reps;
		s->ha_reps = h;
		tc__durable_ha_set(s->durable, o->id, TC_HA_PENDING, NULL,
				   NULL);
		tc__jobs_submit(s->io_jobs, &h->job);
	}
	if (!wait || s->cfg->ha_wait_ms <= 0)
		return false;
	w = tc__calloc(1, sizeof(*w));
	if (!w)
		return false; /* reply now: "pending" */
	w->cont = cont;
	w->arg = arg;
	w->deadline_ms = tc__now_ms() + (uint64_t)s->cfg->ha_wait_ms;
	w->next = h->waits;
	h->waits = w;
	return true;
}

/* ------------------------------------------------ the periodic check */

/* A replica made or failed this recently is left alone: the holder's
 * report of it reaches the global store with its next batch. */
#define HA_SETTLE_MS 5000
#define HA_RETRY_MS  1000 /* the store was unreachable: again after */

struct ha_check {
	struct tc__job job;
	struct server *s;
	char *ids;     /* n ids, TC_ID_LEN + 1 bytes each */
	char *holders; /* n node names, TC_GSP_MAX_NAME + 1 each; "" none */
	size_t n;
	size_t done; /* ids the store answered for */
	char err[256];
};

static char *holder_of(struct ha_check *k, size_t i)
{
	return k->holders + i * (TC_GSP_MAX_NAME + 1);
}

static void check_run(struct tc__job *job)
{
	struct ha_check *k = (struct ha_check *)job;

	for (; k->done < k->n; k->done++) {
		const char *id = k->ids + k->done * (TC_ID_LEN + 1);
		struct tc__gsp_source src[8];
		char got[TC_ID_LEN + 1];
		uint64_t gen = 0;
		uint32_t n = 0;
		int rc = tc__cluster_resolve(k->s->cluster, id, got, &gen, src,
					     8, &n, k->err, sizeof(k->err));

		/* The store unreachable: nothing learnt, nothing changed. */
		if (rc == TC_ENODAEMON)
			break;
		if (rc < 0)
			n = 0; /* it knows no holder */
		for (uint32_t j = 0; j < n; j++)
			if (src[j].distance != 0 && src[j].complete &&
			    src[j].tier != TC_GSP_TIER_DISK &&
			    src[j].tier != TC_GSP_TIER_SHARED) {
				snprintf(holder_of(k, k->done),
					 TC_GSP_MAX_NAME + 1, "%s",
					 src[j].name);
				break;
			}
	}
}

static void check_done(struct tc__job *job)
{
	struct ha_check *k = (struct ha_check *)job;
	struct server *s = k->s;
	uint64_t now = (uint64_t)time(NULL) * 1000;

	s->ha_checking = false;
	if (k->done < k->n) {
		/* Not joined yet (just started) or the store is down: look
		 * again soon rather than a whole period later. */
		tc__log(TC_LOG_DEBUG, "ha check stopped after %zu of %zu: %s",
			k->done, k->n, k->err);
		s->ha_check_next =
			TC_MIN(s->ha_check_next, tc__now_ms() + HA_RETRY_MS);
	}
	for (size_t i = 0; i < k->done && !s->stopping; i++) {
		const char *id = k->ids + i * (TC_ID_LEN + 1);
		const char *holder = holder_of(k, i);
		struct tc__dart *a = tc__durable_find(s->durable, &s->objs, id);
		struct tc__obj *o;
		char why[600];

		if (!a || a->ha == TC_HA_PENDING || rep_of(s, id) ||
		    (a->ha != TC_HA_NONE && now < a->ha_unix_ms + HA_SETTLE_MS))
			continue;
		if (holder[0]) {
			if (a->ha != TC_HA_DONE || strcmp(a->ha_node, holder)) {
				tc__log(TC_LOG_INFO,
					"%s: ha replica found on node %s", id,
					holder);
				tc__durable_ha_set(s->durable, id, TC_HA_DONE,
						   holder, NULL);
			}
			continue;
		}
		if (a->ha == TC_HA_DONE)
			snprintf(why, sizeof(why),
				 "the replica on node %s is gone (evicted "
				 "there, or the node left)",
				 a->ha_node);
		else if (a->ha == TC_HA_FAILED)
			snprintf(why, sizeof(why), "%s", a->ha_why);
		else
			snprintf(why, sizeof(why),
				 "the global store names no other node "
				 "holding it");
		o = tc__map_get(&s->objs.by_id, id);
		if (o && !o->dead && o->shm) {
			if (a->ha == TC_HA_DONE)
				tc__log(TC_LOG_WARN,
					"%s: ha: %s; making another", id, why);
			/* Not DONE any more, so a new replication starts. */
			tc__durable_ha_set(s->durable, id, TC_HA_FAILED, NULL,
					   why);
			tc__srv_ha_start(s, o, false, NULL, NULL);
			continue;
		}
		if (a->ha == TC_HA_FAILED && strstr(a->ha_why, "made again"))
			continue;
		if (a->ha == TC_HA_DONE)
			tc__log(TC_LOG_WARN, "%s: ha: %s", id, why);
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
			 "; made again once its bytes are in this node's "
			 "memory (its next use)");
		tc__durable_ha_set(s->durable, id, TC_HA_FAILED, NULL, why);
	}
	tc__free(k->ids);
	tc__free(k->holders);
	tc__free(k);
}

static void check_start(struct server *s)
{
	struct ha_check *k;
	size_t n;
	char *ids = tc__durable_ha_ids(s->durable, &n);

	if (!ids)
		return;
	k = tc__calloc(1, sizeof(*k));
	if (!k || !(k->holders = tc__calloc(n, TC_GSP_MAX_NAME + 1))) {
		tc__free(k);
		tc__free(ids);
		return;
	}
	k->s = s;
	k->ids = ids;
	k->n = n;
	k->job.run = check_run;
	k->job.done = check_done;
	s->ha_checking = true;
	tc__jobs_submit(s->io_jobs, &k->job);
}

void tc__srv_ha_tick(struct server *s, uint64_t now_ms)
{
	if (s->cluster && s->cfg->ha && s->cfg->ha_check_ms > 0 &&
	    !s->ha_checking && now_ms >= s->ha_check_next) {
		s->ha_check_next = now_ms + (uint64_t)s->cfg->ha_check_ms;
		check_start(s);
	}
	for (struct ha_rep *h = s->ha_reps; h; h = h->next) {
		struct ha_wait **p = &h->waits, *late = NULL;

		while (*p) {
			struct ha_wait *w = *p;

			if (w->deadline_ms > now_ms) {
				p = &w->next;
				continue;
			}
			*p = w->next;
			w->next = late;
			late = w;
		}
		/* Replied "pending"; the replication goes on. */
		waits_run(late);
	}
}

/* ------------------------------------------------- replies that wait */

struct ha_finish {
	struct conn *c;
	struct req r;
	int rc;
	char err[512];
	tc__srv_reply_fn *reply;
	void *arg;
	void (*release)(void *arg);
	struct tc__obj *o; /* leased while the reply waits */
};

static void finish_now(struct ha_finish *f)
{
	tc__srv_finish(f->c, &f->r, f->rc, f->err, f->reply, f->arg);
	if (f->release)
		f->release(f->arg);
}

static void finish_waited(void *arg)
{
	struct ha_finish *f = arg;
	struct server *s = f->c->srv;

	if (f->rc == 0 && f->o->dead) {
		f->rc = TC_ENOTFOUND;
		snprintf(f->err, sizeof(f->err),
			 "%s was removed while its ha replica was being made",
			 f->o->id);
	}
	finish_now(f);
	tc__objs_unlease(&s->objs, f->o);
	tc__free(f);
}

void tc__srv_finish_created(struct conn *c, const struct req *r, int rc,
			    const char *err, tc__srv_reply_fn *reply, void *arg,
			    void (*release)(void *arg),
			    const struct persist_req *p, struct tc__obj *o)
{
	struct ha_finish now = { c, *r, rc, "", reply, arg, release, o };
	struct ha_finish *f;

	snprintf(now.err, sizeof(now.err), "%s", err ? err : "");
	if (rc < 0 || !p->on || p->policy != TC_POLICY_HA || !o) {
		finish_now(&now);
		return;
	}
	f = tc__malloc(sizeof(*f));
	if (!f) {
		/* Replied at once: "pending" then, and inspect tells. */
		tc__srv_ha_start(c->srv, o, false, NULL, NULL);
		finish_now(&now);
		return;
	}
	*f = now;
	tc__objs_lease(&c->srv->objs, o);
	if (!tc__srv_ha_start(c->srv, o, p->wait, finish_waited, f)) {
		tc__objs_unlease(&c->srv->objs, o);
		tc__free(f);
		finish_now(&now);
	}
}
