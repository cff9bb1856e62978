/*
 * gpu_tier_sources.c - where a GPU fill copies from besides the host
 * replica: a sibling GPU's replica of the same artifact (whichever source
 * ran faster for that pair, measured by a probe when not known), and,
 * for a kept view, the ranges other views of its source hold on sibling
 * GPUs -- ready, or still filling (a lead, followed through its pipe).
 *
 * The tier's loop calls the choose/begin/end steps; the fill's worker
 * runs the copies, waits and checks (gpu_tier.c's fill_run).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "gpu_tier_internal.h"
#include "net/ev.h"
#include "tcast/errors.h"

/* One more measured fill of `bytes` in `seconds` for a source kind. */
static void rate_add(struct gt_rate *r, uint64_t bytes, double seconds)
{
	double g;

	if (bytes < GT_PROBE_MIN || seconds <= 0)
		return;
	g = (double)bytes / seconds / 1e9;
	r->gbps = r->n ? (r->gbps + g) / 2 : g;
	r->n++;
}

/* The ready replica of o on another GPU than `dst` to fill from, or NULL:
 * a pair never measured first (to learn it), else the fastest pair. */
struct tc__gpu_replica *tc__gt_sibling_of(struct tc__gpu_tier *t,
					  struct tc__obj *o, int dst)
{
	struct tc__gpu_replica *best = NULL;
	double bg = -1;

	for (int s = 0; s < t->ndev; s++) {
		struct tc__gpu_replica *r = o->gpu->rep[s];
		const struct gt_rate *pr = &t->peer_rate[s][dst];
		double g;

		if (s == dst || !r || !gt_ready(r))
			continue;
		g = pr->n ? pr->gbps : 1e300;
		if (g > bg) {
			best = r;
			bg = g;
		}
	}
	return best;
}

/* ------------------------------------------------- sibling-GPU sources */

void tc__gpu_tier_peer_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			      struct tc__gpu_peer_fill *pf)
{
	struct tc__gpu_replica *sib;
	const struct gt_rate *pr, *hr;
	int s;

	pf->sib = NULL;
	pf->sib_dev = -1;
	pf->use_peer = pf->probe = false;
	if (t->state != GT_OPEN || !o->gpu || pf->dst < 0 || pf->dst >= t->ndev)
		return;
	sib = tc__gt_sibling_of(t, o, pf->dst);
	if (!sib || (pf->has_host && pf->bytes < GT_PROBE_MIN))
		return; /* the host replica: tiny, or no sibling */
	s = gt_dev_index(t, sib->dev);
	pf->sib = sib;
	pf->sib_dev = s;
	pf->sib_mem = sib->mem;
	tc__replica_lease(&sib->base);
	pr = &t->peer_rate[s][pf->dst];
	hr = &t->host_rate[pf->dst];
	if (!pf->has_host)
		pf->use_peer = true; /* the only source */
	else if (pr->n && hr->n)
		pf->use_peer = pr->gbps > hr->gbps;
	else
		pf->probe = true;
}

/* Drop pf's lease on its sibling source. */
static void sib_unlease(struct tc__gpu_tier *t, struct tc__gpu_peer_fill *pf)
{
	struct tc__gpu_replica *sr = pf->sib;

	if (!sr)
		return;
	pf->sib = NULL;
	if (tc__replica_unlease(&sr->base) == 0 && sr->o->dead)
		tc__gt_replica_free(t, sr);
}

/* Copy the first n bytes of the byte space into the sink, from the host
 * replica or (peer) the sibling's; *secs: the copy alone (no allocation,
 * no pinning).  `keep_tail`: a probe's partial copy, completed later. */
static int peer_copy(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
		     bool peer, uint64_t n, bool keep_tail, double *secs,
		     char *err, size_t errlen)
{
	uint64_t t0 = tc__now_ns();
	int rc;

	x->from = peer ? TC_XFER_FROM_PEER : TC_XFER_FROM_HOST;
	x->gpu_src = peer ? &pf->sib_mem : NULL;
	x->bytes = n;
	x->keep_tail = keep_tail;
	x->alloc_seconds = 0;
	x->alloc_oom = false;
	rc = tc__xfer_run(x, err, errlen);
	pf->host_bytes += x->host_bytes;
	pf->alloc_seconds += x->alloc_seconds;
	pf->oom = x->alloc_oom;
	*secs = (double)(tc__now_ns() - t0) / 1e9 - x->alloc_seconds;
	if (*secs <= 0)
		*secs = 1e-9;
	return rc;
}

