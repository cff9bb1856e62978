/*
 * loader.c - parallel pread + hash into artifact memory.
 */
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/io.h"
#include "loader.h"
#include "net/ev.h"
#include "tcast/errors.h"

/* Bytes read and hashed at a time: small enough to stay in L2. */
#define WINDOW_BYTES ((uint64_t)1 << 20)

/* Bytes one write call takes while hashing runs beside it: big enough
 * for the disk to stream, small enough that several are in flight. */
#define WRITE_PIECE_BYTES ((uint64_t)8 << 20)

/* A first touch of a mapped page dearer than this (a VM with shadow or
 * paravirtualised page tables: ~15 us; bare metal: ~0.1-0.3 us) makes
 * reading through the file the faster way to hash sealed bytes. */
#define TC_DEAR_FAULT_NS 1000

/* Every byte this process's loaders asked of source files (the host
 * loader's preads here, the GPU loader's reads in gpu_loader.c). */
static _Atomic uint64_t load_read_bytes, load_reads;

void tc__load_count(uint64_t bytes, uint64_t reads)
{
	atomic_fetch_add_explicit(&load_read_bytes, bytes,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&load_reads, reads, memory_order_relaxed);
}

void tc__load_counters(uint64_t *bytes, uint64_t *reads)
{
	*bytes = atomic_load_explicit(&load_read_bytes, memory_order_relaxed);
	*reads = atomic_load_explicit(&load_reads, memory_order_relaxed);
}

static uint64_t fault_ns; /* tc__page_fault_ns, measured once */

struct load_ctx {
	const struct tc__source *src; /* NULL when only hashing */
	struct tc__native_tmp *w;     /* written beside the hashing, or NULL */
	_Atomic uint64_t next_write;  /* the next piece to write */
	_Atomic int wrc;	      /* the first write error */
	uint8_t *dst;		      /* destination (or data to hash) */
	int fd;			      /* the byte space's file (`via`) */
	enum {
		VIA_MAP,     /* dst is the byte space */
		VIA_READ_FD, /* hash only: read the bytes from fd */
		VIA_WRITE_FD /* load: write each hashed window to fd */
	} via;
	uint64_t size; /* byte space */
	uint64_t nchunks;
	struct tc__digest *chunks;
	struct tc__load_progress *prog;
	_Atomic uint64_t next_chunk;
	pthread_mutex_t lock; /* guards rc and err */
	int rc;
	char *err;
	size_t errlen;
};

static void fail(struct load_ctx *c, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct load_ctx *c, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->lock);
	if (c->rc == 0) {
		c->rc = rc;
		va_start(ap, fmt);
		if (c->err)
			vsnprintf(c->err, c->errlen, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&c->lock);
	if (c->prog)
		atomic_store(&c->prog->cancel, 1);
}

