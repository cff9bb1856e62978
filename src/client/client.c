/*
 * client.c - libtcast: connection, request/reply, import, put, attach.
 *
 * A client is one blocking Unix-socket connection; requests on it are
 * serialised by a mutex.  Replies are matched by req_id; PROGRESS frames
 * for the request in flight are turned into progress callbacks.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_internal.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/hash.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "net/net.h"
#include "tcast/errors.h"
#include "tcast/version.h"

#define CLIENT_FDQ 8

struct tc_client {
	_Atomic int refs;
	int fd;
	pthread_mutex_t lock; /* one request at a time; guards all below */
	uint32_t next_req;
	int32_t daemon_pid;
	uint64_t epoch;
	bool broken;  /* the connection failed; every call says so */
	bool refused; /* a send failed: read the daemon's reason once */
	uint8_t *in;
	size_t in_off, in_len, in_cap;
	int fdq[CLIENT_FDQ];
	int nfdq;
	char errmsg[1024];
	uint32_t persist;		      /* of the last created artifact */
	uint64_t view_read_bytes, view_reads; /* of the last tc_import_view */
	char degraded[512]; /* and what its policy could not do */
};

/* ------------------------------------------------------------- errors */

static int set_err(tc_client *c, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int set_err(tc_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

TC_API const char *tc_client_errmsg(const tc_client *c)
{
	return c ? c->errmsg : "no client";
}

TC_API void tc_free(void *p)
{
	free(p);
}

TC_API int tc_default_socket(char *buf, size_t len)
{
	return tc__sock_default_path(buf, len);
}

/* ---------------------------------------------------------- transport */

/* An error reply's status and, when the body carries one, the daemon's
 * message onto the handle.  Returns status. */
static int error_reply(tc_client *c, struct tc__cur *cur, int status)
{
	const char *m;
	size_t ml;

	if (tc__cur_read_str(cur, TC_PROTO_MAX_STR, &m, &ml) == 0)
		return set_err(c, status, "%.*s", (int)ml, m);
	return set_err(c, status, "%s", tc_strerror(status));
}

static void client_break(tc_client *c, const char *why)
{
	if (!c->broken)
		set_err(c, TC_ECLOSED, "connection to the daemon lost: %s",
			why);
	c->broken = true;
	shutdown(c->fd, SHUT_RDWR);
	for (int i = 0; i < c->nfdq; i++)
		close(c->fdq[i]);
	c->nfdq = 0;
}

/* Send a whole frame; fds go with its first byte. */
static int send_frame(tc_client *c, const uint8_t *p, size_t len,
		      const int *fds, int nfds)
{
	while (len > 0) {
		struct iovec iov = { (void *)p, len };
		ssize_t n = tc__fdpass_send(c->fd, &iov, 1, fds, nfds);

		if (n < 0) {
			/* The daemon may have turned us away and closed:
			 * its reason may wait to be read (call_locked). */
			if ((n == -EPIPE || n == -ECONNRESET) && !c->refused) {
				c->refused = true;
				set_err(c, TC_ECLOSED,
					"connection to the daemon lost: %s",
					strerror((int)-n));
				return TC_ECLOSED;
			}
			client_break(c, strerror((int)-n));
			return TC_ECLOSED;
		}
		p += n;
		len -= (size_t)n;
		nfds = 0;
		fds = NULL;
	}
	return 0;
}

/* Read until a whole frame is buffered; returns its header. */
static int read_frame(tc_client *c, struct tc__frame_hdr *h)
{
	char err[256];

	for (;;) {
		size_t avail = c->in_len - c->in_off;
		int fds[TC_MAX_FDS_PER_MSG], nfds;
		ssize_t n;

		if (avail >= TC_FRAME_HDR) {
			int rc = tc__frame_decode(c->in + c->in_off, h, err,
						  sizeof(err));

			if (rc < 0) {
				client_break(c, err);
				return TC_ECLOSED;
			}
			if (avail >= TC_FRAME_HDR + (size_t)h->body_len)
				return 0;
		}
		if (tc__rxbuf_room(&c->in, &c->in_cap, &c->in_off, &c->in_len,
				   65536, SIZE_MAX) < 0)
			return set_err(c, -ENOMEM, "out of memory");
		n = tc__fdpass_recv(c->fd, c->in + c->in_len,
				    c->in_cap - c->in_len, fds, &nfds,
				    TC_MAX_FDS_PER_MSG);
		if (n <= 0) {
			client_break(c, n == 0 ?
						"daemon closed the connection" :
						tc_strerror((int)n));
			return TC_ECLOSED;
		}
		if (c->nfdq + nfds > CLIENT_FDQ) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			client_break(c, "daemon sent too many fds");
			return TC_ECLOSED;
		}
		memcpy(c->fdq + c->nfdq, fds, sizeof(int) * (size_t)nfds);
		c->nfdq += nfds;
		c->in_len += (size_t)n;
	}
}

/*
 * Send the request frame in `req` (built with tc__frame_begin/finish) and
 * wait for its reply.  On success the reply body (after the status) is in
 * rep->body and its fds in rep->fds, both owned by the caller (release with
 * reply_release).  A negative status from the daemon is returned with its
 * message in c->errmsg.  Caller holds c->lock.
 */
static int call_locked(tc_client *c, struct tc__buf *req, const int *fds,
		       int nfds, const struct tc_opts *o, struct reply *rep,
		       int (*after_send)(void *), void *arg)
{
	struct tc__frame_hdr h;
	uint32_t id;
	int rc;

	memset(rep, 0, sizeof(*rep));
	if (c->broken)
		return TC_ECLOSED;
	if (req->oom)
		return set_err(
			c, req->len > TC_PROTO_MAX_BODY ? TC_ELIMIT : -ENOMEM,
			"request too large or out of memory");
	id = (uint32_t)(req->data[12] | req->data[13] << 8 |
			req->data[14] << 16 | (uint32_t)req->data[15] << 24);
	rc = send_frame(c, req->data, req->len, fds, nfds);
	if (rc < 0 && !c->refused)
		return rc;
	/* Whatever goes beside the request (a folder's shard fds) goes once
	 * the daemon can start reading it, so it cannot fill a buffer first. */
	if (after_send) {
		rc = after_send(arg);
		if (rc < 0) {
			client_break(c, "cannot send the shards");
			return rc;
		}
	}
	for (;;) {
		const uint8_t *body;
		struct tc__cur cur;
		int32_t status;

		rc = read_frame(c, &h);
		if (rc < 0)
			return rc;
		body = c->in + c->in_off + TC_FRAME_HDR;
		c->in_off += TC_FRAME_HDR + h.body_len;
		if (h.nfds > c->nfdq) {
			client_break(c, "reply fds missing");
			return TC_ECLOSED;
		}
		/* Take this frame's fds before anything can fail. */
		rep->nfds = h.nfds;
		memcpy(rep->fds, c->fdq, sizeof(int) * h.nfds);
		c->nfdq -= h.nfds;
		memmove(c->fdq, c->fdq + h.nfds, sizeof(int) * (size_t)c->nfdq);
		tc__cur_init(&cur, body, h.body_len);
		if (h.req_id == 0 && (h.flags & TC_PF_REPLY) &&
		    tc__cur_read_i32(&cur, &status) == 0 && status < 0) {
			/* A connection-level error (the daemon refused us or
			 * could not read a header): say why, then stop. */
			reply_release(rep);
			c->broken = true;
			return error_reply(c, &cur, status);
		}
		if (h.req_id != id) {
			reply_release(rep);
			client_break(c, "reply to a request never sent");
			return TC_ECLOSED;
		}
		tc__cur_init(&cur, body, h.body_len);
		if (h.type == TC_MSG_PROGRESS && !(h.flags & TC_PF_REPLY)) {
			uint64_t done, total;

			reply_release(rep);
			if (tc__cur_read_u64(&cur, &done) == 0 &&
			    tc__cur_read_u64(&cur, &total) == 0 && o &&
			    (o->field_mask & TC_OPT_PROGRESS) && o->progress)
				o->progress(done, total, o->progress_arg);
			continue;
		}
		if (!(h.flags & TC_PF_REPLY) ||
		    tc__cur_read_i32(&cur, &status)) {
			reply_release(rep);
			client_break(c, "malformed reply");
			return TC_ECLOSED;
		}
		if (status < 0) {
			reply_release(rep);
			return error_reply(c, &cur, status);
		}
		rep->data = tc__malloc(cur.left ? cur.left : 1);
		if (!rep->data) {
			reply_release(rep);
			return set_err(c, -ENOMEM, "out of memory");
		}
		memcpy(rep->data, cur.p, cur.left);
		tc__cur_init(&rep->body, rep->data, cur.left);
		return 0;
	}
}

int tc__client_call(tc_client *c, struct tc__buf *req, const int *fds, int nfds,
		    const struct tc_opts *o, struct reply *rep)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = call_locked(c, req, fds, nfds, o, rep, NULL, NULL);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void reply_release(struct reply *rep)
{
	for (int i = 0; i < rep->nfds; i++)
		close(rep->fds[i]);
	rep->nfds = 0;
	tc__free(rep->data);
	rep->data = NULL;
}

size_t tc__client_begin(tc_client *c, struct tc__buf *b, int type)
{
	uint32_t id;

	pthread_mutex_lock(&c->lock);
	id = ++c->next_req;
	pthread_mutex_unlock(&c->lock);
	return tc__frame_begin(b, type, 0, id, 0);
}

/* Fire-and-forget frame (RELEASE): no reply is read. */
int tc__client_send(tc_client *c, struct tc__buf *req)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = c->broken ? TC_ECLOSED :
			 send_frame(c, req->data, req->len, NULL, 0);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ------------------------------------------------------------ lifecycle */

/* TCAST_LOG_LEVEL (error, warn, info, debug) sets what libtcast itself
 * logs to stderr in this process: warn by default. */
static void log_level_from_env(void)
{
	const char *v = getenv("TCAST_LOG_LEVEL");
	int l = v && *v ? tc__log_parse_level(v) : -1;

	if (l >= 0)
		tc__log_level = l;
}

TC_API int tc_client_connect(const char *socket_path, tc_client **out,
			     char *err, size_t errlen)
{
	static pthread_once_t log_once = PTHREAD_ONCE_INIT;

	char path[PATH_MAX];
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	tc_client *c;
	size_t off;
	uint32_t ver, pid;
	int rc, fd, trust_root;

	*out = NULL;
	pthread_once(&log_once, log_level_from_env);
	if (!err || !errlen) {
		err = path; /* scratch; the message is dropped */
		errlen = sizeof(path);
	}
	if (!socket_path || !*socket_path) {
		if (tc__sock_default_path(path, sizeof(path)) < 0) {
			snprintf(err, errlen, "default socket path too long");
			return TC_ELIMIT;
		}
		socket_path = path;
	}
	/* Nothing is sent (not even HELLO, certainly no file descriptor)
	 * until the socket's directory and the process answering on it are
	 * known to be the user's own: a squatted /tmp/tcast-$UID would
	 * otherwise receive our files and serve us its bytes. */
	trust_root = tc__sock_trust_root();
	rc = tc__sock_check_dir(socket_path, trust_root, err, errlen);
	if (rc == -ENOENT) {
		snprintf(err, errlen,
			 "cannot connect to the daemon at '%s': %s (start it "
			 "with 'tcast daemon start')",
			 socket_path, strerror(ENOENT));
		return TC_ENODAEMON;
	}
	if (rc < 0)
		return rc == -EACCES ? TC_EPERM : rc;
	rc = tc__sock_connect(socket_path, &fd);
	if (rc == 0) {
		rc = tc__sock_check_peer(fd, trust_root, err, errlen);
		if (rc < 0) {
			close(fd);
			return rc;
		}
	} else {
		snprintf(err, errlen,
			 "cannot connect to the daemon at '%s': %s%s",
			 socket_path, strerror(-rc),
			 rc == -ENOENT || rc == -ECONNREFUSED ?
				 " (start it with 'tcast daemon start')" :
				 "");
		return rc == -ENOENT || rc == -ECONNREFUSED ? TC_ENODAEMON :
		       rc == -EACCES			    ? TC_EPERM :
							      rc;
	}
	c = tc__calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	atomic_init(&c->refs, 1);
	c->fd = fd;
	pthread_mutex_init(&c->lock, NULL);

	off = tc__client_begin(c, &b, TC_MSG_HELLO);
	tc__buf_put_u32(&b, TC_PROTO_VERSION);
	tc__buf_put_u32(&b, (uint32_t)getpid());
	tc__buf_put_str(&b, program_invocation_short_name);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0) {
		snprintf(err, errlen, "handshake with '%s' failed: %s",
			 socket_path, c->errmsg);
		tc_client_close(c);
		return rc;
	}
	if (tc__cur_read_u32(&rep.body, &ver) < 0 ||
	    tc__cur_read_u64(&rep.body, &c->epoch) < 0 ||
	    tc__cur_read_u32(&rep.body, &pid) < 0) {
		reply_release(&rep);
		snprintf(err, errlen, "malformed HELLO reply");
		tc_client_close(c);
		return TC_EPROTO;
	}
	c->daemon_pid = (int32_t)pid;
	reply_release(&rep);
	*out = c;
	return 0;
}