/* Measure both sources on the first GT_PROBE_BYTES (the same bytes, so
 * the content does not care which ran last) and choose the faster.  Two
 * rounds, host then sibling, then sibling then host, each source keeping
 * its best: whichever runs first writes into fresh memory and pays its
 * first-touch costs (the driver scrubbing what was just freed; page
 * faults on the fake driver), and the first host copy also sets up its
 * staging; one round in one order leaned towards the sibling.  A sibling
 * that fails to copy loses: the host replica serves.  Returns the host
 * copies' result; *whole when the probe copied everything. */
static int peer_probe(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
		      bool *whole, char *err, size_t errlen)
{
	uint64_t p = pf->bytes < GT_PROBE_BYTES ? pf->bytes : GT_PROBE_BYTES;
	double th = 0, tp = 0, t;
	bool peer_ok = true;
	int rc;

	*whole = false;
	pf->probe_bytes = p;
	for (int round = 0; round < 2; round++) {
		for (int k = 0; k < 2; k++) {
			bool peer = (k == 1) != (round == 1);

			if (peer && !peer_ok)
				continue;
			rc = peer_copy(pf, x, peer, p, true, &t, err, errlen);
			if (rc < 0 && !peer)
				return rc;
			if (rc < 0) {
				tc__log(TC_LOG_WARN,
					"GPU %d cannot copy from GPU %d's "
					"replica (the host replica serves): %s",
					pf->dst, pf->sib_dev, err);
				err[0] = '\0';
				peer_ok = false;
				continue;
			}
			if (peer)
				tp = tp > 0 && tp < t ? tp : t;
			else
				th = th > 0 && th < t ? th : t;
		}
	}
	pf->probe_host_gbps = (double)p / th / 1e9;
	if (!peer_ok) {
		pf->use_peer = false;
		pf->probe_peer_gbps = 0;
		/* A failed peer copy may have left part of the probe range
		 * after the host's last copy. */
		return peer_copy(pf, x, false, p, true, &t, err, errlen);
	}
	pf->probe_peer_gbps = (double)p / tp / 1e9;
	pf->use_peer = tp < th;
	*whole = p == pf->bytes;
	if (*whole) {
		pf->copy_seconds = pf->use_peer ? tp : th;
		/* Both sources wrote the same bytes; the tail still wants
		 * its zeros (the probe's copies kept it). */
		if (x->gpu_dst->size > p)
			return tc__gpu_memset8(x->ordinal, x->gpu_dst->dptr + p,
					       0, x->gpu_dst->size - p, NULL,
					       err, errlen);
	}
	return 0;
}

int tc__gpu_tier_peer_run(struct tc__gpu_peer_fill *pf, struct tc__xfer *x,
			  char *err, size_t errlen)
{
	bool whole = false;
	int rc = 0;

	if (pf->sib_dev >= 0) {
		int can =
			tc__gpu_can_access_peer(pf->dst, pf->sib_dev, NULL, 0);

		pf->link = can < 0 ? 0 : can ? 1 : 2;
	}
	if (pf->probe)
		rc = peer_probe(pf, x, &whole, err, errlen);
	if (rc == 0 && !whole) {
		rc = peer_copy(pf, x, pf->use_peer, pf->bytes, false,
			       &pf->copy_seconds, err, errlen);
		if (rc < 0 && pf->use_peer && pf->has_host && !pf->oom) {
			/* The host replica is still there: it serves. */
			tc__log(TC_LOG_WARN,
				"GPU %d cannot copy from GPU %d's replica (the "
				"host replica serves): %s",
				pf->dst, pf->sib_dev, err);
			err[0] = '\0';
			pf->use_peer = false;
			rc = peer_copy(pf, x, false, pf->bytes, false,
				       &pf->copy_seconds, err, errlen);
		}
	}
	return rc;
}

