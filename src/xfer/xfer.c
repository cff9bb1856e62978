/*
 * xfer.c - one transfer from a source to a sink (xfer.h): the engines of
 * loader.c and gpu_loader.c, and the driver's copies, behind one call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/compiler.h"
#include "common/io.h"
#include "net/ev.h"
#include "tcast/errors.h"
#include "xfer.h"

/* Allocate an empty GPU sink. */
static int sink_alloc(struct tc__xfer *x, char *err, size_t errlen)
{
	uint64_t t0 = tc__now_ns();
	int rc;

	if (x->gpu_dst->dptr)
		return 0; /* given: refilled in place */
	rc = tc__gpu_alloc(x->ordinal, x->alloc_bytes, 0, x->gpu_dst, err,
			   errlen);
	x->alloc_seconds = (double)(tc__now_ns() - t0) / 1e9;
	if (rc < 0)
		x->alloc_oom = tc__gpu_last_error_oom();
	return rc;
}

/* Bytes [off, off + n) of the host source into the GPU sink at the same
 * offset: from pinned memory one copy per registration it spans (a copy
 * across two may be treated as pageable), else through the staging rings
 * or one direct write, as the whole would go. */
static int host_range(struct tc__xfer *x, uint64_t off, uint64_t n, char *err,
		      size_t errlen)
{
	const uint8_t *host = x->host;
	struct tc__gpu_mem *dst = x->gpu_dst;
	struct tc__gpu_mem sub;
	int rc = 0;

	if (n == 0)
		return 0;
	x->host_bytes += n;
	if (x->pin && x->pin->nsegs) {
		while (n > 0 && rc == 0) {
			uint64_t seg_end =
				(off / x->pin->seg + 1) * x->pin->seg;
			uint64_t k = TC_MIN(n, seg_end - off);

			rc = tc__gpu_htod(dst->device, dst->dptr + off,
					  x->pin->base + off, k, NULL, err,
					  errlen);
			off += k;
			n -= k;
		}
		return rc;
	}
	if (x->staged) {
		sub = *dst;
		sub.dptr += off;
		sub.size -= off;
		return tc__gpu_copy_host(host + off, n, &sub, x->nthreads, err,
					 errlen);
	}
	return tc__gpu_mem_write(dst, off, host + off, n, NULL, err, errlen);
}

/* Bytes [lo, hi) of the sink: the parts that hold some of them from
 * their GPUs, the rest from the host source.  Gated parts are skipped
 * (gated_parts copies them at the end). */
static int span(struct tc__xfer *x, uint64_t lo, uint64_t hi, char *err,
		size_t errlen)
{
	uint64_t at = lo;
	int rc = 0;

	for (uint32_t i = 0; i < x->nparts && rc == 0; i++) {
		const struct tc__xfer_part *p = &x->parts[i];
		uint64_t a = TC_MAX(p->dst_off, lo);
		uint64_t b = TC_MIN(p->dst_off + p->len, hi);

		if (b <= a)
			continue;
		rc = host_range(x, at, a - at, err, errlen);
		if (rc == 0 && !p->gate)
			rc = tc__gpu_peer_copy(x->gpu_dst, a, p->src,
					       p->src_off + (a - p->dst_off),
					       b - a, NULL, err, errlen);
		if (rc == 0 && !p->gate)
			x->part_bytes += b - a;
		at = b;
	}
	if (rc == 0)
		rc = host_range(x, at, hi - at, err, errlen);
	return rc;
}

/* The gated parts, last: each copied once its source says its bytes
 * are in, else (the other transfer failed or stalled, or the copy
 * failed) from the host source. */
static int gated_parts(struct tc__xfer *x, char *err, size_t errlen)
{
	int rc = 0;

	for (uint32_t i = 0; i < x->nparts && rc == 0; i++) {
		const struct tc__xfer_part *p = &x->parts[i];
		int w;

		if (!p->gate)
			continue;
		w = x->part_wait(p->gate, p);
		if (w == 0) {
			w = tc__gpu_peer_copy(x->gpu_dst, p->dst_off, p->src,
					      p->src_off, p->len, NULL, err,
					      errlen);
			x->part_end(p->gate);
			if (w == 0) {
				x->part_bytes += p->len;
				x->gated_bytes += p->len;
				continue;
			}
			err[0] = '\0'; /* the host source serves */
		}
		rc = host_range(x, p->dst_off, p->len, err, errlen);
	}
	return rc;
}

