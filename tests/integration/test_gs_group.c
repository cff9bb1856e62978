/*
 * test_gs_group.c - the global store's groups (GROUP_* messages) through a
 * real `tcast global` process on loopback TCP, driven by the protocol.
 *
 * Four ranks commit, and a waiter on another connection hears it at once;
 * a rank whose lease is not renewed aborts the group within about its
 * lease, naming the rank; a rank cannot join on a node the cluster does not
 * know, prepare without joining, prepare twice with different ids, or
 * overturn a decision.  Then hostile requests: every GROUP_* body
 * truncated, with trailing bytes, with lengths past their limits, names
 * with spaces or control bytes, numbers out of range, and random bodies
 * from a seeded generator.  Each gets an error naming what was wrong (a
 * malformed frame also drops its connection); the store never crashes and
 * keeps serving the next connection.  Last, an open group with two
 * holders (`tcast global group hold`) survives a kill -9 of the store:
 * they reconnect and renew, the prepared report is kept, it commits.
 * And a client creating the largest groups it may is refused at the
 * store's bound on ranks kept (memory), not served until it runs out.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "net/auth.h"
#include "proto/gsp.h"
#include "store/gsc.h"
#include "tcast/errors.h"
#include "tlib.h"

static char dir[512], addr[128], secret_path[600], bin[600];
static struct tc__auth_secret sec;

static void sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

static pid_t store_pid(void)
{
	char path[700], *s;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/gs/global.pid", dir);
	s = t_slurp(path, NULL);
	assert_non_null(s);
	pid = (pid_t)atoi(s);
	free(s);
	return pid;
}

static int setup(void **state)
{
	char *d = t_tmpdir(), path[700], *s;
	char err[512];

	snprintf(dir, sizeof(dir), "%s", d);
	free(d);
	if (getenv("TCAST_BIN"))
		snprintf(bin, sizeof(bin), "%s", getenv("TCAST_BIN"));
	else
		snprintf(bin, sizeof(bin), "%s/tcast", TC_TEST_BIN);
	snprintf(secret_path, sizeof(secret_path), "%s/secret", dir);
	sh("umask 077; openssl rand -hex 32 > %s", secret_path);
	sh("%s global start --listen 127.0.0.1:0 --lease-ms 1500 --state-dir "
	   "%s/gs --cluster-secret-file %s >/dev/null",
	   bin, dir, secret_path);
	snprintf(path, sizeof(path), "%s/gs/global.addr", dir);
	s = t_slurp(path, NULL);
	assert_non_null(s);
	s[strcspn(s, "\n")] = '\0';
	snprintf(addr, sizeof(addr), "%s", s);
	free(s);
	assert_int_equal(
		tc__auth_load_secret(secret_path, &sec, err, sizeof(err)), 0);
	return 0;
}

static int teardown(void **state)
{
	sh("%s global stop --state-dir %s/gs >/dev/null", bin, dir);
	tc__auth_secret_wipe(&sec);
	t_rmtree(dir);
	return 0;
}

static void conn(struct tc__gsc *g)
{
	tc__gsc_init(g, 5000);
	if (tc__gsc_connect(g, addr, &sec, TC_AUTH_ROLE_TOOL, "test") < 0)
		fail_msg("connect: %s", g->err);
}

/* One GROUP_* call; its code (the record released). */
static int call(struct tc__gsc *g, int type, const char *group, uint32_t rank,
		uint32_t ranks, const char *node, uint32_t lease_ms,
		const char *id, struct tc__gsp_group *out)
{
	struct tc__gsp_group_req q = { 0 };
	struct tc__gsp_group rec;
	int ret;

	snprintf(q.group, sizeof(q.group), "%s", group);
	q.rank = rank;
	q.ranks = ranks;
	q.timeout_ms = 30000;
	snprintf(q.node, sizeof(q.node), "%s", node ? node : "");
	q.lease_ms = lease_ms ? lease_ms : 5000;
	snprintf(q.id, sizeof(q.id), "%s", id ? id : "");
	snprintf(q.reason, sizeof(q.reason), "%s", id ? id : "");
	ret = tc__gsc_group(g, type, &q, out ? out : &rec);
	if (!out && ret == 0)
		tc__gsp_group_release(&rec);
	return ret;
}