void tc__gpu_tier_peer_done(struct tc__gpu_tier *t,
			    struct tc__gpu_peer_fill *pf, int rc,
			    enum tc__gpu_peer_kind kind)
{
	int i = pf->dst, s = pf->sib_dev;

	if (s >= 0 && pf->link)
		t->peer_link[s][i] = (uint8_t)pf->link;
	if (rc == 0 && pf->probe && pf->probe_bytes) {
		t->n_probes++;
		rate_add(&t->host_rate[i], pf->probe_bytes,
			 (double)pf->probe_bytes / pf->probe_host_gbps / 1e9);
		if (pf->probe_peer_gbps > 0)
			rate_add(&t->peer_rate[s][i], pf->probe_bytes,
				 (double)pf->probe_bytes / pf->probe_peer_gbps /
					 1e9);
		tc__log(TC_LOG_INFO,
			"GPU %d from GPU %d (%s) measured on %llu bytes (best "
			"of two rounds each): %.2f GB/s, from host memory "
			"%.2f GB/s: %s serves",
			i, s,
			pf->link == 1 ? "direct link" : "staged by the driver",
			(unsigned long long)pf->probe_bytes,
			pf->probe_peer_gbps, pf->probe_host_gbps,
			pf->use_peer ? "the sibling" : "the host replica");
	}
	if (rc == 0 && pf->copy_seconds > 0 &&
	    !(pf->probe && pf->probe_bytes == pf->bytes))
		rate_add(pf->use_peer ? &t->peer_rate[s][i] : &t->host_rate[i],
			 pf->bytes, pf->copy_seconds);
	if (rc == 0 && pf->use_peer) {
		if (kind == TC_GPU_PEER_BIND) {
			t->n_peer_bind_fills++;
			t->n_peer_bind_bytes += pf->bytes;
		} else {
			t->n_peer_fills++;
			t->n_peer_fill_bytes += pf->bytes;
		}
	}
	sib_unlease(t, pf);
}

/* ------------------------------------------------------------ view parts */

/* A kept view's parts (gpu_parts.h) are the ranges of its byte space
 * that are one contiguous range of its source's: the replicated tensors
 * of a tensor-parallel rank's view, held whole by every rank's view.
 * When no replica of the view itself is on another GPU, its fill copies
 * such ranges from other views of the same source on sibling GPUs (GPU
 * to GPU) and only the rest from host memory: from ready replicas, and
 * from fills still running (leads) as they complete those ranges, which
 * a lead copies first.  The metadata is the client's word, so the new
 * replica is kept only if its chunk digests, computed on its GPU, are the
 * view's; else it is filled again from host memory alone.
 *
 * Who waits on whom: a fill that follows a lead is never a lead itself,
 * and a lead waits on nobody, so no two fills wait on each other.  A
 * follower runs on the tier's elastic follow pool, so its wait holds no
 * thread of the job pool, where the lead (submitted first), imports and
 * puts' digests run; each wait ends after TC_GPU_PIPE_STALL_MS without
 * progress in any case. */

/* Worker: a gated part's wait and its end (xfer.h). */
int tc__gt_prep_wait(void *gate, const struct tc__xfer_part *p)
{
	struct gt_prep *g = gate;

	return tc__gpu_pipe_wait(g->pipe, p->src_off, p->len, g->stall_ms,
				 &g->mem);
}

void tc__gt_prep_end(void *gate)
{
	tc__gpu_pipe_copied(((struct gt_prep *)gate)->pipe);
}

/* Worker: the lead completed first range k. */
void tc__gt_lead_progress(void *arg, const struct tc__xfer *x, uint32_t k)
{
	struct fill_job *j = arg;

	/* Tests: the followers find their lead failed (and fill from host
	 * memory) while its own fill goes on. */
	if (tc__failpoint("gpu_fill_lead_fail", j->o->id)) {
		tc__gpu_pipe_end(j->pipe, -ECANCELED, NULL);
		return;
	}
	tc__gpu_pipe_publish(j->pipe, x->gpu_dst,
			     x->first[k].off + x->first[k].len);
}

/* How long a follower waits for a lead that makes no progress. */
uint64_t tc__gt_pipe_stall_ms(void)
{
	return tc__failpoint_num("gpu_pipe_stall_ms", 0, UINT64_MAX,
				 TC_GPU_PIPE_STALL_MS);
}

