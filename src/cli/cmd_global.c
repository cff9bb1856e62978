/*
 * cmd_global.c - tcast global start|stop|status|logs|run|resolve|key-set|
 * group
 *
 * The global store's lifecycle mirrors `tcast daemon`: `start` forks it
 * and returns once it listens (or prints why it did not start), `run`
 * keeps it in the foreground.  Its pid, log and bound address live in its
 * state directory, which is how stop, logs and status find it; status and
 * resolve talk to it over TCP with the cluster secret like any client.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common/compiler.h"
#include "common/log.h"
#include "global/gs.h"
#include "net/auth.h"
#include "net/ev.h"
#include "net/net.h"
#include "proto/proto.h"
#include "store/gsc.h"
#include "tcast/errors.h"

struct gopts {
	struct tc__gs_config cfg;
	char global[TC_GSP_MAX_ADDR + 1]; /* --global: whom to ask */
	uint64_t timeout;
	const char *operand;
	const char *operand2; /* key-set: the id */
	uint64_t max;
	uint64_t expect; /* key-set --expect */
	bool has_expect;
	bool via_daemon;
	/* group: its request (name, rank, ranks, node, lease, id, reason) */
	bool group;
	struct tc__gsp_group_req gq;
	bool has_rank, has_ranks;
};

static int set(struct tc__gs_config *c, const char *k, const char *v)
{
	char err[512];
	int rc = tc__gs_config_set(c, k, v, err, sizeof(err));

	return rc < 0 ? cli_fail(rc, err) : 0;
}

/* The options only `global group` takes.  1: taken, 0: not one of them,
 * EXIT_USAGE: a bad value. */
static int parse_group_opt(int argc, char **argv, int *i, struct gopts *o)
{
	struct tc__gsp_group_req *q = &o->gq;
	const char *v;
	uint64_t n;
	int m;

	if ((m = cli_opt(argc, argv, i, "--rank", &v))) {
		if (m < 0 ||
		    cli_parse_uint("--rank", v, 0, TC_GSP_MAX_RANKS - 1, &n))
			return EXIT_USAGE;
		q->rank = (uint32_t)n;
		o->has_rank = true;
	} else if ((m = cli_opt(argc, argv, i, "--ranks", &v))) {
		if (m < 0 ||
		    cli_parse_uint("--ranks", v, 1, TC_GSP_MAX_RANKS, &n))
			return EXIT_USAGE;
		q->ranks = (uint32_t)n;
		o->has_ranks = true;
	} else if ((m = cli_opt(argc, argv, i, "--timeout-ms", &v))) {
		if (m < 0 || cli_parse_uint("--timeout-ms", v, 1,
					    TC_GSP_MAX_GROUP_MS, &n))
			return EXIT_USAGE;
		q->timeout_ms = (uint32_t)n;
	} else if ((m = cli_opt(argc, argv, i, "--rank-lease-ms", &v))) {
		if (m < 0 ||
		    cli_parse_uint("--rank-lease-ms", v, TC_GSP_MIN_LEASE_MS,
				   TC_GSP_MAX_LEASE_MS, &n))
			return EXIT_USAGE;
		q->lease_ms = (uint32_t)n;
	} else if ((m = cli_opt(argc, argv, i, "--wait-ms", &v))) {
		if (m < 0 ||
		    cli_parse_uint("--wait-ms", v, 0, TC_GSP_MAX_WAIT_MS, &n))
			return EXIT_USAGE;
		q->wait_ms = (uint32_t)n;
	} else if ((m = cli_opt(argc, argv, i, "--node", &v))) {
		if (m < 0 || strlen(v) > TC_GSP_MAX_NAME)
			return m < 0 ? EXIT_USAGE :
				       cli_usage_error("--node: too long");
		snprintf(q->node, sizeof(q->node), "%s", v);
	} else if ((m = cli_opt(argc, argv, i, "--id", &v))) {
		if (m < 0 || strlen(v) > TC_GSP_MAX_ID)
			return m < 0 ? EXIT_USAGE :
				       cli_usage_error("--id: too long");
		snprintf(q->id, sizeof(q->id), "%s", v);
	} else if ((m = cli_opt(argc, argv, i, "--reason", &v))) {
		if (m < 0)
			return EXIT_USAGE;
		/* the store takes printable ASCII: say it here, not as a
		 * protocol error */
		snprintf(q->reason, sizeof(q->reason), "%s", v);
		for (char *p = q->reason; *p; p++)
			if ((unsigned char)*p < 0x20 ||
			    (unsigned char)*p > 0x7e)
				*p = '?';
	} else {
		return 0;
	}
	return 1;
}

