/*
 * pull.c - the receiver: one artifact from several sources over several
 * streams each (peer.h).
 *
 * Chunks are handed out dynamically: a stream takes the next chunk nobody
 * holds or fetches when it has fewer than TC_PULL_DEPTH requests out, so a
 * fast source or stream simply takes more (an even split would run at the
 * slowest one, reference/cluster.md P4).  Bytes land straight in the
 * destination, hashed piece by piece while they are in cache; a chunk
 * counts only when its BLAKE3 matches the manifest, whose digests the
 * artifact id vouches for (wire.c).  A chunk that fails goes back to the
 * queue, barred from the source that sent it; a source that sent
 * TC_PEER_BAD_LIMIT bad chunks, or whose stream died or stalled past the
 * timeout, is dropped and its chunks go to the others.  Shared state is
 * under one mutex, taken once per chunk.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/log.h"
#include "frameio.h"
#include "peer.h"
#include "tcast/errors.h"

#define TC_PULL_DEPTH 2		 /* requests outstanding per stream */
#define TC_PULL_PIECE (1u << 20) /* bytes per recv (then hashed) */

enum { C_TODO, C_FLIGHT, C_DONE };

struct pull {
	const struct tc__peer_pull_opts *o;
	struct tc__peer_pull_result *res;
	struct tc__peer_msg man; /* the verified manifest */
	uint8_t *base;		 /* destination of the byte space */
	uint64_t n;		 /* chunks */
	uint8_t *state;		 /* C_* per chunk */
	uint16_t *barred;	 /* per chunk: sources that sent it bad */
	uint64_t ndone, nflight;
	int live[TC_PEER_MAX_SOURCES];	   /* streams still running */
	bool dropped[TC_PEER_MAX_SOURCES]; /* use no more */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

struct stream {
	struct pull *p;
	int src;
	pthread_t th;
	bool started;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Drop source `src` (mu held): its streams stop at their next chunk. */
static void drop_source(struct pull *p, int src, const char *why)
{
	struct tc__peer_source_stats *st = &p->res->src[src];

	if (!p->dropped[src]) {
		p->dropped[src] = true;
		st->failed = true;
		snprintf(st->err, sizeof(st->err), "%s", why);
		if (p->ndone < p->n)
			tc__log(TC_LOG_WARN, "pull %s: dropping source %s: %s",
				p->man.id, st->addr, why);
	}
	pthread_cond_broadcast(&p->cv);
}

/* The next chunk stream `src` may fetch, marked in flight, or -1. */
static int64_t take(struct pull *p, int src)
{
	for (uint64_t k = 0; k < p->n; k++)
		if (p->state[k] == C_TODO && !(p->barred[k] & (1u << src))) {
			p->state[k] = C_FLIGHT;
			p->nflight++;
			return (int64_t)k;
		}
	return -1;
}

static uint32_t chunk_len(const struct pull *p, uint64_t k)
{
	return (uint32_t)TC_MIN(TC_CHUNK_BYTES,
				p->man.table.total_bytes - k * TC_CHUNK_BYTES);
}

/* Receive one chunk's DATA into place and check it.  Returns 1 when it
 * verified, 0 when it did not (the stream is still in sync), or a
 * negative code (the stream is not). */
static int recv_chunk(struct pull *p, struct tc__peer_conn *c,
		      struct tc__hasher *h, uint64_t k, char *err,
		      size_t errlen)
{
	struct tc__peer_msg m;
	struct tc__digest d;
	uint8_t *dst;
	uint32_t n = chunk_len(p, k), got = 0;
	int rc;

	rc = tc__peer_recv_msg(c, &m, err, errlen);
	if (rc == 0 && m.type == TC_PEER_ERROR) {
		snprintf(err, errlen, "%s says: %s (%s)", c->addr, m.msg,
			 tc_err_name(m.code));
		rc = m.code;
	} else if (rc == 0 &&
		   (m.type != TC_PEER_DATA || m.first != k || m.count != n)) {
		snprintf(err, errlen, "%s: sent something else than chunk %llu",
			 c->addr, (unsigned long long)k);
		rc = TC_EPROTO;
	}
	tc__peer_msg_release(&m);
	if (rc < 0)
		return rc;
	dst = p->base + k * TC_CHUNK_BYTES;
	tc__hasher_reset(h);
	while (got < n) {
		uint32_t piece = TC_MIN(TC_PULL_PIECE, n - got);

		rc = c->t->recv(c, dst + got, piece);
		if (rc < 0) {
			snprintf(err, errlen, "%s: %s in chunk %llu", c->addr,
				 rc == TC_ECLOSED ? "connection closed" :
				 rc == -ETIMEDOUT ? "timed out (no bytes)" :
						    strerror(-rc),
				 (unsigned long long)k);
			return rc;
		}
		tc__hasher_update(h, dst + got, piece);
		got += piece;
	}
	tc__hasher_final(h, &d);
	return tc__digest_eq(&d, &p->man.chunks[k]) ? 1 : 0;
}

static void *stream_main(void *arg)
{
	struct stream *sm = arg;
	struct pull *p = sm->p;
	const struct tc__peer_pull_opts *o = p->o;
	struct tc__peer_source_stats *st = &p->res->src[sm->src];
	struct tc__peer_conn *c = NULL;
	struct tc__hasher *h = tc__hasher_new();
	struct tc__buf b = TC_BUF_INIT;
	int64_t q[TC_PULL_DEPTH];
	int nq = 0, nsent = 0, rc;
	char err[512] = "";

	rc = h ? tc__peer_tcp.connect(o->sources[sm->src], o->timeout_ms,
				      o->timeout_ms, &c, err, sizeof(err)) :
		 -ENOMEM;
	if (rc == 0)
		rc = tc__peer_auth_client(c, o->secret, o->name, o->timeout_ms,
					  err, sizeof(err));
	while (rc == 0) {
		pthread_mutex_lock(&p->mu);
		while (!p->dropped[sm->src] && nq < TC_PULL_DEPTH) {
			int64_t k = take(p, sm->src);

			if (k < 0)
				break;
			q[nq++] = k;
		}
		if (nq == 0) {
			/* Nothing for us now: finished, or what is left is
			 * in flight elsewhere (and may come back). */
			if (p->ndone == p->n || p->dropped[sm->src] ||
			    p->nflight == 0) {
				pthread_mutex_unlock(&p->mu);
				break;
			}
			pthread_cond_wait(&p->cv, &p->mu);
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		pthread_mutex_unlock(&p->mu);
		for (; nsent < nq; nsent++) {
			b.len = 0;
			tc__peer_put_get(&b, p->man.id, (uint64_t)q[nsent], 1);
			rc = tc__peer_send_buf(c, &b, nsent + 1 < nq);
			if (rc < 0) {
				snprintf(err, sizeof(err), "%s: send: %s",
					 c->addr, strerror(-rc));
				break;
			}
		}
		if (rc < 0)
			break;
		rc = recv_chunk(p, c, h, (uint64_t)q[0], err, sizeof(err));
		if (rc < 0)
			break;
		pthread_mutex_lock(&p->mu);
		p->nflight--;
		if (rc == 1) {
			p->state[q[0]] = C_DONE;
			p->ndone++;
			st->chunks++;
			st->bytes += chunk_len(p, (uint64_t)q[0]);
		} else {
			p->state[q[0]] = C_TODO;
			p->barred[q[0]] |= (uint16_t)(1u << sm->src);
			st->bad_chunks++;
			tc__log(TC_LOG_WARN,
				"pull %s: chunk %lld from %s fails its digest; "
				"fetching it elsewhere",
				p->man.id, (long long)q[0], st->addr);
			if (st->bad_chunks >= TC_PEER_BAD_LIMIT)
				drop_source(p, sm->src,
					    "sent chunks that fail their "
					    "digest");
		}
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		memmove(q, q + 1, sizeof(q[0]) * (size_t)--nq);
		nsent--;
		rc = 0;
	}
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < nq; i++) {
		p->state[q[i]] = C_TODO;
		p->nflight--;
	}
	if (rc < 0)
		drop_source(p, sm->src, err);
	p->live[sm->src]--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (c)
		c->t->close(c);
	tc__hasher_free(h);
	tc__buf_release(&b);
	return NULL;
}

/* The manifest from the first source that has `ref`. */
static int get_manifest(struct pull *p, char *err, size_t errlen)
{
	const struct tc__peer_pull_opts *o = p->o;
	int rc = TC_ENOTFOUND;

	for (int i = 0; i < o->nsources; i++) {
		struct tc__peer_source_stats *st = &p->res->src[i];
		struct tc__peer_conn *c = NULL;
		struct tc__buf b = TC_BUF_INIT;
		char e[512] = "";

		rc = tc__peer_tcp.connect(o->sources[i], o->timeout_ms,
					  o->timeout_ms, &c, e, sizeof(e));
		if (rc == 0)
			rc = tc__peer_auth_client(c, o->secret, o->name,
						  o->timeout_ms, e, sizeof(e));
		if (rc == 0) {
			tc__peer_put_manifest_req(&b, o->ref);
			rc = tc__peer_send_buf(c, &b, false);
		}
		if (rc == 0)
			rc = tc__peer_recv_msg(c, &p->man, e, sizeof(e));
		if (rc == 0 && p->man.type == TC_PEER_ERROR) {
			snprintf(e, sizeof(e), "%s says: %s (%s)",
				 o->sources[i], p->man.msg,
				 tc_err_name(p->man.code));
			rc = p->man.code;
		} else if (rc == 0 && p->man.type != TC_PEER_MANIFEST) {
			snprintf(e, sizeof(e), "%s: not a manifest",
				 o->sources[i]);
			rc = TC_EPROTO;
		} else if (rc == 0 && tc__is_id(o->ref) &&
			   strcmp(o->ref, p->man.id)) {
			snprintf(e, sizeof(e), "%s: manifest of '%s' for '%s'",
				 o->sources[i], p->man.id, o->ref);
			rc = TC_EDIGEST;
		}
		tc__buf_release(&b);
		if (c)
			c->t->close(c);
		if (rc == 0)
			return 0;
		/* Unreachable, refusing or without the artifact: no
		 * streams for it. */
		p->dropped[i] = true;
		st->failed = true;
		snprintf(st->err, sizeof(st->err), "%s", e);
		snprintf(err, errlen, "%s", e);
		tc__peer_msg_release(&p->man);
		tc__peer_msg_init(&p->man);
	}
	return rc;
}

static void summarize(const struct pull *p, char *err, size_t errlen)
{
	size_t off = (size_t)snprintf(err, errlen,
				      "pulled %llu of %llu chunks of '%s'; ",
				      (unsigned long long)p->ndone,
				      (unsigned long long)p->n, p->o->ref);

	for (int i = 0; i < p->o->nsources && off < errlen; i++)
		off += (size_t)snprintf(err + off, errlen - off, "%s%s: %s",
					i ? "; " : "", p->res->src[i].addr,
					p->res->src[i].failed ?
						p->res->src[i].err :
						"nothing left it could send");
}

int tc__peer_pull(const struct tc__peer_pull_opts *o,
		  struct tc__peer_pull_result *res, char *err, size_t errlen)
{
	struct stream *sm = NULL;
	struct pull p;
	uint64_t t0;
	int rc, ns = 0;

