/*
 * test_conn.c - what one connection may cost the daemon, and what a client
 * is told when the daemon will not serve it (issue 10: findings 3, 8, 13).
 *
 * Real daemons on private sockets; every check is made through the socket.
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

/* Put n one-element F32 tensors; returns the id in `id`. */
static int put_many(tc_client *c, uint32_t n, char id[TC_ID_BUFLEN])
{
	static const uint64_t one[1] = { 1 };
	struct tc_tensor_desc *d = calloc(n, sizeof(*d));
	char *names = malloc((size_t)n * 16);
	struct tc_result r;
	tc_put *p;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		snprintf(names + (size_t)i * 16, 16, "t%u", i);
		d[i] = (struct tc_tensor_desc){ names + (size_t)i * 16,
						TC_DTYPE_F32, 1, one };
	}
	rc = tc_put_begin(c, d, n, NULL, NULL, &p);
	if (rc == 0) {
		for (uint32_t i = 0; i < n; i++)
			*(float *)tc_put_data(p, i) = (float)i;
		rc = tc_put_commit(p, &r);
		if (rc == 0)
			snprintf(id, TC_ID_BUFLEN, "%s", r.id);
	}
	free(names);
	free(d);
	return rc;
}

static int recv_status(int fd, struct tc__frame_hdr *h)
{
	uint8_t *body = NULL;
	int status = 1;

	if (t_raw_recv(fd, h, &body, NULL, NULL) < 0) {
		free(body);
		return 1; /* EOF: no reply */
	}
	memcpy(&status, body, 4);
	free(body);
	return status;
}

/* ------------------------------------------------------ protocol nits */

/* Bytes after the last field of a body are refused before the request
 * runs; the connection then ends. */
static void test_conn__trailing_bytes_refused(void **state)
{
	struct t_daemon d;
	struct tc__frame_hdr h;
	struct tc__buf b = TC_BUF_INIT;
	tc_client *c;
	int fd;

	t_daemon_start(&d, "64MiB", NULL);
	c = t_connect(d.sock);
	/* LIST takes no body: one stray byte. */
	fd = t_raw_connect(d.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	t_raw_send(fd, TC_MSG_LIST, 5, "x", 1, NULL, 0);
	assert_int_equal(recv_status(fd, &h), TC_EPROTO);
	assert_int_equal(h.req_id, 5);
	assert_int_equal(recv_status(fd, &h), 1); /* closed */
	close(fd);
	/* KEY_SET with a byte after expect_gen must not set the key. */
	fd = t_raw_connect(d.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	tc__buf_put_str(&b, "nit:key");
	tc__buf_put_str(&b, "tc1:0123456789abcdef0123456789abcdef");
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u64(&b, 0);
	tc__buf_put_u8(&b, 0);
	t_raw_send(fd, TC_MSG_KEY_SET, 6, b.data, b.len, NULL, 0);
	tc__buf_release(&b);
	assert_int_equal(recv_status(fd, &h), TC_EPROTO);
	close(fd);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&d), 0);
}

/* A header the daemon cannot take still gets an error reply that says
 * why (docs/protocol.md), then the connection closes. */
static void test_conn__bad_header_gets_reply(void **state)
{
	struct t_daemon d;
	struct tc__frame_hdr h;
	uint8_t hdr[TC_FRAME_HDR];
	int fd;

	t_daemon_start(&d, "64MiB", NULL);
	/* A version this daemon does not speak. */
	fd = t_raw_connect(d.sock);
	{
		struct tc__frame_hdr bh = {
			TC_PROTO_VERSION + 1, TC_MSG_HELLO, 0, 7, 0, 0
		};

		tc__frame_encode(&bh, hdr);
	}
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(recv_status(fd, &h), TC_EVERSION);
	assert_int_equal(h.req_id, 7);
	assert_int_equal(recv_status(fd, &h), 1);
	close(fd);
	/* Unknown type 999. */
	fd = t_raw_connect(d.sock);
	{
		struct tc__frame_hdr bh = { TC_PROTO_VERSION, 999, 0, 8, 0, 0 };

		tc__frame_encode(&bh, hdr);
	}
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(recv_status(fd, &h), TC_EPROTO);
	assert_int_equal(h.req_id, 8);
	close(fd);
	assert_int_equal(t_daemon_stop(&d), 0);
}

/* A full daemon tells a newcomer why instead of resetting it; a slot held
 * by an idle connection that holds nothing goes to the newcomer. */
