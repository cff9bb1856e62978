/*
 * gpu_loader.c - disk (or page cache) -> pinned staging ring -> GPU.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/io.h"
#include "common/log.h"
#include "gpu_loader.h"
#include "ioring.h"
#include "net/ev.h"
#include "tcast/errors.h"

#define MAX_THREADS	  64
#define MAX_DEPTH	  8
#define DIO_ALIGN_DEFAULT 4096
#define MAX_STAGE_CHUNKS  16
/* Threads of a host-memory copy.  H200 host, 16 GiB: from a mapping
 * already faulted in, 51.4 GB/s with 8 threads, 50.9 with 12, 49.9 with
 * 16; from one never read before (each page faults in), 44.5 with 8 and
 * 50.4 with 12.  (Reading the memfd with pread instead ran the same.) */
#define COPY_THREADS_MAX 12
/* Streams a copy from pinned pieces keeps busy. */
#define PINNED_STREAMS 4
/* io_uring reads in flight per loader thread. */
#define URING_DEPTH 8
/* Read and hash this much at a time, so the hash reads from L2. */
#define WINDOW_BYTES ((uint64_t)1 << 20)
/* Pinned staging buffers kept between loads and fills: each registration
 * is a driver call under a process-wide lock, and a load's 32 buffers
 * (16 threads x 2) cost that at its start and again at its end.  128 MiB
 * at the default 4 MiB unit. */
#define STAGE_POOL_MAX 32

/* Reads shorter than this from a mapped page-cached file are copies from
 * the mapping, whatever the engine (auto too): a column shard reads one
 * short piece per row, and a pread each (a syscall, the page-cache walk)
 * held a 1/8 column shard of an 8 GiB file at 8.2 GB/s on an H200 host,
 * 0.22 of its row shard's rate.  Their pages fault in (the kernel maps
 * 64 KiB around each fault) instead of being populated first. */
#define MREAD_SMALL ((uint64_t)64 << 10)

/* A source file as the reader threads see it. */
struct lfile {
	int dfd;	/* O_DIRECT descriptor, or -1: use the source's fd */
	uint64_t align; /* direct I/O offset and length alignment */
	const uint8_t *map; /* auto, mmap: the page-cached file, read-only */
	uint64_t map_len;
};

struct gload {
	const struct tc__source *src;	  /* files to read, or NULL ... */
	const struct tc__load_plan *plan; /* src's runs to read, or NULL:
					     every tensor of src->table */
	const uint8_t *host_src; /* ... host memory to copy (no hash) */
	const struct tc__gpu_mem *dst;
	const struct tc__gpu_load_opts *o;
	struct tc__digest *chunks;
	struct tc__load_progress *prog;
	struct lfile *files; /* owned, src->nfiles */
	uint64_t size;
	uint64_t nchunks;
	uint64_t unit; /* bytes per staging buffer: stage digest chunks */
	uint64_t nunits;
	_Atomic uint64_t next;
	_Atomic uint64_t direct_bytes;
	_Atomic uint64_t uring_bytes;
	_Atomic uint64_t tee_bytes;
	_Atomic uint64_t read_bytes; /* asked of the files, alignment in */
	_Atomic uint64_t reads;
	bool any_direct; /* some file is read with O_DIRECT */
	bool gpu_hash;	 /* chunks hashed on the GPU, not by the readers */
	/* The GPU hashes each unit behind its copy, on the copy's stream:
	 * digests at hash.dptr, then one scratch area per worker. */
	bool hash_async;
	struct tc__gpu_mem hash;
	uint64_t hash_scratch; /* bytes per worker, after the digests */
	_Atomic int hash_fail; /* a launch failed: hash it all afterwards */
	_Atomic int nworker;   /* workers started so far: each one's index */
	_Atomic int uring_errno;
	_Atomic int stop;
	/* The timeline (tc__gpu_load_stats), in ns since t0_ns. */
	uint64_t t0_ns;
	_Atomic uint64_t first_copy_ns; /* UINT64_MAX until one */
	_Atomic uint64_t last_done_ns;
	_Atomic uint64_t read_ns, wait_ns;
	pthread_mutex_t lock; /* guards rc and err */
	int rc;
	char *err;
	size_t errlen;
};

/* One staging buffer: pinned host memory and the event of its last copy. */
struct slot {
	uint8_t *p;
	struct tc__gpu_event *ev;
	bool busy; /* a copy from it may still run */
};

/* Per-thread reader: the tc__reader interface plus a bounce buffer for
 * O_DIRECT pieces that are not aligned. */
struct treader {
	struct tc__reader base;
	struct gload *g;
	uint8_t *bounce;
	uint64_t bounce_len;
	/* Reads and bytes asked of the files, added to g's once at the end
	 * (a column shard makes one read per row: no atomic for each). */
	uint64_t nreads, nbytes;
};

static void gfail(struct gload *g, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void gfail(struct gload *g, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->lock);
	if (g->rc == 0) {
		g->rc = rc;
		va_start(ap, fmt);
		vsnprintf(g->err, g->errlen, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g->lock);
	atomic_store(&g->stop, 1);
}

/* Read len bytes at off of file `file`: buffered, or O_DIRECT through the
 * bounce buffer in aligned pieces (the file's tail may end mid-block). */
static int tread(struct tc__reader *r, uint32_t file, uint8_t *dst,
		 uint64_t len, uint64_t off)
{
	struct treader *t = (struct treader *)r;
	struct lfile *lf = &t->g->files[file];
	size_t got;
	int rc;

	t->nreads++;
	if (lf->dfd < 0) {
		t->nbytes += len;
		return tc__pread_exact(t->g->src->files[file].fd, dst,
				       (size_t)len, off);
	}
	while (len > 0) {
		uint64_t a0 = off & ~(lf->align - 1);
		uint64_t want = TC_ALIGN_UP(off + len, lf->align) - a0;
		uint64_t skip = off - a0, take;

		want = TC_MIN(want, t->bounce_len);
		rc = tc__pread_full(lf->dfd, t->bounce, (size_t)want, a0, &got);
		if (rc < 0)
			return rc;
		t->nbytes += got;
		if (got <= skip)
			return TC_EBADFILE;
		take = TC_MIN(got - skip, len);
		memcpy(dst, t->bounce + skip, take);
		dst += take;
		off += take;
		len -= take;
		atomic_fetch_add(&t->g->direct_bytes, take);
		if (len && got < want)
			return TC_EBADFILE;
	}
	return 0;
}

/*
 * The mmap engine copies page-cached bytes from a shared mapping of the
 * file: one user-space copy with the page tables filled a range at a time
 * (MADV_POPULATE_READ), instead of pread's per-page work in the kernel.
 * A file truncated under the mapping makes the copy fault with SIGBUS;
 * the handler sends the thread back to its read, which says the file
 * shrank, as pread's short read does.  Faults that are not a loader
 * copy's go to whatever handled SIGBUS before.
 */
/* volatile: the compiler knows memcpy does not read it, and would drop
 * the store before the copy as dead. */
static __thread sigjmp_buf *volatile tl_bus;
static struct sigaction bus_prev;
static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (tl_bus)
		siglongjmp(*tl_bus, 1);
	if ((bus_prev.sa_flags & SA_SIGINFO) && bus_prev.sa_sigaction) {
		bus_prev.sa_sigaction(sig, si, uc);
	} else if (bus_prev.sa_handler != SIG_IGN &&
		   bus_prev.sa_handler != SIG_DFL) {
		bus_prev.sa_handler(sig);
	} else {
		/* The default action: on return the access faults again. */
		signal(SIGBUS, SIG_DFL);
	}
}

