/*
 * test_flood.c - the daemon under floods (issue 10: findings 7, 9 and the
 * CI soak): fds running out, imports stuck in a hung read, and a
 * well-behaved client attaching in a loop while floods, slowloris,
 * pipelined bursts and client kills run.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "net/net.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

/* CPU seconds (user + system) process `pid` has used. */
static double cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2,
			 "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			 "%lu %lu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) < 0 ? -1 : (long)st.st_size;
}

/* Start the daemon with RLIMIT_NOFILE soft = hard = nofile (0: as is) and
 * extra environment `env` ("NAME=value" or NULL); log to d->dir/log. */
static void start_daemon(struct t_daemon *d, int nofile, const char *env,
			 const char *const extra[])
{
	char *dir = t_tmpdir(), bin[512], log[600];
	const char *argv[32];
	int argc = 0;

	snprintf(d->dir, sizeof(d->dir), "%s", dir);
	free(dir);
	snprintf(d->sock, sizeof(d->sock), "%s/run/d.sock", d->dir);
	/* $TCAST_BIN: another daemon build (as tlib's t_daemon_start). */
	if (getenv("TCAST_BIN"))
		snprintf(bin, sizeof(bin), "%s", getenv("TCAST_BIN"));
	else
		snprintf(bin, sizeof(bin), "%s/tcast", TC_TEST_BIN);
	snprintf(log, sizeof(log), "%s/log", d->dir);
	argv[argc++] = bin;
	argv[argc++] = "--socket";
	argv[argc++] = d->sock;
	argv[argc++] = "daemon";
	argv[argc++] = "run";
	argv[argc++] = "--host-memory";
	argv[argc++] = "256MiB";
	for (int i = 0; extra && extra[i] && argc < 30; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;
	d->pid = fork();
	if (d->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		if (nofile) {
			struct rlimit rl = { (rlim_t)nofile, (rlim_t)nofile };

			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (env)
			putenv((char *)env);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		tc_client *c;

		if (tc_client_connect(d->sock, &c, NULL, 0) == 0) {
			tc_client_close(c);
			return;
		}
		usleep(20000);
	}
	fail_msg("daemon did not start (see %s)", log);
}

static int stop_daemon(struct t_daemon *d)
{
	int st;

	kill(d->pid, SIGTERM);
	st = t_wait_status(d->pid);
	if (getenv("TC_KEEP_LOGS")) {
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "tail -30 %s/log", d->dir);
		if (system(cmd)) {
		}
	}
	t_rmtree(d->dir);
	return st;
}

/* Put one small artifact; 0 or the error. */
static int put_small(tc_client *c, uint32_t seed, char id[TC_ID_BUFLEN])
{
	static const uint64_t shape[1] = { 16 };
	struct tc_tensor_desc d = { "w", TC_DTYPE_F32, 1, shape };
	struct tc_result r;
	tc_put *p;
	int rc = tc_put_begin(c, &d, 1, NULL, NULL, &p);

	if (rc < 0)
		return rc;
	for (int i = 0; i < 16; i++)
		((float *)tc_put_data(p, 0))[i] = (float)(seed * 16 + i);
	rc = tc_put_commit(p, &r);
	if (rc == 0 && id)
		snprintf(id, TC_ID_BUFLEN, "%s", r.id);
	return rc;
}

/* ------------------------------------------------------------- EMFILE */

/* Out of fds, a connection flood neither spins the daemon nor floods its
 * log, and new clients are served again once fds are free. */
static void test_flood__emfile_backs_off(void **state)
{
	struct t_daemon d;
	char ids[200][TC_ID_BUFLEN], logp[600], err[256];
	int flood[300], nflood = 0, nids = 0, ok = 0;
	double cpu0, cpu1;
	long log0, log1;
	tc_client *c, *n;

	start_daemon(&d, 64, NULL, NULL);
	snprintf(logp, sizeof(logp), "%s/log", d.dir);
	c = t_connect(d.sock);
	/* Fill the daemon's fds with artifacts (two fds each). */
	while (nids < 200 && put_small(c, (uint32_t)nids, ids[nids]) == 0)
		nids++;
	assert_true(nids > 0 && nids < 200);
	/* Flood: connections the daemon cannot accept. */
	cpu0 = cpu_s(d.pid);
	log0 = file_size(logp);
	for (int i = 0; i < 300; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", d.sock);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 &&
		    errno != EAGAIN && errno != EINPROGRESS) {
			close(fd);
			continue;
		}
		flood[nflood++] = fd;
	}
	sleep(3);
	cpu1 = cpu_s(d.pid);
	log1 = file_size(logp);
	printf("flood: out of fds (%d artifacts), %d connections: daemon "
	       "used %.2f s CPU in 3 s, log grew %ld bytes\n",
	       nids, nflood, cpu1 - cpu0, log1 - log0);
	/* Before the fix: 100% CPU and ~40 MB of log in 3 s. */
	assert_true(cpu1 - cpu0 < 0.6);
	assert_true(log1 - log0 < 20000);
	/* The refused ones were told why (a few may have been accepted
	 * while fds were briefly free: they wait for their HELLO). */
	{
		int told = 0;

		/* A loaded (or sanitized) daemon may still be shedding the
		 * queue: each refusal gets until one shared deadline. */
		double until = t_now_ms() + 10000;

		for (int i = 0; i < nflood; i++) {
			char buf[512];
			struct pollfd pfd = { .fd = flood[i],
					      .events = POLLIN };
			double left = until - t_now_ms();
			ssize_t got;

			if (poll(&pfd, 1, left > 0 ? (int)left : 0) < 0)
				pfd.revents = 0;
			got = recv(flood[i], buf, sizeof(buf), 0);

			if (got > TC_FRAME_HDR &&
			    memmem(buf, (size_t)got, "file descriptors", 16))
				told++;
		}
		printf("flood: %d of %d refused connections were told why\n",
		       told, nflood);
		assert_true(told >= nflood / 2);
	}
	for (int i = 0; i < nflood; i++)
		close(flood[i]);
	/* Free fds: the daemon serves new clients again. */
	for (int i = 0; i < nids; i++)
		assert_int_equal(tc_rm(c, ids[i]), 0);
	for (int i = 0; i < 20; i++) {
		if (tc_client_connect(d.sock, &n, err, sizeof(err)) == 0) {
			ok++;
			tc_client_close(n);
		}
	}
	assert_int_equal(ok, 20);
	tc_client_close(c);
	assert_int_equal(stop_daemon(&d), 0);
}

