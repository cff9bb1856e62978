/*
 * test_peer_server.c - the peer server (src/peer/serve.c) against a peer
 * that passed the cluster handshake and then misbehaves, over real TCP on
 * loopback: a frame too large to be a request is refused before its body
 * is read (no 64 MiB allocation, no waiting for it), and a request whose
 * body trickles in a byte at a time, each byte inside the socket timeout,
 * is dropped once io_timeout_ms have gone by in all.  The server answers
 * the next connection as before.  And connections that never start the
 * handshake, from one address, fill the handshake pool: another of theirs
 * is refused, while a peer from another address takes the place of their
 * oldest and is served.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/buf.h"
#include "common/log.h"
#include "net/auth.h"
#include "peer/frameio.h"
#include "peer/peer.h"
#include "peer/transport.h"
#include "peer/wire.h"
#include "tcast/errors.h"

#define IO_MS 1000

static struct tc__auth_secret sec;
static struct tc__peer_server *srv;

static int setup(void **state)
{
	static const char key[] = "0123456789abcdef0123456789abcdef";
	struct tc__peer_server_opts o = { 0 };
	char err[512];

	assert_int_equal(tc__auth_secret_set(&sec, 0, key, 32), 0);
	o.listen = "127.0.0.1:0";
	o.secret = &sec;
	o.name = "test-server";
	o.io_timeout_ms = IO_MS;
	assert_int_equal(tc__peer_server_start(&o, &srv, err, sizeof(err)), 0);
	return 0;
}

static int teardown(void **state)
{
	tc__peer_server_stop(srv);
	return 0;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* A connection to server x that passed the handshake. */
static struct tc__peer_conn *peer_of(struct tc__peer_server *x)
{
	struct tc__peer_conn *c = NULL;
	char err[512];

	assert_int_equal(tc__peer_tcp.connect(tc__peer_server_addr(x), 2000,
					      2000, &c, err, sizeof(err)),
			 0);
	assert_int_equal(tc__peer_auth_client(c, NULL, &sec, "test-client",
					      2000, err, sizeof(err)),
			 0);
	return c;
}

/* A frame header: magic, version, type, flags, body length. */
static void header(uint8_t raw[TC_PEER_HDR_BYTES], uint8_t type, uint32_t len)
{
	struct tc__buf b = TC_BUF_INIT;

	tc__buf_put_u32(&b, TC_PEER_MAGIC);
	tc__buf_put_u8(&b, TC_PEER_VERSION);
	tc__buf_put_u8(&b, type);
	tc__buf_put_u16(&b, 0);
	tc__buf_put_u32(&b, len);
	assert_int_equal(b.len, TC_PEER_HDR_BYTES);
	memcpy(raw, b.data, TC_PEER_HDR_BYTES);
	tc__buf_release(&b);
}

/* Seconds until the server closes c (waiting at most `max`); -1 if it
 * did not. */
static double closed_after(struct tc__peer_conn *c, double t0, double max)
{
	struct timeval tv = { 0, 100 * 1000 };
	char byte;

	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (now_s() - t0 < max) {
		ssize_t r = recv(c->fd, &byte, 1, 0);

		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return now_s() - t0;
	}
	return -1;
}

static struct tc__peer_conn *peer(void)
{
	return peer_of(srv);
}

/* Server x still answers: a MANIFEST_REQ for a key nobody has gets an
 * ERROR frame. */
static void still_serves(struct tc__peer_server *x)
{
	struct tc__peer_conn *c = peer_of(x);
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	char err[512];

	tc__peer_put_manifest_req(&b, "no-such-key");
	assert_int_equal(tc__peer_send_buf(c, &b, false), 0);
	assert_int_equal(tc__peer_recv_msg(c, &m, err, sizeof(err)), 0);
	assert_int_equal(m.type, TC_PEER_ERROR);
	tc__peer_msg_release(&m);
	tc__buf_release(&b);
	c->t->close(c);
}

/* A MANIFEST-typed frame of 64 MiB sent to the server: closed at once,
 * before a byte of the body (the server would have allocated it and
 * waited up to its idle timeout, 5 minutes, for it). */
static void test_peer_server__large_frame_refused_at_its_header(void **state)
{
	struct tc__peer_conn *c = peer();
	uint8_t raw[TC_PEER_HDR_BYTES];
	double t0, s;

	header(raw, TC_PEER_MANIFEST, TC_PEER_MAX_MANIFEST);
	t0 = now_s();
	assert_int_equal(c->t->send(c, raw, sizeof(raw), false), 0);
	s = closed_after(c, t0, 5);
	print_message("64 MiB MANIFEST frame: closed after %.3f s\n", s);
	assert_true(s >= 0 && s < IO_MS / 1000.0);
	c->t->close(c);
	still_serves(srv);
}