	memset(res, 0, sizeof(*res));
	memset(&p, 0, sizeof(p));
	tc__peer_msg_init(&p.man);
	p.o = o;
	p.res = res;
	if (o->nsources < 1 || o->nsources > TC_PEER_MAX_SOURCES ||
	    o->streams < 1 || o->streams > TC_PEER_MAX_STREAMS || !o->ref ||
	    !o->ref[0] || strlen(o->ref) > TC_PEER_MAX_REF) {
		snprintf(err, errlen,
			 "a pull needs a ref, 1..%d sources and 1..%d "
			 "streams per source",
			 TC_PEER_MAX_SOURCES, TC_PEER_MAX_STREAMS);
		return TC_EINVAL;
	}
	res->nsources = o->nsources;
	for (int i = 0; i < o->nsources; i++)
		snprintf(res->src[i].addr, sizeof(res->src[i].addr), "%s",
			 o->sources[i]);
	rc = get_manifest(&p, err, errlen);
	if (rc < 0)
		goto out;
	snprintf(res->id, sizeof(res->id), "%s", p.man.id);
	res->bytes = p.man.table.total_bytes;
	res->nchunks = p.n = p.man.nchunks;
	rc = o->sink.begin(o->sink.arg, p.man.id, &p.man.table, &p.base, err,
			   errlen);
	if (rc < 0)
		goto out;
	t0 = now_ns();
	p.state = tc__calloc(p.n ? p.n : 1, 1);
	p.barred = tc__calloc(p.n ? p.n : 1, sizeof(*p.barred));
	sm = tc__calloc((size_t)o->nsources * (size_t)o->streams, sizeof(*sm));
	if (!p.state || !p.barred || !sm) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.cv, NULL);
	for (int s = 0; p.n && s < o->nsources; s++) {
		if (p.dropped[s])
			continue;
		for (int j = 0; j < o->streams; j++) {
			struct stream *x = &sm[ns];

			x->p = &p;
			x->src = s;
			pthread_mutex_lock(&p.mu);
			p.live[s]++;
			pthread_mutex_unlock(&p.mu);
			if (pthread_create(&x->th, NULL, stream_main, x)) {
				pthread_mutex_lock(&p.mu);
				p.live[s]--;
				pthread_mutex_unlock(&p.mu);
				continue;
			}
			x->started = true;
			ns++;
		}
	}
	for (int i = 0; i < ns; i++)
		pthread_join(sm[i].th, NULL);
	res->ns = now_ns() - t0;
	rc = 0;
	if (p.ndone != p.n) {
		summarize(&p, err, errlen);
		rc = TC_EDIGEST;
		for (int i = 0; i < o->nsources; i++)
			if (res->src[i].failed &&
			    !strstr(res->src[i].err, "digest"))
				rc = TC_ECLOSED;
	}
	pthread_mutex_destroy(&p.mu);
	pthread_cond_destroy(&p.cv);
out:
	tc__free(sm);
	tc__free(p.state);
	tc__free(p.barred);
	tc__peer_msg_release(&p.man);
	return rc;
}
