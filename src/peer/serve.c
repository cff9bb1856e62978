/*
 * serve.c - the peer server: sends chunks of host replicas, and of GPU
 * replicas through pinned staging (peer.h).
 *
 * One accept thread, one thread per connection (a stream is a long
 * sequence of 4 MiB sendfiles: a thread each keeps the sends of several
 * streams on several cores, reference/cluster.md 1).  The registry of
 * servable replicas is shared with the daemon's loop thread (publish,
 * withdraw, key) under one mutex; a connection holds a reference on the
 * entry it is sending from, so a withdrawn replica's fd is closed when
 * its last send ends, never under a send.  A GPU replica's memory is
 * the daemon's (borrowed): a connection copies a chunk of it into its
 * staging buffer with the entry's `copying` count held, and sends from
 * the buffer after; withdrawing waits only for copies, never for sends.
 *
 * Super-seeding (docs/peer.md "Fan-out"), for GETs flagged SHARES (the
 * asker serves what it gets to the other receivers): a sealed replica
 * remembers, per chunk, which such receiver it last sent the chunk to
 * and when; another one asking for it while it is being sent, or within
 * TC_PEER_SUPERSEED_MS after, gets "ask your peers" (TC_EBUSY) instead,
 * unless the seed has nothing else to send (the end of a fan-out), so
 * the seed's link carries each chunk about once and the receivers swap
 * the rest.  And the server sends at most TC_PEER_SEED_SENDS such
 * chunks at once: a chunk then leaves whole in a fraction of a second
 * and its receiver serves it on, where 8 receivers x 4 streams would
 * share the link 32 ways and nobody would hold anything to swap for
 * seconds.  A request that finds no free slot within TC_PEER_SEED_WAIT_MS
 * is declined the same way (the asker takes another chunk, or asks a
 * peer).  Other GETs (a pull that does not serve, a view) are sent as
 * always.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/io.h"
#include "common/log.h"
#include "common/map.h"
#include "frameio.h"
#include "net/ev.h"
#include "gpu/vmm.h"
#include "net/tls.h"
#include "peer.h"
#include "tcast/errors.h"

#define TC_PEER_SUPERSEED_MS	2000 /* a chunk sent is declined this long */
#define TC_PEER_SEED_SENDS	4    /* SHARES chunks sent at once */
#define TC_PEER_SEED_WAIT_MS	200  /* for a free slot, then declined */
#define TC_PEER_ACCEPT_PAUSE_MS 100  /* out of fds: between accepts */
#define TC_PEER_AUTH_BURST	10   /* failed handshakes logged a second */

struct entry {
	char id[TC_ID_LEN + 1];
	int fd;		/* owned: dup of the replica's memfd */
	uint64_t total; /* bytes of the byte space */
	uint64_t nchunks;
	struct tc__buf manifest; /* the whole MANIFEST frame, prebuilt */
	int refs;		 /* registry + connections sending */
	bool gone;		 /* withdrawn */
	/* A replica still filling (a pull in progress here): only the
	 * chunks marked in `have` (verified by the receiver) are served;
	 * NULL for a sealed replica, where every chunk is. */
	uint8_t *have;
	uint8_t *fetching; /* filling: chunks it fetches from a sealed
			      source (so others ask the seed for others) */
	/* A GPU replica (fd -1): `total` bytes at dptr on CUDA device
	 * `ordinal`, borrowed from the daemon; `copying`: device-to-host
	 * copies from it in progress (withdraw waits for 0). */
	bool gpu;
	int ordinal;
	uint64_t dptr;
	int copying;
	struct entry *gnext; /* the next GPU copy of the same id */
	/* Sealed, asked by fan-out receivers (super-seeding, above): per
	 * chunk, who got it last (a hash of its name and address, 0:
	 * nobody) and when that send ended (UINT64_MAX while it runs).
	 * Made at the first such GET; NULL when out of memory (then
	 * nothing is declined). */
	uint32_t *sent_to;
	uint64_t *sent_ns;
	uint64_t cursor; /* where the search for a chunk to offer goes on */
};

struct keyent {
	char id[TC_ID_LEN + 1];
	char name[]; /* the map's key */
};

struct conn {
	struct tc__peer_server *srv;
	struct tc__peer_conn *c;
	struct conn *next;
	/* Staging for chunks of GPU replicas, made at the first one:
	 * TC_CHUNK_BYTES, pinned when the driver lets us (else pageable). */
	uint8_t *stage;
	bool stage_pinned;
	int stage_ordinal;
	uint32_t who; /* the asker: a hash of its name and address */
	/* Still in the TLS or cluster handshake (mu): such connections have
	 * a pool of their own (max_conns more), so that connections which
	 * never prove the secret cannot take the slots of peers that do. */
	bool handshaking;
	/* Told to leave the pool (mu; its socket shut down): it still
	 * counts in nhandshaking until its thread ends the handshake, so
	 * the pool's live count is nhandshaking - nevicted. */
	bool evicted;
	uint64_t accepted_ns; /* oldest goes first */
	uint32_t host;	      /* its address without the port, hashed */
	/* TC_PEER_PIECE bytes for chunks of a copy still filling, made at
	 * the first one: those are copied, not sent with sendfile (below). */
	uint8_t *fill;
};

