/*
 * pull.c - the receiver: one artifact from several sources over several
 * streams each (peer.h).
 *
 * Chunks are handed out dynamically: a stream takes the next chunk nobody
 * holds or fetches when it has fewer than TC_PULL_DEPTH requests out, so a
 * fast source or stream simply takes more (an even split would run at the
 * slowest one, reference/cluster.md P4).  A stream only receives: each
 * chunk into a buffer of the pull's pool (a sink that writes) or its
 * place in the mapping, then hands it to a pool of verifier threads that
 * hash it and write it into the sink, so that one stream moves bytes at
 * the link's rate (receiving, hashing and writing on one thread held a
 * stream to ~6 Gbit/s, below iperf3's 8-11).  At most vcap chunks wait
 * received and unverified (the memory cap; a stream waits for a slot
 * beyond it, and TCP's window holds the sender).  A chunk counts only
 * when its BLAKE3 matches the manifest, whose digests the artifact id
 * vouches for (wire.c).  A chunk that fails goes back to the
 * queue, barred from the source that sent it; a source that sent
 * TC_PEER_BAD_LIMIT bad chunks, or whose stream died or stalled past the
 * timeout, is dropped and its chunks go to the others.  Shared state is
 * under one mutex, taken once per chunk.
 *
 * Fan-out as a pipeline: a source may be another receiver still filling.
 * Each stream first asks its source what it holds (HAVE); a filling
 * source is asked only for chunks it holds, and asked again when nothing
 * of it is left to take.  A sealed source is asked first for chunks no
 * filling source holds, so with many receivers each chunk tends to leave
 * it once and the receivers swap the rest; after TC_PULL_VALVE_MS
 * without a verified chunk it sends anything (a filling source may be
 * slow or stuck).  Chunks are scanned in an order of their own per pull
 * (a random start and a random stride), so receivers started together
 * ask the seed for different chunks.  A receiver that serves what it
 * pulls flags its GETs to a sealed source SHARES; such a source may
 * decline a chunk it has just sent to another receiver (serve.c,
 * super-seeding): the chunk goes back to the queue and is not asked of a
 * sealed source for TC_PULL_DECLINED_MS, by when a peer says it holds or
 * fetches it; the chunk the seed offers instead is asked for next.  The
 * caller's thread supervises: it reports newly verified chunks to the
 * sink (which makes this node serve them) and adds sources the discover
 * callback finds.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/random.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "frameio.h"
#include "peer.h"
#include "net/ev.h"
#include "tcast/errors.h"

#define TC_PULL_DEPTH	    2		  /* requests outstanding per stream */
#define TC_PULL_PIECE	    TC_PEER_PIECE /* bytes per recv */
#define TC_PULL_HAVE_MS	    30		  /* ask a filling source again after */
#define TC_PULL_VALVE_MS    300	  /* no progress: the seed sends anything */
#define TC_PULL_TICK_MS	    50	  /* supervisor and idle-stream period */
#define TC_PULL_DECLINED_MS 250	  /* a seed said "ask your peers" */
#define TC_PULL_MAX_VERIFY  8	  /* verifier threads, at most */
#define TC_PULL_HOLD_MS	    10000 /* failpoint pull.hold_sources, at most */
/* A chunk's bytes must all arrive within this many timeouts, and never
 * less than TC_PULL_CHUNK_MIN_MS (60 s at the default 5 s: 70 KB/s for 4
 * MiB; a short timeout must not drop a source on a busy link): the
 * timeout alone bounds each wait for a byte, so a source trickling bytes
 * would hold its chunks for ever. */
#define TC_PULL_CHUNK_TIMEOUTS 12
#define TC_PULL_CHUNK_MIN_MS   10000
#define TC_PULL_BUFFER_MB                                                   \
	128 /* received chunks not yet verified, at most (MiB; environment: \
	       TCAST_PEER_PULL_BUFFER_MB) */

enum { C_TODO, C_FLIGHT, C_DONE, C_SKIP }; /* C_SKIP: not wanted */

/* What the pull knows of one source (under mu). */
struct psrc {
	char addr[TC_PEER_ADDR_MAX];
	bool known;	   /* its first HAVE arrived */
	bool complete;	   /* sealed there: every chunk */
	uint8_t *have;	   /* filling: chunks it said it holds (owned) */
	uint8_t *fetching; /* filling: chunks it fetches from a seed */
	uint64_t have_ns;  /* when it last said so */
};

/* A chunk received, waiting for a verifier. */
struct vjob {
	uint64_t k;   /* the chunk */
	int src;      /* the source that sent it */
	uint8_t *buf; /* its bytes (a pool buffer), or NULL: in the mapping */
};

struct pull {
	const struct tc__peer_pull_opts *o;
	struct tc__peer_pull_result *res;
	struct tc__peer_msg man; /* the verified manifest */
	uint8_t *base;		 /* destination of the byte space */
	bool in_place;		 /* chunks land in base, not through write */
	uint64_t n;		 /* chunks */
	uint64_t nwant;		 /* chunks to pull (n unless sink.want) */
	uint64_t start;		 /* scans begin here (random) */
	uint64_t stride;	 /* and step by this (random, coprime to n) */
	uint64_t *declined;	 /* per chunk: when a seed last declined it */
	uint8_t *state;		 /* C_* per chunk */
	uint16_t *barred;	 /* per chunk: sources that sent it bad */
	uint64_t ndone, nflight;
	uint64_t progress_ns; /* last verified chunk (or the start) */
	uint64_t valve_ns;    /* TC_PULL_VALVE_MS, or failpoint pull.valve_ms */
	uint64_t *fresh;      /* verified, not yet told to the sink */
	uint64_t nfresh;
	uint64_t *asked; /* asked of a sealed source, not yet told */
	uint64_t nasked;
	uint8_t *told; /* per chunk: `asked` of it went already */
	int nsrc;      /* sources so far (grows by discovery) */
	int ncpu;      /* CPUs we may run on, for tc__peer_auto_streams */
	int lone;      /* a lone source's streams (environment), or 0 */
	int nslots;    /* stream slots (threads) the pull may start in all */
	int nlive;
	struct psrc src[TC_PEER_MAX_SOURCES];
	int live[TC_PEER_MAX_SOURCES];	   /* streams still running */
	int active[TC_PEER_MAX_SOURCES];   /* of those, not retiring */
	int target[TC_PEER_MAX_SOURCES];   /* streams it should have: more
					      sources joining lower it, and
					      streams over it retire */
	bool dropped[TC_PEER_MAX_SOURCES]; /* use no more */
	int fatal; /* a staged sink failed: the pull ends */
	char fatal_err[512];
	/* Received chunks on their way to the verifiers: at most vcap slots
	 * out (a buffer each for a sink that writes), a ring of vcap jobs. */
	int vcap;	 /* slots: the buffering's memory cap */
	int vused;	 /* slots out: being received or verified */
	uint8_t **vbufs; /* every buffer made so far (nvbufs, owned) */
	int nvbufs;
	uint8_t **vfree; /* of those, free (nvfree) */
	int nvfree;
	struct vjob *vq; /* received, not yet taken by a verifier */
	int vhead, vlen;
	int nverifying;		/* jobs queued or being verified */
	bool vstop;		/* the streams are gone: verifiers end */
	int hold_sources;	/* failpoint pull.hold_sources: no chunk is
				   taken before this many sources are known,
				   and found ones join all at once */
	uint64_t hold_until_ns; /* or until then */
	bool held;		/* failpoint pull.hold_verify done */
	bool holding;		/* and in progress: the other verifiers wait */
	pthread_t vth[TC_PULL_MAX_VERIFY];
	int nvth;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t vcv; /* a job for the verifiers, or vstop */
};