/* A MANIFEST_REQ announcing 100 bytes, sent a byte every 300 ms (each
 * well inside the 1 s socket timeout): dropped at about io_timeout_ms
 * from the header, not after 30 s of trickle. */
static void test_peer_server__trickled_request_dropped(void **state)
{
	struct tc__peer_conn *c = peer();
	uint8_t raw[TC_PEER_HDR_BYTES], byte = 'k';
	double t0, s = -1;

	header(raw, TC_PEER_MANIFEST_REQ, 100);
	t0 = now_s();
	assert_int_equal(c->t->send(c, raw, sizeof(raw), false), 0);
	for (int i = 0; i < 100 && s < 0; i++) {
		if (c->t->send(c, &byte, 1, false) < 0)
			break;
		s = closed_after(c, now_s(), 0.3);
		if (s >= 0)
			s = now_s() - t0;
	}
	if (s < 0)
		s = closed_after(c, now_s(), 1);
	print_message("request trickled a byte per 300 ms: closed after %.3f "
		      "s\n",
		      s);
	assert_true(s >= 0.8 * IO_MS / 1000.0 && s < 3 * IO_MS / 1000.0);
	c->t->close(c);
	still_serves(srv);
}

/* A TCP connection to addr ("127.0.0.1:port") from source address src,
 * that sends nothing. */
static int silent_from(const char *src, const char *addr)
{
	struct sockaddr_in me = { .sin_family = AF_INET };
	struct sockaddr_in to = { .sin_family = AF_INET };
	const char *port = strrchr(addr, ':');
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0 && port);
	assert_int_equal(inet_pton(AF_INET, src, &me.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0);
	to.sin_port = htons((uint16_t)atoi(port + 1));
	assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &to.sin_addr), 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0);
	return fd;
}

/* Whether the server closed fd within `max` seconds. */
static bool fd_closed(int fd, double max)
{
	struct tc__peer_conn c = { .fd = fd };

	return closed_after(&c, now_s(), max) >= 0;
}

/* A server whose handshake pool holds 4 (max_conns 4) and whose io timeout
 * (5 s) outlasts the test's steps: four silent connections from 127.0.0.2
 * fill the pool; a fifth from there is refused at once; a peer from
 * 127.0.0.1 then gets in and is served, and exactly one of the four (the
 * oldest) was dropped to make room. */
static void test_peer_server__handshake_pool_fair_by_address(void **state)
{
	struct tc__peer_server_opts o = { 0 };
	struct tc__peer_server *small;
	int fd[5], dropped = 0;
	char err[512];

	o.listen = "127.0.0.1:0";
	o.secret = &sec;
	o.name = "small-server";
	o.io_timeout_ms = 5000;
	o.max_conns = 4;
	assert_int_equal(tc__peer_server_start(&o, &small, err, sizeof(err)),
			 0);
	for (int i = 0; i < 4; i++) {
		fd[i] = silent_from("127.0.0.2", tc__peer_server_addr(small));
		usleep(50 * 1000); /* accepted in this order: oldest first */
	}
	usleep(200 * 1000);
	fd[4] = silent_from("127.0.0.2", tc__peer_server_addr(small));
	assert_true(fd_closed(fd[4], 1.0));
	still_serves(small);
	assert_true(fd_closed(fd[0], 1.0));
	for (int i = 1; i < 4; i++)
		dropped += fd_closed(fd[i], 0.2);
	assert_int_equal(dropped, 0);
	for (int i = 0; i < 5; i++)
		close(fd[i]);
	tc__peer_server_stop(small);
}

/* 40 clients that send an HTTP request instead of the handshake, as
 * fast as they can: each is refused, but the log gets at most
 * TC_PEER_AUTH_BURST (10) such lines a second, not 40. */
static void test_peer_server__refusals_logged_at_a_bounded_rate(void **state)
{
	FILE *f = tmpfile();
	char line[1024];
	int n = 0;

	assert_non_null(f);
	tc__log_set_file(f);
	for (int i = 0; i < 40; i++) {
		int fd = silent_from("127.0.0.1", tc__peer_server_addr(srv));
		static const char http[] = "GET / HTTP/1.0\r\n\r\n";

		assert_int_equal(send(fd, http, sizeof(http) - 1, 0),
				 (ssize_t)sizeof(http) - 1);
		assert_true(fd_closed(fd, 2.0));
		close(fd);
	}
	usleep(100 * 1000);
	tc__log_set_file(NULL);
	rewind(f);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, "refused: not a tcast cluster handshake") !=
		     NULL;
	fclose(f);
	print_message("40 refused clients: %d log lines\n", n);
	assert_true(n >= 1 && n <= 20);
	still_serves(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_peer_server__large_frame_refused_at_its_header),
		cmocka_unit_test(test_peer_server__trickled_request_dropped),
		cmocka_unit_test(
			test_peer_server__handshake_pool_fair_by_address),
		cmocka_unit_test(
			test_peer_server__refusals_logged_at_a_bounded_rate),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