struct tc__peer_server {
	struct tc__peer_server_opts o;
	struct tc__peer_listener *l;
	int stop_pipe[2];
	pthread_t acceptor;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct tc__map by_id;  /* id -> struct entry (live ones) */
	struct tc__map by_gpu; /* id -> its GPU copies (gnext chain) */
	struct tc__map keys;   /* key -> malloc'd id */
	struct conn *conns;    /* live connections */
	int nconns;	       /* all of them, for stop */
	int nhandshaking;      /* of which still in the handshake */
	int nevicted;	       /* of those, told to leave (evicted) */
	/* A flood repeats these lines: one a second, or TC_PEER_AUTH_BURST
	 * for failed handshakes (rl_evicted and rl_auth under mu; rl_full
	 * and rl_fds: the accept thread's alone). */
	struct tc__ratelimit rl_evicted, rl_auth, rl_full, rl_fds;
	bool stopping;
	_Atomic uint64_t n_conns, n_refused, n_chunks, n_bytes;
	_Atomic uint32_t n_uploads; /* GETs being answered now */
	int seeding;	  /* SHARES chunks being sent (super-seeding) */
	int seed_waiting; /* SHARES GETs waiting for a slot */
};

static void entry_put(struct entry *e) /* mu held */
{
	if (--e->refs == 0) {
		if (e->fd >= 0)
			close(e->fd);
		tc__buf_release(&e->manifest);
		tc__free(e->have);
		tc__free(e->fetching);
		tc__free(e->sent_to);
		tc__free(e->sent_ns);
		tc__free(e);
	}
}

/* An entry's size and the MANIFEST it answers with (encoded once). */
static int entry_manifest(struct entry *e, const char *id,
			  const struct tc__table *t,
			  const struct tc__digest *chunks, uint64_t nchunks)
{
	e->total = t->total_bytes;
	e->nchunks = nchunks;
	e->refs = 1;
	tc__buf_init(&e->manifest);
	tc__peer_put_manifest(&e->manifest, id, t, chunks, nchunks);
	if (e->manifest.oom)
		return -ENOMEM;
	if (e->manifest.len - TC_PEER_HDR_BYTES > TC_PEER_MAX_MANIFEST)
		return TC_ELIMIT;
	return 0;
}

static int publish(struct tc__peer_server *s, const char *id, int fd,
		   const struct tc__table *t, const struct tc__digest *chunks,
		   uint64_t nchunks, bool partial)
{
	struct entry *e, *old;
	int rc = 0;

	if (nchunks != tc__chunk_count(t->total_bytes))
		return TC_EINVAL;
	e = tc__calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (partial &&
	    (!(e->have = tc__calloc((nchunks + 7) / 8 + 1, 1)) ||
	     !(e->fetching = tc__calloc((nchunks + 7) / 8 + 1, 1)))) {
		tc__free(e->have);
		tc__free(e);
		return -ENOMEM;
	}
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (e->fd < 0) {
		rc = -errno;
		tc__free(e);
		return rc;
	}
	rc = entry_manifest(e, id, t, chunks, nchunks);
	if (rc < 0)
		goto out_free;
	pthread_mutex_lock(&s->mu);
	old = tc__map_get(&s->by_id, e->id);
	if (old && partial && !old->have) {
		/* Sealed already here: a filling copy adds nothing. */
		pthread_mutex_unlock(&s->mu);
		goto out_free;
	}
	old = tc__map_del(&s->by_id, e->id);
	if (old) {
		old->gone = true;
		entry_put(old);
	}
	if (tc__map_put(&s->by_id, e->id, e) < 0)
		rc = -ENOMEM;
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		return 0;
out_free:
	close(e->fd);
	tc__buf_release(&e->manifest);
	tc__free(e->have);
	tc__free(e->fetching);
	tc__free(e);
	return rc;
}

int tc__peer_server_publish(struct tc__peer_server *s, const char *id, int fd,
			    const struct tc__table *t,
			    const struct tc__digest *chunks, uint64_t nchunks)
{
	return publish(s, id, fd, t, chunks, nchunks, false);
}

int tc__peer_server_publish_partial(struct tc__peer_server *s, const char *id,
				    int fd, const struct tc__table *t,
				    const struct tc__digest *chunks,
				    uint64_t nchunks)
{
	return publish(s, id, fd, t, chunks, nchunks, true);
}

