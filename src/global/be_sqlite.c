/*
 * be_sqlite.c - the SQLite metadata backend (backend.h).
 *
 * WAL journal: readers never block the one writer, and a commit is one
 * append to the WAL.  synchronous=NORMAL by default: a committed
 * transaction survives the process being killed (kill -9), since the WAL
 * write happened before COMMIT returned; FULL (durability: full) also
 * survives power loss, at about a third of the commit rate.  Checkpoints
 * are SQLite's automatic PASSIVE ones; the store has no long readers, so
 * they are never starved.  Statements are prepared once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "backend.h"
#include "common/alloc.h"
#include "common/log.h"
#include "tcast/errors.h"

enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_NODE_PUT,
	S_ART_PUT,
	S_ART_GET,
	S_REP_PUT,
	S_REP_DEL,
	S_REP_DEL_NODE,
	S_KEY_PUT,
	S_KEY_HIST_PUT,
	S_KEY_HIST,
	S_META_REV,
	S_GRP_PUT,
	S_MEMBER_PUT,
	S_GRP_DECIDE,
	S_GRP_DEL,
	S_MEMBER_DEL,
	S__N
};

static const char *const SQL[S__N] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_NODE_PUT] = "INSERT INTO node(id,name,peer_addr,zone,rack,host,"
		       "epoch) VALUES(?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(id) DO "
		       "UPDATE SET name=?2,peer_addr=?3,zone=?4,rack=?5,"
		       "host=?6,epoch=?7",
	[S_ART_PUT] = "INSERT OR IGNORE INTO artifact(id,size,nchunks,policy,"
		      "tbl,digests) VALUES(?1,?2,?3,?4,?5,?6)",
	[S_ART_GET] = "SELECT size,nchunks,policy,tbl,digests FROM artifact "
		      "WHERE id=?1",
	[S_REP_PUT] = "INSERT OR REPLACE INTO replica(artifact_id,node_id,"
		      "tier,device,size,nchunks,have) VALUES(?1,?2,?3,?4,?5,"
		      "?6,?7)",
	[S_REP_DEL] = "DELETE FROM replica WHERE artifact_id=?1 AND "
		      "node_id=?2 AND tier=?3 AND device=?4",
	[S_REP_DEL_NODE] = "DELETE FROM replica WHERE node_id=?1",
	[S_KEY_PUT] = "INSERT INTO key(name,artifact_id,gen) VALUES(?1,?2,?3) "
		      "ON CONFLICT(name) DO UPDATE SET artifact_id=?2,gen=?3",
	[S_KEY_HIST_PUT] = "INSERT OR REPLACE INTO key_history(name,gen,"
			   "artifact_id,time_ms) VALUES(?1,?3,?2,?4)",
	[S_KEY_HIST] = "SELECT gen,artifact_id,time_ms FROM key_history WHERE "
		       "name=?1 ORDER BY gen DESC LIMIT ?2",
	[S_META_REV] = "UPDATE meta SET v=v+1 WHERE k='rev'",
	[S_GRP_PUT] = "INSERT INTO grp(name,ranks,timeout_ms,created_ms,"
		      "deadline_ms,state,decided_ms,by_rank,by_node,reason) "
		      "VALUES(?1,?2,?3,?4,?5,0,0,-1,'','')",
	[S_MEMBER_PUT] = "INSERT OR REPLACE INTO grp_member(grp,rank,node,"
			 "lease_ms,prepared,staged) VALUES(?1,?2,?3,?4,?5,?6)",
	/* The decision's compare-and-swap: only an open group moves. */
	[S_GRP_DECIDE] = "UPDATE grp SET state=?2,decided_ms=?3,by_rank=?4,"
			 "by_node=?5,reason=?6 WHERE name=?1 AND state=0",
	[S_GRP_DEL] = "DELETE FROM grp WHERE name=?1",
	[S_MEMBER_DEL] = "DELETE FROM grp_member WHERE grp=?1",
};