/* ---------------------------------------------------------- hung file */

struct imp {
	const char *sock, *path;
	int rc;
};

static void *import_thread(void *p)
{
	struct imp *im = p;
	tc_client *c;

	if (tc_client_connect(im->sock, &c, NULL, 0) < 0) {
		im->rc = -1;
		return NULL;
	}
	im->rc = tc_import(c, im->path, NULL, NULL);
	tc_client_close(c);
	return NULL;
}

static int reaped_status = -1;

static void *reap(void *p)
{
	struct t_daemon *d = p;

	reaped_status = t_wait_status(d->pid);
	return NULL;
}

/* Two imports stuck in a read that never returns (the import_hang
 * failpoint, standing in for a hung NFS/FUSE mount) starve nobody: another
 * client's put and import finish quickly, and `daemon stop` returns within
 * a few seconds. */
static void test_flood__hung_imports_starve_nobody(void **state)
{
	struct t_daemon d;
	struct imp im[2];
	pthread_t t[2];
	char hang[2][700], cmd[1600], id[TC_ID_BUFLEN];
	double t0, put_ms, imp_ms, stop_ms;
	pthread_t reaper;
	tc_client *c;
	int rc;

	start_daemon(&d, 0, "TCAST_FAILPOINTS=import_hang=HANGME",
		     (const char *const[]){ "--set", "job_threads=2", NULL });
	for (int i = 0; i < 2; i++) {
		size_t n;
		char *data = t_slurp(t_data("dtypes.safetensors"), &n);
		FILE *f;

		snprintf(hang[i], sizeof(hang[i]), "%s/HANGME%d.safetensors",
			 d.dir, i);
		f = fopen(hang[i], "w");
		fwrite(data, 1, n, f);
		fclose(f);
		free(data);
		im[i] = (struct imp){ d.sock, hang[i], 1 };
		pthread_create(&t[i], NULL, import_thread, &im[i]);
	}
	usleep(500000);
	/* Both are stuck. */
	assert_int_equal(im[0].rc, 1);
	assert_int_equal(im[1].rc, 1);
	c = t_connect(d.sock);
	t0 = t_now_ms();
	assert_int_equal(put_small(c, 7, id), 0);
	put_ms = t_now_ms() - t0;
	t0 = t_now_ms();
	rc = tc_import(c, t_data("dtypes.safetensors"), NULL, NULL);
	imp_ms = t_now_ms() - t0;
	if (rc < 0)
		fail_msg("import: %s", tc_client_errmsg(c));
	printf("hung: with 2 imports stuck, a put took %.0f ms and an import "
	       "%.0f ms\n",
	       put_ms, imp_ms);
	assert_true(put_ms < 3000);
	assert_true(imp_ms < 3000);
	tc_client_close(c);
	snprintf(cmd, sizeof(cmd),
		 "%s/tcast --socket '%s' daemon stop --timeout 30 >/dev/null",
		 TC_TEST_BIN, d.sock);
	/* Reap the daemon as it exits: `daemon stop` waits for the pid to
	 * go, and a zombie child of ours would never go. */
	pthread_create(&reaper, NULL, reap, &d);
	t0 = t_now_ms();
	rc = system(cmd);
	stop_ms = t_now_ms() - t0;
	printf("hung: daemon stop took %.0f ms\n", stop_ms);
	if (getenv("TC_KEEP_LOGS")) {
		snprintf(cmd, sizeof(cmd), "tail -20 %s/log", d.dir);
		if (system(cmd)) {
		}
	}
	assert_int_equal(rc, 0);
	assert_true(stop_ms < 5000);
	pthread_join(reaper, NULL);
	assert_int_equal(reaped_status, 0);
	/* The stuck clients get an error, not a hang. */
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_true(im[i].rc < 0);
	}
	t_rmtree(d.dir);
}