void tc__client_ref(tc_client *c)
{
	atomic_fetch_add(&c->refs, 1);
}

TC_API void tc_client_close(tc_client *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	close(c->fd);
	for (int i = 0; i < c->nfdq; i++)
		close(c->fdq[i]);
	tc__free(c->in);
	pthread_mutex_destroy(&c->lock);
	tc__free(c);
}

TC_API int32_t tc_client_daemon_pid(const tc_client *c)
{
	return c->daemon_pid;
}

TC_API uint64_t tc_client_daemon_epoch(const tc_client *c)
{
	return c->epoch;
}

int tc__client_err(tc_client *c, int rc, const char *msg)
{
	return set_err(c, rc, "%s", msg);
}

/* --------------------------------------------------------------- import */

static const char *opt_str(const struct tc_opts *o, uint64_t bit, const char *s)
{
	return o && (o->field_mask & bit) && s ? s : "";
}

void tc__client_put_opts(struct tc__buf *b, const struct tc_opts *o,
			 uint32_t flags)
{
	tc__buf_put_str(b, opt_str(o, TC_OPT_KEY, o ? o->key : NULL));
	tc__buf_put_str(b, opt_str(o, TC_OPT_POLICY, o ? o->policy : NULL));
	if (o && (o->field_mask & TC_OPT_EXPECT))
		flags |= TC_RF_EXPECT;
	if (o && (o->field_mask & TC_OPT_PROGRESS) && o->progress)
		flags |= TC_RF_PROGRESS;
	if (o && (o->field_mask & TC_OPT_TTL) && o->ttl_ms)
		flags |= TC_RF_TTL;
	if (o && (o->field_mask & TC_OPT_NOWAIT))
		flags |= TC_RF_NOWAIT;
	tc__buf_put_u32(b, flags);
	tc__buf_put_u64(
		b, o && (o->field_mask & TC_OPT_EXPECT) ? o->expect_gen : 0);
	if (flags & TC_RF_TTL)
		tc__buf_put_u64(b, o->ttl_ms);
}

