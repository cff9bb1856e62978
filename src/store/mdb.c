/*
 * mdb.c - the daemon's metadata in SQLite (see mdb.h).
 *
 * Schema (version 1, in user_version):
 *   artifacts(id PRIMARY KEY, policy, bytes, ntensors, created_ms,
 *             expires_ms, source)
 *   keys(name PRIMARY KEY, id, gen)
 *   key_versions(name, gen, id, unix_ms, PRIMARY KEY(name, gen))
 * The disk copy's place is not stored: it is <shared_disk>/tcast/<hex of
 * id>, so moving the shared folder does not strand the records.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "mdb.h"
#include "tcast/errors.h"

#define MDB_VERSION 1

struct tc__mdb {
	sqlite3 *db;
	sqlite3_stmt *art_put, *art_del, *key_put, *ver_put, *ver_trim,
		*key_del, *ver_del, *key_get;
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS artifacts("
	" id TEXT PRIMARY KEY, policy TEXT NOT NULL, bytes INTEGER NOT NULL,"
	" ntensors INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
	" expires_ms INTEGER NOT NULL, source TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS keys("
	" name TEXT PRIMARY KEY, id TEXT NOT NULL, gen INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS key_versions("
	" name TEXT NOT NULL, gen INTEGER NOT NULL, id TEXT NOT NULL,"
	" unix_ms INTEGER NOT NULL, PRIMARY KEY(name, gen));";

static int fail(struct tc__mdb *db, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "metadata database: %s: %s", what,
		 sqlite3_errmsg(db->db));
	return -EIO;
}

void tc__mdb_close(struct tc__mdb *db)
{
	if (!db)
		return;
	sqlite3_finalize(db->art_put);
	sqlite3_finalize(db->art_del);
	sqlite3_finalize(db->key_put);
	sqlite3_finalize(db->ver_put);
	sqlite3_finalize(db->ver_trim);
	sqlite3_finalize(db->key_del);
	sqlite3_finalize(db->ver_del);
	sqlite3_finalize(db->key_get);
	sqlite3_close(db->db);
	tc__free(db);
}

static int prep(struct tc__mdb *db, sqlite3_stmt **st, const char *sql)
{
	return sqlite3_prepare_v3(db->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
				  st, NULL) == SQLITE_OK ?
		       0 :
		       -1;
}

int tc__mdb_open(const char *dir, struct tc__mdb **out, char *err,
		 size_t errlen)
{
	char path[4096];
	struct tc__mdb *db;
	struct stat st;
	int version = -1;
	sqlite3_stmt *q;

	*out = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create state folder '%s': %s",
			 dir, strerror(errno));
		return TC_EBADCONFIG;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "state folder '%s' is not a folder", dir);
		return TC_EBADCONFIG;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, TC_MDB_FILE) >=
	    sizeof(path)) {
		snprintf(err, errlen, "state folder '%s': path too long", dir);
		return TC_EBADCONFIG;
	}
	db = tc__calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	if (sqlite3_open_v2(path, &db->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open '%s': %s", path,
			 db->db ? sqlite3_errmsg(db->db) : "out of memory");
		goto out_close;
	}
	sqlite3_busy_timeout(db->db, 5000);
	/* WAL: a commit is one append and one fsync of the log; FULL makes
	 * that fsync happen before the commit returns, so what we
	 * acknowledged survives a power cut, not only a crash. */
	if (sqlite3_exec(db->db,
			 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
			 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot use '%s': %s", path,
			 sqlite3_errmsg(db->db));
		goto out_close;
	}
	if (sqlite3_prepare_v2(db->db, "PRAGMA user_version", -1, &q, NULL) ==
	    SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW)
			version = sqlite3_column_int(q, 0);
		sqlite3_finalize(q);
	}
	if (version == 0)
		sqlite3_exec(db->db, "PRAGMA user_version=1", NULL, NULL, NULL);
	else if (version != MDB_VERSION) {
		snprintf(err, errlen,
			 "'%s' has schema version %d; this tcast reads %d",
			 path, version, MDB_VERSION);
		goto out_close;
	}
	if (prep(db, &db->art_put,
		 "INSERT OR REPLACE INTO artifacts VALUES(?,?,?,?,?,?,?)") ||
	    prep(db, &db->art_del, "DELETE FROM artifacts WHERE id=?") ||
	    prep(db, &db->key_put,
		 "INSERT OR REPLACE INTO keys VALUES(?,?,?)") ||
	    prep(db, &db->ver_put,
		 "INSERT OR REPLACE INTO key_versions VALUES(?,?,?,?)") ||
	    prep(db, &db->ver_trim,
		 "DELETE FROM key_versions WHERE name=? AND gen<=?") ||
	    prep(db, &db->key_del, "DELETE FROM keys WHERE name=?") ||
	    prep(db, &db->ver_del, "DELETE FROM key_versions WHERE name=?") ||
	    prep(db, &db->key_get, "SELECT 1 FROM keys WHERE name=?")) {
		snprintf(err, errlen, "cannot use '%s': %s", path,
			 sqlite3_errmsg(db->db));
		goto out_close;
	}
	*out = db;
	return 0;

