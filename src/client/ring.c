/*
 * ring.c - rings of reusable GPU slabs (include/tcast/ring.h).
 *
 * A slab is one VMM allocation (owner: tc__gpu_alloc, exported once;
 * reader: tc__gpu_import, mapped read-write once) with a reference count:
 * the ring's slot holds one, every live DLPack view one more, so replacing
 * a slot or freeing the ring never unmaps memory a tensor still points at.
 * The ring itself is counted the same way (the caller's reference plus one
 * per view), because a reader's deleter writes into the ring's dead list.
 *
 * A slab's last reference can go on any thread at any time: the ring's
 * owner frees it (a client closing its channel), a slot is refilled, or the
 * last torch view dies, which happens on the host as soon as Python drops
 * the tensor, while kernels that read or write it may still be queued on
 * some stream of this process.  Unmapping under such a kernel is an illegal
 * address that kills the whole CUDA context (the server's, for every
 * client).  So a dying slab is never released in place: it is collected,
 * the ring's mutex is dropped, the device is synchronised (every stream of
 * this process), and only then is it unmapped and released (slabs_release).
 * One mutex guards everything else; the GPU calls made under it are
 * allocation and import, once per slab, not per call.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gpu/vmm.h"
#include "tcast/dlpack.h"
#include "tcast/errors.h"
#include "tcast/ring.h"

#define RING_DEFAULT_CAP (1ull << 30) /* owner's slab bytes when 0 is given */
#define RING_MIN_SLAB	 (2ull << 20) /* the VMM granularity of current GPUs */
#define RING_DEAD_MAX	 1024	      /* undrained reports kept (then lost) */

/* One mapped allocation.  refs: the slot's + one per live view. */
struct slab {
	struct tc__gpu_mem mem;
	unsigned refs;
};

/* A slot: its slab (NULL when empty) and, for owners, whether a payload
 * is in it and which generation that payload is. */
struct slot {
	struct slab *slab;
	uint32_t gen;
	bool busy;
	bool shipped; /* owner: tc_ring_fd handed this slab out */
};

/*
 * Invariants (under mu): refs >= 1 while the caller has not freed it;
 * bytes is the sum of the sizes of the slots' slabs; an owner slot is busy
 * only with a slab; ndead <= RING_DEAD_MAX.
 */
struct tc_ring {
	pthread_mutex_t mu;
	int device;    /* CUDA ordinal */
	int role;      /* TC_RING_OWNER or TC_RING_READER */
	uint64_t cap;  /* owner: limit on bytes */
	unsigned refs; /* caller's (until tc_ring_free) + views */
	bool freed;    /* tc_ring_free was called */
	struct slot slots[TC_RING_MAX_SLOTS];
	uint64_t dead[RING_DEAD_MAX]; /* reader: (slot << 32 | gen) */
	uint32_t ndead;
	struct tc_ring_stats st; /* counters; slabs/bytes/views kept live */
	char errmsg[256];
};

/* One exported view; `m` first so the deleter's argument is the
 * allocation. */
struct ring_view {
	struct tc_DLManagedTensor m;
	tc_ring *r;
	struct slab *slab;
	uint32_t slot, gen;
	int64_t shape[1];
};