/* --------------------------------------------------------------- soak */

#define SOAK_S 30

struct soak {
	const char *sock;
	char ref[TC_ID_BUFLEN];
	char big[TC_ID_BUFLEN];
	volatile int stop;
	long n, fail, reconnects;
	double worst_ms;
	char last_err[256];
};

/* The well-behaved client: attach, check a byte, release; reconnect now
 * and then (a new client must get in under the flood too). */
static void *soak_good(void *p)
{
	struct soak *s = p;
	tc_client *c = NULL;

	while (!s->stop) {
		double t0 = t_now_ms(), dt;
		tc_artifact *a;
		int rc = 0;

		if (!c || s->n % 50 == 0) {
			if (c)
				tc_client_close(c);
			c = NULL;
			rc = tc_client_connect(s->sock, &c, s->last_err,
					       sizeof(s->last_err));
			s->reconnects++;
		}
		if (rc == 0) {
			rc = tc_attach(c, s->ref, &a);
			if (rc == 0) {
				if (((const float *)tc_artifact_data(a))[3] !=
				    3.0f)
					rc = -1;
				tc_artifact_close(a);
			} else {
				snprintf(s->last_err, sizeof(s->last_err), "%s",
					 tc_client_errmsg(c));
			}
		}
		dt = t_now_ms() - t0;
		if (dt > s->worst_ms)
			s->worst_ms = dt;
		s->n++;
		if (rc < 0) {
			s->fail++;
			if (c)
				tc_client_close(c);
			c = NULL;
		}
		usleep(5000);
	}
	if (c)
		tc_client_close(c);
	return NULL;
}

/* Hold up to 300 connections that said HELLO and then nothing; replace
 * those the daemon closes. */