/* At every mapped load, not once: whoever set another handler since (a
 * test framework does for each test) is chained to, not lost. */
static void sigbus_install(void)
{
	struct sigaction sa, old;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	pthread_mutex_lock(&bus_lock);
	if (sigaction(SIGBUS, &sa, &old) == 0 &&
	    !((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_sigbus))
		bus_prev = old;
	pthread_mutex_unlock(&bus_lock);
}

static int mread(struct tc__reader *r, uint32_t file, uint8_t *dst,
		 uint64_t len, uint64_t off)
{
	struct treader *t = (struct treader *)r;
	struct lfile *lf = &t->g->files[file];
	bool small = len < MREAD_SMALL;
	sigjmp_buf jb;
	uint64_t a0;

	if (!lf->map || (!small && t->g->o->io != TC_IO_MMAP))
		return tread(r, file, dst, len, off);
	if (off > lf->map_len || len > lf->map_len - off)
		return TC_EBADFILE;
	a0 = off & ~(uint64_t)4095;
	/* EFAULT: part of the range is past the file's end now.  The
	 * failpoint leaves the truncation to the copy (SIGBUS), for tests. */
	if (!small &&
	    !tc__failpoint("loader_no_populate", t->g->src->files[file].name) &&
	    tc__populate((void *)(uintptr_t)(lf->map + a0), off + len - a0,
			 0) == -EFAULT)
		return TC_EBADFILE;
	t->nreads++;
	t->nbytes += len;
	if (sigsetjmp(jb, 1)) {
		tl_bus = NULL;
		return TC_EBADFILE;
	}
	tl_bus = &jb;
	memcpy(dst, lf->map + off, len);
	tl_bus = NULL;
	return 0;
}

/* The tc__reader that queues reads on a thread's io_uring instead of
 * making them: tc__load_range plans, the ring reads. */
struct qreader {
	struct tc__reader base;
	struct gload *g;
	struct tc__ioring *ur;
	unsigned tag;		 /* window of the unit being planned */
	uint64_t nreads, nbytes; /* as struct treader's */
};

static int qread(struct tc__reader *r, uint32_t file, uint8_t *dst,
		 uint64_t len, uint64_t off)
{
	struct qreader *q = (struct qreader *)r;
	struct lfile *lf = &q->g->files[file];
	bool direct = lf->dfd >= 0;

	q->nreads++;
	/* O_DIRECT reads the aligned blocks around the range. */
	q->nbytes += direct ? TC_ALIGN_UP(off + len, lf->align) -
				      (off & ~(lf->align - 1)) :
			      len;
	/* From the page cache io_uring only copies too, later: pread here
	 * keeps the window in cache for its hash (it ran ~10% faster). */
	if (!direct && q->g->o->io != TC_IO_URING)
		return tc__pread_exact(q->g->src->files[file].fd, dst,
				       (size_t)len, off);
	if (direct)
		atomic_fetch_add(&q->g->direct_bytes, len);
	atomic_fetch_add(&q->g->uring_bytes, len);
	return tc__ioring_read(q->ur,
			       direct ? lf->dfd : q->g->src->files[file].fd,
			       direct ? (uint32_t)lf->align : 0, dst, len, off,
			       q->tag, file);
}

/* Name the file and tensor of the ring's first failed read, whose
 * destination was at `at` in the unit starting at byte u0 (buffer p). */
static void uring_error(struct gload *g, struct tc__ioring *ur, int rc,
			uint8_t *p, uint64_t u0, char *err, size_t errlen)
{
	const struct tc__table *t = &g->src->table;
	const char *name = "?";
	uint32_t file, i;
	uint8_t *at;
	uint64_t pos;

	tc__ioring_failure(ur, &file, &at);
	pos = u0 + (uint64_t)(at - p);
	if (g->plan) {
		uint64_t r = tc__load_plan_first(g->plan, pos);

		if (r < g->plan->nruns && g->plan->runs[r].name)
			name = g->plan->runs[r].name;
	} else {
		i = tc__load_first_tensor(t, pos);
		if (i < t->ntensors)
			name = t->tensors[i].name;
	}
	snprintf(err, errlen,
		 rc == TC_EBADFILE ? "'%s' shrank while reading tensor '%s'" :
				     "cannot read '%s' (tensor '%s'): %s",
		 g->src->files[file].name, name, tc_strerror(rc));
}

/* Makes window [w, we) of a unit (at p) readable: reads it, or waits for
 * the ring's reads of it.  Returns 0 or an error with `err`. */
typedef int window_fn(void *ctx, uint8_t *p, uint64_t w, uint64_t we, char *err,
		      size_t errlen);

/* Hash unit [u0, u1) at p digest chunk by digest chunk, window by window,
 * each window as soon as `ready` has it in, while it is still in cache. */
static int hash_unit(struct gload *g, uint8_t *p, uint64_t u0, uint64_t u1,
		     struct tc__hasher *h, window_fn *ready, void *ctx,
		     char *err, size_t errlen)
{
	for (uint64_t c0 = u0; c0 < u1; c0 += TC_CHUNK_BYTES) {
		uint64_t c1 = TC_MIN(c0 + TC_CHUNK_BYTES, u1);

		tc__hasher_reset(h);
		for (uint64_t w = c0; w < c1; w += WINDOW_BYTES) {
			uint64_t we = TC_MIN(w + WINDOW_BYTES, c1);
			int rc = ready(ctx, p + (w - u0), w, we, err, errlen);

			if (rc < 0)
				return rc;
			if (!g->gpu_hash)
				tc__hasher_update(h, p + (w - u0),
						  (size_t)(we - w));
		}
		if (!g->gpu_hash)
			tc__hasher_final(h, &g->chunks[c0 / TC_CHUNK_BYTES]);
	}
	return 0;
}

/* Where the reads of byte space [w, we) start: a tensor of the table, or
 * a run of the plan. */
static uint64_t first_at(const struct gload *g, uint64_t w)
{
	return g->plan ? tc__load_plan_first(g->plan, w) :
			 tc__load_first_tensor(&g->src->table, w);
}

/* Read (or queue, by rd) byte space [w, we) into p: the table's tensors or
 * the plan's runs, gaps zeroed. */
static int fill_range(struct gload *g, uint8_t *p, uint64_t w, uint64_t we,
		      uint64_t *cursor, struct tc__reader *rd, char *err,
		      size_t errlen)
{
	uint32_t c32;
	int rc;

	if (g->plan)
		return tc__load_plan_range(g->src, g->plan, p, w, we, cursor,
					   true, rd, err, errlen);
	c32 = (uint32_t)*cursor;
	rc = tc__load_range(g->src, p, w, we, &c32, true, rd, err, errlen);
	*cursor = c32;
	return rc;
}

/* pread engine: read the window now. */
struct pread_ctx {
	struct gload *g;
	struct tc__reader *rd;
	uint64_t cursor;
};

static int pread_window(void *ctx, uint8_t *p, uint64_t w, uint64_t we,
			char *err, size_t errlen)
{
	struct pread_ctx *c = ctx;

	return fill_range(c->g, p, w, we, &c->cursor, c->rd, err, errlen);
}

/* io_uring engine: the window's reads were queued; wait for them. */
struct uring_ctx {
	struct tc__ioring *ur;
	uint64_t u0;
};

static int uring_window(void *ctx, uint8_t *p, uint64_t w, uint64_t we,
			char *err, size_t errlen)
{
	struct uring_ctx *c = ctx;

	(void)p, (void)we, (void)err, (void)errlen;
	return tc__ioring_wait(c->ur, (unsigned)((w - c->u0) / WINDOW_BYTES));
}

/*
 * Fill unit [u0, u1) into p through the ring and hash it: every read of
 * the unit is queued first, then each window is hashed as soon as its
 * reads are in, while later windows are still being read.
 */
static int uring_unit(struct gload *g, struct tc__ioring *ur, uint8_t *p,
		      uint64_t u0, uint64_t u1, struct tc__hasher *h, char *err,
		      size_t errlen)
{
	struct qreader qr = { { qread }, g, ur, 0, 0, 0 };
	struct uring_ctx uc = { ur, u0 };
	uint64_t cursor = first_at(g, u0);
	int rc = 0, drc;

	for (uint64_t w = u0; w < u1 && rc == 0; w += WINDOW_BYTES) {
		qr.tag = (unsigned)((w - u0) / WINDOW_BYTES);
		rc = fill_range(g, p + (w - u0), w,
				TC_MIN(w + WINDOW_BYTES, u1), &cursor, &qr.base,
				err, errlen);
	}
	atomic_fetch_add(&g->reads, qr.nreads);
	atomic_fetch_add(&g->read_bytes, qr.nbytes);
	tc__load_count(qr.nbytes, qr.nreads);
	if (rc == 0)
		rc = hash_unit(g, p, u0, u1, h, uring_window, &uc, err, errlen);
	if (rc == 0)
		return 0;
	/* Nothing may still be landing in p when the caller reuses it. */
	drc = tc__ioring_wait(ur, TC_IORING_ALL);
	if (drc < 0) {
		uring_error(g, ur, drc, p, u0, err, errlen);
		return drc;
	}
	return rc;
}

/* The pool: n idle buffers, each registered by device `dev`'s context and
 * handed out again only for that device (so its unregistration runs there
 * too). */
static struct {
	pthread_mutex_t mu;
	int n;
	struct {
		void *p;
		uint64_t len;
		int dev; /* whose context registered it */
	} buf[STAGE_POOL_MAX];
} stage_pool = { PTHREAD_MUTEX_INITIALIZER, 0, { { NULL, 0, 0 } } };

/* A pinned staging buffer of `len` bytes: from the pool, or anonymous
 * pages touched now, then registered (far faster than allocating pinned
 * memory through the driver).  Returns 0 or an error with `err`. */
static int stage_get(int dev, uint64_t len, void **out, char *err,
		     size_t errlen)
{
	void *p = NULL;
	int rc;

	pthread_mutex_lock(&stage_pool.mu);
	for (int i = stage_pool.n - 1; i >= 0 && !p; i--)
		if (stage_pool.buf[i].len == len &&
		    stage_pool.buf[i].dev == dev) {
			p = stage_pool.buf[i].p;
			stage_pool.buf[i] = stage_pool.buf[--stage_pool.n];
		}
	pthread_mutex_unlock(&stage_pool.mu);
	if (p) {
		*out = p;
		return 0;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "cannot allocate staging memory: %s",
			 strerror(-rc));
		return rc;
	}
	/* Huge pages where the kernel allows: fewer TLB misses for the copies
	 * in and fewer pages for the driver to pin. */
	madvise(p, len, MADV_HUGEPAGE);
	memset(p, 0, len);
	rc = tc__gpu_host_register(dev, p, len, 0, err, errlen);
	if (rc < 0) {
		munmap(p, len);
		return rc;
	}
	*out = p;
	return 0;
}

