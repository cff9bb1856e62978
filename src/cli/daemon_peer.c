/*
 * daemon_peer.c - the daemon's main wires the peer server to the store.
 *
 * The store and the peer layer do not know each other (docs/design.md):
 * the store reports host replicas and key moves through its observer
 * (store/obj.h), and this file forwards them to the peer server's
 * registry.  The bound address goes to `peer.addr` next to the socket, so
 * `peer_listen: HOST:0` is usable by scripts and tests.
 *
 * Policy ha wires both ways through here too: the store asks another
 * node for a replica through cfg->ha (tc__peer_replicate), and this
 * node's peer server answers such a request by pulling into its own
 * daemon over the local socket, as `tcast pull ID --from A` does.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common/log.h"
#include "peer/peer.h"
#include "store/config.h"
#include "store/obj.h"
#include "tcast/errors.h"

static struct tc__peer_server *srv;
static struct tc__auth_secret secret;
static struct tc__tls_ctx *tls_ctx; /* NULL: TLS off */
static char node_name[64];
static char addr_file[PATH_MAX];
static const struct tc__store_config *dcfg;

static void on_replica(void *arg, const struct tc__obj *o, bool up)
{
	int rc;

	if (!up) {
		tc__peer_server_withdraw(srv, o->id);
		return;
	}
	rc = tc__peer_server_publish(srv, o->id, o->shm->ro_fd, &o->table,
				     o->chunks, o->nchunks);
	if (rc < 0)
		tc__log(TC_LOG_WARN, "peer: cannot serve %s: %s", o->id,
			tc_strerror(rc));
}

/* A GPU copy (a replica, a published binding): served through
 * device-to-host staging when this node holds no host replica of it. */
static void on_gpu_replica(void *arg, const char *id, const struct tc__table *t,
			   const struct tc__digest *chunks, uint64_t nchunks,
			   int ordinal, uint64_t dptr, uint64_t size, bool up)
{
	int rc;

	if (!up) {
		tc__peer_server_withdraw_gpu(srv, id, dptr);
		return;
	}
	rc = tc__peer_server_publish_gpu(srv, id, ordinal, dptr, size, t,
					 chunks, nchunks);
	if (rc < 0)
		tc__log(TC_LOG_WARN, "peer: cannot serve %s from GPU %d: %s",
			id, ordinal, tc_strerror(rc));
}

static void on_key(void *arg, const char *key, const char *id)
{
	tc__peer_server_key(srv, key, id);
}

/* A pull into this daemon fills `id`: serve what it has verified, so
 * the other receivers of a fan-out pull from here too. */
static void on_filling(void *arg, const char *id, int fd,
		       const struct tc__table *t,
		       const struct tc__digest *chunks, uint64_t nchunks,
		       bool up)
{
	int rc;

	if (!up) {
		tc__peer_server_withdraw_partial(srv, id);
		return;
	}
	rc = tc__peer_server_publish_partial(srv, id, fd, t, chunks, nchunks);
	if (rc < 0)
		tc__log(TC_LOG_WARN, "peer: cannot serve %s while it fills: %s",
			id, tc_strerror(rc));
}

static void on_filling_have(void *arg, const char *id, const uint64_t *chunks,
			    uint32_t n, bool fetching)
{
	tc__peer_server_have(srv, id, chunks, n, fetching);
}

static uint32_t on_uploads(void *arg)
{
	return tc__peer_server_uploads(srv);
}

static const struct tc__objs_observer observer = {
	.replica = on_replica,
	.key = on_key,
	.filling = on_filling,
	.filling_have = on_filling_have,
	.uploads = on_uploads,
	.gpu_replica = on_gpu_replica,
};

/* A REPLICATE_REQ from another node (its ha artifact): pull `id` from
 * `source` into this daemon, on the asking connection's thread.  The
 * replica is an ordinary cache artifact here, under its id only. */