int tc__peer_server_publish_gpu(struct tc__peer_server *s, const char *id,
				int ordinal, uint64_t dptr, uint64_t size,
				const struct tc__table *t,
				const struct tc__digest *chunks,
				uint64_t nchunks)
{
	struct entry *e, *head;
	int rc = 0;

	if (nchunks != tc__chunk_count(t->total_bytes) ||
	    size < t->total_bytes || ordinal < 0 || !dptr)
		return TC_EINVAL;
	e = tc__calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->fd = -1;
	e->gpu = true;
	e->ordinal = ordinal;
	e->dptr = dptr;
	rc = entry_manifest(e, id, t, chunks, nchunks);
	if (rc < 0)
		goto out_free;
	pthread_mutex_lock(&s->mu);
	head = tc__map_get(&s->by_gpu, id);
	for (struct entry *g = head; g; g = g->gnext)
		if (g->dptr == dptr) { /* the same copy again */
			pthread_mutex_unlock(&s->mu);
			goto out_free;
		}
	/* The new one heads the chain: the map's key is its id buffer. */
	e->gnext = head;
	if (tc__map_put(&s->by_gpu, e->id, e) < 0) {
		rc = -ENOMEM;
		e->gnext = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		return 0;
out_free:
	tc__buf_release(&e->manifest);
	tc__free(e);
	return rc;
}

void tc__peer_server_withdraw_gpu(struct tc__peer_server *s, const char *id,
				  uint64_t dptr)
{
	struct entry **pp, *e = NULL, *head;

	pthread_mutex_lock(&s->mu);
	head = tc__map_get(&s->by_gpu, id);
	for (pp = &head; *pp; pp = &(*pp)->gnext)
		if ((*pp)->dptr == dptr) {
			e = *pp;
			*pp = e->gnext;
			break;
		}
	if (e) {
		/* Re-key the map: the key was the old head's id buffer. */
		tc__map_del(&s->by_gpu, id);
		if (head && tc__map_put(&s->by_gpu, head->id, head) < 0) {
			/* Out of memory: those copies are not served. */
			while (head) {
				struct entry *n = head->gnext;

				head->gone = true;
				entry_put(head);
				head = n;
			}
		}
		e->gnext = NULL;
		e->gone = true;
		/* The caller frees or rewrites the memory next: no copy may
		 * still read it.  A copy is one chunk, so the wait is short.
		 */
		while (e->copying)
			pthread_cond_wait(&s->cv, &s->mu);
		entry_put(e);
	}
	pthread_mutex_unlock(&s->mu);
}

void tc__peer_server_have(struct tc__peer_server *s, const char *id,
			  const uint64_t *chunks, uint32_t n, bool fetching)
{
	struct entry *e;
	uint8_t *bits;

	pthread_mutex_lock(&s->mu);
	e = tc__map_get(&s->by_id, id);
	bits = !e ? NULL : fetching ? e->fetching : e->have;
	for (uint32_t i = 0; bits && i < n; i++)
		if (chunks[i] < e->nchunks)
			bits[chunks[i] / 8] |= (uint8_t)(1u << chunks[i] % 8);
	pthread_mutex_unlock(&s->mu);
}

static void withdraw(struct tc__peer_server *s, const char *id,
		     bool partial_only)
{
	struct entry *e;

	pthread_mutex_lock(&s->mu);
	e = tc__map_get(&s->by_id, id);
	if (e && (!partial_only || e->have)) {
		tc__map_del(&s->by_id, id);
		e->gone = true;
		entry_put(e);
	}
	pthread_mutex_unlock(&s->mu);
}

void tc__peer_server_withdraw(struct tc__peer_server *s, const char *id)
{
	withdraw(s, id, false);
}

void tc__peer_server_withdraw_partial(struct tc__peer_server *s, const char *id)
{
	withdraw(s, id, true);
}

uint32_t tc__peer_server_uploads(struct tc__peer_server *s)
{
	return s ? s->n_uploads : 0;
}

void tc__peer_server_key(struct tc__peer_server *s, const char *key,
			 const char *id)
{
	struct keyent *old, *k = NULL;
	size_t n = strlen(key);

	if (id[0]) {
		k = tc__malloc(sizeof(*k) + n + 1);
		if (!k)
			return; /* the key is not served; its id still is */
		snprintf(k->id, sizeof(k->id), "%s", id);
		memcpy(k->name, key, n + 1);
	}
	pthread_mutex_lock(&s->mu);
	old = tc__map_del(&s->keys, key);
	if (k && tc__map_put(&s->keys, k->name, k) < 0) {
		tc__free(k);
	}
	pthread_mutex_unlock(&s->mu);
	tc__free(old);
}

/* A key or full id to a referenced entry, or NULL. */
static struct entry *lookup(struct tc__peer_server *s, const char *ref)
{
	struct entry *e = NULL;
	struct keyent *k;

	const char *id = NULL;

	pthread_mutex_lock(&s->mu);
	if (tc__is_id(ref))
		id = ref;
	else if ((k = tc__map_get(&s->keys, ref)))
		id = k->id;
	if (id)
		e = tc__map_get(&s->by_id, id);
	/* A sealed host replica first (sendfile), then a GPU one, then
	 * a copy still filling. */
	if (id && (!e || e->have)) {
		struct entry *g = tc__map_get(&s->by_gpu, id);

		if (g)
			e = g;
	}
	if (e)
		e->refs++;
	pthread_mutex_unlock(&s->mu);
	return e;
}

static void unref(struct tc__peer_server *s, struct entry *e)
{
	pthread_mutex_lock(&s->mu);
	entry_put(e);
	pthread_mutex_unlock(&s->mu);
}

static int send_error(struct tc__peer_conn *c, int code, const char *msg)
{
	struct tc__buf b = TC_BUF_INIT;
	int rc;

	tc__peer_put_error(&b, code, msg);
	rc = tc__peer_send_buf(c, &b, false);
	tc__buf_release(&b);
	return rc;
}

/* A chunk with one byte flipped (failpoint peer.corrupt_chunk): what a
 * lying or broken peer sends.  Read, not mapped: the replica is sealed. */
static int send_corrupt(struct tc__peer_conn *c, int fd, uint64_t off,
			uint32_t n)
{
	uint8_t *p = tc__malloc(n);
	int rc;

	if (!p)
		return -ENOMEM;
	rc = tc__pread_exact(fd, p, n, off);
	if (rc == 0) {
		p[n / 2] ^= 0x5a;
		rc = c->t->send(c, p, n, false);
	}
	tc__free(p);
	return rc;
}

/* Failpoint peer.trickle_chunk: the chunk 4 KiB at a time, 500 ms apart
 * (each wait well under a receiver's socket timeout, the whole about 8
 * minutes): the receiver's bound on a whole chunk has to end it. */
static int send_trickle(struct tc__peer_conn *c, int fd, uint64_t off,
			uint32_t n)
{
	uint8_t p[4096];
	int rc = 0;

	for (uint32_t got = 0; rc == 0 && got < n; got += sizeof(p)) {
		uint32_t piece = TC_MIN((uint32_t)sizeof(p), n - got);

		rc = tc__pread_exact(fd, p, piece, off + got);
		if (rc == 0)
			rc = c->t->send(c, p, piece, false);
		if (rc == 0)
			usleep(500 * 1000);
	}
	return rc;
}

/* A chunk of a copy still filling, read into a buffer and sent from
 * there.  Not sendfile: pages it hands to TCP stay referenced until the
 * peer acknowledges them (seconds on a slow or shaped link), and a memfd
 * with referenced pages cannot be sealed (F_SEAL_WRITE fails with EBUSY),
 * so the pull's commit would fail while this node serves its peers. */
static int send_filling(struct conn *cn, int fd, uint64_t off, uint32_t n)
{
	int rc = 0;

	if (!cn->fill && !(cn->fill = tc__peer_buf_new(TC_PEER_PIECE)))
		return -ENOMEM;
	for (uint32_t got = 0; rc == 0 && got < n; got += TC_PEER_PIECE) {
		uint32_t piece = TC_MIN(TC_PEER_PIECE, n - got);

		rc = tc__pread_exact(fd, cn->fill, piece, off + got);
		if (rc == 0)
			rc = cn->c->t->send(cn->c, cn->fill, piece,
					    got + piece < n);
	}
	return rc;
}

/* Stage chunk bytes [off, off + n) of GPU entry e in cn's buffer (made
 * at the first use, pinned when it can be).  Returns 0, TC_ENOTFOUND
 * (withdrawn meanwhile) or another negative code (logged). */
static int gpu_stage(struct tc__peer_server *s, struct conn *cn,
		     struct entry *e, uint64_t off, uint32_t n)
{
	char err[256];
	int rc;

	if (!cn->stage) {
		void *p = NULL;

		if (posix_memalign(&p, 4096, TC_CHUNK_BYTES))
			return -ENOMEM;
		memset(p, 0, TC_CHUNK_BYTES); /* fault in before pinning */
		cn->stage = p;
		cn->stage_ordinal = e->ordinal;
		cn->stage_pinned = tc__gpu_host_register(e->ordinal, p,
							 TC_CHUNK_BYTES, 0, err,
							 sizeof(err)) == 0;
		if (!cn->stage_pinned)
			tc__log(TC_LOG_WARN,
				"peer: GPU chunks to %s go through pageable "
				"memory: %s",
				cn->c->addr, err);
	}
	pthread_mutex_lock(&s->mu);
	if (e->gone) {
		pthread_mutex_unlock(&s->mu);
		return TC_ENOTFOUND;
	}
	e->copying++;
	pthread_mutex_unlock(&s->mu);
	rc = tc__gpu_dtoh(e->ordinal, cn->stage, e->dptr + off, n, NULL, err,
			  sizeof(err));
	pthread_mutex_lock(&s->mu);
	if (--e->copying == 0 && e->gone)
		pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (rc < 0)
		tc__log(TC_LOG_WARN, "peer: cannot copy %s from GPU %d: %s",
			e->id, e->ordinal, err);
	return rc;
}

static void stage_free(struct conn *cn)
{
	if (cn->stage_pinned)
		tc__gpu_host_unregister(cn->stage_ordinal, cn->stage, NULL, 0);
	free(cn->stage);
	cn->stage = NULL;
}

/* Chunk k of sealed entry e went to another fan-out receiver than `who`
 * moments ago, or is going (mu held). */
static bool superseed_recent(const struct entry *e, uint32_t who, uint64_t k)
{
	uint64_t at = e->sent_ns[k];

	return e->sent_to[k] && e->sent_to[k] != who &&
	       (at == UINT64_MAX ||
		tc__now_ns() - at < TC_PEER_SUPERSEED_MS * 1000000ull);
}

/* A chunk of e that went to no fan-out receiver lately, to offer `who`
 * instead of one it was declined: kept for it (as if sent to it now, so
 * others asking for it are declined meanwhile).  Returns 1 + the chunk,
 * or 0 when every chunk went out lately (mu held). */
static uint64_t superseed_offer(struct entry *e, uint32_t who)
{
	uint64_t now = tc__now_ns();

	for (uint64_t i = 0; e->sent_to && i < e->nchunks; i++) {
		uint64_t j = (e->cursor + i) % e->nchunks, at = e->sent_ns[j];

		if (e->sent_to[j] &&
		    (at == UINT64_MAX ||
		     now - at < TC_PEER_SUPERSEED_MS * 1000000ull))
			continue;
		e->sent_to[j] = who;
		e->sent_ns[j] = now;
		e->cursor = j + 1;
		return j + 1;
	}
	return 0;
}

/* May chunk k of sealed entry e go to fan-out receiver `who` now?  NULL:
 * yes, it holds one of the TC_PEER_SEED_SENDS slots and is recorded as
 * going to `who`; else why not, and in *offer 1 + a chunk to ask for
 * instead, or 0 (mu held; waits for a slot). */
static const char *superseed_admit(struct tc__peer_server *s, struct entry *e,
				   uint32_t who, uint64_t k, uint64_t *offer)
{
	struct timespec until;

	if (!e->sent_to) {
		e->sent_to = tc__calloc(e->nchunks, sizeof(*e->sent_to));
		e->sent_ns = tc__calloc(e->nchunks, sizeof(*e->sent_ns));
		if (!e->sent_to || !e->sent_ns) {
			tc__free(e->sent_to);
			tc__free(e->sent_ns);
			e->sent_to = NULL;
			e->sent_ns = NULL;
		}
	}
	clock_gettime(CLOCK_REALTIME, &until); /* s->cv's clock */
	until.tv_nsec += TC_PEER_SEED_WAIT_MS * 1000000l;
	if (until.tv_nsec >= 1000000000l) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000l;
	}
	for (;;) {
		int rc;

		/* A chunk sent moments ago goes again only to an idle
		 * seed (the end of a fan-out: its peers are busy).
		 * Failpoint peer.seed_once (subject: the artifact id):
		 * never again within TC_PEER_SUPERSEED_MS, idle or not,
		 * so that a test can count exactly what the receivers
		 * swap however loaded its machine is. */
		if (e->sent_to && superseed_recent(e, who, k) &&
		    (s->seeding >= TC_PEER_SEED_SENDS || s->seed_waiting ||
		     tc__failpoint("peer.seed_once", e->id))) {
			*offer = superseed_offer(e, who);
			return "sent to another receiver moments ago: ask "
			       "your peers";
		}
		if (s->stopping)
			return "the server is stopping";
		if (s->seeding < TC_PEER_SEED_SENDS)
			break;
		s->seed_waiting++;
		rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
		s->seed_waiting--;
		if (rc == ETIMEDOUT) {
			/* Kept for it, unless another took it meanwhile:
			 * it asks again (a queue, not a scramble). */
			if (e->sent_to && !superseed_recent(e, who, k)) {
				e->sent_to[k] = who;
				e->sent_ns[k] = tc__now_ns();
				*offer = k + 1;
			}
			return "sending to other receivers: ask again";
		}
	}
	s->seeding++;
	if (e->sent_to) {
		e->sent_to[k] = who;
		e->sent_ns[k] = UINT64_MAX;
	}
	return NULL;
}

