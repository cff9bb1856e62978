/*
 * put.c - create -> fill -> seal from client memory.
 *
 * The daemon creates the memfd (already sealed against resizing) and hands
 * this process a writable descriptor; the caller writes each tensor once,
 * straight into the memory that will be shared.  Commit unmaps before
 * asking the daemon to seal: a writable mapping left anywhere would make the
 * seal fail, which is what keeps sealed artifacts immutable.
 *
 * With TC_OPT_DEVICE the memory is a new replica on that GPU (CREATE_GPU):
 * the daemon allocates it, this process maps it writable and fills it
 * device to device (tc_put_copy_from_device), and SEAL_GPU makes the
 * daemon keep it as the artifact's only replica: no host copy.  When one
 * copy call fills every tensor, the copy is fused with the chunk hash
 * (each byte read once) and SEAL_GPU carries the digests, which a daemon
 * of the same uid adopts instead of hashing the replica again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client_internal.h"
#include "common/alloc.h"
#include "common/io.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/hash.h"
#include "common/log.h"
#include "gpu/vmm.h"
#include "net/ev.h"
#include "tcast/errors.h"

struct tc_put {
	tc_client *c; /* holds a reference */
	uint64_t handle;
	uint8_t *map;
	uint64_t map_size;
	struct tc__table table;	 /* with the daemon's offsets */
	struct tc_opts opts;	 /* progress is not used by SEAL */
	int32_t device;		 /* CUDA ordinal of a GPU put, else -1 */
	struct tc__gpu_mem gmem; /* the writable mapping of a GPU put */
	int fd;			 /* host puts: the memfd, for tc_put_write */
	uint8_t *touched;	 /* per tensor: its pages populated */
	bool huge_map;		 /* the mapping was advised huge pages */
	/* GPU puts: the chunk digests of the bytes as the fused copy left
	 * them (tc__gpu_copy_hash), sent with SEAL_GPU; NULL once anything
	 * else may have written (a device pointer handed out, a second
	 * copy). */
	struct tc__digest *dig;
	bool data_out; /* tc_put_data handed out a pointer */
	/* GPU puts into an allocation the daemon kept (CREATE_GPU says so):
	 * its old bytes are zeroed wherever the caller does not write, as
	 * in a new allocation -- all of it before a device pointer goes
	 * out, else the tensors no copy filled, at the commit. */
	bool reused, zeroed;
	uint8_t *copied; /* per tensor: filled by tc_put_copy_from_device */
	int zero_rc;	 /* a failed zeroing, returned by the commit */
	/* tc_put_write's two ways (way_pick): calls chosen, running ns per
	 * MiB as the callers saw them, and the cheaper so far. */
	pthread_mutex_t way_mu;
	uint64_t way_n[2], way_calls;
	double way_ns[2];
	bool way_seen[2], way_said;
	int way_best;
};

/* Build the CREATE table from the caller's descriptors and metadata. */
static int build_table(tc_client *c, const struct tc_tensor_desc *d, uint32_t n,
		       const char *meta_json, struct tc__table *t)
{
	json_t *meta = NULL;
	json_error_t jerr;
	char msg[600];
	int rc;

	tc__table_init(t);
	if (n > TC_MAX_TENSORS)
		return tc__client_err(c, TC_ELIMIT, "too many tensors");
	t->tensors = tc__calloc(n, sizeof(*t->tensors));
	if (!t->tensors)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct tc__tensor *x = &t->tensors[i];

		t->ntensors = i + 1;
		if (!d[i].name || !d[i].name[0] || d[i].ndim > TC_MAX_RANK ||
		    (d[i].ndim && !d[i].shape)) {
			snprintf(msg, sizeof(msg),
				 "tensor #%u: empty name, bad rank or no shape",
				 i);
			rc = tc__client_err(c, TC_EINVAL, msg);
			goto out_release;
		}
		x->name = tc__strdup(d[i].name);
		if (!x->name) {
			rc = -ENOMEM;
			goto out_release;
		}
		x->dtype = (uint8_t)d[i].dtype;
		x->ndim = (uint8_t)d[i].ndim;
		memcpy(x->shape, d[i].shape, sizeof(uint64_t) * d[i].ndim);
		if (d[i].dtype < 0 || d[i].dtype >= TC_DTYPE__COUNT ||
		    tc__tensor_nbytes(d[i].dtype, d[i].ndim, d[i].shape,
				      &x->nbytes) < 0) {
			snprintf(msg, sizeof(msg),
				 "tensor '%.500s': bad dtype or size overflow",
				 d[i].name);
			rc = tc__client_err(c, TC_EINVAL, msg);
			goto out_release;
		}
	}
	if (meta_json && *meta_json) {
		const char *k;
		json_t *v;
		uint32_t i = 0;

		meta = json_loads(meta_json, JSON_REJECT_DUPLICATES, &jerr);
		if (!meta || !json_is_object(meta) ||
		    json_object_size(meta) > TC_MAX_META) {
			rc = tc__client_err(c, TC_EINVAL,
					    "metadata must be a JSON object of "
					    "strings");
			goto out_release;
		}
		t->meta = tc__calloc(json_object_size(meta), sizeof(*t->meta));
		if (!t->meta) {
			rc = -ENOMEM;
			goto out_release;
		}
		json_object_foreach(meta, k, v)
		{
			if (!json_is_string(v)) {
				snprintf(msg, sizeof(msg),
					 "metadata '%.500s' is not a string",
					 k);
				rc = tc__client_err(c, TC_EINVAL, msg);
				goto out_release;
			}
			t->nmeta = i + 1;
			t->meta[i].key = tc__strdup(k);
			t->meta[i].val = tc__strdup(json_string_value(v));
			if (!t->meta[i].key || !t->meta[i].val) {
				rc = -ENOMEM;
				goto out_release;
			}
			i++;
		}
	}
	json_decref(meta);
	return 0;