int tc__client_read_result(tc_client *c, struct reply *rep,
			   struct tc_result *res)
{
	struct tc_result r = { 0 };

	if (tc__cur_read_strcpy(&rep->body, r.id, sizeof(r.id)) < 0 ||
	    tc__cur_read_u64(&rep->body, &r.bytes) < 0 ||
	    tc__cur_read_u32(&rep->body, &r.ntensors) < 0 ||
	    tc__cur_read_u64(&rep->body, &r.nanoseconds) < 0 ||
	    tc__cur_read_u32(&rep->body, &r.deduplicated) < 0 ||
	    tc__cur_read_u64(&rep->body, &r.key_generation) < 0)
		return set_err(c, TC_EPROTO, "malformed result");
	/* Daemons before the shared-disk tier end the reply here. */
	c->persist = TC_PERSIST_MEMORY;
	c->degraded[0] = '\0';
	if (rep->body.left && (tc__cur_read_u32(&rep->body, &c->persist) < 0 ||
			       tc__cur_read_strcpy(&rep->body, c->degraded,
						   sizeof(c->degraded)) < 0))
		return set_err(c, TC_EPROTO, "malformed result");
	if (res)
		*res = r;
	return 0;
}

TC_API int tc_last_persistence(tc_client *c, char *degraded, size_t len)
{
	if (degraded && len)
		snprintf(degraded, len, "%s", c->degraded);
	return (int)c->persist;
}

