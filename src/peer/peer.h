/*
 * peer.h - peer transfer between tcast daemons: the server that sends host
 * replicas and the receiver that pulls an artifact from several sources.
 *
 * Layering: this module knows nothing of the store.  The daemon's main
 * (src/cli/cmd_daemon.c) tells the server which replicas exist through
 * tc__peer_server_publish/withdraw/key, fed by the store's observer
 * (store/obj.h); the receiver writes into whatever destination its
 * caller's sink hands it (tcast pull: a put into the local daemon).
 * Wire protocol: wire.h.  Transports: transport.h (TCP now).  Design and
 * figures: docs/peer.md.
 */
#ifndef TC_PEER_H
#define TC_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"
#include "common/tensor.h"
#include "net/auth.h"
#include "transport.h"

#define TC_PEER_MAX_SOURCES 16 /* sources one pull stripes over */
#define TC_PEER_MAX_STREAMS 16 /* TCP streams per source */
#define TC_PEER_AUTO_STREAMS                                                    \
	4			   /* per source by default, at most, when a    \
				      pull has several sources; a lone source's \
				      floor */
#define TC_PEER_LONE_MAX_STREAMS 8 /* a lone source by default, at most */
#define TC_PEER_CPUS_PER_LONE_STREAM                                          \
	2 /* a lone source gets one stream per this many usable CPUs (between \
	     the two figures above) */
#define TC_PEER_STREAMS_PER_CPU                                           \
	8 /* by default a pull's streams over all its sources, per online \
	     CPU */
#define TC_PEER_BAD_LIMIT 3 /* bad chunks before a source is dropped */

/* ------------------------------------------------------------- server */

struct tc__peer_server;

struct tc__peer_server_opts {
	const char *listen; /* "host:port"; port 0 picks one */
	const struct tc__auth_secret *secret; /* borrowed for the server's
						 life */
	struct tc__tls_ctx *tls; /* borrowed for the server's life; NULL:
				    plain TCP */
	const char *name;	 /* this node, in handshakes and logs */
	int io_timeout_ms;	 /* a request or send stalled this
				    long ends the connection */
	int idle_timeout_ms;	 /* an idle connection is closed */
	int max_conns;		 /* connections served at once */
	/* Optional (policy ha): a REPLICATE_REQ asks this node to pull `id`
	 * from `source` ("host:port") into its own daemon.  Runs on the
	 * asking connection's thread and blocks until the pull ended;
	 * returns 0 (*bytes, *ns set) or a negative code with `err`.  NULL:
	 * such requests are refused with TC_ENOTSUP. */
	int (*replicate)(void *arg, const char *id, const char *source,
			 uint64_t *bytes, uint64_t *ns, char *err,
			 size_t errlen);
	void *replicate_arg;
};

/* Listen and serve on threads of its own.  Returns 0 or a negative code
 * with `err` set. */
int tc__peer_server_start(const struct tc__peer_server_opts *o,
			  struct tc__peer_server **out, char *err,
			  size_t errlen);
/* The bound "host:port" (port resolved).  Borrowed. */
const char *tc__peer_server_addr(const struct tc__peer_server *s);
/* Close the listener and every connection, wait for their threads, free.
 * NULL is a no-op. */
void tc__peer_server_stop(struct tc__peer_server *s);

/* Make artifact `id` servable from `fd` (a sealed memfd holding its byte
 * space; dup'd, so the caller keeps its own).  Idempotent.  Returns 0 or
 * -errno. */
int tc__peer_server_publish(struct tc__peer_server *s, const char *id, int fd,
			    const struct tc__table *t,
			    const struct tc__digest *chunks, uint64_t nchunks);
/* Make artifact `id` servable from a GPU copy: `size` bytes of device
 * memory at `dptr` on the process's CUDA device `ordinal` (the daemon's
 * own mapping, borrowed).  Chunks are copied device to host through a
 * pinned staging buffer per connection, then sent.  A host replica of
 * `id` is served first when there is one.  Several GPU copies of one id
 * may be published (dptr tells them apart; the same dptr again is a
 * no-op).  Returns 0 or -errno. */
int tc__peer_server_publish_gpu(struct tc__peer_server *s, const char *id,
				int ordinal, uint64_t dptr, uint64_t size,
				const struct tc__table *t,
				const struct tc__digest *chunks,
				uint64_t nchunks);
/* Stop serving the GPU copy of `id` at `dptr`.  Returns once no copy
 * from its memory is in progress (one chunk at most), so the caller may
 * free or rewrite the memory right after; sends of chunks already staged
 * finish from their buffers. */
void tc__peer_server_withdraw_gpu(struct tc__peer_server *s, const char *id,
				  uint64_t dptr);
/* Serve `id` while it fills (a pull in progress into `fd`): only the
 * chunks later marked with tc__peer_server_have are sent; others are
 * answered "not here yet".  A sealed replica of `id` published already
 * wins (nothing changes); tc__peer_server_publish replaces a filling one.
 * Returns 0 or -errno. */
