/*
 * test_durable_crash.c - the crash loop of issue 13: the daemon is killed
 * with SIGKILL at random moments (TC_CRASH_KILLS times, 200 by default)
 * while three client processes put durable artifacts, import files with
 * policy durable and remove some of their own, reconnecting after each
 * kill.  Every acknowledgement is logged by its client; after each
 * restart the log so far is checked in part (a sample), and at the end
 * in full:
 *   - every acknowledged durable put is found by id and by key, with the
 *     SHA-256 its client computed (and the daemon's chunk digests
 *     checked on the load from disk);
 *   - nothing is visible half-written: every artifact folder has its
 *     manifest, and temporaries do not pile up (at most one write in
 *     flight per client after a restart, none after a clean one, and
 *     none outlives a restart).
 * Seeded (TC_CRASH_SEED replays a run); bounded to well under a minute
 * here with small artifacts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define NCLIENTS 3
#define MAXBYTES (48 << 10)

static struct t_daemon D;
static char base[300], setarg[460], dataroot[420];

/* ---------------------------------------------------------------- child */

static void logf_line(int fd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void logf_line(int fd, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (write(fd, line, (size_t)n) != n)
		_exit(3);
}

static tc_client *connect_retry(const char *sock)
{
	for (int i = 0; i < 3000; i++) {
		tc_client *c;

		char err[256];

		if (tc_client_connect(sock, &c, err, sizeof(err)) == 0)
			return c;
		usleep(2000);
	}
	return NULL;
}

static bool lost_daemon(int rc)
{
	return rc == TC_ECLOSED || rc == TC_ENODAEMON || rc == TC_EPROTO ||
	       rc == -EPIPE || rc == -ECONNRESET || rc == -ECONNREFUSED ||
	       rc == -ENOENT;
}

static int child(const char *sock, const char *logpath, const char *stop,
		 uint64_t seed, int idx)
{
	int lfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
	static const char *files[] = { "dtypes.safetensors",
				       "many-tensors.safetensors" };
	uint8_t *buf = malloc(MAXBYTES);
	struct t_rng rng;
	tc_client *c = NULL;
	uint32_t seq = 0, nput = 0, *puts = calloc(100000, sizeof(*puts));
	struct stat st;

	t_rng_init(&rng, seed * 7919 + (uint64_t)idx + 1);
	while (stat(stop, &st) < 0) {
		uint64_t op = t_rng_below(&rng, 10);
		char key[64], hex[65];
		int rc = 0;

		if (!c && !(c = connect_retry(sock)))
			return 2;
		if (op < 7 || op == 9 || nput == 0) {
			uint64_t n = 1 + t_rng_below(&rng, MAXBYTES);
			uint64_t shape[1] = { n };
			struct tc_tensor_desc d = { "x", TC_DTYPE_U8, 1,
						    shape };
			struct tc_opts o = { 0 };
			struct tc_result r;
			tc_put *p;

			seq++;
			for (uint64_t i = 0; i < n; i++)
				buf[i] = (uint8_t)t_rng_next(&rng);
			snprintf(key, sizeof(key), "c%d:%u", idx, seq);
			o.field_mask = TC_OPT_POLICY | TC_OPT_KEY;
			o.policy = "durable";
			o.key = key;
			rc = tc_put_begin(c, &d, 1, NULL, &o, &p);
			if (rc == 0) {
				memcpy(tc_put_data(p, 0), buf, n);
				rc = tc_put_commit(p, &r);
			}
			if (rc == 0) {
				t_sha256_hex(buf, n, hex);
				if (tc_last_persistence(c, NULL, 0) !=
				    TC_PERSIST_DURABLE)
					logf_line(lfd, "bad not-durable %u\n",
						  seq);
				logf_line(lfd, "put %u %s %s %llu\n", seq, r.id,
					  hex, (unsigned long long)n);
				puts[nput++] = seq;
			}
		} else if (op == 7) {
			struct tc_opts o = { 0 };
			struct tc_result r;

			o.field_mask = TC_OPT_POLICY;
			o.policy = "durable";
			rc = tc_import(c, t_data(files[t_rng_below(&rng, 2)]),
				       &o, &r);
			if (rc == 0)
				logf_line(lfd, "imp %s\n", r.id);
		} else {
			uint32_t k = (uint32_t)t_rng_below(&rng, nput);
			uint32_t s = puts[k];

			puts[k] = puts[--nput];
			snprintf(key, sizeof(key), "c%d:%u", idx, s);
			/* Logged first: if the daemon dies before it
			 * answers, the artifact may or may not be gone. */
			logf_line(lfd, "rmtry %u\n", s);
			rc = tc_rm(c, key);
			if (rc == 0)
				logf_line(lfd, "rm %u\n", s);
		}
		if (rc < 0 && lost_daemon(rc)) {
			tc_client_close(c);
			c = NULL;
		} else if (rc < 0 && rc != TC_ENOTFOUND) {
			logf_line(lfd, "bad %s %s\n", tc_err_name(rc),
				  c ? tc_client_errmsg(c) : "");
		}
	}
	if (c)
		tc_client_close(c);
	close(lfd);
	free(buf);
	free(puts);
	return 0;
}

/* --------------------------------------------------------------- parent */

struct acked {
	uint32_t seq;
	int client;
	char id[TC_ID_BUFLEN];
	char sha[65];
	uint64_t n;
	bool rm; /* a removal was tried */
};

static struct acked *acks;
static size_t nacks, cap_acks;
static char imports[16][TC_ID_BUFLEN];
static int nimports;

/* Read every client's log so far. */
static void read_logs(void)
{
	nacks = 0;
	nimports = 0;
	for (int i = 0; i < NCLIENTS; i++) {
		char path[400], line[512];
		FILE *f;

		snprintf(path, sizeof(path), "%s/client%d.log", base, i);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			struct acked a = { .client = i };
			unsigned long long n;
			char id[TC_ID_BUFLEN];

			if (!strncmp(line, "bad", 3))
				fail_msg("client %d: %s", i, line);
			if (sscanf(line, "put %u %71s %64s %llu", &a.seq, a.id,
				   a.sha, &n) == 4) {
				a.n = n;
				if (nacks == cap_acks) {
					cap_acks = cap_acks ? 2 * cap_acks :
							      1024;
					acks = realloc(
						acks, cap_acks * sizeof(*acks));
				}
				acks[nacks++] = a;
			} else if (sscanf(line, "rmtry %u", &a.seq) == 1) {
				for (size_t k = 0; k < nacks; k++)
					if (acks[k].client == i &&
					    acks[k].seq == a.seq)
						acks[k].rm = true;
			} else if (sscanf(line, "imp %71s", id) == 1) {
				bool seen = false;

				for (int k = 0; k < nimports; k++)
					seen |= !strcmp(imports[k], id);
				if (!seen && nimports < 16)
					strcpy(imports[nimports++], id);
			}
		}
		fclose(f);
	}
}