/* The shard fds of a folder, sent on the socket IMPORT carried. */
struct shard_stream {
	int sock;
	const struct tc__source *src;
};

static int send_shards(void *arg)
{
	struct shard_stream *ss = arg;
	int fds[TC_IMPORT_FDS_PER_MSG];

	for (uint32_t i = 0; i < ss->src->nfiles;) {
		struct iovec iov = { (void *)"s", 1 };
		int n = 0;
		ssize_t w;

		while (n < TC_IMPORT_FDS_PER_MSG && i < ss->src->nfiles)
			fds[n++] = ss->src->files[i++].fd;
		w = tc__fdpass_send(ss->sock, &iov, 1, fds, n);
		if (w < 0)
			return (int)w;
	}
	shutdown(ss->sock, SHUT_WR);
	return 0;
}

/*
 * A folder is resolved here, in the client, with the client's rights
 * (index, shards, Hugging Face snapshot symlinks): the daemon receives the
 * open shard fds and never opens a path on the client's behalf, so it can
 * read nothing the client could not.
 */
static int import_folder_frame(tc_client *c, int dirfd, const char *display,
			       const struct tc_opts *o, struct tc__buf *b,
			       size_t off, struct reply *rep)
{
	struct tc__source *src;
	struct shard_stream ss;
	char err[1024];
	int sp[2], rc;

	rc = tc__source_open_fd(dirfd, display, &src, err, sizeof(err));
	if (rc < 0)
		return set_err(c, rc, "%s", err);
	tc__buf_put_u32(b, src->nfiles);
	for (uint32_t i = 0; i < src->nfiles; i++)
		tc__buf_put_str(b, src->files[i].name);
	tc__frame_finish(b, off);
	b->data[off + 20] = 1; /* nfds: the socket */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		rc = set_err(c, -errno, "socketpair: %s", strerror(errno));
		tc__source_free(src);
		return rc;
	}
	ss.sock = sp[0];
	ss.src = src;
	pthread_mutex_lock(&c->lock);
	rc = call_locked(c, b, &sp[1], 1, o, rep, send_shards, &ss);
	pthread_mutex_unlock(&c->lock);
	close(sp[0]);
	close(sp[1]);
	tc__source_free(src);
	return rc;
}