/* The send of chunk k to `who` ended (mu held): its slot is free; when
 * it failed, the chunk went to nobody. */
static void superseed_done(struct tc__peer_server *s, struct entry *e,
			   uint32_t who, uint64_t k, bool ok)
{
	s->seeding--;
	pthread_cond_broadcast(&s->cv);
	if (!e->sent_to || e->sent_to[k] != who || e->sent_ns[k] != UINT64_MAX)
		return;
	e->sent_to[k] = ok ? who : 0;
	e->sent_ns[k] = ok ? tc__now_ns() : 0;
}

/* Chunk k of e to the asker: DATA and its bytes, or an ERROR frame for a
 * chunk that is not (or no longer) here.  *sent says whether the bytes
 * went.  Returns 0 or a negative code (the connection is done). */
static int send_chunk(struct tc__peer_server *s, struct conn *cn,
		      struct entry *e, uint64_t k, struct tc__buf *b,
		      bool *sent)
{
	struct tc__peer_conn *c = cn->c;
	uint64_t off = k * TC_CHUNK_BYTES;
	uint32_t n = (uint32_t)TC_MIN(TC_CHUNK_BYTES, e->total - off);
	char subject[TC_ID_LEN + 32];
	bool held = true;
	int rc;

	*sent = false;
	if (e->have) {
		/* Bits are only ever set, under mu: a chunk seen held stays
		 * held (and its bytes never change). */
		pthread_mutex_lock(&s->mu);
		held = e->have[k / 8] & (1u << k % 8);
		pthread_mutex_unlock(&s->mu);
	}
	if (!held)
		return send_error(c, TC_ENOTFOUND,
				  "chunk not here yet (still filling)");

	snprintf(subject, sizeof(subject), "%s#%llu.", e->id,
		 (unsigned long long)k);
	if (tc__failpoint("peer.delay_chunk", subject))
		usleep(100 * 1000);
	/* A sender that goes quiet mid-pull with its requests taken: the
	 * receiver's peer_timeout has to notice. */
	if (tc__failpoint("peer.stall_chunk", subject))
		sleep(5);
	if (e->gpu) {
		rc = gpu_stage(s, cn, e, off, n);
		if (rc == TC_ENOTFOUND)
			return send_error(c, TC_ENOTFOUND,
					  "chunk no longer here (its GPU "
					  "replica was withdrawn)");
		if (rc < 0)
			return rc;
		if (tc__failpoint("peer.corrupt_chunk", subject))
			cn->stage[n / 2] ^= 0x5a;
	}
	b->len = 0;
	tc__peer_put_data(b, k, n);
	rc = tc__peer_send_buf(c, b, true);
	if (rc < 0)
		return rc;
	if (e->gpu)
		rc = c->t->send(c, cn->stage, n, false);
	else if (tc__failpoint("peer.corrupt_chunk", subject))
		rc = send_corrupt(c, e->fd, off, n);
	else if (tc__failpoint("peer.trickle_chunk", subject))
		rc = send_trickle(c, e->fd, off, n);
	else if (e->have)
		rc = send_filling(cn, e->fd, off, n);
	else
		rc = c->t->send_file(c, e->fd, off, n);
	if (rc == 0) {
		s->n_chunks++;
		s->n_bytes += n;
		*sent = true;
	}
	return rc;
}

