/*
 * bench_global.c - the global store under a cluster's load (issue 12
 * Figures): source lookups per second while 1,000 simulated nodes
 * heartbeat every second, on this machine.
 *
 *   bench_global [--nodes N] [--seconds S] [--lookup-conns C] [--depth D]
 *                [--tcast PATH]
 *
 * It starts `tcast global run` on 127.0.0.1 (port 0) with a fresh secret
 * and database, registers N nodes (one authenticated TCP connection each,
 * zone/rack/host labels, 200 artifacts each held by 10 nodes), then for S
 * seconds: one thread sends each node's heartbeat once a second (spread
 * over the second) and checks every reply, while C connections pipeline
 * D source lookups each (SOURCES for a random artifact and requester).
 *
 * The competitor, in the same run: the same lookup answered by SQLite
 * (the same schema, indexed, in memory, prepared statement, one thread),
 * as a store that queries its database per request would.  Printed: both
 * rates and their ratio, heartbeat latency, and whether any node's lease
 * lapsed (it must not).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "net/auth.h"
#include "net/ev.h"
#include "proto/gsp.h"
#include "store/gsc.h"

#define NARTS	200
#define PER_ART 10

static int nnodes = 1000, seconds = 10, nlook = 2, depth = 32;
static char addr[128];
static struct tc__auth_secret sec;
static atomic_bool stop_flag;
static atomic_ulong lookups;

static void art_id(int a, char *out, size_t len)
{
	snprintf(out, len, "tc2:%064x", a * 2654435761u);
}

static int node_of(int a, int k)
{
	return (a * 7919 + k * 104729) % nnodes;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench_global: %s: %s\n", what, why);
	exit(1);
}

static pid_t start_global(const char *tcast, const char *dir)
{
	char secret[PATH_MAX], state[PATH_MAX], path[PATH_MAX + 16];
	pid_t pid;
	int fd;

	snprintf(secret, sizeof(secret), "%s/secret", dir);
	snprintf(state, sizeof(state), "%s/gs", dir);
	fd = open(secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "bench-secret-bench-secret-bench-secret-0123\n",
			    44) != 44)
		die("secret", strerror(errno));
	close(fd);
	if (tc__auth_load_secret(secret, &sec, path, sizeof(path)) < 0)
		die("secret", path);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 2);
		execl(tcast, tcast, "global", "run", "--listen", "127.0.0.1:0",
		      "--state-dir", state, "--cluster-secret-file", secret,
		      "--log-level", "warn", "--set", "max_connections=8192",
		      (char *)NULL);
		_exit(127);
	}
	snprintf(path, sizeof(path), "%s/global.addr", state);
	for (int i = 0; i < 500; i++) {
		FILE *f = fopen(path, "r");

		if (f && fgets(addr, sizeof(addr), f)) {
			addr[strcspn(addr, "\n")] = '\0';
			fclose(f);
			return pid;
		}
		if (f)
			fclose(f);
		usleep(20000);
	}
	die("global store", "did not start");
	return -1;
}

static void gs_connect(struct tc__gsc *g, int role, const char *name)
{
	tc__gsc_init(g, 10000);
	if (tc__gsc_connect(g, addr, &sec, role, name) < 0)
		die("connect", g->err);
}

/* ---- the simulated nodes */

static struct tc__gsc *nodes;

