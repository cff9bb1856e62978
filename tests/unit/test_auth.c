/*
 * test_auth.c - src/net/auth: the cluster handshake and the secret file.
 *
 * Both ends run the real state machine, over a real socket pair (blocking
 * driver on one side, the event-loop driver on the other) or byte by byte
 * through tc__auth_feed.  Refusals must name their reason: wrong secret,
 * wrong role, garbage, oversized fields, replay, reflection, a stall; the
 * secret file must be refused when others can read it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "net/auth.h"
#include "net/ev.h"
#include "net/tcp.h"
#include "tcast/errors.h"
#include "tlib.h"

static const char K1[] = "0123456789abcdef0123456789abcdef-one";
static const char K2[] = "fedcba9876543210fedcba9876543210-two";

static void secret(struct tc__auth_secret *s, const char *a, const char *b)
{
	memset(s, 0, sizeof(*s));
	assert_int_equal(tc__auth_secret_set(s, 0, a, strlen(a)), 0);
	if (b)
		assert_int_equal(tc__auth_secret_set(s, 1, b, strlen(b)), 0);
}

/* Move bytes between two machines until neither has anything to say. */
static void pump(struct tc__auth *c, struct tc__auth *s)
{
	for (int i = 0; i < 16; i++) {
		const uint8_t *p;
		size_t n;
		bool moved = false;

		n = tc__auth_output(c, &p);
		if (n && s->state != TC_AUTH_S_FAILED) {
			tc__auth_feed(s, p, n);
			tc__auth_sent(c, n);
			moved = true;
		}
		n = tc__auth_output(s, &p);
		if (n && c->state != TC_AUTH_S_FAILED) {
			tc__auth_feed(c, p, n);
			tc__auth_sent(s, n);
			moved = true;
		}
		if (!moved)
			return;
	}
}

static void test_auth__ok(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c, s;

	secret(&sec, K1, NULL);
	assert_int_equal(tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_DAEMON,
					      "node-a", 0),
			 0);
	assert_int_equal(tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL,
					      TC_AUTH_ROLE_DAEMON, "gs", 0),
			 0);
	pump(&c, &s);
	assert_true(tc__auth_done(&c));
	assert_true(tc__auth_done(&s));
	assert_string_equal(s.peer_name, "node-a");
	assert_int_equal(s.peer_role, TC_AUTH_ROLE_DAEMON);
	assert_string_equal(c.peer_name, "gs");
	assert_int_equal(c.peer_role, TC_AUTH_ROLE_GLOBAL);
}

static void test_auth__wrong_secret(void **state)
{
	struct tc__auth_secret a, b;
	struct tc__auth c, s;

	/* Same key id would be needed to reach the MAC check: force it, as
	 * an attacker guessing a secret would. */
	secret(&a, K1, NULL);
	secret(&b, K2, NULL);
	b.id[0] = a.id[0];
	tc__auth_init_client(&c, &b, TC_AUTH_ROLE_DAEMON, "evil", 0);
	tc__auth_init_server(&s, &a, TC_AUTH_ROLE_GLOBAL, 0, "gs", 0);
	pump(&c, &s);
	assert_false(tc__auth_done(&c));
	assert_false(tc__auth_done(&s));
	assert_int_equal(c.state, TC_AUTH_S_FAILED);
	assert_int_equal(c.error, TC_EPERM);
	assert_non_null(strstr(c.err, "could not prove"));
	/* the server never got a proof: the client stopped first */
	assert_int_equal(s.state, TC_AUTH_S_WAIT_PROOF);

	/* Without the forced id: refused at HELLO, reason logged. */
	secret(&b, K2, NULL);
	tc__auth_init_client(&c, &b, TC_AUTH_ROLE_DAEMON, "evil", 0);
	tc__auth_init_server(&s, &a, TC_AUTH_ROLE_GLOBAL, 0, "gs", 0);
	pump(&c, &s);
	assert_int_equal(s.state, TC_AUTH_S_FAILED);
	assert_int_equal(s.error, TC_EPERM);
	assert_non_null(strstr(s.err, "another cluster secret"));
	assert_false(tc__auth_done(&c));
}

/* A client that lies in its proof (it cannot compute it) is refused by
 * the server after the MAC check, and the server sends nothing back. */
static void test_auth__bad_proof(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c, s;
	const uint8_t *p;
	size_t n;

	secret(&sec, K1, NULL);
	tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_PEER, "a", 0);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_PEER, 0, "b", 0);
	n = tc__auth_output(&c, &p);
	assert_int_equal(tc__auth_feed(&s, p, n), 0);
	tc__auth_sent(&c, n);
	n = tc__auth_output(&s, &p);
	assert_int_equal(tc__auth_feed(&c, p, n), 0);
	tc__auth_sent(&s, n);
	n = tc__auth_output(&c, &p);
	assert_int_equal(n, TC_AUTH_HDR + TC_AUTH_MAC);
	{
		uint8_t bad[TC_AUTH_HDR + TC_AUTH_MAC];

		memcpy(bad, p, n);
		bad[TC_AUTH_HDR + 3] ^= 1;
		assert_int_equal(tc__auth_feed(&s, bad, n), TC_EPERM);
	}
	assert_non_null(strstr(s.err, "wrong cluster secret"));
	assert_int_equal(tc__auth_output(&s, &p), 0);
}

