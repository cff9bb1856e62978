/*
 * conn.c - the daemon's connections: accept (peer credentials, per-uid and
 * per-process shares, shedding when fds run out, eviction of idle
 * connections), read into the input buffer, send the output queue with
 * its fds, close, and free.
 *
 * Connection I/O only: what a frame means is dispatch.c's business, and
 * what a connection holds (leases, puts, bindings) is given back through
 * the files that made it.  Loop thread only.  Frames are parsed from a
 * per-connection input buffer; fds received with SCM_RIGHTS go to a small
 * per-connection queue and are taken by the frame that declares them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/log.h"
#include "net/ev.h"
#include "net/net.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "server_internal.h"

/* --------------------------------------------------------------- I/O */

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask);

static void conn_update_events(struct conn *c)
{
	int mask = 0;

	if (c->closing)
		return;
	/* Read no more while frames already read wait their turn or the
	 * client leaves its replies unread: the input stays bounded. */
	if (!c->paused && !c->backlog &&
	    c->out.len - c->out_off <= OUT_PAUSE_BYTES)
		mask |= TC_EV_READ;
	if (c->out_off < c->out.len)
		mask |= TC_EV_WRITE;
	if (tc__ev_mask(c->srv->ev, c->fd) != mask)
		tc__ev_add(c->srv->ev, c->fd, mask, on_conn_io, c);
}

void tc__srv_conn_flush(struct conn *c)
{
	while (!c->closing && c->out_off < c->out.len) {
		size_t end = c->out.len;
		int *fds = NULL, nfds = 0;
		struct iovec iov;
		ssize_t n;

		/* fds travel with the first byte of their frame, so a send
		 * stops before the next frame that carries fds. */
		if (c->nofds && c->ofds[0].at == c->out_off) {
			fds = c->ofds[0].fds;
			nfds = c->ofds[0].n;
			if (c->nofds > 1)
				end = c->ofds[1].at;
		} else if (c->nofds) {
			end = c->ofds[0].at;
		}
		iov.iov_base = c->out.data + c->out_off;
		iov.iov_len = end - c->out_off;
		n = tc__fdpass_send(c->fd, &iov, 1, fds, nfds);
		if (n < 0) {
			if (n == -EAGAIN)
				break;
			tc__log(TC_LOG_DEBUG, "send to pid %d: %s", (int)c->pid,
				strerror((int)-n));
			tc__srv_conn_close(c, "send failed");
			return;
		}
		if (n > 0)
			c->out_progress_ms = tc__now_ms();
		if (nfds) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]); /* the queue's dups */
			memmove(c->ofds, c->ofds + 1,
				sizeof(*c->ofds) * (size_t)(--c->nofds));
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len) {
		c->out_off = c->out.len = 0;
		c->out_progress_ms = 0;
		/* Give back a big buffer once drained. */
		if (c->out.cap > ((size_t)1 << 20))
			tc__buf_release(&c->out);
	} else if (c->out.len - c->out_off > c->srv->cfg->max_outbuf) {
		tc__srv_conn_close(c, "client does not read its replies");
		return;
	} else if (!c->out_progress_ms) {
		c->out_progress_ms = tc__now_ms(); /* waiting from now */
	}
	conn_update_events(c);
}

static void conn_read(struct conn *c)
{
	int fds[TC_MAX_FDS_PER_MSG], nfds, rc;
	ssize_t n;

	/* Grows only as bytes really arrive, never from a declared
	 * length. */
	rc = tc__rxbuf_room(&c->in, &c->in_cap, &c->in_off, &c->in_len,
			    READ_CHUNK,
			    (size_t)TC_PROTO_MAX_BODY + 2 * READ_CHUNK);
	if (rc < 0) {
		tc__srv_conn_close(c, rc == -EMSGSIZE ? "frame too large" :
							"out of memory");
		return;
	}
	n = tc__fdpass_recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len,
			    fds, &nfds, TC_MAX_FDS_PER_MSG);
	if (n == -EAGAIN)
		return;
	if (n == TC_EPROTO) {
		tc__srv_conn_close(c, "too many or truncated fds");
		return;
	}
	if (n <= 0) {
		tc__srv_conn_close(c, n == 0 ? NULL : "receive failed");
		return;
	}
	if (c->nfdq + nfds > FDQ_MAX) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		tc__srv_conn_close(c, "too many fds in flight");
		return;
	}
	memcpy(c->fdq + c->nfdq, fds, sizeof(int) * (size_t)nfds);
	c->nfdq += nfds;
	c->in_len += (size_t)n;
	c->last_rx_ms = tc__now_ms();
	tc__srv_conn_process(c);
}