__attribute__((format(printf, 3, 4))) static int ring_err(tc_ring *r, int rc,
							  const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

/* Slabs whose last reference went while the mutex was held, released by
 * slabs_release() once it is dropped.  One operation drops at most one
 * slab per slot (tc_ring_free, pick, trim) or one (a view, an import). */
struct drops {
	struct slab *s[TC_RING_MAX_SLOTS];
	unsigned n;
};

/* Drop one reference (mu held); a slab with none left joins d. */
static void slab_unref(struct slab *s, struct drops *d)
{
	if (s && --s->refs == 0)
		d->s[d->n++] = s;
}

/* Release d's slabs (mu NOT held): first wait for every queued use of
 * them on this device (see the file comment), then unmap and free.  A
 * failed sync (a context already broken by someone else's fault) is
 * logged; the release still runs, there is nothing better to do then. */
static void slabs_release(int device, struct drops *d)
{
	char err[256];

	if (d->n == 0)
		return;
	if (tc__gpu_device_sync(device, err, sizeof(err)) < 0)
		tc__log(TC_LOG_WARN,
			"slab ring: releasing %u slab(s) unsynchronised: %s",
			d->n, err);
	for (unsigned i = 0; i < d->n; i++) {
		tc__gpu_release(&d->s[i]->mem);
		tc__free(d->s[i]);
	}
	d->n = 0;
}

/* Drop one ring reference (mu held); true when the ring must be freed. */
static bool ring_unref_locked(tc_ring *r)
{
	return --r->refs == 0;
}

static void ring_destroy(tc_ring *r)
{
	pthread_mutex_destroy(&r->mu);
	tc__free(r);
}

TC_API int tc_ring_create(int device, int role, uint64_t cap_bytes,
			  tc_ring **out)
{
	tc_ring *r;

	*out = NULL;
	if (device < 0 || (role != TC_RING_OWNER && role != TC_RING_READER))
		return TC_EINVAL;
	r = tc__calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (pthread_mutex_init(&r->mu, NULL) != 0) {
		tc__free(r);
		return -ENOMEM;
	}
	r->device = device;
	r->role = role;
	r->cap = cap_bytes ? cap_bytes : RING_DEFAULT_CAP;
	r->refs = 1;
	*out = r;
	return 0;
}

TC_API void tc_ring_free(tc_ring *r)
{
	struct drops d = { .n = 0 };
	int device;
	bool last;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	if (r->freed) { /* a double free is a caller bug; do no harm */
		pthread_mutex_unlock(&r->mu);
		return;
	}
	r->freed = true;
	device = r->device;
	for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++) {
		slab_unref(r->slots[i].slab, &d);
		r->slots[i].slab = NULL;
		r->slots[i].busy = false;
	}
	r->st.slabs = 0;
	r->st.bytes = 0;
	r->st.busy = 0;
	last = ring_unref_locked(r);
	pthread_mutex_unlock(&r->mu);
	slabs_release(device, &d);
	if (last)
		ring_destroy(r);
}

TC_API const char *tc_ring_errmsg(const tc_ring *r)
{
	return r ? r->errmsg : "no ring";
}

/* ------------------------------------------------------------- owner */

static uint64_t slab_size_for(uint64_t nbytes)
{
	uint64_t s = RING_MIN_SLAB;

	while (s < nbytes && s < (1ull << 62))
		s <<= 1;
	return s;
}

/* Put a new slab of `size` into slot i (mu held, the slot empty). */
static int slot_alloc(tc_ring *r, unsigned i, uint64_t size)
{
	char err[256];
	struct slab *s = tc__calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return ring_err(r, -ENOMEM, "out of memory");
	tc__gpu_mem_init(&s->mem);
	rc = tc__gpu_alloc(r->device, size, 0, &s->mem, err, sizeof(err));
	if (rc < 0) {
		tc__free(s);
		return ring_err(r, rc, "cannot allocate a %llu-byte slab: %s",
				(unsigned long long)size, err);
	}
	s->refs = 1;
	r->slots[i].slab = s;
	r->slots[i].busy = false;
	r->slots[i].shipped = false;
	r->st.slabs++;
	r->st.bytes += s->mem.size;
	r->st.created++;
	return 0;
}

static void slot_clear(tc_ring *r, unsigned i, struct drops *d)
{
	struct slab *s = r->slots[i].slab;

	if (!s)
		return;
	r->st.slabs--;
	r->st.bytes -= s->mem.size;
	r->slots[i].slab = NULL;
	r->slots[i].busy = false;
	slab_unref(s, d);
}

/* The slot for nbytes (mu held): -1 when none can be had.  Free slabs
 * too small that it clears to make room join d. */
static int pick(tc_ring *r, uint64_t nbytes, uint64_t want, int *is_new,
		struct drops *d)
{
	uint64_t freeable = 0;
	int best = -1, empty = -1;

	for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++) {
		struct slot *x = &r->slots[i];

		if (!x->slab) {
			if (empty < 0)
				empty = (int)i;
		} else if (!x->busy) {
			freeable += x->slab->mem.size;
			if (x->slab->mem.size >= nbytes &&
			    (best < 0 ||
			     x->slab->mem.size < r->slots[best].slab->mem.size))
				best = (int)i;
		}
	}
	*is_new = 0;
	if (best >= 0)
		return best;
	*is_new = 1; /* a new slab for this slot */
	if (r->st.bytes - freeable + want > r->cap)
		return -1;
	/* Make room: free slabs too small for this payload, smallest
	 * first, until the new one fits under the cap. */
	while (empty < 0 || r->st.bytes + want > r->cap) {
		int small = -1;

		for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++) {
			struct slot *x = &r->slots[i];

			if (x->slab && !x->busy &&
			    (small < 0 ||
			     x->slab->mem.size <
				     r->slots[small].slab->mem.size))
				small = (int)i;
		}
		if (small < 0)
			return -1; /* 64 busy slabs */
		slot_clear(r, (unsigned)small, d);
		if (empty < 0)
			empty = small;
	}
	return empty;
}

