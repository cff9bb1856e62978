/*
 * cluster.c - the daemon's membership in a cluster (cluster.h).
 *
 * The loop thread only queues (inventory changes, key moves) under `mu`;
 * the cluster thread owns the connection and does every blocking call.
 * `io` serializes calls on the connection between the cluster thread and
 * resolve callers (workers).  The inventory is the daemon's own view of
 * its replicas: REGISTER always sends all of it, so after any reconnect
 * the global store's view is whole again; deltas only follow it.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/tensor.h"
#include "config.h"
#include "obj.h"
#include "gsc.h"
#include "net/auth.h"
#include "net/ev.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CALL_MS	       2000 /* one request to the global store */
#define KEYS_GET_RETRY_MS                                                \
	600000 /* a store that did not know KEYS_GET is asked key by key \
		  this long before a batch is tried again */

/* One replica of the inventory.  `sent`: the global store has it since
 * the last (re)registration. */
struct crep {
	struct tc__gsp_replica r;  /* r.have: a filling replica's chunks */
	struct tc__gsp_artifact a; /* the record sent with it */
	bool sent;
	bool stale;	  /* filling: chunks arrived since it was sent */
	uint64_t sent_ms; /* tc__now_ms() of the last send */
	uint32_t copies;  /* tier gpu: copies on that device (a replica,
			     published bindings); one record for them */
	struct crep *next;
};

enum { OP_DEL, OP_KEY };

struct cop {
	int kind;
	char id[TC_GSP_MAX_ID + 1];
	uint8_t tier;
	uint32_t device;
	char key[TC_GSP_MAX_KEY + 1];
	char prev[TC_GSP_MAX_ID + 1];
	uint64_t gen; /* OP_KEY: the daemon's generation (KF_AT) */
	struct cop *next;
};

/* A rank's membership the daemon keeps renewed for a local connection
 * (GROUP hold): JOIN every third of the lease while `owner` is open;
 * `ended`: the connection closed first, so the rank aborts the group. */
struct chold {
	uintptr_t owner;
	struct tc__gsp_group_req q; /* the JOIN (node "": this node) */
	uint64_t next_ms;	    /* tc__now_ms() of the next renewal */
	bool ended;
	struct chold *next;
};

struct tc__cluster {
	pthread_t th;
	pthread_mutex_t mu; /* everything below up to `io` */
	pthread_cond_t cv;
	bool stop, started;
	struct crep *reps;
	struct cop *ops, **ops_tail;
	struct chold *holds;
	bool dirty; /* a rep is unsent, an op is queued or a hold ended */
	bool wake;  /* the loop's wait is out of date: a hold was added
		       (renew it sooner than the heartbeat) or the
		       connection was marked down (register now) */
	struct tc__gsp_node node;
	uint32_t uploads;
	/* figures */
	uint64_t registers, failures, key_conflicts, sent_ops;
	uint64_t key_cas, key_cas_lost, key_cas_down; /* tc__cluster_key_cas */
	char last_err[256];
	bool connected;
	uint64_t node_id;
	uint32_t lease_ms, hb_ms;
	uint64_t joined_unix_ms;
	uint64_t keys_get_off_until_ms; /* tc__now_ms(): KEYS_GET unknown
					   there, ask key by key till then */

	const struct tc__objs_observer *ob; /* uploads; borrowed */

	pthread_mutex_t io; /* the connection */
	struct tc__gsc g;
	char global[TC_GSP_MAX_ADDR + 1];
	struct tc__auth_secret sec;
	struct tc__tls_ctx *tls; /* NULL: TLS off */
};

static void crep_free(struct crep *c)
{
	tc__gsp_replica_release(&c->r);
	tc__gsp_artifact_release(&c->a);
	tc__free(c);
}

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ hooks */

static struct crep *crep_new(const char *id, int tier, uint32_t device,
			     uint64_t size, const struct tc__table *t,
			     const char *policy)
{
	struct tc__buf b = TC_BUF_INIT;
	struct crep *c = tc__calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	snprintf(c->r.id, sizeof(c->r.id), "%s", id);
	c->r.tier = (uint8_t)tier;
	c->r.device = device;
	c->copies = 1;
	c->r.size = size;
	c->r.nchunks = (uint32_t)tc__chunk_count(size);
	c->a.size = size;
	c->a.nchunks = c->r.nchunks;
	snprintf(c->a.id, sizeof(c->a.id), "%s", id);
	snprintf(c->a.policy, sizeof(c->a.policy), "%s", policy ? policy : "");
	if (t) {
		tc__proto_put_table(&b, t);
		if (!b.oom && b.len <= TC_GSP_MAX_TABLE) {
			c->a.table = b.data; /* detach */
			c->a.table_len = (uint32_t)b.len;
			tc__buf_init(&b);
		}
		tc__buf_release(&b);
	}
	return c;
}

void tc__cluster_replica_add(struct tc__cluster *cl, const char *id, int tier,
			     uint32_t device, uint64_t size,
			     const struct tc__table *t, const char *policy)
{
	struct crep *c, **pp;

	if (!cl || !(c = crep_new(id, tier, device, size, t, policy)))
		return;
	pthread_mutex_lock(&cl->mu);
	for (pp = &cl->reps; *pp; pp = &(*pp)->next) {
		struct crep *o = *pp;

		if (!strcmp(o->r.id, id) && o->r.tier == tier &&
		    o->r.device == device) {
			if (tier == TC_GSP_TIER_GPU) {
				/* Another GPU copy there: the store has
				 * the record already. */
				o->copies++;
				pthread_mutex_unlock(&cl->mu);
				crep_free(c);
				return;
			}
			*pp = o->next;
			crep_free(o);
			break;
		}
	}
	c->next = cl->reps;
	cl->reps = c;
	cl->dirty = true;
	pthread_cond_signal(&cl->cv);
	pthread_mutex_unlock(&cl->mu);
}