static void on_conn_io(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct conn *c = arg;

	if (c->closing)
		return;
	if (mask & TC_EV_WRITE)
		tc__srv_conn_flush(c);
	if ((mask & TC_EV_READ) && !c->closing && !c->paused)
		conn_read(c);
}

void tc__srv_conn_close(struct conn *c, const char *why)
{
	if (c->closing)
		return;
	if (why)
		tc__log(TC_LOG_INFO, "closing connection of pid %d: %s",
			(int)c->pid, why);
	c->closing = true;
	tc__ev_del(c->srv->ev, c->fd);
	shutdown(c->fd, SHUT_RDWR);
}

/* Free a closed connection: its leases, unsealed puts, queued fds. */
static void conn_free(struct conn *c)
{
	struct server *s = c->srv;

	tc__srv_leases_free(c);
	tc__srv_puts_free(c);
	tc__srv_bindings_free(c);
	tc__srv_gpu_puts_free(c);
	/* A rank's hold ends with its connection: its open groups abort. */
	if (c->holds)
		tc__cluster_hold_end(s->cluster, (uintptr_t)c);
	for (int i = 0; i < c->nfdq; i++)
		close(c->fdq[i]);
	for (int i = 0; i < c->nofds; i++)
		for (int k = 0; k < c->ofds[i].n; k++)
			close(c->ofds[i].fds[k]);
	close(c->fd);
	tc__free(c->in);
	tc__free(c->ofds);
	tc__free(c->leases);
	tc__buf_release(&c->out);
	s->nconns--;
	tc__free(c);
}

/* ------------------------------------------------------------- accept */

/*
 * Turn a connection away with a reason it can show: a HELLO reply with
 * req_id 0 (a connection-level error, docs/protocol.md), then close.  What
 * the client already sent is read and dropped first (fds closed), so the
 * close does not reset the connection before the client reads the reply.
 */