static int serve_get(struct tc__peer_server *s, struct conn *cn,
		     const struct tc__peer_msg *m)
{
	struct tc__peer_conn *c = cn->c;
	struct entry *e = lookup(s, m->id);
	struct tc__buf b = TC_BUF_INIT;
	int rc = 0;

	if (!e)
		return send_error(c, TC_ENOTFOUND, "no such artifact here");
	if (m->first >= e->nchunks || m->count > e->nchunks - m->first) {
		unref(s, e);
		return send_error(c, TC_EINVAL, "chunk range past the end");
	}
	s->n_uploads++;
	for (uint64_t k = m->first; rc == 0 && k < m->first + m->count; k++) {
		bool swarm = !e->have && (m->flags & TC_PEER_GET_SHARES);
		bool sent;

		if (swarm) {
			uint64_t offer = 0;
			const char *why;

			pthread_mutex_lock(&s->mu);
			why = superseed_admit(s, e, cn->who, k, &offer);
			pthread_mutex_unlock(&s->mu);
			if (why) {
				b.len = 0;
				tc__peer_put_error_hint(&b, TC_EBUSY, why,
							offer);
				rc = tc__peer_send_buf(c, &b, false);
				continue;
			}
		}
		rc = send_chunk(s, cn, e, k, &b, &sent);
		if (swarm) {
			pthread_mutex_lock(&s->mu);
			superseed_done(s, e, cn->who, k, sent);
			pthread_mutex_unlock(&s->mu);
		}
	}
	s->n_uploads--;
	tc__buf_release(&b);
	unref(s, e);
	return rc;
}

