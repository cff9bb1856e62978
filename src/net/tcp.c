/*
 * tcp.c - TCP endpoints for the cluster (tcp.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "ev.h"
#include "tcp.h"
#include "tcast/errors.h"

int tc__tcp_split(const char *hostport, char *host, size_t hostlen,
		  uint16_t *port, int allow_zero, char *err, size_t errlen)
{
	const char *colon, *h = hostport, *hend;
	char *end;
	unsigned long p;

	if (!hostport || !*hostport) {
		snprintf(err, errlen, "empty address: expected HOST:PORT");
		return TC_EINVAL;
	}
	if (*h == '[') {
		hend = strchr(h, ']');
		if (!hend || hend[1] != ':') {
			snprintf(err, errlen,
				 "bad address '%s': expected [IPv6]:PORT",
				 hostport);
			return TC_EINVAL;
		}
		h++;
		colon = hend + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon || memchr(h, ':', (size_t)(colon - h))) {
			snprintf(err, errlen,
				 "bad address '%s': expected HOST:PORT "
				 "([IPv6]:PORT)",
				 hostport);
			return TC_EINVAL;
		}
		hend = colon;
	}
	if ((size_t)(hend - h) >= hostlen) {
		snprintf(err, errlen, "host name too long in '%s'", hostport);
		return TC_EINVAL;
	}
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || p > 65535 ||
	    (p == 0 && !allow_zero) || colon[1] == '-' || colon[1] == '+') {
		snprintf(err, errlen, "bad port in '%s': expected 1..65535%s",
			 hostport, allow_zero ? " or 0 (any)" : "");
		return TC_EINVAL;
	}
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int resolve(const char *hostport, int passive, struct addrinfo **res,
		   char *err, size_t errlen)
{
	struct addrinfo hints = { 0 };
	char host[256], port[8];
	uint16_t p;
	int ret;

	ret = tc__tcp_split(hostport, host, sizeof(host), &p, passive, err,
			    errlen);
	if (ret < 0)
		return ret;
	snprintf(port, sizeof(port), "%u", p);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	ret = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
	if (ret) {
		snprintf(err, errlen, "cannot resolve '%s': %s", hostport,
			 gai_strerror(ret));
		return TC_EINVAL;
	}
	return 0;
}

void tc__tcp_addr_str(const struct sockaddr *sa, socklen_t salen, char *buf,
		      size_t len)
{
	char h[INET6_ADDRSTRLEN], s[8];

	if (getnameinfo(sa, salen, h, sizeof(h), s, sizeof(s),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, len, "?");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(buf, len, "[%s]:%s", h, s);
	else
		snprintf(buf, len, "%s:%s", h, s);
}

void tc__tcp_peer_str(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(buf, len, "?");
		return;
	}
	tc__tcp_addr_str((struct sockaddr *)&ss, sl, buf, len);
}

void tc__tcp_tune(int fd)
{
	int one = 1, v;
	unsigned int ut = TC_TCP_USER_TIMEOUT;

	/* Best effort: a socket without them still works, only slower to
	 * notice a dead peer. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	v = TC_TCP_KEEPIDLE;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
	v = TC_TCP_KEEPINTVL;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	v = TC_TCP_KEEPCNT;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

int tc__tcp_listen(const char *hostport, int backlog, int *out_fd, char *bound,
		   size_t boundlen, char *err, size_t errlen)
{
	struct addrinfo *res, *ai;
	int fd = -1, one = 1, ret, e = 0;

	*out_fd = -1;
	ret = resolve(hostport, 1, &res, err, errlen);
	if (ret < 0)
		return ret;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family,
			    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
				 sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, backlog) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on '%s': %s", hostport,
			 strerror(e));
		return -e;
	}
	if (bound) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			tc__tcp_addr_str((struct sockaddr *)&ss, sl, bound,
					 boundlen);
		else
			snprintf(bound, boundlen, "%s", hostport);
	}
	*out_fd = fd;
	return 0;
}

/* One connect attempt on a non-blocking socket, bounded by deadline. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline,
		       int *out_fd)
{
	struct pollfd pfd;
	socklen_t sl = sizeof(int);
	int fd, e = 0, r;

	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			e = errno;
			goto out_close;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		for (;;) {
			uint64_t now = tc__now_ms();

			if (now >= deadline) {
				e = ETIMEDOUT;
				goto out_close;
			}
			r = poll(&pfd, 1, (int)(deadline - now));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				e = errno;
				goto out_close;
			}
			if (r > 0)
				break;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
			e = errno;
		if (e)
			goto out_close;
	}
	r = fcntl(fd, F_GETFL);
	if (r < 0 || fcntl(fd, F_SETFL, r & ~O_NONBLOCK) < 0) {
		e = errno;
		goto out_close;
	}
	tc__tcp_tune(fd);
	*out_fd = fd;
	return 0;
out_close:
	close(fd);
	return -e;
}

int tc__tcp_connect(const char *hostport, int timeout_ms, int *out_fd,
		    char *err, size_t errlen)
{
	struct addrinfo *res, *ai;
	uint64_t deadline = tc__now_ms() + (uint64_t)timeout_ms;
	int ret = -ECONNREFUSED;

	*out_fd = -1;
	ret = resolve(hostport, 0, &res, err, errlen);
	if (ret < 0)
		return ret;
	ret = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		ret = connect_one(ai, deadline, out_fd);
		if (ret == 0 || ret == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	if (ret < 0)
		snprintf(err, errlen, "cannot connect to '%s': %s", hostport,
			 strerror(-ret));
	return ret;
}