/* The replica of view v on a sibling GPU of `dst` j may copy parts from:
 * a ready one, else a lead's fill still running (*lead), on a pair not
 * measured slower than the host copy; NULL when none. */
static struct tc__gpu_replica *
part_source(struct tc__gpu_tier *t, struct tc__obj *v, int dst, bool *lead)
{
	const struct gt_rate *hr = &t->host_rate[dst];
	struct tc__gpu_replica *filling = NULL;

	*lead = false;
	for (int s = 0; s < t->ndev; s++) {
		struct tc__gpu_replica *r = v->gpu->rep[s];
		const struct gt_rate *pr = &t->peer_rate[s][dst];

		if (s == dst || !r || (pr->n && hr->n && pr->gbps <= hr->gbps))
			continue;
		if (gt_ready(r))
			return r;
		if (!filling && r->pipe && tc__gpu_pipe_live(r->pipe))
			filling = r;
	}
	*lead = filling != NULL;
	return filling;
}

/* Give j the ranges of o it can copy from other views of o's source on
 * sibling GPUs of j->ordinal: wherever one of o's parts and one of theirs
 * cover the same source bytes (at least TC_VIEW_PART_MIN of them), those
 * bytes are the same in both views.  A ready view replica used is leased
 * until done; a lead's fill is followed through its pipe (only its first
 * ranges, which it copies before anything else); at most GT_PART_SRCS
 * sources.  Nothing on OOM or malformed metadata: the host serves. */
void tc__gt_parts_choose(struct tc__gpu_tier *t, struct tc__obj *o,
			 struct fill_job *j)
{
	const char *of = tc__table_meta(&o->table, "tcast.view_of");
	struct tc__xfer_part *mine, *theirs, *pc = NULL;
	uint32_t nmine, ntheirs, npc = 0, cap = 0;
	struct tc__map_entry *e;
	uint64_t stall = 0;
	size_t b;

	if (!of || !o->shm || o->nchunks != tc__chunk_count(j->src_bytes) ||
	    !tc__view_parts_parse(&o->table, &mine, &nmine))
		return;
	for (e = tc__map_next(&t->objs->by_id, NULL, &b);
	     e && j->nprep < GT_PART_SRCS;
	     e = tc__map_next(&t->objs->by_id, e, &b)) {
		struct tc__obj *v = e->val;
		struct gt_prep *g = &j->prep[j->nprep];
		const char *vof;
		struct tc__gpu_replica *vr;
		bool lead;

		if (v == o || v->dead || !v->gpu ||
		    !(vof = tc__table_meta(&v->table, "tcast.view_of")) ||
		    strcmp(vof, of))
			continue;
		vr = part_source(t, v, j->ordinal, &lead);
		if (!vr)
			continue;
		if (lead) {
			if (!stall)
				stall = tc__gt_pipe_stall_ms();
			if (!tc__view_parts_overlap(mine, nmine, vr->pipe->lead,
						    vr->pipe->nlead, &g->mem, g,
						    &pc, &npc, &cap))
				continue;
			g->pipe = vr->pipe;
			g->stall_ms = stall;
			tc__gpu_pipe_get(g->pipe);
			if (!g->pipe->followed) {
				g->pipe->followed = true;
				t->n_pipe_leads++;
			}
			g->pipe->followers++;
			tc__log(TC_LOG_INFO,
				"GPU %d fill of view '%s' follows GPU %d's "
				"fill of view '%s': the ranges they share are "
				"copied GPU to GPU as that fill completes them",
				j->ordinal, o->id, gt_dev_index(t, vr->dev),
				v->id);
		} else {
			if (!tc__view_parts_parse(&v->table, &theirs, &ntheirs))
				continue;
			ntheirs = tc__view_parts_overlap(mine, nmine, theirs,
							 ntheirs, &g->mem, NULL,
							 &pc, &npc, &cap);
			tc__free(theirs);
			if (!ntheirs)
				continue;
			g->rep = vr;
			g->mem = vr->mem;
			/* With its artifact: an rm of that view must not free
			 * the replica under the copy. */
			tc__gpu_replica_lease(t, vr);
		}
		j->nprep++;
	}
	tc__free(mine);
	j->nparts = tc__view_parts_trim(pc, npc);
	for (uint32_t k = 0; k < j->nparts; k++)
		if (pc[k].gate)
			j->gated_len += pc[k].len;
	if (j->nparts)
		j->parts = pc;
	else
		tc__free(pc);
}

