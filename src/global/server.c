/*
 * server.c - the global store's event loop, connections, start and stop
 * (gs.h; gs_internal.h lists the files it shares its state with).
 *
 * One thread.  A connection first runs the cluster handshake (net/auth.h),
 * then sends frames (proto/gsp.h).  Requests of one loop turn run against
 * the in-memory state and write through the backend inside one
 * transaction; before the loop sleeps it commits, and only then are the
 * turn's replies sent (group commit: nothing is acknowledged that a kill -9
 * could lose).  Heartbeats touch memory only.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/map.h"
#include "gs.h"
#include "gs_internal.h"
#include "net/auth.h"
#include "net/tls.h"
#include "net/ev.h"
#include "net/net.h"
#include "net/tcp.h"
#include "proto/gsp.h"
#include "tcast/errors.h"

#define FRAMES_PER_TURN 64		    /* frames of one conn per turn */
#define OUT_PAUSE	((size_t)16 << 20)  /* stop reading past this */
#define OUT_MAX		((size_t)256 << 20) /* drop the client past this */
#define TICK_MS		250

/* ------------------------------------------------------------ replies */

static void reply_err(struct gconn *c, const struct tc__gsp_hdr *h, int code,
		      const char *msg)
{
	size_t off =
		tc__gsp_reply_begin(&c->out, h->type, h->req_id, code, msg);

	tc__gsp_finish(&c->out, off);
}

void tc__gs_turn_add(struct gconn *c)
{
	if (c->in_turn)
		return;
	c->in_turn = true;
	c->turn_next = c->gs->turn;
	c->gs->turn = c;
}

/* ------------------------------------------------------------ connections */

static void conn_close(struct gconn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	c->reap_next = c->gs->reap;
	c->gs->reap = c;
	if (why)
		tc__log(TC_LOG_INFO, "connection %s%s%s closed: %s", c->addr,
			c->node ? " of node " : "",
			c->node ? c->node->info.name : "", why);
	tc__ev_del(c->gs->ev, c->fd);
}

static void conn_free(struct gconn *c)
{
	struct gs *gs = c->gs;

	if (c->node && c->node->conn == c)
		c->node->conn = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		gs->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	tc__tls_free(c->tls);
	close(c->fd);
	tc__auth_wipe(&c->auth);
	tc__free(c->in);
	tc__buf_release(&c->out);
	tc__free(c);
	gs->nconns--;
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask);

static void conn_watch(struct gconn *c)
{
	int mask = 0;

	if (c->closing)
		return;
	if (!c->authed) {
		return; /* on_conn_io keeps the handshake's own mask */
	} else {
		if (c->out.len - c->out_off < OUT_PAUSE)
			mask |= TC_EV_READ;
		if (c->out.len > c->out_off)
			mask |= TC_EV_WRITE;
	}
	if (tc__ev_mask(c->gs->ev, c->fd) != mask)
		tc__ev_add(c->gs->ev, c->fd, mask, on_conn_io, c);
}