static void op_queue(struct tc__cluster *cl, struct cop *op)
{
	op->next = NULL;
	*cl->ops_tail = op;
	cl->ops_tail = &op->next;
	cl->dirty = true;
	pthread_cond_signal(&cl->cv);
}

void tc__cluster_replica_del(struct tc__cluster *cl, const char *id, int tier,
			     uint32_t device)
{
	struct crep **pp;
	struct cop *op;
	bool was_sent = false, found = false;

	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	for (pp = &cl->reps; *pp; pp = &(*pp)->next) {
		struct crep *o = *pp;

		if (!strcmp(o->r.id, id) && o->r.tier == tier &&
		    o->r.device == device) {
			if (o->copies > 1) { /* another GPU copy stays */
				o->copies--;
				break;
			}
			*pp = o->next;
			was_sent = o->sent;
			found = true;
			crep_free(o);
			break;
		}
	}
	/* Never sent: the global store never heard of it. */
	if (found && was_sent && (op = tc__calloc(1, sizeof(*op)))) {
		op->kind = OP_DEL;
		snprintf(op->id, sizeof(op->id), "%s", id);
		op->tier = (uint8_t)tier;
		op->device = device;
		op_queue(cl, op);
	}
	pthread_mutex_unlock(&cl->mu);
}

static struct crep *find_host(struct tc__cluster *cl, const char *id)
{
	for (struct crep *c = cl->reps; c; c = c->next)
		if (!strcmp(c->r.id, id) && c->r.tier == TC_GSP_TIER_HOST &&
		    c->r.device == 0)
			return c;
	return NULL;
}

void tc__cluster_filling(struct tc__cluster *cl, const char *id,
			 const struct tc__table *t, const char *policy, bool up)
{
	struct crep *c, *old;

	if (!cl)
		return;
	if (!up) {
		pthread_mutex_lock(&cl->mu);
		old = find_host(cl, id);
		pthread_mutex_unlock(&cl->mu);
		/* Only a filling one goes: a sealed one stays. */
		if (old && old->r.have)
			tc__cluster_replica_del(cl, id, TC_GSP_TIER_HOST, 0);
		return;
	}
	c = crep_new(id, TC_GSP_TIER_HOST, 0, t->total_bytes, t, policy);
	if (!c)
		return;
	c->r.have = tc__calloc(tc__gsp_bitmap_len(c->r.nchunks) + 1, 1);
	pthread_mutex_lock(&cl->mu);
	if (!c->r.have || find_host(cl, id)) {
		pthread_mutex_unlock(&cl->mu);
		crep_free(c);
		return;
	}
	c->next = cl->reps;
	cl->reps = c;
	cl->dirty = true;
	pthread_cond_signal(&cl->cv);
	pthread_mutex_unlock(&cl->mu);
}

/* The loop's wait is out of date (mu held): it wakes and works out the
 * next one (a new hold's renewal, a registration, filling news due). */
static void kick(struct tc__cluster *cl)
{
	cl->wake = true;
	pthread_cond_signal(&cl->cv);
}

/* The connection broke under a call: the cluster thread reconnects. */
static void lost(struct tc__cluster *cl)
{
	pthread_mutex_lock(&cl->mu);
	cl->connected = false;
	kick(cl);
	pthread_mutex_unlock(&cl->mu);
}

void tc__cluster_filling_have(struct tc__cluster *cl, const char *id,
			      const uint64_t *chunks, uint32_t n)
{
	struct crep *c;

	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	c = find_host(cl, id);
	if (c && c->r.have) {
		bool was = c->stale;

		for (uint32_t i = 0; i < n; i++)
			if (chunks[i] < c->r.nchunks)
				c->r.have[chunks[i] / 8] |=
					(uint8_t)(1u << chunks[i] % 8);
		c->stale = c->sent;
		if (c->stale &&
		    tc__now_ms() - c->sent_ms >= TC_CLUSTER_HAVE_MS) {
			c->sent = false;
			c->stale = false;
			cl->dirty = true;
			pthread_cond_signal(&cl->cv);
		} else if (c->stale && !was) {
			/* Due in under TC_CLUSTER_HAVE_MS: the loop, maybe
			 * asleep till its next heartbeat, waits for it. */
			kick(cl);
		}
	}
	pthread_mutex_unlock(&cl->mu);
}

/* Filling replicas whose news waited out TC_CLUSTER_HAVE_MS go again
 * (mu held).  Returns whether one still waits. */
static bool flush_stale(struct tc__cluster *cl)
{
	uint64_t now = tc__now_ms();
	bool waiting = false;

	for (struct crep *c = cl->reps; c; c = c->next) {
		if (!c->stale)
			continue;
		if (now - c->sent_ms >= TC_CLUSTER_HAVE_MS) {
			c->stale = false;
			c->sent = false;
			cl->dirty = true;
		} else {
			waiting = true;
		}
	}
	return waiting;
}

void tc__cluster_key_set(struct tc__cluster *cl, const char *key,
			 const char *id, const char *prev, uint64_t gen)
{
	struct cop *op;

	if (!cl || strlen(key) > TC_GSP_MAX_KEY)
		return;
	op = tc__calloc(1, sizeof(*op));
	if (!op)
		return;
	op->kind = OP_KEY;
	snprintf(op->key, sizeof(op->key), "%s", key);
	snprintf(op->id, sizeof(op->id), "%s", id);
	snprintf(op->prev, sizeof(op->prev), "%s", prev ? prev : "");
	op->gen = gen;
	pthread_mutex_lock(&cl->mu);
	op_queue(cl, op);
	pthread_mutex_unlock(&cl->mu);
}