/* HAVE_REQ: a sealed replica has every chunk; a filling one says which
 * (a copy taken under mu, sent after it). */
static int serve_have(struct tc__peer_server *s, struct tc__peer_conn *c,
		      const struct tc__peer_msg *m)
{
	struct entry *e = lookup(s, m->id);
	struct tc__buf b = TC_BUF_INIT;
	uint8_t *bits = NULL;
	size_t bl = (e ? e->nchunks + 7 : 0) / 8;
	int rc;

	if (!e)
		return send_error(c, TC_ENOTFOUND, "no such artifact here");
	if (e->have) {
		bits = tc__malloc(2 * bl + 1);
		if (!bits) {
			unref(s, e);
			return -ENOMEM;
		}
		pthread_mutex_lock(&s->mu);
		memcpy(bits, e->have, bl);
		memcpy(bits + bl, e->fetching, bl);
		pthread_mutex_unlock(&s->mu);
	}
	tc__peer_put_have(&b, e->nchunks, bits, bits ? bits + bl : NULL);
	rc = b.oom ? -ENOMEM : tc__peer_send_buf(c, &b, false);
	tc__buf_release(&b);
	tc__free(bits);
	unref(s, e);
	return rc;
}

static int serve_manifest(struct tc__peer_server *s, struct tc__peer_conn *c,
			  const struct tc__peer_msg *m)
{
	struct entry *e = lookup(s, m->ref);
	int rc;

	if (!e)
		return send_error(c, TC_ENOTFOUND,
				  "no such artifact or key here");
	rc = tc__peer_send_buf(c, &e->manifest, false);
	unref(s, e);
	return rc;
}

/* REPLICATE_REQ (policy ha): the daemon's own pull of `id` from the
 * source named, run here on this connection's thread; the asker waits
 * for the outcome. */
static int serve_replicate(struct tc__peer_server *s, struct tc__peer_conn *c,
			   const struct tc__peer_msg *m)
{
	struct tc__buf b = TC_BUF_INIT;
	uint64_t bytes = 0, ns = 0;
	char err[TC_PEER_MAX_ERRMSG];
	int rc;

	if (!s->o.replicate)
		return send_error(c, TC_ENOTSUP,
				  "this node takes no replication requests");
	tc__log(TC_LOG_INFO, "peer %s asks for a replica of %s from %s",
		c->addr, m->id, m->source);
	/* A node that goes away with the request taken, and a slow pull
	 * (the asker replies "pending" meanwhile). */
	if (tc__failpoint("peer.drop_replicate", m->id))
		return TC_ECLOSED;
	if (tc__failpoint("peer.delay_replicate", m->id))
		sleep(3);
	err[0] = '\0';
	rc = s->o.replicate(s->o.replicate_arg, m->id, m->source, &bytes, &ns,
			    err, sizeof(err));
	if (rc < 0) {
		tc__log(TC_LOG_WARN, "replica of %s for %s failed: %s", m->id,
			c->addr, err);
		return send_error(c, rc < -100000 || rc >= 0 ? TC_EINVAL : rc,
				  err[0] ? err : tc_strerror(rc));
	}
	tc__peer_put_replicated(&b, bytes, ns);
	rc = tc__peer_send_buf(c, &b, false);
	tc__buf_release(&b);
	return rc;
}

/* cn's handshake ended, passed or not (mu held). */
static void handshake_end(struct tc__peer_server *s, struct conn *cn)
{
	if (!cn->handshaking)
		return;
	cn->handshaking = false;
	s->nhandshaking--;
	if (cn->evicted)
		s->nevicted--;
}

/* Live handshakes from `host` (mu held). */
static int handshakes_from(const struct tc__peer_server *s, uint32_t host)
{
	int n = 0;

	for (const struct conn *x = s->conns; x; x = x->next)
		n += x->handshaking && !x->evicted && x->host == host;
	return n;
}

/* The handshake pool is full (mu held): make room for a newcomer from
 * `host` by evicting the oldest handshake of the address that holds the
 * most, if that address holds more than the newcomer's would (fair
 * shares).  So an address flooding connections that never prove the
 * secret (silent, each for up to io_timeout_ms) keeps every other
 * address out of nothing: their newcomers take its places, while its
 * own newcomers are refused.  Quadratic in the pool (max_conns), and
 * run only when it is full.  Returns whether room was made. */
static bool make_room(struct tc__peer_server *s, uint32_t host)
{
	struct conn *old = NULL;
	int most = 0;

	for (struct conn *x = s->conns; x; x = x->next) {
		int n;

		if (!x->handshaking || x->evicted)
			continue;
		if (old && x->host == old->host) {
			if (x->accepted_ns < old->accepted_ns)
				old = x;
			continue;
		}
		n = handshakes_from(s, x->host);
		if (n > most) {
			most = n;
			old = x;
		}
	}
	if (!old || handshakes_from(s, host) + 1 >= most)
		return false;
	old->evicted = true;
	s->nevicted++;
	/* Its thread, in a read or write of the handshake, fails at once
	 * and ends; it still owns (and closes) the fd. */
	shutdown(old->c->fd, SHUT_RDWR);
	return true;
}

#define FNV_BASIS 2166136261u

static uint32_t fnv1a(uint32_t h, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const uint8_t *)p)[i]) * 16777619u;
	return h;
}

/* Bytes of an address without its port ("10.0.0.1:7070", "[::1]:7070"). */
static size_t host_len(const char *addr)
{
	const char *port = strrchr(addr, ':');

	return port ? (size_t)(port - addr) : strlen(addr);
}

/* The cluster handshake, first on every connection (net/auth.h): only a
 * peer that proves it knows the secret gets a single frame decoded.
 * Returns 0, or a negative code with `why`. */
