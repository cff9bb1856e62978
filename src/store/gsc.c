/*
 * gsc.c - blocking global-store client (gsc.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gsc.h"
#include "net/ev.h"
#include "net/tcp.h"
#include "tcast/errors.h"

void tc__gsc_init(struct tc__gsc *g, int timeout_ms)
{
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	g->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
	g->next_req = 1;
	tc__buf_init(&g->out);
}

static void drop(struct tc__gsc *g)
{
	tc__tls_free(g->tls);
	g->tls = NULL;
	if (g->fd >= 0)
		close(g->fd);
	g->fd = -1;
}

void tc__gsc_close(struct tc__gsc *g)
{
	drop(g);
	tc__buf_release(&g->out);
	tc__free(g->in);
	g->in = NULL;
	g->in_cap = 0;
}

int tc__gsc_connect(struct tc__gsc *g, const char *addr,
		    const struct tc__auth_secret *sec, int role,
		    const char *name)
{
	struct tc__auth a;
	uint64_t deadline;
	char why[512];
	int ret, fd, fl;

	drop(g);
	deadline = tc__now_ms() + (uint64_t)g->timeout_ms;
	ret = tc__tcp_connect(addr, g->timeout_ms, &fd, g->err, sizeof(g->err));
	if (ret < 0)
		return ret;
	if (g->tls_ctx) {
		/* Non-blocking for good: TLS has no MSG_DONTWAIT, and every
		 * call here waits in poll with its own deadline. */
		fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		ret = tc__tls_new(g->tls_ctx, fd, false, &g->tls);
		if (ret < 0)
			snprintf(why, sizeof(why), "out of memory");
		/* The global store's certificate must name `addr`. */
		if (ret == 0)
			ret = tc__tls_expect_peer(g->tls, addr, why,
						  sizeof(why));
		if (ret == 0)
			ret = tc__tls_handshake_run(g->tls, deadline, why,
						    sizeof(why));
		if (ret < 0) {
			snprintf(g->err, sizeof(g->err),
				 "TLS with the global store at '%s': %s", addr,
				 why);
			tc__tls_free(g->tls);
			g->tls = NULL;
			close(fd);
			return ret;
		}
	}
	ret = tc__auth_init_client(&a, sec, role, name, g->timeout_ms);
	if (ret == 0)
		ret = tc__auth_run_tls(&a, fd, g->tls);
	if (ret < 0) {
		snprintf(g->err, sizeof(g->err),
			 "cluster handshake with the global store at '%s': %s",
			 addr, a.err);
		tc__auth_wipe(&a);
		tc__tls_free(g->tls);
		g->tls = NULL;
		close(fd);
		return ret;
	}
	tc__auth_wipe(&a);
	g->fd = fd;
	return 0;
}

static int io_fail(struct tc__gsc *g, int ret, const char *what)
{
	snprintf(g->err, sizeof(g->err), "global store connection: %s: %s",
		 what,
		 ret == TC_ECLOSED ? "closed by the server" :
		 ret == TC_EPROTO  ? "TLS error" :
				     strerror(-ret));
	drop(g);
	return ret;
}

/* One send or receive without blocking: bytes, 0 (receive: closed), or
 * -EAGAIN with *pev (POLLIN/POLLOUT) to wait for, or a negative code. */
static ssize_t xfer(struct tc__gsc *g, void *p, size_t n, bool out, short *pev)
{
	ssize_t r;
	int ev = 0;

	*pev = out ? POLLOUT : POLLIN;
	if (g->tls) {
		r = out ? tc__tls_send(g->tls, p, n, &ev) :
			  tc__tls_recv(g->tls, p, n, &ev);
		if (r == -EAGAIN && ev)
			*pev = ev & TC_EV_WRITE ? POLLOUT : POLLIN;
		return r;
	}
	r = out ? send(g->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) :
		  recv(g->fd, p, n, MSG_DONTWAIT);
	if (r < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return r;
}

/* Wait for `ev` (POLLIN/POLLOUT) until `deadline`. */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = ev };

	for (;;) {
		uint64_t now = tc__now_ms();
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)(deadline - now));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int tc__gsc_send(struct tc__gsc *g, int type, const void *body, size_t len)
{
	uint64_t deadline = tc__now_ms() + (uint64_t)g->timeout_ms;
	uint32_t req = g->next_req++;
	size_t off = 0;
	int ret;

	if (g->fd < 0) {
		snprintf(g->err, sizeof(g->err),
			 "not connected to the global store");
		return TC_ECLOSED;
	}
	if (len > TC_GSP_MAX_BODY) {
		snprintf(g->err, sizeof(g->err), "request too large");
		return TC_ELIMIT;
	}
	g->out.len = 0;
	off = tc__gsp_begin(&g->out, type, 0, req);
	tc__buf_put(&g->out, body, len);
	tc__gsp_finish(&g->out, off);
	if (g->out.oom)
		return -ENOMEM;
	off = 0;
	while (off < g->out.len) {
		short ev;
		ssize_t r =
			xfer(g, g->out.data + off, g->out.len - off, true, &ev);

		if (r == -EINTR)
			continue;
		if (r == -EAGAIN) {
			ret = wait_fd(g->fd, ev, deadline);
			if (ret < 0)
				return io_fail(g, ret, "send");
			continue;
		}
		if (r < 0)
			return io_fail(g, (int)r, "send");
		off += (size_t)r;
	}
	return (int)(req & 0x7fffffff);
}

