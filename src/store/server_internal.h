/*
 * server_internal.h - what the daemon's server files share: connections,
 * the server, the request being handled, and the reply helpers.
 *
 * Private to src/store.  The daemon's files, each with one job:
 *   server.c    start-up, signals, the loop's hooks, shutdown
 *   conn.c      connections: accept, read, send, close, shedding, idle
 *               eviction (connection I/O only: no request knowledge)
 *   dispatch.c  frames -> the msgs.def handler table
 *   request.c   reply helpers and the deferred reply (defer / finish)
 *   ops_admin.c HELLO STATUS LIST INSPECT RM PROGRESS
 *   ops_put.c   CREATE SEAL ABORT, the spare segment, artifact memory
 *   ops_import.c IMPORT and its PROGRESS frames
 *   ops_attach.c ATTACH RELEASE ATTACH_GPU RELEASE_GPU and the leases
 *   ops_keys.c  KEY_SET KEYS
 *   binding.c   BIND SWAP UNBIND
 * Everything here runs on the loop thread.
 */
#ifndef TC_SERVER_INTERNAL_H
#define TC_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <sys/types.h>

#include "common/buf.h"
#include "config.h"
#include "xfer/jobs.h"
#include "net/ev.h"
#include "obj.h"
#include "proto/proto.h"
#include "shm.h"

struct tc__gpu_tier;
struct tc__gpu_replica;
struct tc__cluster;
struct tc__spill;
struct binding;
struct ha_rep;

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
/* Followers at once: a few per GPU group of views filling together. */
#define FOLLOW_JOBS_MAX 32
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

/* What a put or import owes the shared-disk tier (srv_durable.c): set on
 * the loop at the request, written by the worker that seals, committed on
 * the loop after insert. */
struct persist_req {
	bool on;		 /* the policy needs the shared disk */
	bool wait;		 /* written before the reply */
	bool written;		 /* the worker wrote (rc says how) */
	enum tc__policy policy;	 /* what was asked for */
	uint64_t ttl_ms;	 /* 0 = none */
	int dirfd;		 /* the shared folder, borrowed */
	char root[PATH_MAX + 8]; /* its name, for messages */
	int rc;			 /* the write's result */
	char err[512];		 /* and its message */
	bool tee;		 /* an import straight to a GPU: the loader
				    writes the copy from the same read (the
				    artifact has no host copy to write from
				    after), always before the reply */
	/* The write's copy, a FILLING replica of the shared-disk tier
	 * (tc__srv_persist_begin) until tc__srv_persist_commit records it
	 * (READY) or it is dropped (tc__srv_persist_end); NULL when no
	 * write is under way.  Loop only. */
	struct tc__dart *fill;
};

/* A put between CREATE and SEAL: the artifact is not visible yet. */
/*
 * A key publish that the global store decides before the daemon
 * acknowledges it (ops_keys.c; docs/cluster.md "Keys across the
 * cluster").  In a cluster, a compare-and-swap (TC_RF_EXPECT) and the
 * creation of a key this daemon does not have are KEY_SETs at the global
 * store first, on an I/O worker (the loop never waits on the network);
 * the local table then takes the store's answer and its generation.
 * `on` is set on the loop (tc__srv_key_gate_init), the rest by the
 * worker (tc__srv_key_gate_run) and read back on the loop after the job.
 */
struct key_gate {
	bool on;       /* the global store decides this publish */
	int rc;	       /* its answer: 0 or a code */
	uint64_t gen;  /* the cluster's generation after it */
	char err[512]; /* why, when rc < 0 */
	/* A plain set of a key this daemon has: what it names here ("" for
	 * nothing).  The same id is a local confirm; another asks the
	 * global store, whose key may have moved on (a pull of the key). */
	bool had;
	char local_id[TC_ID_LEN + 1];
};