static void read_logs(void);

/* Whether the client has meanwhile tried to remove a->seq (the sample
 * checks run while the clients do). */
static bool removed_since(const struct acked *a)
{
	read_logs();
	for (size_t k = 0; k < nacks; k++)
		if (acks[k].client == a->client && acks[k].seq == a->seq)
			return acks[k].rm;
	return false;
}

/* One acknowledged put: by key (the key survived) and by id, the bytes
 * its client hashed. */
static void verify_one(tc_client *c, const struct acked *a)
{
	char key[64], hex[65];
	struct acked copy = *a;
	tc_artifact *art;
	int rc;

	snprintf(key, sizeof(key), "c%d:%u", a->client, a->seq);
	rc = tc_attach(c, key, &art);
	if (rc == TC_ENOTFOUND && removed_since(&copy))
		return;
	if (rc < 0)
		fail_msg("acknowledged %s (%s) lost: %s: %s", key, copy.id,
			 tc_err_name(rc), tc_client_errmsg(c));
	a = &copy;
	if (strcmp(tc_artifact_id(art), a->id))
		fail_msg("%s names %s, acknowledged as %s", key,
			 tc_artifact_id(art), a->id);
	t_sha256_hex(tc_artifact_data(art), a->n, hex);
	if (strcmp(hex, a->sha))
		fail_msg("%s: bytes differ from what was acknowledged", key);
	tc_artifact_close(art);
}