void tc__cluster_set_peer_addr(struct tc__cluster *cl, const char *addr)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	if (strcmp(cl->node.peer_addr, addr)) {
		snprintf(cl->node.peer_addr, sizeof(cl->node.peer_addr), "%s",
			 addr);
		/* the global store learns it by registering again */
		cl->connected = false;
		kick(cl);
	}
	pthread_mutex_unlock(&cl->mu);
}

void tc__cluster_set_uploads(struct tc__cluster *cl, uint32_t uploads)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	cl->uploads = uploads;
	pthread_mutex_unlock(&cl->mu);
}

/* ------------------------------------------------------------ thread */

static void set_err(struct tc__cluster *cl, const char *what, const char *why)
{
	pthread_mutex_lock(&cl->mu);
	snprintf(cl->last_err, sizeof(cl->last_err), "%s: %s", what, why);
	cl->failures++;
	pthread_mutex_unlock(&cl->mu);
}

/* Connect, authenticate, register with the whole inventory.  Called with
 * `io` held. */
static int join(struct tc__cluster *cl)
{
	struct tc__gsp_replica *reps = NULL;
	struct tc__gsp_node node;
	struct crep *c;
	struct cop *op, *next, *keys = NULL, **kt = &keys;
	uint32_t n = 0, i = 0;
	uint64_t id;
	uint32_t lease, hb;
	int ret;

	ret = tc__gsc_connect(&cl->g, cl->global, &cl->sec, TC_AUTH_ROLE_DAEMON,
			      cl->node.name);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&cl->mu);
	node = cl->node;
	for (c = cl->reps; c; c = c->next)
		n++;
	reps = tc__calloc(n ? n : 1, sizeof(*reps));
	if (!reps) {
		pthread_mutex_unlock(&cl->mu);
		return -ENOMEM;
	}
	/* Borrow the have bitmaps: reps outlive this call only under mu,
	 * and hooks never change a crep in place (they replace it), so
	 * copy the plain fields and leave `have` NULL (complete). */
	for (c = cl->reps; c; c = c->next) {
		reps[i] = c->r;
		reps[i].have = NULL;
		if (c->r.have) {
			/* A copy: the crep may go while we register. */
			uint32_t bl = tc__gsp_bitmap_len(c->r.nchunks);

			reps[i].have = tc__malloc(bl ? bl : 1);
			if (reps[i].have)
				memcpy(reps[i].have, c->r.have, bl);
			else
				continue; /* sent with the drain */
		}
		c->sent = false;
		c->sent_ms = tc__now_ms();
		i++;
	}
	n = i;
	/* Deletes are moot: the list below replaces everything. */
	for (op = cl->ops; op; op = next) {
		next = op->next;
		if (op->kind == OP_DEL) {
			tc__free(op);
		} else {
			*kt = op;
			kt = &op->next;
		}
	}
	*kt = NULL;
	cl->ops = keys;
	cl->ops_tail = keys ? kt : &cl->ops; /* kt may point at `keys` */
	pthread_mutex_unlock(&cl->mu);
	ret = tc__gsc_register(&cl->g, &node, reps, n, &id, &lease, &hb);
	for (i = 0; i < n; i++)
		tc__free(reps[i].have);
	tc__free(reps);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&cl->mu);
	cl->connected = true;
	cl->node_id = id;
	cl->lease_ms = lease;
	cl->hb_ms = hb ? hb : 1000;
	cl->registers++;
	cl->joined_unix_ms = unix_ms();
	/* Their records (tables) still have to go: mark them unsent so the
	 * drain sends each REPLICA_ADD with its artifact record once. */
	cl->dirty = true;
	pthread_mutex_unlock(&cl->mu);
	tc__log(TC_LOG_INFO,
		"joined the cluster at %s as node '%s' (id %llu) with %u "
		"replicas",
		cl->global, node.name, (unsigned long long)id, n);
	return 0;
}

/* A queued key change (io held).  A new key goes as a plain set that
 * keeps the daemon's generation if the global store has none (KF_AT); a
 * move as "from the id it named" (PREV). */
static int send_key_op(struct tc__cluster *cl, const struct cop *op,
		       uint64_t *gen)
{
	if (op->prev[0])
		return tc__gsc_key_set(&cl->g, op->key, op->id, TC_GSP_KF_PREV,
				       0, op->prev, gen);
	return tc__gsc_key_set(&cl->g, op->key, op->id, TC_GSP_KF_AT, op->gen,
			       NULL, gen);
}

/* Send one queued change.  Returns 1 when something was sent, 0 when
 * nothing was queued, < 0 on a connection failure (the change stays
 * queued). */