out_release:
	json_decref(meta);
	tc__table_release(t);
	return rc;
}

/* The daemon holds an allocation for a GPU put this process could not map:
 * give it back, keeping the message that explains the failure. */
static void abort_gpu_handle(tc_client *c, uint64_t handle)
{
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	char msg[1024];
	size_t off;

	snprintf(msg, sizeof(msg), "%s", tc_client_errmsg(c));
	off = tc__client_begin(c, &b, TC_MSG_ABORT_GPU);
	tc__buf_put_u64(&b, handle);
	tc__frame_finish(&b, off);
	if (tc__client_call(c, &b, NULL, 0, NULL, &rep) == 0)
		reply_release(&rep);
	tc__buf_release(&b);
	tc__client_err(c, TC_EINVAL, msg); /* restores the message only */
}

TC_API int tc_put_begin(tc_client *c, const struct tc_tensor_desc *tensors,
			uint32_t n, const char *meta_json,
			const struct tc_opts *o, tc_put **out)
{
	struct tc__buf b = TC_BUF_INIT;
	bool gpu = o && (o->field_mask & TC_OPT_DEVICE);
	struct tc__gpu_info info;
	struct tc__table t;
	struct reply rep;
	char err[512];
	uint64_t tb = tc__now_ns(), t0, t1, t2;
	tc_put *p;
	size_t off;
	void *map;
	int rc;

	*out = NULL;
	if (gpu) {
		/* Ordinals are per process: the daemon is told the UUID. */
		rc = tc__gpu_device_info(o->device, &info, err, sizeof(err));
		if (rc < 0)
			return tc__client_err(c, rc, err);
	}
	rc = build_table(c, tensors, n, meta_json, &t);
	if (rc < 0)
		return rc;
	off = tc__client_begin(c, &b, gpu ? TC_MSG_CREATE_GPU : TC_MSG_CREATE);
	tc__proto_put_table(&b, &t);
	tc__client_put_opts(&b, o, 0);
	if (gpu)
		tc__buf_put_str(&b, info.uuid_str);
	tc__frame_finish(&b, off);
	tc__table_release(&t);
	t0 = tc__now_ns();
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	t1 = tc__now_ns();
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	p = tc__calloc(1, sizeof(*p));
	if (!p) {
		rc = -ENOMEM;
		goto out_reply;
	}
	pthread_mutex_init(&p->way_mu, NULL);
	if (rep.nfds != 1 || tc__cur_read_u64(&rep.body, &p->handle) < 0 ||
	    tc__cur_read_u64(&rep.body, &p->map_size) < 0 ||
	    tc__proto_get_table(&rep.body, 1, &p->table, err, sizeof(err)) <
		    0 ||
	    p->table.total_bytes > p->map_size) {
		rc = tc__client_err(c, TC_EPROTO, "malformed CREATE reply");
		goto out_free;
	}
	tc__gpu_mem_init(&p->gmem);
	p->device = -1;
	p->fd = -1;
	if (gpu) {
		uint8_t reused = 0;

		/* Absent from an older daemon's reply: a new allocation. */
		if (tc__cur_read_u8(&rep.body, &reused) == 0)
			p->reused = reused == 1;
		rc = tc__gpu_import(o->device, rep.fds[0], p->map_size, 0,
				    &p->gmem, err, sizeof(err));
		if (rc < 0) {
			tc__client_err(c, rc, err);
			tc__table_release(&p->table);
			goto out_abort;
		}
		p->device = o->device;
		t2 = tc__now_ns();
		/* The first puts of a process were seen to wait 0.1-0.3 s
		 * here on an H200 host: say on which side. */
		tc__log(TC_LOG_DEBUG,
			"CREATE_GPU of %" PRIu64
			" bytes: %.2f ms before the request (device, table), "
			"%.2f ms for the reply, %.2f ms to map it",
			p->map_size, (double)(t0 - tb) / 1e6,
			(double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6);
		goto out_ok;
	}
	map = mmap(NULL, p->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   rep.fds[0], 0);
	if (map == MAP_FAILED) {
		rc = -errno;
		tc__client_err(c, rc, "cannot map the new artifact");
		tc__table_release(&p->table);
		goto out_free;
	}
	/* Pages are populated per tensor at its first tc_put_data (a caller
	 * writing through tc_put_write never faults the mapping in); as 2 MiB
	 * pages where the kernel allows (common/io.h): 6x faster to make. */
	p->huge_map = tc__shm_advise_huge(map, p->map_size);
	p->touched = tc__calloc(p->table.ntensors ? p->table.ntensors : 1, 1);
	p->fd = fcntl(rep.fds[0], F_DUPFD_CLOEXEC, 3);
	if (!p->touched || p->fd < 0) {
		rc = p->touched ? -errno : -ENOMEM;
		munmap(map, p->map_size);
		tc__free(p->touched);
		tc__client_err(c, rc, "cannot keep the new artifact's memory");
		tc__table_release(&p->table);
		goto out_free;
	}
	p->map = map;
out_ok:
	p->c = c;
	if (o)
		p->opts = *o;
	tc__client_ref(c);
	reply_release(&rep);
	*out = p;
	return 0;

out_abort:
	abort_gpu_handle(c, p->handle);
out_free:
	tc__free(p);
out_reply:
	reply_release(&rep);
	return rc;
}

/*
 * The tensors of a kept allocation that no copy filled, zeroed: at the
 * first device pointer handed out (before the caller may write through
 * it) or at the commit, whichever comes first.  Not after a fused copy
 * of every tensor, which wrote them all (padding included); the daemon
 * zeroes the padding otherwise.
 */
static int zero_unwritten(tc_put *p)
{
	struct tc__gpu_stream *s = NULL;
	char err[256];
	int rc;

	if (!p->reused || p->zeroed || p->dig)
		return p->zero_rc;
	p->zeroed = true;
	rc = tc__gpu_stream_create(p->device, &s, err, sizeof(err));
	for (uint32_t i = 0; rc == 0 && i < p->table.ntensors; i++) {
		const struct tc__tensor *x = &p->table.tensors[i];

		if (x->nbytes && !(p->copied && p->copied[i]))
			rc = tc__gpu_memset8(p->device,
					     p->gmem.dptr + x->offset, 0,
					     x->nbytes, s, err, sizeof(err));
	}
	if (s) {
		if (rc == 0)
			rc = tc__gpu_stream_sync(s, err, sizeof(err));
		tc__gpu_stream_free(s);
	}
	p->zero_rc = rc < 0 ? tc__client_err(p->c, rc, err) : 0;
	return p->zero_rc;
}

TC_API void *tc_put_data(tc_put *p, uint32_t i)
{
	if (i >= p->table.ntensors)
		return NULL;
	if (p->device >= 0) {
		/* The caller may write through it at any time: the fused
		 * copy's digests no longer vouch for the bytes. */
		p->data_out = true;
		tc__free(p->dig);
		p->dig = NULL;
		if (p->reused && !p->zeroed && zero_unwritten(p) < 0)
			tc__log(TC_LOG_WARN, "GPU put: %s",
				tc_client_errmsg(p->c));
		return (void *)(uintptr_t)(p->gmem.dptr +
					   p->table.tensors[i].offset);
	}
	/* The caller is about to write this tensor: its pages in a few
	 * calls rather than a fault per page during its copies. */
	if (!p->touched[i])
		tc__populate(p->map + p->table.tensors[i].offset,
			     p->table.tensors[i].nbytes, 1);
	p->touched[i] = 1;
	return p->map + p->table.tensors[i].offset;
}

uint8_t *tc__put_huge_map(tc_put *p)
{
	const char *e = getenv("TCAST_PUT_WRITE");

	if (!p->map || p->fd < 0)
		return NULL;
	/* Tests: the in-place path on any pages. */
	if (e && !strcmp(e, "inplace"))
		return p->map;
	return e || !p->huge_map ? NULL : p->map;
}

TC_API uint64_t tc_put_offset(const tc_put *p, uint32_t i)
{
	return i < p->table.ntensors ? p->table.tensors[i].offset : UINT64_MAX;
}

/*
 * How tc_put_write fills a put: through its file (pwrite on the memfd) or
 * through its mapping (populated 4 MiB at a time, then one copy).  The
 * kernel takes every pwrite into one file under the inode lock, so
 * several writers (a pull's verifiers) queue behind each other there,
 * while the mapping takes them all at once; but where a page-table fault
 * is dear (a paravirtualised guest: 0.5 vs 5.1 GB/s for one writer on the
 * dev VM) the file wins even so.  No probe of fresh pages decides it
 * ahead: on a 16-core Firecracker guest one process's 2 MiB probe saw the
 * mapping 1.6x to 14x dearer than the file, and chose the file in 4 pulls
 * of 5, which then ran at 17-20 Gbit/s against 35-39 through the mapping.
 * So each put times its own writes, each way as its callers see it (lock
 * waits included), and takes the cheaper: both ways twice first, then
 * the other way one call in WAY_EXPLORE to keep its figure current.
 */
enum { WAY_FILE, WAY_MAP };
#define WAY_EXPLORE   16
#define WAY_MIN_BYTES ((uint64_t)256 << 10) /* smaller writes teach nothing */

/* Which way the next tc_put_write of p takes. */
static int way_pick(tc_put *p)
{
	const char *e = getenv("TCAST_PUT_WRITE");
	int w;

	if (!p->map || (e && !strcmp(e, "pwrite")))
		return WAY_FILE;
	if (e && !strcmp(e, "map"))
		return WAY_MAP;
	/* On 2 MiB pages the mapping wins outright: a fault per 2 MiB, and
	 * a write() into the memfd would make 4 KiB pages of it (the kernel
	 * gives huge pages under `advise` only to an advised mapping). */
	if (p->huge_map && !e)
		return WAY_MAP;
	pthread_mutex_lock(&p->way_mu);
	if (p->way_n[WAY_FILE] < 2 || p->way_n[WAY_MAP] < 2 ||
	    !p->way_seen[WAY_FILE] || !p->way_seen[WAY_MAP])
		w = p->way_n[WAY_FILE] <= p->way_n[WAY_MAP] ? WAY_FILE :
							      WAY_MAP;
	else
		w = p->way_best;
	if (++p->way_calls % WAY_EXPLORE == 0)
		w = !w;
	p->way_n[w]++; /* counted when chosen: concurrent callers spread */
	pthread_mutex_unlock(&p->way_mu);
	return w;
}

/* A write of n bytes took ns by way w: its running cost per MiB. */
static void way_done(tc_put *p, int w, uint64_t n, uint64_t ns)
{
	/* A small write is its call's fixed cost, not the way's rate. */
	if (n < WAY_MIN_BYTES)
		return;
	double per = (double)ns * (double)(1 << 20) / (double)(n ? n : 1);
	double file_ns = 0, map_ns = 0;
	bool said = false;
	int best = WAY_FILE;

	pthread_mutex_lock(&p->way_mu);
	p->way_ns[w] = p->way_seen[w] ? (7 * p->way_ns[w] + per) / 8 : per;
	p->way_seen[w] = true;
	if (p->way_seen[!w]) {
		best = p->way_ns[WAY_MAP] < p->way_ns[WAY_FILE] ? WAY_MAP :
								  WAY_FILE;
		said = best != p->way_best || !p->way_said;
		p->way_best = best;
		p->way_said = true;
		file_ns = p->way_ns[WAY_FILE];
		map_ns = p->way_ns[WAY_MAP];
	}
	pthread_mutex_unlock(&p->way_mu);
	if (said)
		tc__log(TC_LOG_DEBUG,
			"tc_put_write: through the %s (%.0f us per MiB "
			"through the file, %.0f through the mapping)",
			best == WAY_MAP ? "mapping" : "file", file_ns / 1e3,
			map_ns / 1e3);
}

void tc__put_write_ways(tc_put *p, uint64_t calls[2])
{
	pthread_mutex_lock(&p->way_mu);
	calls[0] = p->way_n[WAY_FILE];
	calls[1] = p->way_n[WAY_MAP];
	pthread_mutex_unlock(&p->way_mu);
}

/* Drop the page tables of the whole pages inside [off, off + n) of p's
 * mapping (MADV_DONTNEED on a shared mapping keeps the memfd's pages). */
static void unmap_written(tc_put *p, uint64_t off, uint64_t n)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t lo = (off + pg - 1) / pg * pg, hi = (off + n) / pg * pg;

	if (hi > lo)
		madvise(p->map + lo, hi - lo, MADV_DONTNEED);
}