uint32_t tc__load_first_tensor(const struct tc__table *t, uint64_t pos)
{
	uint32_t lo = 0, hi = t->ntensors;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct tc__tensor *x = &t->tensors[mid];

		if (x->offset + x->nbytes <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int tc__load_range(const struct tc__source *src, uint8_t *buf, uint64_t w0,
		   uint64_t w1, uint32_t *cursor, bool zero_gaps,
		   struct tc__reader *rd, char *err, size_t errlen)
{
	const struct tc__table *t = &src->table;
	uint64_t filled = w0; /* bytes before this are read or zeroed */

	for (uint32_t i = *cursor; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		const struct tc__source_file *f = &src->files[x->src_file];
		uint64_t a, b, off;
		int rc;

		if (x->offset >= w1)
			break;
		a = TC_MAX(x->offset, w0);
		b = TC_MIN(x->offset + x->nbytes, w1);
		if (a >= b)
			continue;
		if (zero_gaps && a > filled)
			memset(buf + (filled - w0), 0, a - filled);
		off = x->src_offset + (a - x->offset);
		rc = rd ? rd->read(rd, x->src_file, buf + (a - w0), b - a,
				   off) :
			  tc__pread_exact(f->fd, buf + (a - w0), b - a, off);
		if (!rd && rc == 0)
			tc__load_count(b - a, 1);
		if (rc < 0) {
			snprintf(
				err, errlen,
				rc == TC_EBADFILE ?
					"'%s' shrank while reading tensor '%s'" :
					"cannot read '%s' (tensor '%s'): %s",
				f->name, x->name, tc_strerror(rc));
			return rc;
		}
		filled = b;
		/* The next window starts where this tensor may continue. */
		if (x->offset + x->nbytes <= w1)
			*cursor = i + 1;
	}
	if (zero_gaps && w1 > filled)
		memset(buf + (filled - w0), 0, w1 - filled);
	return 0;
}

/* Read the tensor bytes that fall in [w0, w1) into the destination, or
 * into `wbuf` (gaps zeroed: it is reused) to be written to c->fd after
 * hashing. */
static int fill_window(struct load_ctx *c, uint64_t w0, uint64_t w1,
		       uint32_t *cursor, uint8_t *wbuf)
{
	char msg[512];
	int rc = tc__load_range(c->src, wbuf ? wbuf : c->dst + w0, w0, w1,
				cursor, wbuf != NULL, NULL, msg, sizeof(msg));

	if (rc < 0)
		fail(c, rc, "%s", msg);
	return rc;
}

static int write_window(struct load_ctx *c, const uint8_t *wbuf, uint64_t w0,
			uint64_t w1)
{
	uint64_t off = w0;

	while (off < w1) {
		ssize_t w =
			pwrite(c->fd, wbuf + (off - w0), w1 - off, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int rc = w < 0 ? -errno : -EIO;

			fail(c, rc,
			     "cannot write bytes %" PRIu64 "..%" PRIu64
			     " of the artifact's memory: %s",
			     off, w1, tc_strerror(rc));
			return rc;
		}
		off += (uint64_t)w;
	}
	return 0;
}

static void *worker(void *arg)
{
	struct load_ctx *c = arg;
	struct tc__hasher *h = tc__hasher_new();
	bool windowed = c->via != VIA_MAP;
	uint8_t *wbuf = windowed ? tc__malloc(WINDOW_BYTES) : NULL;

	if (!h || (windowed && !wbuf)) {
		fail(c, -ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		uint64_t k = atomic_fetch_add(&c->next_chunk, 1);
		uint64_t c0, c1;
		uint32_t cursor = 0;

		if (k >= c->nchunks)
			break;
		if (c->prog && atomic_load(&c->prog->cancel)) {
			fail(c, -ECANCELED, "load cancelled");
			break;
		}
		c0 = k * TC_CHUNK_BYTES;
		c1 = TC_MIN(c0 + TC_CHUNK_BYTES, c->size);
		if (c->src)
			cursor = tc__load_first_tensor(&c->src->table, c0);
		tc__hasher_reset(h);
		for (uint64_t w = c0; w < c1; w += WINDOW_BYTES) {
			uint64_t we = TC_MIN(w + WINDOW_BYTES, c1);

			if (c->src &&
			    fill_window(c, w, we, &cursor,
					c->via == VIA_WRITE_FD ? wbuf : NULL) <
				    0)
				goto out;
			if (c->via == VIA_READ_FD) {
				int rc = tc__pread_exact(c->fd, wbuf,
							 (size_t)(we - w), w);

				if (rc < 0) {
					fail(c, rc,
					     "cannot read bytes %" PRIu64
					     "..%" PRIu64 " to hash: %s",
					     w, we, tc_strerror(rc));
					goto out;
				}
			}
			tc__hasher_update(h, wbuf ? wbuf : c->dst + w,
					  (size_t)(we - w));
			/* Still in cache from the hash. */
			if (c->via == VIA_WRITE_FD &&
			    write_window(c, wbuf, w, we) < 0)
				goto out;
		}
		tc__hasher_final(h, &c->chunks[k]);
		if (c->prog)
			atomic_fetch_add(&c->prog->done_bytes, c1 - c0);
	}
out:
	tc__hasher_free(h);
	tc__free(wbuf);
	return NULL;
}

/* Write the byte space to c->w piece by piece.  The bytes are sealed, so
 * the writes need not wait for the hashing: the disk and the CPU work at
 * once, and the slower of the two is the whole put's time. */
static void *writer(void *arg)
{
	struct load_ctx *c = arg;

	while (atomic_load(&c->wrc) == 0) {
		uint64_t off =
			atomic_fetch_add(&c->next_write, WRITE_PIECE_BYTES);
		int rc;

		if (off >= c->size)
			break;
		rc = tc__native_write_data(c->w, c->dst + off, off,
					   TC_MIN(WRITE_PIECE_BYTES,
						  c->size - off));
		if (rc < 0) {
			int zero = 0;

			atomic_compare_exchange_strong(&c->wrc, &zero, rc);
		}
	}
	return NULL;
}

static int run(struct load_ctx *c, int nthreads, int wthreads)
{
	pthread_t tids[64], wids[16];
	int started = 0, wstarted = 0;

	c->nchunks = tc__chunk_count(c->size);
	atomic_init(&c->next_chunk, 0);
	atomic_init(&c->next_write, 0);
	atomic_init(&c->wrc, 0);
	pthread_mutex_init(&c->lock, NULL);
	nthreads = (int)TC_MIN((uint64_t)TC_MAX(nthreads, 1), c->nchunks);
	nthreads = TC_MIN(nthreads, (int)TC_ARRAY_SIZE(tids));
	/* No more writers than pieces, and none for a single piece (a
	 * small put): this thread writes it after hashing, which costs less
	 * than starting a thread. */
	wthreads =
		c->w ? TC_MIN(TC_MAX(wthreads, 1), (int)TC_ARRAY_SIZE(wids)) :
		       0;
	if ((uint64_t)wthreads >
	    (c->size + WRITE_PIECE_BYTES - 1) / WRITE_PIECE_BYTES)
		wthreads = (int)((c->size + WRITE_PIECE_BYTES - 1) /
				 WRITE_PIECE_BYTES);
	if (wthreads == 1)
		wthreads = 0;
	for (int i = 0; i < wthreads; i++)
		if (pthread_create(&wids[wstarted], NULL, writer, c) == 0)
			wstarted++;
	/* Threads beyond the first are an optimisation: when one cannot be
	 * created the rest (at least this thread) still finish the work. */
	for (int i = 1; i < nthreads; i++)
		if (pthread_create(&tids[started], NULL, worker, c) == 0)
			started++;
	if (c->chunks)
		worker(c);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (c->w && !wstarted)
		writer(c);
	for (int i = 0; i < wstarted; i++)
		pthread_join(wids[i], NULL);
	pthread_mutex_destroy(&c->lock);
	return c->rc;
}

int tc__load_source(const struct tc__source *src, void *dst, int nthreads,
		    struct tc__digest *chunks, struct tc__load_progress *prog,
		    char *err, size_t errlen)
{
	struct load_ctx c = { 0 };

	c.src = src;
	c.dst = dst;
	c.size = src->table.total_bytes;
	c.chunks = chunks;
	c.prog = prog;
	c.err = err;
	c.errlen = errlen;
	return run(&c, nthreads, 0);
}

int tc__hash_chunks(const void *p, uint64_t size, int nthreads,
		    struct tc__digest *chunks)
{
	struct load_ctx c = { 0 };

	c.dst = (uint8_t *)p;
	c.size = size;
	c.chunks = chunks;
	return run(&c, nthreads, 0);
}

int tc__load_source_fd(const struct tc__source *src, int fd, int nthreads,
		       struct tc__digest *chunks,
		       struct tc__load_progress *prog, char *err, size_t errlen)
{
	struct load_ctx c = { 0 };

	c.src = src;
	c.fd = fd;
	c.via = VIA_WRITE_FD;
	c.size = src->table.total_bytes;
	c.chunks = chunks;
	c.prog = prog;
	c.err = err;
	c.errlen = errlen;
	return run(&c, nthreads, 0);
}

int tc__hash_chunks_fd(int fd, uint64_t size, int nthreads,
		       struct tc__digest *chunks)
{
	struct load_ctx c = { 0 };

	c.fd = fd;
	c.via = VIA_READ_FD;
	c.size = size;
	c.chunks = chunks;
	return run(&c, nthreads, 0);
}

/* Time the first read of each page of a fresh shared mapping whose pages
 * exist (what hashing a put's bytes through the daemon's mapping pays). */
static void measure_faults(void)
{
	enum { PAGES = 512 };
	long pg = sysconf(_SC_PAGESIZE);
	size_t n = (size_t)PAGES * (size_t)pg;
	int fd = memfd_create("tcast-fault-probe", MFD_CLOEXEC);
	uint8_t *m = MAP_FAILED;
	volatile uint8_t sink = 0;
	uint64_t t0;

	/* The pages exist (as a put's do once written), unmapped. */
	if (fd < 0 || fallocate(fd, 0, 0, (off_t)n) < 0)
		goto out;
	m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto out;
	t0 = tc__now_ns();
	for (size_t i = 0; i < n; i += (size_t)pg)
		sink += m[i];
	fault_ns = (tc__now_ns() - t0) / PAGES;
	(void)sink;
out:
	if (m != MAP_FAILED)
		munmap(m, n);
	if (fd >= 0)
		close(fd);
}

uint64_t tc__page_fault_ns(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, measure_faults);
	return fault_ns;
}

bool tc__faults_dear(void)
{
	const char *e = getenv("TCAST_HASH_BY_FILE");

	if (e && (e[0] == '0' || e[0] == '1'))
		return e[0] == '1';
	return tc__page_fault_ns() > TC_DEAR_FAULT_NS;
}

int tc__hash_chunks_write(const void *p, uint64_t size, int nthreads,
			  struct tc__digest *chunks, struct tc__native_tmp *w,
			  int wthreads, int *wrc)
{
	struct load_ctx c = { 0 };
	int rc;

	c.dst = (uint8_t *)p;
	c.size = size;
	c.chunks = chunks;
	c.w = w;
	rc = run(&c, chunks ? nthreads : 0, wthreads);
	*wrc = atomic_load(&c.wrc);
	return rc;
}

/* ------------------------------------------------------------ range plans */

void tc__load_plan_release(struct tc__load_plan *p)
{
	tc__free(p->runs);
	memset(p, 0, sizeof(*p));
}

uint64_t tc__load_plan_first(const struct tc__load_plan *p, uint64_t pos)
{
	uint64_t lo = 0, hi = p->nruns;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct tc__load_run *r = &p->runs[mid];

		if (r->dst + r->len * r->count <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Read [a, b) of the byte space, inside run r, piece by piece (or at once
 * where the pieces are adjacent in the file). */
static int plan_read(const struct tc__source *src, const struct tc__load_run *r,
		     uint8_t *buf, uint64_t w0, uint64_t a, uint64_t b,
		     struct tc__reader *rd, char *err, size_t errlen)
{
	bool flat = r->count == 1 || r->stride == r->len;

	while (a < b) {
		uint64_t j = flat ? 0 : (a - r->dst) / r->len;
		uint64_t p0 = r->dst + j * r->len;
		uint64_t e = flat ? b : TC_MIN(b, p0 + r->len);
		uint64_t off = r->off + j * r->stride + (a - p0);
		int rc;

		rc = rd ? rd->read(rd, r->file, buf + (a - w0), e - a, off) :
			  tc__pread_exact(src->files[r->file].fd,
					  buf + (a - w0), e - a, off);
		if (!rd && rc == 0)
			tc__load_count(e - a, 1);
		if (rc < 0) {
			snprintf(err, errlen,
				 rc == TC_EBADFILE ?
					 "'%s' shrank while reading tensor "
					 "'%s'" :
					 "cannot read '%s' (tensor '%s'): %s",
				 src->files[r->file].name,
				 r->name ? r->name : "?", tc_strerror(rc));
			return rc;
		}
		a = e;
	}
	return 0;
}

int tc__load_plan_range(const struct tc__source *src,
			const struct tc__load_plan *p, uint8_t *buf,
			uint64_t w0, uint64_t w1, uint64_t *cursor,
			bool zero_gaps, struct tc__reader *rd, char *err,
			size_t errlen)
{
	uint64_t filled = w0; /* bytes before this are read or zeroed */

	for (uint64_t i = *cursor; i < p->nruns; i++) {
		const struct tc__load_run *r = &p->runs[i];
		uint64_t end = r->dst + r->len * r->count, a, b;
		int rc;

		if (r->dst >= w1)
			break;
		a = TC_MAX(r->dst, w0);
		b = TC_MIN(end, w1);
		if (a >= b)
			continue;
		if (zero_gaps && a > filled)
			memset(buf + (filled - w0), 0, a - filled);
		rc = plan_read(src, r, buf, w0, a, b, rd, err, errlen);
		if (rc < 0)
			return rc;
		filled = b;
		if (end <= w1)
			*cursor = i + 1;
	}
	if (zero_gaps && w1 > filled)
		memset(buf + (filled - w0), 0, w1 - filled);
	return 0;
}