static void test_conn__full_daemon_says_why(void **state)
{
	struct t_daemon d;
	tc_client *held[3], *c;
	tc_artifact *a[3];
	char err[512], id[TC_ID_BUFLEN];
	int rc, idle;

	t_daemon_start(&d, "64MiB", "--set", "max_clients=3", NULL);
	held[0] = t_connect(d.sock);
	assert_int_equal(put_many(held[0], 1, id), 0);
	for (int i = 0; i < 3; i++) {
		if (i)
			held[i] = t_connect(d.sock);
		assert_int_equal(tc_attach(held[i], id, &a[i]), 0);
	}
	/* Every slot holds a lease: nothing to give. */
	rc = tc_client_connect(d.sock, &c, err, sizeof(err));
	assert_int_equal(rc, TC_EBUSY);
	if (!strstr(err, "max_clients"))
		fail_msg("refusal did not say why: '%s'", err);
	/* One releases and goes quiet: its slot goes to the newcomer. */
	tc_artifact_close(a[2]);
	sleep(2);
	rc = tc_client_connect(d.sock, &c, err, sizeof(err));
	if (rc != 0)
		fail_msg("newcomer refused: %s", err);
	assert_true(t_status_int(c, "clients") <= 3);
	/* The evicted one learns why on its next call. */
	idle = tc_attach(held[2], id, &a[2]);
	assert_int_equal(idle, TC_EBUSY);
	if (!strstr(tc_client_errmsg(held[2]), "idle connection"))
		fail_msg("evicted client told '%s'", tc_client_errmsg(held[2]));
	tc_client_close(c);
	for (int i = 0; i < 2; i++) {
		tc_artifact_close(a[i]);
		tc_client_close(held[i]);
	}
	tc_client_close(held[2]);
	assert_int_equal(t_daemon_stop(&d), 0);
}

/* Connect to `sock` with a deadline; -1 if it never accepts. */
static int wait_connect(const char *sock, int ms)
{
	for (int i = 0; i < ms / 20; i++) {
		tc_client *c;

		if (tc_client_connect(sock, &c, NULL, 0) == 0) {
			tc_client_close(c);
			return 0;
		}
		usleep(20000);
	}
	return -1;
}

/* status stays valid JSON whatever the socket path holds. */
static void test_conn__status_json_hostile_socket_path(void **state)
{
	char *dir = t_tmpdir(), sdir[512], sock[600], bin[512], *s;
	tc_client *c;
	json_t *j;
	pid_t pid;

	snprintf(sdir, sizeof(sdir), "%s/q\"x\\y\x01z", dir);
	assert_int_equal(mkdir(sdir, 0700), 0);
	snprintf(sock, sizeof(sock), "%s/d.sock", sdir);
	/* $TCAST_BIN: another daemon build (as tlib's t_daemon_start). */
	if (getenv("TCAST_BIN"))
		snprintf(bin, sizeof(bin), "%s", getenv("TCAST_BIN"));
	else
		snprintf(bin, sizeof(bin), "%s/tcast", TC_TEST_BIN);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(null, 1);
		dup2(null, 2);
		execl(bin, bin, "--socket", sock, "daemon", "run",
		      "--host-memory", "64MiB", (char *)NULL);
		_exit(127);
	}
	assert_int_equal(wait_connect(sock, 10000), 0);
	c = t_connect(sock);
	assert_int_equal(tc_status_json(c, &s), 0);
	j = json_loads(s, 0, NULL);
	if (!j)
		fail_msg("status is not JSON: %s", s);
	assert_string_equal(json_string_value(json_object_get(j, "socket")),
			    sock);
	json_decref(j);
	tc_free(s);
	tc_client_close(c);
	kill(pid, SIGTERM);
	assert_int_equal(t_wait_status(pid), 0);
	/* The CLI's own JSON too: `daemon status --json` with no daemon
	 * there, and `--set` values holding quotes. */
	{
		char cmd[2048], out[1024] = "";
		FILE *f;
		size_t n;

		snprintf(cmd, sizeof(cmd),
			 "'%s' --json --socket \"$SOCK\" daemon status "
			 "2>/dev/null",
			 bin);
		setenv("SOCK", sock, 1);
		f = popen(cmd, "r");
		n = fread(out, 1, sizeof(out) - 1, f);
		out[n] = '\0';
		pclose(f);
		j = json_loads(out, 0, NULL);
		if (!j)
			fail_msg("daemon status --json is not JSON: %s", out);
		assert_string_equal(
			json_string_value(json_object_get(j, "socket")), sock);
		json_decref(j);
		snprintf(cmd, sizeof(cmd),
			 "'%s' --socket \"$SOCK\" daemon run --set "
			 "'log_file=%s/a\"b.log' --set max_clients=nope "
			 ">/dev/null 2>&1",
			 bin, dir);
		/* Refused for max_clients, after taking the quoted path. */
		assert_int_not_equal(system(cmd), 0);
		snprintf(cmd, sizeof(cmd),
			 "'%s' --socket \"$SOCK\" daemon run --set "
			 "'log_file=%s/a\"b.log' --set max_clients=nope 2>&1 "
			 "| grep -q \"key 'max_clients'\"",
			 bin, dir);
		assert_int_equal(system(cmd), 0);
	}
	t_rmtree(dir);
	free(dir);
}