static const char SCHEMA[] =
	"CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER);"
	"INSERT OR IGNORE INTO meta VALUES('schema',1),('rev',0);"
	"CREATE TABLE IF NOT EXISTS node(id INTEGER PRIMARY KEY, name TEXT "
	"UNIQUE NOT NULL, peer_addr TEXT, zone TEXT, rack TEXT, host TEXT, "
	"epoch INTEGER);"
	"CREATE TABLE IF NOT EXISTS artifact(id TEXT PRIMARY KEY, size "
	"INTEGER, nchunks INTEGER, policy TEXT, tbl BLOB, digests BLOB);"
	"CREATE TABLE IF NOT EXISTS replica(artifact_id TEXT, node_id "
	"INTEGER, tier INTEGER, device INTEGER, size INTEGER, nchunks "
	"INTEGER, have BLOB, PRIMARY KEY(artifact_id,node_id,tier,device)) "
	"WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS replica_node ON replica(node_id);"
	"CREATE TABLE IF NOT EXISTS key(name TEXT PRIMARY KEY, artifact_id "
	"TEXT, gen INTEGER);"
	"CREATE TABLE IF NOT EXISTS key_history(name TEXT, gen INTEGER, "
	"artifact_id TEXT, time_ms INTEGER, PRIMARY KEY(name,gen)) WITHOUT "
	"ROWID;"
	"CREATE TABLE IF NOT EXISTS grp(name TEXT PRIMARY KEY, ranks INTEGER, "
	"timeout_ms INTEGER, created_ms INTEGER, deadline_ms INTEGER, state "
	"INTEGER, decided_ms INTEGER, by_rank INTEGER, by_node TEXT, reason "
	"TEXT);"
	"CREATE TABLE IF NOT EXISTS grp_member(grp TEXT, rank INTEGER, node "
	"TEXT, lease_ms INTEGER, prepared INTEGER, staged TEXT, PRIMARY "
	"KEY(grp,rank)) WITHOUT ROWID;";

struct tc__gs_backend {
	sqlite3 *db;
	sqlite3_stmt *st[S__N];
	bool in_txn;
};

static int sq_err(struct tc__gs_backend *be, const char *what)
{
	tc__log(TC_LOG_ERROR, "sqlite: %s: %s", what, sqlite3_errmsg(be->db));
	return -EIO;
}

/* Step a statement that returns no rows, then reset it. */
static int run(struct tc__gs_backend *be, int s)
{
	int rc = sqlite3_step(be->st[s]);

	sqlite3_reset(be->st[s]);
	sqlite3_clear_bindings(be->st[s]);
	return rc == SQLITE_DONE ? 0 : sq_err(be, SQL[s]);
}

static void sq_close(struct tc__gs_backend *be)
{
	if (!be)
		return;
	for (int i = 0; i < S__N; i++)
		sqlite3_finalize(be->st[i]);
	sqlite3_close(be->db);
	tc__free(be);
}

static int sq_open(const char *where, int sync_full,
		   struct tc__gs_backend **out, char *err, size_t errlen)
{
	struct tc__gs_backend *be;
	char *emsg = NULL;
	char pragmas[256];

	*out = NULL;
	be = tc__calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	if (sqlite3_open_v2(where, &be->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database '%s': %s", where,
			 be->db ? sqlite3_errmsg(be->db) : "out of memory");
		sq_close(be);
		return TC_EBADCONFIG;
	}
	sqlite3_busy_timeout(be->db, 5000);
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
		 "PRAGMA foreign_keys=OFF;",
		 sync_full ? "FULL" : "NORMAL");
	if (sqlite3_exec(be->db, pragmas, NULL, NULL, &emsg) != SQLITE_OK ||
	    sqlite3_exec(be->db, SCHEMA, NULL, NULL, &emsg) != SQLITE_OK) {
		snprintf(err, errlen, "database '%s': %s", where,
			 emsg ? emsg : "?");
		sqlite3_free(emsg);
		sq_close(be);
		return TC_EBADCONFIG;
	}
	for (int i = 0; i < S__N; i++) {
		if (sqlite3_prepare_v3(be->db, SQL[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &be->st[i],
				       NULL) != SQLITE_OK) {
			snprintf(err, errlen, "database '%s': %s: %s", where,
				 SQL[i], sqlite3_errmsg(be->db));
			sq_close(be);
			return TC_EBADCONFIG;
		}
	}
	*out = be;
	return 0;
}

static int sq_begin(struct tc__gs_backend *be)
{
	int ret;

	if (be->in_txn)
		return 0;
	ret = run(be, S_BEGIN);
	if (ret == 0)
		be->in_txn = true;
	return ret;
}

static int sq_commit(struct tc__gs_backend *be)
{
	int ret;

	if (!be->in_txn)
		return 0;
	run(be, S_META_REV);
	ret = run(be, S_COMMIT);
	if (ret < 0) {
		run(be, S_ROLLBACK);
	}
	be->in_txn = false;
	return ret;
}