static int drain_one(struct tc__cluster *cl)
{
	struct tc__gsp_replica r;
	struct tc__gsp_artifact a;
	struct crep *c;
	struct cop *op = NULL;
	uint64_t gen;
	bool filling = false;
	int ret;

	pthread_mutex_lock(&cl->mu);
	for (c = cl->reps; c; c = c->next)
		if (!c->sent)
			break;
	if (c) {
		/* Copy out: the hook may replace (free) the crep once mu is
		 * dropped, so c is not read after that. */
		r = c->r;
		r.have = NULL;
		filling = c->r.have != NULL;
		if (c->r.have) {
			uint32_t bl = tc__gsp_bitmap_len(c->r.nchunks);

			r.have = tc__malloc(bl ? bl : 1);
			if (r.have)
				memcpy(r.have, c->r.have, bl);
		}
		c->sent_ms = tc__now_ms();
		c->stale = false;
		a = c->a;
		a.table = NULL;
		a.digests = NULL;
		if (c->a.table_len) {
			a.table = tc__malloc(c->a.table_len);
			if (a.table)
				memcpy(a.table, c->a.table, c->a.table_len);
			else
				a.table_len = 0;
		}
		a.digests_len = 0;
		c->sent = true;
	} else if (cl->ops) {
		op = cl->ops;
		cl->ops = op->next;
		if (!cl->ops)
			cl->ops_tail = &cl->ops;
	} else {
		cl->dirty = false;
	}
	pthread_mutex_unlock(&cl->mu);
	if (!c && !op)
		return 0;
	pthread_mutex_lock(&cl->io);
	if (filling && !r.have) {
		ret = -ENOMEM; /* never report a filling replica complete */
		tc__free(a.table);
	} else if (c) {
		ret = tc__gsc_replica_add(&cl->g, &r, &a);
		tc__free(a.table);
		tc__free(r.have);
	} else if (op->kind == OP_DEL) {
		ret = tc__gsc_replica_del(&cl->g, op->id, op->tier, op->device);
	} else {
		ret = send_key_op(cl, op, &gen);
	}
	pthread_mutex_unlock(&cl->io);
	if (ret == TC_ECLOSED || ret == -ETIMEDOUT || cl->g.fd < 0) {
		/* the connection broke: keep the change for next time */
		pthread_mutex_lock(&cl->mu);
		if (c) {
			for (struct crep *x = cl->reps; x; x = x->next)
				if (!strcmp(x->r.id, r.id) &&
				    x->r.tier == r.tier &&
				    x->r.device == r.device)
					x->sent = false;
		} else if (op->kind == OP_KEY) {
			op->next = cl->ops;
			cl->ops = op;
			if (!op->next)
				cl->ops_tail = &op->next;
			op = NULL;
		}
		cl->connected = false;
		pthread_mutex_unlock(&cl->mu);
		tc__free(op);
		return ret < 0 ? ret : TC_ECLOSED;
	}
	if (ret < 0) {
		tc__log(TC_LOG_WARN, "global store refused %s: %s",
			c		   ? "a replica" :
			op->kind == OP_KEY ? "a key" :
					     "a delete",
			cl->g.err);
		pthread_mutex_lock(&cl->mu);
		if (op && op->kind == OP_KEY && ret == TC_ECONFLICT)
			cl->key_conflicts++;
		snprintf(cl->last_err, sizeof(cl->last_err), "%s", cl->g.err);
		pthread_mutex_unlock(&cl->mu);
	} else {
		pthread_mutex_lock(&cl->mu);
		cl->sent_ops++;
		pthread_mutex_unlock(&cl->mu);
	}
	tc__free(op);
	return 1;
}

/* Holds due (io not held): renew each rank's lease, or abort for a rank
 * whose connection closed.  A decided group, a refusal or a sent abort
 * ends a hold.  Returns 0, or < 0 when the connection broke (the hold
 * stays for the next connection). */
static int renew_holds(struct tc__cluster *cl)
{
	for (;;) {
		struct chold *h, **pp;
		struct tc__gsp_group_req q;
		struct tc__gsp_group rec;
		uintptr_t owner = 0;
		bool ended = false, done;
		uint64_t now = tc__now_ms();
		int type, ret;

		pthread_mutex_lock(&cl->mu);
		for (h = cl->holds; h; h = h->next)
			if (h->ended || h->next_ms <= now)
				break;
		if (h) {
			q = h->q;
			owner = h->owner;
			ended = h->ended;
			h->next_ms = now + h->q.lease_ms / 3;
		}
		pthread_mutex_unlock(&cl->mu);
		if (!h)
			return 0;
		type = ended ? TC_GSP_GROUP_ABORT : TC_GSP_GROUP_JOIN;
		if (ended)
			snprintf(q.reason, sizeof(q.reason),
				 "rank %u on node '%s': its connection to the "
				 "daemon closed (the rank's process is gone)",
				 q.rank, cl->node.name);
		pthread_mutex_lock(&cl->io);
		ret = tc__gsc_group(&cl->g, type, &q, &rec);
		pthread_mutex_unlock(&cl->io);
		if (ret == TC_ECLOSED || ret == -ETIMEDOUT || cl->g.fd < 0) {
			pthread_mutex_lock(&cl->mu);
			cl->connected = false;
			pthread_mutex_unlock(&cl->mu);
			return ret < 0 ? ret : TC_ECLOSED;
		}
		done = ended || ret < 0 || rec.state != TC_GSP_GSTATE_OPEN;
		if (ret < 0)
			tc__log(TC_LOG_WARN,
				"group '%s' rank %u: the global store refused "
				"%s: %s",
				q.group, q.rank,
				ended ? "the abort" : "a renewal", cl->g.err);
		else
			tc__gsp_group_release(&rec);
		if (ended && ret == 0)
			tc__log(TC_LOG_INFO,
				"group '%s': rank %u's connection closed; "
				"aborted for it",
				q.group, q.rank);
		if (!done)
			continue;
		pthread_mutex_lock(&cl->mu);
		for (pp = &cl->holds; *pp; pp = &(*pp)->next) {
			h = *pp;
			if (h->owner == owner && h->q.rank == q.rank &&
			    !strcmp(h->q.group, q.group)) {
				*pp = h->next;
				tc__free(h);
				break;
			}
		}
		pthread_mutex_unlock(&cl->mu);
	}
}