/* ---------------------------------------------- one client's weight */

/* Tensor tables are charged to the host budget; max_tensors caps them. */
static void test_conn__tables_charged_and_capped(void **state)
{
	struct t_daemon d;
	tc_client *c;
	char id[TC_ID_BUFLEN];
	long long before, after, seg;

	t_daemon_start(&d, "1GiB", "--set", "host_spare=0", "--set",
		       "max_tensors=60000", NULL);
	c = t_connect(d.sock);
	before = t_status_int(c, "host_used_bytes");
	assert_int_equal(put_many(c, 50000, id), 0);
	after = t_status_int(c, "host_used_bytes");
	seg = 50000LL * 256; /* one 256-byte aligned slot per tensor */
	printf("conn: 50000-tensor put charged %lld bytes (segment %lld, "
	       "table %lld)\n",
	       after - before, seg, after - before - seg);
	/* The table (names, shapes, the ATTACH body) is charged too. */
	assert_true(after - before >= seg + 50000LL * 64);
	assert_int_equal(put_many(c, 60001, id), TC_ELIMIT);
	assert_non_null(strstr(tc_client_errmsg(c), "max_tensors"));
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&d), 0);
}

struct prober {
	const char *sock;
	const char *ref;
	volatile int stop;
	int n, fail;
	double worst_ms;
};

/* The good client: attach, check, release, as fast as it can. */
static void *probe(void *p)
{
	struct prober *pr = p;
	tc_client *c;

	if (tc_client_connect(pr->sock, &c, NULL, 0) < 0) {
		pr->fail++;
		return NULL;
	}
	while (!pr->stop) {
		double t0 = t_now_ms(), dt;
		tc_artifact *a;

		if (tc_attach(c, pr->ref, &a) == 0)
			tc_artifact_close(a);
		else
			pr->fail++;
		dt = t_now_ms() - t0;
		if (dt > pr->worst_ms)
			pr->worst_ms = dt;
		pr->n++;
		usleep(2000);
	}
	tc_client_close(c);
	return NULL;
}

/* 20 pipelined INSPECTs of a 200k-tensor artifact from a client that never
 * reads: the daemon neither freezes nor bloats; a good client's worst
 * attach latency is printed and bounded. */
static void test_conn__pipelined_inspect_does_not_freeze(void **state)
{
	struct t_daemon d;
	struct prober pr = { 0 };
	struct tc__buf b = TC_BUF_INIT;
	char big[TC_ID_BUFLEN], small[TC_ID_BUFLEN], path[512], line[256];
	pthread_t t;
	tc_client *c;
	long rss_kb = 0;
	FILE *f;
	int fd;

	t_daemon_start(&d, "2GiB", NULL);
	c = t_connect(d.sock);
	assert_int_equal(put_many(c, 200000, big), 0);
	assert_int_equal(put_many(c, 4, small), 0);
	pr.sock = d.sock;
	pr.ref = small;
	pthread_create(&t, NULL, probe, &pr);
	usleep(200000);
	fd = t_raw_connect(d.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	tc__buf_put_str(&b, big);
	for (int i = 0; i < 20; i++)
		t_raw_send(fd, TC_MSG_INSPECT, 100 + (uint32_t)i, b.data, b.len,
			   NULL, 0);
	tc__buf_release(&b);
	sleep(4);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)d.pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			rss_kb = atol(line + 6);
	if (f)
		fclose(f);
	pr.stop = 1;
	pthread_join(t, NULL);
	printf("conn: under 20 pipelined INSPECTs of a 200k-tensor artifact: "
	       "%d attaches, %d failed, worst latency %.1f ms, daemon peak "
	       "RSS %ld MiB\n",
	       pr.n, pr.fail, pr.worst_ms, rss_kb / 1024);
	assert_int_equal(pr.fail, 0);
	assert_true(pr.n > 100);
	/* The goal is < 50 ms; the bound is loose for a loaded
	 * 2-core CI box and the sanitizers (it was ~20 s before the fix). */
	assert_true(pr.worst_ms < (getenv("TC_SANITIZED") ? 2000 : 500));
	/* The attacker's replies still arrive, in order. */
	for (int i = 0; i < 2; i++) {
		struct tc__frame_hdr h;

		assert_int_equal(recv_status(fd, &h), 0);
		assert_int_equal(h.req_id, 100 + (uint32_t)i);
	}
	close(fd);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&d), 0);
}