static int parse(int argc, char **argv, struct gopts *o, bool operand)
{
	static const struct {
		const char *opt, *key;
	} map[] = {
		{ "--listen", "listen" },
		{ "--cluster-secret-file", "cluster_secret_file" },
		{ "--state-dir", "state_dir" },
		{ "--db", "db" },
		{ "--log-file", "log_file" },
		{ "--log-level", "log_level" },
		{ "--lease-ms", "lease_ms" },
		{ "--tls", "tls" },
		{ "--tls-cert", "tls_cert" },
		{ "--tls-key", "tls_key" },
		{ "--tls-ca", "tls_ca" },
		{ "--tls-verify-name", "tls_verify_name" },
	};
	char err[1024];
	const char *v;
	int rc, m;

	tc__gs_config_defaults(&o->cfg);
	o->timeout = 35;
	o->max = 8;
	for (int i = 2; i < argc; i++) {
		if ((m = cli_opt(argc, argv, &i, "--config", &v))) {
			if (m < 0 || cli_parse_nonempty("--config", v))
				return EXIT_USAGE;
			rc = tc__gs_config_load(&o->cfg, v, err, sizeof(err));
			if (rc < 0)
				return cli_fail(rc, err);
		}
	}
	for (int i = 2; i < argc; i++) {
		bool done = false;

		if ((m = cli_opt(argc, argv, &i, "--config", &v)))
			continue;
		for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++) {
			if ((m = cli_opt(argc, argv, &i, map[k].opt, &v))) {
				if (m < 0)
					return EXIT_USAGE;
				rc = set(&o->cfg, map[k].key, v);
				if (rc)
					return rc;
				done = true;
				break;
			}
		}
		if (done)
			continue;
		if (o->group) {
			rc = parse_group_opt(argc, argv, &i, o);
			if (rc == EXIT_USAGE)
				return rc;
			if (rc == 1)
				continue;
		}
		if ((m = cli_opt(argc, argv, &i, "--global", &v))) {
			if (m < 0 || strlen(v) > TC_GSP_MAX_ADDR)
				return m < 0 ? EXIT_USAGE :
					       cli_usage_error("--global: too "
							       "long");
			snprintf(o->global, sizeof(o->global), "%s", v);
		} else if ((m = cli_opt(argc, argv, &i, "--timeout", &v))) {
			if (m < 0 || cli_parse_uint("--timeout", v, 1, 86400,
						    &o->timeout))
				return EXIT_USAGE;
		} else if ((m = cli_opt(argc, argv, &i, "--max", &v))) {
			if (m < 0 ||
			    cli_parse_uint("--max", v, 1, TC_GSP_MAX_SOURCES,
					   &o->max))
				return EXIT_USAGE;
		} else if ((m = cli_opt(argc, argv, &i, "--set", &v))) {
			const char *eq = m > 0 ? strchr(v, '=') : NULL;
			char key[64];

			if (m < 0)
				return EXIT_USAGE;
			if (!eq || eq == v || (size_t)(eq - v) >= sizeof(key))
				return cli_usage_error(
					"--set: '%s' is not KEY=VALUE",
					cli_esc(v));
			snprintf(key, sizeof(key), "%.*s", (int)(eq - v), v);
			rc = set(&o->cfg, key, eq + 1);
			if (rc)
				return rc;
		} else if ((m = cli_opt(argc, argv, &i, "--expect", &v))) {
			if (m < 0 || !operand ||
			    cli_parse_uint("--expect", v, 0, UINT64_MAX,
					   &o->expect))
				return EXIT_USAGE;
			o->has_expect = true;
		} else if (operand && !strcmp(argv[i], "--via-daemon")) {
			o->via_daemon = true;
		} else if (operand && !o->operand && argv[i][0] != '-') {
			o->operand = argv[i];
		} else if (operand && !o->operand2 && argv[i][0] != '-') {
			o->operand2 = argv[i];
		} else {
			return cli_usage_error("unknown argument '%s'",
					       cli_esc(argv[i]));
		}
	}
	tc__gs_config_finish(&o->cfg);
	if (!o->cfg.log_file[0])
		snprintf(o->cfg.log_file, sizeof(o->cfg.log_file),
			 "%s/global.log", o->cfg.state_dir);
	return 0;
}

static int run_foreground(const struct tc__gs_config *cfg, int ready_fd,
			  bool to_file)
{
	char err[1024];
	FILE *log = NULL;
	int rc;

	tc__log_level = cfg->log_level;
	if (to_file) {
		char dir[PATH_MAX];

		log = fopen(cfg->log_file, "a");
		if (!log) {
			/* the state directory may not exist yet */
			char *slash;

			snprintf(dir, sizeof(dir), "%s", cfg->log_file);
			slash = strrchr(dir, '/');
			if (slash && slash != dir) {
				*slash = '\0';
				mkdir(dir, 0700);
			}
			log = fopen(cfg->log_file, "a");
		}
		if (log) {
			setvbuf(log, NULL, _IOLBF, 0);
			tc__log_set_file(log);
		}
	}
	rc = tc__gs_run(cfg, ready_fd, err, sizeof(err));
	if (rc < 0) {
		tc__log(TC_LOG_ERROR, "cannot start: %s", err);
		if (!log)
			fprintf(stderr, "error: %s: %s\n", tc_err_name(rc),
				err);
	}
	if (log)
		fclose(log);
	return rc < 0 ? EXIT_RUNTIME : 0;
}