/* Rotation: a server holding (new, old) admits clients of either. */
static void test_auth__rotation(void **state)
{
	struct tc__auth_secret srv, old_only, new_only;
	struct tc__auth c, s;

	secret(&srv, K2, K1);
	secret(&old_only, K1, NULL);
	secret(&new_only, K2, NULL);
	tc__auth_init_client(&c, &old_only, TC_AUTH_ROLE_PEER, "old", 0);
	tc__auth_init_server(&s, &srv, TC_AUTH_ROLE_PEER, 0, "srv", 0);
	pump(&c, &s);
	assert_true(tc__auth_done(&c) && tc__auth_done(&s));
	tc__auth_init_client(&c, &new_only, TC_AUTH_ROLE_PEER, "new", 0);
	tc__auth_init_server(&s, &srv, TC_AUTH_ROLE_PEER, 0, "srv", 0);
	pump(&c, &s);
	assert_true(tc__auth_done(&c) && tc__auth_done(&s));
}

static void test_auth__role(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c, s;

	secret(&sec, K1, NULL);
	tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_PEER, "p", 0);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, TC_AUTH_ROLE_DAEMON,
			     "gs", 0);
	pump(&c, &s);
	assert_int_equal(s.error, TC_EPERM);
	assert_non_null(strstr(s.err, "only a daemon"));
}

/* The proof of one session is worthless in another (fresh nonces). */
static void test_auth__replay(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c, s, s2;
	uint8_t hello[TC_AUTH_HDR + TC_AUTH_MAX_BODY], proof[64];
	size_t hn, pn, n;
	const uint8_t *p;

	secret(&sec, K1, NULL);
	tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_DAEMON, "a", 0);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 0);
	hn = tc__auth_output(&c, &p);
	memcpy(hello, p, hn);
	tc__auth_feed(&s, p, hn);
	tc__auth_sent(&c, hn);
	n = tc__auth_output(&s, &p);
	tc__auth_feed(&c, p, n);
	tc__auth_sent(&s, n);
	pn = tc__auth_output(&c, &p);
	memcpy(proof, p, pn);
	tc__auth_feed(&s, p, pn);
	assert_true(tc__auth_done(&s) || s.state == TC_AUTH_S_DONE);

	/* An eavesdropper replays HELLO and PROOF to a new server. */
	tc__auth_init_server(&s2, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 0);
	assert_int_equal(tc__auth_feed(&s2, hello, hn), 0);
	assert_int_equal(tc__auth_feed(&s2, proof, pn), TC_EPERM);
}

/* A server that reflects the client's own HELLO back as a challenge. */
static void test_auth__reflection(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c;
	const uint8_t *p;
	uint8_t msg[TC_AUTH_HDR + TC_AUTH_MAX_BODY];
	size_t n;

	secret(&sec, K1, NULL);
	tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_PEER, "a", 0);
	n = tc__auth_output(&c, &p);
	memcpy(msg, p, n);
	tc__auth_sent(&c, n);
	msg[4] = TC_AUTH_CHALLENGE; /* HELLO reshaped as CHALLENGE: garbage */
	assert_true(tc__auth_feed(&c, msg, n) < 0);
	assert_int_equal(c.state, TC_AUTH_S_FAILED);
}

static void expect_garbage(const void *bytes, size_t n, int code,
			   const char *needle)
{
	struct tc__auth_secret sec;
	struct tc__auth s;
	const uint8_t *p = bytes;
	int ret = 0;

	secret(&sec, K1, NULL);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 0);
	/* one byte per call, as a slow network delivers it */
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = tc__auth_feed(&s, p + i, 1);
	assert_int_equal(ret, code);
	assert_int_equal(s.state, TC_AUTH_S_FAILED);
	if (!strstr(s.err, needle))
		fail_msg("'%s' lacks '%s'", s.err, needle);
}

static void test_auth__garbage(void **state)
{
	uint8_t hdr[TC_AUTH_HDR] = { 'T', 'C', 'A', '1', 1, 0, 0xff, 0xff };
	uint8_t h2[TC_AUTH_HDR + 4] = { 'T', 'C', 'A', '1', 3, 0, 4, 0 };
	uint8_t h3[TC_AUTH_HDR] = { 'T', 'C', 'A', '1', 9, 0, 0, 0 };

	expect_garbage("GET / HTTP/1.1\r\n\r\n", 18, TC_EPROTO,
		       "not a tcast cluster handshake");
	expect_garbage(hdr, sizeof(hdr), TC_ELIMIT, "at most");
	expect_garbage(h2, sizeof(h2), TC_EPROTO, "truncated");
	expect_garbage(h3, sizeof(h3), TC_EPROTO, "type");
}