TC_API int tc_put_write(tc_put *p, uint64_t off, const void *src, uint64_t n)
{
	const uint8_t *s = src;
	uint64_t t0, done = 0;
	char msg[160];
	int way;

	if (p->fd < 0)
		return tc__client_err(p->c, TC_EINVAL,
				      "tc_put_write: not a host put");
	if (off > p->map_size || n > p->map_size - off) {
		snprintf(msg, sizeof(msg),
			 "tc_put_write: bytes [%" PRIu64 ", %" PRIu64
			 ") are outside the artifact's %" PRIu64,
			 off, off + n, p->map_size);
		return tc__client_err(p->c, TC_EINVAL, msg);
	}
	way = way_pick(p);
	t0 = tc__now_ns();
	/* Tests: one way made dear, which the choice must leave. */
	if (tc__failpoint("put_write_slow", way == WAY_MAP ? "map" : "file"))
		usleep(20000);
	if (way == WAY_MAP) {
		/* The range's pages in a few calls, then one copy: callers
		 * on several threads fill one put at once (a pull). */
		int rc = tc__populate(p->map + off, n, 1);

		if (rc < 0 && rc != -EINVAL && rc != -ENOSYS) {
			snprintf(msg, sizeof(msg),
				 "cannot write the artifact's memory at "
				 "%" PRIu64 ": %s",
				 off, strerror(-rc));
			return tc__client_err(p->c, rc, msg);
		}
		memcpy(p->map + off, s, n);
		/* And the range's page tables go again at once, from the
		 * writing thread (the mmap lock taken shared): the commit
		 * must unmap before the seal, and one munmap of a 4 GiB put's
		 * populated tables took ~0.3 s after the transfer (a 16-core
		 * host).  The bytes stay in the memfd. */
		unmap_written(p, off, n);
		way_done(p, way, n, tc__now_ns() - t0);
		return 0;
	}
	/* Through the file: the kernel fills the memfd's pages without a
	 * page-table fault per page, several times faster than first writes
	 * through a fresh mapping where faults are dear (docs/design.md). */
	while (n) {
		ssize_t w = pwrite(p->fd, s, TC_MIN(n, (uint64_t)1 << 30),
				   (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int rc = w < 0 ? -errno : -EIO;

			snprintf(
				msg, sizeof(msg),
				"cannot write the artifact's memory at %" PRIu64
				": %s",
				off, strerror(-rc));
			return tc__client_err(p->c, rc, msg);
		}
		s += w;
		off += (uint64_t)w;
		n -= (uint64_t)w;
		done += (uint64_t)w;
	}
	way_done(p, way, done, tc__now_ns() - t0);
	return 0;
}

TC_API int32_t tc_put_device(const tc_put *p)
{
	return p->device;
}

static int seg_cmp(const void *a, const void *b)
{
	const struct tc__gpu_seg *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * When these n copies fill every tensor of the put, each exactly once and
 * nothing was handed out through tc_put_data: copy and hash in one pass
 * (tc__gpu_copy_hash) and keep the digests for SEAL_GPU.  TC_ENOTSUP when
 * it does not apply (or the kernels do not load here): the caller copies
 * as before and the daemon hashes.  Other errors are the copy's.
 */
static int copy_hash_all(tc_put *p, uint32_t n, const uint32_t *index,
			 const uint64_t *src)
{
	uint32_t nt = p->table.ntensors, nseg = 0;
	uint64_t nch = tc__chunk_count(p->table.total_bytes);
	struct tc__gpu_seg *segs;
	uint8_t *seen;
	char err[512];
	int rc = 0;

	if (p->data_out || nch == 0 || n > nt)
		return TC_ENOTSUP;
	seen = tc__calloc(nt ? nt : 1, 1);
	segs = tc__calloc(n ? n : 1, sizeof(*segs));
	if (!seen || !segs) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t k = 0; k < n; k++) {
		const struct tc__tensor *x = &p->table.tensors[index[k]];

		if (seen[index[k]]++) {
			rc = TC_ENOTSUP; /* the same tensor twice */
			goto out;
		}
		if (x->nbytes)
			segs[nseg++] = (struct tc__gpu_seg){ x->offset,
							     x->nbytes,
							     src[k] };
	}
	for (uint32_t i = 0; i < nt; i++)
		if (!seen[i] && p->table.tensors[i].nbytes) {
			rc = TC_ENOTSUP; /* some tensor left to the caller */
			goto out;
		}
	qsort(segs, nseg, sizeof(*segs), seg_cmp);
	p->dig = tc__calloc(nch, sizeof(*p->dig));
	if (!p->dig) {
		rc = -ENOMEM;
		goto out;
	}
	rc = tc__gpu_copy_hash(p->device, p->gmem.dptr, p->table.total_bytes,
			       segs, nseg, p->dig, err, sizeof(err));
	if (rc < 0) {
		tc__free(p->dig);
		p->dig = NULL;
		if (rc != TC_ENOTSUP)
			tc__client_err(p->c, rc, err);
	}
out:
	tc__free(seen);
	tc__free(segs);
	return rc == -ENOMEM ? tc__client_err(p->c, rc, "out of memory") : rc;
}

TC_API int tc_put_copy_from_device(tc_put *p, uint32_t n, const uint32_t *index,
				   const uint64_t *src)
{
	struct tc__gpu_stream *s = NULL;
	char err[512], err2[512];
	int rc, rc2;

	if (p->device < 0)
		return tc__client_err(p->c, TC_EINVAL,
				      "not a GPU put (tc_put_begin without "
				      "TC_OPT_DEVICE)");
	for (uint32_t k = 0; k < n; k++)
		if (index[k] >= p->table.ntensors) {
			snprintf(err, sizeof(err),
				 "tensor index %u out of range (%u tensors)",
				 index[k], p->table.ntensors);
			return tc__client_err(p->c, TC_EINVAL, err);
		}
	if (p->reused && !p->copied) {
		p->copied = tc__calloc(
			p->table.ntensors ? p->table.ntensors : 1, 1);
		if (!p->copied)
			return tc__client_err(p->c, -ENOMEM, "out of memory");
	}
	for (uint32_t k = 0; p->copied && k < n; k++)
		p->copied[index[k]] = 1;
	tc__free(p->dig);
	p->dig = NULL;
	rc = copy_hash_all(p, n, index, src);
	if (rc != TC_ENOTSUP)
		return rc; /* done, or failed with its message set */
	/* One stream, one synchronisation: a model's thousand tensors must
	 * not pay a thousand blocking copies. */
	rc = tc__gpu_stream_create(p->device, &s, err, sizeof(err));
	for (uint32_t k = 0; rc == 0 && k < n; k++) {
		const struct tc__tensor *x = &p->table.tensors[index[k]];

		if (x->nbytes)
			rc = tc__gpu_dtod(p->device, p->gmem.dptr + x->offset,
					  src[k], x->nbytes, s, err,
					  sizeof(err));
	}
	if (s) {
		rc2 = tc__gpu_stream_sync(s, err2, sizeof(err2));
		if (rc == 0 && rc2 < 0) {
			rc = rc2;
			memcpy(err, err2, sizeof(err));
		}
		tc__gpu_stream_free(s);
	}
	return rc < 0 ? tc__client_err(p->c, rc, err) : 0;
}

TC_API uint64_t tc_put_nbytes(const tc_put *p, uint32_t i)
{
	return i < p->table.ntensors ? p->table.tensors[i].nbytes : 0;
}

static void put_free(tc_put *p)
{
	if (p->map)
		munmap(p->map, p->map_size);
	if (p->fd >= 0)
		close(p->fd);
	tc__free(p->touched);
	tc__free(p->copied);
	tc__free(p->dig);
	tc__gpu_release(&p->gmem);
	tc__table_release(&p->table);
	tc_client_close(p->c);
	pthread_mutex_destroy(&p->way_mu);
	tc__free(p);
}

static int send_handle(tc_put *p, int type, struct reply *rep)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off;

	if (p->device >= 0) /* the GPU forms of SEAL and ABORT */
		type = type == TC_MSG_SEAL ? TC_MSG_SEAL_GPU : TC_MSG_ABORT_GPU;
	off = tc__client_begin(p->c, &b, type);
	int rc;

	tc__buf_put_u64(&b, p->handle);
	if (type == TC_MSG_SEAL_GPU && p->dig) {
		uint64_t nch = tc__chunk_count(p->table.total_bytes);

		tc__buf_put_u64(&b, nch);
		tc__buf_put(&b, p->dig, nch * TC_DIGEST_BYTES);
	}
	tc__frame_finish(&b, off);
	rc = tc__client_call(p->c, &b, NULL, 0, NULL, rep);
	tc__buf_release(&b);
	return rc;
}

