/*
 * tcp.c - the TCP transport (transport.h).
 *
 * Endpoints come from net/tcp.h (the cluster's one HOST:PORT parser,
 * listen and connect); on top, every peer socket gets SO_RCVTIMEO/
 * SO_SNDTIMEO so a silent peer ends a blocking call, and TCP_USER_TIMEOUT
 * of the same length so one that vanished without a FIN is noticed even
 * while data is unacknowledged (reference/cluster.md 5).
 * Buffer sizes are left to the kernel's autotuning.  Host replicas go out
 * with sendfile(2) from the sealed memfd: no copy in user space.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "net/ev.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "tcast/errors.h"
#include "transport.h"

static void set_timeouts(int fd, int io_timeout_ms)
{
	struct timeval tv = { io_timeout_ms / 1000,
			      (io_timeout_ms % 1000) * 1000 };
	unsigned int ut = (unsigned int)io_timeout_ms;

	tc__tcp_tune(fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

static int conn_new(int fd, const char *addr, struct tc__peer_conn **out)
{
	struct tc__peer_conn *c = tc__calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->t = &tc__peer_tcp;
	c->fd = fd;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	*out = c;
	return 0;
}

static int tcp_connect(const char *addr, int timeout_ms, int io_timeout_ms,
		       struct tc__peer_conn **out, char *err, size_t errlen)
{
	int fd, rc;

	*out = NULL;
	rc = tc__tcp_connect(addr, timeout_ms, &fd, err, errlen);
	if (rc < 0)
		return rc;
	set_timeouts(fd, io_timeout_ms);
	rc = conn_new(fd, addr, out);
	if (rc < 0)
		close(fd);
	return rc;
}

static int tcp_listen(const char *addr, struct tc__peer_listener **out,
		      char *err, size_t errlen)
{
	struct tc__peer_listener *l;
	int fd, rc;

	*out = NULL;
	l = tc__calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	rc = tc__tcp_listen(addr, 128, &fd, l->addr, sizeof(l->addr), err,
			    errlen);
	if (rc < 0) {
		tc__free(l);
		return rc;
	}
	l->t = &tc__peer_tcp;
	l->fd = fd;
	*out = l;
	return 0;
}

static int tcp_accept(struct tc__peer_listener *l, int io_timeout_ms,
		      struct tc__peer_conn **out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char name[TC_PEER_ADDR_MAX];
	int fd, rc;

	*out = NULL;
	fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	set_timeouts(fd, io_timeout_ms);
	tc__tcp_addr_str((struct sockaddr *)&ss, sl, name, sizeof(name));
	rc = conn_new(fd, name, out);
	if (rc < 0)
		close(fd);
	return rc;
}

static int io_err(ssize_t r)
{
	if (r == 0)
		return TC_ECLOSED;
	return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
}

/* A TLS result as the transport's codes: -EAGAIN is the socket timeout
 * (SO_RCVTIMEO/SO_SNDTIMEO) running out, 0 the peer's end. */
static int tls_err(ssize_t r)
{
	if (r == 0 || r == -EPIPE || r == -ECONNRESET)
		return TC_ECLOSED;
	return r == -EAGAIN ? -ETIMEDOUT : (int)r;
}

