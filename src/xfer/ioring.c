/*
 * ioring.c - tagged batches of file reads over io_uring (liburing).
 */
#include <errno.h>
#include <liburing.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/log.h"
#include "ioring.h"
#include "tcast/errors.h"

/* The most bytes one request reads: big enough for the disk, small
 * enough that several are in flight per staging unit. */
#define PIECE	     ((uint64_t)1 << 20)
#define BOUNCE_BYTES (PIECE + 2 * (uint64_t)TC_IORING_MAX_ALIGN)

struct req {
	uint8_t *dst;	 /* where the next wanted byte goes */
	uint64_t off;	 /* file offset of that byte */
	uint64_t len;	 /* bytes still wanted */
	uint64_t a0;	 /* O_DIRECT: file offset of bounce[0] */
	uint8_t *bounce; /* O_DIRECT: aligned landing buffer */
	int fd;
	uint32_t align; /* 0: buffered */
	uint32_t file;
	unsigned tag;
	struct req *next_free;
};

struct tc__ioring {
	struct io_uring ring;
	struct req *reqs;
	struct req *free;
	uint8_t *bounce;   /* depth x BOUNCE_BYTES, mapped on first use */
	unsigned *pending; /* reads in flight per tag */
	unsigned depth, ntags, inflight, unsubmitted;
	int rc; /* first failure; sticky */
	uint32_t fail_file;
	uint8_t *fail_dst;
};

int tc__ioring_new(unsigned depth, unsigned ntags, struct tc__ioring **out)
{
	struct tc__ioring *r;
	struct io_uring_probe *p;
	int rc;

	*out = NULL;
	if (depth == 0 || depth > 4096 || ntags == 0)
		return -EINVAL;
	r = tc__calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->depth = depth;
	r->ntags = ntags;
	r->reqs = tc__calloc(depth, sizeof(*r->reqs));
	r->pending = tc__calloc(ntags, sizeof(*r->pending));
	if (!r->reqs || !r->pending) {
		rc = -ENOMEM;
		goto fail_alloc;
	}
	rc = io_uring_queue_init(depth, &r->ring, 0);
	if (rc < 0)
		goto fail_alloc;
	/* IORING_OP_READ is 5.6; older kernels have the ring but not it. */
	p = io_uring_get_probe_ring(&r->ring);
	if (!p || !io_uring_opcode_supported(p, IORING_OP_READ)) {
		if (p)
			io_uring_free_probe(p);
		io_uring_queue_exit(&r->ring);
		rc = -EOPNOTSUPP;
		goto fail_alloc;
	}
	io_uring_free_probe(p);
	for (unsigned i = 0; i < depth; i++) {
		r->reqs[i].next_free = r->free;
		r->free = &r->reqs[i];
	}
	*out = r;
	return 0;

fail_alloc:
	tc__free(r->reqs);
	tc__free(r->pending);
	tc__free(r);
	return rc;
}

static void fail(struct tc__ioring *r, struct req *q, int rc)
{
	if (r->rc == 0) {
		r->rc = rc;
		r->fail_file = q->file;
		r->fail_dst = q->dst;
	}
}

/* Put q's next read on the submission queue. */
static void prep(struct tc__ioring *r, struct req *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	/* The queue has `depth` entries and a request holds at most one. */
	if (!sqe)
		TC_BUG("io_uring submission queue full");
	if (q->align) {
		uint64_t end = TC_ALIGN_UP(q->off + q->len, (uint64_t)q->align);

		q->a0 = q->off & ~((uint64_t)q->align - 1);
		io_uring_prep_read(sqe, q->fd, q->bounce,
				   (unsigned)(end - q->a0), q->a0);
	} else {
		io_uring_prep_read(sqe, q->fd, q->dst, (unsigned)q->len,
				   q->off);
	}
	io_uring_sqe_set_data(sqe, q);
	r->unsubmitted++;
}

static void finish(struct tc__ioring *r, struct req *q)
{
	r->pending[q->tag]--;
	r->inflight--;
	q->next_free = r->free;
	r->free = q;
}