/* Parts and first ranges are what the header says they are. */
static int parts_check(const struct tc__xfer *x, char *err, size_t errlen)
{
	uint64_t at = 0;
	uint32_t k = 0;

	for (uint32_t i = 0; i < x->nparts; i++) {
		const struct tc__xfer_part *p = &x->parts[i];

		if (p->dst_off < at || p->len > x->bytes ||
		    p->dst_off > x->bytes - p->len ||
		    (p->gate && (!x->part_wait || !x->part_end))) {
			snprintf(err, errlen,
				 "part %u (%llu bytes at %llu) overlaps the "
				 "one before, ends past %llu bytes or has no "
				 "wait",
				 i, (unsigned long long)p->len,
				 (unsigned long long)p->dst_off,
				 (unsigned long long)x->bytes);
			return TC_EINVAL;
		}
		at = p->dst_off + p->len;
	}
	at = 0;
	for (uint32_t f = 0; f < x->nfirst; f++) {
		const struct tc__xfer_range *r = &x->first[f];

		if (r->off < at || r->len > x->bytes ||
		    r->off > x->bytes - r->len) {
			snprintf(err, errlen,
				 "first range %u (%llu bytes at %llu) overlaps "
				 "the one before or ends past %llu bytes",
				 f, (unsigned long long)r->len,
				 (unsigned long long)r->off,
				 (unsigned long long)x->bytes);
			return TC_EINVAL;
		}
		at = r->off + r->len;
		/* A first range is announced complete: it cannot wait. */
		for (; k < x->nparts &&
		       x->parts[k].dst_off + x->parts[k].len <= r->off;
		     k++)
			;
		for (uint32_t i = k; i < x->nparts && x->parts[i].dst_off < at;
		     i++)
			if (x->parts[i].gate) {
				snprintf(err, errlen,
					 "first range %u holds a gated part",
					 f);
				return TC_EINVAL;
			}
	}
	return 0;
}

/* HOST -> GPU with parts or first ranges: the first ranges, each
 * announced once complete; then the rest (ready parts from their GPUs,
 * the gaps from the host source); then the gated parts, which may wait
 * for their sources. */
static int host_with_parts(struct tc__xfer *x, char *err, size_t errlen)
{
	uint64_t at = 0;
	int rc;

	rc = parts_check(x, err, errlen);
	for (uint32_t f = 0; f < x->nfirst && rc == 0; f++) {
		const struct tc__xfer_range *r = &x->first[f];

		rc = span(x, r->off, r->off + r->len, err, errlen);
		if (rc == 0 && x->first_done)
			x->first_done(x->first_arg, x, f);
	}
	for (uint32_t f = 0; f < x->nfirst && rc == 0; f++) {
		rc = span(x, at, x->first[f].off, err, errlen);
		at = x->first[f].off + x->first[f].len;
	}
	if (rc == 0)
		rc = span(x, at, x->bytes, err, errlen);
	if (rc == 0)
		rc = gated_parts(x, err, errlen);
	return rc;
}

static int to_gpu(struct tc__xfer *x, char *err, size_t errlen)
{
	const struct tc__gpu_load_opts def = { .nthreads = x->nthreads,
					       .depth = 2,
					       .direct = -1,
					       .stage_chunks = 1 };
	struct tc__gpu_mem *dst = x->gpu_dst;

	switch (x->from) {
	case TC_XFER_FROM_FILES:
		if (x->plan)
			return tc__gpu_load_plan(x->files, x->plan, dst,
						 x->load ? x->load : &def,
						 x->chunks, x->prog, &x->stats,
						 err, errlen);
		return tc__gpu_load_source(x->files, dst,
					   x->load ? x->load : &def, x->chunks,
					   x->prog, &x->stats, err, errlen);
	case TC_XFER_FROM_HOST:
		if (x->nparts || x->nfirst)
			return host_with_parts(x, err, errlen);
		x->host_bytes = x->bytes;
		if (x->pin && x->pin->nsegs)
			return tc__gpu_copy_pinned(x->pin, x->bytes, dst, err,
						   errlen);
		if (x->staged)
			return tc__gpu_copy_host(x->host, x->bytes, dst,
						 x->nthreads, err, errlen);
		return tc__gpu_mem_write(dst, 0, x->host, x->bytes, NULL, err,
					 errlen);
	case TC_XFER_FROM_GPU:
		return tc__gpu_dtod(x->ordinal, dst->dptr, x->gpu_src->dptr,
				    x->bytes, NULL, err, errlen);
	case TC_XFER_FROM_PEER:
		return tc__gpu_peer_copy(dst, 0, x->gpu_src, 0, x->bytes, NULL,
					 err, errlen);
	}
	return TC_EINVAL;
}

/* GPU bytes out to host memory, a file or a native temporary.  Where
 * digests are wanted, the chunk-hash kernels on that GPU go first (no
 * host CPU); else each chunk is hashed on the host as it arrives. */