TC_API int tc_ring_acquire(tc_ring *r, uint64_t nbytes, uint32_t *slot,
			   uint32_t *gen, uint64_t *dptr, int *is_new)
{
	uint64_t want = slab_size_for(nbytes ? nbytes : 1);
	struct drops d = { .n = 0 };
	int i, rc;

	pthread_mutex_lock(&r->mu);
	if (r->role != TC_RING_OWNER || r->freed) {
		rc = ring_err(r, TC_EINVAL,
			      "acquire on a reader or freed ring");
		goto out_unlock;
	}
	i = pick(r, nbytes, want, is_new, &d);
	if (i < 0) {
		r->st.refused++;
		rc = ring_err(r, TC_ENOSPACE,
			      "no free slab for %llu bytes: %u in use, %llu of "
			      "%llu bytes",
			      (unsigned long long)nbytes, r->st.busy,
			      (unsigned long long)r->st.bytes,
			      (unsigned long long)r->cap);
		goto out_unlock;
	}
	if (*is_new) {
		rc = slot_alloc(r, (unsigned)i, want);
		if (rc < 0)
			goto out_unlock;
	}
	*is_new = !r->slots[i].shipped;
	r->slots[i].busy = true;
	r->slots[i].gen++;
	r->st.busy++;
	r->st.acquired++;
	*slot = (uint32_t)i;
	*gen = r->slots[i].gen;
	*dptr = r->slots[i].slab->mem.dptr;
	rc = 0;
out_unlock:
	pthread_mutex_unlock(&r->mu);
	slabs_release(r->device, &d);
	return rc;
}