static void test_gs_group__four_ranks_commit(void **state)
{
	struct tc__gsc g, w;
	struct tc__gsp_group rec;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__gsp_group_req q = { 0 };
	struct tc__cur r;
	double t0;

	conn(&g);
	conn(&w);
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "c/v1", 0, 4, NULL, 0,
			      NULL, NULL),
			 0);
	/* every rank may create it; another shape is a conflict */
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "c/v1", 0, 4, NULL, 0,
			      NULL, NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "c/v1", 0, 3, NULL, 0,
			      NULL, NULL),
			 TC_ECONFLICT);
	for (uint32_t k = 0; k < 4; k++)
		assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "c/v1", k, 0, NULL,
				      0, NULL, NULL),
				 0);
	/* a waiter on another connection */
	snprintf(q.group, sizeof(q.group), "c/v1");
	q.wait_ms = 10000;
	tc__gsp_put_group_req(&b, TC_GSP_GROUP_GET, &q);
	assert_true(tc__gsc_send(&w, TC_GSP_GROUP_GET, b.data, b.len) > 0);
	tc__buf_release(&b);
	for (uint32_t k = 0; k < 3; k++)
		assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "c/v1", k, 0,
				      NULL, 0, "staged-x", NULL),
				 0);
	usleep(100 * 1000);
	t0 = t_now_ms();
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "c/v1", 3, 0, NULL, 0,
			      "staged-x", &rec),
			 0);
	assert_int_equal(rec.state, TC_GSP_GSTATE_COMMIT);
	assert_int_equal(rec.nprepared, 4);
	assert_int_equal(rec.nmembers, 4);
	assert_string_equal(rec.reason, "all 4 ranks prepared");
	tc__gsp_group_release(&rec);
	assert_int_equal(tc__gsc_recv(&w, &r), 0);
	assert_int_equal(tc__gsp_get_group(&r, &rec, w.err, sizeof(w.err)), 0);
	assert_int_equal(rec.state, TC_GSP_GSTATE_COMMIT);
	tc__gsp_group_release(&rec);
	assert_true(t_now_ms() - t0 < 1000);
	/* the decision stands: an abort now answers commit */
	assert_int_equal(call(&g, TC_GSP_GROUP_ABORT, "c/v1", 1, 0, NULL, 0,
			      "late", &rec),
			 0);
	assert_int_equal(rec.state, TC_GSP_GSTATE_COMMIT);
	tc__gsp_group_release(&rec);
	tc__gsc_close(&w);
	tc__gsc_close(&g);
}

static void test_gs_group__lapsed_lease_aborts(void **state)
{
	struct tc__gsc g;
	struct tc__gsp_group_req q = { 0 };
	struct tc__gsp_group rec;
	double t0;

	conn(&g);
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "l/v1", 0, 2, NULL, 0,
			      NULL, NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "l/v1", 0, 0, NULL, 5000,
			      NULL, NULL),
			 0);
	t0 = t_now_ms();
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "l/v1", 1, 0, NULL, 300,
			      NULL, NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "l/v1", 0, 0, NULL, 0,
			      "a", NULL),
			 0);
	snprintf(q.group, sizeof(q.group), "l/v1");
	q.wait_ms = 20000;
	assert_int_equal(tc__gsc_group(&g, TC_GSP_GROUP_GET, &q, &rec), 0);
	/* its lease (300 ms), plus the store's 250 ms sweep, not 20 s */
	assert_true(t_now_ms() - t0 < 1500);
	assert_int_equal(rec.state, TC_GSP_GSTATE_ABORT);
	assert_int_equal(rec.by_rank, 1);
	assert_non_null(strstr(rec.reason, "rank 1: lease not renewed"));
	tc__gsp_group_release(&rec);
	/* too late to prepare */
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "l/v1", 1, 0, NULL, 0,
			      "b", NULL),
			 TC_ECONFLICT);
	assert_non_null(strstr(g.err, "was aborted"));
	tc__gsc_close(&g);
}

