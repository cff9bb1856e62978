/*
 * gs.h - the global store (`tcast global`): the cluster's metadata service.
 *
 * One process, one event-loop thread.  It holds nodes and their heartbeat
 * leases, artifacts, keys (version history, compare-and-swap), replicas
 * (node, tier, chunks held) and answers source queries from an in-memory
 * index; every change goes through a metadata backend (backend.h, SQLite
 * first) before its reply is sent.  No tensor bytes ever pass through it.
 * Layering: common, net, proto and global only.
 */
#ifndef TC_GS_H
#define TC_GS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/tls.h"
#include "proto/gsp.h"

struct tc__gs_config {
	char listen[TC_GSP_MAX_ADDR + 1]; /* HOST:PORT (port 0: any) */
	char secret_file[PATH_MAX];	  /* cluster_secret_file */
	char db[PATH_MAX];		  /* SQLite file */
	char log_file[PATH_MAX];	  /* "" = stderr */
	char state_dir[PATH_MAX];	  /* pid, log, db, address files */
	int log_level;
	int lease_ms;		   /* a node unheard this long leaves routing */
	int heartbeat_ms;	   /* what nodes are told to send at */
	int max_conns;		   /* connections at once */
	int handshake_ms;	   /* time to finish the cluster handshake */
	int idle_ms;		   /* a connection silent this long is closed */
	int sources_max;	   /* sources in a reply, at most */
	bool sync_full;		   /* durability: full (fsync every commit) */
	struct tc__tls_config tls; /* tls, tls_cert, tls_key, tls_ca */
};

void tc__gs_config_defaults(struct tc__gs_config *c);
/* YAML mapping of listen, cluster_secret_file, db, log_file, log_level,
 * state_dir, lease_ms, heartbeat_ms, max_connections, handshake_ms,
 * idle_ms, sources_max, durability (normal|full), tls (auto|on|off),
 * tls_cert, tls_key, tls_ca.  Unknown keys are
 * errors.  Returns 0, TC_EBADCONFIG or -errno with `err`. */
int tc__gs_config_load(struct tc__gs_config *c, const char *path, char *err,
		       size_t errlen);
int tc__gs_config_set(struct tc__gs_config *c, const char *key, const char *val,
		      char *err, size_t errlen);
/* Fill db/log_file defaults from state_dir. */
void tc__gs_config_finish(struct tc__gs_config *c);

/* Run the store until SIGTERM/SIGINT.  When ready_fd >= 0, one byte is
 * written to it once the store listens (then it is closed).  Returns 0 or
 * a negative code with `err`. */
int tc__gs_run(const struct tc__gs_config *c, int ready_fd, char *err,
	       size_t errlen);

#endif /* TC_GS_H */
