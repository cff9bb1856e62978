/*
 * pull_sink.c - a pull from peers into a local daemon: the receiver
 * (src/peer/pull.c) writes straight into a put's memory (the daemon's
 * memfd, mapped here), then the put is committed, so the daemon hashes
 * the whole artifact once more and registers it under its id.  The id it
 * computes must be the one the sources announced: a second, end-to-end
 * check on top of the per-chunk digests.  Used by `tcast pull` and by
 * the daemon's peer server answering a replication request (policy ha).
 *
 * A view pull (`tcast pull REF --view SPEC`) plans the view against the
 * verified manifest's table, pulls only the chunks that cover its byte
 * ranges into scratch memory, and has the local daemon keep the view
 * (tc_view_attach: an artifact of its own under the view id, as
 * `tcast inspect --view --keep` makes from a local replica).
 *
 * With TC_OPT_DEVICE the put is a GPU put (CREATE_GPU: the daemon's GPU
 * tier allocates the replica and this process maps it writable): each
 * stream receives a chunk into a pinned staging buffer of its own, the
 * receiver verifies it there (BLAKE3 on the CPU), and only then is it
 * copied host to device into place.  The commit (SEAL_GPU) hashes the
 * replica once more in the daemon, on the GPU where its kernels run, and
 * keeps it as the artifact's replica on that GPU: no host copy is made.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/mman.h>

#include "cli.h"
#include "client/client_internal.h"
#include "common/clock.h"
#include "gpu/vmm.h"
#include "peer/peer.h"
#include "tcast/errors.h"
#include "tcast/view.h"

struct sink {
	tc_client *c;
	const struct tc_opts *o;
	tc_put *put;
	bool serving;	/* the daemon serves what we verify */
	int32_t device; /* a GPU put's CUDA ordinal, else -1 */
	uint64_t dbase; /* its device address of byte 0 */
	char err[512];
};

/* Create the local artifact's memory with the manifest's tensors; the
 * daemon lays them out as the source did (the manifest's layout was
 * checked to be the canonical one), which is checked here too. */
static int sink_begin(void *arg, const char *id, const struct tc__table *t,
		      uint8_t **base, char *err, size_t errlen)
{
	struct sink *s = arg;
	struct tc_tensor_desc *d;
	json_t *meta = json_object();
	char *mj = NULL;
	int rc;

	*base = NULL;
	d = calloc(t->ntensors ? t->ntensors : 1, sizeof(*d));
	if (!d || !meta) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < t->ntensors; i++) {
		d[i].name = t->tensors[i].name;
		d[i].dtype = t->tensors[i].dtype;
		d[i].ndim = t->tensors[i].ndim;
		d[i].shape = t->tensors[i].shape;
	}
	for (uint32_t i = 0; i < t->nmeta; i++)
		json_object_set_new(meta, t->meta[i].key,
				    json_string(t->meta[i].val));
	mj = json_dumps(meta, JSON_COMPACT);
	rc = tc_put_begin(s->c, d, t->ntensors, mj, s->o, &s->put);
	if (rc < 0) {
		snprintf(err, errlen, "local daemon: %s",
			 tc_client_errmsg(s->c));
		goto out;
	}
	/* The GPU put takes the bytes through write() from pinned staging;
	 * the host put through write() (tc_put_write: its file or its
	 * mapping, whichever is cheaper) or, on huge pages, in place. */
	for (uint32_t i = 0; i < t->ntensors; i++)
		if (tc_put_offset(s->put, i) != t->tensors[i].offset) {
			snprintf(err, errlen,
				 "the local daemon lays '%s' out elsewhere "
				 "than the source",
				 t->tensors[i].name);
			rc = TC_EINVAL;
			goto out;
		}
	if (s->device >= 0)
		s->dbase = (uint64_t)(uintptr_t)tc_put_data(s->put, 0) -
			   (t->ntensors ? t->tensors[0].offset : 0);
	else
		/* On huge pages a fault is cheap: chunks are received into
		 * the put's mapping and verified there, no copy out of a
		 * buffer (on 4 KiB pages they go through write()). */
		*base = tc__put_huge_map(s->put);
	rc = 0;