static char *slurp_line(const char *dir, const char *name)
{
	char path[PATH_MAX], buf[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return NULL;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return strdup(buf);
}

static pid_t running_pid(const struct tc__gs_config *cfg)
{
	char *s = slurp_line(cfg->state_dir, "global.pid");
	pid_t pid = s ? (pid_t)atoi(s) : 0;

	char path[64], st[512];
	FILE *f;
	char *rp;

	free(s);
	if (pid <= 0 || kill(pid, 0) < 0)
		return 0;
	/* A store killed with -9 may linger as a zombie its parent never
	 * reaps: it no longer runs. */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f && fgets(st, sizeof(st), f) && (rp = strrchr(st, ')')) &&
	    rp[1] == ' ' && rp[2] == 'Z')
		pid = 0;
	if (f)
		fclose(f);
	return pid;
}

static int global_child(void *cfg, int ready_fd)
{
	return run_foreground(cfg, ready_fd, true);
}

static int start(struct gopts *o)
{
	char msg[4096];
	pid_t pid, other;
	int rc;

	other = running_pid(&o->cfg);
	if (other) {
		snprintf(msg, sizeof(msg),
			 "a global store (pid %d) already runs from '%s'",
			 (int)other, o->cfg.state_dir);
		return cli_fail(TC_EEXIST, msg);
	}
	rc = cli_spawn_service(global_child, &o->cfg, &pid);
	if (rc < 0 && rc != TC_ENODAEMON)
		return cli_fail(rc, "cannot start the global store");
	if (rc == 0) {
		char *addr = slurp_line(o->cfg.state_dir, "global.addr");

		if (cli.json)
			cli_put_json(json_pack(
				"{s:i, s:s, s:s, s:s}", "pid", (int)pid,
				"listen", addr ? addr : "", "log",
				o->cfg.log_file, "db", o->cfg.db));
		else
			printf("tcast global started (pid %d, listening on "
			       "%s, log %s)\n",
			       (int)pid, cli_esc(addr ? addr : "?"),
			       cli_esc(o->cfg.log_file));
		free(addr);
		return 0;
	}
	{
		char *tail = cli_log_tail(o->cfg.log_file, 10);

		snprintf(msg, sizeof(msg),
			 "the global store did not start; %s%s",
			 tail ? "its log says:\n" : "no log at ",
			 tail ? tail : o->cfg.log_file);
		free(tail);
	}
	return cli_fail(TC_ENODAEMON, msg);
}

static int stop(struct gopts *o)
{
	pid_t pid = running_pid(&o->cfg);
	struct timespec ts = { 0, 20 * 1000000 };
	bool killed = true;

	if (!pid) {
		if (cli.json)
			cli_put_json(json_pack("{s:b}", "stopped", 0));
		else
			printf("tcast global is not running from '%s'\n",
			       cli_esc(o->cfg.state_dir));
		return 0;
	}
	if (kill(pid, SIGTERM) < 0)
		return cli_fail(-errno, "cannot signal the global store");
	for (uint64_t i = 0; i < o->timeout * 50; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH) {
			killed = false;
			break;
		}
		nanosleep(&ts, NULL);
	}
	if (killed)
		kill(pid, SIGKILL);
	if (cli.json)
		cli_put_json(json_pack("{s:b, s:i, s:b}", "stopped", 1, "pid",
				       (int)pid, "killed", killed));
	else
		printf("tcast global stopped (pid %d)%s\n", (int)pid,
		       killed ? " by SIGKILL" : "");
	return 0;
}

/*
 * The address a tool on this host dials for the store whose state dir
 * recorded `addr`, into out[n].  A store listening on every address
 * (0.0.0.0 or [::]) is reached over loopback, and since no certificate
 * names a wildcard, its name is not checked: the chain still is, and the
 * cluster secret's challenge-response authenticates both ends.  Any other
 * recorded address is dialled and checked as it is.
 */
static void local_addr(const char *addr, char *out, size_t n,
		       struct tc__tls_config *tls)
{
	static const struct {
		const char *any, *lo;
	} wild[] = { { "0.0.0.0:", "127.0.0.1:" }, { "[::]:", "[::1]:" } };

	snprintf(out, n, "%s", addr);
	for (size_t i = 0; i < TC_ARRAY_SIZE(wild); i++) {
		size_t k = strlen(wild[i].any);

		if (strncmp(addr, wild[i].any, k))
			continue;
		snprintf(out, n, "%s%s", wild[i].lo, addr + k);
		tls->no_verify_name = 1;
		break;
	}
}

/* Connect as a tool to --global or the address the state dir records. */
static int connect_tool(struct gopts *o, struct tc__gsc *g)
{
	struct tc__auth_secret sec;
	struct tc__tls_ctx *tls = NULL;
	char err[1024], *addr = NULL, local[300];
	const char *where = o->global;
	int rc;

	if (!o->cfg.secret_file[0])
		return cli_fail(TC_EBADCONFIG,
				"no cluster secret: pass "
				"--cluster-secret-file or --config");
	if (!where[0]) {
		addr = slurp_line(o->cfg.state_dir, "global.addr");
		if (!addr) {
			snprintf(err, sizeof(err),
				 "no global store address: pass --global "
				 "HOST:PORT (none recorded in '%s')",
				 o->cfg.state_dir);
			return cli_fail(TC_ENODAEMON, err);
		}
		local_addr(addr, local, sizeof(local), &o->cfg.tls);
		where = local;
	}
	rc = tc__auth_load_secret(o->cfg.secret_file, &sec, err, sizeof(err));
	if (rc < 0) {
		free(addr);
		return cli_fail(rc, err);
	}
	rc = tc__tls_ctx_new(&o->cfg.tls, &tls, err, sizeof(err));
	if (rc < 0) {
		free(addr);
		tc__auth_secret_wipe(&sec);
		return cli_fail(rc, err);
	}
	tc__gsc_init(g, 5000);
	g->tls_ctx = tls;
	rc = tc__gsc_connect(g, where, &sec, TC_AUTH_ROLE_TOOL, "tcast-cli");
	tc__auth_secret_wipe(&sec);
	free(addr);
	/* The connection keeps its own reference to the context (SSL). */
	g->tls_ctx = NULL;
	tc__tls_ctx_free(tls);
	if (rc < 0) {
		cli_fail(rc, g->err);
		tc__gsc_close(g);
		return EXIT_RUNTIME;
	}
	return 0;
}