static void stage_free(int dev, void *p, uint64_t len)
{
	char err[256];

	if (tc__gpu_host_unregister(dev, p, err, sizeof(err)) < 0)
		tc__log(TC_LOG_WARN, "%s", err);
	munmap(p, len);
}

/* Give a buffer of stage_get back; it is pooled when `idle` (no copy can
 * still read it) and the pool has room, else unpinned and unmapped. */
static void stage_put(int dev, void *p, uint64_t len, bool idle)
{
	pthread_mutex_lock(&stage_pool.mu);
	if (idle && stage_pool.n < STAGE_POOL_MAX) {
		stage_pool.buf[stage_pool.n].p = p;
		stage_pool.buf[stage_pool.n].len = len;
		stage_pool.buf[stage_pool.n++].dev = dev;
		p = NULL;
	}
	pthread_mutex_unlock(&stage_pool.mu);
	if (p)
		stage_free(dev, p, len);
}

void tc__gpu_stage_pool_drain(void)
{
	pthread_mutex_lock(&stage_pool.mu);
	while (stage_pool.n) {
		stage_pool.n--;
		stage_free(stage_pool.buf[stage_pool.n].dev,
			   stage_pool.buf[stage_pool.n].p,
			   stage_pool.buf[stage_pool.n].len);
	}
	pthread_mutex_unlock(&stage_pool.mu);
}

