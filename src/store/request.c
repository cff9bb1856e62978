/*
 * request.c - what every request handler uses: reply frames (status,
 * JSON, fds, errors), string and body checks, and the deferred reply of a
 * request answered after a job (tc__srv_defer / tc__srv_finish).
 *
 * Loop thread only.  Knows connections only through their output buffer,
 * their error message and their pause state; reading and sending bytes
 * belongs to conn.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/names.h"
#include "metrics.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "server_internal.h"

/* ------------------------------------------------------------ replies */

/* Begin a reply frame with status 0; returns the header offset. */
size_t tc__srv_reply_begin(struct conn *c, const struct req *r)
{
	size_t off = tc__frame_begin(&c->out, r->h.type, TC_PF_REPLY,
				     r->h.req_id, 0);

	if (r->t0_ns)
		tc__metrics_request(r->h.type, tc__now_ns() - r->t0_ns);
	tc__buf_put_i32(&c->out, 0);
	return off;
}

void tc__srv_reply_end(struct conn *c, size_t off)
{
	tc__frame_finish(&c->out, off);
	if (c->out.oom)
		tc__srv_conn_close(c, "out of memory building a reply");
}

/*
 * Attach fds to the reply frame that starts at `off`.  The queue owns what
 * it sends: a borrowed fd (owned false) is duplicated here, because the
 * object it belongs to may be freed, and its number reused for another
 * client's file, by a later frame of this same connection (RELEASE+RM,
 * ABORT, UNBIND) before this reply leaves.  `owned` fds are taken as they
 * are.  Every queued fd is closed after its frame is sent or when the
 * connection ends; on failure nothing is taken.
 */
int tc__srv_reply_fds(struct conn *c, size_t off, const int *fds, int n,
		      bool owned)
{
	int mine[TC_PROTO_MAX_FDS];
	struct out_fds *o;

	if (n < 0 || n > TC_PROTO_MAX_FDS)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		mine[i] = owned ? fds[i] : fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
		if (mine[i] < 0) {
			int e = errno;

			while (i-- > 0)
				close(mine[i]);
			return -e;
		}
	}
	if (c->nofds == c->cap_ofds) {
		int cap = c->cap_ofds ? c->cap_ofds * 2 : 4;
		struct out_fds *p =
			tc__reallocarray(c->ofds, (size_t)cap, sizeof(*p));

		if (!p) {
			if (!owned)
				for (int i = 0; i < n; i++)
					close(mine[i]);
			return -ENOMEM;
		}
		c->ofds = p;
		c->cap_ofds = cap;
	}
	o = &c->ofds[c->nofds++];
	o->at = off;
	memcpy(o->fds, mine, (size_t)n * sizeof(int));
	o->n = n;
	/* Patch nfds in the already written header. */
	c->out.data[off + 20] = (uint8_t)n;
	return 0;
}

void tc__srv_reply_error(struct conn *c, const struct req *r, int rc)
{
	size_t off;

	if (!c->err[0])
		snprintf(c->err, sizeof(c->err), "%s", tc_strerror(rc));
	tc__log(TC_LOG_DEBUG, "%s from pid %d failed: %s: %s",
		tc__proto_name(r->h.type), (int)c->pid, tc_err_name(rc),
		c->err);
	tc__metrics_error(rc);
	if (r->t0_ns)
		tc__metrics_request(r->h.type, tc__now_ns() - r->t0_ns);
	off = tc__frame_begin(&c->out, r->h.type, TC_PF_REPLY, r->h.req_id, 0);
	tc__buf_put_i32(&c->out, rc);
	tc__buf_put_str(&c->out, c->err);
	tc__srv_reply_end(c, off);
}

void tc__srv_reply_status(struct conn *c, const struct req *r, int rc)
{
	if (rc < 0)
		tc__srv_reply_error(c, r, rc);
	else
		tc__srv_reply_end(c, tc__srv_reply_begin(c, r));
}

void tc__srv_reply_json(struct conn *c, const struct req *r, char *json)
{
	size_t off;

	if (!json) {
		tc__srv_reply_error(c, r, -ENOMEM);
		return;
	}
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_str(&c->out, json);
	tc__srv_reply_end(c, off);
	free(json);
}
/* ----------------------------------------------------------- handlers */

int tc__srv_read_str(struct conn *c, struct req *r, const char *what, char *dst,
		     size_t dstlen)
{
	const char *s;
	size_t n;
	int rc = tc__cur_read_str(&r->body, TC_PROTO_MAX_STR, &s, &n);

	if (rc < 0) {
		snprintf(c->err, sizeof(c->err), "%s: %s", what,
			 rc == TC_ELIMIT ? "too long" : "malformed string");
		return rc;
	}
	/* Every string a client sends (key, path, policy, client name)
	 * passes here: UTF-8, no control characters, no NUL inside. */
	rc = tc__name_check(what, s, n, dstlen - 1, TC_NAME_EMPTY_OK, c->err,
			    sizeof(c->err));
	if (rc < 0)
		return rc;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* Every byte of a body belongs to a field: bytes after the last one are a
 * malformed frame, refused before the request does anything. */
int tc__srv_body_end(struct conn *c, struct req *r)
{
	if (r->body.left == 0)
		return 0;
	snprintf(c->err, sizeof(c->err),
		 "%zu unexpected bytes after the %s body", r->body.left,
		 tc__proto_name(r->h.type));
	return TC_EPROTO;
}

/* ---------------------------------------------------- deferred replies */

void tc__srv_defer(struct conn *c)
{
	c->jobs++;
	c->paused = true;
}

void tc__srv_finish(struct conn *c, const struct req *r, int rc,
		    const char *err, tc__srv_reply_fn *reply, void *arg)
{
	c->jobs--;
	c->paused = false;
	/* A closed connection owes nobody a reply: before_sleep frees it
	 * once its last job is done. */
	if (c->closing)
		return;
	c->err[0] = '\0';
	if (rc == 0 && reply)
		rc = reply(c, r, arg);
	else if (rc < 0 && err && *err)
		snprintf(c->err, sizeof(c->err), "%s", err);
	if (rc < 0)
		tc__srv_reply_error(c, r, rc);
	tc__srv_conn_flush(c);
	/* Frames that arrived while the job ran wait in `in`. */
	tc__srv_conn_process(c);
}