static int sq_rollback(struct tc__gs_backend *be)
{
	if (!be->in_txn)
		return 0;
	be->in_txn = false;
	return run(be, S_ROLLBACK);
}

static void col_text(sqlite3_stmt *st, int col, char *dst, size_t max)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(dst, max + 1, "%s", t ? (const char *)t : "");
}

/* Groups, then their members (a member of an unknown group is skipped
 * by the callback). */
static int load_groups(struct tc__gs_backend *be,
		       const struct tc__gs_load_cb *cb)
{
	sqlite3_stmt *st;
	int ret = 0;

	if (sqlite3_prepare_v2(be->db,
			       "SELECT name,ranks,timeout_ms,created_ms,"
			       "deadline_ms,state,decided_ms,by_rank,by_node,"
			       "reason FROM grp",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load groups");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct tc__gsp_group g = { 0 };

		col_text(st, 0, g.name, TC_GSP_MAX_GROUP);
		g.ranks = (uint32_t)sqlite3_column_int64(st, 1);
		g.timeout_ms = (uint32_t)sqlite3_column_int64(st, 2);
		g.created_ms = (uint64_t)sqlite3_column_int64(st, 3);
		g.state = (uint8_t)sqlite3_column_int(st, 5);
		g.decided_ms = (uint64_t)sqlite3_column_int64(st, 6);
		g.by_rank = sqlite3_column_int(st, 7);
		col_text(st, 8, g.by_node, TC_GSP_MAX_NAME);
		col_text(st, 9, g.reason, TC_GSP_MAX_REASON);
		ret = cb->group(cb->arg, &g, sqlite3_column_int64(st, 4));
	}
	sqlite3_finalize(st);
	if (ret)
		return ret;
	if (sqlite3_prepare_v2(be->db,
			       "SELECT grp,rank,node,lease_ms,prepared,staged "
			       "FROM grp_member",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load group members");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct tc__gsp_member m = { 0 };
		char grp[TC_GSP_MAX_GROUP + 1];

		col_text(st, 0, grp, TC_GSP_MAX_GROUP);
		m.rank = (uint32_t)sqlite3_column_int64(st, 1);
		col_text(st, 2, m.node, TC_GSP_MAX_NAME);
		m.lease_ms = (uint32_t)sqlite3_column_int64(st, 3);
		m.prepared = sqlite3_column_int(st, 4) ? 1 : 0;
		col_text(st, 5, m.id, TC_GSP_MAX_ID);
		ret = cb->member(cb->arg, grp, &m);
	}
	sqlite3_finalize(st);
	return ret;
}

static int sq_load(struct tc__gs_backend *be, const struct tc__gs_load_cb *cb)
{
	sqlite3_stmt *st;
	int ret = 0;

	if (sqlite3_prepare_v2(be->db,
			       "SELECT id,name,peer_addr,zone,rack,host,epoch "
			       "FROM node ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load nodes");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct tc__gsp_node n = { 0 };

		col_text(st, 1, n.name, TC_GSP_MAX_NAME);
		col_text(st, 2, n.peer_addr, TC_GSP_MAX_ADDR);
		col_text(st, 3, n.zone, TC_GSP_MAX_NAME);
		col_text(st, 4, n.rack, TC_GSP_MAX_NAME);
		col_text(st, 5, n.host, TC_GSP_MAX_NAME);
		n.epoch = (uint64_t)sqlite3_column_int64(st, 6);
		ret = cb->node(cb->arg, (uint64_t)sqlite3_column_int64(st, 0),
			       &n);
	}
	sqlite3_finalize(st);
	if (ret)
		return ret;
	if (sqlite3_prepare_v2(be->db,
			       "SELECT id,size,nchunks,policy FROM artifact",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load artifacts");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct tc__gsp_artifact a = { 0 };

		col_text(st, 0, a.id, TC_GSP_MAX_ID);
		a.size = (uint64_t)sqlite3_column_int64(st, 1);
		a.nchunks = (uint32_t)sqlite3_column_int64(st, 2);
		col_text(st, 3, a.policy, TC_GSP_MAX_POLICY);
		ret = cb->artifact(cb->arg, &a);
	}
	sqlite3_finalize(st);
	if (ret)
		return ret;
	if (sqlite3_prepare_v2(be->db,
			       "SELECT artifact_id,node_id,tier,device,size,"
			       "nchunks,have FROM replica",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load replicas");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		struct tc__gsp_replica r = { 0 };
		const void *h = sqlite3_column_blob(st, 6);
		int hl = sqlite3_column_bytes(st, 6);

		col_text(st, 0, r.id, TC_GSP_MAX_ID);
		r.tier = (uint8_t)sqlite3_column_int(st, 2);
		r.device = (uint32_t)sqlite3_column_int64(st, 3);
		r.size = (uint64_t)sqlite3_column_int64(st, 4);
		r.nchunks = (uint32_t)sqlite3_column_int64(st, 5);
		if (h && (uint32_t)hl == tc__gsp_bitmap_len(r.nchunks))
			r.have = (uint8_t *)h; /* borrowed for the callback */
		ret = cb->replica(cb->arg,
				  (uint64_t)sqlite3_column_int64(st, 1), &r);
	}
	sqlite3_finalize(st);
	if (ret)
		return ret;
	if (sqlite3_prepare_v2(be->db, "SELECT name,artifact_id,gen FROM key",
			       -1, &st, NULL) != SQLITE_OK)
		return sq_err(be, "load keys");
	while (ret == 0 && sqlite3_step(st) == SQLITE_ROW) {
		char k[TC_GSP_MAX_KEY + 1], id[TC_GSP_MAX_ID + 1];

		col_text(st, 0, k, TC_GSP_MAX_KEY);
		col_text(st, 1, id, TC_GSP_MAX_ID);
		ret = cb->key(cb->arg, k, id,
			      (uint64_t)sqlite3_column_int64(st, 2));
	}
	sqlite3_finalize(st);
	if (ret || !cb->group)
		return ret;
	return load_groups(be, cb);
}

static int sq_node_put(struct tc__gs_backend *be, uint64_t id,
		       const struct tc__gsp_node *n)
{
	sqlite3_stmt *st = be->st[S_NODE_PUT];

	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	sqlite3_bind_text(st, 2, n->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, n->peer_addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, n->zone, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, n->rack, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, n->host, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, (sqlite3_int64)n->epoch);
	return run(be, S_NODE_PUT);
}

static int sq_artifact_put(struct tc__gs_backend *be,
			   const struct tc__gsp_artifact *a)
{
	sqlite3_stmt *st = be->st[S_ART_PUT];

	sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)a->size);
	sqlite3_bind_int64(st, 3, a->nchunks);
	sqlite3_bind_text(st, 4, a->policy, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, a->table, (int)a->table_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, a->digests, (int)a->digests_len,
			  SQLITE_STATIC);
	return run(be, S_ART_PUT);
}

static int sq_artifact_get(struct tc__gs_backend *be, const char *id,
			   struct tc__gsp_artifact *out)
{
	sqlite3_stmt *st = be->st[S_ART_GET];
	int rc, ret = 0;

	memset(out, 0, sizeof(*out));
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const void *t = sqlite3_column_blob(st, 3);
		int tl = sqlite3_column_bytes(st, 3);
		const void *d = sqlite3_column_blob(st, 4);
		int dl = sqlite3_column_bytes(st, 4);

		snprintf(out->id, sizeof(out->id), "%s", id);
		out->size = (uint64_t)sqlite3_column_int64(st, 0);
		out->nchunks = (uint32_t)sqlite3_column_int64(st, 1);
		col_text(st, 2, out->policy, TC_GSP_MAX_POLICY);
		if (tl > 0) {
			out->table = tc__malloc((size_t)tl);
			if (out->table) {
				memcpy(out->table, t, (size_t)tl);
				out->table_len = (uint32_t)tl;
			}
		}
		if (dl > 0) {
			out->digests = tc__malloc((size_t)dl);
			if (out->digests) {
				memcpy(out->digests, d, (size_t)dl);
				out->digests_len = (uint32_t)dl;
			}
		}
		if ((tl > 0 && !out->table) || (dl > 0 && !out->digests)) {
			tc__gsp_artifact_release(out);
			ret = -ENOMEM;
		}
	} else if (rc == SQLITE_DONE) {
		ret = TC_ENOTFOUND;
	} else {
		ret = sq_err(be, "artifact get");
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int sq_replica_put(struct tc__gs_backend *be, uint64_t node_id,
			  const struct tc__gsp_replica *r)
{
	sqlite3_stmt *st = be->st[S_REP_PUT];

	sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)node_id);
	sqlite3_bind_int(st, 3, r->tier);
	sqlite3_bind_int64(st, 4, r->device);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->size);
	sqlite3_bind_int64(st, 6, r->nchunks);
	if (r->have)
		sqlite3_bind_blob(st, 7, r->have,
				  (int)tc__gsp_bitmap_len(r->nchunks),
				  SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 7);
	return run(be, S_REP_PUT);
}

