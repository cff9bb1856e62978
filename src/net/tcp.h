/*
 * tcp.h - TCP endpoints for the cluster: HOST:PORT parsing, listen,
 * connect with a deadline, and the socket options every cluster
 * connection gets (TCP_NODELAY; keepalive and TCP_USER_TIMEOUT so that a
 * peer that vanished without a FIN is noticed in seconds, not the ~15
 * minutes of the kernel defaults).  Depends only on src/common.
 */
#ifndef TC_TCP_H
#define TC_TCP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define TC_TCP_ADDRSTR	    64	  /* "[v6]:port" with room */
#define TC_TCP_USER_TIMEOUT 10000 /* ms of unacked data before a reset */
#define TC_TCP_KEEPIDLE	    5	  /* s idle before the first probe */
#define TC_TCP_KEEPINTVL    2	  /* s between probes */
#define TC_TCP_KEEPCNT	    3	  /* probes before the connection dies */

/* Split "HOST:PORT" ("[v6]:PORT" for IPv6; HOST may be a name, resolved
 * with getaddrinfo) into host and port.  Port 0 is allowed only when
 * `allow_zero` (listen: pick one).  Returns 0 or TC_EINVAL with `err`. */
int tc__tcp_split(const char *hostport, char *host, size_t hostlen,
		  uint16_t *port, int allow_zero, char *err, size_t errlen);

/* Listen on HOST:PORT (non-blocking, close-on-exec, SO_REUSEADDR).
 * Returns 0 and the fd; the actual address (port 0 resolved) goes to
 * `bound` when it is not NULL.  Returns -errno or TC_EINVAL with `err`. */
int tc__tcp_listen(const char *hostport, int backlog, int *out_fd, char *bound,
		   size_t boundlen, char *err, size_t errlen);

/* Connect to HOST:PORT within `timeout_ms`; the socket comes back
 * blocking, close-on-exec and tuned (tc__tcp_tune).  Returns 0, TC_EINVAL,
 * -ETIMEDOUT or -errno (-ECONNREFUSED...) with `err`. */
int tc__tcp_connect(const char *hostport, int timeout_ms, int *out_fd,
		    char *err, size_t errlen);

/* TCP_NODELAY, keepalive (TC_TCP_KEEP*) and TCP_USER_TIMEOUT. */
void tc__tcp_tune(int fd);

/* "ip:port" of a socket's peer (or "?"). */
void tc__tcp_peer_str(int fd, char *buf, size_t len);
/* "ip:port" of an address. */
void tc__tcp_addr_str(const struct sockaddr *sa, socklen_t salen, char *buf,
		      size_t len);

#endif /* TC_TCP_H */