int tc__peer_server_publish_partial(struct tc__peer_server *s, const char *id,
				    int fd, const struct tc__table *t,
				    const struct tc__digest *chunks,
				    uint64_t nchunks);
/* Chunks of a filling `id` that are verified in place, or (`fetching`)
 * that it is fetching from a sealed source, which peers then ask the seed
 * for last.  No-op for a sealed or unknown id. */
void tc__peer_server_have(struct tc__peer_server *s, const char *id,
			  const uint64_t *chunks, uint32_t n, bool fetching);
/* Stop serving `id` (sends in progress finish first). */
void tc__peer_server_withdraw(struct tc__peer_server *s, const char *id);
/* The same, only when what is served is a filling copy (an aborted pull
 * must not withdraw a sealed replica of the same id). */
void tc__peer_server_withdraw_partial(struct tc__peer_server *s,
				      const char *id);
/* GET requests being answered now (the node's load, for routing). */
uint32_t tc__peer_server_uploads(struct tc__peer_server *s);
/* `key` names `id` here ("" = names nothing any more). */
void tc__peer_server_key(struct tc__peer_server *s, const char *key,
			 const char *id);

struct tc__peer_server_stats {
	uint64_t conns;	      /* accepted */
	uint64_t refused;     /* failed the handshake or over the cap */
	uint64_t chunks_sent; /* DATA frames */
	uint64_t bytes_sent;  /* payload bytes */
};
void tc__peer_server_stats(struct tc__peer_server *s,
			   struct tc__peer_server_stats *out);

/* ---------------------------------------------------- replication (ha) */

/* Ask the peer server at `addr` to pull `id` from `source` into its
 * daemon (REPLICATE_REQ) and wait for the outcome: connect and handshake
 * within `timeout_ms`, then at most `wait_ms` for the answer.  Returns 0
 * (*bytes, *ns: what it pulled and how long it took) or a negative code
 * with `err` saying why: the peer's own error for a pull that failed
 * there ("pull failed: ..."), else what went wrong on the way
 * ("cannot reach its peer server at ...: Connection refused"). */
int tc__peer_replicate(const char *addr, const char *id, const char *source,
		       struct tc__tls_ctx *tls,
		       const struct tc__auth_secret *secret, const char *name,
		       int timeout_ms, int wait_ms, uint64_t *bytes,
		       uint64_t *ns, char *err, size_t errlen);

/* ------------------------------------------------------------ receiver */

/* Where pulled bytes go.  begin() is called once, with the verified
 * manifest, and returns a writable mapping of the artifact's whole byte
 * space (table->total_bytes) that stays valid until tc__peer_pull
 * returns -- or, with write() set, may leave *base NULL.  A mapping
 * returned (without stage()) is where chunks land, even with write()
 * set: a sink decides per pull whether receiving in place pays. */
struct tc__peer_sink {
	void *arg;
	int (*begin)(void *arg, const char *id, const struct tc__table *t,
		     uint8_t **base, char *err, size_t errlen);
	/* Optional: a sink that writes.  The streams receive each chunk
	 * into a TC_CHUNK_BYTES buffer of the pull's pool (from stage()
	 * when set, e.g. pinned host memory for a GPU sink, which the
	 * receiver cannot recv into; back with unstage() when the pull
	 * ends; else memory of the pull's own), a verifier thread checks
	 * it there and only then hands it to write() with its byte
	 * offset, on the verifier's thread (several run at once).  A host
	 * sink writes through the memory's file, since fresh shared memory
	 * fills faster that way than by first writes through a mapping
	 * (docs/design.md).  Without write(), chunks land in begin()'s
	 * mapping and are verified in place.  A failed stage() or write()
	 * fails the whole pull with its error (no source is blamed). */
	int (*stage)(void *arg, uint8_t **buf, char *err, size_t errlen);
	void (*unstage)(void *arg, uint8_t *buf);
	int (*write)(void *arg, uint64_t off, const uint8_t *data, uint32_t n,
		     char *err, size_t errlen);
	/* Optional, so that this node serves what it holds while it pulls
	 * (a fan-out becomes a pipeline).  serve() is called once after
	 * begin() with the verified digests; have() with chunks verified
	 * in place since the last call, or (fetching) asked of a sealed
	 * source since the last call.  Both run on the caller's thread
	 * (the one in tc__peer_pull), never on a stream's; a failure only
	 * means this node does not serve. */
	void (*serve)(void *arg, const char *id,
		      const struct tc__digest *chunks, uint64_t nchunks);
	void (*have)(void *arg, const uint64_t *chunks, uint32_t n,
		     bool fetching);
	/* Optional: only some chunks are wanted (a view needs part of the
	 * artifact).  Called once after begin(); sets bit k of `bits`
	 * (nchunks bits, zeroed) for each chunk to pull, and returns 0 or a
	 * negative code with `err`.  NULL: every chunk.  Chunks not wanted
	 * are neither fetched nor written. */
	int (*want)(void *arg, uint8_t *bits, uint64_t nchunks, char *err,
		    size_t errlen);
};