static void test_auth__decode_limits(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth c;
	struct tc__auth_msg m;
	uint8_t msg[TC_AUTH_HDR + TC_AUTH_MAX_BODY];
	const uint8_t *p;
	char err[200];
	size_t n;

	secret(&sec, K1, NULL);
	tc__auth_init_client(&c, &sec, TC_AUTH_ROLE_PEER,
			     "a-very-long-name-that-goes-past-the-limit-of-"
			     "sixty-four-bytes-for-sure-yes",
			     0);
	n = tc__auth_output(&c, &p);
	memcpy(msg, p, n);
	assert_int_equal(tc__auth_decode(msg, n, &m, err, sizeof(err)), 0);
	assert_int_equal(strlen(m.name), TC_AUTH_MAX_NAME);
	/* every truncation is refused */
	for (size_t i = 0; i < n; i++)
		assert_true(tc__auth_decode(msg, i, &m, err, sizeof(err)) < 0);
	/* a version it does not speak */
	msg[TC_AUTH_HDR] = 2;
	assert_int_equal(tc__auth_decode(msg, n, &m, err, sizeof(err)),
			 TC_EVERSION);
	msg[TC_AUTH_HDR] = 1;
	/* a control byte in the name (it would reach the log) */
	msg[n - 1] = '\n';
	assert_int_equal(tc__auth_decode(msg, n, &m, err, sizeof(err)),
			 TC_EPROTO);
	assert_non_null(strstr(err, "printable"));
}

/* A silent peer is dropped at the deadline by the blocking driver. */
static void test_auth__stall(void **state)
{
	struct tc__auth_secret sec;
	struct tc__auth s;
	int sv[2];
	double t0;

	secret(&sec, K1, NULL);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 200);
	t0 = t_now_ms();
	assert_int_equal(tc__auth_run(&s, sv[0]), -ETIMEDOUT);
	assert_true(t_now_ms() - t0 >= 190 && t_now_ms() - t0 < 2000);
	assert_non_null(strstr(s.err, "deadline"));
	/* a half-sent HELLO stalls the same way */
	write(sv[1], "TCA1", 4);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 200);
	assert_int_equal(tc__auth_run(&s, sv[0]), -ETIMEDOUT);
	/* hang-up mid-handshake */
	close(sv[1]);
	tc__auth_init_server(&s, &sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 200);
	assert_int_equal(tc__auth_run(&s, sv[0]), TC_ECLOSED);
	close(sv[0]);
}

struct srv_arg {
	int fd;
	const struct tc__auth_secret *sec;
	int ret;
	char err[256];
};

/* The server side driven as an event loop would: non-blocking fd,
 * tc__auth_io until it stops asking to wait. */
static void *server_thread(void *p)
{
	struct srv_arg *a = p;
	struct tc__auth s;
	struct pollfd pfd = { .fd = a->fd };
	int ev, ret;

	fcntl(a->fd, F_SETFL, O_NONBLOCK);
	tc__auth_init_server(&s, a->sec, TC_AUTH_ROLE_GLOBAL, 0, "gs", 2000);
	while ((ret = tc__auth_io(&s, a->fd, &ev)) == -EAGAIN) {
		pfd.events = (short)((ev & TC_EV_READ ? POLLIN : 0) |
				     (ev & TC_EV_WRITE ? POLLOUT : 0));
		poll(&pfd, 1, 100);
	}
	a->ret = ret;
	snprintf(a->err, sizeof(a->err), "%s", s.err);
	if (ret < 0) { /* refused: hang up, as the servers do */
		close(a->fd);
		a->fd = -1;
	}
	tc__auth_wipe(&s);
	return NULL;
}