TC_API int tc_ring_fd(tc_ring *r, uint32_t slot, int *fd, uint64_t *size)
{
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	if (r->role != TC_RING_OWNER || slot >= TC_RING_MAX_SLOTS ||
	    !r->slots[slot].slab) {
		rc = ring_err(r, TC_EINVAL, "no slab in slot %u", slot);
	} else {
		*fd = r->slots[slot].slab->mem.fd;
		*size = r->slots[slot].slab->mem.size;
		r->slots[slot].shipped = true;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

TC_API int tc_ring_put_back(tc_ring *r, uint32_t slot, uint32_t gen)
{
	int rc = 0;

	pthread_mutex_lock(&r->mu);
	if (r->role != TC_RING_OWNER || slot >= TC_RING_MAX_SLOTS ||
	    !r->slots[slot].busy || r->slots[slot].gen != gen) {
		rc = ring_err(r, TC_EINVAL,
			      "slot %u generation %u is not in use", slot, gen);
	} else {
		r->slots[slot].busy = false;
		r->st.busy--;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

TC_API int tc_ring_trim(tc_ring *r)
{
	struct drops d = { .n = 0 };
	int n = 0;

	pthread_mutex_lock(&r->mu);
	for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++) {
		if (r->slots[i].slab && !r->slots[i].busy) {
			slot_clear(r, i, &d);
			n++;
		}
	}
	pthread_mutex_unlock(&r->mu);
	slabs_release(r->device, &d);
	return n;
}

/* ------------------------------------------------------------ reader */

TC_API int tc_ring_import(tc_ring *r, uint32_t slot, int fd, uint64_t size)
{
	struct drops d = { .n = 0 };
	char err[256];
	struct slab *s;
	int rc;

	if (slot >= TC_RING_MAX_SLOTS || fd < 0 || size == 0)
		return ring_err(r, TC_EINVAL, "bad slot %u, fd %d or size %llu",
				slot, fd, (unsigned long long)size);
	s = tc__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	tc__gpu_mem_init(&s->mem);
	/* Outside the lock: a map can take milliseconds, and the deleters
	 * of other calls' views must not wait for it. */
	rc = tc__gpu_import(r->device, fd, size, 0, &s->mem, err, sizeof(err));
	if (rc < 0) {
		tc__free(s);
		pthread_mutex_lock(&r->mu);
		rc = ring_err(r, rc, "cannot map slab %u (%llu bytes): %s",
			      slot, (unsigned long long)size, err);
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	s->refs = 1;
	pthread_mutex_lock(&r->mu);
	if (r->role != TC_RING_READER || r->freed) {
		rc = ring_err(r, TC_EINVAL,
			      "import into an owner or freed ring");
		pthread_mutex_unlock(&r->mu);
		slab_unref(s, &d); /* never viewed: nothing can use it */
		slabs_release(r->device, &d);
		return rc;
	}
	slot_clear(r, slot, &d);
	r->slots[slot].slab = s;
	r->st.slabs++;
	r->st.bytes += s->mem.size;
	r->st.imported++;
	pthread_mutex_unlock(&r->mu);
	slabs_release(r->device, &d);
	return 0;
}

/* ------------------------------------------------------------- views */

static void view_delete(struct tc_DLManagedTensor *m)
{
	struct ring_view *v = (struct ring_view *)m;
	struct drops d = { .n = 0 };
	tc_ring *r = v->r;
	int device = r->device;
	bool last;

	pthread_mutex_lock(&r->mu);
	if (r->role == TC_RING_READER && !r->freed) {
		if (r->ndead < RING_DEAD_MAX)
			r->dead[r->ndead++] = (uint64_t)v->slot << 32 | v->gen;
		/* else: the owner never learns; that slab stays busy there
		 * and the owner grows or falls back, never overwrites */
	}
	r->st.views--;
	slab_unref(v->slab, &d);
	last = ring_unref_locked(r);
	pthread_mutex_unlock(&r->mu);
	tc__free(v);
	/* The torch tensor just died on the host; kernels queued on it may
	 * not have run yet.  Only a slab no slot holds (the ring was freed or
	 * the slot refilled) is released here, after a device sync. */
	slabs_release(device, &d);
	if (last)
		ring_destroy(r);
}

TC_API int tc_ring_view(tc_ring *r, uint32_t slot, uint32_t gen,
			uint64_t nbytes, uint32_t flags, void **out)
{
	struct ring_view *v;
	struct slab *s;
	int rc = 0;

	*out = NULL;
	if (flags & ~(uint32_t)TC_RING_VIEW_HOST)
		return TC_EINVAL;
	v = tc__calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&r->mu);
	s = slot < TC_RING_MAX_SLOTS ? r->slots[slot].slab : NULL;
	if (!s || r->freed || nbytes > s->mem.size) {
		rc = ring_err(r, TC_EINVAL, "no slab of %llu bytes in slot %u",
			      (unsigned long long)nbytes, slot);
		pthread_mutex_unlock(&r->mu);
		tc__free(v);
		return rc;
	}
	s->refs++;
	r->refs++;
	r->st.views++;
	v->r = r;
	v->slab = s;
	v->slot = slot;
	v->gen = gen;
	v->shape[0] = (int64_t)nbytes;
	v->m.dl_tensor.data = (void *)(uintptr_t)s->mem.dptr;
	if (flags & TC_RING_VIEW_HOST) {
		v->m.dl_tensor.device.device_type = TC_kDLCPU;
		v->m.dl_tensor.device.device_id = 0;
	} else {
		v->m.dl_tensor.device.device_type = TC_kDLCUDA;
		v->m.dl_tensor.device.device_id = r->device;
	}
	pthread_mutex_unlock(&r->mu);
	v->m.dl_tensor.ndim = 1;
	v->m.dl_tensor.dtype.code = 1; /* kDLUInt */
	v->m.dl_tensor.dtype.bits = 8;
	v->m.dl_tensor.dtype.lanes = 1;
	v->m.dl_tensor.shape = v->shape;
	v->m.dl_tensor.strides = NULL;
	v->m.dl_tensor.byte_offset = 0;
	v->m.manager_ctx = v;
	v->m.deleter = view_delete;
	*out = v;
	return 0;
}

TC_API int tc_ring_drain(tc_ring *r, uint64_t *out, uint32_t max)
{
	uint32_t n;

	pthread_mutex_lock(&r->mu);
	n = r->ndead < max ? r->ndead : max;
	memcpy(out, r->dead, n * sizeof(*out));
	memmove(r->dead, r->dead + n, (r->ndead - n) * sizeof(*out));
	r->ndead -= n;
	pthread_mutex_unlock(&r->mu);
	return (int)n;
}

TC_API int tc_ring_stats(tc_ring *r, struct tc_ring_stats *out)
{
	pthread_mutex_lock(&r->mu);
	*out = r->st;
	out->dead = r->ndead;
	pthread_mutex_unlock(&r->mu);
	return 0;
}