static void test_gs_group__refusals(void **state)
{
	struct tc__gsc g;

	conn(&g);
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "nosuch", 0, 0, NULL, 0,
			      NULL, NULL),
			 TC_ENOTFOUND);
	assert_non_null(strstr(g.err, "no group 'nosuch'"));
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "r/v1", 0, 2, NULL, 0,
			      NULL, NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "r/v1", 2, 0, NULL, 0,
			      NULL, NULL),
			 TC_EINVAL);
	assert_non_null(strstr(g.err, "which has 2 ranks"));
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "r/v1", 0, 0, "ghost", 0,
			      NULL, NULL),
			 TC_ENOTFOUND);
	assert_non_null(strstr(g.err, "node 'ghost' is not live"));
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "r/v1", 1, 0, NULL, 0,
			      "x", NULL),
			 TC_ENOTFOUND);
	assert_non_null(strstr(g.err, "has not joined"));
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "r/v1", 0, 0, NULL, 0,
			      NULL, NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "r/v1", 0, 0, NULL, 0,
			      "x", NULL),
			 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "r/v1", 0, 0, NULL, 0,
			      "x", NULL),
			 0); /* the same report again */
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "r/v1", 0, 0, NULL, 0,
			      "y", NULL),
			 TC_ECONFLICT);
	/* these errors are answers: the connection still serves */
	assert_int_equal(call(&g, TC_GSP_GROUP_GET, "r/v1", 0, 0, NULL, 0, NULL,
			      NULL),
			 0);
	tc__gsc_close(&g);
}

/* Send `body` as GROUP_* `type`; the code replied, TC_ECLOSED when the
 * store dropped the connection instead (then g is reconnected). */
static int raw(struct tc__gsc *g, int type, const void *body, size_t len)
{
	struct tc__cur r;
	int ret;

	if (tc__gsc_send(g, type, body, len) < 0) {
		conn(g);
		return TC_ECLOSED;
	}
	ret = tc__gsc_recv(g, &r);
	/* the store drops a connection after a malformed frame */
	if (g->fd < 0 || ret == TC_EPROTO) {
		tc__gsc_close(g);
		conn(g);
	}
	return ret;
}

static void str(struct tc__buf *b, const char *s)
{
	tc__buf_put_str(b, s);
}