TC_API int tc_put_commit(tc_put *p, struct tc_result *res)
{
	struct reply rep;
	int rc;

	/* A failed zeroing takes the failed seal's way out (ABORT). */
	rc = p->device >= 0 ? zero_unwritten(p) : 0;
	if (p->map)
		munmap(p->map, p->map_size);
	p->map = NULL;
	/* Our writable mapping goes before the seal, as with a memfd. */
	tc__gpu_release(&p->gmem);
	if (rc == 0)
		rc = send_handle(p, TC_MSG_SEAL, &rep);
	if (rc == 0) {
		rc = tc__client_read_result(p->c, &rep, res);
		reply_release(&rep);
	} else if (rc != TC_ECLOSED) {
		/* Leave nothing half-made behind on the daemon.  The ABORT
		 * usually fails (SEAL already consumed the put), and its
		 * message must not replace the one that explains `rc`. */
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", tc_client_errmsg(p->c));
		if (send_handle(p, TC_MSG_ABORT, &rep) == 0)
			reply_release(&rep);
		tc__client_err(p->c, rc, msg);
	}
	put_free(p);
	return rc;
}

TC_API void tc_put_abort(tc_put *p)
{
	struct reply rep;

	if (!p)
		return;
	if (p->map)
		munmap(p->map, p->map_size);
	p->map = NULL;
	tc__gpu_release(&p->gmem);
	if (send_handle(p, TC_MSG_ABORT, &rep) == 0)
		reply_release(&rep);
	put_free(p);
}