/* IMPORT of `path`; with `view` (a JSON view spec) only its byte ranges,
 * straight to the GPU o->device, named by `gpu_ref` (an ordinal ref) or,
 * when NULL, by its UUID. */
static int import_once(tc_client *c, const char *path, const char *view,
		       const struct tc_opts *o, struct tc_result *res,
		       const char *gpu_ref)
{
	struct tc__buf b = TC_BUF_INIT;
	char display[PATH_MAX];
	struct reply rep;
	struct stat st;
	size_t off;
	uint32_t shards;
	int fd, rc;

	/* O_NONBLOCK: opening a FIFO must not hang; the daemon refuses
	 * anything but a regular file or a folder. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return set_err(c, -errno, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st) < 0 ||
	    !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
		close(fd);
		return set_err(c, TC_EINVAL,
			       "'%s' is not a regular file or a folder", path);
	}
	if (!realpath(path, display))
		snprintf(display, sizeof(display), "%s", path);
	shards = S_ISDIR(st.st_mode) ? TC_RF_SHARDS : 0;
	off = tc__client_begin(c, &b, TC_MSG_IMPORT);
	tc__buf_put_str(&b, display);
	if (o && (o->field_mask & TC_OPT_DEVICE)) {
		struct tc__gpu_info info;
		char err[512];

		/* Ordinals are per process: the daemon is told the UUID, or
		 * the ordinal with the environment that decides it. */
		rc = gpu_ref ? 0 :
			       tc__gpu_device_info(o->device, &info, err,
						   sizeof(err));
		if (rc < 0) {
			tc__buf_release(&b);
			close(fd);
			return tc__client_err(c, rc, err);
		}
		tc__client_put_opts(
			&b, o, TC_RF_GPU | shards | (view ? TC_RF_VIEW : 0));
		tc__buf_put_u32(&b, TC_GPU_ANY_DEVICE);
		tc__buf_put_str(&b, gpu_ref ? gpu_ref : info.uuid_str);
		if (view)
			tc__buf_put_str(&b, view);
	} else {
		tc__client_put_opts(&b, o, shards);
	}
	if (shards) {
		/* The frame is finished by import_folder's call once the
		 * shard names are in. */
		rc = import_folder_frame(c, fd, display, o, &b, off, &rep);
	} else {
		tc__frame_finish(&b, off);
		b.data[off + 20] = 1; /* nfds */
		rc = tc__client_call(c, &b, &fd, 1, o, &rep);
	}
	tc__buf_release(&b);
	close(fd);
	if (rc < 0)
		return rc;
	rc = tc__client_read_result(c, &rep, res);
	c->view_read_bytes = c->view_reads = 0;
	if (rc == 0 && view &&
	    (tc__cur_read_u64(&rep.body, &c->view_read_bytes) < 0 ||
	     tc__cur_read_u64(&rep.body, &c->view_reads) < 0))
		rc = set_err(c, TC_EPROTO, "malformed result of a view import");
	reply_release(&rep);
	return rc;
}