struct pending {
	uint64_t handle;
	struct tc__obj *o; /* owned until inserted */
	char key[TC_KEY_MAX + 1];
	uint32_t flags;
	uint64_t expect_gen;
	uint64_t t0_ns;
	struct persist_req persist;  /* the policy's shared-disk part */
	char serving[TC_ID_LEN + 1]; /* PUT_SERVE: the id it fills, served
					while filling ("" = not) */
	uint64_t nchunks;	     /* of `serving` */
	/* PUT_SERVE from a client of the daemon's own uid: the digests its
	 * pull verified every chunk against, adopted at SEAL instead of a
	 * second hash of every byte (NULL: SEAL hashes). */
	struct tc__digest *served;
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
	uint32_t holds; /* GROUP holds: ranks the cluster thread renews while
			   this connection is open (ops_cluster.c) */
	uint64_t next_binding;
	struct gpu_put *gpu_puts; /* CREATE_GPU puts not sealed yet */
	uint32_t npending;
	uint64_t next_handle;

	/* An import in flight wants PROGRESS frames with this req_id. */
	struct import_job *progress_job;
	uint32_t progress_req;
	uint64_t progress_next_ms;

	struct conn *next;
	char err[512]; /* message of the request being handled */
};

struct import_job;

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
	uint64_t fd_short_ms;	   /* when accept last hit EMFILE/ENFILE */
	struct tc__jobs *io_jobs;  /* imports: I/O that may hang */
	struct tc__jobs *follow_jobs; /* GPU fills waiting on a lead */
	struct conn *conns;
	int nconns;
	uint64_t epoch;
	uint64_t start_ms;
	uint64_t n_attach, n_import, n_put, n_proto_err, n_attach_gpu;
	/* Host imports of one plain file that others may join while they
	 * read (ops_import.c: concurrent identical imports read once), and
	 * how many imports were answered by another's read. */
	struct import_job *importing;
	uint64_t n_import_joined;
	/* View imports to GPUs being loaded, whose reads a later view import
	 * of the same file to another GPU may share, and the bytes such
	 * imports copied from another GPU instead of reading them. */
	struct import_job *viewing;
	uint64_t n_view_shared_bytes;
	uint64_t n_put_verified;	  /* sealed with their pull's digests */
	uint64_t n_put_gpu_client_hashed; /* GPU puts sealed with the fused
					     copy's digests */
	/* The spare (shm.h): one segment allocated ahead at idle, charged to
	 * the budget, taken by the next import or put that fits, and dropped
	 * first when a request needs its room. */
	struct tc__shm *spare;
	uint64_t spare_target; /* bytes to keep ready; 0 = off */
	bool spare_filling;    /* a job is allocating the next one */
	bool spare_given_up;   /* ...and a request took its charge back:
				  the job frees what it made */
	/* The spare's charge: a private host replica (never on the LRU, so
	 * never a victim), FILLING while a worker makes its pages, READY
	 * once made, IDLE when there is none or a request took its room. */
	struct tc__replica spare_rep;
	bool stopping;
	struct tc__durable *durable; /* the shared-disk tier, or NULL */
	struct tc__spill *spill;     /* the spill tier (spill.h), or NULL */
	uint64_t durable_tick_ms;    /* last tc__srv_durable_tick */
	struct tc__cluster *cluster; /* cluster.h; NULL when alone */
	uint64_t key_sync_next_ms;   /* next key sync (ops_cluster.c) */
	bool key_sync_busy;	     /* a key sync is in flight */
	uint32_t key_sync_start;     /* where the last round stopped */
	uint64_t key_sync_rounds, key_sync_moved; /* figures */
	struct ha_rep *ha_reps;			  /* ha replications in flight
						     (srv_ha.c) */
	uint64_t ha_check_next; /* tc__now_ms() of the next ha check */
	bool ha_checking;	/* an ha check runs on a worker */
};

/* A frame being handled: its header, body cursor and claimed fds. */
struct req {
	struct tc__frame_hdr h;
	uint64_t t0_ns; /* arrival, for the latency metrics; 0: not timed */
	struct tc__cur body;
	int fds[TC_PROTO_MAX_FDS];
	int nfds;
	uint32_t origin; /* TC_ORIGIN_*: set when the request runs again
			    after its artifact was loaded from the shared
			    disk for it (ATTACH and ATTACH_GPU replies say
			    so); 0 otherwise */
};