static int status(struct gopts *o)
{
	struct tc__gsc g;
	char *doc = NULL;
	json_t *j, *n;
	size_t i;
	int rc = connect_tool(o, &g);

	if (rc)
		return rc;
	rc = tc__gsc_status(&g, &doc);
	if (rc < 0) {
		rc = cli_fail(rc, g.err);
		tc__gsc_close(&g);
		return rc;
	}
	tc__gsc_close(&g);
	j = json_loads(doc, 0, NULL);
	free(doc);
	if (!j)
		return cli_fail(TC_EPROTO, "status is not JSON");
	if (cli.json) {
		cli_put_json(j);
		return 0;
	}
	printf("global store %s (pid %lld, %s), up %lld s\n",
	       cli_esc(json_string_value(json_object_get(j, "listen"))),
	       json_integer_value(json_object_get(j, "pid")),
	       cli_esc(json_string_value(json_object_get(j, "backend"))),
	       json_integer_value(json_object_get(j, "uptime_ms")) / 1000);
	printf("nodes %zu (%lld live), artifacts %lld, replicas %lld, keys "
	       "%lld, groups %lld (%lld open); lease %lld ms\n",
	       json_array_size(json_object_get(j, "nodes")),
	       json_integer_value(json_object_get(j, "nodes_live")),
	       json_integer_value(json_object_get(j, "artifacts")),
	       json_integer_value(json_object_get(j, "replicas")),
	       json_integer_value(json_object_get(j, "keys")),
	       json_integer_value(json_object_get(j, "groups")),
	       json_integer_value(json_object_get(j, "groups_open")),
	       json_integer_value(json_object_get(j, "lease_ms")));
	printf("%-4s %-20s %-22s %-5s %-9s %-22s %s\n", "ID", "NODE", "PEER",
	       "LIVE", "LEASE", "ZONE/RACK/HOST", "REPLICAS");
	json_array_foreach(json_object_get(j, "nodes"), i, n)
	{
		char labels[200], reps[200] = "";
		const char *k;
		json_t *v;
		size_t off = 0;

		snprintf(labels, sizeof(labels), "%s/%s/%s",
			 json_string_value(json_object_get(n, "zone")),
			 json_string_value(json_object_get(n, "rack")),
			 json_string_value(json_object_get(n, "host")));
		json_object_foreach(json_object_get(n, "replicas"), k, v)
		{
			off += (size_t)snprintf(reps + off, sizeof(reps) - off,
						"%s%s:%lld", off ? " " : "", k,
						json_integer_value(v));
			if (off >= sizeof(reps))
				break;
		}
		printf("%-4lld %-20s %-22s %-5s %-9lld %-22s %s\n",
		       json_integer_value(json_object_get(n, "id")),
		       cli_esc(json_string_value(json_object_get(n, "name"))),
		       cli_esc(json_string_value(
			       json_object_get(n, "peer_addr"))),
		       json_is_true(json_object_get(n, "live")) ? "yes" : "no",
		       json_integer_value(json_object_get(n, "lease_ms_left")),
		       cli_esc(labels), reps[0] ? reps : "-");
	}
	json_decref(j);
	return 0;
}

/* Read exactly n bytes (blocking). */
static int read_all(int fd, void *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : TC_ECLOSED;
		got += (size_t)r;
	}
	return 0;
}

/* One request to the local daemon over its socket: HELLO, then `type`
 * with `body`; the reply body (after a 0 status) into *out (malloc'd).
 * With `keep`, a successful call leaves the connection open in *keep
 * (a GROUP hold lasts as long as it). */