static int import(tc_client *c, const char *path, const char *view,
		  const struct tc_opts *o, struct tc_result *res)
{
	char ref[TC_GPU_REF_MAX];
	int rc;

	/* A process without the driver (the CLI) lets the daemon resolve its
	 * ordinal rather than pay a cuInit to learn the UUID; a daemon in
	 * another CUDA environment says so and the UUID goes instead. */
	if (o && (o->field_mask & TC_OPT_DEVICE) &&
	    tc__gpu_driver_untouched() &&
	    tc__gpu_ordinal_ref(o->device, ref, sizeof(ref)) == 0) {
		rc = import_once(c, path, view, o, res, ref);
		if (rc != TC_EDEVICE)
			return rc;
	}
	return import_once(c, path, view, o, res, NULL);
}

TC_API void tc_last_import_reads(tc_client *c, uint64_t *bytes, uint64_t *reads)
{
	if (bytes)
		*bytes = c->view_read_bytes;
	if (reads)
		*reads = c->view_reads;
}

TC_API int tc_import(tc_client *c, const char *path, const struct tc_opts *o,
		     struct tc_result *res)
{
	return import(c, path, NULL, o, res);
}

TC_API int tc_import_view(tc_client *c, const char *path, const char *view,
			  const struct tc_opts *o, struct tc_result *res)
{
	if (!view || !o || !(o->field_mask & TC_OPT_DEVICE))
		return set_err(c, view ? TC_ENOTSUP : TC_EINVAL,
			       view ? "a view of a file is imported straight "
				      "to a GPU only (TC_OPT_DEVICE)" :
				      "tc_import_view: NULL view spec");
	if (strlen(view) > TC_PROTO_MAX_VIEW)
		return set_err(c, TC_ELIMIT,
			       "view spec of %zu bytes (at most %zu)",
			       strlen(view), TC_PROTO_MAX_VIEW);
	return import(c, path, view, o, res);
}