/* Queue the digests of unit [u0, u1) behind its copy on s.  A failure
 * only means the whole space is hashed again once the load is in. */
static void queue_hash(struct gload *g, int wid, uint64_t u0, uint64_t u1,
		       struct tc__gpu_stream *s)
{
	uint64_t scratch = g->hash.dptr +
			   TC_ALIGN_UP(g->nchunks * TC_DIGEST_BYTES, 256) +
			   (uint64_t)wid * g->hash_scratch;
	char err[256];

	if (tc__gpu_hash_chunks_async(
		    g->dst->device, g->dst->dptr, g->size, u0 / TC_CHUNK_BYTES,
		    (u1 - u0 + TC_CHUNK_BYTES - 1) / TC_CHUNK_BYTES, scratch,
		    g->hash.dptr, s, err, sizeof(err)) < 0)
		atomic_store(&g->hash_fail, 1);
}

static void atomic_min_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v < cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static void atomic_max_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (v > cur && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static void *worker(void *arg)
{
	struct gload *g = arg;
	int dev = g->dst->device,
	    depth = TC_MAX(1, TC_MIN(g->o->depth, MAX_DEPTH));
	struct slot slots[MAX_DEPTH] = { 0 };
	struct treader rd = {
		{ g->o->io != TC_IO_PREAD ? mread : tread }, g, NULL, 0, 0, 0
	};
	struct pread_ctx pc = { g, &rd.base, 0 };
	struct tc__gpu_stream *s = NULL;
	struct tc__hasher *h = tc__hasher_new();
	struct tc__ioring *ur = NULL;
	char err[512];
	uint64_t k, t = 0, t1, read_ns = 0, wait_ns = 0;
	int rc, nslots = 0, i = 0, wid = atomic_fetch_add(&g->nworker, 1);
	bool synced = true;

	if (!h) {
		gfail(g, -ENOMEM, "out of memory");
		return NULL;
	}
	if (g->src && (g->o->io == TC_IO_URING ||
		       (g->o->io != TC_IO_PREAD && g->any_direct))) {
		rc = tc__ioring_new(URING_DEPTH,
				    (unsigned)(g->unit / WINDOW_BYTES) + 1,
				    &ur);
		if (rc < 0) {
			atomic_store(&g->uring_errno, -rc);
			if (g->o->io == TC_IO_URING) {
				gfail(g, rc, "io_uring is not available: %s",
				      strerror(-rc));
				goto out;
			}
		}
	}
	rc = tc__gpu_stream_create(dev, &s, err, sizeof(err));
	if (rc < 0) {
		gfail(g, rc, "%s", err);
		goto out;
	}
	for (; nslots < depth; nslots++) {
		void *p = NULL;

		rc = stage_get(dev, g->unit, &p, err, sizeof(err));
		slots[nslots].p = p;
		if (rc == 0)
			rc = tc__gpu_event_create(dev, 0, &slots[nslots].ev,
						  err, sizeof(err));
		if (rc < 0) {
			gfail(g, rc, "%s", err);
			nslots++;
			goto out;
		}
	}
	rd.bounce_len = WINDOW_BYTES + 2 * 65536;
	rd.bounce = mmap(NULL, rd.bounce_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rd.bounce == MAP_FAILED) {
		rd.bounce = NULL;
		gfail(g, -ENOMEM, "cannot allocate a bounce buffer");
		goto out;
	}
	while (!atomic_load(&g->stop) &&
	       (k = atomic_fetch_add(&g->next, 1)) < g->nunits) {
		struct slot *sl = &slots[i++ % nslots];
		uint64_t u0 = k * g->unit, u1 = TC_MIN(u0 + g->unit, g->size);

		if (g->prog && atomic_load(&g->prog->cancel)) {
			gfail(g, -ECANCELED, "load cancelled");
			break;
		}
		if (sl->busy) {
			t = tc__now_ns();
			rc = tc__gpu_event_sync(sl->ev, err, sizeof(err));
			wait_ns += tc__now_ns() - t;
			if (rc < 0) {
				gfail(g, rc, "%s", err);
				break;
			}
			sl->busy = false;
		}
		t = tc__now_ns();
		if (g->host_src) {
			/* Host memory that is not pinned: one memcpy into
			 * pinned staging, then DMA (already hashed).  Plain
			 * stores: streaming ones ran slower (42 vs 48.8 GB/s
			 * on an H200 host), the DMA reading staging lines
			 * from cache rather than DRAM. */
			memcpy(sl->p, g->host_src + u0, u1 - u0);
			goto copy;
		}
		if (ur) {
			rc = uring_unit(g, ur, sl->p, u0, u1, h, err,
					sizeof(err));
			if (rc < 0)
				goto out_fail;
			goto copy;
		}
		pc.cursor = first_at(g, u0);
		rc = hash_unit(g, sl->p, u0, u1, h, pread_window, &pc, err,
			       sizeof(err));
		if (rc < 0)
			goto out_fail;
copy:
		t1 = tc__now_ns();
		read_ns += t1 - t;
		atomic_min_u64(&g->first_copy_ns, t1 - g->t0_ns);
		rc = tc__gpu_htod(dev, g->dst->dptr + u0, sl->p, u1 - u0, s,
				  err, sizeof(err));
		if (rc == 0)
			rc = tc__gpu_event_record(sl->ev, s, err, sizeof(err));
		if (rc < 0)
			goto out_fail;
		sl->busy = true;
		if (g->hash_async && !atomic_load(&g->hash_fail))
			queue_hash(g, wid, u0, u1, s);
		if (g->o->tee && !g->host_src) {
			/* The disk copy from the same read, written while the
			 * DMA reads the same buffer. */
			rc = tc__native_write_data(g->o->tee, sl->p, u0,
						   u1 - u0);
			if (rc < 0) {
				snprintf(err, sizeof(err),
					 "cannot write the shared-disk copy "
					 "('%s', byte %llu): %s",
					 g->o->tee->name,
					 (unsigned long long)u0, strerror(-rc));
				goto out_fail;
			}
			atomic_fetch_add(&g->tee_bytes, u1 - u0);
		}
		if (g->prog)
			atomic_fetch_add(&g->prog->done_bytes, u1 - u0);
	}
	goto out;
out_fail:
	gfail(g, rc, "%s", err);
out:
	/* No buffer may be unpinned or unmapped while a read fills it or a
	 * copy reads it. */
	tc__ioring_free(ur);
	if (s && tc__gpu_stream_sync(s, err, sizeof(err)) < 0) {
		gfail(g, TC_ECUDA, "%s", err);
		synced = false;
	}
	atomic_max_u64(&g->last_done_ns, tc__now_ns() - g->t0_ns);
	atomic_fetch_add(&g->read_ns, read_ns);
	atomic_fetch_add(&g->wait_ns, wait_ns);
	for (int j = 0; j < nslots; j++) {
		if (slots[j].ev)
			tc__gpu_event_free(slots[j].ev);
		if (slots[j].p)
			stage_put(dev, slots[j].p, g->unit, synced);
	}
	if (rd.bounce)
		munmap(rd.bounce, rd.bounce_len);
	atomic_fetch_add(&g->reads, rd.nreads);
	atomic_fetch_add(&g->read_bytes, rd.nbytes);
	tc__load_count(rd.nbytes, rd.nreads);
	tc__gpu_stream_free(s);
	tc__hasher_free(h);
	return NULL;
}

/* Whether any sampled page of the file is in the page cache.  The samples
 * are the middles of 16 equal parts, never page 0: parsing the header read
 * it (and its read-ahead), so a cold file would look cached and be read
 * through the page cache. */
static bool file_cached(int fd, uint64_t size)
{
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char v[1];
	bool cached = false;
	void *p;

	if (size == 0)
		return true;
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return true;
	for (int i = 0; i < 16 && !cached; i++) {
		uint64_t off = (size / 16 * (uint64_t)i + size / 32) /
			       (uint64_t)pg * (uint64_t)pg;

		if (mincore((uint8_t *)p + off, 1, v) == 0 && (v[0] & 1))
			cached = true;
	}
	munmap(p, size);
	return cached;
}

static void map_file(struct lfile *lf, const struct tc__source_file *f)
{
	void *p = mmap(NULL, f->size, PROT_READ, MAP_SHARED, f->fd, 0);

	if (p == MAP_FAILED)
		return; /* read with pread */
	sigbus_install();
	lf->map = p;
	lf->map_len = f->size;
}

/* The same for the bytes a range plan reads of file `file`: the first
 * page of up to 16 of its runs, spread over the plan (a view's pages may
 * be cached while the rest of the file is not, or the reverse). */
static bool plan_cached(const struct gload *g, uint32_t file, int fd,
			uint64_t size)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t n = g->plan->nruns, step = n / 16 ? n / 16 : 1;
	unsigned char v[1];
	bool cached = false, any = false;
	void *p;

	if (size == 0 || n == 0)
		return true;
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return true;
	for (uint64_t r = 0; r < n && !cached; r += step) {
		const struct tc__load_run *x = &g->plan->runs[r];
		uint64_t off = x->off / (uint64_t)pg * (uint64_t)pg;

		if (x->file != file || off >= size)
			continue;
		any = true;
		if (mincore((uint8_t *)p + off, 1, v) == 0 && (v[0] & 1))
			cached = true;
	}
	munmap(p, size);
	return cached || !any;
}

