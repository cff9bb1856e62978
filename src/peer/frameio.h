/*
 * frameio.h - reading and writing whole peer frames on a connection.
 */
#ifndef TC_PEER_FRAMEIO_H
#define TC_PEER_FRAMEIO_H

#include "common/buf.h"
#include "net/auth.h"
#include "transport.h"
#include "wire.h"

/* Receive one frame and decode it into `m` (tc__peer_msg_release after,
 * whatever the result).  Returns 0 or a negative code with err set. */
int tc__peer_recv_msg(struct tc__peer_conn *c, struct tc__peer_msg *m,
		      char *err, size_t errlen);
/* The server's: a request, whose header may follow a long idle wait (the
 * socket's timeout as set) but whose body is at most TC_PEER_MAX_CTRL
 * bytes, read within io_ms.  A larger frame (a MANIFEST, say) is refused
 * with TC_EPROTO before a byte of its body is read or allocated.  Once a
 * header came, the socket's receive timeout is left at io_ms. */
int tc__peer_recv_request(struct tc__peer_conn *c, struct tc__peer_msg *m,
			  int io_ms, char *err, size_t errlen);
/* The client side of a fresh connection: TLS first when `tls` is set
 * (tc__peer_secure), then the cluster handshake (inside it).  Returns 0
 * or the code of net/tls.h or net/auth.h with `err` naming the peer. */
int tc__peer_auth_client(struct tc__peer_conn *c, struct tc__tls_ctx *tls,
			 const struct tc__auth_secret *secret, const char *name,
			 int timeout_ms, char *err, size_t errlen);
/* Send a built buffer (b->oom gives -ENOMEM). */
int tc__peer_send_buf(struct tc__peer_conn *c, const struct tc__buf *b,
		      bool more);
/* A buffer of n bytes (TC_PEER_PIECE for a stream's pieces) faulted in at
 * once: one page fault each of its pages would cost milliseconds in a VM,
 * and a pull of a fan-out has one for each of its dozens of streams.
 * NULL when out of memory.  Free with tc__peer_buf_free. */
#define TC_PEER_PIECE (1u << 20) /* bytes per recv or pread of a chunk */
uint8_t *tc__peer_buf_new(size_t n);
void tc__peer_buf_free(uint8_t *p, size_t n);

#endif /* TC_PEER_FRAMEIO_H */