static int auth(struct tc__peer_server *s, struct conn *cn, char *why,
		size_t whylen)
{
	struct tc__peer_conn *c = cn->c;
	struct tc__auth a;
	int rc;

	/* TLS first (on this connection's thread, within the io timeout,
	 * so a silent or plaintext client stalls nobody else). */
	rc = tc__peer_secure(c, s->o.tls, true, s->o.io_timeout_ms, why,
			     whylen);
	if (rc < 0)
		return rc;
	if (c->tls) {
		/* Once per server: how replicas go out (docs/peer.md). */
		static atomic_bool said;

		if (!atomic_exchange(&said, true))
			tc__log(TC_LOG_INFO, "peer TLS: %s; replicas go out %s",
				tc__tls_describe(c->tls),
				tc__tls_ktls_send(c->tls) ?
					"with sendfile through kernel TLS" :
					"with SSL_write from the mapped "
					"memfd (no kernel TLS)");
		tc__log(TC_LOG_DEBUG, "peer %s: %s", c->addr,
			tc__tls_describe(c->tls));
	}
	rc = tc__auth_init_server(&a, s->o.secret, TC_AUTH_ROLE_PEER,
				  TC_AUTH_ROLE_PEER, s->o.name,
				  s->o.io_timeout_ms);
	if (rc == 0)
		rc = tc__auth_run_tls(&a, c->fd, c->tls);
	if (rc < 0) {
		snprintf(why, whylen, "%s", a.err);
	} else {
		/* Who asks, for super-seeding: its name and host (daemons
		 * on one host may share a name). */
		uint32_t h = fnv1a(FNV_BASIS, a.peer_name, strlen(a.peer_name));

		h = fnv1a(h, "@", 1);
		h = fnv1a(h, c->addr, host_len(c->addr));
		cn->who = h ? h : 1;
	}
	tc__auth_wipe(&a);
	return rc;
}

/* The handshake ended with `rc` (and `err`): admit the connection among
 * the authenticated ones, or say why not.  An eviction may have landed
 * after the handshake passed (its socket is shut down then), so it is
 * read under mu with the admission.  Returns 0 or a negative code. */
static int handshake_done(struct tc__peer_server *s, struct conn *cn, int rc,
			  const char *err)
{
	const char *addr = cn->c->addr;
	bool evicted, full = false;

	pthread_mutex_lock(&s->mu);
	evicted = cn->evicted;
	if (evicted)
		tc__log_rl(&s->rl_evicted, TC_LOG_WARN,
			   "peer %s dropped in the handshake: %d connections "
			   "were in theirs, most of them from its address, and "
			   "another address needed a place",
			   addr, s->o.max_conns);
	else if (rc < 0)
		tc__log_rl_burst(&s->rl_auth, TC_PEER_AUTH_BURST, TC_LOG_WARN,
				 "peer %s refused: %s", addr, err);
	if (rc == 0 && !evicted) {
		handshake_end(s, cn);
		full = s->nconns - s->nhandshaking > s->o.max_conns;
	}
	pthread_mutex_unlock(&s->mu);
	if (full)
		tc__log(TC_LOG_WARN, "peer %s refused: %d connections already",
			addr, s->o.max_conns);
	if (rc < 0 || evicted || full) {
		s->n_refused++;
		return rc < 0 ? rc : -EBUSY;
	}
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	struct tc__peer_server *s = cn->srv;
	struct tc__peer_conn *c = cn->c;
	struct timeval idle = { s->o.idle_timeout_ms / 1000,
				(s->o.idle_timeout_ms % 1000) * 1000 };
	struct timeval io = { s->o.io_timeout_ms / 1000,
			      (s->o.io_timeout_ms % 1000) * 1000 };
	char err[512];
	int rc;

	rc = auth(s, cn, err, sizeof(err));
	rc = handshake_done(s, cn, rc, err);
	if (rc < 0)
		goto out;
	for (;;) {
		struct tc__peer_msg m;

		/* Waiting for the next request may take long; a request
		 * once started must not (its body has io_timeout_ms in all,
		 * and is a few KiB at most). */
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
		rc = tc__peer_recv_request(c, &m, s->o.io_timeout_ms, err,
					   sizeof(err));
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &io, sizeof(io));
		if (rc == 0 && m.type == TC_PEER_MANIFEST_REQ)
			rc = serve_manifest(s, c, &m);
		else if (rc == 0 && m.type == TC_PEER_GET)
			rc = serve_get(s, cn, &m);
		else if (rc == 0 && m.type == TC_PEER_HAVE_REQ)
			rc = serve_have(s, c, &m);
		else if (rc == 0 && m.type == TC_PEER_REPLICATE_REQ)
			rc = serve_replicate(s, c, &m);
		else if (rc == 0) {
			snprintf(err, sizeof(err),
				 "%s: frame type %u is not a request", c->addr,
				 m.type);
			rc = TC_EPROTO;
		}
		tc__peer_msg_release(&m);
		if (rc < 0)
			break;
	}
	if (rc != TC_ECLOSED && !s->stopping)
		tc__log(TC_LOG_WARN, "peer connection %s dropped: %s", c->addr,
			err);