static void register_all(void)
{
	nodes = calloc((size_t)nnodes, sizeof(*nodes));
	for (int i = 0; i < nnodes; i++) {
		struct tc__gsp_node n = { 0 };
		struct tc__gsp_replica reps[NARTS];
		uint32_t nr = 0, lease, hb;
		uint64_t id;

		snprintf(n.name, sizeof(n.name), "sim-%04d", i);
		n.epoch = 1000 + (uint64_t)i;
		snprintf(n.peer_addr, sizeof(n.peer_addr), "10.%d.%d.%d:7471",
			 i / 65536, (i / 256) % 256, i % 256);
		snprintf(n.zone, sizeof(n.zone), "z%d", i % 4);
		snprintf(n.rack, sizeof(n.rack), "r%d", i % 32);
		snprintf(n.host, sizeof(n.host), "h%d", i);
		for (int a = 0; a < NARTS; a++)
			for (int k = 0; k < PER_ART; k++)
				if (node_of(a, k) == i) {
					memset(&reps[nr], 0, sizeof(reps[nr]));
					art_id(a, reps[nr].id,
					       sizeof(reps[nr].id));
					reps[nr].tier = (uint8_t)(k % 2);
					reps[nr].size = (uint64_t)1 << 30;
					reps[nr].nchunks = 256;
					nr++;
				}
		gs_connect(&nodes[i], TC_AUTH_ROLE_DAEMON, n.name);
		if (tc__gsc_register(&nodes[i], &n, reps, nr, &id, &lease,
				     &hb) < 0)
			die("register", nodes[i].err);
	}
}

struct hb_stats {
	uint64_t sent, ok, failed;
	double max_ms, sum_ms;
	double lat[200000];
	size_t nlat;
};

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Each node heartbeats once a second, node i at offset i/N of the
 * second; replies are read as they come. */
static void *heartbeats(void *arg)
{
	struct hb_stats *st = arg;
	struct epoll_event evs[256];
	double *sent_at = calloc((size_t)nnodes, sizeof(double));
	uint64_t t0 = tc__now_ns();
	long next = 0; /* heartbeats sent so far */
	int ep = epoll_create1(0);

	for (int i = 0; i < nnodes; i++) {
		struct epoll_event e = { .events = EPOLLIN,
					 .data.u32 = (uint32_t)i };

		epoll_ctl(ep, EPOLL_CTL_ADD, nodes[i].fd, &e);
		sent_at[i] = -1;
	}
	while (!atomic_load(&stop_flag)) {
		double now_ms = (double)(tc__now_ns() - t0) / 1e6;
		long due = (long)(now_ms * nnodes / 1000.0);
		struct tc__buf b = TC_BUF_INIT;

		tc__buf_put_u32(&b, 3);
		tc__buf_put_u64(&b, 0);
		for (; next <= due; next++) {
			int i = (int)(next % nnodes);

			if (sent_at[i] >= 0)
				continue; /* previous one unanswered */
			if (tc__gsc_send(&nodes[i], TC_GSP_HEARTBEAT, b.data,
					 b.len) < 0) {
				st->failed++;
				continue;
			}
			sent_at[i] = now_ms;
			st->sent++;
		}
		tc__buf_release(&b);
		int ne = epoll_wait(ep, evs, 256, 1);

		for (int e = 0; e < ne; e++) {
			int i = (int)evs[e].data.u32;
			struct tc__cur r;
			double lat;

			if (tc__gsc_recv(&nodes[i], &r) < 0) {
				st->failed++;
				continue;
			}
			lat = (double)(tc__now_ns() - t0) / 1e6 - sent_at[i];
			sent_at[i] = -1;
			st->ok++;
			st->sum_ms += lat;
			if (lat > st->max_ms)
				st->max_ms = lat;
			if (st->nlat < sizeof(st->lat) / sizeof(st->lat[0]))
				st->lat[st->nlat++] = lat;
		}
	}
	close(ep);
	free(sent_at);
	return NULL;
}

/* ---- lookups */

static void *lookup_thread(void *arg)
{
	struct tc__gsc g;
	unsigned seed = (unsigned)(uintptr_t)arg * 7 + 1;
	struct tc__buf b = TC_BUF_INIT;

	gs_connect(&g, TC_AUTH_ROLE_TOOL, "bench");
	while (!atomic_load(&stop_flag)) {
		for (int k = 0; k < depth; k++) {
			char id[80], req[32];

			art_id(rand_r(&seed) % NARTS, id, sizeof(id));
			snprintf(req, sizeof(req), "sim-%04d",
				 rand_r(&seed) % nnodes);
			b.len = 0;
			tc__buf_put_str(&b, id);
			tc__buf_put_str(&b, req);
			tc__buf_put_u32(&b, 8);
			if (tc__gsc_send(&g, TC_GSP_SOURCES, b.data, b.len) < 0)
				die("lookup send", g.err);
		}
		for (int k = 0; k < depth; k++) {
			struct tc__cur r;
			uint32_t n;

			if (tc__gsc_recv(&g, &r) < 0 ||
			    tc__cur_read_u32(&r, &n) < 0 || n == 0)
				die("lookup", g.err[0] ? g.err : "no sources");
		}
		atomic_fetch_add(&lookups, (unsigned long)depth);
	}
	tc__buf_release(&b);
	tc__gsc_close(&g);
	return NULL;
}