struct stream {
	struct pull *p;
	int src;
	pthread_t th;
	bool started;
};

/* Wait on p->cv (mu held) for at most `ms` milliseconds. */
static void wait_ms(struct pull *p, long ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000l;
	if (ts.tv_nsec >= 1000000000l) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000l;
	}
	pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Drop source `src` (mu held): its streams stop at their next chunk. */
static void drop_source(struct pull *p, int src, const char *why)
{
	struct tc__peer_source_stats *st = &p->res->src[src];

	if (!p->dropped[src]) {
		p->dropped[src] = true;
		st->failed = true;
		snprintf(st->err, sizeof(st->err), "%s", why);
		if (p->ndone < p->nwant)
			tc__log(TC_LOG_WARN, "pull %s: dropping source %s: %s",
				p->man.id, st->addr, why);
	}
	pthread_cond_broadcast(&p->cv);
}

static bool bit(const uint8_t *b, uint64_t k)
{
	return b[k / 8] & (1u << k % 8);
}

/* Some live filling source other than `self` holds chunk k, or fetches
 * it from a seed (mu held). */
static bool peer_holds(const struct pull *p, int self, uint64_t k)
{
	for (int i = 0; i < p->nsrc; i++)
		if (i != self && !p->dropped[i] && p->src[i].have &&
		    (bit(p->src[i].have, k) || bit(p->src[i].fetching, k)))
			return true;
	return false;
}

/* The next chunk stream `src` may fetch, marked in flight, or -1 (mu
 * held).  A filling source: only what it holds.  A sealed one: what no
 * filling source holds, unless the pull has stalled. */
static int64_t take(struct pull *p, int src, uint64_t now)
{
	const struct psrc *ps = &p->src[src];
	bool valve = now - p->progress_ns > p->valve_ns;

	if (!ps->known)
		return -1;
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = 0; i < p->n; i++) {
			uint64_t k = (p->start + i * p->stride) % p->n;

			if (p->state[k] != C_TODO ||
			    (p->barred[k] & (1u << src)))
				continue;
			if (ps->complete && p->declined[k] &&
			    now - p->declined[k] <
				    TC_PULL_DECLINED_MS * 1000000ull)
				continue;
			if (!ps->complete && !bit(ps->have, k))
				continue;
			if (ps->complete && pass == 0 && peer_holds(p, src, k))
				continue;
			p->state[k] = C_FLIGHT;
			p->nflight++;
			return (int64_t)k;
		}
		if (!ps->complete || !valve)
			break;
	}
	return -1;
}

static void fail_pull(struct pull *p, int rc, const char *err);

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static uint32_t chunk_len(const struct pull *p, uint64_t k)
{
	return (uint32_t)TC_MIN(TC_CHUNK_BYTES,
				p->man.table.total_bytes - k * TC_CHUNK_BYTES);
}

/* ------------------------------------------------- buffers and verifiers */

/* A slot for one received chunk (mu held on entry and return; may wait):
 * a buffer from the pool (a sink that writes), or none (the chunk lands
 * in the mapping).  At most p->vcap slots are out at once: what bounds
 * the memory of chunks received but not yet verified.  Returns 0 with
 * *buf set (NULL for the mapping), or a negative code with `err` (the
 * pull failed meanwhile, or a buffer could not be made). */
static int slot_get(struct pull *p, uint8_t **buf, char *err, size_t errlen)
{
	const struct tc__peer_sink *sk = &p->o->sink;
	uint8_t *nb = NULL;
	int rc = 0;

	*buf = NULL;
	while (p->vused >= p->vcap && !p->fatal)
		pthread_cond_wait(&p->cv, &p->mu);
	if (p->fatal) {
		snprintf(err, errlen, "the pull failed: %s", p->fatal_err);
		return -ECANCELED;
	}
	p->vused++;
	if (p->in_place)
		return 0;
	if (p->nvfree > 0) {
		*buf = p->vfree[--p->nvfree];
		return 0;
	}
	/* A new buffer, made without the lock (pinned memory is slow to
	 * make). */
	pthread_mutex_unlock(&p->mu);
	if (sk->stage) {
		rc = sk->stage(sk->arg, &nb, err, errlen);
	} else {
		nb = tc__peer_buf_new(TC_CHUNK_BYTES);
		if (!nb) {
			rc = -ENOMEM;
			snprintf(err, errlen,
				 "out of memory for a chunk buffer");
		}
	}
	pthread_mutex_lock(&p->mu);
	if (rc < 0) {
		p->vused--;
		fail_pull(p, rc, err);
		return rc;
	}
	p->vbufs[p->nvbufs++] = nb;
	*buf = nb;
	return 0;
}

/* Give a slot back (mu held). */
static void slot_put(struct pull *p, uint8_t *buf)
{
	if (buf)
		p->vfree[p->nvfree++] = buf;
	p->vused--;
	pthread_cond_broadcast(&p->cv);
}

