/*
 * tcp.c - the TCP transport (transport.h).
 *
 * Sockets get TCP_NODELAY (requests are small and latency-bound),
 * SO_RCVTIMEO/SO_SNDTIMEO so a silent peer ends a blocking call, and
 * TCP_USER_TIMEOUT + keepalive so a peer that vanished without a FIN is
 * noticed even while data is unacknowledged (reference/cluster.md 5).
 * Buffer sizes are left to the kernel's autotuning.  Host replicas go out
 * with sendfile(2) from the sealed memfd: no copy in user space.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tcast/errors.h"
#include "transport.h"

int tc__peer_addr_split(const char *addr, char *host, size_t hostlen,
			char *port, size_t portlen)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t hl;

	if (!colon || !colon[1] || strlen(colon + 1) >= portlen)
		return TC_EINVAL;
	hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= hostlen)
		return TC_EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return TC_EINVAL;
	return 0;
}

static void name_of(const struct sockaddr *sa, socklen_t len, char *out,
		    size_t outlen)
{
	char h[NI_MAXHOST], p[NI_MAXSERV];

	if (getnameinfo(sa, len, h, sizeof(h), p, sizeof(p),
			NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(out, outlen, "?");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, outlen, "[%s]:%s", h, p);
	else
		snprintf(out, outlen, "%s:%s", h, p);
}

static void set_timeouts(int fd, int io_timeout_ms)
{
	struct timeval tv = { io_timeout_ms / 1000,
			      (io_timeout_ms % 1000) * 1000 };
	unsigned int ut = (unsigned int)io_timeout_ms;
	int one = 1, idle = 5, intvl = 2, cnt = 3;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
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
	char host[TC_PEER_ADDR_MAX], port[16];
	struct addrinfo hints = { 0 }, *ai = NULL, *a;
	int fd = -1, rc, gai;

	*out = NULL;
	if (tc__peer_addr_split(addr, host, sizeof(host), port, sizeof(port)) <
	    0) {
		snprintf(err, errlen, "'%s' is not HOST:PORT", addr);
		return TC_EINVAL;
	}
	hints.ai_socktype = SOCK_STREAM;
	gai = getaddrinfo(host, port, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "cannot resolve '%s': %s", addr,
			 gai_strerror(gai));
		return -EHOSTUNREACH;
	}
	rc = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		struct pollfd p;
		socklen_t sl = sizeof(int);
		int soerr = 0;

		fd = socket(a->ai_family,
			    a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    a->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 &&
		    errno != EINPROGRESS) {
			rc = -errno;
			goto next;
		}
		p.fd = fd;
		p.events = POLLOUT;
		if (poll(&p, 1, timeout_ms) <= 0) {
			rc = -ETIMEDOUT;
			goto next;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			rc = -soerr;
			goto next;
		}
		/* Blocking from here on: one thread per stream, with
		 * timeouts on every call. */
		fcntl(fd, F_SETFL, 0);
		set_timeouts(fd, io_timeout_ms);
		break;
next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to '%s': %s", addr,
			 strerror(-rc));
		return rc;
	}
	rc = conn_new(fd, addr, out);
	if (rc < 0)
		close(fd);
	return rc;
}

static int tcp_listen(const char *addr, struct tc__peer_listener **out,
		      char *err, size_t errlen)
{
	char host[TC_PEER_ADDR_MAX], port[16];
	struct addrinfo hints = { 0 }, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct tc__peer_listener *l;
	int fd, one = 1, gai, rc;

	*out = NULL;
	if (tc__peer_addr_split(addr, host, sizeof(host), port, sizeof(port)) <
	    0) {
		snprintf(err, errlen, "peer_listen '%s' is not HOST:PORT",
			 addr);
		return TC_EINVAL;
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "cannot resolve '%s': %s", addr,
			 gai_strerror(gai));
		return TC_EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out_free;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		rc = -errno;
		close(fd);
		goto out_free;
	}
	l = tc__calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		close(fd);
		goto out_free;
	}
	l->t = &tc__peer_tcp;
	l->fd = fd;
	name_of((struct sockaddr *)&ss, sl, l->addr, sizeof(l->addr));
	*out = l;
	rc = 0;
out_free:
	if (rc < 0)
		snprintf(err, errlen, "cannot listen on '%s': %s", addr,
			 strerror(-rc));
	freeaddrinfo(ai);
	return rc;
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
	name_of((struct sockaddr *)&ss, sl, name, sizeof(name));
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

static int tcp_send(struct tc__peer_conn *c, const void *p, size_t n, bool more)
{
	const uint8_t *b = p;

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

static int tcp_recv(struct tc__peer_conn *c, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = recv(c->fd, b, n, 0);

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