static uint32_t jitter(uint32_t ms)
{
	uint32_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)tc__now_ns();
	/* +-50 % so that many daemons do not come back in step */
	return ms / 2 + r % (ms + 1);
}

/* Sleep up to `ms`; queued work ends it early only when `on_work`
 * (while the store is unreachable only stop does, so a busy daemon does
 * not turn its backoff into a reconnect storm). */
static void wait_ms(struct tc__cluster *cl, uint32_t ms, bool on_work)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&cl->mu);
	while (!cl->stop && !(on_work && (cl->dirty || cl->wake)))
		if (pthread_cond_timedwait(&cl->cv, &cl->mu, &ts) == ETIMEDOUT)
			break;
	if (on_work)
		cl->wake = false;
	pthread_mutex_unlock(&cl->mu);
}

static void *cluster_main(void *arg)
{
	struct tc__cluster *cl = arg;
	uint32_t backoff = BACKOFF_MIN_MS;
	uint64_t next_hb = 0;
	bool logged_down = false;

	for (;;) {
		bool stop, connected;
		int ret;

		pthread_mutex_lock(&cl->mu);
		stop = cl->stop;
		connected = cl->connected;
		pthread_mutex_unlock(&cl->mu);
		if (stop)
			break;
		if (!connected) {
			pthread_mutex_lock(&cl->io);
			ret = join(cl);
			if (ret < 0)
				tc__gsc_close(&cl->g);
			pthread_mutex_unlock(&cl->io);
			if (ret < 0) {
				set_err(cl, "cannot join", cl->g.err);
				if (!logged_down)
					tc__log(TC_LOG_WARN,
						"global store %s unreachable "
						"(%s); serving local clients, "
						"retrying",
						cl->global, cl->g.err);
				logged_down = true;
				wait_ms(cl, jitter(backoff), false);
				backoff = backoff * 2 > BACKOFF_MAX_MS ?
						  BACKOFF_MAX_MS :
						  backoff * 2;
				continue;
			}
			logged_down = false;
			backoff = BACKOFF_MIN_MS;
			next_hb = tc__now_ms() + cl->hb_ms;
		}
		while ((ret = drain_one(cl)) > 0)
			;
		if (ret == 0)
			ret = renew_holds(cl);
		if (ret < 0) {
			set_err(cl, "connection lost", cl->g.err);
			tc__log(TC_LOG_WARN,
				"lost the global store at %s (%s): "
				"reconnecting",
				cl->global, cl->g.err);
			continue;
		}
		if (tc__now_ms() >= next_hb) {
			uint32_t up;

			pthread_mutex_lock(&cl->mu);
			up = cl->uploads;
			pthread_mutex_unlock(&cl->mu);
			if (cl->ob && cl->ob->uploads)
				up = cl->ob->uploads(cl->ob->arg);
			pthread_mutex_lock(&cl->io);
			ret = tc__gsc_heartbeat(&cl->g, up, 0);
			pthread_mutex_unlock(&cl->io);
			next_hb = tc__now_ms() + cl->hb_ms;
			if (ret < 0) {
				/* TC_ENOTFOUND: it restarted and forgot this
				 * connection; anything else: gone.  Either
				 * way register again. */
				set_err(cl, "heartbeat", cl->g.err);
				tc__log(TC_LOG_WARN,
					"heartbeat to %s failed (%s): "
					"registering again",
					cl->global, cl->g.err);
				pthread_mutex_lock(&cl->mu);
				cl->connected = false;
				pthread_mutex_unlock(&cl->mu);
				pthread_mutex_lock(&cl->io);
				tc__gsc_close(&cl->g);
				pthread_mutex_unlock(&cl->io);
				continue;
			}
		}
		{
			uint64_t now = tc__now_ms();
			uint32_t ms =
				next_hb > now ? (uint32_t)(next_hb - now) : 0;
			bool waiting;

			pthread_mutex_lock(&cl->mu);
			waiting = flush_stale(cl);
			pthread_mutex_unlock(&cl->mu);
			if (waiting && ms > TC_CLUSTER_HAVE_MS)
				ms = TC_CLUSTER_HAVE_MS;
			pthread_mutex_lock(&cl->mu);
			for (struct chold *h = cl->holds; h; h = h->next)
				if (h->next_ms <= now)
					ms = 0;
				else if (h->next_ms - now < ms)
					ms = (uint32_t)(h->next_ms - now);
			pthread_mutex_unlock(&cl->mu);
			wait_ms(cl, ms, true);
		}
	}
	/* Leaving: say so, so routing drops us now rather than at lease
	 * expiry (best effort, bounded). */
	pthread_mutex_lock(&cl->io);
	if (cl->g.fd >= 0) {
		struct tc__cur r;

		cl->g.timeout_ms = 1000;
		tc__gsc_call(&cl->g, TC_GSP_DEREGISTER, NULL, 0, &r);
	}
	tc__gsc_close(&cl->g);
	pthread_mutex_unlock(&cl->io);
	return NULL;
}

int tc__cluster_start(const struct tc__store_config *cfg,
		      struct tc__cluster **out, char *err, size_t errlen)
{
	struct tc__cluster *cl;
	char host[256];
	int ret;