static int daemon_call_keep(int type, const struct tc__buf *body, uint8_t **out,
			    size_t *outlen, char *err, size_t errlen, int *keep)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t hdr[TC_FRAME_HDR], *rb = NULL;
	char sock[PATH_MAX];
	size_t off;
	int fd, rc;

	*out = NULL;
	if (cli.socket)
		snprintf(sock, sizeof(sock), "%s", cli.socket);
	else if (tc__sock_default_path(sock, sizeof(sock)) < 0)
		return TC_ELIMIT;
	rc = tc__sock_check_dir(sock, tc__sock_trust_root(), err, errlen);
	if (rc < 0)
		return rc;
	rc = tc__sock_connect(sock, &fd);
	if (rc < 0) {
		snprintf(err, errlen, "no daemon on '%s': %s", sock,
			 strerror(-rc));
		return TC_ENODAEMON;
	}
	rc = tc__sock_check_peer(fd, tc__sock_trust_root(), err, errlen);
	if (rc < 0)
		goto out;
	off = tc__frame_begin(&b, TC_MSG_HELLO, 0, 1, 0);
	tc__buf_put_u32(&b, TC_PROTO_VERSION);
	tc__buf_put_u32(&b, (uint32_t)getpid());
	tc__buf_put_str(&b, "tcast-global-cli");
	tc__frame_finish(&b, off);
	off = tc__frame_begin(&b, type, 0, 2, 0);
	tc__buf_put(&b, body->data, body->len);
	tc__frame_finish(&b, off);
	if (b.oom || write(fd, b.data, b.len) != (ssize_t)b.len) {
		rc = -EIO;
		snprintf(err, errlen, "cannot send to the daemon");
		goto out;
	}
	for (int k = 0; k < 2; k++) {
		struct tc__cur c;
		int32_t st;

		free(rb);
		rb = NULL;
		rc = read_all(fd, hdr, sizeof(hdr));
		if (rc == 0)
			rc = tc__frame_decode(hdr, &h, err, errlen);
		if (rc < 0)
			goto out;
		rb = malloc(h.body_len ? h.body_len : 1);
		if (!rb) {
			rc = -ENOMEM;
			goto out;
		}
		rc = read_all(fd, rb, h.body_len);
		if (rc < 0)
			goto out;
		tc__cur_init(&c, rb, h.body_len);
		if (tc__cur_read_i32(&c, &st) < 0) {
			rc = TC_EPROTO;
			snprintf(err, errlen, "reply without a status");
			goto out;
		}
		if (st < 0) {
			const char *m;
			size_t ml;

			if (tc__cur_read_str(&c, 65536, &m, &ml) == 0)
				snprintf(err, errlen, "%.*s", (int)ml, m);
			rc = st;
			goto out;
		}
		if (k == 1) {
			*outlen = c.left;
			memmove(rb, c.p, c.left);
			*out = rb;
			rb = NULL;
		}
	}
	rc = 0;
out:
	free(rb);
	tc__buf_release(&b);
	if (keep && rc == 0)
		*keep = fd;
	else
		close(fd);
	return rc;
}

static int daemon_call(int type, const struct tc__buf *body, uint8_t **out,
		       size_t *outlen, char *err, size_t errlen)
{
	return daemon_call_keep(type, body, out, outlen, err, errlen, NULL);
}

/* The same question through the local daemon, which asks the global
 * store over its own authenticated connection (no secret needed here).
 * `src` holds TC_GSP_MAX_SOURCES; errors are reported (cli_fail). */
int cli_cluster_sources(const char *ref, uint32_t max, char *id, uint64_t *gen,
			struct tc__gsp_source *src, uint32_t *n, char *err,
			size_t errlen)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	uint8_t *rb = NULL;
	size_t rl = 0;
	int rc;

	err[0] = '\0';
	tc__buf_put_str(&b, ref);
	tc__buf_put_u32(&b, max);
	rc = daemon_call(TC_MSG_CLUSTER_RESOLVE, &b, &rb, &rl, err, errlen);
	tc__buf_release(&b);
	if (rc < 0) {
		if (!err[0])
			snprintf(err, errlen, "%s", tc_strerror(rc));
		return rc;
	}
	tc__cur_init(&c, rb, rl);
	rc = tc__gsp_get_name(&c, "id", id, TC_GSP_MAX_ID, false, err, errlen);
	if (rc == 0 && (tc__cur_read_u64(&c, gen) < 0 ||
			tc__cur_read_u32(&c, n) < 0 || *n > TC_GSP_MAX_SOURCES))
		rc = TC_EPROTO;
	for (uint32_t i = 0; rc == 0 && i < *n; i++)
		rc = tc__gsp_get_source(&c, &src[i], err, errlen);
	free(rb);
	if (rc < 0)
		snprintf(err, errlen, "malformed reply from the daemon");
	return rc;
}

int cli_cluster_resolve(const char *ref, uint32_t max, char *id, uint64_t *gen,
			struct tc__gsp_source *src, uint32_t *n)
{
	char err[1024];
	int rc = cli_cluster_sources(ref, max, id, gen, src, n, err,
				     sizeof(err));

	return rc < 0 ? cli_fail(rc, err) : 0;
}