static int on_replicate(void *arg, const char *id, const char *source,
			uint64_t *bytes, uint64_t *ns, char *err, size_t errlen)
{
	const char *sources[1] = { source };
	struct tc__peer_pull_opts po = { 0 };
	struct tc__peer_pull_result *r = calloc(1, sizeof(*r));
	struct tc_opts o = { 0 };
	struct tc_result res;
	tc_client *c = NULL;
	char why[1024];
	int rc;

	if (!r)
		return -ENOMEM;
	rc = tc_client_connect(dcfg->socket, &c, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "pull failed: its daemon: %s", why);
		goto out;
	}
	po.ref = id;
	po.sources = sources;
	po.nsources = 1;
	po.streams = 0; /* chosen: the lone-source rule */
	po.timeout_ms = dcfg->peer_timeout_ms;
	po.secret = &secret;
	po.tls = tls_ctx;
	po.name = node_name;
	rc = cli_pull_into(c, &o, &po, r, &res, NULL, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "pull failed: %s", why);
		goto out;
	}
	*bytes = r->bytes;
	*ns = r->ns;
	tc__log(TC_LOG_INFO, "replica of %s pulled from %s: %llu bytes", id,
		source, (unsigned long long)r->bytes);
out:
	tc_client_close(c);
	free(r);
	return rc;
}

/* The store's side (cfg->ha): ask the node at `addr` for a replica. */
static int ha_replicate(void *arg, const char *addr, const char *id,
			const char *source, int wait_ms, char *err,
			size_t errlen)
{
	uint64_t bytes, ns;

	return tc__peer_replicate(addr, id, source, tls_ctx, &secret, node_name,
				  dcfg->peer_timeout_ms, wait_ms, &bytes, &ns,
				  err, errlen);
}

static const struct tc__ha_ops ha_ops = { .replicate = ha_replicate };

int cli_daemon_peer_start(struct tc__store_config *cfg, char *err,
			  size_t errlen)
{
	struct tc__peer_server_opts o = { 0 };
	char tmp[PATH_MAX];
	FILE *f;
	int rc;

	if (!cfg->peer_listen[0])
		return 0;
	if (!cfg->cluster_secret_file[0]) {
		snprintf(err, errlen,
			 "peer_listen needs cluster_secret_file (a 0600 file "
			 "of at least %d bytes)",
			 TC_AUTH_MIN_SECRET);
		return TC_EBADCONFIG;
	}
	rc = tc__auth_load_secret(cfg->cluster_secret_file, &secret, err,
				  errlen);
	if (rc < 0)
		return rc;
	rc = tc__tls_ctx_new(&cfg->tls, &tls_ctx, err, errlen);
	if (rc < 0)
		return rc;
	o.listen = cfg->peer_listen;
	o.secret = &secret;
	o.tls = tls_ctx;
	gethostname(node_name, sizeof(node_name) - 1);
	o.name = node_name;
	o.io_timeout_ms = cfg->peer_timeout_ms;
	o.replicate = on_replicate;
	dcfg = cfg;
	rc = tc__peer_server_start(&o, &srv, err, errlen);
	if (rc < 0) {
		tc__tls_ctx_free(tls_ctx);
		tls_ctx = NULL;
		return rc;
	}
	cfg->observer = &observer;
	cfg->ha = &ha_ops;
	/* Port 0 chose a port: the cluster advertises the one bound. */
	snprintf(cfg->peer_bound, sizeof(cfg->peer_bound), "%s",
		 tc__peer_server_addr(srv));
	snprintf(tmp, sizeof(tmp), "%s", cfg->socket);
	snprintf(addr_file, sizeof(addr_file), "%s/peer.addr", dirname(tmp));
	f = fopen(addr_file, "w");
	if (f) {
		fprintf(f, "%s\n", tc__peer_server_addr(srv));
		fclose(f);
	}
	return 0;
}

void cli_daemon_peer_stop(void)
{
	if (!srv)
		return;
	unlink(addr_file);
	tc__peer_server_stop(srv);
	srv = NULL;
	tc__tls_ctx_free(tls_ctx);
	tls_ctx = NULL;
}