/* ---- request handlers (ops_*.c, binding.c) -------------------------- */

/* One handler per message of proto/msgs.def.  It returns 0 when it has
 * replied, owes no reply (MSG_NOREPLY), or deferred its reply
 * (tc__srv_defer); or a negative code, sent back as the reply (c->err
 * holds the message).  dispatch.c builds its table from the same file. */
#define MSG(name, id, handler, flags) \
	int handler(struct conn *c, struct req *r);
#include "proto/msgs.def"
#undef MSG

/* ---- replies (request.c) ---------------------------------------------- */

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
/* An empty reply for rc 0, else an error reply. */
void tc__srv_reply_status(struct conn *c, const struct req *r, int rc);
/* A reply of one JSON string, freed here (free(3)); NULL: -ENOMEM. */
void tc__srv_reply_json(struct conn *c, const struct req *r, char *json);
/* Read a string field of the request into dst; sets c->err on failure. */
int tc__srv_read_str(struct conn *c, struct req *r, const char *what, char *dst,
		     size_t dstlen);
/* TC_EPROTO (c->err set) when bytes follow the last field of the body. */
int tc__srv_body_end(struct conn *c, struct req *r);
/* CREATE's body (CREATE_GPU's starts the same): the tensor table, its
 * names checked, then key, policy, flags, expected key generation and,
 * with TC_RF_TTL, the TTL (else *ttl_ms = 0).  Returns 0 or an error with
 * c->err. */
int tc__srv_read_create(struct conn *c, struct req *r, struct tc__table *t,
			char *key, size_t keylen, char *policy,
			size_t policylen, uint32_t *flags, uint64_t *expect_gen,
			uint64_t *ttl_ms);

/* ---- deferred replies (request.c) ------------------------------------- */

/* Writes the success reply of a deferred request (c->err is empty when
 * it runs); returns 0, or a negative code with c->err set, which
 * tc__srv_finish sends as an error reply instead.  Runs only when the
 * connection still wants a reply. */
typedef int tc__srv_reply_fn(struct conn *c, const struct req *r, void *arg);

/* The request being handled will be answered later (a job, a GPU fill):
 * the connection counts one more job and reads no further frames until
 * tc__srv_finish.  The handler then returns 0. */
void tc__srv_defer(struct conn *c);
/* A deferred request is done.  Unless the connection is closing: reply
 * (`reply` on rc 0, else an error with `err` or rc's message), send, and
 * handle the frames that waited.  `r` is the request's header copy. */
void tc__srv_finish(struct conn *c, const struct req *r, int rc,
		    const char *err, tc__srv_reply_fn *reply, void *arg);

/* ---- frames (dispatch.c) ---------------------------------------------- */

/* Parse and dispatch the complete frames in c's input buffer, within the
 * turn's share (FRAMES_PER_TURN, BODY_BYTES_PER_TURN). */
void tc__srv_conn_process(struct conn *c);

/* ---- connections (conn.c) --------------------------------------------- */

/* Send what is queued (fds with the first byte of their frame). */
void tc__srv_conn_flush(struct conn *c);
/* Mark c closing (`why` logged when not NULL); freed in before_sleep once
 * no job of it runs. */
void tc__srv_conn_close(struct conn *c, const char *why);
/* The listening socket's callback. */
void tc__srv_on_accept(struct tc__ev *ev, int lfd, void *arg, int mask);
/* Before the loop sleeps: give waiting connections their turn, free the
 * closed ones. */
void tc__srv_conns_sweep(struct server *s);
/* Every tick: handshake, write-stall and idle timeouts, PROGRESS. */
void tc__srv_conns_tick(struct server *s, uint64_t now_ms);

/* ---- puts, the spare and artifact memory (ops_put.c) ------------------ */