static void *soak_idle_flood(void *p)
{
	struct soak *s = p;
	int fds[300];

	for (int i = 0; i < 300; i++)
		fds[i] = -1;
	while (!s->stop) {
		for (int i = 0; i < 300 && !s->stop; i++) {
			char b;

			if (fds[i] >= 0 &&
			    recv(fds[i], &b, 1, MSG_DONTWAIT | MSG_PEEK) != 0)
				continue; /* still open */
			if (fds[i] >= 0)
				close(fds[i]);
			fds[i] = t_raw_connect(s->sock);
			if (fds[i] >= 0 && t_raw_hello(fds[i]) != 0) {
				close(fds[i]);
				fds[i] = -1;
			}
			usleep(2000);
		}
		usleep(100000);
	}
	for (int i = 0; i < 300; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return NULL;
}

/* Slowloris: 50 connections dripping a header one byte at a time. */
static void *soak_slowloris(void *p)
{
	struct soak *s = p;
	int fds[50], pos[50];

	for (int i = 0; i < 50; i++) {
		fds[i] = t_raw_connect(s->sock);
		pos[i] = 0;
	}
	while (!s->stop) {
		for (int i = 0; i < 50; i++) {
			if (fds[i] < 0 || send(fds[i], &"TSC1"[pos[i] % 4], 1,
					       MSG_NOSIGNAL) != 1) {
				if (fds[i] >= 0)
					close(fds[i]);
				fds[i] = t_raw_connect(s->sock);
				pos[i] = 0;
				continue;
			}
			pos[i]++;
		}
		usleep(300000);
	}
	for (int i = 0; i < 50; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return NULL;
}

/* Pipelined bursts: 20 INSPECTs of a big artifact plus 200 ATTACHes, none
 * read; a new connection every second. */
static void *soak_bursts(void *p)
{
	struct soak *s = p;
	struct tc__buf b = TC_BUF_INIT, x = TC_BUF_INIT;

	tc__buf_put_str(&x, s->big);
	for (int i = 0; i < 20; i++) {
		size_t off = tc__frame_begin(&b, TC_MSG_INSPECT, 0, 10 + i, 0);

		tc__buf_put(&b, x.data, x.len);
		tc__frame_finish(&b, off);
	}
	tc__buf_release(&x);
	tc__buf_put_str(&x, s->ref);
	tc__buf_put_u32(&x, 0);
	for (int i = 0; i < 200; i++) {
		size_t off = tc__frame_begin(&b, TC_MSG_ATTACH, 0, 100 + i, 0);

		tc__buf_put(&b, x.data, x.len);
		tc__frame_finish(&b, off);
	}
	tc__buf_release(&x);
	while (!s->stop) {
		int fd = t_raw_connect(s->sock);

		if (fd >= 0 && t_raw_hello(fd) == 0) {
			tc__sock_set_nonblock(fd, 1);
			if (send(fd, b.data, b.len, MSG_NOSIGNAL) < 0) {
				/* dropped: fine */
			}
		}
		sleep(1);
		if (fd >= 0)
			close(fd);
	}
	tc__buf_release(&b);
	return NULL;
}

/* Client kills: a child process attaches and is SIGKILLed mid-flight. */
static void *soak_kills(void *p)
{
	struct soak *s = p;
	unsigned seed = 99;
	int kills = 0;

	while (!s->stop) {
		pid_t pid =
			t_spawn_self((const char *const[]){ "attach", s->sock,
							    s->ref, NULL },
				     NULL, -1, -1);

		if (pid > 0) {
			usleep(1000 * (rand_r(&seed) % 80));
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			kills++;
		}
		usleep(100000);
	}
	return (void *)(intptr_t)kills;
}

static int child_attach(const char *sock, const char *ref)
{
	tc_client *c;
	tc_artifact *a;

	if (tc_client_connect(sock, &c, NULL, 0) < 0)
		return 1;
	for (;;) {
		if (tc_attach(c, ref, &a) == 0)
			tc_artifact_close(a);
	}
}

/* The good client runs in its own process, as a real one would (the
 * attackers share the test's pid and so its connection share). */
static int child_good(const char *sock, const char *ref, int seconds)
{
	struct soak s = { 0 };
	pthread_t t;

	s.sock = sock;
	snprintf(s.ref, sizeof(s.ref), "%s", ref);
	pthread_create(&t, NULL, soak_good, &s);
	sleep((unsigned)seconds);
	s.stop = 1;
	pthread_join(t, NULL);
	printf("%ld %ld %.3f %ld %s\n", s.n, s.fail, s.worst_ms, s.reconnects,
	       s.fail ? s.last_err : "-");
	fflush(stdout);
	return 0;
}

static void test_flood__soak(void **state)
{
	struct t_daemon d;
	struct soak s = { 0 };
	pthread_t atk[4];
	void *kills;
	tc_client *c;
	double pct;
	char secs[16], line[512];
	int pfd[2], off = 0;
	pid_t good;

	start_daemon(&d, 0, NULL,
		     (const char *const[]){ "--set", "max_clients=256", "--set",
					    "handshake_ms=2000", NULL });
	s.sock = d.sock;
	c = t_connect(d.sock);
	assert_int_equal(put_small(c, 0, s.ref), 0);
	{
		/* A big table for the INSPECT bursts. */
		static const uint64_t one[1] = { 1 };
		uint32_t n = 50000;
		struct tc_tensor_desc *td = calloc(n, sizeof(*td));
		char *names = malloc((size_t)n * 16);
		struct tc_result r;
		tc_put *p;

		for (uint32_t i = 0; i < n; i++) {
			snprintf(names + (size_t)i * 16, 16, "t%u", i);
			td[i] = (struct tc_tensor_desc){ names + (size_t)i * 16,
							 TC_DTYPE_F32, 1, one };
		}
		assert_int_equal(tc_put_begin(c, td, n, NULL, NULL, &p), 0);
		assert_int_equal(tc_put_commit(p, &r), 0);
		snprintf(s.big, sizeof(s.big), "%s", r.id);
		free(names);
		free(td);
	}
	snprintf(secs, sizeof(secs), "%d", SOAK_S);
	assert_int_equal(pipe(pfd), 0);
	pthread_create(&atk[0], NULL, soak_idle_flood, &s);
	pthread_create(&atk[1], NULL, soak_slowloris, &s);
	pthread_create(&atk[2], NULL, soak_bursts, &s);
	pthread_create(&atk[3], NULL, soak_kills, &s);
	usleep(300000); /* the floods are on */
	good = t_spawn_self((const char *const[]){ "good", d.sock, s.ref, secs,
						   NULL },
			    NULL, pfd[1], -1);
	assert_true(good > 0);
	close(pfd[1]);
	t_read_line(pfd[0], line, sizeof(line));
	close(pfd[0]);
	assert_int_equal(t_wait_status(good), 0);
	s.stop = 1;
	if (sscanf(line, "%ld %ld %lf %ld %n", &s.n, &s.fail, &s.worst_ms,
		   &s.reconnects, &off) < 4)
		fail_msg("good client said '%s'", line);
	snprintf(s.last_err, sizeof(s.last_err), "%s", line + off);
	for (int i = 0; i < 4; i++)
		pthread_join(atk[i], i == 3 ? &kills : NULL);
	pct = s.n ? 100.0 * (double)(s.n - s.fail) / (double)s.n : 0;
	printf("soak: %ld attaches, success %.2f%%, worst latency %.1f ms "
	       "(%ld reconnects, %d client kills, %d s)\n",
	       s.n, pct, s.worst_ms, s.reconnects, (int)(intptr_t)kills,
	       SOAK_S);
	if (s.fail)
		printf("soak: last error: %s\n", s.last_err);
	assert_true(s.n > (getenv("TC_SANITIZED") ? 200 : 1000));
	assert_int_equal(s.fail, 0);
	/* The target is < 50 ms; this bound is loose for a shared 2-core
	 * box (and looser under the sanitizers, which slow the daemon ~3x). */
	assert_true(s.worst_ms < (getenv("TC_SANITIZED") ? 3000 : 1000));
	/* The daemon is intact: it still answers status (on a new
	 * connection: `c`, idle and holding nothing, may have given its slot
	 * to the flood of its own process). */
	tc_client_close(c);
	c = t_connect(d.sock);
	{
		char *js;

		assert_int_equal(tc_status_json(c, &js), 0);
		tc_free(js);
	}
	tc_client_close(c);
	assert_int_equal(stop_daemon(&d), 0);
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flood__emfile_backs_off),
		cmocka_unit_test(test_flood__hung_imports_starve_nobody),
		cmocka_unit_test(test_flood__soak),
	};

	if (argc >= 5 && !strcmp(argv[1], "--child") &&
	    !strcmp(argv[2], "attach"))
		return child_attach(argv[3], argv[4]);
	if (argc >= 6 && !strcmp(argv[1], "--child") &&
	    !strcmp(argv[2], "good"))
		return child_good(argv[3], argv[4], atoi(argv[5]));
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
