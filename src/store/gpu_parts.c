/*
 * gpu_parts.c - a kept view's parts and the progress of a lead view fill
 * (gpu_parts.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "format/view.h"
#include "gpu_parts.h"
#include "net/ev.h"

/* ------------------------------------------------------------ view parts */

const char *tc__table_meta(const struct tc__table *t, const char *key)
{
	for (uint32_t i = 0; i < t->nmeta; i++)
		if (!strcmp(t->meta[i].key, key))
			return t->meta[i].val;
	return NULL;
}

bool tc__view_parts_parse(const struct tc__table *t, struct tc__xfer_part **out,
			  uint32_t *n)
{
	const char *s = tc__table_meta(t, "tcast.view_parts");
	struct tc__xfer_part *p;
	uint32_t cap = 1, k = 0;
	uint64_t end = 0;

	*out = NULL;
	*n = 0;
	if (!s || !*s)
		return false;
	for (const char *c = s; *c; c++)
		cap += *c == ' ';
	if (cap > TC_VIEW_MAX_PARTS)
		return false;
	p = tc__calloc(cap, sizeof(*p));
	if (!p)
		return false;
	while (*s) {
		unsigned long long d, f, l;
		int used = 0;

		if (k == cap ||
		    sscanf(s, "%llu:%llu:%llu%n", &d, &f, &l, &used) != 3 ||
		    !l || d < end || l > t->total_bytes ||
		    d > t->total_bytes - l) {
			tc__free(p);
			return false;
		}
		p[k++] = (struct tc__xfer_part){ .dst_off = d,
						 .src_off = f,
						 .len = l };
		end = d + l;
		s += used;
		while (*s == ' ')
			s++;
	}
	*out = p;
	*n = k;
	return true;
}

uint32_t tc__view_parts_overlap(const struct tc__xfer_part *mine,
				uint32_t nmine,
				const struct tc__xfer_part *theirs,
				uint32_t ntheirs, const struct tc__gpu_mem *src,
				void *gate, struct tc__xfer_part **pc,
				uint32_t *npc, uint32_t *cap)
{
	uint32_t got = 0;

	for (uint32_t a = 0; a < nmine; a++) {
		const struct tc__xfer_part *m = &mine[a];

		for (uint32_t k = 0; k < ntheirs; k++) {
			const struct tc__xfer_part *w = &theirs[k];
			uint64_t lo = TC_MAX(m->src_off, w->src_off);
			uint64_t hi = TC_MIN(m->src_off + m->len,
					     w->src_off + w->len);

			if (hi <= lo || hi - lo < TC_VIEW_PART_MIN)
				continue;
			if (*npc == *cap) {
				uint32_t nc = *cap ? 2 * *cap : 16;
				void *np;

				if (nc > TC_VIEW_MAX_PARTS)
					return got;
				np = tc__realloc(*pc, nc * sizeof(**pc));
				if (!np)
					return got;
				*pc = np;
				*cap = nc;
			}
			(*pc)[(*npc)++] = (struct tc__xfer_part){
				.dst_off = m->dst_off + (lo - m->src_off),
				.src_off = w->dst_off + (lo - w->src_off),
				.len = hi - lo,
				.src = src,
				.gate = gate
			};
			got++;
		}
	}
	return got;
}

/* Order of pieces by where they land; at one offset a ready piece first
 * (it keeps the bytes: no wait). */
static int piece_cmp(const void *a, const void *b)
{
	const struct tc__xfer_part *x = a, *y = b;

	if (x->dst_off != y->dst_off)
		return x->dst_off < y->dst_off ? -1 : 1;
	return (x->gate != NULL) - (y->gate != NULL);
}

uint32_t tc__view_parts_trim(struct tc__xfer_part *pc, uint32_t npc)
{
	uint64_t end = 0;
	uint32_t n = 0;

	if (npc)
		qsort(pc, npc, sizeof(*pc), piece_cmp);
	for (uint32_t k = 0; k < npc; k++) {
		struct tc__xfer_part p = pc[k];

		if (p.dst_off < end) {
			uint64_t cut = end - p.dst_off;

			if (cut >= p.len || p.len - cut < TC_VIEW_PART_MIN)
				continue;
			p.dst_off += cut;
			p.src_off += cut;
			p.len -= cut;
		}
		pc[n++] = p;
		end = p.dst_off + p.len;
	}
	return n;
}

void tc__view_parts_lead(const struct tc__xfer_part *parts, uint32_t n,
			 const struct tc__table *src,
			 struct tc__xfer_part **out, uint32_t *nout)
{
	struct tc__xfer_part *l;
	uint32_t k = 0;

	*out = NULL;
	*nout = 0;
	if (!n || !(l = tc__calloc(n, sizeof(*l))))
		return;
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__xfer_part *p = &parts[i];
		uint64_t lo = UINT64_MAX, hi = 0;