/* Begin `o`'s host replica as a FILLING one of `bytes` (page-rounded) plus
 * `extra` and give it memory in o->shm (the spare when it fits); free o
 * with tc__objs_fill_free unless it is inserted.  Returns 0, TC_ENOSPACE
 * or -errno with `err` set, nothing charged. */
int tc__srv_artifact_memory(struct server *s, struct tc__obj *o, uint64_t bytes,
			    uint64_t extra, enum tc__policy pol, char *err,
			    size_t errlen);
/* Host budget bytes the spare holds (ready or being allocated). */
uint64_t tc__srv_spare_charged(const struct server *s);
/* Allocate the next spare if the daemon is idle and the budget has room. */
void tc__srv_spare_refill(struct server *s);
/* Give the spare's memory and charge back; a spare still being allocated
 * gives its charge back now and its memory when its job is done. */
void tc__srv_spare_drop(struct server *s);
/* Publish artifact `id` under `key` (none when empty) after insert: the
 * local compare-and-swap, or, when `g` says the global store decided
 * (struct key_gate), its decision.  Fills c->err on failure. */
int tc__srv_publish_key(struct conn *c, const char *id, const char *key,
			uint32_t flags, uint64_t expect_gen,
			const struct key_gate *g, uint64_t *gen);
/* Whether the global store must decide a publish of `key` with `flags`
 * (a daemon in a cluster: a compare-and-swap, or a key new here).  Sets
 * g->on; a compare-and-swap while the store is unreachable is refused
 * (TC_ENODAEMON with c->err): it cannot be checked cluster-wide.  A plain
 * set then goes on locally and is published later, as a daemon alone.
 * NULL g: only the answer (for a precheck).  Returns 0 or TC_ENODAEMON. */
/* Before a put's bytes come (CREATE, CREATE_GPU): can `key` be published
 * at the end?  The global store's reachability for a cluster CAS, the
 * local generation otherwise.  0, or a code with c->err. */
int tc__srv_key_precheck(struct conn *c, const char *key, uint32_t flags,
			 uint64_t expect_gen);
int tc__srv_key_gate_init(struct conn *c, struct key_gate *g, const char *key,
			  uint32_t flags);
/* The global store's decision on `key` -> `id` (an I/O worker; blocks up
 * to 2 s).  An unreachable store turns a plain set back to local (g->on
 * false). */
void tc__srv_key_gate_run(struct server *s, struct key_gate *g, const char *key,
			  const char *id, uint32_t flags, uint64_t expect_gen);
/* The global store moved `key` to `id` (g decided it) and this daemon
 * then failed to keep `id` (insert, a must shared-disk write, or the
 * local publish failed): take the cluster's key back to the version
 * before it, on an I/O worker (loop thread; nothing when g did not
 * decide a move).  The daemon's own key was never changed. */
void tc__srv_key_gate_undo(struct server *s, const struct key_gate *g,
			   const char *key, const char *id);
/* Reply of IMPORT and SEAL: id, bytes, tensors, nanoseconds, deduped, gen,
 * then the persistence and what the policy could not do (p may be NULL). */
void tc__srv_reply_created(struct conn *c, const struct req *r,
			   struct tc__obj *o, uint64_t ns, bool dedup,
			   uint64_t gen, const struct persist_req *p);
/* The same with `nextra` u64s after it (IMPORT with TC_RF_VIEW: the bytes
 * and reads the loader asked of the files). */
void tc__srv_reply_created_ex(struct conn *c, const struct req *r,
			      struct tc__obj *o, uint64_t ns, bool dedup,
			      uint64_t gen, const struct persist_req *p,
			      const uint64_t *extra, int nextra);
/* Discard every unsealed put of a closed connection. */
void tc__srv_puts_free(struct conn *c);

/* ---- imports (ops_import.c) ------------------------------------------- */

/* A PROGRESS frame for c's watched import, if one is due. */
void tc__srv_send_progress(struct conn *c, uint64_t now_ms);

/* ---- leases (ops_attach.c) -------------------------------------------- */