/* Optional: more sources while a pull runs (other receivers of the same
 * artifact, still filling).  Writes up to `max` "host:port" into `addr`
 * and returns how many; called from the caller's thread about every
 * TC_PEER_DISCOVER_MS.  Addresses the pull knows already are ignored. */
struct tc__peer_discover {
	void *arg;
	int (*fn)(void *arg, char (*addr)[TC_PEER_ADDR_MAX], int max);
};
#define TC_PEER_DISCOVER_MS 300

struct tc__peer_pull_opts {
	const char *ref;	    /* key or full id */
	const char *const *sources; /* "host:port", in order of preference */
	int nsources;		    /* 1..TC_PEER_MAX_SOURCES */
	int streams;	/* per source, 1..TC_PEER_MAX_STREAMS; 0: chosen
			   by tc__peer_auto_streams as each source joins */
	int timeout_ms; /* connect, and no bytes for this long */
	const struct tc__auth_secret *secret;
	struct tc__tls_ctx *tls; /* NULL: plain TCP */
	const char *name;	 /* this node, in handshakes */
	struct tc__peer_sink sink;
	struct tc__peer_discover discover; /* fn NULL: the sources above */
};

struct tc__peer_source_stats {
	char addr[TC_PEER_ADDR_MAX];
	uint64_t bytes;	     /* verified payload bytes from it */
	uint64_t chunks;     /* verified chunks */
	uint32_t bad_chunks; /* chunks that failed their digest */
	uint32_t declined;   /* chunks a seed said to ask peers for */
	uint32_t streams;    /* connections the pull opened to it */
	uint32_t retired;    /* of those, ended early when more sources
				joined and its share shrank */
	bool partial;	     /* was still filling when first asked */
	bool failed;	     /* dropped: died, stalled, refused, lied */
	char err[256];	     /* why, when failed */
};

struct tc__peer_pull_result {
	char id[TC_ID_LEN + 1];
	uint64_t bytes; /* artifact size */
	uint64_t nchunks;
	uint64_t want_bytes;  /* bytes of the chunks wanted (sink.want) */
	uint64_t want_chunks; /* chunks wanted: nchunks without sink.want */
	uint64_t ns;	      /* manifest to last verified chunk */
	bool in_place;	      /* received into the sink's mapping */
	int nsources;
	struct tc__peer_source_stats src[TC_PEER_MAX_SOURCES];
};

/* Pull `o->ref` into the sink: the manifest from the first source that
 * has it (its root digest must be the id), then every chunk over
 * `streams` connections per source, each chunk verified against its
 * digest before it counts; a bad chunk is fetched again elsewhere and its
 * source reported, a source that dies or stalls leaves its chunks to the
 * others.  Sources still filling (other receivers) are asked only for
 * what they hold; a sealed source is asked first for chunks no filling
 * source holds, and a pull that serves (sink.have) flags its GETs so
 * the seed may decline chunks it has just sent to another receiver and
 * offer others (super-seeding, serve.c): each chunk leaves it about
 * once.  Returns 0 (every chunk
 * verified) or a negative code with `err` naming what each source did; `res` is
 * filled either way. */
int tc__peer_pull(const struct tc__peer_pull_opts *o,
		  struct tc__peer_pull_result *res, char *err, size_t errlen);

/* The default streams per source (opts.streams 0) for a source joining a
 * pull that then knows `nsources` live sources, in a process that may run
 * on `ncpu` CPUs (its affinity mask).  A lone source gets one stream per
 * TC_PEER_CPUS_PER_LONE_STREAM CPUs, at least TC_PEER_AUTO_STREAMS and
 * at most TC_PEER_LONE_MAX_STREAMS: a stream receives at ~6 Gbit/s where
 * iperf3's reach 8-11, so on a host with CPUs to spare a lone source
 * needs more of them to fill the link (bench/RESULTS.md, "Pull"), while
 * a 2-CPU node keeps 4.  Several sources share TC_PEER_STREAMS_PER_CPU *
 * ncpu streams, at least 1 and at most TC_PEER_AUTO_STREAMS each: every
 * stream is a thread at this end and a connection at the other, and a
 * fan-out receiver pulls from the seed and up to 15 peers, so on a small
 * node the total is what counts (2 vCPUs: 4 each for up to 4 sources, 3
 * for 5, 2 for 6 to 8, 1 beyond; bench/RESULTS.md "Fan-out").  ncpu < 1
 * counts as 1, nsources < 1 as 1.  The share of the sources that joined
 * earlier drops to it too: their streams over it finish what they asked
 * for and end.  TCAST_PEER_LONE_STREAMS=N in the pulling process's
 * environment (1..TC_PEER_MAX_STREAMS) overrides the lone source's count
 * (pull.c; this function ignores it). */
int tc__peer_auto_streams(int ncpu, int nsources);

#endif /* TC_PEER_H */