/* Over real TCP, then a byte after the handshake must still be unread. */
static void test_auth__tcp(void **state)
{
	struct tc__auth_secret sec, other;
	struct tc__auth c;
	struct srv_arg sa;
	pthread_t th;
	char bound[TC_TCP_ADDRSTR], err[256];
	int lfd, cfd;
	char x;

	secret(&sec, K1, NULL);
	secret(&other, K2, NULL);
	assert_int_equal(tc__tcp_listen("127.0.0.1:0", 16, &lfd, bound,
					sizeof(bound), err, sizeof(err)),
			 0);
	for (int round = 0; round < 2; round++) {
		const struct tc__auth_secret *mine = round ? &other : &sec;

		assert_int_equal(tc__tcp_connect(bound, 1000, &cfd, err,
						 sizeof(err)),
				 0);
		for (;;) { /* the listener is non-blocking */
			sa.fd = accept(lfd, NULL, NULL);
			if (sa.fd >= 0)
				break;
			usleep(1000);
		}
		sa.sec = &sec;
		pthread_create(&th, NULL, server_thread, &sa);
		tc__auth_init_client(&c, mine, TC_AUTH_ROLE_DAEMON, "n1", 2000);
		if (round == 0) {
			assert_int_equal(tc__auth_run(&c, cfd), 0);
			pthread_join(th, NULL);
			assert_int_equal(sa.ret, 0);
			write(cfd, "x", 1);
			assert_int_equal(read(sa.fd, &x, 1), 1);
			assert_int_equal(x, 'x');
		} else {
			/* wrong secret: the server refuses, the client
			 * learns only that the server hung up */
			assert_int_equal(tc__auth_run(&c, cfd), TC_ECLOSED);
			pthread_join(th, NULL);
			assert_int_equal(sa.ret, TC_EPERM);
			assert_non_null(strstr(sa.err, "another cluster"));
		}
		if (sa.fd >= 0)
			close(sa.fd);
		close(cfd);
	}
	close(lfd);
}

static void test_auth__addr(void **state)
{
	char host[64], err[200];
	uint16_t port;

	assert_int_equal(tc__tcp_split("10.0.0.1:7000", host, sizeof(host),
				       &port, 0, err, sizeof(err)),
			 0);
	assert_string_equal(host, "10.0.0.1");
	assert_int_equal(port, 7000);
	assert_int_equal(tc__tcp_split("[::1]:0", host, sizeof(host), &port, 1,
				       err, sizeof(err)),
			 0);
	assert_string_equal(host, "::1");
	assert_int_equal(tc__tcp_split("h:0", host, sizeof(host), &port, 0, err,
				       sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__tcp_split("h:70000", host, sizeof(host), &port, 0,
				       err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__tcp_split("::1:80", host, sizeof(host), &port, 0,
				       err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__tcp_split("nocolon", host, sizeof(host), &port, 0,
				       err, sizeof(err)),
			 TC_EINVAL);
	assert_int_equal(tc__tcp_split("h:-1", host, sizeof(host), &port, 0,
				       err, sizeof(err)),
			 TC_EINVAL);
}

static void write_file(const char *path, const char *s, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
	fchmod(fd, mode);
	close(fd);
}

static void test_auth__secret_file(void **state)
{
	struct tc__auth_secret s;
	char *dir = t_tmpdir(), path[512], link[512], err[300];

	snprintf(path, sizeof(path), "%s/secret", dir);
	write_file(path, "0123456789abcdef0123456789abcdef\n", 0600);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.len[0], 32);

	write_file(path, "0123456789abcdef0123456789abcdef\n", 0644);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)),
			 TC_EPERM);
	assert_non_null(strstr(err, "0644"));
	assert_non_null(strstr(err, "must be 0600"));

	write_file(path, "short\n", 0600);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)),
			 TC_EBADCONFIG);
	assert_non_null(strstr(err, "5 bytes"));

	write_file(path, "", 0600);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)),
			 TC_EBADCONFIG);

	write_file(path,
		   "0123456789abcdef0123456789abcdef\n\n"
		   "ffffffffffffffffffffffffffffffffff\r\n",
		   0400);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.len[1], 34);

	write_file(path,
		   "a0123456789abcdef0123456789abcdef\nb0123456789abcdef"
		   "0123456789abcdef\nc0123456789abcdef0123456789abcd\n",
		   0600);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)),
			 TC_EBADCONFIG);

	snprintf(link, sizeof(link), "%s/link", dir);
	symlink(path, link);
	assert_true(tc__auth_load_secret(link, &s, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "symlink"));
	assert_int_equal(tc__auth_load_secret(dir, &s, err, sizeof(err)),
			 TC_EBADCONFIG);
	snprintf(path, sizeof(path), "%s/none", dir);
	assert_int_equal(tc__auth_load_secret(path, &s, err, sizeof(err)),
			 -ENOENT);
	t_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth__ok),
		cmocka_unit_test(test_auth__wrong_secret),
		cmocka_unit_test(test_auth__bad_proof),
		cmocka_unit_test(test_auth__rotation),
		cmocka_unit_test(test_auth__role),
		cmocka_unit_test(test_auth__replay),
		cmocka_unit_test(test_auth__reflection),
		cmocka_unit_test(test_auth__garbage),
		cmocka_unit_test(test_auth__decode_limits),
		cmocka_unit_test(test_auth__stall),
		cmocka_unit_test(test_auth__tcp),
		cmocka_unit_test(test_auth__addr),
		cmocka_unit_test(test_auth__secret_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