static int from_gpu_out(struct tc__xfer *x, const struct tc__gpu_out *out,
			char *err, size_t errlen)
{
	struct tc__digest *chunks = x->chunks;
	int rc;

	if (x->gpu_src->size < x->bytes) {
		snprintf(err, errlen,
			 "cannot read %llu bytes of a %llu-byte GPU allocation",
			 (unsigned long long)x->bytes,
			 (unsigned long long)x->gpu_src->size);
		return TC_EINVAL;
	}
	if (chunks && !getenv("TCAST_GPU_HASH_HOST")) {
		rc = tc__gpu_hash_chunks_dev(x->gpu_src, x->bytes, chunks, err,
					     errlen);
		if (rc == TC_ENODEV)
			return rc;
		if (rc == 0)
			chunks = NULL; /* hashed already */
	}
	return tc__gpu_read_out(x->gpu_src, x->bytes, x->nthreads, out, chunks,
				&x->sink_rc, err, errlen);
}

static int to_host(struct tc__xfer *x, char *err, size_t errlen)
{
	struct tc__gpu_out out = { .host = x->host_dst, .fd = x->host_fd };
	int rc;

	switch (x->from) {
	case TC_XFER_FROM_FILES:
		if (x->plan) {
			snprintf(err, errlen,
				 "a range plan (a view of a file) loads "
				 "straight to a GPU only");
			return TC_ENOTSUP;
		}
		if (!x->host_dst)
			return tc__load_source_fd(x->files, x->host_fd,
						  x->nthreads, x->chunks,
						  x->prog, err, errlen);
		return tc__load_source(x->files, x->host_dst, x->nthreads,
				       x->chunks, x->prog, err, errlen);
	case TC_XFER_FROM_HOST:
		rc = x->chunks ? tc__hash_chunks(x->host, x->bytes, x->nthreads,
						 x->chunks) :
				 0;
		if (rc < 0) {
			snprintf(err, errlen, "cannot hash: %s",
				 tc_strerror(rc));
			return rc;
		}
		if (x->host_dst)
			memcpy(x->host_dst, x->host, x->bytes);
		else
			x->sink_rc = tc__pwrite_exact(x->host_fd, x->host,
						      x->bytes, 0);
		return 0;
	case TC_XFER_FROM_GPU:
	case TC_XFER_FROM_PEER: /* read out by its own device */
		return from_gpu_out(x, &out, err, errlen);
	}
	return TC_EINVAL;
}

static int to_disk(struct tc__xfer *x, char *err, size_t errlen)
{
	struct tc__gpu_out out = { .fd = -1, .w = x->disk_dst };

	switch (x->from) {
	case TC_XFER_FROM_FILES:
		break;
	case TC_XFER_FROM_HOST:
		/* The hashing threads and the writers read the same bytes
		 * at once: the CPU and the disk work together. */
		return tc__hash_chunks_write(x->host, x->bytes, x->nthreads,
					     x->chunks, x->disk_dst,
					     TC_MAX(x->writers, 1),
					     &x->sink_rc);
	case TC_XFER_FROM_GPU:
	case TC_XFER_FROM_PEER:
		return from_gpu_out(x, &out, err, errlen);
	}
	snprintf(err, errlen,
		 "a transfer from files to a disk copy is not implemented "
		 "(the GPU loader's tee writes one)");
	return TC_ENOTSUP;
}

int tc__xfer_run(struct tc__xfer *x, char *err, size_t errlen)
{
	uint64_t n;
	int rc;

	if (x->from == TC_XFER_FROM_FILES)
		x->bytes = x->files->table.total_bytes;
	n = x->bytes;
	x->sink_rc = 0;
	x->part_bytes = 0;
	x->gated_bytes = 0;
	x->host_bytes = 0;
	if (x->to != TC_XFER_TO_GPU) {
		rc = x->to == TC_XFER_TO_HOST ? to_host(x, err, errlen) :
						to_disk(x, err, errlen);
		if (rc == 0 && x->sink_rc < 0)
			snprintf(err, errlen, "cannot write the copy: %s",
				 tc_strerror(x->sink_rc));
		return rc;
	}
	rc = sink_alloc(x, err, errlen);
	if (rc == 0)
		rc = to_gpu(x, err, errlen);
	/* Clients see only what the artifact says: zero the tail. */
	if (rc == 0 && x->gpu_dst->size > n && !x->keep_tail)
		rc = tc__gpu_memset8(x->ordinal, x->gpu_dst->dptr + n, 0,
				     x->gpu_dst->size - n, NULL, err, errlen);
	return rc;
}