static int read_full(struct tc__gsc *g, uint8_t *p, size_t n, uint64_t deadline)
{
	size_t got = 0;
	int ret;

	while (got < n) {
		short ev;
		ssize_t r = xfer(g, p + got, n - got, false, &ev);

		if (r == -EINTR)
			continue;
		if (r == -EAGAIN) {
			ret = wait_fd(g->fd, ev, deadline);
			if (ret < 0)
				return ret;
			continue;
		}
		if (r < 0)
			return (int)r;
		if (r == 0)
			return TC_ECLOSED;
		got += (size_t)r;
	}
	return 0;
}

int tc__gsc_recv(struct tc__gsc *g, struct tc__cur *reply)
{
	uint64_t deadline = tc__now_ms() + (uint64_t)g->timeout_ms;
	uint8_t hdr[TC_GSP_HDR];
	struct tc__gsp_hdr h;
	struct tc__cur c;
	int32_t status;
	const char *m;
	size_t ml;
	int ret;

	if (g->fd < 0) {
		snprintf(g->err, sizeof(g->err),
			 "not connected to the global store");
		return TC_ECLOSED;
	}
	ret = read_full(g, hdr, sizeof(hdr), deadline);
	if (ret < 0)
		return io_fail(g, ret, "receive");
	ret = tc__gsp_hdr_decode(hdr, &h, g->err, sizeof(g->err));
	if (ret < 0 || !(h.flags & TC_GSP_REPLY))
		return io_fail(g, TC_EPROTO, "bad reply header");
	if (h.body_len > g->in_cap) {
		uint8_t *p = tc__realloc(g->in, h.body_len);

		if (!p)
			return io_fail(g, -ENOMEM, "reply buffer");
		g->in = p;
		g->in_cap = h.body_len;
	}
	ret = read_full(g, g->in, h.body_len, deadline);
	if (ret < 0)
		return io_fail(g, ret, "receive");
	tc__cur_init(&c, g->in, h.body_len);
	if (tc__cur_read_i32(&c, &status) < 0)
		return io_fail(g, TC_EPROTO, "reply without status");
	if (status < 0) {
		if (tc__cur_read_str(&c, TC_GSP_MAX_MSG, &m, &ml) == 0)
			snprintf(g->err, sizeof(g->err), "%.*s", (int)ml, m);
		else
			snprintf(g->err, sizeof(g->err), "%s",
				 tc_strerror(status));
		return status;
	}
	*reply = c;
	return 0;
}

int tc__gsc_call(struct tc__gsc *g, int type, const void *body, size_t len,
		 struct tc__cur *reply)
{
	int ret = tc__gsc_send(g, type, body, len);

	if (ret < 0)
		return ret;
	return tc__gsc_recv(g, reply);
}

static int call_buf(struct tc__gsc *g, int type, struct tc__buf *b,
		    struct tc__cur *reply)
{
	int ret = b->oom ? -ENOMEM :
			   tc__gsc_call(g, type, b->data, b->len, reply);

	tc__buf_release(b);
	return ret;
}

static int bad_reply(struct tc__gsc *g, const char *what)
{
	snprintf(g->err, sizeof(g->err), "malformed %s reply", what);
	return TC_EPROTO;
}