		if (!src) {
			l[k++] = *p;
			continue;
		}
		/* Tensors inside one part are contiguous in both spaces,
		 * padding between them included: one span covers them. */
		for (uint32_t t = 0; t < src->ntensors; t++) {
			const struct tc__tensor *x = &src->tensors[t];

			if (!x->nbytes || x->offset < p->src_off ||
			    x->offset + x->nbytes > p->src_off + p->len)
				continue;
			lo = TC_MIN(lo, x->offset);
			hi = TC_MAX(hi, x->offset + x->nbytes);
		}
		if (hi <= lo || hi - lo < TC_VIEW_PART_MIN)
			continue;
		l[k++] = (struct tc__xfer_part){
			.dst_off = p->dst_off + (lo - p->src_off),
			.src_off = lo,
			.len = hi - lo,
		};
	}
	if (!k) {
		tc__free(l);
		return;
	}
	*out = l;
	*nout = k;
}

/* ------------------------------------------------------------------ pipe */

int tc__gpu_pipe_new(struct tc__xfer_part *lead, uint32_t nlead,
		     struct tc__gpu_pipe **out)
{
	struct tc__gpu_pipe *p = tc__calloc(1, sizeof(*p));

	*out = NULL;
	if (p && nlead && !(p->first = tc__calloc(nlead, sizeof(*p->first)))) {
		tc__free(p);
		p = NULL;
	}
	if (!p) {
		tc__free(lead);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->refs = 1;
	p->state = TC_GPU_PIPE_FILLING;
	p->progress_ns = tc__now_ns();
	tc__gpu_mem_init(&p->mem);
	p->lead = lead;
	p->nlead = nlead;
	for (uint32_t i = 0; i < nlead; i++)
		p->first[i] = (struct tc__xfer_range){ .off = lead[i].dst_off,
						       .len = lead[i].len };
	*out = p;
	return 0;
}

void tc__gpu_pipe_get(struct tc__gpu_pipe *p)
{
	pthread_mutex_lock(&p->lock);
	p->refs++;
	pthread_mutex_unlock(&p->lock);
}

void tc__gpu_pipe_put(struct tc__gpu_pipe *p)
{
	int n;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	n = --p->refs;
	pthread_mutex_unlock(&p->lock);
	if (n)
		return;
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	tc__free(p->lead);
	tc__free(p->first);
	tc__free(p);
}

bool tc__gpu_pipe_live(struct tc__gpu_pipe *p)
{
	bool live;

	pthread_mutex_lock(&p->lock);
	live = p->state == TC_GPU_PIPE_FILLING;
	pthread_mutex_unlock(&p->lock);
	return live;
}

void tc__gpu_pipe_publish(struct tc__gpu_pipe *p, const struct tc__gpu_mem *mem,
			  uint64_t done_to)
{
	pthread_mutex_lock(&p->lock);
	if (p->state == TC_GPU_PIPE_FILLING && done_to > p->done_to) {
		p->mem = *mem;
		p->done_to = done_to;
		p->progress_ns = tc__now_ns();
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

void tc__gpu_pipe_end(struct tc__gpu_pipe *p, int rc,
		      const struct tc__gpu_mem *mem)
{
	pthread_mutex_lock(&p->lock);
	if (p->state == TC_GPU_PIPE_FILLING) {
		p->state = rc == 0 ? TC_GPU_PIPE_DONE : TC_GPU_PIPE_FAILED;
		if (rc == 0)
			p->mem = *mem;
		pthread_cond_broadcast(&p->cond);
	}
	/* The allocation goes after a failure: no copy may still read it. */
	while (p->state == TC_GPU_PIPE_FAILED && p->copying > 0)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

int tc__gpu_pipe_wait(struct tc__gpu_pipe *p, uint64_t off, uint64_t len,
		      uint64_t stall_ms, struct tc__gpu_mem *mem)
{
	uint64_t start = tc__now_ns(), stall = stall_ms * 1000000;
	int rc;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		uint64_t since = TC_MAX(start, p->progress_ns), now;
		struct timespec until;

		if (p->state == TC_GPU_PIPE_FAILED) {
			rc = -ECANCELED;
			break;
		}
		if (p->state == TC_GPU_PIPE_DONE ||
		    (p->done_to >= off + len && p->mem.dptr)) {
			*mem = p->mem;
			p->copying++;
			rc = 0;
			break;
		}
		now = tc__now_ns();
		if (now - since >= stall) {
			rc = -ETIMEDOUT;
			break;
		}
		/* Realtime for the condition variable; the stall itself is
		 * measured on the monotonic clock above. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)((since + stall - now) / 1000000000);
		until.tv_nsec += (long)((since + stall - now) % 1000000000);
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &until);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void tc__gpu_pipe_copied(struct tc__gpu_pipe *p)
{
	pthread_mutex_lock(&p->lock);
	p->copying--;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}
