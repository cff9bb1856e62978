/*
 * transport.h - how peer bytes move: a small vtable, TCP first.
 *
 * The protocol layer (serve.c, pull.c) sees connections only through these
 * operations; a transport's private state stays in its own file.  Every
 * connection has a TCP socket (`fd`): TCP carries everything on it, and a
 * later RDMA transport (rdma-core verbs or UCX) uses it to authenticate
 * and exchange memory keys before moving chunks by one-sided reads
 * (docs/peer.md says how, and what it should reach).
 */
#ifndef TC_PEER_TRANSPORT_H
#define TC_PEER_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TC_PEER_ADDR_MAX 128 /* "host:port" text */

struct tc__peer_transport;
struct tc__tls;
struct tc__tls_ctx;

/* One connection.  Transports embed it first in their own struct. */
struct tc__peer_conn {
	const struct tc__peer_transport *t;
	int fd;			     /* the TCP socket, owned */
	char addr[TC_PEER_ADDR_MAX]; /* the other side, for messages */
	struct tc__tls *tls; /* owned; set by tc__peer_secure: every byte
				then goes through TLS (net/tls.h) */
	/* 0, or tc__now_ns() past which recv fails with -ETIMEDOUT: a bound
	 * on a whole transfer, where the socket's timeout bounds only each
	 * wait for a byte (a sender trickling a byte at a time defeats
	 * that alone).  Checked between reads, so it may be overrun by one
	 * socket timeout at most. */
	uint64_t deadline_ns;
};

/* Arm c's deadline ms from now (0: disarm), and whether it has passed:
 * a recv that failed with -ETIMEDOUT after it was the deadline's doing,
 * not a silent socket. */
void tc__peer_deadline(struct tc__peer_conn *c, uint64_t ms);
bool tc__peer_deadline_passed(const struct tc__peer_conn *c);

struct tc__peer_listener {
	const struct tc__peer_transport *t;
	int fd;			     /* owned */
	char addr[TC_PEER_ADDR_MAX]; /* bound address, port resolved */
};

struct tc__peer_transport {
	const char *name;
	/* Connect to "host:port" within timeout_ms; set I/O timeouts of
	 * io_timeout_ms.  Returns 0 or -errno with err set. */
	int (*connect)(const char *addr, int timeout_ms, int io_timeout_ms,
		       struct tc__peer_conn **out, char *err, size_t errlen);
	/* Listen on "host:port" (port 0 picks one). */
	int (*listen)(const char *addr, struct tc__peer_listener **out,
		      char *err, size_t errlen);
	/* Accept one connection (the listener is readable). */
	int (*accept)(struct tc__peer_listener *l, int io_timeout_ms,
		      struct tc__peer_conn **out);
	/* Send or receive exactly n bytes: 0, TC_ECLOSED, -ETIMEDOUT or
	 * -errno.  `more`: further bytes follow at once (a header before
	 * its payload), so do not push a packet yet. */
	int (*send)(struct tc__peer_conn *c, const void *p, size_t n,
		    bool more);
	int (*recv)(struct tc__peer_conn *c, void *p, size_t n);
	/* Send n bytes of file `fd` from `off` with no user-space copy. */
	int (*send_file)(struct tc__peer_conn *c, int fd, uint64_t off,
			 uint64_t n);
	void (*close)(struct tc__peer_conn *c);
	void (*unlisten)(struct tc__peer_listener *l);
};

extern const struct tc__peer_transport tc__peer_tcp;

/* Put TLS on a fresh TCP connection (`server`: the accepting side): the
 * handshake within `timeout_ms`, both certificates verified against the
 * cluster CA.  After it, send/recv go through TLS and send_file writes
 * from a mapping of the file (or sendfile through kernel TLS where the
 * kernel and OpenSSL offer it).  `ctx` NULL: a no-op.  Returns 0 or the
 * code of tc__tls_handshake_run with `err`. */
int tc__peer_secure(struct tc__peer_conn *c, struct tc__tls_ctx *ctx,
		    bool server, int timeout_ms, char *err, size_t errlen);

#endif /* TC_PEER_TRANSPORT_H */