/* ------------------------------------------------------- simple verbs */

/* Send a request whose body is `nstr` strings, expect a JSON string. */
static int call_strings(tc_client *c, int type, const char *a, const char *k,
			char **json_out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	const char *s;
	size_t off, n;
	int rc;

	if (json_out)
		*json_out = NULL;
	off = tc__client_begin(c, &b, type);
	if (a)
		tc__buf_put_str(&b, a);
	if (k)
		tc__buf_put_str(&b, k);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	if (json_out) {
		if (tc__cur_read_str(&rep.body, TC_PROTO_MAX_JSON, &s, &n) <
		    0) {
			reply_release(&rep);
			return set_err(c, TC_EPROTO, "malformed JSON reply");
		}
		*json_out = malloc(n + 1);
		if (!*json_out) {
			reply_release(&rep);
			return set_err(c, -ENOMEM, "out of memory");
		}
		memcpy(*json_out, s, n);
		(*json_out)[n] = '\0';
	}
	reply_release(&rep);
	return 0;
}

TC_API int tc_status_json(tc_client *c, char **out)
{
	return call_strings(c, TC_MSG_STATUS, NULL, NULL, out);
}

TC_API int tc_list_json(tc_client *c, char **out)
{
	return call_strings(c, TC_MSG_LIST, NULL, NULL, out);
}

TC_API int tc_inspect_json(tc_client *c, const char *ref, char **out)
{
	return call_strings(c, TC_MSG_INSPECT, ref, NULL, out);
}

TC_API int tc_keys_json(tc_client *c, const char *key, char **out)
{
	return call_strings(c, TC_MSG_KEYS, key ? key : "", NULL, out);
}

TC_API int tc_rm(tc_client *c, const char *ref)
{
	return call_strings(c, TC_MSG_RM, ref, NULL, NULL);
}

TC_API int tc_rm2(tc_client *c, const char *ref, uint32_t flags)
{
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	size_t off;
	int rc;

	if (!flags)
		return tc_rm(c, ref);
	off = tc__client_begin(c, &b, TC_MSG_RM);
	tc__buf_put_str(&b, ref);
	tc__buf_put_u32(&b, flags);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	reply_release(&rep);
	return 0;
}

TC_API int tc_key_set(tc_client *c, const char *key, const char *id,
		      int has_expect, uint64_t expect_gen, uint64_t *gen)
{
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	uint64_t g = 0;
	size_t off;
	int rc;

	off = tc__client_begin(c, &b, TC_MSG_KEY_SET);
	tc__buf_put_str(&b, key);
	tc__buf_put_str(&b, id);
	tc__buf_put_u32(&b, has_expect ? TC_RF_EXPECT : 0);
	tc__buf_put_u64(&b, expect_gen);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	rc = tc__cur_read_u64(&rep.body, &g);
	reply_release(&rep);
	if (rc < 0)
		return set_err(c, TC_EPROTO, "malformed KEY_SET reply");
	if (gen)
		*gen = g;
	return 0;
}