out:
	free(mj);
	json_decref(meta);
	free(d);
	return rc;
}

/* A verified chunk into the host put, through its memfd's file. */
static int sink_write_host(void *arg, uint64_t off, const uint8_t *data,
			   uint32_t n, char *err, size_t errlen)
{
	struct sink *s = arg;
	int rc = tc_put_write(s->put, off, data, n);

	if (rc < 0)
		snprintf(err, errlen, "local daemon's memory: %s",
			 tc_client_errmsg(s->c));
	return rc;
}

/* Serve what we verify while we pull: the local daemon sends those
 * chunks to other receivers (a fan-out becomes a pipeline). */
static void sink_serve(void *arg, const char *id,
		       const struct tc__digest *chunks, uint64_t nchunks)
{
	struct sink *s = arg;

	if (tc_put_serve(s->put, id, chunks, nchunks) < 0)
		snprintf(s->err, sizeof(s->err), "%s", tc_client_errmsg(s->c));
	else
		s->serving = true;
}

static void sink_have(void *arg, const uint64_t *chunks, uint32_t n,
		      bool fetching)
{
	struct sink *s = arg;

	if (s->serving)
		tc_put_have(s->put, chunks, n, fetching ? TC_HAVE_FETCHING : 0);
}

/* A GPU put's staging: TC_CHUNK_BYTES per stream, pinned when the driver
 * lets us (a pageable buffer still works, slower). */
static int sink_stage(void *arg, uint8_t **buf, char *err, size_t errlen)
{
	const struct sink *s = arg;
	void *p = NULL;

	if (posix_memalign(&p, 4096, TC_CHUNK_BYTES)) {
		snprintf(err, errlen, "no memory for a staging buffer");
		return -ENOMEM;
	}
	memset(p, 0, TC_CHUNK_BYTES); /* fault in before pinning */
	/* Unpinned, the copies still work (unstage's unregister then
	 * fails, harmlessly). */
	(void)tc__gpu_host_register(s->device, p, TC_CHUNK_BYTES, 0, NULL, 0);
	*buf = p;
	return 0;
}

static void sink_unstage(void *arg, uint8_t *buf)
{
	struct sink *s = arg;

	tc__gpu_host_unregister(s->device, buf, NULL, 0);
	free(buf);
}

/* A verified chunk, from staging into the GPU replica. */
static int sink_write_gpu(void *arg, uint64_t off, const uint8_t *data,
			  uint32_t n, char *err, size_t errlen)
{
	struct sink *s = arg;

	return tc__gpu_htod(s->device, s->dbase + off, data, n, NULL, err,
			    errlen);
}

int cli_pull_into(tc_client *c, const struct tc_opts *o,
		  struct tc__peer_pull_opts *po, struct tc__peer_pull_result *r,
		  struct tc_result *res, uint64_t *t_pulled_ns, char *err,
		  size_t errlen)
{
	struct sink sk = { .c = c, .o = o, .device = -1 };
	int rc;

	po->sink.arg = &sk;
	po->sink.begin = sink_begin;
	po->sink.write = sink_write_host;
	if (o->field_mask & TC_OPT_DEVICE) {
		/* Into a GPU replica: nothing to serve while it fills (the
		 * sealed replica is served, from GPU memory). */
		sk.device = o->device;
		po->sink.stage = sink_stage;
		po->sink.unstage = sink_unstage;
		po->sink.write = sink_write_gpu;
	} else {
		po->sink.serve = sink_serve;
		po->sink.have = sink_have;
	}
	rc = tc__peer_pull(po, r, err, errlen);
	if (rc < 0) {
		tc_put_abort(sk.put);
		return rc;
	}
	if (t_pulled_ns)
		*t_pulled_ns = tc__mono_ns();
	rc = tc_put_commit(sk.put, res);
	if (rc < 0) {
		snprintf(err, errlen, "%s", tc_client_errmsg(c));
		return rc;
	}
	if (strcmp(res->id, r->id)) {
		/* Cannot happen unless the daemon and the sources disagree
		 * on the id's definition: do not leave it behind. */
		tc_rm(c, res->id);
		snprintf(err, errlen,
			 "the local daemon made '%s' of what the sources call "
			 "'%s'",
			 res->id, r->id);
		return TC_EDIGEST;
	}
	return 0;
}

