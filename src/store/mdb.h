/*
 * mdb.h - the daemon's own metadata in SQLite (WAL), under its state
 * folder: durable artifacts (policy, where their disk copy is, size,
 * TTL), and keys with their version history.
 *
 * It is what a restart, a crash or a kill -9 finds again.  Every write is
 * one transaction committed with synchronous=FULL before the caller
 * acknowledges anything: WAL makes that one fsync of the log.  Only
 * artifacts whose bytes are already durable on the shared disk are
 * recorded (the caller writes the disk copy first), so a row never points
 * at a partial copy.  Loop thread only; no other module's types here but
 * plain values.
 */
#ifndef TC_MDB_H
#define TC_MDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"

#define TC_MDB_FILE "tcast-meta.sqlite" /* in the state folder */

struct tc__mdb;

/* One durable artifact. */
struct tc__mdb_artifact {
	char id[TC_ID_LEN + 1];
	char policy[16];     /* durable, ha, cold */
	uint64_t bytes;	     /* byte space */
	uint32_t ntensors;   /* for listings before the first load */
	uint64_t created_ms; /* unix time */
	uint64_t expires_ms; /* unix time the artifact goes; 0 = never */
	char source[512];    /* where it came from, for inspect */
};

/* One version of a key. */
struct tc__mdb_version {
	uint64_t gen;
	char id[TC_ID_LEN + 1];
	uint64_t unix_ms;
};

/* Open (creating) <dir>/TC_MDB_FILE; dir is created 0700 when missing.
 * Returns 0, TC_EBADCONFIG (not a folder, not writable, not a database)
 * or -ENOMEM; err says which file and why. */
int tc__mdb_open(const char *dir, struct tc__mdb **out, char *err,
		 size_t errlen);
/* NULL is a no-op. */
void tc__mdb_close(struct tc__mdb *db);

/* Record a durable artifact (replacing its row).  Returns 0 or TC_EIO-like
 * -EIO with err set (the disk under the state folder failed). */
int tc__mdb_artifact_put(struct tc__mdb *db, const struct tc__mdb_artifact *a,
			 char *err, size_t errlen);
int tc__mdb_artifact_del(struct tc__mdb *db, const char *id, char *err,
			 size_t errlen);
/* Point `key` at `id` at generation gen, appending to its history (the
 * newest `keep` versions are kept).  Returns 0 or -EIO. */
int tc__mdb_key_set(struct tc__mdb *db, const char *key,
		    const struct tc__mdb_version *v, uint32_t keep, char *err,
		    size_t errlen);
/* Forget a key and its history. */
int tc__mdb_key_del(struct tc__mdb *db, const char *key, char *err,
		    size_t errlen);
/* True when the key is recorded. */
bool tc__mdb_key_known(struct tc__mdb *db, const char *key);

/* Read everything back: one call per artifact; then one call per key
 * with its versions oldest first (the current one last).  A callback
 * returning < 0 stops and that value is returned. */
typedef int tc__mdb_artifact_cb(void *arg, const struct tc__mdb_artifact *a);
typedef int tc__mdb_key_cb(void *arg, const char *key,
			   const struct tc__mdb_version *v, uint32_t n);
int tc__mdb_load_artifacts(struct tc__mdb *db, tc__mdb_artifact_cb *cb,
			   void *arg, char *err, size_t errlen);
int tc__mdb_load_keys(struct tc__mdb *db, tc__mdb_key_cb *cb, void *arg,
		      char *err, size_t errlen);

#endif /* TC_MDB_H */