/* Drop every lease of a closed connection. */
void tc__srv_leases_free(struct conn *c);

/* Run the handler of one request (dispatch.c): a request that waited for
 * its artifact to load from the shared disk runs again through it. */
int tc__srv_dispatch(struct conn *c, struct req *r);

/* ---- shared-disk tier (srv_durable.c) -------------------------------- */
int tc__srv_durable_init(struct server *s, char *err, size_t errlen);
/* Check a put's or import's policy and TTL and fill p; 0 or TC_EPOLICY
 * (c->err set: a "must" that cannot be met). */
int tc__srv_persist_prepare(struct conn *c, struct persist_req *p,
			    enum tc__policy pol, uint32_t flags,
			    uint64_t ttl_ms);
/* Loop, before a worker writes the shared-disk copy p asks for (a put's
 * or import's, before the reply): the copy's FILLING replica of the
 * shared-disk tier, `bytes` long, so STATUS counts it while it is
 * written.  Nothing when p asks for no write before the reply. */
void tc__srv_persist_begin(struct server *s, struct persist_req *p,
			   uint64_t bytes);
/* Loop: the request is done with p without recording its copy (it
 * failed, or its client went): the FILLING replica goes.  Idempotent. */
void tc__srv_persist_end(struct server *s, struct persist_req *p);
/* Worker: write o to the shared disk when p says so (before the reply). */
void tc__srv_persist_write(struct persist_req *p, const struct tc__obj *o,
			   const struct tc__digest *chunks, uint64_t n);
/* Worker, a put: hash o's sealed bytes into chunks and finish o (its
 * id); when p says so, write them to the shared disk at the same time
 * (tc__durable_hash_write; p->rc and p->err say how that went).  Returns
 * the hashing's result. */
int tc__srv_persist_hash(struct persist_req *p, struct tc__obj *o, int nthreads,
			 struct tc__digest *chunks, uint64_t n);
/* Worker, a put of GPU memory (put_gpu.c): the same from its allocation
 * `mem`; `have`: chunks hold the client's digests (adopted), else they
 * are computed.  The disk copy is always written before the reply (p->wait:
 * there is no host copy to write from after it), GPU -> disk through
 * pinned staging (tc__durable_hash_write_gpu).  Returns the hashing's
 * result, with err set. */
struct tc__gpu_mem;
int tc__srv_persist_hash_gpu(struct persist_req *p, struct tc__obj *o,
			     const struct tc__gpu_mem *mem, int nthreads,
			     struct tc__digest *chunks, uint64_t n, bool have,
			     char *err, size_t errlen);
/* Loop, after insert: record the write, or start it (TC_RF_NOWAIT), and
 * set the TTL.  0 or a code with c->err set (the put failed). */
int tc__srv_persist_commit(struct conn *c, struct persist_req *p,
			   struct tc__obj *o, const struct tc__digest *chunks,
			   uint64_t n);
/* Append the persistence state and degraded note to a created reply. */
void tc__srv_put_durability(struct conn *c, const struct persist_req *p,
			    const struct tc__obj *o);
/* A handler's lookup of `ref` failed with rc: when ref is a durable
 * artifact on disk only, load it and run the request again (returns 0:
 * the reply comes then); else rc.  `gpu_uuid` NULL: into host memory;
 * else straight from the data file to a replica on that GPU (GPU
 * requests: ATTACH_GPU, BIND, SWAP), no host copy made. */
int tc__srv_durable_miss(struct conn *c, struct req *r, const char *ref, int rc,
			 const uint8_t *gpu_uuid);
/* The same for INSPECT: its answer comes from the manifest alone (the
 * bytes are not loaded). */
int tc__srv_durable_inspect_miss(struct conn *c, struct req *r, const char *ref,
				 int rc);
/* o is in memory but lacks what a request needs, and the shared disk has
 * it: no host copy (gpu_uuid NULL: a host request), or neither a host
 * copy nor a replica on that GPU.  Then the request goes to
 * tc__srv_durable_miss with o's id. */