static int resolve(struct gopts *o)
{
	struct tc__gsp_source src[TC_GSP_MAX_SOURCES];
	char id[TC_GSP_MAX_ID + 1];
	struct tc__gsc g;
	uint64_t gen;
	uint32_t n;
	int rc;

	if (!o->operand)
		return cli_usage_error("resolve: which key or artifact id?");
	if (o->operand2 || o->has_expect)
		return cli_usage_error("resolve takes one key or id");
	if (o->via_daemon) {
		rc = cli_cluster_resolve(o->operand, (uint32_t)o->max, id, &gen,
					 src, &n);
		if (rc)
			return rc;
	} else {
		rc = connect_tool(o, &g);
		if (rc)
			return rc;
		rc = tc__gsc_resolve(&g, o->operand, "", (uint32_t)o->max, id,
				     &gen, src, &n);
		if (rc < 0) {
			rc = cli_fail(rc, g.err);
			tc__gsc_close(&g);
			return rc;
		}
		tc__gsc_close(&g);
	}
	if (cli.json) {
		json_t *a = json_array();

		for (uint32_t i = 0; i < n; i++)
			json_array_append_new(
				a, json_pack("{s:s, s:s, s:s, s:i, s:b, s:i, "
					     "s:i}",
					     "node", src[i].name, "peer_addr",
					     src[i].peer_addr, "tier",
					     tc__gsp_tier_name(src[i].tier),
					     "device", (int)src[i].device,
					     "complete", src[i].complete,
					     "distance", (int)src[i].distance,
					     "uploads", (int)src[i].uploads));
		cli_put_json(json_pack("{s:s, s:I, s:o}", "id", id, "gen",
				       (json_int_t)gen, "sources", a));
		return 0;
	}
	printf("%s", cli_esc(id));
	if (gen)
		printf(" (generation %llu)", (unsigned long long)gen);
	printf("\n");
	for (uint32_t i = 0; i < n; i++)
		printf("  %-20s %-22s %-6s %s distance %u uploads %u\n",
		       cli_esc(src[i].name), cli_esc(src[i].peer_addr),
		       tc__gsp_tier_name(src[i].tier),
		       src[i].complete ? "complete" : "partial",
		       src[i].distance, src[i].uploads);
	return 0;
}

/* key-set KEY ID [--expect GEN]: the global store's compare-and-swap,
 * acknowledged only once committed to its database.  --expect 0 creates
 * the key only if it does not exist: exactly one of several racing
 * writers wins, which is what group realization's decisions rest on. */
static int key_set(struct gopts *o)
{
	struct tc__gsc g;
	uint64_t gen = 0;
	int rc;

	if (!o->operand || !o->operand2)
		return cli_usage_error("key-set: which key, and which id?");
	if (o->via_daemon)
		return cli_usage_error("key-set talks to the global store "
				       "itself (--global, "
				       "--cluster-secret-file)");
	rc = connect_tool(o, &g);
	if (rc)
		return rc;
	rc = tc__gsc_key_set(&g, o->operand, o->operand2,
			     o->has_expect ? TC_GSP_KF_EXPECT : 0, o->expect,
			     NULL, &gen);
	if (rc < 0) {
		rc = cli_fail(rc, g.err);
		tc__gsc_close(&g);
		return rc;
	}
	tc__gsc_close(&g);
	if (cli.json) {
		cli_put_json(json_pack("{s:s, s:s, s:I}", "key", o->operand,
				       "id", o->operand2, "gen",
				       (json_int_t)gen));
		return 0;
	}
	printf("%s -> %s (generation %llu)\n", cli_esc(o->operand),
	       cli_esc(o->operand2), (unsigned long long)gen);
	return 0;
}

/* ------------------------------------------------------------ group */

static json_t *group_json(const struct tc__gsp_group *g)
{
	json_t *ms = json_array();

	for (uint32_t i = 0; i < g->nmembers; i++) {
		const struct tc__gsp_member *m = &g->members[i];

		json_array_append_new(
			ms, json_pack("{s:i, s:s, s:i, s:i, s:b, s:s}", "rank",
				      (int)m->rank, "node", m->node, "lease_ms",
				      (int)m->lease_ms, "lease_left_ms",
				      (int)m->lease_left_ms, "prepared",
				      m->prepared, "id", m->id));
	}
	return json_pack(
		"{s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:o, s:s, "
		"s:s, s:o}",
		"group", g->name, "state", tc__gsp_group_state_name(g->state),
		"ranks", (int)g->ranks, "prepared", (int)g->nprepared,
		"timeout_ms", (int)g->timeout_ms, "created_ms",
		(json_int_t)g->created_ms, "decided_ms",
		(json_int_t)g->decided_ms, "deadline_left_ms",
		(json_int_t)g->deadline_left_ms, "by_rank",
		g->by_rank >= 0 ? json_integer(g->by_rank) : json_null(),
		"by_node", g->by_node, "reason", g->reason, "members", ms);
}

static void group_print(const struct tc__gsp_group *g)
{
	if (cli.json) {
		cli_put_json(group_json(g));
		return;
	}
	printf("group %s: %s, %u of %u ranks prepared", cli_esc(g->name),
	       tc__gsp_group_state_name(g->state), g->nprepared, g->ranks);
	if (g->state == TC_GSP_GSTATE_OPEN) {
		printf(", deadline in %.1f s\n", g->deadline_left_ms / 1000.0);
	} else {
		/* the reason names the rank and node it is about */
		printf("\n  %s\n", cli_esc(g->reason));
	}
	for (uint32_t i = 0; i < g->nmembers; i++) {
		const struct tc__gsp_member *m = &g->members[i];

		printf("  rank %-4u %-20s %-8s lease %u/%u ms %s\n", m->rank,
		       m->node[0] ? cli_esc(m->node) : "-",
		       m->prepared ? "prepared" : "joined", m->lease_left_ms,
		       m->lease_ms, m->id[0] ? cli_esc(m->id) : "");
	}
	fflush(stdout);
}