	*out = NULL;
	if (!cfg->global[0])
		return 0;
	if (!cfg->cluster_secret_file[0]) {
		snprintf(err, errlen,
			 "global is set but cluster_secret_file is not: "
			 "every cluster connection is authenticated "
			 "(docs/cluster.md)");
		return TC_EBADCONFIG;
	}
	cl = tc__calloc(1, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	ret = tc__auth_load_secret(cfg->cluster_secret_file, &cl->sec, err,
				   errlen);
	if (ret < 0) {
		tc__free(cl);
		return ret;
	}
	ret = tc__tls_ctx_new(&cfg->tls, &cl->tls, err, errlen);
	if (ret < 0) {
		tc__auth_secret_wipe(&cl->sec);
		tc__free(cl);
		return ret;
	}
	pthread_mutex_init(&cl->mu, NULL);
	pthread_mutex_init(&cl->io, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&cl->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	cl->ops_tail = &cl->ops;
	tc__gsc_init(&cl->g, CALL_MS);
	cl->g.tls_ctx = cl->tls;
	cl->ob = cfg->observer;
	snprintf(cl->global, sizeof(cl->global), "%s", cfg->global);
	if (cfg->node_name[0]) {
		snprintf(cl->node.name, sizeof(cl->node.name), "%s",
			 cfg->node_name);
	} else {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "node");
		host[sizeof(host) - 1] = '\0';
		snprintf(cl->node.name, sizeof(cl->node.name), "%.64s", host);
		for (char *p = cl->node.name; *p; p++)
			if ((unsigned char)*p < 0x21 ||
			    (unsigned char)*p > 0x7e)
				*p = '_';
	}
	/* A new epoch per start: the global store tells a restarted daemon
	 * (whose replicas are gone) from a reconnecting one. */
	if (getrandom(&cl->node.epoch, sizeof(cl->node.epoch), 0) !=
	    sizeof(cl->node.epoch))
		cl->node.epoch = tc__now_ns() ^ (uint64_t)getpid();
	/* Port 0 is resolved by the peer server when it binds; until then
	 * advertise what the config says. */
	snprintf(cl->node.peer_addr, sizeof(cl->node.peer_addr), "%s",
		 cfg->peer_bound[0] ? cfg->peer_bound : cfg->peer_listen);
	snprintf(cl->node.zone, sizeof(cl->node.zone), "%s", cfg->zone);
	snprintf(cl->node.rack, sizeof(cl->node.rack), "%s", cfg->rack);
	snprintf(cl->node.host, sizeof(cl->node.host), "%s", cfg->host_label);
	ret = pthread_create(&cl->th, NULL, cluster_main, cl);
	if (ret) {
		tc__auth_secret_wipe(&cl->sec);
		tc__tls_ctx_free(cl->tls);
		tc__free(cl);
		snprintf(err, errlen, "cluster thread: %s", strerror(ret));
		return -ret;
	}
	cl->started = true;
	*out = cl;
	return 0;
}

void tc__cluster_stop(struct tc__cluster *cl)
{
	struct cop *op, *next;
	struct crep *c, *cn;

	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	cl->stop = true;
	pthread_cond_signal(&cl->cv);
	pthread_mutex_unlock(&cl->mu);
	/* The thread may sit in a connect or a call: both are bounded
	 * (CALL_MS), so the join is too. */
	pthread_join(cl->th, NULL);
	for (op = cl->ops; op; op = next) {
		next = op->next;
		tc__free(op);
	}
	for (c = cl->reps; c; c = cn) {
		cn = c->next;
		crep_free(c);
	}
	while (cl->holds) {
		struct chold *h = cl->holds;

		cl->holds = h->next;
		tc__free(h);
	}
	tc__auth_secret_wipe(&cl->sec);
	tc__tls_ctx_free(cl->tls);
	pthread_mutex_destroy(&cl->mu);
	pthread_mutex_destroy(&cl->io);
	pthread_cond_destroy(&cl->cv);
	tc__free(cl);
}

/* One call on the connection for a worker: the node's name, the store
 * up or not, the connection marked down after a broken call. */
static int worker_call(struct tc__cluster *cl,
		       int (*fn)(struct tc__cluster *cl, const char *name,
				 void *arg),
		       void *arg, char *err, size_t errlen)
{
	char name[TC_GSP_MAX_NAME + 1];
	bool up;
	int ret;

	if (!cl) {
		snprintf(err, errlen,
			 "this daemon is not in a cluster (no 'global' in its "
			 "config)");
		return TC_ENOTSUP;
	}
	pthread_mutex_lock(&cl->mu);
	up = cl->connected;
	snprintf(name, sizeof(name), "%s", cl->node.name);
	pthread_mutex_unlock(&cl->mu);
	if (!up) {
		snprintf(err, errlen, "the global store at %s is unreachable",
			 cl->global);
		return TC_ENODAEMON;
	}
	pthread_mutex_lock(&cl->io);
	ret = fn(cl, name, arg);
	if (ret < 0)
		snprintf(err, errlen, "%s", cl->g.err);
	pthread_mutex_unlock(&cl->io);
	if (ret == TC_ECLOSED || ret == -ETIMEDOUT)
		lost(cl);
	return ret;
}

struct resolve_args {
	const char *what;
	char *id;
	uint64_t *gen;
	struct tc__gsp_source *src;
	uint32_t max, *nsrc;
};

static int call_resolve(struct tc__cluster *cl, const char *name, void *arg)
{
	struct resolve_args *a = arg;

	return tc__gsc_resolve(&cl->g, a->what, name, a->max, a->id, a->gen,
			       a->src, a->nsrc);
}

int tc__cluster_resolve(struct tc__cluster *cl, const char *what, char *id,
			uint64_t *gen, struct tc__gsp_source *src, uint32_t max,
			uint32_t *nsrc, char *err, size_t errlen)
{
	struct resolve_args a = { what, id, gen, src, max, nsrc };

	*nsrc = 0;
	return worker_call(cl, call_resolve, &a, err, errlen);
}

static int call_key_get(struct tc__cluster *cl, const char *name, void *arg)
{
	struct resolve_args *a = arg;

	(void)name;
	return tc__gsc_key_get(&cl->g, a->what, a->id, a->gen);
}

int tc__cluster_key_get(struct tc__cluster *cl, const char *key, char *id,
			uint64_t *gen, char *err, size_t errlen)
{
	struct resolve_args a = { key, id, gen, NULL, 0, NULL };

	id[0] = '\0';
	*gen = 0;
	return worker_call(cl, call_key_get, &a, err, errlen);
}

struct keys_args {
	const char *const *keys;
	uint32_t n;
	struct tc__gsc_keyval *out;
};

static int call_keys_get(struct tc__cluster *cl, const char *name, void *arg)
{
	struct keys_args *a = arg;

	(void)name;
	return tc__gsc_keys_get(&cl->g, a->keys, a->n, a->out);
}

int tc__cluster_keys_get(struct tc__cluster *cl, const char *const *keys,
			 uint32_t n, struct tc__gsc_keyval *out, char *err,
			 size_t errlen)
{
	struct keys_args a = { keys, n, out };
	uint64_t now = tc__now_ms();
	bool off;
	int ret;

	if (!cl)
		return worker_call(cl, call_keys_get, &a, err, errlen);
	pthread_mutex_lock(&cl->mu);
	off = now < cl->keys_get_off_until_ms;
	pthread_mutex_unlock(&cl->mu);
	if (off) {
		snprintf(err, errlen,
			 "the global store at %s does not know KEYS_GET",
			 cl->global);
		return TC_ENOTSUP;
	}
	ret = worker_call(cl, call_keys_get, &a, err, errlen);
	/* A store older than KEYS_GET closes the connection on it (an
	 * unknown type is a protocol error there); one that answers says
	 * so.  A store that died just then looks the same: asking key by
	 * key for a while costs only round trips. */
	if (ret == TC_ECLOSED || ret == TC_EPROTO || ret == TC_ENOTSUP) {
		pthread_mutex_lock(&cl->mu);
		cl->keys_get_off_until_ms = now + KEYS_GET_RETRY_MS;
		pthread_mutex_unlock(&cl->mu);
		tc__log(TC_LOG_WARN,
			"the global store at %s does not answer KEYS_GET (%s): "
			"key sync asks key by key (KEY_GET) for %d s",
			cl->global, err, KEYS_GET_RETRY_MS / 1000);
		return TC_ENOTSUP;
	}
	return ret;
}

struct undo_args {
	const char *key, *id;
	uint64_t gen, *back;
};

static int call_key_undo(struct tc__cluster *cl, const char *name, void *arg)
{
	struct undo_args *a = arg;

	(void)name;
	return tc__gsc_key_undo(&cl->g, a->key, a->id, a->gen, a->back);
}

int tc__cluster_key_undo(struct tc__cluster *cl, const char *key,
			 const char *id, uint64_t gen, uint64_t *back,
			 char *err, size_t errlen)
{
	struct undo_args a = { key, id, gen, back };

	return worker_call(cl, call_key_undo, &a, err, errlen);
}

static int call_peers(struct tc__cluster *cl, const char *name, void *arg)
{
	struct resolve_args *a = arg;

	return tc__gsc_peers(&cl->g, name, a->max, a->src, a->nsrc);
}

int tc__cluster_peers(struct tc__cluster *cl, struct tc__gsp_source *src,
		      uint32_t max, uint32_t *nsrc, char *err, size_t errlen)
{
	struct resolve_args a = { NULL, NULL, NULL, src, max, nsrc };

	*nsrc = 0;
	return worker_call(cl, call_peers, &a, err, errlen);
}

char *tc__cluster_status_json(struct tc__cluster *cl)
{
	json_t *j;
	char *s;
	size_t n = 0, unsent = 0;

	if (!cl)
		return NULL;
	pthread_mutex_lock(&cl->mu);
	for (struct crep *c = cl->reps; c; c = c->next) {
		n++;
		unsent += !c->sent;
	}
	j = json_pack("{s:s, s:s, s:b, s:I, s:I, s:s, s:s, s:s, s:s, s:I, "
		      "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
		      "global", cl->global, "node", cl->node.name, "connected",
		      cl->connected, "node_id", (json_int_t)cl->node_id,
		      "epoch", (json_int_t)(cl->node.epoch >> 1), "peer_addr",
		      cl->node.peer_addr, "zone", cl->node.zone, "rack",
		      cl->node.rack, "host", cl->node.host, "replicas",
		      (json_int_t)n, "replicas_unsent", (json_int_t)unsent,
		      "registers", (json_int_t)cl->registers, "failures",
		      (json_int_t)cl->failures, "key_conflicts",
		      (json_int_t)cl->key_conflicts, "key_cas",
		      (json_int_t)cl->key_cas, "key_cas_lost",
		      (json_int_t)cl->key_cas_lost, "key_cas_unreachable",
		      (json_int_t)cl->key_cas_down, "sent",
		      (json_int_t)cl->sent_ops, "last_error", cl->last_err);
	pthread_mutex_unlock(&cl->mu);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}

bool tc__cluster_connected(struct tc__cluster *cl)
{
	bool up;

	if (!cl)
		return false;
	pthread_mutex_lock(&cl->mu);
	up = cl->connected;
	pthread_mutex_unlock(&cl->mu);
	return up;
}

int tc__cluster_key_cas(struct tc__cluster *cl, const char *key, const char *id,
			bool expect, uint64_t expect_gen, uint64_t *gen,
			char *err, size_t errlen)
{
	struct cop *op, **pp, *mine = NULL, **mt = &mine;
	uint64_t g;
	int ret = 0;

	*gen = 0;
	if (!cl) {
		snprintf(err, errlen, "this daemon is not in a cluster");
		return TC_ENOTSUP;
	}
	pthread_mutex_lock(&cl->mu);
	if (!cl->connected) {
		cl->key_cas_down++;
		pthread_mutex_unlock(&cl->mu);
		snprintf(err, errlen,
			 "the global store at %s is unreachable: key '%s' "
			 "cannot be checked cluster-wide, so nothing was "
			 "changed (retry when it is back)",
			 cl->global, key);
		return TC_ENODAEMON;
	}
	/* Changes of this key still queued (made while the store was down)
	 * go first, in order, so the compare sees what this daemon already
	 * acknowledged. */
	for (pp = &cl->ops; *pp;) {
		op = *pp;
		if (op->kind == OP_KEY && !strcmp(op->key, key)) {
			*pp = op->next;
			*mt = op;
			mt = &op->next;
			*mt = NULL;
		} else {
			pp = &op->next;
		}
	}
	cl->ops_tail = pp;
	cl->key_cas++;
	pthread_mutex_unlock(&cl->mu);

	pthread_mutex_lock(&cl->io);
	while (mine && ret >= 0) {
		op = mine;
		ret = send_key_op(cl, op, &g);
		if (ret == TC_ECLOSED || ret == -ETIMEDOUT || cl->g.fd < 0)
			break;
		if (ret < 0)
			tc__log(TC_LOG_WARN, "global store refused a key: %s",
				cl->g.err);
		ret = 0;
		mine = op->next;
		tc__free(op);
	}
	if (ret >= 0)
		ret = tc__gsc_key_set(&cl->g, key, id,
				      expect ? TC_GSP_KF_EXPECT : 0, expect_gen,
				      NULL, gen);
	if (ret < 0)
		snprintf(err, errlen, "%s", cl->g.err);
	pthread_mutex_unlock(&cl->io);
	if (mine) {
		/* not sent: back to the head of the queue */
		pthread_mutex_lock(&cl->mu);
		for (op = mine; op->next; op = op->next)
			;
		op->next = cl->ops;
		if (!cl->ops)
			cl->ops_tail = &op->next;
		cl->ops = mine;
		cl->dirty = true;
		pthread_mutex_unlock(&cl->mu);
	}
	if (ret == TC_ECLOSED || ret == -ETIMEDOUT || cl->g.fd < 0) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		lost(cl);
		pthread_mutex_lock(&cl->mu);
		cl->key_cas_down++;
		pthread_mutex_unlock(&cl->mu);
		/* The request may have reached the store before the link
		 * broke: say so rather than guess. */
		snprintf(err, errlen,
			 "lost the global store at %s while setting key '%s' "
			 "(%s): the change may or may not have happened "
			 "cluster-wide, and nothing was changed here (resolve "
			 "the key to see)",
			 cl->global, key, why);
		return TC_ENODAEMON;
	}
	if (ret == TC_ECONFLICT) {
		pthread_mutex_lock(&cl->mu);
		cl->key_cas_lost++;
		pthread_mutex_unlock(&cl->mu);
	}
	return ret;
}