/* Receive one chunk's DATA into a slot (a buffer, or its place in the
 * mapping) and hand it to the verifiers: stream threads only receive, so
 * that a stream moves bytes at the link's rate instead of also hashing
 * and writing every chunk.  Returns 5 when the chunk went to the
 * verifiers (it stays in flight until they are done), 2 when a filling
 * source does not hold it yet, 4 when a sealed one declined it (ask the
 * peers), or a negative code (the stream is out of sync).  `sealed`: the
 * source is complete, as read under mu when the GETs went out. */
static int recv_chunk(struct pull *p, int src, bool sealed,
		      struct tc__peer_conn *c, uint64_t k, int64_t *offer,
		      char *err, size_t errlen)
{
	struct tc__peer_msg m;
	uint8_t *buf, *dst;
	uint32_t n = chunk_len(p, k), got = 0;
	uint64_t budget_ms;
	int rc;

	rc = tc__peer_recv_msg(c, &m, err, errlen);
	if (rc == 0 && m.type == TC_PEER_ERROR && m.code == TC_ENOTFOUND &&
	    !sealed) {
		tc__peer_msg_release(&m);
		return 2;
	}
	if (rc == 0 && m.type == TC_PEER_ERROR && m.code == TC_EBUSY &&
	    sealed) {
		if (m.hint && m.hint <= p->n)
			*offer = (int64_t)m.hint - 1; /* it would send that */
		tc__peer_msg_release(&m);
		return 4;
	}
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
	pthread_mutex_lock(&p->mu);
	if (sealed && !p->told[k]) {
		/* A seed sends it: peers may ask the seed for others (told
		 * now, not when asked: a seed may decline). */
		p->told[k] = 1;
		p->asked[p->nasked++] = k;
		pthread_cond_broadcast(&p->cv);
	}
	rc = slot_get(p, &buf, err, errlen);
	pthread_mutex_unlock(&p->mu);
	if (rc < 0)
		return rc;
	dst = buf ? buf : p->base + k * TC_CHUNK_BYTES;
	budget_ms = TC_MAX((uint64_t)TC_MAX(p->o->timeout_ms, 0) *
				   TC_PULL_CHUNK_TIMEOUTS,
			   (uint64_t)TC_PULL_CHUNK_MIN_MS);
	tc__peer_deadline(c, budget_ms);
	while (got < n) {
		uint32_t piece = TC_MIN(TC_PULL_PIECE, n - got);

		rc = c->t->recv(c, dst + got, piece);
		if (rc == -ETIMEDOUT && tc__peer_deadline_passed(c)) {
			snprintf(err, errlen,
				 "%s: too slow: chunk %llu not received in "
				 "%llu ms (%u of %u bytes)",
				 c->addr, (unsigned long long)k,
				 (unsigned long long)budget_ms, got, n);
		} else if (rc < 0) {
			snprintf(err, errlen, "%s: %s in chunk %llu", c->addr,
				 rc == TC_ECLOSED ? "connection closed" :
				 rc == -ETIMEDOUT ? "timed out (no bytes)" :
						    strerror(-rc),
				 (unsigned long long)k);
		}
		if (rc < 0) {
			tc__peer_deadline(c, 0);
			pthread_mutex_lock(&p->mu);
			slot_put(p, buf);
			pthread_mutex_unlock(&p->mu);
			return rc;
		}
		got += piece;
	}
	tc__peer_deadline(c, 0);
	pthread_mutex_lock(&p->mu);
	p->vq[(p->vhead + p->vlen) % p->vcap] =
		(struct vjob){ .k = k, .src = src, .buf = buf };
	p->vlen++;
	p->nverifying++;
	pthread_cond_signal(&p->vcv);
	pthread_cond_broadcast(&p->cv); /* a held verifier counts them */
	pthread_mutex_unlock(&p->mu);
	return 5;
}

/* Failpoint pull.hold_verify (subject: the artifact id): the verifiers
 * start only once the streams have received as many chunks as the
 * buffering allows (or every chunk left), at most 10 s, and it is logged
 * how many that was: receiving goes on while nothing is verified, up to
 * the cap and no further (tests/integration/test_peer.sh).  Once per
 * pull (mu held). */
static void hold_verify(struct pull *p)
{
	uint64_t until = tc__now_ns() + 10000000000ull;

	if (p->held || !tc__failpoint("pull.hold_verify", p->man.id))
		return;
	p->held = p->holding = true;
	while ((uint64_t)p->vlen <
		       TC_MIN((uint64_t)p->vcap, p->nwant - p->ndone) &&
	       p->nlive > 0 && !p->fatal && tc__now_ns() < until)
		wait_ms(p, TC_PULL_TICK_MS);
	tc__log(TC_LOG_WARN,
		"pull %s: verify held (failpoint): %d chunks received, none "
		"verified, buffering for %d",
		p->man.id, p->vlen, p->vcap);
	p->holding = false;
	pthread_cond_broadcast(&p->vcv);
}

/* A verifier: takes received chunks in order, checks each against its
 * digest and, for a sink that writes, writes it from its buffer; then
 * the chunk counts (or goes back to the queue barred from its source, as
 * a stream did it before the split). */
static void *verify_main(void *arg)
{
	struct pull *p = arg;
	const struct tc__peer_sink *sk = &p->o->sink;
	struct tc__hasher *h = tc__hasher_new();

	pthread_setname_np(pthread_self(), "tc-pull-verify");
	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct tc__peer_source_stats *st;
		struct tc__digest d;
		struct vjob j;
		const uint8_t *data;
		uint32_t n;
		int wrc = 0;
		bool good, failed;
		char werr[512];

		while ((p->vlen == 0 && !p->vstop) || p->holding)
			pthread_cond_wait(&p->vcv, &p->mu);
		if (p->vlen == 0)
			break;
		hold_verify(p);
		j = p->vq[p->vhead];
		p->vhead = (p->vhead + 1) % p->vcap;
		p->vlen--;
		failed = p->fatal != 0;
		pthread_mutex_unlock(&p->mu);

		n = chunk_len(p, j.k);
		data = j.buf ? j.buf : p->base + j.k * TC_CHUNK_BYTES;
		good = false;
		if (failed) {
			/* The pull failed meanwhile: nothing more is
			 * written; the chunk only gives its slot back. */
		} else if (h) {
			tc__hasher_reset(h);
			tc__hasher_update(h, data, n);
			tc__hasher_final(h, &d);
			good = tc__digest_eq(&d, &p->man.chunks[j.k]);
		}
		if (good && !p->in_place)
			/* Verified: only now does it go to the sink. */
			wrc = sk->write(sk->arg, j.k * TC_CHUNK_BYTES, data, n,
					werr, sizeof(werr));

		pthread_mutex_lock(&p->mu);
		st = &p->res->src[j.src];
		slot_put(p, j.buf);
		p->nflight--;
		p->nverifying--;
		if (failed) {
			p->state[j.k] = C_TODO;
		} else if (!h) {
			p->state[j.k] = C_TODO;
			fail_pull(p, -ENOMEM, "out of memory for a hasher");
		} else if (wrc < 0) {
			p->state[j.k] = C_TODO;
			fail_pull(p, wrc, werr);
		} else if (good) {
			p->state[j.k] = C_DONE;
			p->ndone++;
			p->progress_ns = tc__now_ns();
			p->fresh[p->nfresh++] = j.k;
			st->chunks++;
			st->bytes += n;
		} else {
			p->state[j.k] = C_TODO;
			p->barred[j.k] |= (uint16_t)(1u << j.src);
			st->bad_chunks++;
			tc__log(TC_LOG_WARN,
				"pull %s: chunk %llu from %s fails its digest; "
				"fetching it elsewhere",
				p->man.id, (unsigned long long)j.k, st->addr);
			if (st->bad_chunks >= TC_PEER_BAD_LIMIT)
				drop_source(p, j.src,
					    "sent chunks that fail their "
					    "digest");
		}
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	tc__hasher_free(h);
	return NULL;
}