/* One GROUP_* call on a connected handle; the record is printed. */
static int group_call(struct tc__gsc *g, int type,
		      const struct tc__gsp_group_req *q, bool print)
{
	struct tc__gsp_group rec;
	int rc = tc__gsc_group(g, type, q, &rec);

	if (rc < 0)
		return cli_fail(rc, g->err);
	if (print)
		group_print(&rec);
	rc = rec.state;
	tc__gsp_group_release(&rec);
	return -rc; /* 0 open, or minus the decided state */
}

/* A group operation through the local daemon (GROUP), which relays it
 * to the global store with its own secret.  Prints the record like
 * group_call; `keep` as daemon_call_keep. */
static int group_via_daemon(uint32_t op, const struct tc__gsp_group_req *q,
			    bool print, int *keep)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__gsp_group rec;
	struct tc__cur c;
	char err[1024];
	uint8_t *rb = NULL;
	size_t rl = 0;
	int rc;

	err[0] = '\0';
	tc__proto_put_group(&b, op, q);
	rc = daemon_call_keep(TC_MSG_GROUP, &b, &rb, &rl, err, sizeof(err),
			      keep);
	tc__buf_release(&b);
	if (rc < 0)
		return cli_fail(rc, err[0] ? err : tc_strerror(rc));
	tc__cur_init(&c, rb, rl);
	rc = tc__gsp_get_group(&c, &rec, err, sizeof(err));
	free(rb);
	if (rc < 0) {
		if (keep) {
			close(*keep);
			*keep = -1;
		}
		return cli_fail(rc, "malformed reply from the daemon");
	}
	if (print)
		group_print(&rec);
	rc = rec.state;
	tc__gsp_group_release(&rec);
	return -rc; /* 0 open, or minus the decided state */
}

/* hold --via-daemon: the daemon creates, joins for its node and renews
 * the lease while our connection to it is open; we keep it open until
 * stdin closes (the rank is gone or done).  The connection closing with
 * the group still open aborts it for this rank, at once. */
static int group_hold_daemon(struct gopts *o)
{
	struct tc__gsp_group_req q = o->gq;
	int fd = -1, rc;

	if (!o->has_ranks)
		q.ranks = 0;
	rc = group_via_daemon(TC_PROTO_GROUP_HOLD, &q, true, &fd);
	if (rc != 0) {
		if (fd >= 0)
			close(fd);
		return rc > 0 ? rc : 0;
	}
	for (;;) {
		struct pollfd p[2] = { { STDIN_FILENO, POLLIN, 0 },
				       { fd, POLLIN, 0 } };
		char buf[256];

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents) /* the daemon went: nothing holds us */
			break;
		if (p[0].revents) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n <= 0 && !(n < 0 && errno == EINTR))
				break; /* the rank is gone or done */
		}
	}
	close(fd);
	return 0;
}

/* status --via-daemon --wait-ms: the daemon answers a waiting GET within
 * a few seconds; ask again until decided or our wait is over. */
static int group_wait_daemon(struct gopts *o)
{
	struct tc__gsp_group_req q = o->gq;
	uint64_t end = tc__now_ms() + q.wait_ms;
	int rc;

	for (;;) {
		uint64_t now = tc__now_ms();
		bool last;

		q.wait_ms = now < end ? (uint32_t)(end - now) : 0;
		last = q.wait_ms <= 5000;
		rc = group_via_daemon(TC_GSP_GROUP_GET, &q, last, NULL);
		if (rc > 0 || last)
			return rc > 0 ? rc : 0;
		if (rc < 0) { /* decided: print the record */
			q.wait_ms = 0;
			rc = group_via_daemon(TC_GSP_GROUP_GET, &q, true, NULL);
			return rc > 0 ? rc : 0;
		}
	}
}

/*
 * hold: create the group (with --ranks), join it, then keep the rank's
 * lease renewed until stdin closes (the rank's process, our parent, is
 * gone: we stop renewing and the store aborts the group once the lease
 * runs out) or the group is decided (its record is printed again).
 */
static int group_hold(struct gopts *o, struct tc__gsc *g)
{
	struct tc__gsp_group_req *q = &o->gq;
	int period = (int)q->lease_ms / 3, rc;
	struct tc__gsp_group rec;
	bool decided;

	if (o->has_ranks) {
		rc = group_call(g, TC_GSP_GROUP_CREATE, q, false);
		if (rc > 0)
			return rc;
	}
	rc = group_call(g, TC_GSP_GROUP_JOIN, q, true);
	if (rc != 0)
		return rc > 0 ? rc : 0;
	for (;;) {
		struct pollfd p = { STDIN_FILENO, POLLIN, 0 };
		int r = poll(&p, 1, period);

		if (r < 0 && errno == EINTR)
			continue;
		if (r > 0) {
			char buf[256];
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n <= 0 && !(n < 0 && errno == EINTR))
				return 0; /* the rank is gone or done */
			continue;
		}
		if (g->fd < 0) {
			/* stdout is for records: a failed retry goes to
			 * stderr only */
			bool json = cli.json;

			cli.json = false;
			rc = connect_tool(o, g);
			cli.json = json;
			if (rc) {
				tc__gsc_init(g, 5000); /* next period */
				continue;
			}
		}
		rc = tc__gsc_group(g, TC_GSP_GROUP_JOIN, q, &rec);
		if (rc < 0 && g->fd < 0)
			continue; /* the store restarted or the link broke:
				     reconnect while the rank lives; the store
				     judges the lease, not us */
		if (rc < 0)
			return cli_fail(rc, g->err); /* refused: say why */
		decided = rec.state != TC_GSP_GSTATE_OPEN;
		tc__gsp_group_release(&rec);
		if (decided) {
			struct tc__gsp_group_req get = *q;

			get.wait_ms = 0;
			group_call(g, TC_GSP_GROUP_GET, &get, true);
			return 0;
		}
	}
}