/* ---- the competitor: SQLite answering the same lookup per request */

static double sqlite_lookups(double secs)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	unsigned seed = 99;
	uint64_t n = 0, t0;
	char id[80];

	sqlite3_open(":memory:", &db);
	sqlite3_exec(db,
		     "CREATE TABLE node(id INTEGER PRIMARY KEY, name TEXT, "
		     "peer_addr TEXT, zone TEXT, rack TEXT, host TEXT, live "
		     "INTEGER, uploads INTEGER);"
		     "CREATE TABLE replica(artifact_id TEXT, node_id INTEGER, "
		     "tier INTEGER, device INTEGER, have BLOB, PRIMARY "
		     "KEY(artifact_id,node_id,tier,device)) WITHOUT ROWID;",
		     NULL, NULL, NULL);
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (int i = 0; i < nnodes; i++) {
		char sql[256];

		snprintf(sql, sizeof(sql),
			 "INSERT INTO node VALUES(%d,'sim-%04d','10.0.0.1:1',"
			 "'z%d','r%d','h%d',1,0)",
			 i + 1, i, i % 4, i % 32, i);
		sqlite3_exec(db, sql, NULL, NULL, NULL);
	}
	for (int a = 0; a < NARTS; a++)
		for (int k = 0; k < PER_ART; k++) {
			char sql[256];

			art_id(a, id, sizeof(id));
			snprintf(sql, sizeof(sql),
				 "INSERT OR IGNORE INTO replica VALUES('%s',%d,"
				 "%d,0,NULL)",
				 id, node_of(a, k) + 1, k % 2);
			sqlite3_exec(db, sql, NULL, NULL, NULL);
		}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	/* Same ranking: distance by labels, tier, load. */
	sqlite3_prepare_v2(
		db,
		"SELECT n.id,n.name,n.peer_addr,r.tier,r.device, "
		"CASE WHEN n.id=?2 THEN 0 WHEN n.host=me.host THEN 1 WHEN "
		"n.zone=me.zone AND n.rack=me.rack THEN 2 WHEN n.zone=me.zone "
		"THEN 3 ELSE 4 END AS d "
		"FROM replica r JOIN node n ON n.id=r.node_id, node me "
		"WHERE r.artifact_id=?1 AND me.id=?2 AND n.live=1 "
		"ORDER BY d, r.tier, n.uploads LIMIT 8",
		-1, &st, NULL);
	t0 = tc__now_ns();
	while ((double)(tc__now_ns() - t0) / 1e9 < secs) {
		int rows = 0;

		art_id(rand_r(&seed) % NARTS, id, sizeof(id));
		sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 2, rand_r(&seed) % nnodes + 1);
		while (sqlite3_step(st) == SQLITE_ROW) {
			(void)sqlite3_column_text(st, 1);
			(void)sqlite3_column_text(st, 2);
			rows++;
		}
		sqlite3_reset(st);
		if (!rows)
			die("sqlite", "no rows");
		n++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return (double)n / ((double)(tc__now_ns() - t0) / 1e9);
}