TC_API int tc_put_serve(tc_put *p, const char *id, const void *digests,
			uint64_t nchunks)
{
	struct tc__buf b = TC_BUF_INIT;
	struct reply rep;
	size_t off;
	int rc;

	if (!p || !id || (nchunks && !digests) || p->device >= 0)
		return p ? tc__client_err(p->c, TC_EINVAL,
					  "tc_put_serve: a host put, an id "
					  "and its digests") :
			   TC_EINVAL;
	off = tc__client_begin(p->c, &b, TC_MSG_PUT_SERVE);
	tc__buf_put_u64(&b, p->handle);
	tc__buf_put_str(&b, id);
	tc__buf_put_u64(&b, nchunks);
	if (nchunks)
		tc__buf_put(&b, digests, nchunks * TC_DIGEST_BYTES);
	tc__frame_finish(&b, off);
	rc = b.oom ? -ENOMEM : tc__client_call(p->c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc == 0)
		reply_release(&rep);
	return rc;
}

TC_API int tc_put_have(tc_put *p, const uint64_t *chunks, uint32_t n,
		       uint32_t flags)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off;
	int rc;

	if (!p || (n && !chunks) || n > 65536 || (flags & ~TC_HAVE_FETCHING))
		return TC_EINVAL;
	off = tc__client_begin(p->c, &b, TC_MSG_PUT_HAVE);
	tc__buf_put_u64(&b, p->handle);
	tc__buf_put_u32(&b, flags);
	tc__buf_put_u32(&b, n);
	for (uint32_t i = 0; i < n; i++)
		tc__buf_put_u64(&b, chunks[i]);
	tc__frame_finish(&b, off);
	rc = b.oom ? -ENOMEM : tc__client_send(p->c, &b);
	tc__buf_release(&b);
	return rc;
}