/* One completion: copy out of the bounce buffer, requeue a short read. */
static void complete(struct tc__ioring *r, struct req *q, int res)
{
	uint64_t got;

	if ((res == -EINTR || res == -EAGAIN) && r->rc == 0) {
		prep(r, q);
		return;
	}
	if (res < 0) {
		fail(r, q, res);
		finish(r, q);
		return;
	}
	got = (uint64_t)res;
	if (q->align) {
		uint64_t skip = q->off - q->a0, take;

		if (got <= skip) { /* the file ends before our bytes */
			fail(r, q, TC_EBADFILE);
			finish(r, q);
			return;
		}
		take = TC_MIN(got - skip, q->len);
		memcpy(q->dst, q->bounce + skip, take);
		got = take;
	} else if (got == 0) {
		fail(r, q, TC_EBADFILE);
		finish(r, q);
		return;
	}
	q->dst += got;
	q->off += got;
	q->len -= got;
	/* Short reads happen (a signal, a file that shrank): ask for the
	 * rest; a read at the end of the file then returns 0. */
	if (q->len > 0 && r->rc == 0)
		prep(r, q);
	else
		finish(r, q);
}

/* Submit what is queued, wait for at least one completion, reap all. */
static void reap(struct tc__ioring *r)
{
	struct io_uring_cqe *cqe;
	int rc;

	/* EAGAIN / EBUSY: the kernel is short of memory or completions are
	 * backed up; both pass.  Anything else is a misuse of the ring, and
	 * reads in flight could then land in freed buffers: fail hard. */
	for (;;) {
		rc = io_uring_submit_and_wait(&r->ring, 1);
		if (rc >= 0)
			break;
		if (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
			TC_BUG("io_uring_submit_and_wait failed");
		if (rc != -EINTR)
			usleep(100);
	}
	r->unsubmitted = 0;
	while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
		struct req *q = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&r->ring, cqe);
		complete(r, q, res);
	}
}

static void reap_until_free(struct tc__ioring *r)
{
	while (!r->free)
		reap(r);
}

int tc__ioring_read(struct tc__ioring *r, int fd, uint32_t align, uint8_t *dst,
		    uint64_t len, uint64_t off, unsigned tag, uint32_t file)
{
	if (tag >= r->ntags || align > TC_IORING_MAX_ALIGN ||
	    (align & (align - 1)))
		return -EINVAL;
	if (align && !r->bounce) {
		void *p = mmap(NULL, r->depth * BOUNCE_BYTES,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return -ENOMEM;
		r->bounce = p;
	}
	while (len > 0 && r->rc == 0) {
		uint64_t n = TC_MIN(len, PIECE);
		struct req *q;

		reap_until_free(r);
		if (r->rc)
			break;
		q = r->free;
		r->free = q->next_free;
		q->dst = dst;
		q->off = off;
		q->len = n;
		q->fd = fd;
		q->align = align;
		q->file = file;
		q->tag = tag;
		q->bounce = r->bounce ? r->bounce + (uint64_t)(q - r->reqs) *
							    BOUNCE_BYTES :
					NULL;
		r->pending[tag]++;
		r->inflight++;
		prep(r, q);
		dst += n;
		off += n;
		len -= n;
	}
	/* Keep the device busy while the caller plans more. */
	if (r->unsubmitted >= r->depth / 2 + 1) {
		io_uring_submit(&r->ring);
		r->unsubmitted = 0;
	}
	return r->rc;
}

int tc__ioring_wait(struct tc__ioring *r, unsigned tag)
{
	for (;;) {
		unsigned left = tag == TC_IORING_ALL ? r->inflight :
				tag < r->ntags	     ? r->pending[tag] :
						       0;

		if (left == 0)
			break;
		reap(r);
	}
	return r->rc;
}

void tc__ioring_failure(const struct tc__ioring *r, uint32_t *file,
			uint8_t **dst)
{
	*file = r->fail_file;
	*dst = r->fail_dst;
}

void tc__ioring_free(struct tc__ioring *r)
{
	if (!r)
		return;
	tc__ioring_wait(r, TC_IORING_ALL);
	io_uring_queue_exit(&r->ring);
	if (r->bounce)
		munmap(r->bounce, r->depth * BOUNCE_BYTES);
	tc__free(r->reqs);
	tc__free(r->pending);
	tc__free(r);
}