bool tc__srv_durable_lacks(struct server *s, const struct tc__obj *o,
			   const uint8_t *gpu_uuid);
/* RM with TC_RM_* flags: memory, key, record and disk copy. */
int tc__srv_durable_rm(struct conn *c, const char *ref, uint32_t flags);
void tc__srv_durable_tick(struct server *s, uint64_t now_ms);
/* Add the "durable" object and the disk replica to an INSPECT head. */
void tc__srv_durable_inspect(struct server *s, const struct tc__obj *o,
			     void *head);

/* ---- policy ha: a replica on another node (srv_ha.c) ------------------ */

/* What a reply that waited for an ha replica runs next (on the loop). */
typedef void tc__srv_ha_cont(void *arg);
/* o, with policy ha, is durable now: have a node of the cluster make a
 * replica of it, unless one is made or being made already.  The outcome
 * goes to o's durable record (tc__durable_ha_set), where the reply's and
 * inspect's "degraded" read it.  Returns true when the caller's reply
 * waits for it (`wait` and ha_wait_ms > 0): `cont(arg)` then runs once
 * the replica is made or failed, or after ha_wait_ms (the replication
 * going on); false: reply now (not in a cluster, nothing to wait for). */
bool tc__srv_ha_start(struct server *s, struct tc__obj *o, bool wait,
		      tc__srv_ha_cont *cont, void *arg);
/* tc__srv_finish for a put or import that created `o` with persistence
 * p: at once, or (policy ha, waiting for persistence) once its replica
 * on another node is made or failed, or ha_wait_ms passed; o is leased
 * meanwhile, and a request whose artifact was removed meanwhile fails.
 * release(arg) runs after the finish either way. */
void tc__srv_finish_created(struct conn *c, const struct req *r, int rc,
			    const char *err, tc__srv_reply_fn *reply, void *arg,
			    void (*release)(void *arg),
			    const struct persist_req *p, struct tc__obj *o);
/* Every tick: replies that waited ha_wait_ms go on ("pending"). */
void tc__srv_ha_tick(struct server *s, uint64_t now_ms);

/* ---- bindings (binding.c) -------------------------------------------- */

/* Free every binding of a closed connection (no job may be running). */
void tc__srv_bindings_free(struct conn *c);

/* ---- the cluster (ops_cluster.c) -------------------------------------- */

/* Join the cluster the config names (nothing when none): start the
 * cluster thread and hook the artifact table to it.  Returns 0 or a
 * negative code with `err`. */
int tc__srv_cluster_start(struct server *s, char *err, size_t errlen);
/* Leave it (before the artifact table is released). */
void tc__srv_cluster_stop(struct server *s);
/* Every key_sync_ms: read the cluster's generation of the keys this
 * daemon has (on an I/O worker) and adopt other nodes' moves. */
void tc__srv_key_sync_tick(struct server *s, uint64_t now_ms);

/* ---- host copies of artifacts held on GPUs only (host_copy.c) -------- */

/* `o` has no host copy; a request (r, on c, its body read) needs one:
 * make it from o's READY GPU replica (GPU -> host through the transfer
 * engine, the digests checked against o's id), then run r again.
 * Returns 0 (deferred: the reply comes then), TC_ENOTSUP when o has no
 * READY GPU replica, or the host budget's refusal (TC_ENOSPACE), with
 * c->err set. */
int tc__srv_host_from_gpu(struct conn *c, struct req *r, struct tc__obj *o);

/* ---- puts from GPU memory (put_gpu.c) --------------------------------- */

/* Free every unsealed GPU put of a closed connection (no job running). */
void tc__srv_gpu_puts_free(struct conn *c);

/* ---- metrics (server_metrics.c) --------------------------------------- */

/* Refresh the metrics gauges: at most every 250 ms unless `force`. */
void tc__srv_metrics_publish(struct server *s, uint64_t now_ms, bool force);

#endif /* TC_SERVER_INTERNAL_H */