static int sq_replica_del(struct tc__gs_backend *be, uint64_t node_id,
			  const char *id, int tier, uint32_t device)
{
	sqlite3_stmt *st = be->st[S_REP_DEL];

	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)node_id);
	sqlite3_bind_int(st, 3, tier);
	sqlite3_bind_int64(st, 4, device);
	return run(be, S_REP_DEL);
}

static int sq_replica_del_node(struct tc__gs_backend *be, uint64_t node_id)
{
	sqlite3_bind_int64(be->st[S_REP_DEL_NODE], 1, (sqlite3_int64)node_id);
	return run(be, S_REP_DEL_NODE);
}

static int sq_key_put(struct tc__gs_backend *be, const char *key,
		      const char *id, uint64_t gen, int64_t time_ms)
{
	int ret;

	for (int s = S_KEY_PUT; s <= S_KEY_HIST_PUT; s++) {
		sqlite3_stmt *st = be->st[s];

		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)gen);
		if (s == S_KEY_HIST_PUT)
			sqlite3_bind_int64(st, 4, time_ms);
		ret = run(be, s);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int sq_key_history(struct tc__gs_backend *be, const char *key,
			  struct tc__gs_history *out, int max)
{
	sqlite3_stmt *st = be->st[S_KEY_HIST];
	int n = 0, rc;

	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
		out[n].gen = (uint64_t)sqlite3_column_int64(st, 0);
		col_text(st, 1, out[n].id, TC_GSP_MAX_ID);
		out[n].time_ms = sqlite3_column_int64(st, 2);
		n++;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return sq_err(be, "key history");
	return n;
}