int tc__gsc_register(struct tc__gsc *g, const struct tc__gsp_node *node,
		     const struct tc__gsp_replica *reps, uint32_t n,
		     uint64_t *node_id, uint32_t *lease_ms,
		     uint32_t *heartbeat_ms)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	uint8_t re;
	int ret;

	tc__gsp_put_node(&b, node);
	tc__buf_put_u32(&b, n);
	for (uint32_t i = 0; i < n; i++)
		tc__gsp_put_replica(&b, &reps[i]);
	ret = call_buf(g, TC_GSP_REGISTER, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u64(&r, node_id) < 0 ||
	    tc__cur_read_u32(&r, lease_ms) < 0 ||
	    tc__cur_read_u32(&r, heartbeat_ms) < 0 ||
	    tc__cur_read_u8(&r, &re) < 0)
		return bad_reply(g, "REGISTER");
	return 0;
}

int tc__gsc_heartbeat(struct tc__gsc *g, uint32_t uploads, uint64_t tx_bps)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;

	tc__buf_put_u32(&b, uploads);
	tc__buf_put_u64(&b, tx_bps);
	return call_buf(g, TC_GSP_HEARTBEAT, &b, &r);
}

int tc__gsc_replica_add(struct tc__gsc *g, const struct tc__gsp_replica *rep,
			const struct tc__gsp_artifact *a)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;

	tc__gsp_put_replica(&b, rep);
	tc__buf_put_u8(&b, a ? 1 : 0);
	if (a)
		tc__gsp_put_artifact(&b, a);
	return call_buf(g, TC_GSP_REPLICA_ADD, &b, &r);
}

int tc__gsc_replica_del(struct tc__gsc *g, const char *id, int tier,
			uint32_t device)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;

	tc__buf_put_str(&b, id);
	tc__buf_put_u8(&b, (uint8_t)tier);
	tc__buf_put_u32(&b, device);
	return call_buf(g, TC_GSP_REPLICA_DEL, &b, &r);
}

int tc__gsc_key_set(struct tc__gsc *g, const char *key, const char *id,
		    uint32_t flags, uint64_t expect_gen, const char *prev,
		    uint64_t *gen)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	int ret;

	tc__buf_put_str(&b, key);
	tc__buf_put_str(&b, id);
	tc__buf_put_u32(&b, flags);
	tc__buf_put_u64(&b, expect_gen);
	if (flags & TC_GSP_KF_PREV)
		tc__buf_put_str(&b, prev ? prev : "");
	ret = call_buf(g, TC_GSP_KEY_SET, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u64(&r, gen) < 0)
		return bad_reply(g, "KEY_SET");
	return 0;
}

#define UNDO_HISTORY 16

int tc__gsc_key_undo(struct tc__gsc *g, const char *key, const char *id,
		     uint64_t gen, uint64_t *back)
{
	char prev[TC_GSP_MAX_ID + 1] = "", hid[TC_GSP_MAX_ID + 1];
	uint64_t pgen = 0, hgen, ms, top = 0;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	uint32_t n;
	int ret;

	*back = 0;
	tc__buf_put_str(&b, key);
	tc__buf_put_u32(&b, UNDO_HISTORY);
	ret = call_buf(g, TC_GSP_KEY_HISTORY, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u32(&r, &n) < 0 || n > UNDO_HISTORY)
		return bad_reply(g, "KEY_HISTORY");
	/* Newest first. */
	for (uint32_t i = 0; i < n; i++) {
		if (tc__gsp_get_key_version(&r, &hgen, hid, &ms, g->err,
					    sizeof(g->err)) < 0)
			return bad_reply(g, "KEY_HISTORY");
		if (i == 0)
			top = hgen;
		if (hgen < gen && hgen > pgen) {
			pgen = hgen;
			snprintf(prev, sizeof(prev), "%s", hid);
		}
	}
	if (tc__gsp_end(&r, g->err, sizeof(g->err)) < 0)
		return bad_reply(g, "KEY_HISTORY");
	if (top != gen)
		return 1; /* moved on since: not ours to take back */
	if (!prev[0]) {
		snprintf(g->err, sizeof(g->err),
			 "key '%s' has no version before %llu to go back to: "
			 "it names '%s', which no node holds",
			 key, (unsigned long long)gen, id);
		return TC_ENOTFOUND;
	}
	return tc__gsc_key_set(g, key, prev, TC_GSP_KF_EXPECT, gen, NULL, back);
}

int tc__gsc_key_get(struct tc__gsc *g, const char *key, char *id, uint64_t *gen)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	int ret;

	tc__buf_put_str(&b, key);
	ret = call_buf(g, TC_GSP_KEY_GET, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__gsp_get_key_value(&r, id, gen, g->err, sizeof(g->err)) < 0 ||
	    tc__gsp_end(&r, g->err, sizeof(g->err)) < 0)
		return bad_reply(g, "KEY_GET");
	return 0;
}