/* Run the complete frames in c->in (up to FRAMES_PER_TURN). */
static void conn_frames(struct gconn *c)
{
	struct gs *gs = c->gs;
	char err[1024];

	for (int k = 0; k < FRAMES_PER_TURN && !c->closing; k++) {
		bool old; /* failpoint gs.old_store */
		struct tc__gsp_hdr h;
		struct tc__cur cur;
		size_t off, before;
		int ret;

		if (c->in_len - c->in_off < TC_GSP_HDR)
			break;
		ret = tc__gsp_hdr_decode(c->in + c->in_off, &h, err,
					 sizeof(err));
		old = false;
		if (ret == 0 && h.type == TC_GSP_KEYS_GET &&
		    tc__failpoint("gs.old_store", "KEYS_GET")) {
			/* Tests: answer as a store older than KEYS_GET, which
			 * does not know the type, closes, and says nothing. */
			snprintf(err, sizeof(err), "unknown message type %u",
				 h.type);
			ret = TC_EPROTO;
			old = true;
		}
		if (ret == 0 && (h.flags & TC_GSP_REPLY)) {
			snprintf(err, sizeof(err),
				 "a reply frame from a "
				 "client");
			ret = TC_EPROTO;
		}
		if (ret < 0) {
			gs->n_proto_err++;
			tc__log_rl(&gs->rl_proto, TC_LOG_WARN,
				   "protocol error from %s: %s", c->addr, err);
			if (h.type > 0 && h.type < TC_GSP__MAX && !old)
				reply_err(c, &h, ret, err);
			tc__gs_turn_add(c);
			conn_close(c, NULL);
			c->last_word = true;
			break;
		}
		if (c->in_len - c->in_off < TC_GSP_HDR + (size_t)h.body_len)
			break;
		tc__cur_init(&cur, c->in + c->in_off + TC_GSP_HDR, h.body_len);
		c->in_off += TC_GSP_HDR + (size_t)h.body_len;
		before = c->out.len;
		off = tc__gsp_reply_begin(&c->out, h.type, h.req_id, 0, NULL);
		err[0] = '\0';
		c->cur_req = h.req_id;
		ret = tc__gs_handlers[h.type](gs, c, &cur, &c->out, err,
					      sizeof(err));
		if (ret == GS_DEFERRED) {
			c->out.len = before; /* answered when decided */
		} else if (ret < 0) {
			c->out.len = before;
			if (!err[0])
				snprintf(err, sizeof(err), "%s",
					 tc_strerror(ret));
			reply_err(c, &h, ret, err);
			if (ret == TC_EPROTO) {
				gs->n_proto_err++;
				tc__log_rl(&gs->rl_proto, TC_LOG_WARN,
					   "protocol error from %s in %s: %s",
					   c->addr, tc__gsp_name(h.type), err);
				conn_close(c, NULL);
				c->last_word = true;
			}
		} else {
			tc__gsp_finish(&c->out, off);
		}
		tc__gs_turn_add(c);
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->out.oom)
		conn_close(c, "out of memory for replies");
}

/* recv(2)/send(2) on the non-blocking socket, through TLS when it is
 * on: -1 with errno (EPROTO for a TLS error) like the calls. */
static ssize_t conn_recv(struct gconn *c, void *p, size_t n)
{
	ssize_t r;
	int ev;

	if (!c->tls)
		return recv(c->fd, p, n, 0);
	r = tc__tls_recv(c->tls, p, n, &ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

static ssize_t conn_send(struct gconn *c, const void *p, size_t n)
{
	ssize_t r;
	int ev;

	if (!c->tls)
		return send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	r = tc__tls_send(c->tls, p, n, &ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

static void conn_read(struct gconn *c)
{
	for (int rounds = 0; rounds < 4 && !c->closing; rounds++) {
		size_t want = TC_GSP_HDR;
		ssize_t r;
		int ret;

		if (c->in_len - c->in_off >= TC_GSP_HDR) {
			uint32_t bl;

			memcpy(&bl, c->in + c->in_off + 16, 4);
			bl = le32toh(bl);
			if (bl <= TC_GSP_MAX_BODY &&
			    c->in_len - c->in_off < TC_GSP_HDR + (size_t)bl)
				want = TC_GSP_HDR + bl -
				       (c->in_len - c->in_off);
		}
		if (want < 65536)
			want = 65536;
		ret = tc__rxbuf_room(
			&c->in, &c->in_cap, &c->in_off, &c->in_len, want,
			TC_GSP_HDR + (size_t)TC_GSP_MAX_BODY + 65536);
		if (ret < 0) {
			conn_close(c, "receive buffer");
			return;
		}
		r = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			conn_close(c, r == 0	      ? "peer closed" :
				      errno == EPROTO ? "TLS error" :
							strerror(errno));
			return;
		}
		c->in_len += (size_t)r;
		c->last_ms = tc__now_ms();
		conn_frames(c);
		if (c->out.len - c->out_off >= OUT_PAUSE)
			break;
		/* TLS may hold decrypted bytes that epoll cannot see */
		if ((size_t)r < want && !tc__tls_pending(c->tls))
			break;
	}
}

static void conn_flush(struct gconn *c)
{
	while (c->out.len > c->out_off && !c->closing) {
		ssize_t r = conn_send(c, c->out.data + c->out_off,
				      c->out.len - c->out_off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r < 0) {
			conn_close(c, strerror(errno));
			return;
		}
		c->out_off += (size_t)r;
	}
	if (c->out_off == c->out.len) {
		c->out.len = 0;
		c->out_off = 0;
	} else if (c->out.len - c->out_off > OUT_MAX) {
		conn_close(c, "client does not read its replies");
	}
}

/* A client whose request was malformed is dropped, but first told why
 * (its replies up to the error, which name the field): one send that
 * never blocks, whatever it manages. */
static void last_word(struct gconn *c)
{
	if (c->out.len > c->out_off &&
	    conn_send(c, c->out.data + c->out_off, c->out.len - c->out_off) > 0)
		tc__log(TC_LOG_DEBUG, "told %s why it is dropped", c->addr);
	c->last_word = false;
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct gconn *c = arg;
	struct gs *gs = c->gs;

	if (c->closing)
		return;
	if (c->tls && !c->tls_done) {
		char why[512];
		int want, ret = tc__tls_handshake_io(c->tls, &want, why,
						     sizeof(why));

		if (ret == -EAGAIN) {
			tc__ev_add(ev, fd, want, on_conn_io, c);
			return;
		}
		if (ret < 0) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, why);
			conn_close(c, NULL);
			return;
		}
		c->tls_done = true;
		tc__log(TC_LOG_DEBUG, "%s: %s", c->addr,
			tc__tls_describe(c->tls));
	}
	if (!c->authed) {
		int want, ret = tc__auth_io_tls(&c->auth, fd, c->tls, &want);

		if (ret == -EAGAIN) {
			tc__ev_add(ev, fd, want, on_conn_io, c);
			return;
		}
		if (ret < 0) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, c->auth.err);
			conn_close(c, NULL);
			return;
		}
		if (c->auth.peer_role != TC_AUTH_ROLE_DAEMON &&
		    c->auth.peer_role != TC_AUTH_ROLE_TOOL) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN,
				   "refused %s: a %s may not use the global "
				   "store",
				   c->addr,
				   tc__auth_role_name(c->auth.peer_role));
			conn_close(c, NULL);
			return;
		}
		c->authed = true;
		tc__log(TC_LOG_DEBUG, "%s authenticated as '%s' (%s)", c->addr,
			c->auth.peer_name,
			tc__auth_role_name(c->auth.peer_role));
		tc__auth_wipe(&c->auth);
		conn_watch(c);
		return;
	}
	if (mask & TC_EV_WRITE)
		tc__gs_turn_add(c); /* flushed after the turn's commit */
	if (mask & TC_EV_READ)
		conn_read(c);
	conn_watch(c);
}