/* group create|join|prepare|abort|status|hold GROUP: one group of ranks
 * that commit or abort together (docs/cluster.md#groups). */
static int group(struct gopts *o)
{
	static const char *const subs[] = { "create", "join",	"prepare",
					    "abort",  "status", "hold",
					    NULL };
	struct tc__gsp_group_req *q = &o->gq;
	const char *sub = o->operand ? o->operand : "";
	struct tc__gsc g;
	int type, rc;

	if (!o->operand)
		return cli_usage_error("group: create, join, prepare, abort, "
				       "status or hold?");
	if (cli_parse_choice("group", sub, subs))
		return EXIT_USAGE;
	if (!o->operand2)
		return cli_usage_error("group %s: which group?", sub);
	if (strlen(o->operand2) > TC_GSP_MAX_GROUP)
		return cli_usage_error("group name: at most %d bytes",
				       TC_GSP_MAX_GROUP);
	snprintf(q->group, sizeof(q->group), "%s", o->operand2);
	if (!q->timeout_ms)
		q->timeout_ms = 60000;
	if (!q->lease_ms)
		q->lease_ms = 3000;
	if (!strcmp(sub, "create")) {
		if (!o->has_ranks)
			return cli_usage_error("group create: --ranks N");
		type = TC_GSP_GROUP_CREATE;
	} else if (!strcmp(sub, "join") || !strcmp(sub, "hold")) {
		if (!o->has_rank)
			return cli_usage_error("group %s: --rank R", sub);
		type = TC_GSP_GROUP_JOIN;
	} else if (!strcmp(sub, "prepare")) {
		if (!o->has_rank || !q->id[0])
			return cli_usage_error("group prepare: --rank R --id "
					       "ID");
		type = TC_GSP_GROUP_PREPARE;
	} else if (!strcmp(sub, "abort")) {
		if (!o->has_rank)
			q->rank = TC_GSP_NO_RANK;
		type = TC_GSP_GROUP_ABORT;
	} else {
		type = TC_GSP_GROUP_GET;
	}
	if (o->via_daemon) {
		if (!strcmp(sub, "hold"))
			return group_hold_daemon(o);
		if (type == TC_GSP_GROUP_GET && q->wait_ms)
			return group_wait_daemon(o);
		rc = group_via_daemon((uint32_t)type, q, true, NULL);
		return rc < 0 ? 0 : rc;
	}
	rc = connect_tool(o, &g);
	if (rc)
		return rc;
	if (!strcmp(sub, "hold"))
		rc = group_hold(o, &g);
	else if ((rc = group_call(&g, type, q, true)) < 0)
		rc = 0; /* a decided group is an answer, not an error */
	tc__gsc_close(&g);
	return rc;
}

static int logs(struct gopts *o)
{
	FILE *f = fopen(o->cfg.log_file, "r");
	char line[4096];

	if (!f) {
		char msg[PATH_MAX + 32];

		snprintf(msg, sizeof(msg), "no log at '%s'", o->cfg.log_file);
		return cli_fail(-errno, msg);
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		printf("%s\n", cli_esc(line));
	}
	fclose(f);
	return 0;
}

int cmd_global(int argc, char **argv)
{
	static const char *const subverbs[] = { "start",   "run",   "stop",
						"status",  "logs",  "resolve",
						"key-set", "group", NULL };
	struct gopts o = { 0 };
	const char *verb = argc > 1 ? argv[1] : "";
	int rc;

	if (argc < 2)
		return cli_usage_error("which global verb?");
	if (cli_parse_choice("global", verb, subverbs))
		return EXIT_USAGE;
	o.group = !strcmp(verb, "group");
	rc = parse(argc, argv, &o,
		   !strcmp(verb, "resolve") || !strcmp(verb, "key-set") ||
			   o.group);
	if (rc)
		return rc;
	if (!strcmp(verb, "run"))
		return run_foreground(&o.cfg, -1, false);
	if (!strcmp(verb, "start"))
		return start(&o);
	if (!strcmp(verb, "stop"))
		return stop(&o);
	if (!strcmp(verb, "status"))
		return status(&o);
	if (!strcmp(verb, "resolve"))
		return resolve(&o);
	if (!strcmp(verb, "key-set"))
		return key_set(&o);
	if (o.group)
		return group(&o);
	return logs(&o);
}