/* Write temporaries seen by the last scan (names are unique: a random
 * part), to tell one left behind by a crash from a new write. */
#define MAX_TEMPS 64
static char seen_temps[MAX_TEMPS][80];
static int nseen_temps;

/*
 * Folders under the artifact's name are complete; write temporaries
 * present now are counted, and none seen by the previous scan may still
 * be there (the daemon was killed and restarted between the two scans,
 * and a restart removes every temporary before it serves: one still
 * there is a pile-up).
 *
 * The count is of names still present after the readdir pass, not of
 * names the pass met: the clients run on during it, and a small put
 * makes, renames and makes its next temporary in a few milliseconds, so
 * one client's two successive writes could both be met by one pass (the
 * 4 writes with 3 clients seen on 2026-12-02).  A client's writes are
 * sequential, so at any instant it has at most one; and the re-check of
 * every name comes after the whole pass, so a name met early that is
 * still there then was the client's only one: the bound is exact, one
 * per client.
 */
static int scan_folder(int *artifacts)
{
	DIR *dir = opendir(dataroot);
	struct dirent *e;
	char met[MAX_TEMPS][80];
	int temps = 0, nmet = 0;

	*artifacts = 0;
	assert_non_null(dir);
	while ((e = readdir(dir))) {
		struct stat st;
		int fd;

		if (e->d_name[0] == '.' &&
		    (!e->d_name[1] || !strcmp(e->d_name, "..")))
			continue;
		if (!strncmp(e->d_name, ".tmp-", 5)) {
			/* A removal renamed away (".tmp-<id>-rm-...") may still
			 * be emptied after its reply: only writes count. */
			if (!strstr(e->d_name, "-rm-")) {
				if (nmet == MAX_TEMPS)
					fail_msg("over %d temporaries",
						 MAX_TEMPS);
				snprintf(met[nmet++], sizeof(met[0]), "%s",
					 e->d_name);
			}
			continue;
		}
		/* The clients run on: a removal may rename a folder away
		 * (one step) at any moment during this scan.  Gone, or no
		 * longer under this name, is a whole removal; only a folder
		 * still under its name without a manifest is a torn one. */
		fd = openat(dirfd(dir), e->d_name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue;
		assert_true(fd >= 0);
		if (fstatat(fd, "tcast.manifest.json", &st, 0) < 0) {
			struct stat now;
			bool moved = fstat(fd, &st) < 0 ||
				     fstatat(dirfd(dir), e->d_name, &now,
					     AT_SYMLINK_NOFOLLOW) < 0 ||
				     now.st_ino != st.st_ino;

			close(fd);
			if (moved)
				continue;
			fail_msg("'%s' has no manifest: half-written or "
				 "half-removed under its final name",
				 e->d_name);
		}
		close(fd);
		(*artifacts)++;
	}
	for (int i = 0; i < nmet; i++) {
		struct stat st;

		if (fstatat(dirfd(dir), met[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		for (int k = 0; k < nseen_temps; k++)
			if (!strcmp(seen_temps[k], met[i]))
				fail_msg("temporary '%s' outlived a restart",
					 met[i]);
		memcpy(seen_temps[temps++], met[i], sizeof(met[0]));
	}
	nseen_temps = temps;
	closedir(dir);
	return temps;
}

static void restart(void)
{
	t_daemon_restart(&D, "256MiB", "--set", setarg, NULL);
}

static void test_durable_crash__kill9_loop(void **state)
{
	uint64_t seed = t_rng_seed("TC_CRASH_SEED");
	const char *ks = getenv("TC_CRASH_KILLS");
	int kills = ks ? atoi(ks) : 200, arts, temps;
	char shared[400], stop[400], seedarg[32], idxarg[NCLIENTS][8],
		logs[NCLIENTS][400];
	pid_t kids[NCLIENTS];
	double t0 = t_now_ms(), restart_ms = 0, worst_ms = 0;
	struct t_rng rng;
	tc_client *c;
	char *dir = t_tmpdir();

	fprintf(stderr, "crash loop: seed %llu (TC_CRASH_SEED), %d kills\n",
		(unsigned long long)seed, kills);
	t_rng_init(&rng, seed);
	snprintf(base, sizeof(base), "%s", dir);
	free(dir);
	snprintf(shared, sizeof(shared), "%s/shared", base);
	mkdir(shared, 0700);
	snprintf(dataroot, sizeof(dataroot), "%s/tcast", shared);
	snprintf(setarg, sizeof(setarg), "shared_disk=%s", shared);
	snprintf(stop, sizeof(stop), "%s/stop", base);
	snprintf(seedarg, sizeof(seedarg), "%llu", (unsigned long long)seed);
	t_daemon_start(&D, "256MiB", "--set", setarg, NULL);
	for (int i = 0; i < NCLIENTS; i++) {
		snprintf(idxarg[i], sizeof(idxarg[i]), "%d", i);
		snprintf(logs[i], sizeof(logs[i]), "%s/client%d.log", base, i);
		kids[i] = t_spawn_self((const char *const[]){ D.sock, logs[i],
							      stop, seedarg,
							      idxarg[i], NULL },
				       NULL, -1, -1);
		assert_true(kids[i] > 0);
	}
	for (int k = 0; k < kills; k++) {
		double t;

		usleep((useconds_t)(10000 + t_rng_below(&rng, 50000)));
		kill(D.pid, SIGKILL);
		assert_int_equal(t_wait_status(D.pid), 128 + SIGKILL);
		t = t_now_ms();
		restart();
		t = t_now_ms() - t;
		restart_ms += t;
		worst_ms = t > worst_ms ? t : worst_ms;
		/* Not piling up: each client has one request in flight
		 * (scan_folder says why the count is exact). */
		temps = scan_folder(&arts);
		if (temps > NCLIENTS)
			fail_msg("%d temporaries after restart %d", temps, k);
		if (k % 20 == 19) {
			read_logs();
			c = t_connect(D.sock);
			for (int i = 0; i < 5 && nacks; i++) {
				struct acked a = acks[t_rng_below(&rng, nacks)];

				if (!a.rm)
					verify_one(c, &a);
			}
			tc_client_close(c);
		}
	}
	/* Stop the clients, crash once more, and check everything. */
	close(open(stop, O_WRONLY | O_CREAT, 0600));
	for (int i = 0; i < NCLIENTS; i++)
		assert_int_equal(t_wait_status(kids[i]), 0);
	kill(D.pid, SIGKILL);
	t_wait_status(D.pid);
	restart();
	read_logs();
	c = t_connect(D.sock);
	{
		size_t live = 0;

		for (size_t i = 0; i < nacks; i++)
			if (!acks[i].rm) {
				verify_one(c, &acks[i]);
				live++;
			}
		for (int i = 0; i < nimports; i++) {
			tc_artifact *a;

			if (tc_attach(c, imports[i], &a) < 0)
				fail_msg("acknowledged import %s lost: %s",
					 imports[i], tc_client_errmsg(c));
			tc_artifact_close(a);
		}
		temps = scan_folder(&arts);
		assert_int_equal(temps, 0);
		assert_true((size_t)arts >= live);
		fprintf(stderr,
			"crash loop: %d kills in %.1f s; %zu puts acknowledged "
			"(%zu still named), %d imports, all found with their "
			"digests; restart %.1f ms mean, %.1f ms worst\n",
			kills, (t_now_ms() - t0) / 1000, nacks, live, nimports,
			restart_ms / kills, worst_ms);
		/* Enough acknowledged work for the kills to have hit it. */
		assert_true(nacks >= 20);
	}
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(base);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durable_crash__kill9_loop),
	};

	if (argc >= 7 && !strcmp(argv[1], "--child"))
		return child(argv[2], argv[3], argv[4],
			     strtoull(argv[5], NULL, 10), atoi(argv[6]));
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