static void on_accept(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct gs *gs = arg;

	for (int i = 0; i < 64; i++) {
		struct gconn *c;
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0 && (errno == EMFILE || errno == ENFILE) &&
		    gs->reserve_fd >= 0) {
			/* The pending connection would wake the loop again
			 * at once: turn it away with the reserve fd. */
			int e = errno;

			cfd = tc__sock_accept_reserve(fd, &gs->reserve_fd);
			if (cfd >= 0)
				close(cfd);
			tc__sock_reserve(&gs->reserve_fd);
			tc__log_rl(&gs->rl_conns, TC_LOG_WARN,
				   "accept: %s: turning connections away until "
				   "fds are free (%d connections)",
				   strerror(e), gs->nconns);
			if (cfd < 0)
				return;
			continue;
		}
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				tc__log_rl(&gs->rl_conns, TC_LOG_WARN,
					   "accept: %s", strerror(errno));
			return;
		}
		if (gs->nconns >= gs->cfg->max_conns || cfd >= gs->setsize) {
			char a[TC_TCP_ADDRSTR];

			tc__tcp_peer_str(cfd, a, sizeof(a));
			tc__log_rl(&gs->rl_conns, TC_LOG_WARN,
				   "refused %s: %d connections already", a,
				   gs->nconns);
			close(cfd);
			continue;
		}
		c = tc__calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->gs = gs;
		c->fd = cfd;
		tc__tcp_tune(cfd);
		tc__tcp_peer_str(cfd, c->addr, sizeof(c->addr));
		c->last_ms = tc__now_ms();
		/* The auth deadline bounds the TLS handshake too (tick). */
		tc__auth_init_server(&c->auth, &gs->sec, TC_AUTH_ROLE_GLOBAL,
				     TC_AUTH_ROLE_ANY, "global",
				     gs->cfg->handshake_ms);
		if (gs->tls && tc__tls_new(gs->tls, cfd, true, &c->tls) < 0) {
			close(cfd);
			tc__free(c);
			continue;
		}
		c->next = gs->conns;
		if (gs->conns)
			gs->conns->prev = c;
		gs->conns = c;
		gs->nconns++;
		tc__ev_add(ev, cfd, TC_EV_READ, on_conn_io, c);
	}
}