static void test_gs_group__hostile_bodies(void **state)
{
	static const int types[] = { TC_GSP_GROUP_CREATE, TC_GSP_GROUP_JOIN,
				     TC_GSP_GROUP_PREPARE, TC_GSP_GROUP_ABORT,
				     TC_GSP_GROUP_GET };
	struct tc__gsc g;
	struct tc__buf b = TC_BUF_INIT;
	struct t_rng rng;
	char big[2048];
	int ret;

	conn(&g);
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "h/v1", 0, 2, NULL, 0,
			      NULL, NULL),
			 0);
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		/* empty, truncated after the name, trailing bytes */
		assert_int_equal(raw(&g, types[t], "", 0), TC_EPROTO);
		tc__buf_init(&b);
		str(&b, "h/v1");
		assert_int_equal(raw(&g, types[t], b.data, b.len), TC_EPROTO);
		tc__buf_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
		ret = raw(&g, types[t], b.data, b.len);
		assert_true(ret == TC_EPROTO || ret == TC_EINVAL);
		tc__buf_release(&b);
		/* a group name past its limit, with a space, with a byte < 0x20
		 */
		memset(big, 'a', sizeof(big));
		big[sizeof(big) - 1] = '\0';
		tc__buf_init(&b);
		str(&b, big);
		tc__buf_put_u32(&b, 1);
		tc__buf_put_u32(&b, 1);
		assert_int_equal(raw(&g, types[t], b.data, b.len), TC_ELIMIT);
		tc__buf_release(&b);
		tc__buf_init(&b);
		str(&b, "h v1");
		assert_int_equal(raw(&g, types[t], b.data, b.len), TC_EPROTO);
		tc__buf_release(&b);
		tc__buf_init(&b);
		str(&b, "h\x01v1");
		assert_int_equal(raw(&g, types[t], b.data, b.len), TC_EPROTO);
		tc__buf_release(&b);
		/* a length that claims 4 GiB */
		tc__buf_init(&b);
		tc__buf_put_u32(&b, 0xffffffffu);
		tc__buf_put(&b, "h/v1", 4);
		assert_int_equal(raw(&g, types[t], b.data, b.len), TC_ELIMIT);
		tc__buf_release(&b);
	}
	/* numbers out of range: answered, the connection kept */
	tc__buf_init(&b);
	str(&b, "h/v2");
	tc__buf_put_u32(&b, 0); /* ranks */
	tc__buf_put_u32(&b, 1000);
	assert_int_equal(raw(&g, TC_GSP_GROUP_CREATE, b.data, b.len),
			 TC_EINVAL);
	assert_non_null(strstr(g.err, "ranks: 0"));
	tc__buf_release(&b);
	tc__buf_init(&b);
	str(&b, "h/v2");
	tc__buf_put_u32(&b, TC_GSP_MAX_RANKS + 1);
	tc__buf_put_u32(&b, 1000);
	assert_int_equal(raw(&g, TC_GSP_GROUP_CREATE, b.data, b.len),
			 TC_EINVAL);
	tc__buf_release(&b);
	tc__buf_init(&b);
	str(&b, "h/v1");
	tc__buf_put_u32(&b, 0);
	str(&b, "");
	tc__buf_put_u32(&b, 5); /* lease_ms below 100 */
	assert_int_equal(raw(&g, TC_GSP_GROUP_JOIN, b.data, b.len), TC_EINVAL);
	assert_non_null(strstr(g.err, "lease_ms"));
	tc__buf_release(&b);
	tc__buf_init(&b);
	str(&b, "h/v1");
	tc__buf_put_u32(&b, TC_GSP_MAX_WAIT_MS + 1);
	assert_int_equal(raw(&g, TC_GSP_GROUP_GET, b.data, b.len), TC_EINVAL);
	tc__buf_release(&b);
	tc__buf_init(&b);
	str(&b, "h/v1");
	tc__buf_put_u32(&b, 7);
	str(&b, "bad\nreason");
	assert_int_equal(raw(&g, TC_GSP_GROUP_ABORT, b.data, b.len), TC_EPROTO);
	tc__buf_release(&b);
	/* seeded random bodies, and random mutations of good ones, against
	 * a decided group (a GET on it never waits) */
	assert_int_equal(call(&g, TC_GSP_GROUP_ABORT, "h/v1", TC_GSP_NO_RANK, 0,
			      NULL, 0, "operator", NULL),
			 0);
	t_rng_init(&rng, t_rng_seed("TC_TEST_SEED"));
	for (int i = 0; i < 1500; i++) {
		int type = types[t_rng_below(&rng, 5)];
		size_t n = t_rng_below(&rng, 64);
		uint8_t body[80];

		if (i % 2) {
			struct tc__gsp_group_req q = { 0 };

			snprintf(q.group, sizeof(q.group), "h/v1");
			snprintf(q.node, sizeof(q.node), "n");
			snprintf(q.id, sizeof(q.id), "id");
			snprintf(q.reason, sizeof(q.reason), "why");
			q.ranks = 2;
			q.timeout_ms = 1000;
			q.lease_ms = 1000;
			tc__buf_init(&b);
			tc__gsp_put_group_req(&b, type, &q);
			n = b.len < sizeof(body) ? b.len : sizeof(body);
			memcpy(body, b.data, n);
			tc__buf_release(&b);
			for (int k = 0; k < 3; k++)
				body[t_rng_below(&rng, n)] =
					(uint8_t)t_rng_next(&rng);
		} else {
			for (size_t k = 0; k < n; k++)
				body[k] = (uint8_t)t_rng_next(&rng);
		}
		ret = raw(&g, type, body, n);
		assert_true(ret <= 0);
	}
	/* a type the store does not know: the connection is dropped */
	assert_true(raw(&g, 99, "x", 1) < 0);
	/* still serving, still the same process */
	assert_int_equal(kill(store_pid(), 0), 0);
	assert_int_equal(call(&g, TC_GSP_GROUP_JOIN, "h/v1", 1, 0, NULL, 0,
			      NULL, NULL),
			 0);
	{
		char *doc = NULL;

		assert_int_equal(tc__gsc_status(&g, &doc), 0);
		assert_non_null(strstr(doc, "\"groups_open\""));
		free(doc);
	}
	tc__gsc_close(&g);
}