/* A client that reads none of its replies is dropped after write_stall_ms;
 * an idle connection holding nothing after idle_timeout_ms. */
static void test_conn__stalled_and_idle_dropped(void **state)
{
	struct t_daemon d;
	struct tc__buf b = TC_BUF_INIT;
	char id[TC_ID_BUFLEN];
	tc_artifact *held;
	tc_client *c;
	int stalled, idle, sent = 0;
	struct pollfd p;

	t_daemon_start(&d, "256MiB", "--set", "write_stall_ms=1000", "--set",
		       "idle_timeout_ms=1500", NULL);
	c = t_connect(d.sock);
	assert_int_equal(put_many(c, 2000, id), 0);
	assert_int_equal(tc_attach(c, id, &held), 0);
	stalled = t_raw_connect(d.sock);
	assert_int_equal(t_raw_hello(stalled), 0);
	idle = t_raw_connect(d.sock);
	assert_int_equal(t_raw_hello(idle), 0);
	tc__sock_set_nonblock(stalled, 1);
	tc__buf_put_str(&b, id);
	for (int i = 0; i < 400; i++)
		if (t_raw_send(stalled, TC_MSG_INSPECT, (uint32_t)i, b.data,
			       b.len, NULL, 0) == 0)
			sent++;
	tc__buf_release(&b);
	assert_true(sent > 0);
	/* Both are closed within a few seconds: the daemon's shutdown shows
	 * as POLLRDHUP even while unread replies are still queued here. */
	for (int i = 0; i < 2; i++) {
		int fd = i ? idle : stalled, closed = 0;
		double t0 = t_now_ms();

		while (!closed && t_now_ms() - t0 < 8000) {
			p = (struct pollfd){ fd, POLLRDHUP, 0 };
			if (poll(&p, 1, 100) > 0 &&
			    (p.revents & (POLLRDHUP | POLLHUP)))
				closed = 1;
		}
		if (!closed)
			fail_msg("%s connection was never dropped",
				 i ? "idle" : "stalled");
		printf("conn: %s connection dropped after %.0f ms\n",
		       i ? "idle" : "stalled", t_now_ms() - t0);
	}
	/* The good client, quiet as long but holding a lease, is kept. */
	assert_true(t_status_int(c, "pid") > 0);
	tc_artifact_close(held);
	close(stalled);
	close(idle);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&d), 0);
}

/* 1,000 idle connections of one user do not lock out a new client. */
static void test_conn__idle_flood_does_not_lock_out(void **state)
{
	struct t_daemon d;
	int fds[1000], n = 0, ok = 0;
	char err[256];

	t_daemon_start(&d, "64MiB", "--set", "max_clients=1000", NULL);
	for (int i = 0; i < 1000; i++) {
		fds[n] = t_raw_connect(d.sock);
		if (fds[n] < 0)
			break;
		if (t_raw_hello(fds[n]) < 0) {
			close(fds[n]);
			continue;
		}
		n++;
	}
	sleep(2); /* they are idle now */
	for (int i = 0; i < 50; i++) {
		tc_client *c;

		if (tc_client_connect(d.sock, &c, err, sizeof(err)) == 0) {
			ok++;
			tc_client_close(c);
		}
	}
	printf("conn: %d idle connections held; a new client connected "
	       "%d/50 times\n",
	       n, ok);
	assert_int_equal(ok, 50);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	assert_int_equal(t_daemon_stop(&d), 0);
}

int main(void)
{
	struct rlimit rl;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn__trailing_bytes_refused),
		cmocka_unit_test(test_conn__bad_header_gets_reply),
		cmocka_unit_test(test_conn__full_daemon_says_why),
		cmocka_unit_test(test_conn__status_json_hostile_socket_path),
		cmocka_unit_test(test_conn__tables_charged_and_capped),
		cmocka_unit_test(test_conn__pipelined_inspect_does_not_freeze),
		cmocka_unit_test(test_conn__stalled_and_idle_dropped),
		cmocka_unit_test(test_conn__idle_flood_does_not_lock_out),
	};

	/* The flood below needs more fds than the usual soft limit. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