out:
	stage_free(cn);
	tc__peer_buf_free(cn->fill, TC_PEER_PIECE);
	pthread_mutex_lock(&s->mu);
	for (struct conn **p = &s->conns; *p; p = &(*p)->next)
		if (*p == cn) {
			*p = cn->next;
			break;
		}
	s->nconns--;
	handshake_end(s, cn);
	c->t->close(c);
	tc__free(cn);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct tc__peer_server *s = arg;
	struct pollfd p[2] = { { s->l->fd, POLLIN, 0 },
			       { s->stop_pipe[0], POLLIN, 0 } };

	for (;;) {
		struct tc__peer_conn *c;
		struct conn *cn;
		pthread_attr_t at;
		pthread_t th;
		int rc;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		rc = s->l->t->accept(s->l, s->o.io_timeout_ms, &c);
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM ||
		    rc == -ENOBUFS) {
			/* The connection stays queued and poll says so at
			 * once: pause rather than spin, until fds come back. */
			tc__log_rl(&s->rl_fds, TC_LOG_WARN,
				   "peer server: cannot accept (%s): pausing "
				   "%d ms between tries",
				   strerror(-rc), TC_PEER_ACCEPT_PAUSE_MS);
			poll(p + 1, 1, TC_PEER_ACCEPT_PAUSE_MS);
			continue;
		}
		if (rc < 0)
			continue; /* ECONNABORTED and the like: the next */
		s->n_conns++;
		cn = tc__calloc(1, sizeof(*cn));
		if (!cn) {
			s->n_refused++;
			c->t->close(c);
			continue;
		}
		cn->srv = s;
		cn->c = c;
		cn->handshaking = true;
		cn->accepted_ns = tc__now_ns();
		cn->host = fnv1a(FNV_BASIS, c->addr, host_len(c->addr));
		pthread_mutex_lock(&s->mu);
		if (s->nhandshaking - s->nevicted >= s->o.max_conns &&
		    !make_room(s, cn->host)) {
			pthread_mutex_unlock(&s->mu);
			s->n_refused++;
			tc__log_rl(&s->rl_full, TC_LOG_WARN,
				   "peer %s refused: %d connections already in "
				   "the handshake, and its address holds its "
				   "share of them",
				   c->addr, s->o.max_conns);
			c->t->close(c);
			tc__free(cn);
			continue;
		}
		cn->next = s->conns;
		s->conns = cn;
		s->nconns++;
		s->nhandshaking++;
		pthread_mutex_unlock(&s->mu);
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&at, 256 << 10);
		if (pthread_create(&th, &at, conn_main, cn)) {
			pthread_mutex_lock(&s->mu);
			s->conns = cn->next; /* only this thread adds */
			s->nconns--;
			handshake_end(s, cn);
			pthread_mutex_unlock(&s->mu);
			c->t->close(c);
			tc__free(cn);
		}
		pthread_attr_destroy(&at);
	}
	return NULL;
}

int tc__peer_server_start(const struct tc__peer_server_opts *o,
			  struct tc__peer_server **out, char *err,
			  size_t errlen)
{
	struct tc__peer_server *s;
	sigset_t all, old;
	int rc;

	*out = NULL;
	s = tc__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	if (s->o.io_timeout_ms <= 0)
		s->o.io_timeout_ms = 5000;
	if (s->o.idle_timeout_ms <= 0)
		s->o.idle_timeout_ms = 300000;
	if (s->o.max_conns <= 0)
		s->o.max_conns = 256;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	tc__map_init(&s->by_id);
	tc__map_init(&s->by_gpu);
	tc__map_init(&s->keys);
	if (pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto out_free;
	}
	rc = tc__peer_tcp.listen(o->listen, &s->l, err, errlen);
	if (rc < 0)
		goto out_pipe;
	/* The daemon takes SIGTERM through a signalfd on its loop thread:
	 * the peer threads (and the connection threads they start, which
	 * inherit the mask) must never be the ones a signal lands on. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&s->acceptor, NULL, accept_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		rc = -EAGAIN;
		snprintf(err, errlen, "cannot start the peer accept thread");
		goto out_listen;
	}
	tc__log(TC_LOG_INFO, "peer server listening on %s (%s%s)", s->l->addr,
		s->l->t->name, o->tls ? ", TLS" : "");
	*out = s;
	return 0;

out_listen:
	s->l->t->unlisten(s->l);
out_pipe:
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
out_free:
	tc__map_release(&s->by_id);
	tc__map_release(&s->by_gpu);
	tc__map_release(&s->keys);
	tc__free(s);
	return rc;
}

const char *tc__peer_server_addr(const struct tc__peer_server *s)
{
	return s->l->addr;
}

void tc__peer_server_stats(struct tc__peer_server *s,
			   struct tc__peer_server_stats *out)
{
	out->conns = s->n_conns;
	out->refused = s->n_refused;
	out->chunks_sent = s->n_chunks;
	out->bytes_sent = s->n_bytes;
}

void tc__peer_server_stop(struct tc__peer_server *s)
{
	struct tc__map_entry *me;
	size_t b;

	if (!s)
		return;
	(void)!write(s->stop_pipe[1], "x", 1);
	pthread_join(s->acceptor, NULL);
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->cv); /* super-seeding waits */
	for (struct conn *cn = s->conns; cn; cn = cn->next)
		shutdown(cn->c->fd, SHUT_RDWR);
	while (s->nconns)
		pthread_cond_wait(&s->cv, &s->mu);
	for (me = tc__map_next(&s->by_id, NULL, &b); me;
	     me = tc__map_next(&s->by_id, me, &b))
		entry_put(me->val);
	for (me = tc__map_next(&s->by_gpu, NULL, &b); me;
	     me = tc__map_next(&s->by_gpu, me, &b))
		for (struct entry *g = me->val, *n; g; g = n) {
			n = g->gnext;
			entry_put(g);
		}
	for (me = tc__map_next(&s->keys, NULL, &b); me;
	     me = tc__map_next(&s->keys, me, &b))
		tc__free(me->val);
	pthread_mutex_unlock(&s->mu);
	tc__map_release(&s->by_id);
	tc__map_release(&s->by_gpu);
	tc__map_release(&s->keys);
	s->l->t->unlisten(s->l);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	tc__free(s);
}
