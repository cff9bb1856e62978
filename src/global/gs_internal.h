/*
 * gs_internal.h - what the global store's files share: its in-memory
 * state (nodes, artifacts with their replicas, keys, groups, connections)
 * and the few functions one file calls in another.
 *
 *   server.c    the event loop, connections, the turn's group commit,
 *               start and stop
 *   state.c     nodes, artifacts, replicas in memory; ranking sources
 *   handlers.c  the requests (nodes, replicas, keys, routing, status) and
 *               the table that dispatches every request type
 *   groups.c    groups of ranks that commit or abort together
 *   load.c      the state rebuilt from the backend at start
 *
 * Not for the rest of the tree: gs.h is the store's interface.  Everything
 * here is touched on the loop thread only.
 */
#ifndef TC_GS_INTERNAL_H
#define TC_GS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/map.h"
#include "gs.h"
#include "net/auth.h"
#include "net/ev.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "proto/gsp.h"

/* A handler's return value: the reply is sent later (a GROUP_GET that
 * waits for its group's decision). */
#define GS_DEFERRED 1

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
	int reserve_fd; /* /dev/null, spent to turn a connection away when
			   accept fails for want of fds (else a busy loop) */
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

/* A request's handler: reads its body from `cur`, writes its reply's body
 * to `out`; returns 0, GS_DEFERRED, or a negative code with `err`. */
typedef int gs_handler(struct gs *gs, struct gconn *c, struct tc__cur *cur,
		       struct tc__buf *out, char *err, size_t errlen);

/* state.c: nodes, artifacts and replicas in memory */

/* Open the turn's backend transaction unless it is open: a turn's writes
 * are one transaction, committed before its replies go out. */
int tc__gs_be_write(struct gs *gs);
struct gnode *tc__gs_node_get(struct gs *gs, uint64_t id);
/* NULL when out of memory. */
struct gnode *tc__gs_node_add(struct gs *gs, uint64_t id,
			      const struct tc__gsp_node *info);
struct gart *tc__gs_art_get_or_add(struct gs *gs, const char *id, uint64_t size,
				   uint32_t nchunks);
/* Insert or update a replica in memory (`have` copied).  0 or -ENOMEM. */
int tc__gs_rep_set(struct gs *gs, struct gnode *n,
		   const struct tc__gsp_replica *r);
/* Whether there was such a replica (memory only). */
bool tc__gs_rep_del(struct gs *gs, struct gnode *n, const char *id, int tier,
		    uint32_t device);
void tc__gs_rep_del_node(struct gs *gs, struct gnode *n);

/* state.c: routing */

uint32_t tc__gs_distance(const struct gnode *me, const struct gnode *n);
uint32_t tc__gs_xorshift(void);
size_t tc__gs_rank_sources(struct gs *gs, struct gart *a, struct gnode *me,
			   size_t max, struct tc__gsp_source *out);

/* server.c: the turn */

/* c has replies to send once the turn's writes are committed. */
void tc__gs_turn_add(struct gconn *c);

/* handlers.c: one handler per request type (NULL: none) */

extern gs_handler *const tc__gs_handlers[TC_GSP__MAX];

/* groups.c */

int64_t tc__gs_wall_ms(void);
/* NULL when out of memory; free with tc__gs_group_free (NULL: no-op). */
struct ggroup *tc__gs_group_new(const char *name, uint32_t ranks,
				uint32_t timeout_ms);
void tc__gs_group_free(struct ggroup *g);
/* Put g on gs->open (undecided groups). */
void tc__gs_open_link(struct gs *gs, struct ggroup *g);
/* From the loop's tick: waits run out, groups abort, old ones go. */
void tc__gs_groups_tick(struct gs *gs, uint64_t now);
gs_handler tc__gs_on_group_create;
gs_handler tc__gs_on_group_join;
gs_handler tc__gs_on_group_prepare;
gs_handler tc__gs_on_group_abort;
gs_handler tc__gs_on_group_get;

/* load.c */

/* Rebuild gs's nodes, artifacts, replicas, keys and groups from its open
 * backend.  0 or a negative code. */
int tc__gs_load(struct gs *gs);

#endif /* TC_GS_INTERNAL_H */