out_close:
	tc__mdb_close(db);
	return TC_EBADCONFIG;
}

/* Run a prepared statement to completion and reset it. */
static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int begin(struct tc__mdb *db)
{
	return sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) ==
			       SQLITE_OK ?
		       0 :
		       -1;
}

static int commit(struct tc__mdb *db, int ok)
{
	if (ok == 0 &&
	    sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
		return 0;
	sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int tc__mdb_artifact_put(struct tc__mdb *db, const struct tc__mdb_artifact *a,
			 char *err, size_t errlen)
{
	sqlite3_stmt *st = db->art_put;

	sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, a->policy, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)a->bytes);
	sqlite3_bind_int64(st, 4, a->ntensors);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)a->created_ms);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)a->expires_ms);
	sqlite3_bind_text(st, 7, a->source, -1, SQLITE_STATIC);
	return run(st) ? fail(db, "recording an artifact", err, errlen) : 0;
}

int tc__mdb_artifact_del(struct tc__mdb *db, const char *id, char *err,
			 size_t errlen)
{
	sqlite3_bind_text(db->art_del, 1, id, -1, SQLITE_STATIC);
	return run(db->art_del) ?
		       fail(db, "forgetting an artifact", err, errlen) :
		       0;
}

int tc__mdb_key_set(struct tc__mdb *db, const char *key,
		    const struct tc__mdb_version *v, uint32_t keep, char *err,
		    size_t errlen)
{
	int rc = begin(db);

	if (rc == 0) {
		sqlite3_bind_text(db->key_put, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(db->key_put, 2, v->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(db->key_put, 3, (sqlite3_int64)v->gen);
		rc = run(db->key_put);
	}
	if (rc == 0) {
		sqlite3_bind_text(db->ver_put, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(db->ver_put, 2, (sqlite3_int64)v->gen);
		sqlite3_bind_text(db->ver_put, 3, v->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(db->ver_put, 4, (sqlite3_int64)v->unix_ms);
		rc = run(db->ver_put);
	}
	if (rc == 0 && v->gen > keep) {
		sqlite3_bind_text(db->ver_trim, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(db->ver_trim, 2,
				   (sqlite3_int64)(v->gen - keep));
		rc = run(db->ver_trim);
	}
	if (commit(db, rc) < 0)
		return fail(db, "recording a key", err, errlen);
	return 0;
}

int tc__mdb_key_del(struct tc__mdb *db, const char *key, char *err,
		    size_t errlen)
{
	int rc = begin(db);

	if (rc == 0) {
		sqlite3_bind_text(db->key_del, 1, key, -1, SQLITE_STATIC);
		rc = run(db->key_del);
	}
	if (rc == 0) {
		sqlite3_bind_text(db->ver_del, 1, key, -1, SQLITE_STATIC);
		rc = run(db->ver_del);
	}
	if (commit(db, rc) < 0)
		return fail(db, "forgetting a key", err, errlen);
	return 0;
}

bool tc__mdb_key_known(struct tc__mdb *db, const char *key)
{
	int rc;

	sqlite3_bind_text(db->key_get, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(db->key_get);
	sqlite3_reset(db->key_get);
	sqlite3_clear_bindings(db->key_get);
	return rc == SQLITE_ROW;
}

static void col_text(sqlite3_stmt *q, int i, char *dst, size_t n)
{
	const unsigned char *s = sqlite3_column_text(q, i);

	snprintf(dst, n, "%s", s ? (const char *)s : "");
}

int tc__mdb_load_artifacts(struct tc__mdb *db, tc__mdb_artifact_cb *acb,
			   void *arg, char *err, size_t errlen)
{
	sqlite3_stmt *q;
	int rc = 0, step;

	if (sqlite3_prepare_v2(db->db,
			       "SELECT id, policy, bytes, ntensors, "
			       "created_ms, expires_ms, source FROM artifacts",
			       -1, &q, NULL) != SQLITE_OK)
		return fail(db, "reading artifacts", err, errlen);
	while (rc == 0 && (step = sqlite3_step(q)) == SQLITE_ROW) {
		struct tc__mdb_artifact a;

		memset(&a, 0, sizeof(a));
		col_text(q, 0, a.id, sizeof(a.id));
		col_text(q, 1, a.policy, sizeof(a.policy));
		a.bytes = (uint64_t)sqlite3_column_int64(q, 2);
		a.ntensors = (uint32_t)sqlite3_column_int64(q, 3);
		a.created_ms = (uint64_t)sqlite3_column_int64(q, 4);
		a.expires_ms = (uint64_t)sqlite3_column_int64(q, 5);
		col_text(q, 6, a.source, sizeof(a.source));
		rc = acb(arg, &a);
	}
	sqlite3_finalize(q);
	return rc;
}

int tc__mdb_load_keys(struct tc__mdb *db, tc__mdb_key_cb *kcb, void *arg,
		      char *err, size_t errlen)
{
	struct tc__mdb_version *v = NULL;
	uint32_t nv = 0, cap = 0;
	char cur[1024] = "";
	sqlite3_stmt *q;
	int rc = 0, step;

	/* Versions of keys that still exist, by key then generation. */
	if (sqlite3_prepare_v2(db->db,
			       "SELECT v.name, v.gen, v.id, v.unix_ms FROM "
			       "key_versions v JOIN keys k ON k.name=v.name "
			       "ORDER BY v.name, v.gen",
			       -1, &q, NULL) != SQLITE_OK)
		return fail(db, "reading keys", err, errlen);
	for (;;) {
		const unsigned char *name;

		step = sqlite3_step(q);
		name = step == SQLITE_ROW ? sqlite3_column_text(q, 0) : NULL;
		if (nv && (!name || strcmp((const char *)name, cur))) {
			rc = kcb(arg, cur, v, nv);
			nv = 0;
			if (rc < 0)
				break;
		}
		if (!name)
			break;
		if (nv == cap) {
			struct tc__mdb_version *nvv;

			cap = cap ? cap * 2 : 16;
			nvv = tc__realloc(v, cap * sizeof(*v));
			if (!nvv) {
				rc = -ENOMEM;
				break;
			}
			v = nvv;
		}
		snprintf(cur, sizeof(cur), "%s", (const char *)name);
		v[nv].gen = (uint64_t)sqlite3_column_int64(q, 1);
		col_text(q, 2, v[nv].id, sizeof(v[nv].id));
		v[nv].unix_ms = (uint64_t)sqlite3_column_int64(q, 3);
		nv++;
	}
	sqlite3_finalize(q);
	tc__free(v);
	return rc;
}