/* Commit the turn's writes, then send the turn's replies. */
static void before_sleep(struct tc__ev *ev, void *arg)
{
	struct gs *gs = arg;
	struct gconn *c, *next, *again = NULL;

	if (gs->txn) {
		int ret;

		if (tc__failpoint("gs.commit_fail", ""))
			ret = -EIO;
		else
			ret = gs->ops->commit(gs->be);
		gs->txn = false;
		gs->n_commits++;
		if (ret < 0) {
			/* Nothing of this turn is durable: answer nobody,
			 * so every client retries. */
			gs->ops->rollback(gs->be);
			tc__log(TC_LOG_ERROR,
				"commit failed: dropping this turn's "
				"connections so that their clients retry");
			for (c = gs->turn; c; c = c->turn_next) {
				conn_close(c, "commit failed");
				c->last_word = false;
			}
		}
		if (tc__failpoint("gs.crash_after_commit", ""))
			_exit(99);
	}
	for (c = gs->turn; c; c = next) {
		next = c->turn_next;
		c->in_turn = false;
		c->turn_next = NULL;
		conn_flush(c);
		if (c->closing && c->last_word)
			last_word(c);
		/* frames left over from a busy turn run in the next one */
		if (!c->closing && c->authed &&
		    (c->in_len - c->in_off >= TC_GSP_HDR ||
		     tc__tls_pending(c->tls)) &&
		    c->out.len - c->out_off < OUT_PAUSE) {
			c->again_next = again;
			again = c;
		}
		conn_watch(c);
	}
	gs->turn = NULL;
	while (gs->reap) {
		c = gs->reap;
		gs->reap = c->reap_next;
		conn_free(c);
	}
	for (c = again; c; c = next) {
		next = c->again_next;
		c->again_next = NULL;
		if (c->closing)
			continue;
		if (tc__tls_pending(c->tls))
			conn_read(c); /* runs the frames too */
		else
			conn_frames(c);
		conn_watch(c);
		tc__ev_no_sleep(ev);
	}
}

static void tick(struct tc__ev *ev, void *arg)
{
	struct gs *gs = arg;
	uint64_t now = tc__now_ms();
	static uint64_t last_decay;

	for (size_t i = 0; i < gs->nnodes; i++) {
		struct gnode *n = gs->nodes[i];

		if (n && n->live && n->lease_until < now) {
			n->live = false;
			gs->n_expired++;
			tc__log(TC_LOG_WARN,
				"node '%s' lease expired (no heartbeat for %d "
				"ms): out of routing until it is heard again",
				n->info.name, gs->cfg->lease_ms);
		}
	}
	tc__gs_groups_tick(gs, now);
	if (now - last_decay >= 1000) {
		last_decay = now;
		for (size_t i = 0; i < gs->nnodes; i++)
			if (gs->nodes[i])
				gs->nodes[i]->handouts /= 2;
	}
	for (struct gconn *c = gs->conns; c; c = c->next) {
		if (c->closing)
			continue;
		if (!c->authed && tc__auth_expired(&c->auth, now)) {
			gs->n_auth_fail++;
			tc__log_rl(&gs->rl_auth, TC_LOG_WARN, "refused %s: %s",
				   c->addr, c->auth.err);
			conn_close(c, NULL);
		} else if (c->authed && !c->node &&
			   now - c->last_ms > (uint64_t)gs->cfg->idle_ms) {
			conn_close(c, "idle");
		}
	}
}

static void on_signal(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si))
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			tc__log(TC_LOG_INFO, "signal %u: stopping",
				si.ssi_signo);
			tc__ev_stop(ev);
		}
}

/* ------------------------------------------------------------ lifecycle */

static void gs_release(struct gs *gs)
{
	struct tc__map_entry *e;
	size_t b;

	while (gs->conns)
		conn_free(gs->conns);
	for (e = tc__map_next(&gs->arts, NULL, &b); e;
	     e = tc__map_next(&gs->arts, e, &b)) {
		struct gart *a = e->val;

		for (size_t i = 0; i < a->nreps; i++)
			tc__free(a->reps[i].have);
		tc__free(a->reps);
		tc__free(a);
	}
	for (e = tc__map_next(&gs->keys, NULL, &b); e;
	     e = tc__map_next(&gs->keys, e, &b))
		tc__free(e->val);
	for (e = tc__map_next(&gs->groups, NULL, &b); e;
	     e = tc__map_next(&gs->groups, e, &b))
		tc__gs_group_free(e->val);
	tc__map_release(&gs->groups);
	for (size_t i = 0; i < gs->nnodes; i++)
		tc__free(gs->nodes[i]);
	tc__free(gs->nodes);
	tc__map_release(&gs->arts);
	tc__map_release(&gs->keys);
	tc__map_release(&gs->node_by_name);
	if (gs->be)
		gs->ops->close(gs->be);
	if (gs->ev)
		tc__ev_free(gs->ev);
	if (gs->lfd >= 0)
		close(gs->lfd);
	if (gs->reserve_fd >= 0)
		close(gs->reserve_fd);
	if (gs->sigfd >= 0)
		close(gs->sigfd);
	tc__auth_secret_wipe(&gs->sec);
	tc__tls_ctx_free(gs->tls);
}

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void write_side_file(const char *dir, const char *name, const char *s)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", s);
	fclose(f);
	rename(tmp, path);
}

