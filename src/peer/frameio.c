/*
 * frameio.c - whole frames over a transport (frameio.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "common/alloc.h"
#include "common/io.h"
#include "frameio.h"
#include "tcast/errors.h"

static void io_msg(char *err, size_t errlen, const char *addr, int rc)
{
	snprintf(err, errlen, "%s: %s", addr,
		 rc == TC_ECLOSED ? "connection closed" :
		 rc == -ETIMEDOUT ? "timed out (no bytes)" :
				    strerror(-rc));
}

/* One frame; a body over max_len refused before it is read; body_ms > 0:
 * the body is read with that socket timeout and within that time in all
 * (the header may come after a long idle wait, its body must not). */
static int recv_frame(struct tc__peer_conn *c, struct tc__peer_msg *m,
		      uint32_t max_len, int body_ms, char *err, size_t errlen)
{
	uint8_t raw[TC_PEER_HDR_BYTES], small[TC_PEER_MAX_CTRL];
	struct tc__peer_hdr h;
	char why[256];
	uint8_t *body = small;
	int rc;

	tc__peer_msg_init(m);
	rc = c->t->recv(c, raw, sizeof(raw));
	if (rc < 0) {
		io_msg(err, errlen, c->addr, rc);
		return rc;
	}
	rc = tc__peer_hdr_decode(raw, &h, why, sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", c->addr, why);
		return rc;
	}
	if (h.len > max_len) {
		snprintf(err, errlen,
			 "%s: a frame of type %u and %u bytes where a request "
			 "(at most %u) was due",
			 c->addr, h.type, h.len, max_len);
		return TC_EPROTO;
	}
	if (h.len > sizeof(small)) {
		/* Only a MANIFEST may be this large (checked above). */
		body = tc__malloc(h.len);
		if (!body)
			return -ENOMEM;
	}
	if (body_ms > 0) {
		struct timeval tv = { body_ms / 1000, (body_ms % 1000) * 1000 };

		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		tc__peer_deadline(c, (uint64_t)body_ms);
	}
	rc = h.len ? c->t->recv(c, body, h.len) : 0;
	if (rc == -ETIMEDOUT && body_ms > 0)
		snprintf(err, errlen,
			 "%s: the %u-byte body of its request did not come "
			 "within %d ms",
			 c->addr, h.len, body_ms);
	else if (rc < 0)
		io_msg(err, errlen, c->addr, rc);
	if (body_ms > 0)
		tc__peer_deadline(c, 0);
	if (rc < 0)
		goto out_free;
	rc = tc__peer_msg_decode(&h, body, m, why, sizeof(why));
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", c->addr, why);
out_free:
	if (body != small)
		tc__free(body);
	return rc;
}

int tc__peer_recv_msg(struct tc__peer_conn *c, struct tc__peer_msg *m,
		      char *err, size_t errlen)
{
	return recv_frame(c, m, UINT32_MAX, 0, err, errlen);
}

int tc__peer_recv_request(struct tc__peer_conn *c, struct tc__peer_msg *m,
			  int io_ms, char *err, size_t errlen)
{
	return recv_frame(c, m, TC_PEER_MAX_CTRL, io_ms, err, errlen);
}

int tc__peer_auth_client(struct tc__peer_conn *c, struct tc__tls_ctx *tls,
			 const struct tc__auth_secret *secret, const char *name,
			 int timeout_ms, char *err, size_t errlen)
{
	struct tc__auth a;
	int rc;

	rc = tc__peer_secure(c, tls, false, timeout_ms, err, errlen);
	if (rc < 0)
		return rc;
	rc = tc__auth_init_client(&a, secret, TC_AUTH_ROLE_PEER,
				  name ? name : "", timeout_ms);
	if (rc == 0)
		rc = tc__auth_run_tls(&a, c->fd, c->tls);
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", c->addr, a.err);
	tc__auth_wipe(&a);
	return rc;
}

int tc__peer_send_buf(struct tc__peer_conn *c, const struct tc__buf *b,
		      bool more)
{
	if (b->oom)
		return -ENOMEM;
	return c->t->send(c, b->data, b->len, more);
}

uint8_t *tc__peer_buf_new(size_t n)
{
	uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (tc__populate(p, n, 1) == 0)
		return p;
	memset(p, 0, n);
	return p;
}

void tc__peer_buf_free(uint8_t *p, size_t n)
{
	if (p)
		munmap(p, n);
}