/* `tcast global group hold` as a rank would run it: our pipe on its
 * stdin, so closing it lets the rank's lease go. */
static FILE *hold(const char *group, int rank)
{
	char cmd[2048];
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "exec %s global group hold %s --rank %d --rank-lease-ms 2000 "
		 "--global %s --cluster-secret-file %s >/dev/null 2>&1",
		 bin, group, rank, addr, secret_path);
	f = popen(cmd, "w");
	assert_non_null(f);
	return f;
}

static void test_gs_group__survives_store_restart(void **state)
{
	struct tc__gsc g;
	struct tc__gsp_group rec;
	FILE *h0, *h1;

	conn(&g);
	assert_int_equal(call(&g, TC_GSP_GROUP_CREATE, "s/v1", 0, 2, NULL, 0,
			      NULL, NULL),
			 0);
	h0 = hold("s/v1", 0);
	h1 = hold("s/v1", 1);
	usleep(500 * 1000);
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "s/v1", 0, 0, NULL, 0,
			      "a", NULL),
			 0);
	tc__gsc_close(&g);
	/* kill -9 and a new store on the same address and database: the
	 * holders reconnect and renew, so the open group stays open */
	assert_int_equal(kill(store_pid(), SIGKILL), 0);
	usleep(200 * 1000);
	sh("%s global start --listen %s --lease-ms 1500 --state-dir %s/gs "
	   "--cluster-secret-file %s >/dev/null",
	   bin, addr, dir, secret_path);
	/* past the leases the restart gave them (2 s + the 1.5 s node
	 * lease): only renewals keep them */
	usleep(4000 * 1000);
	conn(&g);
	assert_int_equal(call(&g, TC_GSP_GROUP_GET, "s/v1", 0, 0, NULL, 0, NULL,
			      &rec),
			 0);
	assert_int_equal(rec.state, TC_GSP_GSTATE_OPEN);
	assert_int_equal(rec.nprepared, 1); /* rank 0's report was kept */
	tc__gsp_group_release(&rec);
	assert_int_equal(call(&g, TC_GSP_GROUP_PREPARE, "s/v1", 1, 0, NULL, 0,
			      "b", &rec),
			 0);
	assert_int_equal(rec.state, TC_GSP_GSTATE_COMMIT);
	tc__gsp_group_release(&rec);
	pclose(h0);
	pclose(h1);
	tc__gsc_close(&g);
}

/* Groups cost the store memory per rank: a client creating the largest
 * groups it may is refused once 2^20 ranks are kept, and the store goes
 * on answering. */
static void test_gs_group__bounded(void **state)
{
	struct tc__gsp_group_req q = { .ranks = TC_GSP_MAX_RANKS,
				       .timeout_ms = 600000 };
	struct tc__gsp_group rec;
	struct tc__gsc g;
	int ret = 0, i;

	conn(&g);
	for (i = 0; i < 300; i++) {
		snprintf(q.group, sizeof(q.group), "big/%d", i);
		ret = tc__gsc_group(&g, TC_GSP_GROUP_CREATE, &q, &rec);
		if (ret < 0)
			break;
		tc__gsp_group_release(&rec);
	}
	assert_int_equal(ret, TC_ELIMIT);
	assert_true(i >= 250 && i <= 256);
	assert_non_null(strstr(g.err, "ranks"));
	assert_int_equal(call(&g, TC_GSP_GROUP_GET, "big/0", 0, 0, NULL, 0,
			      NULL, NULL),
			 0);
	tc__gsc_close(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gs_group__four_ranks_commit),
		cmocka_unit_test(test_gs_group__lapsed_lease_aborts),
		cmocka_unit_test(test_gs_group__refusals),
		cmocka_unit_test(test_gs_group__hostile_bodies),
		cmocka_unit_test(test_gs_group__survives_store_restart),
		cmocka_unit_test(test_gs_group__bounded),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
