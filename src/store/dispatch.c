/*
 * dispatch.c - frames to handlers: decode each complete frame of a
 * connection's input, claim its fds, check it against the msgs.def table
 * (authenticated, fds allowed) and call its handler.
 *
 * Loop thread only.  A stream socket delivers a frame's fds with its
 * first byte, so when every complete frame is handled and no partial
 * frame is buffered, fds left in the queue were sent with no frame to
 * claim them: a protocol error.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "server_internal.h"

#define MSG_NOAUTH  0x1
#define MSG_FDS_IN  0x2
#define MSG_FDS_OUT 0x4
#define MSG_NOREPLY 0x8

#define SLOW_HANDLER_NS (5 * 1000000ull)

typedef int handler_fn(struct conn *c, struct req *r);

static const struct {
	handler_fn *fn;
	int flags;
} handlers[TC_MSG__MAX] = {
#define MSG(name, id, handler, flags) [id] = { handler, flags },
#include "proto/msgs.def"
#undef MSG
};

/*
 * Handle one complete frame.  A handler returns 0 when it has replied, will
 * reply when its job is done, or owes no reply (MSG_NOREPLY); or a negative
 * code, which is sent back as the reply.  dispatch returns 0 to go on, or a
 * negative code after which the connection is closed (protocol error).
 */
int tc__srv_dispatch(struct conn *c, struct req *r)
{
	int rc, fl = handlers[r->h.type].flags;

	c->err[0] = '\0';
	if (r->h.flags & TC_PF_REPLY) {
		snprintf(c->err, sizeof(c->err), "client sent a reply frame");
		rc = TC_EPROTO;
	} else if (!c->hello && !(fl & MSG_NOAUTH)) {
		snprintf(c->err, sizeof(c->err), "%s before HELLO",
			 tc__proto_name(r->h.type));
		rc = TC_EPROTO;
	} else if (r->nfds && !(fl & MSG_FDS_IN)) {
		snprintf(c->err, sizeof(c->err), "%s carries unexpected fds",
			 tc__proto_name(r->h.type));
		rc = TC_EPROTO;
	} else {
		uint64_t t0 = tc__now_ns(), ns;

		rc = handlers[r->h.type].fn(c, r);
		/* A handler runs on the loop: whatever it takes, every other
		 * connection waits that long.  Say so where it shows. */
		ns = tc__now_ns() - t0;
		if (ns > SLOW_HANDLER_NS)
			tc__log(TC_LOG_DEBUG,
				"%s from pid %d held the loop %.1f ms",
				tc__proto_name(r->h.type), (int)c->pid,
				(double)ns / 1e6);
		if (rc >= 0)
			return 0;
	}
	if (!(fl & MSG_NOREPLY))
		tc__srv_reply_error(c, r, rc);
	/* A malformed frame means we no longer trust the stream. */
	return rc == TC_EPROTO || rc == TC_EVERSION ? rc : 0;
}

/*
 * A header that cannot be decoded (bad magic, version, type, flags or
 * length): say why in an error reply, then close, as docs/protocol.md
 * promises.  The reply echoes the header's type and req_id when the magic
 * says they are ours to read; else it is a HELLO reply with req_id 0 (a
 * connection-level error, see docs/protocol.md).
 */
static void header_error(struct conn *c, const uint8_t *in, int rc,
			 const char *why)
{
	uint32_t magic = (uint32_t)in[0] | (uint32_t)in[1] << 8 |
			 (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
	uint16_t type = (uint16_t)(in[6] | in[7] << 8);
	uint32_t req = 0;
	size_t off;

	if (magic == TC_PROTO_MAGIC) {
		req = (uint32_t)in[12] | (uint32_t)in[13] << 8 |
		      (uint32_t)in[14] << 16 | (uint32_t)in[15] << 24;
		if (type == 0 || type >= TC_MSG__MAX || !handlers[type].fn)
			type = TC_MSG_HELLO;
	} else {
		type = TC_MSG_HELLO;
	}
	off = tc__frame_begin(&c->out, type, TC_PF_REPLY, req, 0);
	tc__buf_put_i32(&c->out, rc);
	tc__buf_put_str(&c->out, why);
	tc__frame_finish(&c->out, off);
	tc__srv_conn_flush(c);
	tc__srv_conn_close(c, why);
}

/* Parse and dispatch every complete frame in the input buffer. */
void tc__srv_conn_process(struct conn *c)
{
	int budget = FRAMES_PER_TURN;
	size_t body_bytes = 0; /* decoding a big table costs per byte */
	char err[256];

	c->backlog = false;
	while (!c->closing && !c->paused) {
		size_t avail = c->in_len - c->in_off;
		struct req r;
		int rc;

		if (avail < TC_FRAME_HDR)
			break;
		rc = tc__frame_decode(c->in + c->in_off, &r.h, err,
				      sizeof(err));
		if (rc < 0) {
			c->srv->n_proto_err++;
			header_error(c, c->in + c->in_off, rc, err);
			return;
		}
		if (avail < TC_FRAME_HDR + (size_t)r.h.body_len)
			break;
		/* Before the request runs: this turn's share is spent, or
		 * the client has not read what it was sent.  Go on in a
		 * later turn (before_sleep), or once the queue drains. */
		if (budget == 0 || body_bytes >= BODY_BYTES_PER_TURN ||
		    c->out.len - c->out_off > OUT_PAUSE_BYTES ||
		    c->nofds >= OUT_PAUSE_FDS) {
			c->backlog = true;
			break;
		}
		budget--;
		body_bytes += r.h.body_len;
		if (r.h.nfds > c->nfdq) {
			c->srv->n_proto_err++;
			tc__srv_conn_close(
				c, "frame declares fds that did not arrive");
			return;
		}
		r.nfds = r.h.nfds;
		memcpy(r.fds, c->fdq, sizeof(int) * (size_t)r.nfds);
		c->nfdq -= r.nfds;
		memmove(c->fdq, c->fdq + r.nfds, sizeof(int) * (size_t)c->nfdq);
		tc__cur_init(&r.body, c->in + c->in_off + TC_FRAME_HDR,
			     r.h.body_len);
		c->in_off += TC_FRAME_HDR + r.h.body_len;
		r.t0_ns = tc__now_ns();
		r.origin = TC_ORIGIN_HELD;
		rc = tc__srv_dispatch(c, &r);
		for (int i = 0; i < r.nfds; i++)
			if (r.fds[i] >= 0)
				close(r.fds[i]);
		if (rc < 0) {
			/* Say why before hanging up, if the socket takes it. */
			c->srv->n_proto_err++;
			tc__srv_conn_flush(c);
			tc__srv_conn_close(c, c->err[0] ? c->err :
							  tc_strerror(rc));
			return;
		}
	}
	if (c->in_off == c->in_len) {
		c->in_off = c->in_len = 0;
		if (c->nfdq && !c->paused) {
			c->srv->n_proto_err++;
			tc__srv_conn_flush(c);
			tc__srv_conn_close(
				c, "fds sent with no frame to claim them");
			return;
		}
	}
	tc__srv_conn_flush(c);
}