static int sq_group_put(struct tc__gs_backend *be,
			const struct tc__gsp_group *g, int64_t deadline_ms)
{
	sqlite3_stmt *st = be->st[S_GRP_PUT];

	sqlite3_bind_text(st, 1, g->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, g->ranks);
	sqlite3_bind_int64(st, 3, g->timeout_ms);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)g->created_ms);
	sqlite3_bind_int64(st, 5, deadline_ms);
	return run(be, S_GRP_PUT);
}

static int sq_member_put(struct tc__gs_backend *be, const char *group,
			 const struct tc__gsp_member *m)
{
	sqlite3_stmt *st = be->st[S_MEMBER_PUT];

	sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, m->rank);
	sqlite3_bind_text(st, 3, m->node, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, m->lease_ms);
	sqlite3_bind_int(st, 5, m->prepared);
	sqlite3_bind_text(st, 6, m->id, -1, SQLITE_STATIC);
	return run(be, S_MEMBER_PUT);
}

static int sq_group_decide(struct tc__gs_backend *be,
			   const struct tc__gsp_group *g)
{
	sqlite3_stmt *st = be->st[S_GRP_DECIDE];
	int ret;

	sqlite3_bind_text(st, 1, g->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, g->state);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)g->decided_ms);
	sqlite3_bind_int(st, 4, g->by_rank);
	sqlite3_bind_text(st, 5, g->by_node, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, g->reason, -1, SQLITE_STATIC);
	ret = run(be, S_GRP_DECIDE);
	if (ret < 0)
		return ret;
	/* No row moved: the group was decided already (or is unknown). */
	return sqlite3_changes(be->db) == 1 ? 0 : TC_ECONFLICT;
}

static int sq_group_del(struct tc__gs_backend *be, const char *group)
{
	int ret;

	sqlite3_bind_text(be->st[S_MEMBER_DEL], 1, group, -1, SQLITE_STATIC);
	ret = run(be, S_MEMBER_DEL);
	if (ret < 0)
		return ret;
	sqlite3_bind_text(be->st[S_GRP_DEL], 1, group, -1, SQLITE_STATIC);
	return run(be, S_GRP_DEL);
}

const struct tc__gs_backend_ops tc__gs_sqlite = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.load = sq_load,
	.node_put = sq_node_put,
	.artifact_put = sq_artifact_put,
	.artifact_get = sq_artifact_get,
	.replica_put = sq_replica_put,
	.replica_del = sq_replica_del,
	.replica_del_node = sq_replica_del_node,
	.key_put = sq_key_put,
	.key_history = sq_key_history,
	.group_put = sq_group_put,
	.member_put = sq_member_put,
	.group_decide = sq_group_decide,
	.group_del = sq_group_del,
};