static void refuse(int fd, int rc, const char *fmt, ...)
{
	struct tc__buf b = TC_BUF_INIT;
	char msg[256];
	va_list ap;
	size_t off;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	off = tc__frame_begin(&b, TC_MSG_HELLO, TC_PF_REPLY, 0, 0);
	tc__buf_put_i32(&b, rc);
	tc__buf_put_str(&b, msg);
	tc__frame_finish(&b, off);
	if (!b.oom &&
	    send(fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* The client is gone or not reading: nothing to tell. */
	}
	tc__buf_release(&b);
	shutdown(fd, SHUT_WR);
	for (int i = 0; i < 4; i++) {
		uint8_t junk[4096];
		int fds[TC_MAX_FDS_PER_MSG], nfds = 0;
		struct iovec iov = { junk, sizeof(junk) };
		ssize_t n = tc__fdpass_recv(fd, iov.iov_base, iov.iov_len, fds,
					    &nfds, TC_MAX_FDS_PER_MSG);

		for (int k = 0; k < nfds; k++)
			close(fds[k]);
		if (n <= 0)
			break;
	}
	close(fd);
}

/* Close a connection that holds nothing, telling the client why: a
 * connection-level error (req_id 0) its next call returns. */
static void conn_close_told(struct conn *c, const char *why)
{
	size_t off = tc__frame_begin(&c->out, TC_MSG_HELLO, TC_PF_REPLY, 0, 0);

	tc__buf_put_i32(&c->out, TC_EBUSY);
	tc__buf_put_str(&c->out, why);
	tc__frame_finish(&c->out, off);
	tc__srv_conn_flush(c);
	tc__srv_conn_close(c, why);
}

/* Holds nothing the client could lose: no lease, put, binding, job or
 * unsent reply. */
static bool conn_empty(const struct conn *c)
{
	return !c->closing && !c->nleases && !c->npending && !c->bindings &&
	       !c->gpu_puts && !c->holds && !c->jobs &&
	       c->out_off == c->out.len;
}

/*
 * Every slot (or uid's share, uid != -1) is taken: close the connection
 * that holds nothing and has been quiet longest (at least
 * EVICT_MIN_IDLE_MS), so idle connections cannot lock a new client out.
 * Returns whether one was closed.
 */
static bool evict_idle(struct server *s, long uid, long pid, uint64_t now)
{
	struct conn *victim = NULL;

	for (struct conn *c = s->conns; c; c = c->next) {
		if ((uid >= 0 && c->uid != (uid_t)uid) ||
		    (pid >= 0 && c->pid != (pid_t)pid) || !conn_empty(c) ||
		    now - c->last_rx_ms < EVICT_MIN_IDLE_MS)
			continue;
		if (!victim || c->last_rx_ms < victim->last_rx_ms)
			victim = c;
	}
	if (!victim)
		return false;
	conn_close_told(victim, "the daemon closed this idle connection: its "
				"slot went to a new client (reconnect)");
	return true;
}

/* Live (not closing) connections, all or of one uid or pid. */
static int conns_live(const struct server *s, long uid, long pid)
{
	int n = 0;

	for (const struct conn *c = s->conns; c; c = c->next)
		if (!c->closing && (uid < 0 || c->uid == (uid_t)uid) &&
		    (pid < 0 || c->pid == (pid_t)pid))
			n++;
	return n;
}

/*
 * accept failed with EMFILE/ENFILE: the pending connection would wake the
 * loop again at once (a busy loop).  Spend the reserve fd to accept it and
 * turn it away, then take the reserve back; without a reserve, stop
 * accepting for a moment (on_tick resumes).
 */
static void accept_shed(struct server *s, int err)
{
	static struct tc__ratelimit rl;
	int fd;

	s->fd_short_ms = tc__now_ms();
	if (s->reserve_fd >= 0) {
		fd = tc__sock_accept_reserve(s->lfd, &s->reserve_fd);
		if (fd >= 0)
			refuse(fd, TC_EBUSY,
			       "the daemon is out of file descriptors (%s); "
			       "try again later",
			       strerror(err));
		tc__sock_reserve(&s->reserve_fd);
	}
	tc__log_rl(&rl, TC_LOG_WARN,
		   "accept: %s: refusing new connections until fds are "
		   "free (%d clients)",
		   strerror(err), s->nconns);
	if (s->reserve_fd < 0) {
		tc__ev_del(s->ev, s->lfd);
		s->accept_resume_ms = tc__now_ms() + 100;
	}
}

void tc__srv_on_accept(struct tc__ev *ev, int lfd, void *arg, int mask)
{
	static struct tc__ratelimit rl_uid, rl_full, rl_err;
	struct server *s = arg;

	for (int burst = 0; burst < 64; burst++) {
		uint64_t now = tc__now_ms();
		struct conn *c;
		pid_t pid;
		uid_t uid;
		gid_t gid;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				accept_shed(s, errno);
				if (s->reserve_fd < 0)
					return;
				continue;
			}
			if (errno != EAGAIN && errno != EINTR)
				tc__log_rl(&rl_err, TC_LOG_WARN,
					   "accept failed: %s",
					   strerror(errno));
			return;
		}
		if (tc__sock_peercred(fd, &pid, &uid, &gid) < 0 ||
		    (uid != getuid() && uid != 0)) {
			tc__log_rl(&rl_uid, TC_LOG_WARN,
				   "refused a connection from uid %u (pid %d)",
				   (unsigned)uid, (int)pid);
			refuse(fd, TC_EPERM,
			       "uid %u may not use this daemon (it serves uid "
			       "%u and root)",
			       (unsigned)uid, (unsigned)getuid());
			continue;
		}
		/* A process over its share, a uid over its share (root
		 * keeps the rest), or no slot left: an idle connection
		 * holding nothing (of that process or uid) gives its slot;
		 * else the newcomer is told why. */
		if (conns_live(s, -1, (long)pid) >= s->max_per_pid &&
		    !evict_idle(s, -1, (long)pid, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: it holds %d connections "
				   "(max_clients_per_pid)",
				   (int)pid, s->max_per_pid);
			refuse(fd, TC_EBUSY,
			       "process %d already holds %d connections to "
			       "the daemon (max_clients_per_pid)",
			       (int)pid, s->max_per_pid);
			continue;
		}
		if (uid != 0 &&
		    conns_live(s, (long)uid, -1) >= s->max_per_uid &&
		    !evict_idle(s, (long)uid, -1, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: uid %u holds %d "
				   "connections (max_clients_per_uid)",
				   (int)pid, (unsigned)uid, s->max_per_uid);
			refuse(fd, TC_EBUSY,
			       "uid %u already holds %d connections to the "
			       "daemon (max_clients_per_uid)",
			       (unsigned)uid, s->max_per_uid);
			continue;
		}
		if (conns_live(s, -1, -1) >= s->max_clients &&
		    !evict_idle(s, -1, -1, now)) {
			tc__log_rl(&rl_full, TC_LOG_WARN,
				   "refused pid %d: %d clients already "
				   "connected (max_clients)",
				   (int)pid, s->max_clients);
			refuse(fd, TC_EBUSY,
			       "the daemon serves %d clients already "
			       "(max_clients); try again later",
			       s->max_clients);
			continue;
		}
		c = tc__calloc(1, sizeof(*c));
		if (!c) {
			refuse(fd, -ENOMEM, "the daemon is out of memory");
			continue;
		}
		c->srv = s;
		c->fd = fd;
		c->pid = pid;
		c->uid = uid;
		c->accepted_ms = c->last_rx_ms = now;
		tc__buf_init(&c->out);
		if (tc__ev_add(s->ev, fd, TC_EV_READ, on_conn_io, c) < 0) {
			refuse(fd, TC_EBUSY,
			       "the daemon cannot watch more connections");
			tc__free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}

/* -------------------------------------------------------------- hooks */

void tc__srv_conns_sweep(struct server *s)
{
	for (struct conn **pp = &s->conns; *pp;) {
		struct conn *c = *pp;

		/* One more share for each connection with frames waiting
		 * (round robin: every connection gets a turn per loop). */
		if (!c->closing && c->backlog && !c->paused &&
		    c->out.len - c->out_off <= OUT_PAUSE_BYTES &&
		    c->nofds < OUT_PAUSE_FDS) {
			tc__srv_conn_process(c);
			if (c->backlog && !c->paused &&
			    c->out.len - c->out_off <= OUT_PAUSE_BYTES &&
			    c->nofds < OUT_PAUSE_FDS)
				tc__ev_no_sleep(s->ev);
		}

		if (c->closing && c->jobs == 0) {
			*pp = c->next;
			conn_free(c);
		} else {
			pp = &c->next;
		}
	}
}

void tc__srv_conns_tick(struct server *s, uint64_t now)
{
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->closing)
			continue;
		if (!c->hello &&
		    now - c->accepted_ms > (uint64_t)s->cfg->handshake_ms)
			tc__srv_conn_close(
				c, "no HELLO within the handshake timeout");
		else if (c->out_progress_ms &&
			 now - c->out_progress_ms >
				 (uint64_t)s->cfg->write_stall_ms)
			tc__srv_conn_close(c,
					   "client reads none of its replies "
					   "(write_stall_ms)");
		else if (s->cfg->idle_timeout_ms && conn_empty(c) &&
			 now - c->last_rx_ms >
				 (uint64_t)s->cfg->idle_timeout_ms)
			conn_close_told(c, "the daemon closed this idle "
					   "connection (idle_timeout_ms)");
		else if (c->progress_job)
			tc__srv_send_progress(c, now);
	}
}