/* Make j, the fill of view o with no part from a lead, a lead: its first
 * ranges (the spans of the source's tensors its parts hold whole; all of
 * its parts when the source is not held here) go first, and its progress
 * is published for fills of other views that begin while it runs.  No
 * pipe on OOM: then nobody follows it. */
void tc__gt_lead_begin(struct tc__gpu_tier *t, struct tc__obj *o,
		       struct tc__gpu_replica *r, struct fill_job *j)
{
	const char *of = tc__table_meta(&o->table, "tcast.view_of");
	struct tc__xfer_part *mine, *lead;
	struct tc__obj *src;
	uint32_t nmine, nlead;

	if (j->gated_len || !of || !o->shm ||
	    o->nchunks != tc__chunk_count(j->src_bytes) ||
	    !tc__view_parts_parse(&o->table, &mine, &nmine))
		return;
	src = tc__map_get(&t->objs->by_id, of);
	tc__view_parts_lead(mine, nmine, src && !src->dead ? &src->table : NULL,
			    &lead, &nlead);
	tc__free(mine);
	if (nlead && tc__gpu_pipe_new(lead, nlead, &j->pipe) == 0) {
		tc__gpu_pipe_get(j->pipe);
		r->pipe = j->pipe; /* the replica's reference */
	}
}

/* On the loop, j's fill has ended (rc): as a lead, its replica r (ready
 * when rc is 0) is leased for the followers still copying from it; as a
 * follower, the last one done drops that lease.  Then the leases on the
 * ready view replicas it copied from go. */
void tc__gt_parts_end(struct tc__gpu_tier *t, struct fill_job *j,
		      struct tc__gpu_replica *r)
{
	if (j->pipe) {
		struct tc__gpu_pipe *p = j->pipe;

		if (j->rc == 0 && p->followers > 0 && !p->held) {
			tc__gpu_replica_lease(t, r);
			p->held = r;
		}
		r->pipe = NULL;
		tc__gpu_pipe_put(p); /* the replica's */
		tc__gpu_pipe_put(p); /* the job's */
		j->pipe = NULL;
	}
	for (int k = 0; k < j->nprep; k++) {
		struct gt_prep *g = &j->prep[k];
		struct tc__gpu_replica *vr = g->rep;

		if (g->pipe) {
			if (--g->pipe->followers == 0 && g->pipe->held) {
				tc__gpu_replica_unlease(t, g->pipe->held);
				g->pipe->held = NULL;
			}
			tc__gpu_pipe_put(g->pipe);
		}
		if (vr)
			tc__gpu_replica_unlease(t, vr);
		*g = (struct gt_prep){ 0 };
	}
	j->nprep = 0;
	tc__free(j->parts);
	j->parts = NULL;
	j->nparts = 0;
}

/* On the worker, after a fill with parts: are the new replica's chunk
 * digests the view's?  Computed on its GPU.  Returns 0 when they are, else
 * a reason in j->parts_why and nonzero. */
int tc__gt_parts_verify(struct fill_job *j)
{
	uint64_t n = tc__chunk_count(j->src_bytes);
	struct tc__digest *d = tc__calloc(n ? n : 1, sizeof(*d));
	int rc;

	if (!d) {
		snprintf(j->parts_why, sizeof(j->parts_why), "out of memory");
		return -ENOMEM;
	}
	rc = tc__gpu_hash_chunks_dev(&j->mem, j->src_bytes, d, j->parts_why,
				     sizeof(j->parts_why));
	if (rc == 0 && memcmp(d, j->chunks, n * sizeof(*d))) {
		snprintf(j->parts_why, sizeof(j->parts_why),
			 "its chunk digests are not the artifact's (the "
			 "metadata's parts do not hold its bytes)");
		rc = TC_EINVAL;
	}
	tc__free(d);
	return rc;
}