static int tcp_send(struct tc__peer_conn *c, const void *p, size_t n, bool more)
{
	const uint8_t *b = p;
	int ev;

	while (c->tls && n) {
		ssize_t r = tc__tls_send(c->tls, b, n, &ev);

		if (r == -EINTR)
			continue;
		if (r <= 0)
			return tls_err(r);
		b += r;
		n -= (size_t)r;
	}
	while (n) {
		ssize_t r =
			send(c->fd, b, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return io_err(r);
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

void tc__peer_deadline(struct tc__peer_conn *c, uint64_t ms)
{
	c->deadline_ns = ms ? tc__now_ns() + ms * 1000000u : 0;
}

bool tc__peer_deadline_passed(const struct tc__peer_conn *c)
{
	return c->deadline_ns && tc__now_ns() >= c->deadline_ns;
}

#define TC_TCP_LOWAT (256u << 10) /* a large read wakes per this much */

/* A large read (a chunk's bytes) on plain TCP: woken once per
 * TC_TCP_LOWAT bytes, not per segment.  With dozens of streams per pull
 * (a fan-out), wake-ups and context switches cost more CPU than the
 * copies.  SO_RCVLOWAT is set to what is wanted (at most TC_TCP_LOWAT),
 * poll() waits for that much -- nothing is taken before, so the wait
 * ends: the peer sends at least what is asked -- and recv() takes all
 * there is.  A wait that runs out the socket's timeout takes what came
 * and goes on; only no bytes at all is a timeout.  The mark goes back to
 * 1 after, for small frames. */
static int recv_bulk(struct tc__peer_conn *c, uint8_t *b, size_t n)
{
	struct timeval tv = { 0, 0 };
	socklen_t tl = sizeof(tv);
	int ms = -1, lowat = 1, rc = 0;

	if (getsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 &&
	    (tv.tv_sec || tv.tv_usec))
		ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
	while (n) {
		int want = (int)TC_MIN(n, TC_TCP_LOWAT), wait = ms;
		struct pollfd pfd = { c->fd, POLLIN, 0 };
		int pr;
		ssize_t r;

		if (c->deadline_ns) {
			uint64_t now = tc__now_ns();
			int left;

			if (now >= c->deadline_ns) {
				rc = -ETIMEDOUT;
				break;
			}
			left = (int)TC_MIN((c->deadline_ns - now) / 1000000 + 1,
					   (uint64_t)INT32_MAX);
			wait = ms < 0 ? left : TC_MIN(ms, left);
		}
		if (want != lowat && setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT,
						&want, sizeof(want)) == 0)
			lowat = want;
		pr = poll(&pfd, 1, wait);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			rc = -errno;
			break;
		}
		r = recv(c->fd, b, n, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (pr == 0) { /* no byte in the socket's timeout */
				rc = -ETIMEDOUT;
				break;
			}
			continue;
		}
		if (r <= 0) {
			rc = io_err(r);
			break;
		}
		b += r;
		n -= (size_t)r;
	}
	if (lowat != 1) {
		int one = 1;

		setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	}
	return rc;
}

static int tcp_recv(struct tc__peer_conn *c, void *p, size_t n)
{
	uint8_t *b = p;
	int ev;

	if (!c->tls && n >= TC_TCP_LOWAT)
		return recv_bulk(c, b, n);

	while (c->tls && n) {
		ssize_t r;

		if (tc__peer_deadline_passed(c))
			return -ETIMEDOUT;
		r = tc__tls_recv(c->tls, b, n, &ev);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			return tls_err(r);
		b += r;
		n -= (size_t)r;
	}
	while (n) {
		ssize_t r;

		if (tc__peer_deadline_passed(c))
			return -ETIMEDOUT;
		r = recv(c->fd, b, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return io_err(r);
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int tcp_send_file(struct tc__peer_conn *c, int fd, uint64_t off,
			 uint64_t n)
{
	off_t o = (off_t)off;

	if (c->tls)
		return tc__tls_send_file(c->tls, fd, off, n);
	while (n) {
		ssize_t r = sendfile(c->fd, fd, &o, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? -EIO : io_err(r);
		n -= (uint64_t)r;
	}
	return 0;
}

static void tcp_close(struct tc__peer_conn *c)
{
	if (!c)
		return;
	tc__tls_free(c->tls);
	close(c->fd);
	tc__free(c);
}

static void tcp_unlisten(struct tc__peer_listener *l)
{
	if (!l)
		return;
	close(l->fd);
	tc__free(l);
}

int tc__peer_secure(struct tc__peer_conn *c, struct tc__tls_ctx *ctx,
		    bool server, int timeout_ms, char *err, size_t errlen)
{
	char why[512];
	int rc;

	if (!ctx)
		return 0;
	rc = tc__tls_new(ctx, c->fd, server, &c->tls);
	if (rc < 0) {
		snprintf(err, errlen, "%s: TLS: out of memory", c->addr);
		return rc;
	}
	/* We dialled c->addr: the peer's certificate must name it. */
	if (!server) {
		rc = tc__tls_expect_peer(c->tls, c->addr, why, sizeof(why));
		if (rc < 0) {
			snprintf(err, errlen, "%s: %s", c->addr, why);
			tc__tls_free(c->tls);
			c->tls = NULL;
			return rc;
		}
	}
	rc = tc__tls_handshake_run(c->tls, tc__now_ms() + (uint64_t)timeout_ms,
				   why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", c->addr, why);
		tc__tls_free(c->tls);
		c->tls = NULL;
	}
	return rc;
}

const struct tc__peer_transport tc__peer_tcp = {
	.name = "tcp",
	.connect = tcp_connect,
	.listen = tcp_listen,
	.accept = tcp_accept,
	.send = tcp_send,
	.recv = tcp_recv,
	.send_file = tcp_send_file,
	.close = tcp_close,
	.unlisten = tcp_unlisten,
};