/* ------------------------------------------------------------ groups */

int tc__cluster_group(struct tc__cluster *cl, int type,
		      const struct tc__gsp_group_req *q,
		      struct tc__gsp_group *out, char *err, size_t errlen)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (!cl) {
		snprintf(err, errlen,
			 "this daemon is not in a cluster (no 'global' in its "
			 "config)");
		return TC_ENOTSUP;
	}
	if (!tc__cluster_connected(cl)) {
		snprintf(err, errlen, "the global store at %s is unreachable",
			 cl->global);
		return TC_ENODAEMON;
	}
	if (type == TC_GSP_GROUP_GET && q->wait_ms) {
		/* A wait on a connection of its own: the node's connection
		 * carries heartbeats and must not wait on a group. */
		struct tc__gsc side;

		tc__gsc_init(&side, CALL_MS);
		side.tls_ctx = cl->tls;
		ret = tc__gsc_connect(&side, cl->global, &cl->sec,
				      TC_AUTH_ROLE_TOOL, cl->node.name);
		if (ret == 0)
			ret = tc__gsc_group(&side, type, q, out);
		if (ret < 0)
			snprintf(err, errlen, "%s", side.err);
		tc__gsc_close(&side);
		return ret;
	}
	pthread_mutex_lock(&cl->io);
	ret = tc__gsc_group(&cl->g, type, q, out);
	if (ret < 0)
		snprintf(err, errlen, "%s", cl->g.err);
	pthread_mutex_unlock(&cl->io);
	if (ret == TC_ECLOSED || ret == -ETIMEDOUT)
		lost(cl);
	return ret;
}

int tc__cluster_hold_add(struct tc__cluster *cl, uintptr_t owner,
			 const struct tc__gsp_group_req *join)
{
	struct chold *h = tc__calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->owner = owner;
	h->q = *join;
	h->next_ms = tc__now_ms() + join->lease_ms / 3;
	pthread_mutex_lock(&cl->mu);
	h->next = cl->holds;
	cl->holds = h;
	kick(cl); /* the loop may sleep till the next heartbeat */
	pthread_mutex_unlock(&cl->mu);
	return 0;
}

void tc__cluster_hold_end(struct tc__cluster *cl, uintptr_t owner)
{
	bool any = false;

	if (!cl)
		return;
	pthread_mutex_lock(&cl->mu);
	for (struct chold *h = cl->holds; h; h = h->next)
		if (h->owner == owner) {
			h->ended = true;
			any = true;
		}
	if (any) {
		cl->dirty = true;
		pthread_cond_signal(&cl->cv);
	}
	pthread_mutex_unlock(&cl->mu);
}