int main(int argc, char **argv)
{
	char dir[] = "/tmp/tcast-bench-global-XXXXXX", tcast[PATH_MAX] = "";
	struct hb_stats *hb = calloc(1, sizeof(*hb));
	pthread_t th_hb, th_l[16];
	struct rlimit rl;
	struct tc__gsc g;
	uint64_t t0, t1;
	char *status;
	json_t *j;
	double lrate, srate;
	pid_t gpid;
	int st;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--nodes") && i + 1 < argc)
			nnodes = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--lookup-conns") && i + 1 < argc)
			nlook = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--depth") && i + 1 < argc)
			depth = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--tcast") && i + 1 < argc)
			snprintf(tcast, sizeof(tcast), "%s", argv[++i]);
		else
			die("usage", "bench_global [--nodes N] [--seconds S] "
				     "[--lookup-conns C] [--depth D] "
				     "[--tcast PATH]");
	}
	if (nnodes < PER_ART || nlook < 1 || nlook > 16 || depth < 1)
		die("usage", "nodes >= 10, 1..16 lookup connections");
	if (!tcast[0]) {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n < 0)
			die("readlink", strerror(errno));
		self[n] = '\0';
		*strrchr(self, '/') = '\0';
		snprintf(tcast, sizeof(tcast), "%s/../bin/tcast", self);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir))
		die("mkdtemp", strerror(errno));
	gpid = start_global(tcast, dir);
	printf("bench_global: %d nodes, %d artifacts x %d replicas, %d s, "
	       "%d lookup connections x depth %d, global store %s\n",
	       nnodes, NARTS, PER_ART, seconds, nlook, depth, addr);
	t0 = tc__now_ns();
	register_all();
	t1 = tc__now_ns();
	printf("registered %d nodes (connect + handshake + REGISTER each) in "
	       "%.2f s: %.0f /s\n",
	       nnodes, (double)(t1 - t0) / 1e9,
	       nnodes / ((double)(t1 - t0) / 1e9));
	fflush(stdout);
	pthread_create(&th_hb, NULL, heartbeats, hb);
	for (int i = 0; i < nlook; i++)
		pthread_create(&th_l[i], NULL, lookup_thread,
			       (void *)(uintptr_t)i);
	t0 = tc__now_ns();
	sleep((unsigned)seconds);
	atomic_store(&stop_flag, true);
	t1 = tc__now_ns();
	for (int i = 0; i < nlook; i++)
		pthread_join(th_l[i], NULL);
	pthread_join(th_hb, NULL);
	lrate = (double)atomic_load(&lookups) / ((double)(t1 - t0) / 1e9);
	gs_connect(&g, TC_AUTH_ROLE_TOOL, "bench");
	if (tc__gsc_status(&g, &status) < 0)
		die("status", g.err);
	j = json_loads(status, 0, NULL);
	qsort(hb->lat, hb->nlat, sizeof(double), cmp_d);
	printf("source lookups: %.0f /s over %d connections while %d nodes "
	       "heartbeat at 1 s (goal >= 50,000 /s)\n",
	       lrate, nlook, nnodes);
	printf("heartbeats: %llu sent, %llu answered, %llu failed (%.0f /s); "
	       "latency mean %.2f ms, p99 %.2f ms, max %.2f ms\n",
	       (unsigned long long)hb->sent, (unsigned long long)hb->ok,
	       (unsigned long long)hb->failed,
	       (double)hb->ok / ((double)(t1 - t0) / 1e9),
	       hb->ok ? hb->sum_ms / (double)hb->ok : 0,
	       hb->nlat ? hb->lat[hb->nlat * 99 / 100] : 0, hb->max_ms);
	printf("nodes live at the end: %lld of %d; lease expiries: %lld "
	       "(must be 0)\n",
	       json_integer_value(json_object_get(j, "nodes_live")), nnodes,
	       json_integer_value(json_object_get(
		       json_object_get(j, "counters"), "lease_expiries")));
	json_decref(j);
	free(status);
	tc__gsc_close(&g);
	for (int i = 0; i < nnodes; i++)
		tc__gsc_close(&nodes[i]);
	kill(gpid, SIGTERM);
	waitpid(gpid, &st, 0);
	srate = sqlite_lookups(3.0);
	printf("competitor: the same ranked lookup as an SQLite query "
	       "(in-memory db, prepared, 1 thread, no network): %.0f /s\n",
	       srate);
	printf("ratio: global store over the network / SQLite in process = "
	       "%.2f\n",
	       lrate / srate);
	{
		char cmd[PATH_MAX + 16];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	free(hb);
	return 0;
}
