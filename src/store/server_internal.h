/*
 * server_internal.h - what the daemon's server files share: connections,
 * the server, the request being handled, and the reply helpers.
 *
 * Private to src/store (server.c owns the loop and the connections;
 * binding.c the BIND/SWAP/UNBIND handlers).  Everything here runs on the
 * loop thread.
 */
#ifndef TC_SERVER_INTERNAL_H
#define TC_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "config.h"
#include "jobs.h"
#include "net/ev.h"
#include "obj.h"
#include "proto/proto.h"
#include "shm.h"

struct tc__gpu_tier;
struct tc__gpu_replica;
struct binding;

#define FDQ_MAX		 8     /* fds a connection may have in flight */
#define READ_CHUNK	 65536 /* bytes read per readable event at most */
#define MAX_PENDING_PUTS 64    /* unsealed puts per connection */
#define PROGRESS_MS	 200   /* interval of PROGRESS frames */
/* Per connection and loop turn: at most this many frames are handled, and
 * none while more than OUT_PAUSE_BYTES or OUT_PAUSE_FDS of replies wait to
 * be sent (checked before each request runs).  The rest waits for a later
 * turn, so one client's pipeline cannot hold the loop or grow its queue
 * without bound while others wait. */
#define FRAMES_PER_TURN	    16
#define BODY_BYTES_PER_TURN ((size_t)1 << 20) /* after the first frame */
#define OUT_PAUSE_BYTES	    ((size_t)4 << 20)
#define OUT_PAUSE_FDS	    16
/* A connection holding nothing, quiet this long, may give its slot to a
 * new client when every slot is taken. */
#define EVICT_MIN_IDLE_MS 1000
/* Import workers: one per import in flight, up to this many, so imports
 * blocked for good in a hung mount do not starve the others. */
#define IO_JOBS_MAX 64
/* How long a stop waits for imports blocked in I/O. */
#define STOP_IO_WAIT_MS 2000

struct server;

/* One lease a connection holds: `n` attaches of `o` not yet released, of
 * its host replica (rep NULL) or of one GPU replica. */
struct lease {
	struct tc__obj *o;
	struct tc__gpu_replica *rep;
	uint32_t n;
};

/* A put between CREATE and SEAL: the artifact is not visible yet. */
struct pending {
	uint64_t handle;
	struct tc__obj *o; /* owned until inserted */
	char key[TC_KEY_MAX + 1];
	uint32_t flags;
	uint64_t expect_gen;
	uint64_t t0_ns;
	struct pending *next;
};

/* An fd attachment in the output buffer: sent with byte `at`.  The fds
 * are the queue's own (dups), closed once sent or with the connection. */
struct out_fds {
	size_t at;
	int fds[TC_PROTO_MAX_FDS];
	int n;
};

struct conn {
	struct server *srv;
	int fd;
	pid_t pid;
	uid_t uid;
	bool hello;   /* handshake done */
	bool closing; /* reap in before_sleep */
	int jobs;     /* jobs in flight for this connection */
	bool paused;  /* a job runs: frames wait in `in` */
	uint64_t accepted_ms;
	uint64_t last_rx_ms;	  /* bytes last arrived */
	uint64_t out_progress_ms; /* replies waiting since; 0 = none */
	bool backlog;		  /* complete frames left for a later turn */
	char name[64];

	uint8_t *in; /* owned input buffer */
	size_t in_off, in_len, in_cap;
	int fdq[FDQ_MAX]; /* received fds not yet claimed */
	int nfdq;

	struct tc__buf out; /* frames not yet sent */
	size_t out_off;
	struct out_fds *ofds; /* owned array, in `at` order */
	int nofds, cap_ofds;

	struct lease *leases; /* owned array */
	uint32_t nleases, cap_leases;
	struct pending *pending;
	struct binding *bindings; /* BIND allocations this client owns */
	uint64_t next_binding;
	uint32_t npending;
	uint64_t next_handle;

	/* An import in flight wants PROGRESS frames with this req_id. */
	struct import_job *progress_job;
	uint32_t progress_req;
	uint64_t progress_next_ms;

	struct conn *next;
	char err[512]; /* message of the request being handled */
};

struct server {
	const struct tc__store_config *cfg;
	struct tc__ev *ev;
	struct tc__jobs *jobs;
	struct tc__objs objs;
	struct tc__gpu_tier *gpu;
	int lfd;
	int sigfd;
	int reserve_fd;		   /* spent to shed a connection on EMFILE */
	int max_clients;	   /* cfg's, lowered to fit RLIMIT_NOFILE */
	int max_per_uid;	   /* connections one non-root uid may hold */
	int max_per_pid;	   /* connections one process may hold */
	uint64_t accept_resume_ms; /* accepting paused until (fds ran out) */
	struct tc__jobs *io_jobs;  /* imports: I/O that may hang */
	struct conn *conns;
	int nconns;
	uint64_t epoch;
	uint64_t start_ms;
	uint64_t n_attach, n_import, n_put, n_proto_err, n_attach_gpu;
	/* The spare (shm.h): one segment allocated ahead at idle, charged to
	 * the budget, taken by the next import or put that fits, and dropped
	 * first when a request needs its room. */
	struct tc__shm *spare;
	uint64_t spare_target;	/* bytes to keep ready; 0 = off */
	bool spare_filling;	/* a job is allocating the next one */
	uint64_t spare_charged; /* budget bytes held by the spare (ready or
				   being allocated) */
	bool stopping;
};

/* A frame being handled: its header, body cursor and claimed fds. */
struct req {
	struct tc__frame_hdr h;
	uint64_t t0_ns; /* arrival, for the latency metrics; 0: not timed */
	struct tc__cur body;
	int fds[TC_PROTO_MAX_FDS];
	int nfds;
};

/* ---- reply helpers (server.c) ---------------------------------------- */

/* Begin a reply frame with status 0; returns the header offset. */
size_t tc__srv_reply_begin(struct conn *c, const struct req *r);
void tc__srv_reply_end(struct conn *c, size_t off);
/* Attach fds to the reply frame that starts at `off`: borrowed fds
 * (owned false) are duplicated, so the queue owns what it will send
 * whatever happens to their objects meanwhile; owned ones are taken.
 * Returns 0 or -errno (nothing taken). */
int tc__srv_reply_fds(struct conn *c, size_t off, const int *fds, int n,
		      bool owned);
/* A reply carrying rc and c->err (or rc's message). */
void tc__srv_reply_error(struct conn *c, const struct req *r, int rc);
/* Send what is queued; go on with frames that waited (after a job). */
void tc__srv_conn_flush(struct conn *c);
void tc__srv_conn_process(struct conn *c);
/* Read a string field of the request into dst; sets c->err on failure. */
int tc__srv_read_str(struct conn *c, struct req *r, const char *what, char *dst,
		     size_t dstlen);

/* Refresh the metrics gauges (server_metrics.c): at most every 250 ms
 * unless `force`. */
void tc__srv_metrics_publish(struct server *s, uint64_t now_ms, bool force);
/* TC_EPROTO (c->err set) when bytes follow the last field of the body. */
int tc__srv_body_end(struct conn *c, struct req *r);

/* ---- bindings (binding.c) -------------------------------------------- */

int on_bind(struct conn *c, struct req *r);
int on_swap(struct conn *c, struct req *r);
int on_unbind(struct conn *c, struct req *r);
/* Free every binding of a closed connection (no job may be running). */
void tc__srv_bindings_free(struct conn *c);

#endif /* TC_SERVER_INTERNAL_H */