int tc__gsc_keys_get(struct tc__gsc *g, const char *const *keys, uint32_t n,
		     struct tc__gsc_keyval *out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	uint32_t got;
	int ret;

	if (n == 0 || n > TC_GSP_MAX_KEYS_GET) {
		snprintf(g->err, sizeof(g->err), "KEYS_GET of %u keys (1..%d)",
			 n, TC_GSP_MAX_KEYS_GET);
		return TC_EINVAL;
	}
	tc__gsp_put_keys_get_req(&b, keys, n);
	ret = call_buf(g, TC_GSP_KEYS_GET, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__gsp_get_keys_count(&r, n, &got, g->err, sizeof(g->err)) < 0 ||
	    got != n)
		return bad_reply(g, "KEYS_GET");
	for (uint32_t i = 0; i < n; i++) {
		bool found;

		if (tc__gsp_get_key_entry(&r, &found, out[i].id, &out[i].gen,
					  g->err, sizeof(g->err)) < 0)
			return bad_reply(g, "KEYS_GET");
		out[i].rc = found ? 0 : TC_ENOTFOUND;
	}
	if (tc__gsp_end(&r, g->err, sizeof(g->err)) < 0)
		return bad_reply(g, "KEYS_GET");
	return 0;
}

int tc__gsc_resolve(struct tc__gsc *g, const char *what, const char *requester,
		    uint32_t max, char *id, uint64_t *gen,
		    struct tc__gsp_source *src, uint32_t *nsrc)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	uint32_t n;
	int ret;

	tc__buf_put_str(&b, what);
	tc__buf_put_str(&b, requester ? requester : "");
	tc__buf_put_u32(&b, max);
	ret = call_buf(g, TC_GSP_RESOLVE, &b, &r);
	if (ret < 0)
		return ret;
	if (tc__gsp_get_name(&r, "artifact id", id, TC_GSP_MAX_ID, false,
			     g->err, sizeof(g->err)) < 0 ||
	    tc__cur_read_u64(&r, gen) < 0 || tc__cur_read_u32(&r, &n) < 0 ||
	    n > max)
		return bad_reply(g, "RESOLVE");
	for (uint32_t i = 0; i < n; i++)
		if (tc__gsp_get_source(&r, &src[i], g->err, sizeof(g->err)) < 0)
			return bad_reply(g, "RESOLVE");
	*nsrc = n;
	return 0;
}

int tc__gsc_peers(struct tc__gsc *g, const char *requester, uint32_t max,
		  struct tc__gsp_source *src, uint32_t *nsrc)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	char why[256];
	int ret;

	*nsrc = 0;
	tc__gsp_put_peers_req(&b, requester, max);
	ret = call_buf(g, TC_GSP_PEERS, &b, &r);
	if (ret < 0)
		return ret;
	ret = tc__gsp_get_sources(&r, src, max, nsrc, why, sizeof(why));
	if (ret < 0) {
		snprintf(g->err, sizeof(g->err), "malformed PEERS reply: %s",
			 why);
		return TC_EPROTO;
	}
	return 0;
}

int tc__gsc_group(struct tc__gsc *g, int type,
		  const struct tc__gsp_group_req *q, struct tc__gsp_group *out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur r;
	int saved = g->timeout_ms, ret;

	memset(out, 0, sizeof(*out));
	tc__gsp_put_group_req(&b, type, q);
	if (type == TC_GSP_GROUP_GET && q->wait_ms)
		g->timeout_ms = saved + (int)q->wait_ms;
	ret = call_buf(g, type, &b, &r);
	g->timeout_ms = saved;
	if (ret < 0)
		return ret;
	ret = tc__gsp_get_group(&r, out, g->err, sizeof(g->err));
	if (ret == 0)
		ret = tc__gsp_end(&r, g->err, sizeof(g->err));
	if (ret < 0) {
		tc__gsp_group_release(out);
		return bad_reply(g, tc__gsp_name(type));
	}
	return 0;
}

int tc__gsc_status(struct tc__gsc *g, char **json)
{
	struct tc__cur r;
	const char *s;
	size_t n;
	int ret;

	*json = NULL;
	ret = tc__gsc_call(g, TC_GSP_STATUS, NULL, 0, &r);
	if (ret < 0)
		return ret;
	if (tc__cur_read_str(&r, TC_GSP_MAX_BODY, &s, &n) < 0)
		return bad_reply(g, "STATUS");
	*json = strndup(s, n);
	return *json ? 0 : -ENOMEM;
}