/* Ask the source what it holds (no request of ours outstanding on `c`).
 * Returns 0 or a negative code with `err` set. */
static int ask_have(struct pull *p, int src, struct tc__peer_conn *c,
		    struct tc__buf *b, char *err, size_t errlen)
{
	struct psrc *ps = &p->src[src];
	struct tc__peer_msg m;
	int rc;

	b->len = 0;
	tc__peer_put_have_req(b, p->man.id);
	rc = tc__peer_send_buf(c, b, false);
	if (rc < 0) {
		snprintf(err, errlen, "%s: send: %s", c->addr, strerror(-rc));
		return rc;
	}
	rc = tc__peer_recv_msg(c, &m, err, errlen);
	if (rc == 0 && m.type == TC_PEER_ERROR) {
		snprintf(err, errlen, "%s says: %s (%s)", c->addr, m.msg,
			 tc_err_name(m.code));
		rc = m.code;
	} else if (rc == 0 && (m.type != TC_PEER_HAVE || m.nchunks != p->n)) {
		snprintf(err, errlen, "%s: not a HAVE for %llu chunks", c->addr,
			 (unsigned long long)p->n);
		rc = TC_EPROTO;
	}
	if (rc == 0) {
		pthread_mutex_lock(&p->mu);
		if (m.complete) {
			ps->complete = true;
		} else if (!ps->complete) {
			/* Holdings only grow: OR, so a stream's older
			 * answer never hides what another one learnt. */
			if (!ps->have) {
				ps->have = m.have;
				ps->fetching = m.fetching;
				m.have = m.fetching = NULL;
				p->res->src[src].partial = true;
			} else {
				for (uint64_t i = 0; i < (p->n + 7) / 8; i++) {
					ps->have[i] |= m.have[i];
					ps->fetching[i] |= m.fetching[i];
				}
			}
		}
		ps->known = true;
		ps->have_ns = tc__now_ns();
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	tc__peer_msg_release(&m);
	return rc;
}

/* A staged sink failed (mu held): the pull ends with its error; the
 * streams stop taking chunks. */
static void fail_pull(struct pull *p, int rc, const char *err)
{
	if (!p->fatal) {
		p->fatal = rc;
		snprintf(p->fatal_err, sizeof(p->fatal_err), "%s", err);
	}
	pthread_cond_broadcast(&p->cv);
}

/* Failpoint pull.hold_sources=N (mu held): true while the streams must
 * take nothing, because the pull knows fewer than N sources and its
 * 10 s are not up.  When the hold ends the pull's progress clock starts
 * again (the hold is no stall). */
static bool held_back(struct pull *p, uint64_t now)
{
	if (!p->hold_sources)
		return false;
	if (p->nsrc < p->hold_sources && now < p->hold_until_ns)
		return true;
	tc__log(TC_LOG_WARN,
		"pull %s: hold released (failpoint pull.hold_sources): %d "
		"sources known",
		p->man.id, p->nsrc);
	p->hold_sources = 0;
	p->progress_ns = now;
	pthread_cond_broadcast(&p->cv);
	return false;
}

static void *stream_main(void *arg)
{
	struct stream *sm = arg;
	struct pull *p = sm->p;
	const struct tc__peer_pull_opts *o = p->o;
	struct tc__peer_source_stats *st = &p->res->src[sm->src];
	struct psrc *ps = &p->src[sm->src];
	struct tc__peer_conn *c = NULL;
	struct tc__buf b = TC_BUF_INIT;
	int64_t q[TC_PULL_DEPTH], offer = -1;
	int nq = 0, nsent = 0, rc = 0;
	bool retiring = false; /* over its source's target: ending */
	bool sealed = false;   /* the source is (ps->complete, read under mu) */
	char err[512] = "";

	pthread_setname_np(pthread_self(), "tc-pull-recv");
	rc = tc__peer_tcp.connect(ps->addr, o->timeout_ms, o->timeout_ms, &c,
				  err, sizeof(err));
	if (rc == 0)
		rc = tc__peer_auth_client(c, o->tls, o->secret, o->name,
					  o->timeout_ms, err, sizeof(err));
	if (rc == 0)
		rc = ask_have(p, sm->src, c, &b, err, sizeof(err));
	while (rc == 0) {
		uint64_t now;
		bool ask = false;

		pthread_mutex_lock(&p->mu);
		/* Read under mu: the stamps it is compared with
		 * (progress_ns, have_ns, declined[]) are written under mu
		 * by other threads, so a clock read before the lock may be
		 * older than them, and the unsigned difference would wrap
		 * into an hours-long stall that drops a live source. */
		now = tc__now_ns();
		if (!retiring && p->active[sm->src] > p->target[sm->src]) {
			/* More sources joined and this source's share
			 * shrank: take nothing more, finish what is in
			 * flight, end (the pull's streams stay near their
			 * budget, tc__peer_auto_streams). */
			p->active[sm->src]--;
			st->retired++;
			retiring = true;
		}
		if (retiring) {
			offer = -1;
			if (nq == 0) {
				pthread_mutex_unlock(&p->mu);
				break;
			}
		}
		if (!retiring && nq == 0 && held_back(p, now)) {
			wait_ms(p, TC_PULL_TICK_MS);
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		if (offer >= 0 && !retiring && !p->dropped[sm->src] &&
		    !p->fatal && nq < TC_PULL_DEPTH &&
		    p->state[offer] == C_TODO &&
		    !(p->barred[offer] & (1u << sm->src))) {
			/* A seed offered it (super-seeding): nobody has
			 * it lately. */
			p->state[offer] = C_FLIGHT;
			p->nflight++;
			q[nq++] = offer;
		}
		offer = -1;
		while (!retiring && !p->dropped[sm->src] && !p->fatal &&
		       nq < TC_PULL_DEPTH) {
			int64_t k = take(p, sm->src, now);

			if (k < 0)
				break;
			q[nq++] = k;
		}
		if (nq == 0) {
			/* Nothing for us now: finished, or what is left is
			 * in flight elsewhere or held by no one we know yet
			 * (and may come). */
			if (p->ndone == p->nwant || p->dropped[sm->src] ||
			    p->fatal) {
				pthread_mutex_unlock(&p->mu);
				break;
			}
			if (p->nflight == 0 &&
			    now - p->progress_ns >
				    (uint64_t)o->timeout_ms * 1000000u) {
				snprintf(err, sizeof(err),
					 "%s: holds none of the %llu chunks "
					 "left, and no source sent any for "
					 "%d ms",
					 ps->addr,
					 (unsigned long long)(p->nwant -
							      p->ndone),
					 o->timeout_ms);
				pthread_mutex_unlock(&p->mu);
				rc = TC_ENOTFOUND;
				break;
			}
			ask = !ps->complete &&
			      now - ps->have_ns > TC_PULL_HAVE_MS * 1000000ull;
			if (ask) {
				/* One stream per source asks; the others
				 * wait for its answer. */
				ps->have_ns = now;
			} else {
				wait_ms(p, TC_PULL_HAVE_MS);
			}
			pthread_mutex_unlock(&p->mu);
			if (ask)
				rc = ask_have(p, sm->src, c, &b, err,
					      sizeof(err));
			continue;
		}
		sealed = ps->complete; /* read under mu: other streams'
					  HAVEs set it */
		pthread_mutex_unlock(&p->mu);
		for (; nsent < nq; nsent++) {
			b.len = 0;
			/* This node serves what it pulls: a seed may
			 * send it to us once, for all. */
			tc__peer_put_get(&b, p->man.id, (uint64_t)q[nsent], 1,
					 o->sink.have && sealed ?
						 TC_PEER_GET_SHARES :
						 0);
			rc = tc__peer_send_buf(c, &b, nsent + 1 < nq);
			if (rc < 0) {
				snprintf(err, sizeof(err), "%s: send: %s",
					 c->addr, strerror(-rc));
				break;
			}
		}
		if (rc < 0)
			break;
		rc = recv_chunk(p, sm->src, sealed, c, (uint64_t)q[0], &offer,
				err, sizeof(err));
		if (rc < 0)
			break;
		pthread_mutex_lock(&p->mu);
		if (rc == 5) {
			/* The verifiers have it; it stays in flight until
			 * they are done with it. */
		} else if (rc == 4) {
			p->nflight--;
			p->state[q[0]] = C_TODO;
			p->declined[q[0]] = tc__now_ns();
			st->declined++;
		} else if (rc == 2) {
			/* It said it held it: only an id it dropped meanwhile
			 * gets here.  Forget what it said. */
			p->nflight--;
			p->state[q[0]] = C_TODO;
			if (ps->have)
				ps->have[q[0] / 8] &=
					(uint8_t) ~(1u << q[0] % 8);
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
	if (!retiring)
		p->active[sm->src]--;
	p->live[sm->src]--;
	p->nlive--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (c)
		c->t->close(c);
	tc__buf_release(&b);
	return NULL;
}

/* Mark the chunks the sink does not want C_SKIP; count the others. */
static int want_chunks(struct pull *p, char *err, size_t errlen)
{
	const struct tc__peer_sink *sk = &p->o->sink;
	uint8_t *bits;
	int rc;

	p->nwant = p->n;
	if (!sk->want) {
		p->res->want_bytes = p->man.table.total_bytes;
		p->res->want_chunks = p->n;
		return 0;
	}
	bits = tc__calloc((p->n + 7) / 8 + 1, 1);
	if (!bits)
		return -ENOMEM;
	rc = sk->want(sk->arg, bits, p->n, err, errlen);
	p->nwant = 0;
	for (uint64_t k = 0; rc == 0 && k < p->n; k++) {
		if (!bit(bits, k)) {
			p->state[k] = C_SKIP;
			continue;
		}
		p->nwant++;
		p->res->want_bytes += chunk_len(p, k);
	}
	p->res->want_chunks = p->nwant;
	tc__free(bits);
	return rc;
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

		rc = tc__peer_tcp.connect(p->src[i].addr, o->timeout_ms,
					  o->timeout_ms, &c, e, sizeof(e));
		if (rc == 0)
			rc = tc__peer_auth_client(c, o->tls, o->secret, o->name,
						  o->timeout_ms, e, sizeof(e));
		if (rc == 0) {
			tc__peer_put_manifest_req(&b, o->ref);
			rc = tc__peer_send_buf(c, &b, false);
		}
		if (rc == 0)
			rc = tc__peer_recv_msg(c, &p->man, e, sizeof(e));
		if (rc == 0 && p->man.type == TC_PEER_ERROR) {
			snprintf(e, sizeof(e), "%s says: %s (%s)",
				 p->src[i].addr, p->man.msg,
				 tc_err_name(p->man.code));
			rc = p->man.code;
		} else if (rc == 0 && p->man.type != TC_PEER_MANIFEST) {
			snprintf(e, sizeof(e), "%s: not a manifest",
				 p->src[i].addr);
			rc = TC_EPROTO;
		} else if (rc == 0 && tc__is_id(o->ref) &&
			   strcmp(o->ref, p->man.id)) {
			snprintf(e, sizeof(e), "%s: manifest of '%s' for '%s'",
				 p->src[i].addr, p->man.id, o->ref);
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
				      (unsigned long long)p->nwant, p->o->ref);

	for (int i = 0; i < p->nsrc && off < errlen; i++)
		off += (size_t)snprintf(err + off, errlen - off, "%s%s: %s",
					i ? "; " : "", p->res->src[i].addr,
					p->res->src[i].failed ?
						p->res->src[i].err :
						"nothing left it could send");
}

int tc__peer_auto_streams(int ncpu, int nsources)
{
	long cpus = ncpu < 1 ? 1 : ncpu;
	long per;

	if (nsources <= 1)
		return (int)TC_MAX(TC_PEER_AUTO_STREAMS,
				   TC_MIN(cpus / TC_PEER_CPUS_PER_LONE_STREAM,
					  (long)TC_PEER_LONE_MAX_STREAMS));
	per = (long)TC_PEER_STREAMS_PER_CPU * cpus / nsources;
	return (int)TC_MAX(1, TC_MIN(per, (long)TC_PEER_AUTO_STREAMS));
}

/* TCAST_PEER_LONE_STREAMS=N (1..TC_PEER_MAX_STREAMS): a lone source's
 * streams, for benchmarks and hosts the rule misjudges; 0 when unset or
 * out of range (then the rule). */
static int lone_override(void)
{
	const char *v = getenv("TCAST_PEER_LONE_STREAMS");
	char *end;
	long n;

	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || n < 1 || n > TC_PEER_MAX_STREAMS) {
		tc__log(TC_LOG_WARN,
			"ignoring TCAST_PEER_LONE_STREAMS='%s': not 1..%d", v,
			TC_PEER_MAX_STREAMS);
		return 0;
	}
	return (int)n;
}

/* The default streams per source with `nsources` live ones: the rule, or
 * the override for a lone source. */
static int auto_streams(const struct pull *p, int nsources)
{
	if (nsources <= 1 && p->lone)
		return p->lone;
	return tc__peer_auto_streams(p->ncpu, nsources);
}

/* The CPUs this process may run on: its affinity mask (taskset, a
 * cpuset), else the online ones. */
static int usable_cpus(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* Most streams one source may get: what the sm array is sized by. */
static int max_per_source(const struct tc__peer_pull_opts *o)
{
	return o->streams ? o->streams : TC_PEER_MAX_STREAMS;
}

/* Streams for a source joining now (mu not held): opts.streams, else the
 * share tc__peer_auto_streams gives it among the live sources, which
 * also becomes the most any source keeps: sources that have more retire
 * streams down to it. */
static int streams_for(struct pull *p)
{
	int n = 0, per;

	if (p->o->streams)
		return p->o->streams;
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->nsrc; i++)
		n += !p->dropped[i];
	per = auto_streams(p, n);
	for (int i = 0; i < p->nsrc; i++)
		if (p->target[i] > per)
			p->target[i] = per;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return per;
}

/* Start `want` threads on source `s` (mu not held).  Returns how many
 * started. */
static int start_streams(struct pull *p, struct stream *sm, int *ns, int s,
			 int want)
{
	int started = 0;

	for (int j = 0; j < want && *ns < p->nslots; j++) {
		struct stream *x = &sm[*ns];

		x->p = p;
		x->src = s;
		pthread_mutex_lock(&p->mu);
		p->live[s]++;
		p->active[s]++;
		p->nlive++;
		if (p->target[s] < p->active[s])
			p->target[s] = p->active[s];
		pthread_mutex_unlock(&p->mu);
		if (pthread_create(&x->th, NULL, stream_main, x)) {
			pthread_mutex_lock(&p->mu);
			p->live[s]--;
			p->active[s]--;
			p->target[s]--;
			p->nlive--;
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		x->started = true;
		(*ns)++;
		started++;
	}
	pthread_mutex_lock(&p->mu);
	p->res->src[s].streams += (uint32_t)started;
	pthread_mutex_unlock(&p->mu);
	return started;
}

/* Sources the discover callback names that the pull does not know yet
 * join it (mu not held). */
static void discover(struct pull *p, struct stream *sm, int *ns)
{
	static char found[TC_PEER_MAX_SOURCES][TC_PEER_ADDR_MAX];
	const struct tc__peer_discover *d = &p->o->discover;
	int n = d->fn(d->arg, found, TC_PEER_MAX_SOURCES);
	int first, last, per;

	pthread_mutex_lock(&p->mu);
	first = p->nsrc;
	if (p->hold_sources && tc__now_ns() < p->hold_until_ns) {
		/* Failpoint pull.hold_sources: sources join only once
		 * enough are found, all in one round, so that the shares
		 * (and the streams that retire) do not depend on when
		 * each peer appeared. */
		int fresh = 0;

		for (int i = 0; i < n; i++) {
			bool known = !found[i][0];

			found[i][TC_PEER_ADDR_MAX - 1] = '\0';
			for (int s = 0; s < p->nsrc && !known; s++)
				known = !strcmp(p->src[s].addr, found[i]);
			fresh += !known;
		}
		if (p->nsrc + fresh < p->hold_sources) {
			pthread_mutex_unlock(&p->mu);
			return;
		}
	}
	pthread_mutex_unlock(&p->mu);

	for (int i = 0; i < n; i++) {
		bool known = false;
		int s;

		found[i][TC_PEER_ADDR_MAX - 1] = '\0';
		pthread_mutex_lock(&p->mu);
		for (s = 0; s < p->nsrc && !known; s++)
			known = !strcmp(p->src[s].addr, found[i]);
		if (known || p->nsrc == TC_PEER_MAX_SOURCES || !found[i][0]) {
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		s = p->nsrc++;
		snprintf(p->src[s].addr, sizeof(p->src[s].addr), "%s",
			 found[i]);
		snprintf(p->res->src[s].addr, sizeof(p->res->src[s].addr), "%s",
			 found[i]);
		p->res->nsources = p->nsrc;
		pthread_mutex_unlock(&p->mu);
		tc__log(TC_LOG_DEBUG, "pull %s: new source %s", p->man.id,
			found[i]);
	}
	/* Every source found this time gets the same share, counted with
	 * all of them (a fan-out's peers tend to appear together). */
	pthread_mutex_lock(&p->mu);
	last = p->nsrc;
	pthread_mutex_unlock(&p->mu);
	if (last == first)
		return;
	per = streams_for(p);
	for (int s = first; s < last; s++)
		start_streams(p, sm, ns, s, per);
}

/* Sources dropped so far (mu held). */
static int ndropped(const struct pull *p)
{
	int n = 0;

	for (int i = 0; i < p->nsrc; i++)
		n += p->dropped[i];
	return n;
}

/* A source dropped out (mu not held): with chosen stream counts, the
 * survivors' share of the pull's budget (tc__peer_auto_streams) grows
 * back and each serving source starts streams up to it, so a pull that
 * lost a source goes on with as many streams as it would have started
 * with. */
static void regrow(struct pull *p, struct stream *sm, int *ns)
{
	int want[TC_PEER_MAX_SOURCES] = { 0 }, alive = 0, per, nsrc;

	if (p->o->streams)
		return;
	pthread_mutex_lock(&p->mu);
	nsrc = p->nsrc;
	for (int i = 0; i < nsrc; i++)
		alive += !p->dropped[i];
	per = auto_streams(p, alive);
	for (int i = 0; i < nsrc && p->ndone < p->nwant && !p->fatal; i++)
		if (!p->dropped[i] && p->active[i] > 0 && p->active[i] < per) {
			want[i] = per - p->active[i];
			p->target[i] = per;
		}
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < nsrc; i++)
		if (want[i] > 0 && start_streams(p, sm, ns, i, want[i]) > 0)
			tc__log(TC_LOG_DEBUG,
				"pull %s: source %s now has %d streams (a "
				"source dropped out)",
				p->man.id, p->src[i].addr, per);
}

/* The caller's thread while the streams run: tell the sink what is
 * verified (so this node serves it), find more sources, give the streams
 * of a source that dropped out to the others. */
static void supervise(struct pull *p, struct stream *sm, int *ns)
{
	const struct tc__peer_pull_opts *o = p->o;
	uint64_t *batch = tc__malloc(2 * p->n * sizeof(*batch));
	uint64_t next_discover = tc__now_ns();
	int seen_dropped = 0;

	pthread_mutex_lock(&p->mu);
	while (p->nlive > 0 || p->nverifying > 0) {
		uint64_t nb = 0, na = 0;
		int nd = ndropped(p);

		if (nd > seen_dropped) {
			seen_dropped = nd;
			pthread_mutex_unlock(&p->mu);
			regrow(p, sm, ns);
			pthread_mutex_lock(&p->mu);
			continue;
		}

		if (o->sink.have && batch) {
			nb = p->nfresh;
			memcpy(batch, p->fresh, nb * sizeof(*batch));
			na = p->nasked;
			memcpy(batch + nb, p->asked, na * sizeof(*batch));
		}
		p->nfresh = p->nasked = 0;
		if (nb || na ||
		    (o->discover.fn && p->ndone < p->nwant &&
		     tc__now_ns() >= next_discover)) {
			pthread_mutex_unlock(&p->mu);
			/* What we fetch from a seed first: peers then ask
			 * the seed for other chunks. */
			for (uint64_t i = 0; i < na; i += 65536)
				o->sink.have(o->sink.arg, batch + nb + i,
					     (uint32_t)TC_MIN(65536, na - i),
					     true);
			for (uint64_t i = 0; i < nb; i += 65536)
				o->sink.have(o->sink.arg, batch + i,
					     (uint32_t)TC_MIN(65536, nb - i),
					     false);
			if (o->discover.fn && tc__now_ns() >= next_discover) {
				discover(p, sm, ns);
				next_discover =
					tc__now_ns() +
					TC_PEER_DISCOVER_MS * 1000000ull;
			}
			pthread_mutex_lock(&p->mu);
			continue;
		}
		if (!p->nfresh && !p->nasked)
			wait_ms(p, TC_PULL_TICK_MS);
	}
	pthread_mutex_unlock(&p->mu);
	tc__free(batch);
}

/* The buffering's cap in chunks: TC_PULL_BUFFER_MB, or
 * TCAST_PEER_PULL_BUFFER_MB (tests: a small cap shows receiving stops
 * there); at least one chunk. */
static int buffer_chunks(void)
{
	const char *v = getenv("TCAST_PEER_PULL_BUFFER_MB");
	long mb = TC_PULL_BUFFER_MB;
	char *end;

	if (v && *v) {
		errno = 0;
		mb = strtol(v, &end, 10);
		if (errno || *end || mb < 1 || mb > 65536) {
			tc__log(TC_LOG_WARN,
				"ignoring TCAST_PEER_PULL_BUFFER_MB='%s': not "
				"1..65536",
				v);
			mb = TC_PULL_BUFFER_MB;
		}
	}
	return (int)TC_MAX(1, ((uint64_t)mb << 20) / TC_CHUNK_BYTES);
}

/* The verifier pool: one thread per usable CPU, 2 to TC_PULL_MAX_VERIFY
 * (BLAKE3 runs at several GB/s a thread, so a few keep up with the
 * streams; two so that a write into the sink overlaps a hash).  Returns
 * 0 or a negative code with `err`. */
static int start_verifiers(struct pull *p, char *err, size_t errlen)
{
	int want = TC_MAX(2, TC_MIN(p->ncpu, TC_PULL_MAX_VERIFY));

	p->vcap = buffer_chunks();
	p->vbufs = tc__calloc((size_t)p->vcap, sizeof(*p->vbufs));
	p->vfree = tc__calloc((size_t)p->vcap, sizeof(*p->vfree));
	p->vq = tc__calloc((size_t)p->vcap, sizeof(*p->vq));
	if (!p->vbufs || !p->vfree || !p->vq) {
		snprintf(err, errlen, "out of memory for the pull's buffers");
		return -ENOMEM;
	}
	for (int i = 0; i < want; i++)
		if (pthread_create(&p->vth[p->nvth], NULL, verify_main, p) == 0)
			p->nvth++;
	if (p->nvth == 0) {
		snprintf(err, errlen, "cannot start a verifier thread");
		return -EAGAIN;
	}
	return 0;
}

/* The streams are gone: the verifiers finish what is queued and end.
 * Idempotent. */
static void stop_verifiers(struct pull *p)
{
	pthread_mutex_lock(&p->mu);
	p->vstop = true;
	pthread_cond_broadcast(&p->vcv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nvth; i++)
		pthread_join(p->vth[i], NULL);
	p->nvth = 0;
}

static void free_buffers(struct pull *p)
{
	const struct tc__peer_sink *sk = &p->o->sink;

	for (int i = 0; i < p->nvbufs; i++)
		if (sk->unstage)
			sk->unstage(sk->arg, p->vbufs[i]);
		else
			tc__peer_buf_free(p->vbufs[i], TC_CHUNK_BYTES);
	tc__free(p->vbufs);
	tc__free(p->vfree);
	tc__free(p->vq);
}

int tc__peer_pull(const struct tc__peer_pull_opts *o,
		  struct tc__peer_pull_result *res, char *err, size_t errlen)
{
	struct stream *sm = NULL;
	struct pull p;
	uint64_t t0;
	int rc, ns = 0;
	bool sync = false;

	memset(res, 0, sizeof(*res));
	memset(&p, 0, sizeof(p));
	tc__peer_msg_init(&p.man);
	p.o = o;
	p.res = res;
	if (o->nsources < 1 || o->nsources > TC_PEER_MAX_SOURCES ||
	    o->streams < 0 || o->streams > TC_PEER_MAX_STREAMS || !o->ref ||
	    !o->ref[0] || strlen(o->ref) > TC_PEER_MAX_REF ||
	    (!o->sink.stage != !o->sink.unstage) ||
	    (o->sink.stage && !o->sink.write)) {
		snprintf(err, errlen,
			 "a pull needs a ref, 1..%d sources and 1..%d "
			 "streams per source (0: chosen; and a staged sink "
			 "write(), with both stage() and unstage() or "
			 "neither)",
			 TC_PEER_MAX_SOURCES, TC_PEER_MAX_STREAMS);
		return TC_EINVAL;
	}
	res->nsources = p.nsrc = o->nsources;
	for (int i = 0; i < o->nsources; i++) {
		snprintf(res->src[i].addr, sizeof(res->src[i].addr), "%s",
			 o->sources[i]);
		snprintf(p.src[i].addr, sizeof(p.src[i].addr), "%s",
			 o->sources[i]);
	}
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
	/* A sink that writes may still hand back its mapping (a host put on
	 * huge pages): chunks are then received and verified in place. */
	p.in_place = res->in_place = p.base != NULL && !o->sink.stage;
	if (!p.in_place && !o->sink.write) {
		rc = TC_EINVAL;
		snprintf(err, errlen, "the pull's sink gave no memory");
		goto out;
	}
	if (o->sink.serve)
		o->sink.serve(o->sink.arg, p.man.id, p.man.chunks, p.n);
	t0 = tc__now_ns();
	p.progress_ns = tc__now_ns();
	if (getrandom(&p.start, sizeof(p.start), GRND_NONBLOCK) !=
	    sizeof(p.start))
		p.start = t0;
	p.start = p.n ? p.start % p.n : 0;
	/* A stride coprime to n visits every chunk once; receivers with
	 * different ones spread their first asks over the artifact. */
	p.stride = p.n > 2 ? 1 + (p.start * 2654435761u + t0) % (p.n - 1) : 1;
	while (p.n > 2 && gcd(p.stride, p.n) != 1)
		p.stride = p.stride % (p.n - 1) + 1;
	p.state = tc__calloc(p.n ? p.n : 1, 1);
	p.barred = tc__calloc(p.n ? p.n : 1, sizeof(*p.barred));
	p.fresh = tc__calloc(p.n ? p.n : 1, sizeof(*p.fresh));
	p.asked = tc__calloc(p.n ? p.n : 1, sizeof(*p.asked));
	p.told = tc__calloc(p.n ? p.n : 1, 1);
	p.declined = tc__calloc(p.n ? p.n : 1, sizeof(*p.declined));
	/* Room for every source's share twice: streams retire as sources
	 * join and start again as sources drop out (regrow). */
	p.nslots = 2 * TC_PEER_MAX_SOURCES * max_per_source(o);
	sm = tc__calloc((size_t)p.nslots, sizeof(*sm));
	if (!p.state || !p.barred || !p.fresh || !p.asked || !p.told ||
	    !p.declined || !sm) {
		rc = -ENOMEM;
		goto out;
	}
	rc = want_chunks(&p, err, errlen);
	if (rc < 0)
		goto out;
	pthread_mutex_init(&p.mu, NULL);
	{
		/* Timed waits count on the monotonic clock. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p.cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_cond_init(&p.vcv, NULL);
	sync = true;
	p.ncpu = usable_cpus();
	p.lone = lone_override();
	/* Failpoint pull.hold_sources=N (2..TC_PEER_MAX_SOURCES). */
	p.hold_sources = o->discover.fn ?
				 (int)tc__failpoint_num("pull.hold_sources", 2,
							TC_PEER_MAX_SOURCES,
							0) :
				 0;
	p.hold_until_ns = tc__now_ns() + TC_PULL_HOLD_MS * 1000000ull;
	/* Failpoint pull.valve_ms=N: tests that count who sent what raise
	 * it, so that a loaded machine's slow peer does not turn the
	 * seed's spare streams into repeats. */
	p.valve_ns = tc__failpoint_num("pull.valve_ms", 1, 600000,
				       TC_PULL_VALVE_MS) *
		     1000000ull;
	rc = start_verifiers(&p, err, errlen);
	if (rc < 0)
		goto out;
	if (p.nwant) {
		int per = streams_for(&p);

		for (int s = 0; s < o->nsources; s++)
			if (!p.dropped[s])
				start_streams(&p, sm, &ns, s, per);
	}
	if (p.nwant)
		supervise(&p, sm, &ns);
	for (int i = 0; i < ns; i++)
		pthread_join(sm[i].th, NULL);
	stop_verifiers(&p);
	res->ns = tc__now_ns() - t0;
	rc = 0;
	if (p.fatal) {
		rc = p.fatal;
		snprintf(err, errlen, "%s", p.fatal_err);
	} else if (p.ndone != p.nwant) {
		summarize(&p, err, errlen);
		rc = TC_EDIGEST;
		for (int i = 0; i < p.nsrc; i++)
			if (res->src[i].failed &&
			    !strstr(res->src[i].err, "digest"))
				rc = TC_ECLOSED;
	}
out:
	if (sync) {
		stop_verifiers(&p);
		free_buffers(&p);
		pthread_mutex_destroy(&p.mu);
		pthread_cond_destroy(&p.cv);
		pthread_cond_destroy(&p.vcv);
	}
	for (int i = 0; i < TC_PEER_MAX_SOURCES; i++) {
		tc__free(p.src[i].have);
		tc__free(p.src[i].fetching);
	}
	tc__free(p.asked);
	tc__free(p.told);
	tc__free(p.declined);
	tc__free(sm);
	tc__free(p.state);
	tc__free(p.barred);
	tc__free(p.fresh);
	tc__peer_msg_release(&p.man);
	return rc;
}