static void open_direct(struct gload *g)
{
	for (uint32_t i = 0; i < g->src->nfiles; i++) {
		const struct tc__source_file *f = &g->src->files[i];
		struct lfile *lf = &g->files[i];
		char path[64];
		struct statx sx;

		lf->dfd = -1;
		lf->align = DIO_ALIGN_DEFAULT;
		if (g->o->direct == 0 ||
		    (g->o->direct < 0 &&
		     (g->plan ? plan_cached(g, i, f->fd, f->size) :
				file_cached(f->fd, f->size)))) {
			if ((g->o->io == TC_IO_AUTO ||
			     g->o->io == TC_IO_MMAP) &&
			    f->size)
				map_file(lf, f);
			continue;
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", f->fd);
		lf->dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
		g->any_direct |= lf->dfd >= 0;
		if (lf->dfd < 0) {
			/* No O_DIRECT here (tmpfs, some overlays): buffered
			 * reads with read-ahead are the next best thing. */
			posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
			continue;
		}
#ifdef STATX_DIOALIGN
		if (statx(lf->dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) ==
			    0 &&
		    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align &&
		    sx.stx_dio_offset_align <= 65536)
			lf->align = TC_MAX((uint64_t)sx.stx_dio_offset_align,
					   (uint64_t)sx.stx_dio_mem_align);
#else
		(void)sx;
#endif
	}
}

/* Run g's units on up to `nthreads` threads, this one included.  Threads
 * beyond the first are an optimisation: when one cannot be created the
 * others still finish the work. */
static int nworkers(const struct gload *g, int nthreads)
{
	return (int)TC_MIN(TC_MIN((uint64_t)TC_MAX(nthreads, 1), g->nunits),
			   (uint64_t)MAX_THREADS);
}

/* fn(arg) on n threads (at most MAX_THREADS): n - 1 new ones, and this
 * one when `here`; then joined.  A thread that cannot be created only
 * means fewer: the others, at least this one, do its share. */
static void run_threads(void *(*fn)(void *), void *arg, int n, bool here)
{
	pthread_t tids[MAX_THREADS];
	int started = 0;

	for (int i = 1; i < TC_MIN(n, MAX_THREADS); i++)
		if (pthread_create(&tids[started], NULL, fn, arg) == 0)
			started++;
	if (here)
		fn(arg);
	for (int i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
}

static void run_workers(struct gload *g, int nthreads)
{
	run_threads(worker, g, nworkers(g, nthreads), g->nunits > 0);
}

static int load(const struct tc__source *src, const struct tc__load_plan *plan,
		const struct tc__gpu_mem *dst,
		const struct tc__gpu_load_opts *o, struct tc__digest *chunks,
		struct tc__load_progress *prog,
		struct tc__gpu_load_stats *stats, char *err, size_t errlen)
{
	struct gload g = { 0 };
	struct timespec t0, t1;
	uint64_t size = plan ? plan->size : src->table.total_bytes;
	bool rehash;

	if (dst->size < size) {
		snprintf(err, errlen,
			 "GPU allocation of %llu bytes is smaller "
			 "than the %s (%llu bytes)",
			 (unsigned long long)dst->size,
			 plan ? "range plan" : "artifact",
			 (unsigned long long)size);
		return TC_EINVAL;
	}
	for (uint64_t r = 0; plan && r < plan->nruns; r++) {
		const struct tc__load_run *x = &plan->runs[r];
		uint64_t end;

		if (x->file >= src->nfiles || !x->len || !x->count ||
		    __builtin_mul_overflow(x->len, x->count, &end) ||
		    __builtin_add_overflow(end, x->dst, &end) || end > size ||
		    (r && x->dst < plan->runs[r - 1].dst +
					   plan->runs[r - 1].len *
						   plan->runs[r - 1].count)) {
			snprintf(err, errlen,
				 "range plan: run %llu (tensor '%s') is "
				 "empty, overlaps the one before, ends past "
				 "the plan or names no file",
				 (unsigned long long)r,
				 x->name ? x->name : "?");
			return TC_EINVAL;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	g.t0_ns = tc__now_ns();
	g.first_copy_ns = UINT64_MAX;
	g.src = src;
	g.plan = plan;
	g.dst = dst;
	g.o = o;
	g.chunks = chunks;
	g.prog = prog;
	tc__gpu_mem_init(&g.hash);
	g.size = size;
	g.nchunks = tc__chunk_count(g.size);
	g.unit = TC_CHUNK_BYTES *
		 (uint64_t)(o->stage_chunks > 0 ?
				    TC_MIN(o->stage_chunks, MAX_STAGE_CHUNKS) :
				    1);
	g.nunits = g.size / g.unit + (g.size % g.unit != 0);
	g.err = err;
	g.errlen = errlen;
	pthread_mutex_init(&g.lock, NULL);
	g.files = tc__calloc(src->nfiles ? src->nfiles : 1, sizeof(*g.files));
	if (!g.files)
		return -ENOMEM;
	/* Where the chunk-hash kernels run, the CPU only reads and copies
	 * (BLAKE3 on the host held the loader to ~70% of the pinned copy
	 * rate on an H200 host) and the GPU hashes each unit behind its
	 * copy, while the next ones cross the bus (hashing after the last
	 * copy added 12 ms to 8 GiB loaded in 184 ms on an H200). */
	g.gpu_hash = !getenv("TCAST_GPU_HASH_HOST") &&
		     tc__gpu_hash_ready(dst->device, err, errlen) == 0;
	if (g.gpu_hash && g.nunits) {
		g.hash_scratch = TC_ALIGN_UP(
			tc__gpu_hash_scratch_bytes(g.unit / TC_CHUNK_BYTES),
			256);
		g.hash_async =
			tc__gpu_alloc(
				dst->device,
				TC_ALIGN_UP(g.nchunks * TC_DIGEST_BYTES, 256) +
					(uint64_t)nworkers(&g, o->nthreads) *
						g.hash_scratch,
				0, &g.hash, err, errlen) == 0;
	}
	open_direct(&g);
	run_workers(&g, o->nthreads);
	for (uint32_t i = 0; i < src->nfiles; i++) {
		if (g.files[i].dfd >= 0)
			close(g.files[i].dfd);
		if (g.files[i].map)
			munmap((void *)(uintptr_t)g.files[i].map,
			       g.files[i].map_len);
	}
	tc__free(g.files);
	pthread_mutex_destroy(&g.lock);
	/* Every worker synchronised its stream: the digests are in, or
	 * (a launch failed) the whole space is hashed now. */
	rehash = g.gpu_hash;
	if (g.rc == 0 && g.hash_async && !atomic_load(&g.hash_fail) &&
	    tc__gpu_dtoh(dst->device, chunks, g.hash.dptr,
			 g.nchunks * TC_DIGEST_BYTES, NULL, err, errlen) == 0)
		rehash = false;
	tc__gpu_release(&g.hash);
	if (g.rc == 0 && rehash)
		g.rc = tc__gpu_hash_chunks(dst, g.size, o->nthreads, chunks,
					   err, errlen);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (stats) {
		stats->bytes = g.rc ? 0 : g.size;
		stats->direct_bytes = atomic_load(&g.direct_bytes);
		stats->uring_bytes = atomic_load(&g.uring_bytes);
		stats->uring_errno = atomic_load(&g.uring_errno);
		stats->tee_bytes = atomic_load(&g.tee_bytes);
		stats->read_bytes = atomic_load(&g.read_bytes);
		stats->reads = atomic_load(&g.reads);
		stats->gpu_hash = g.gpu_hash;
		stats->seconds = (double)(t1.tv_sec - t0.tv_sec) +
				 (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		stats->first_copy_seconds =
			g.first_copy_ns == UINT64_MAX ?
				0.0 :
				(double)g.first_copy_ns / 1e9;
		stats->read_thread_seconds = (double)g.read_ns / 1e9;
		stats->wait_thread_seconds = (double)g.wait_ns / 1e9;
		stats->tail_seconds =
			stats->seconds - (double)g.last_done_ns / 1e9;
	}
	return g.rc;
}

int tc__gpu_load_source(const struct tc__source *src,
			const struct tc__gpu_mem *dst,
			const struct tc__gpu_load_opts *o,
			struct tc__digest *chunks,
			struct tc__load_progress *prog,
			struct tc__gpu_load_stats *stats, char *err,
			size_t errlen)
{
	return load(src, NULL, dst, o, chunks, prog, stats, err, errlen);
}

int tc__gpu_load_plan(const struct tc__source *src,
		      const struct tc__load_plan *plan,
		      const struct tc__gpu_mem *dst,
		      const struct tc__gpu_load_opts *o,
		      struct tc__digest *chunks, struct tc__load_progress *prog,
		      struct tc__gpu_load_stats *stats, char *err,
		      size_t errlen)
{
	return load(src, plan, dst, o, chunks, prog, stats, err, errlen);
}

int tc__gpu_copy_host_opts(const void *src, uint64_t n,
			   const struct tc__gpu_mem *dst,
			   const struct tc__gpu_load_opts *o, char *err,
			   size_t errlen)
{
	struct gload g = { 0 };

	if (dst->size < n) {
		snprintf(
			err, errlen,
			"GPU allocation of %llu bytes is smaller than the %llu "
			"bytes to copy",
			(unsigned long long)dst->size, (unsigned long long)n);
		return TC_EINVAL;
	}
	g.host_src = src;
	g.dst = dst;
	g.o = o;
	g.size = n;
	g.unit = o->copy_unit ? TC_ALIGN_UP(o->copy_unit, 4096) :
				TC_CHUNK_BYTES;
	g.nunits = n / g.unit + (n % g.unit != 0);
	g.err = err;
	g.errlen = errlen;
	pthread_mutex_init(&g.lock, NULL);
	run_workers(&g, o->nthreads);
	pthread_mutex_destroy(&g.lock);
	return g.rc;
}

int tc__gpu_copy_host(const void *src, uint64_t n,
		      const struct tc__gpu_mem *dst, int nthreads, char *err,
		      size_t errlen)
{
	struct tc__gpu_load_opts o = { 0 };

	/* One thread per 512 MiB, at least 2: setting up a thread's stream
	 * and staging costs ~1 ms, which small copies (swaps of a few MiB)
	 * must not pay sixteen times over.  At most COPY_THREADS_MAX: more
	 * threads only contend for memory bandwidth. */
	o.nthreads = (int)TC_MIN((uint64_t)TC_MAX(nthreads, 1),
				 TC_MAX(n >> 29, (uint64_t)2));
	o.nthreads = TC_MIN(o.nthreads, COPY_THREADS_MAX);
	o.depth = 2;
	o.stage_chunks = 1;
	return tc__gpu_copy_host_opts(src, n, dst, &o, err, errlen);
}

/* ------------------------------------------------------- pinned sources */

int tc__gpu_pin_more(struct tc__gpu_pinning *pin, int ordinal, void *p,
		     uint64_t n, uint64_t piece, uint64_t budget, char *err,
		     size_t errlen)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t done = 0;
	int rc;

	if (!p || n == 0 || ((uintptr_t)p & (uintptr_t)(pg - 1)) ||
	    piece == 0 || (piece & (uint64_t)(pg - 1)) ||
	    (pin->nsegs && (pin->base != p || pin->seg != piece))) {
		snprintf(err, errlen,
			 "cannot pin %llu bytes at %p in pieces of %llu: "
			 "not page-aligned, or not the range begun",
			 (unsigned long long)n, p, (unsigned long long)piece);
		tc__gpu_unpin(pin);
		return TC_EINVAL;
	}
	pin->device = ordinal;
	pin->base = p;
	pin->seg = piece;
	while (pin->bytes < n && done < budget) {
		uint64_t len = TC_MIN(piece, n - pin->bytes);

		rc = tc__gpu_host_register(ordinal, pin->base + pin->bytes, len,
					   TC_GPU_READ_ONLY, err, errlen);
		if (rc < 0) {
			tc__gpu_unpin(pin);
			return rc;
		}
		pin->nsegs++;
		pin->bytes += len;
		done += len;
	}
	return pin->bytes == n;
}

int tc__gpu_pin(int ordinal, void *p, uint64_t n, uint64_t piece,
		struct tc__gpu_pinning *pin, char *err, size_t errlen)
{
	int rc;

	memset(pin, 0, sizeof(*pin));
	rc = tc__gpu_pin_more(pin, ordinal, p, n, piece, UINT64_MAX, err,
			      errlen);
	return rc < 0 ? rc : 0;
}

int tc__gpu_copy_pinned(const struct tc__gpu_pinning *pin, uint64_t n,
			const struct tc__gpu_mem *dst, char *err, size_t errlen)
{
	struct tc__gpu_stream *s[PINNED_STREAMS] = { 0 };
	uint64_t pieces;
	int rc = 0, ns = 0;

	if (n > pin->bytes || n > dst->size) {
		snprintf(err, errlen,
			 "cannot copy %llu bytes from %llu pinned bytes to a "
			 "GPU allocation of %llu",
			 (unsigned long long)n, (unsigned long long)pin->bytes,
			 (unsigned long long)dst->size);
		return TC_EINVAL;
	}
	/* One copy per registration (a copy that spans two may be treated
	 * as pageable), spread over a few streams so the next is queued
	 * while one runs; a single piece needs no stream of its own. */
	pieces = n / pin->seg + (n % pin->seg != 0);
	if (pieces <= 1)
		return tc__gpu_htod(dst->device, dst->dptr, pin->base, n, NULL,
				    err, errlen);
	while (ns < (int)TC_MIN(pieces, (uint64_t)PINNED_STREAMS) && rc == 0)
		rc = tc__gpu_stream_create(dst->device, &s[ns++], err, errlen);
	for (uint64_t i = 0; rc == 0 && i < pieces; i++) {
		uint64_t off = i * pin->seg;

		rc = tc__gpu_htod(dst->device, dst->dptr + off, pin->base + off,
				  TC_MIN(pin->seg, n - off),
				  s[i % (uint64_t)ns], err, errlen);
	}
	for (int i = 0; i < ns; i++) {
		if (s[i] &&
		    tc__gpu_stream_sync(s[i], rc ? NULL : err,
					rc ? 0 : errlen) < 0 &&
		    rc == 0)
			rc = TC_ECUDA;
		tc__gpu_stream_free(s[i]);
	}
	return rc;
}

void tc__gpu_unpin(struct tc__gpu_pinning *pin)
{
	char err[512];

	for (uint64_t i = 0; i < pin->nsegs; i++)
		if (tc__gpu_host_unregister(pin->device,
					    pin->base + i * pin->seg, err,
					    sizeof(err)) < 0)
			tc__log(TC_LOG_WARN, "%s", err);
	memset(pin, 0, sizeof(*pin));
}

/* -------------------------------------------- digests of GPU memory */

/*
 * The digest of bytes that are only on a GPU (a put of CUDA tensors): each
 * thread takes 4 MiB chunks in turn, copies chunk k+1 device to host into
 * one pinned staging buffer while it hashes chunk k from the other.  Bound
 * by the CPU's BLAKE3 rate, not by the copy.
 */
/*
 * A read-out of GPU bytes, chunk by chunk on a few threads: each chunk is
 * copied device to host (into `host` when the sink is host memory, else
 * into pinned staging), then hashed (chunks != NULL) and written to the
 * sink's file (fd >= 0, pwrite) or native temporary (w).  A failed write
 * stops the writes (wrc) but not the hashing, as tc__hash_chunks_write.
 */
struct ghash {
	const struct tc__gpu_mem *src;
	uint64_t size, nchunks;
	struct tc__digest *chunks; /* NULL: no hash */
	uint8_t *host;		   /* copied straight here, or NULL */
	int fd;			   /* pwrite each chunk here, or -1 */
	struct tc__native_tmp *w;  /* write each chunk here, or NULL */
	_Atomic int wrc;	   /* the writes' first failure */
	pthread_mutex_t lock;
	uint64_t next; /* next chunk to take */
	int rc;
	char *err;
	size_t errlen;
};

/* A chunk arrived at `p`: hash it, write it where the sink says. */
static void ghash_chunk(struct ghash *h, const uint8_t *p, uint64_t k,
			uint64_t len)
{
	uint64_t off = k * TC_CHUNK_BYTES;
	int rc = 0;

	if (h->chunks)
		tc__hash256(p, len, &h->chunks[k]);
	if (atomic_load(&h->wrc))
		return;
	if (h->w)
		rc = tc__native_write_data(h->w, p, off, len);
	else if (h->fd >= 0)
		rc = tc__pwrite_exact(h->fd, p, len, off);
	if (rc < 0) {
		int zero = 0;

		atomic_compare_exchange_strong(&h->wrc, &zero, rc);
	}
}

/* Where chunk k's copy lands: the host sink itself, or a staging buffer. */
static uint8_t *ghash_dst(struct ghash *h, void *stage, int64_t k)
{
	return h->host ? h->host + (uint64_t)k * TC_CHUNK_BYTES : stage;
}

static int64_t ghash_take(struct ghash *h)
{
	int64_t k = -1;

	pthread_mutex_lock(&h->lock);
	if (h->rc == 0 && h->next < h->nchunks)
		k = (int64_t)h->next++;
	pthread_mutex_unlock(&h->lock);
	return k;
}

static void ghash_fail(struct ghash *h, int rc, const char *msg)
{
	pthread_mutex_lock(&h->lock);
	if (h->rc == 0) {
		h->rc = rc;
		snprintf(h->err, h->errlen, "%s", msg);
	}
	pthread_mutex_unlock(&h->lock);
}

static void *ghash_worker(void *arg)
{
	struct ghash *h = arg;
	int dev = h->src->device;
	struct tc__gpu_stream *s = NULL;
	void *buf[2] = { NULL, NULL };
	uint64_t len[2] = { 0, 0 };
	int64_t k[2] = { -1, -1 };
	char err[512];
	int rc, cur = 0;

	rc = tc__gpu_stream_create(dev, &s, err, sizeof(err));
	for (int i = 0; rc == 0 && !h->host && i < 2; i++)
		rc = stage_get(dev, TC_CHUNK_BYTES, &buf[i], err, sizeof(err));
	if (rc < 0)
		goto out;
	/* One copy in flight: chunk k[!cur] arrives while k[cur] is hashed
	 * and written. */
	k[cur] = ghash_take(h);
	if (k[cur] >= 0) {
		len[cur] = TC_MIN(TC_CHUNK_BYTES,
				  h->size - (uint64_t)k[cur] * TC_CHUNK_BYTES);
		rc = tc__gpu_dtoh(dev, ghash_dst(h, buf[cur], k[cur]),
				  h->src->dptr +
					  (uint64_t)k[cur] * TC_CHUNK_BYTES,
				  len[cur], s, err, sizeof(err));
	}
	while (rc == 0 && k[cur] >= 0) {
		rc = tc__gpu_stream_sync(s, err, sizeof(err));
		if (rc < 0)
			break;
		k[!cur] = ghash_take(h);
		if (k[!cur] >= 0) {
			uint64_t off = (uint64_t)k[!cur] * TC_CHUNK_BYTES;

			len[!cur] = TC_MIN(TC_CHUNK_BYTES, h->size - off);
			rc = tc__gpu_dtoh(dev, ghash_dst(h, buf[!cur], k[!cur]),
					  h->src->dptr + off, len[!cur], s, err,
					  sizeof(err));
		}
		ghash_chunk(h, ghash_dst(h, buf[cur], k[cur]), (uint64_t)k[cur],
			    len[cur]);
		cur = !cur;
	}
out:
	if (rc < 0)
		ghash_fail(h, rc, err);
	/* A buffer a failed copy may still write is never pooled. */
	if (s && rc < 0)
		rc = tc__gpu_stream_sync(s, err, sizeof(err));
	for (int i = 0; i < 2; i++)
		if (buf[i])
			stage_put(dev, buf[i], TC_CHUNK_BYTES, rc == 0);
	tc__gpu_stream_free(s);
	return NULL;
}

/* Run h (src, size and its sink filled in) on up to nthreads threads. */
static int ghash_run(struct ghash *h, int nthreads, char *err, size_t errlen)
{
	h->nchunks = tc__chunk_count(h->size);
	h->err = err;
	h->errlen = errlen;
	pthread_mutex_init(&h->lock, NULL);
	run_threads(ghash_worker, h,
		    (int)TC_MIN((uint64_t)TC_MAX(nthreads, 1), h->nchunks),
		    h->nchunks > 0);
	pthread_mutex_destroy(&h->lock);
	return h->rc;
}

int tc__gpu_hash_chunks(const struct tc__gpu_mem *src, uint64_t n, int nthreads,
			struct tc__digest *chunks, char *err, size_t errlen)
{
	static struct tc__ratelimit rl;
	struct ghash h = { 0 };
	int rc;

	if (src->size < n) {
		snprintf(err, errlen,
			 "cannot hash %llu bytes of a %llu-byte GPU allocation",
			 (unsigned long long)n, (unsigned long long)src->size);
		return TC_EINVAL;
	}
	/* On the GPU where the bytes are: device-memory speed, no copy and
	 * no host CPU.  The host path below stays for a driver that refuses
	 * the kernels' PTX or a GPU without room for their scratch, and
	 * says so; a lost device fails either way. */
	if (!getenv("TCAST_GPU_HASH_HOST")) {
		rc = tc__gpu_hash_chunks_dev(src, n, chunks, err, errlen);
		if (rc == 0 || rc == TC_ENODEV)
			return rc;
		tc__log_rl(&rl, TC_LOG_WARN,
			   "hashing on GPU %d failed (%s): hashing on the "
			   "host instead",
			   src->device, err);
	}
	h.src = src;
	h.size = n;
	h.chunks = chunks;
	h.fd = -1;
	return ghash_run(&h, nthreads, err, errlen);
}

int tc__gpu_read_out(const struct tc__gpu_mem *src, uint64_t n, int nthreads,
		     const struct tc__gpu_out *out, struct tc__digest *chunks,
		     int *wrc, char *err, size_t errlen)
{
	struct ghash h = { 0 };
	int rc;

	*wrc = 0;
	if (src->size < n) {
		snprintf(err, errlen,
			 "cannot read %llu bytes of a %llu-byte GPU allocation",
			 (unsigned long long)n, (unsigned long long)src->size);
		return TC_EINVAL;
	}
	h.src = src;
	h.size = n;
	h.chunks = chunks;
	h.host = out->host;
	h.fd = out->host ? -1 : out->fd;
	h.w = out->host ? NULL : out->w;
	rc = ghash_run(&h, nthreads, err, errlen);
	*wrc = atomic_load(&h.wrc);
	return rc;
}