int tc__gs_run(const struct tc__gs_config *cfg, int ready_fd, char *err,
	       size_t errlen)
{
	struct gs gs = { 0 };
	struct rlimit rl;
	sigset_t mask;
	char pid[32];
	int ret;

	gs.cfg = cfg;
	gs.ops = &tc__gs_sqlite;
	gs.lfd = gs.sigfd = gs.reserve_fd = -1;
	tc__map_init(&gs.node_by_name);
	tc__map_init(&gs.arts);
	tc__map_init(&gs.keys);
	tc__map_init(&gs.groups);
	gs.started_ms = tc__now_ms();
	if (!cfg->secret_file[0]) {
		snprintf(err, errlen,
			 "no cluster secret: set cluster_secret_file in the "
			 "config or pass --cluster-secret-file (openssl rand "
			 "-hex 32 > FILE; chmod 600 FILE)");
		return TC_EBADCONFIG;
	}
	ret = tc__auth_load_secret(cfg->secret_file, &gs.sec, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__tls_ctx_new(&cfg->tls, &gs.tls, err, errlen);
	if (ret < 0)
		goto out;
	ret = mkdir_p(cfg->state_dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create state directory '%s': %s",
			 cfg->state_dir, strerror(-ret));
		goto out;
	}
	ret = gs.ops->open(cfg->db, cfg->sync_full, &gs.be, err, errlen);
	if (ret < 0)
		goto out;
	ret = tc__gs_load(&gs);
	if (ret < 0) {
		snprintf(err, errlen, "cannot load '%s': %s", cfg->db,
			 tc_strerror(ret));
		goto out;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	gs.setsize = cfg->max_conns + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < (rlim_t)gs.setsize)
		gs.setsize = (int)rl.rlim_cur;
	tc__sock_reserve(&gs.reserve_fd);
	gs.ev = tc__ev_new(gs.setsize);
	if (!gs.ev) {
		ret = -errno;
		snprintf(err, errlen, "event loop: %s", strerror(errno));
		goto out;
	}
	ret = tc__tcp_listen(cfg->listen, 1024, &gs.lfd, gs.bound,
			     sizeof(gs.bound), err, errlen);
	if (ret < 0)
		goto out;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	gs.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	tc__ev_add(gs.ev, gs.lfd, TC_EV_READ, on_accept, &gs);
	if (gs.sigfd >= 0)
		tc__ev_add(gs.ev, gs.sigfd, TC_EV_READ, on_signal, &gs);
	tc__ev_set_hooks(gs.ev, before_sleep, tick, TICK_MS, &gs);
	write_side_file(cfg->state_dir, "global.addr", gs.bound);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	write_side_file(cfg->state_dir, "global.pid", pid);
	tc__log(TC_LOG_INFO,
		"global store listening on %s (db %s, %zu nodes, %zu "
		"artifacts, %zu keys known; lease %d ms; TLS %s%s)",
		gs.bound, cfg->db, gs.node_by_name.count, gs.arts.count,
		gs.keys.count, cfg->lease_ms, gs.tls ? "on as " : "off",
		tc__tls_ctx_subject(gs.tls));
	if (ready_fd >= 0) {
		char one = 1;

		if (write(ready_fd, &one, 1) < 0)
			tc__log(TC_LOG_WARN, "ready pipe: %s", strerror(errno));
		close(ready_fd);
	}
	ret = tc__ev_run(gs.ev);
	before_sleep(gs.ev, &gs); /* commit and answer what is pending */
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/global.pid", cfg->state_dir);
		unlink(path);
	}
	tc__log(TC_LOG_INFO, "global store stopped");
out:
	gs_release(&gs);
	return ret;
}
