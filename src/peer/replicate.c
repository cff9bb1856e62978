/*
 * replicate.c - asking another node's peer server for a replica (policy
 * ha): one connection, one REPLICATE_REQ, one answer (peer.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "frameio.h"
#include "peer.h"
#include "tcast/errors.h"

int tc__peer_replicate(const char *addr, const char *id, const char *source,
		       struct tc__tls_ctx *tls,
		       const struct tc__auth_secret *secret, const char *name,
		       int timeout_ms, int wait_ms, uint64_t *bytes,
		       uint64_t *ns, char *err, size_t errlen)
{
	struct tc__peer_conn *c = NULL;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	struct timeval wait = { wait_ms / 1000, (wait_ms % 1000) * 1000 };
	char why[512];
	int rc;

	*bytes = *ns = 0;
	rc = tc__peer_tcp.connect(addr, timeout_ms, timeout_ms, &c, why,
				  sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "cannot reach its peer server: %s", why);
		return rc;
	}
	rc = tc__peer_auth_client(c, tls, secret, name, timeout_ms, why,
				  sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "handshake with its peer server: %s",
			 why);
		goto out_close;
	}
	tc__peer_put_replicate_req(&b, id, source);
	rc = tc__peer_send_buf(c, &b, false);
	tc__buf_release(&b);
	if (rc < 0) {
		snprintf(err, errlen, "cannot send the request to %s: %s", addr,
			 rc == TC_ECLOSED ? "connection closed" :
					    strerror(-rc));
		goto out_close;
	}
	/* The peer answers once its pull ended, which takes as long as the
	 * artifact takes to move: wait for that, not for io timeouts.  And
	 * no longer in all: the socket's timeout bounds each wait for a
	 * byte, so a peer answering a byte at a time would hold this
	 * worker for ever without the deadline. */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
	tc__peer_deadline(c, (uint64_t)wait_ms);
	rc = tc__peer_recv_msg(c, &m, why, sizeof(why));
	if (rc == -ETIMEDOUT && tc__peer_deadline_passed(c)) {
		snprintf(err, errlen,
			 "no whole answer from its peer server at %s within "
			 "%d ms",
			 addr, wait_ms);
	} else if (rc < 0) {
		snprintf(err, errlen, "no answer from its peer server: %s",
			 why);
	} else if (m.type == TC_PEER_ERROR) {
		rc = m.code;
		snprintf(err, errlen, "%s", m.msg);
	} else if (m.type == TC_PEER_REPLICATED) {
		*bytes = m.bytes;
		*ns = m.ns;
	} else {
		rc = TC_EPROTO;
		snprintf(err, errlen,
			 "its peer server answered frame type %u, not "
			 "REPLICATED",
			 m.type);
	}
	tc__peer_msg_release(&m);
out_close:
	c->t->close(c);
	return rc;
}