/* ------------------------------------------------------------ a view */

struct vsink {
	tc_client *c;
	const tc_view *v;
	tc_view_plan *plan;
	uint8_t *mem; /* the artifact's byte space; only wanted chunks land */
	uint64_t len;
	bool held; /* the daemon keeps this view already: pull nothing */
};

static int vsink_begin(void *arg, const char *id, const struct tc__table *t,
		       uint8_t **base, char *err, size_t errlen)
{
	struct vsink *s = arg;
	struct tc_tensor_info *ti;
	tc_artifact *a;
	int rc;

	*base = NULL;
	/* Untouched pages of an anonymous mapping cost nothing: only the
	 * chunks pulled take memory. */
	s->len = t->total_bytes ? t->total_bytes : 1;
	s->mem = mmap(NULL, s->len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (s->mem == MAP_FAILED) {
		rc = -errno;
		s->mem = NULL;
		snprintf(err, errlen, "cannot map %llu bytes of scratch: %s",
			 (unsigned long long)s->len, strerror(-rc));
		return rc;
	}
	ti = calloc(t->ntensors ? t->ntensors : 1, sizeof(*ti));
	if (!ti)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->ntensors; i++) {
		ti[i].name = t->tensors[i].name;
		ti[i].dtype = t->tensors[i].dtype;
		ti[i].ndim = t->tensors[i].ndim;
		memcpy(ti[i].shape, t->tensors[i].shape, sizeof(ti[i].shape));
		ti[i].offset = t->tensors[i].offset;
		ti[i].nbytes = t->tensors[i].nbytes;
	}
	rc = tc_view_plan_memory(s->v, id, ti, t->ntensors, t->total_bytes,
				 s->mem, &s->plan, err, errlen);
	free(ti);
	if (rc < 0)
		return rc;
	/* Kept here already (same view of the same artifact): nothing to
	 * pull; tc_view_attach checks its table. */
	if (tc_attach(s->c, tc_view_plan_id(s->plan), &a) == 0) {
		s->held = true;
		tc_artifact_close(a);
	}
	*base = s->mem;
	return 0;
}

static int vsink_want(void *arg, uint8_t *bits, uint64_t nchunks, char *err,
		      size_t errlen)
{
	struct vsink *s = arg;
	int64_t n;

	if (s->held)
		return 0;
	n = tc_view_plan_chunks(s->plan, TC_CHUNK_BYTES, bits, nchunks);
	if (n < 0) {
		snprintf(err, errlen, "view: cannot list its chunks");
		return (int)n;
	}
	return 0;
}

int cli_pull_view(tc_client *c, const tc_view *v, int32_t device,
		  struct tc__peer_pull_opts *po, struct tc__peer_pull_result *r,
		  struct cli_view_pulled *out, uint64_t *t_pulled_ns, char *err,
		  size_t errlen)
{
	struct vsink sk = { .c = c, .v = v };
	tc_artifact *kept = NULL;
	uint32_t flags = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	po->sink.arg = &sk;
	po->sink.begin = vsink_begin;
	po->sink.want = vsink_want;
	rc = tc__peer_pull(po, r, err, errlen);
	if (t_pulled_ns)
		*t_pulled_ns = tc__mono_ns();
	if (rc == 0)
		rc = tc_view_attach(c, sk.plan, device, &kept, &flags, err,
				    errlen);
	if (rc == 0) {
		struct tc_view_stats st;

		tc_view_plan_stats(sk.plan, &st);
		snprintf(out->kept_id, sizeof(out->kept_id), "%s",
			 tc_artifact_id(kept));
		snprintf(out->view_id, sizeof(out->view_id), "%s",
			 tc_view_plan_id(sk.plan));
		out->bytes = tc_view_plan_size(sk.plan);
		out->bytes_needed = st.bytes_needed;
		out->held = (flags & TC_VIEW_ATTACH_CACHED) != 0;
		tc_artifact_close(kept);
	}
	tc_view_plan_free(sk.plan);
	if (sk.mem)
		munmap(sk.mem, sk.len);
	return rc;
}
