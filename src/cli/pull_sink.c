/*
 * pull_sink.c - a pull from peers into a local daemon: the receiver
 * (src/peer/pull.c) writes straight into a put's memory (the daemon's
 * memfd, mapped here), then the put is committed, so the daemon hashes
 * the whole artifact once more and registers it under its id.  The id it
 * computes must be the one the sources announced: a second, end-to-end
 * check on top of the per-chunk digests.  Used by `tcast pull` and by
 * the daemon's peer server answering a replication request (policy ha).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "peer/peer.h"
#include "tcast/errors.h"

struct sink {
	tc_client *c;
	const struct tc_opts *o;
	tc_put *put;
	bool serving; /* the daemon serves what we verify */
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
	/* The bytes go in through sink_write: the put's mapping is never
	 * touched here. */
	for (uint32_t i = 0; i < t->ntensors; i++)
		if (tc_put_offset(s->put, i) != t->tensors[i].offset) {
			snprintf(err, errlen,
				 "the local daemon lays '%s' out elsewhere "
				 "than the source",
				 t->tensors[i].name);
			rc = TC_EINVAL;
			goto out;
		}
	rc = 0;
out:
	free(mj);
	json_decref(meta);
	free(d);
	return rc;
}

static int sink_write(void *arg, uint64_t off, const void *src, uint64_t n,
		      char *err, size_t errlen)
{
	struct sink *s = arg;
	int rc = tc_put_write(s->put, off, src, n);

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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cli_pull_into(tc_client *c, const struct tc_opts *o,
		  struct tc__peer_pull_opts *po, struct tc__peer_pull_result *r,
		  struct tc_result *res, uint64_t *t_pulled_ns, char *err,
		  size_t errlen)
{
	struct sink sk = { .c = c, .o = o };
	int rc;

	po->sink.arg = &sk;
	po->sink.begin = sink_begin;
	po->sink.write = sink_write;
	po->sink.serve = sink_serve;
	po->sink.have = sink_have;
	rc = tc__peer_pull(po, r, err, errlen);
	if (rc < 0) {
		tc_put_abort(sk.put);
		return rc;
	}
	if (t_pulled_ns)
		*t_pulled_ns = now_ns();
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
