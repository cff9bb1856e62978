/*
 * view_api.c - the public view ABI (include/tcast/view.h) over the planner
 * and executors of src/format/view.h.
 *
 * A plan holds what it reads from: a reference on an attached artifact
 * (its host mapping), an open safetensors source, or the caller's memory
 * holding an artifact's byte space (a view pulled from peers).  Counters are
 * atomic so tensors of one plan may be realized from several threads.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "format/format.h"
#include "format/view.h"
#include "tcast/errors.h"
#include "tcast/view.h"
#include "view_gpu.h"

struct tc_view {
	struct tc__view_spec spec;
};

struct tc_view_plan {
	struct tc__view_plan plan;
	struct tc_tensor_info *infos; /* owned, plan.out.ntensors entries */
	tc_artifact *a;		      /* a reference, or NULL */
	struct tc__source *src;	      /* owned, or NULL */
	const uint8_t *mem;	      /* tc_view_plan_memory: borrowed */
	uint64_t mem_len;
	char of[TC_VIEW_ID_LEN + 1]; /* the artifact id, when a is NULL */
	uint64_t header_bytes;
	_Atomic uint64_t bytes_read;
	_Atomic uint64_t reads;
	_Atomic uint64_t kernel_tensors; /* GPU realizations: by the kernel */
	_Atomic uint64_t host_tensors;	 /* and on the host */
	char kernel_why[256];		 /* why not the kernel, or "" */
};

static void set_err(char *err, size_t errlen, const char *fmt, const char *s)
{
	if (err && errlen)
		snprintf(err, errlen, fmt, s);
}

/* ------------------------------------------------------------------ spec */

TC_API int tc_view_new(tc_view **out)
{
	tc_view *v;
	int ret;

	*out = NULL;
	v = tc__calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	ret = tc__view_spec_init(&v->spec);
	if (ret < 0) {
		tc__free(v);
		return ret;
	}
	*out = v;
	return 0;
}

TC_API int tc_view_parse(const char *json, tc_view **out, char *err,
			 size_t errlen)
{
	tc_view *v;
	int ret;

	*out = NULL;
	if (!json) {
		set_err(err, errlen, "%s", "view spec: NULL");
		return TC_EINVAL;
	}
	v = tc__calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	ret = tc__view_spec_parse(json, strlen(json), &v->spec, err, errlen);
	if (ret < 0) {
		tc__free(v);
		return ret;
	}
	*out = v;
	return 0;
}

TC_API int tc_view_select(tc_view *v, const char *name)
{
	return v ? tc__view_spec_select(&v->spec, name) : TC_EINVAL;
}

TC_API int tc_view_slice(tc_view *v, const char *name, uint32_t dim,
			 uint64_t start, uint64_t stop)
{
	return v ? tc__view_spec_slice(&v->spec, name, dim, start, stop) :
		   TC_EINVAL;
}

TC_API int tc_view_transpose(tc_view *v, const char *name, uint32_t dim0,
			     uint32_t dim1)
{
	return v ? tc__view_spec_transpose(&v->spec, name, dim0, dim1) :
		   TC_EINVAL;
}

TC_API int tc_view_cast(tc_view *v, const char *name, int32_t dtype)
{
	return v ? tc__view_spec_cast(&v->spec, name, dtype) : TC_EINVAL;
}

TC_API int tc_view_push(tc_view *v)
{
	return v ? tc__view_spec_push(&v->spec) : TC_EINVAL;
}

TC_API void tc_view_free(tc_view *v)
{
	if (!v)
		return;
	tc__view_spec_release(&v->spec);
	tc__free(v);
}

/* ------------------------------------------------------------------ plan */

static int finish_plan(tc_view_plan *p)
{
	uint32_t n = p->plan.out.ntensors;

	p->infos = tc__calloc(n ? n : 1, sizeof(*p->infos));
	if (!p->infos)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__tensor *t = &p->plan.out.tensors[i];
		struct tc_tensor_info *x = &p->infos[i];

		x->name = t->name;
		x->dtype = t->dtype;
		x->ndim = t->ndim;
		x->offset = t->offset;
		x->nbytes = t->nbytes;
		memcpy(x->shape, t->shape, sizeof(x->shape));
	}
	return 0;
}

TC_API void tc_view_plan_free(tc_view_plan *p)
{
	if (!p)
		return;
	tc__view_plan_release(&p->plan);
	tc__free(p->infos);
	if (p->a)
		tc_artifact_close(p->a);
	tc__source_free(p->src);
	tc__free(p);
}

/* Plan `v` against a table given as tensor infos (names borrowed). */
static int plan_table(const tc_view *v, const char *id,
		      const struct tc_tensor_info *ti, uint32_t n,
		      uint64_t size, tc_view_plan **out, char *err,
		      size_t errlen)
{
	struct tc__table t;
	tc_view_plan *p;
	int ret;

	tc__table_init(&t);
	t.tensors = tc__calloc(n ? n : 1, sizeof(*t.tensors));
	if (!t.tensors)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct tc__tensor *x = &t.tensors[i];

		x->name = (char *)ti[i].name;
		x->dtype = (uint8_t)ti[i].dtype;
		x->ndim = (uint8_t)ti[i].ndim;
		memcpy(x->shape, ti[i].shape, sizeof(x->shape));
		x->nbytes = ti[i].nbytes;
		x->offset = ti[i].offset;
	}
	t.ntensors = n;
	t.total_bytes = size;
	p = tc__calloc(1, sizeof(*p));
	if (!p) {
		ret = -ENOMEM;
		goto out_free_tensors;
	}
	ret = tc__view_plan(&t, id, &v->spec, &p->plan, err, errlen);
	if (ret < 0)
		goto out_free_plan;
	ret = finish_plan(p);
	if (ret < 0)
		goto out_release_plan;
	tc__free(t.tensors); /* names were borrowed */
	*out = p;
	return 0;

out_release_plan:
	tc__view_plan_release(&p->plan);
out_free_plan:
	tc__free(p);
out_free_tensors:
	tc__free(t.tensors);
	return ret;
}

TC_API int tc_view_plan_artifact(const tc_view *v, tc_artifact *a,
				 tc_view_plan **out, char *err, size_t errlen)
{
	int ret;

	*out = NULL;
	if (!v || !a) {
		set_err(err, errlen, "%s", "view: NULL spec or artifact");
		return TC_EINVAL;
	}
	ret = plan_table(v, tc_artifact_id(a), tc_artifact_tensors(a),
			 tc_artifact_count(a), tc_artifact_size(a), out, err,
			 errlen);
	if (ret < 0)
		return ret;
	tc_artifact_ref(a);
	(*out)->a = a;
	return 0;
}

TC_API int tc_view_plan_memory(const tc_view *v, const char *artifact_id,
			       const struct tc_tensor_info *tensors, uint32_t n,
			       uint64_t size, const void *base,
			       tc_view_plan **out, char *err, size_t errlen)
{
	int ret;

	*out = NULL;
	if (!v || !artifact_id || (n && !tensors) || (size && !base)) {
		set_err(err, errlen, "%s",
			"view: NULL spec, artifact id, table or memory");
		return TC_EINVAL;
	}
	if (strlen(artifact_id) > TC_VIEW_ID_LEN) {
		set_err(err, errlen, "%s", "view: artifact id too long");
		return TC_EINVAL;
	}
	for (uint32_t i = 0; i < n; i++)
		if (tensors[i].offset > size ||
		    tensors[i].nbytes > size - tensors[i].offset) {
			set_err(err, errlen,
				"view: tensor '%s' lies outside the byte space",
				tensors[i].name ? tensors[i].name : "?");
			return TC_EINVAL;
		}
	ret = plan_table(v, artifact_id, tensors, n, size, out, err, errlen);
	if (ret < 0)
		return ret;
	(*out)->mem = base;
	(*out)->mem_len = size;
	snprintf((*out)->of, sizeof((*out)->of), "%s", artifact_id);
	return 0;
}

TC_API int64_t tc_view_plan_chunks(const tc_view_plan *p, uint64_t chunk_bytes,
				   uint8_t *bits, uint64_t nchunks)
{
	int64_t set = 0;

	if (!p || !chunk_bytes || (nchunks && !bits))
		return TC_EINVAL;
	for (uint32_t i = 0; i < p->plan.out.ntensors; i++) {
		const struct tc__view_tplan *t = &p->plan.t[i];

		for (uint32_t r = 0; r < t->nruns; r++) {
			const struct tc__view_run *x = &t->runs[r];
			/* Gaps shorter than a chunk leave no chunk of the
			 * span untouched: mark the span at once. */
			bool span = x->count == 1 ||
				    x->stride - x->len < chunk_bytes;
			uint64_t pieces = span ? 1 : x->count;
			uint64_t len =
				span ? (x->count - 1) * x->stride + x->len :
				       x->len;

			if (!len)
				continue;
			for (uint64_t j = 0; j < pieces; j++) {
				uint64_t a = x->src + j * x->stride;
				uint64_t k0 = a / chunk_bytes;
				uint64_t k1 = (a + len - 1) / chunk_bytes;

				for (uint64_t k = k0; k <= k1 && k < nchunks;
				     k++)
					if (!(bits[k / 8] & (1u << k % 8))) {
						bits[k / 8] |=
							(uint8_t)(1u << k % 8);
						set++;
					}
			}
		}
	}
	return set;
}

TC_API int tc_view_plan_path(const tc_view *v, const char *path,
			     tc_view_plan **out, char *err, size_t errlen)
{
	struct tc__source *src;
	tc_view_plan *p;
	char *id, *real;
	size_t idlen;
	int ret;

	*out = NULL;
	if (!v || !path) {
		set_err(err, errlen, "%s", "view: NULL spec or path");
		return TC_EINVAL;
	}
	ret = tc__source_open(path, &src, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__table_layout(&src->table);
	if (ret < 0) {
		set_err(err, errlen, "view: '%s': too large to lay out", path);
		goto out_free_source;
	}
	p = tc__calloc(1, sizeof(*p));
	real = realpath(path, NULL);
	idlen = strlen(real ? real : path) + 6;
	id = tc__malloc(idlen);
	if (!p || !id) {
		tc__free(p);
		tc__free(id);
		free(real);
		ret = -ENOMEM;
		goto out_free_source;
	}
	snprintf(id, idlen, "path:%s", real ? real : path);
	free(real);
	ret = tc__view_plan(&src->table, id, &v->spec, &p->plan, err, errlen);
	tc__free(id);
	if (ret < 0)
		goto out_free_plan;
	ret = finish_plan(p);
	if (ret < 0)
		goto out_release_plan;
	/* Each file's header: data starts 8 + N bytes in (tensors lie in
	 * data order, so the first tensor of a file marks its start). */
	for (uint32_t f = 0; f < src->nfiles; f++)
		for (uint32_t i = 0; i < src->table.ntensors; i++)
			if (src->table.tensors[i].src_file == f) {
				p->header_bytes +=
					src->table.tensors[i].src_offset;
				break;
			}
	p->src = src;
	*out = p;
	return 0;

out_release_plan:
	tc__view_plan_release(&p->plan);
out_free_plan:
	tc__free(p);
out_free_source:
	tc__source_free(src);
	return ret;
}

TC_API const char *tc_view_plan_id(const tc_view_plan *p)
{
	return p->plan.id;
}

TC_API uint32_t tc_view_plan_count(const tc_view_plan *p)
{
	return p->plan.out.ntensors;
}

TC_API const struct tc_tensor_info *tc_view_plan_tensors(const tc_view_plan *p)
{
	return p->infos;
}

TC_API uint64_t tc_view_plan_size(const tc_view_plan *p)
{
	return p->plan.out.total_bytes;
}

TC_API int64_t tc_view_plan_source_offset(const tc_view_plan *p, uint32_t i)
{
	const struct tc__view_tplan *t;

	if (i >= p->plan.out.ntensors)
		return -1;
	t = &p->plan.t[i];
	if (t->flags || t->nruns != 1 || t->runs[0].count != 1 ||
	    t->runs[0].src > INT64_MAX)
		return -1;
	return (int64_t)t->runs[0].src;
}

TC_API int tc_view_plan_stats(const tc_view_plan *p, struct tc_view_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->bytes_needed = p->plan.bytes_needed;
	out->artifact_bytes = p->plan.artifact_bytes;
	out->bytes_read = atomic_load(&p->bytes_read);
	out->reads = atomic_load(&p->reads);
	out->header_bytes = p->header_bytes;
	for (uint32_t i = 0; i < p->plan.out.ntensors; i++)
		out->pieces += tc__view_tplan_pieces(&p->plan.t[i]);
	out->from_disk = p->src != NULL;
	return 0;
}

/* ---------------------------------------------------------------- realize */

TC_API int tc_view_realize_tensor(tc_view_plan *p, uint32_t i, void *dst,
				  uint64_t len, char *err, size_t errlen)
{
	struct tc__view_io io = { 0 };
	int ret;

	if (!p || !dst) {
		set_err(err, errlen, "%s", "view: NULL plan or destination");
		return TC_EINVAL;
	}
	if (p->src) {
		ret = tc__view_exec_source(&p->plan, i, p->src, dst, len, &io,
					   err, errlen);
	} else if (!p->a) {
		ret = tc__view_exec_host(&p->plan, i, p->mem, p->mem_len, dst,
					 len, &io, err, errlen);
	} else {
		if (tc_artifact_device(p->a) >= 0) {
			set_err(err, errlen,
				"view of '%s': the artifact is attached on a "
				"GPU: realize the view there "
				"(tc_view_realize_gpu) or attach it on the "
				"host",
				tc_artifact_id(p->a));
			return TC_ENOTSUP;
		}
		ret = tc__view_exec_host(&p->plan, i, tc_artifact_data(p->a),
					 tc_artifact_size(p->a), dst, len, &io,
					 err, errlen);
	}
	atomic_fetch_add(&p->bytes_read, io.bytes_read);
	atomic_fetch_add(&p->reads, io.reads);
	return ret;
}

TC_API int tc_view_realize(tc_view_plan *p, void *dst, uint64_t len, char *err,
			   size_t errlen)
{
	uint64_t at = 0;
	uint8_t *d = dst;

	if (!p || !dst) {
		set_err(err, errlen, "%s", "view: NULL plan or destination");
		return TC_EINVAL;
	}
	if (len < p->plan.out.total_bytes) {
		if (err && errlen)
			snprintf(err, errlen,
				 "view: destination holds %llu bytes, the "
				 "view needs %llu",
				 (unsigned long long)len,
				 (unsigned long long)p->plan.out.total_bytes);
		return TC_EINVAL;
	}
	for (uint32_t i = 0; i < p->plan.out.ntensors; i++) {
		const struct tc__tensor *t = &p->plan.out.tensors[i];
		int ret;

		memset(d + at, 0, t->offset - at); /* alignment padding */
		ret = tc_view_realize_tensor(p, i, d + t->offset, t->nbytes,
					     err, errlen);
		if (ret < 0)
			return ret;
		at = t->offset + t->nbytes;
	}
	return 0;
}

/* ----------------------------------------------------------- on a GPU */

/* Where plan p reads from, for a GPU realization on `device`. */
static int gpu_source(tc_view_plan *p, int32_t device, const void **host,
		      uint64_t *dev, uint64_t *len, char *err, size_t errlen)
{
	*host = NULL;
	*dev = 0;
	*len = 0;
	if (p->src)
		return 0;
	if (!p->a) {
		*host = p->mem;
		*len = p->mem_len;
		return 0;
	}
	*len = tc_artifact_size(p->a);
	if (tc_artifact_device(p->a) < 0) {
		*host = tc_artifact_data(p->a);
		return 0;
	}
	if (tc_artifact_device(p->a) != device) {
		if (err && errlen)
			snprintf(err, errlen,
				 "view of '%s': the artifact is attached on "
				 "GPU %d, not GPU %d: attach it on the host or "
				 "on GPU %d",
				 tc_artifact_id(p->a), tc_artifact_device(p->a),
				 device, device);
		return TC_ENOTSUP;
	}
	*dev = (uint64_t)(uintptr_t)tc_artifact_data(p->a);
	return 0;
}

static int realize_gpu(tc_view_plan *p, int64_t only, int32_t device,
		       uint64_t dptr, uint64_t len, uintptr_t stream,
		       uint32_t mode, char *err, size_t errlen)
{
	struct tc__view_gpu_ctx x;
	struct tc__gpu_stream *s;
	struct tc__view_io io = { 0 };
	const void *host;
	uint64_t dev, slen, at = 0;
	int ret, ret2;

	if (!p || !dptr) {
		set_err(err, errlen, "%s", "view: NULL plan or destination");
		return TC_EINVAL;
	}
	if (mode > TC_VIEW_GPU_HOST) {
		set_err(err, errlen, "%s", "view: unknown GPU mode");
		return TC_EINVAL;
	}
	if (only < 0 && len < p->plan.out.total_bytes) {
		if (err && errlen)
			snprintf(err, errlen,
				 "view: destination holds %llu bytes, the "
				 "view needs %llu",
				 (unsigned long long)len,
				 (unsigned long long)p->plan.out.total_bytes);
		return TC_EINVAL;
	}
	ret = gpu_source(p, device, &host, &dev, &slen, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__gpu_stream_wrap(device, stream, &s, err, errlen);
	if (ret < 0)
		return ret;
	tc__view_gpu_ctx_init(&x, device, s, mode);
	for (uint32_t i = 0; i < p->plan.out.ntensors; i++) {
		const struct tc__tensor *t = &p->plan.out.tensors[i];

		if (only >= 0) {
			if (i != (uint64_t)only)
				continue;
			ret = tc__view_exec_gpu(&p->plan, i, host, dev, slen,
						p->src, dptr, len, &x, &io, err,
						errlen);
			break;
		}
		if (t->offset > at) { /* alignment padding */
			ret = tc__gpu_memset8(device, dptr + at, 0,
					      t->offset - at, s, err, errlen);
			if (ret < 0)
				break;
		}
		ret = tc__view_exec_gpu(&p->plan, i, host, dev, slen, p->src,
					dptr + t->offset, t->nbytes, &x, &io,
					err, errlen);
		if (ret < 0)
			break;
		at = t->offset + t->nbytes;
	}
	if (only >= (int64_t)p->plan.out.ntensors) {
		if (err && errlen)
			snprintf(err, errlen,
				 "view: no output tensor #%lld (%u)",
				 (long long)only, p->plan.out.ntensors);
		ret = TC_EINVAL;
	}
	/* Wait for the queued work even after a failure: the scratch it
	 * uses is freed next. */
	ret2 = tc__view_gpu_ctx_release(&x, ret < 0 ? NULL : err,
					ret < 0 ? 0 : errlen);
	if (ret == 0)
		ret = ret2;
	tc__gpu_stream_free(s);
	atomic_fetch_add(&p->bytes_read, io.bytes_read);
	atomic_fetch_add(&p->reads, io.reads);
	atomic_fetch_add(&p->kernel_tensors, x.kernel_tensors);
	atomic_fetch_add(&p->host_tensors, x.host_tensors);
	if (x.kernel_err[0])
		snprintf(p->kernel_why, sizeof(p->kernel_why), "%s",
			 x.kernel_err);
	return ret;
}

TC_API int tc_view_realize_gpu(tc_view_plan *p, int32_t device, uint64_t dptr,
			       uint64_t len, uintptr_t stream, uint32_t mode,
			       char *err, size_t errlen)
{
	return realize_gpu(p, -1, device, dptr, len, stream, mode, err, errlen);
}

TC_API int tc_view_realize_tensor_gpu(tc_view_plan *p, uint32_t i,
				      int32_t device, uint64_t dptr,
				      uint64_t len, uintptr_t stream,
				      uint32_t mode, char *err, size_t errlen)
{
	return realize_gpu(p, i, device, dptr, len, stream, mode, err, errlen);
}

TC_API int tc_view_plan_gpu_counts(const tc_view_plan *p, uint64_t *kernel,
				   uint64_t *host, char *why, size_t whylen)
{
	if (!p)
		return TC_EINVAL;
	if (kernel)
		*kernel = atomic_load(&p->kernel_tensors);
	if (host)
		*host = atomic_load(&p->host_tensors);
	if (why && whylen)
		snprintf(why, whylen, "%s", p->kernel_why);
	return 0;
}

/* -------------------------------------------------- views kept as replicas */

/* Does attached artifact `a` have the plan's table? */
static bool same_table(const tc_view_plan *p, tc_artifact *a)
{
	const struct tc_tensor_info *ti = tc_artifact_tensors(a);
	uint32_t n = tc_artifact_count(a);

	if (n != p->plan.out.ntensors)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		const struct tc__tensor *t = &p->plan.out.tensors[i];

		if (strcmp(ti[i].name, t->name) || ti[i].dtype != t->dtype ||
		    ti[i].ndim != t->ndim || ti[i].nbytes != t->nbytes ||
		    memcmp(ti[i].shape, t->shape, t->ndim * sizeof(uint64_t)))
			return false;
	}
	return true;
}

static int attach_ref(tc_client *c, const char *ref, int32_t device,
		      tc_artifact **out)
{
	return device < 0 ? tc_attach(c, ref, out) :
			    tc_attach_gpu(c, ref, device, out);
}

static int client_fail(tc_client *c, int ret, const char *what, char *err,
		       size_t errlen)
{
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", what,
			 tc_client_errmsg(c)[0] ? tc_client_errmsg(c) :
						  tc_strerror(ret));
	return ret;
}

/*
 * The key names something else: the artifact it named was removed (the
 * key then names nothing) or evicted and made again under another layout
 * of the daemon.  What was just made is the view's content, so move the
 * key onto it by compare-and-swap at the generation read now (a racing
 * process that moved it first makes this fail, and its artifact is as
 * good as ours).
 */
static int move_key(tc_client *c, const char *key, const char *id)
{
	json_t *doc, *g;
	char *text = NULL;
	uint64_t gen;
	int ret;

	ret = tc_keys_json(c, key, &text);
	if (ret < 0)
		return ret;
	doc = json_loads(text, 0, NULL);
	tc_free(text);
	g = doc ? json_object_get(doc, "generation") : NULL;
	if (!json_is_integer(g)) {
		json_decref(doc);
		return TC_EPROTO;
	}
	gen = (uint64_t)json_integer_value(g);
	json_decref(doc);
	ret = tc_key_set(c, key, id, 1, gen, NULL);
	return ret == TC_ECONFLICT ? 0 : ret;
}

/*
 * The view's parts, for the daemon: ranges of the view's byte space that
 * are one contiguous range of the source artifact's ("dst:src:len"
 * decimal, space-separated, in increasing dst), each at least
 * TC_VIEW_PART_MIN bytes.  A rank's view of a tensor-parallel model holds
 * its replicated tensors whole, and so do the other ranks' views: with
 * these the daemon fills one rank's GPU replica of its view partly from
 * another rank's replica on a sibling GPU (GPU to GPU) instead of from
 * host memory (docs/gpu.md, "Tensor-parallel realization").  Only a hint:
 * the daemon keeps such a replica only once its chunk digests are the
 * view's.  Returns a malloc'd string ("" when there is none) or NULL on
 * OOM.
 */
static char *view_parts_meta(const struct tc__view_plan *vp)
{
	struct tc__buf b = TC_BUF_INIT;
	uint64_t pd = 0, ps = 0, pn = 0, nparts = 0;
	char e[80];

	for (uint32_t i = 0; i <= vp->out.ntensors; i++) {
		const struct tc__view_tplan *t =
			i < vp->out.ntensors ? &vp->t[i] : NULL;

		for (uint32_t k = 0; t && !t->flags && k < t->nruns; k++) {
			const struct tc__view_run *r = &t->runs[k];
			uint64_t d = vp->out.tensors[i].offset + r->dst;
			uint64_t n = r->len * r->count;

			if (r->count > 1 && r->stride != r->len)
				continue; /* pieces: a column shard */
			if (pn && pd + pn == d && ps + pn == r->src) {
				pn += n; /* the previous part goes on */
				continue;
			}
			if (pn >= TC_VIEW_PART_MIN &&
			    nparts < TC_VIEW_MAX_PARTS) {
				snprintf(e, sizeof(e), "%s%llu:%llu:%llu",
					 nparts ? " " : "",
					 (unsigned long long)pd,
					 (unsigned long long)ps,
					 (unsigned long long)pn);
				tc__buf_put(&b, e, strlen(e));
				nparts++;
			}
			pd = d;
			ps = r->src;
			pn = n;
		}
	}
	if (pn >= TC_VIEW_PART_MIN && nparts < TC_VIEW_MAX_PARTS) {
		snprintf(e, sizeof(e), "%s%llu:%llu:%llu", nparts ? " " : "",
			 (unsigned long long)pd, (unsigned long long)ps,
			 (unsigned long long)pn);
		tc__buf_put(&b, e, strlen(e));
	}
	tc__buf_put(&b, "", 1);
	if (b.oom) {
		tc__buf_release(&b);
		return NULL;
	}
	return (char *)b.data; /* ours now: freed with tc__free */
}

TC_API int tc_view_attach(tc_client *c, tc_view_plan *p, int32_t device,
			  tc_artifact **out, uint32_t *flags, char *err,
			  size_t errlen)
{
	struct tc_tensor_desc *descs = NULL;
	struct tc_opts o = { 0 };
	struct tc_result res;
	char what[200], *meta = NULL, *parts = NULL;
	const char *of;
	tc_put *put = NULL;
	tc_artifact *a = NULL;
	uint32_t n;
	size_t mlen;
	int ret;

	*out = NULL;
	if (flags)
		*flags = 0;
	if (!c || !p) {
		set_err(err, errlen, "%s", "view: NULL client or plan");
		return TC_EINVAL;
	}
	if (p->src) {
		set_err(err, errlen, "%s",
			"view: a view of a file is not kept by the daemon (its "
			"id names a path, not content): import the file and "
			"view the artifact");
		return TC_ENOTSUP;
	}
	of = p->a ? tc_artifact_id(p->a) : p->of;
	snprintf(what, sizeof(what), "view %s of '%s'", p->plan.id, of);
	ret = attach_ref(c, p->plan.id, device, &a);
	if (ret == 0) {
		if (!same_table(p, a)) {
			if (err && errlen)
				snprintf(err, errlen,
					 "%s: the daemon's key names artifact "
					 "'%s', whose table is not the view's",
					 what, tc_artifact_id(a));
			tc_artifact_close(a);
			return TC_ECONFLICT;
		}
		if (flags)
			*flags = TC_VIEW_ATTACH_CACHED;
		*out = a;
		return 0;
	}
	if (ret != TC_ENOTFOUND)
		return client_fail(c, ret, what, err, errlen);
	/* Not held: realize it straight into a new artifact's memory. */
	n = p->plan.out.ntensors;
	descs = tc__calloc(n ? n : 1, sizeof(*descs));
	parts = view_parts_meta(&p->plan);
	mlen = strlen(p->plan.id) + strlen(of) + (parts ? strlen(parts) : 0) +
	       96;
	meta = tc__malloc(mlen);
	if (!descs || !meta || !parts) {
		ret = -ENOMEM;
		set_err(err, errlen, "%s", "view: out of memory");
		goto out_free;
	}
	for (uint32_t i = 0; i < n; i++) {
		descs[i].name = p->infos[i].name;
		descs[i].dtype = p->infos[i].dtype;
		descs[i].ndim = p->infos[i].ndim;
		descs[i].shape = p->infos[i].shape;
	}
	/* Ids are "tc2:" + hex: nothing to escape. */
	if (parts[0])
		snprintf(meta, mlen,
			 "{\"tcast.view\":\"%s\",\"tcast.view_of\":\"%s\","
			 "\"tcast.view_parts\":\"%s\"}",
			 p->plan.id, of, parts);
	else
		snprintf(meta, mlen,
			 "{\"tcast.view\":\"%s\",\"tcast.view_of\":\"%s\"}",
			 p->plan.id, of);
	o.field_mask = TC_OPT_POLICY;
	o.policy = "cache";
	ret = tc_put_begin(c, descs, n, meta, &o, &put);
	if (ret < 0) {
		client_fail(c, ret, what, err, errlen);
		goto out_free;
	}
	for (uint32_t i = 0; i < n; i++) {
		ret = tc_view_realize_tensor(p, i, tc_put_data(put, i),
					     tc_put_nbytes(put, i), err,
					     errlen);
		if (ret < 0) {
			tc_put_abort(put);
			goto out_free;
		}
	}
	ret = tc_put_commit(put, &res);
	if (ret < 0) {
		client_fail(c, ret, what, err, errlen);
		goto out_free;
	}
	/* Create the key, or find it already there (another process made
	 * the same view meanwhile: same content, same id). */
	ret = tc_key_set(c, p->plan.id, res.id, 0, 0, NULL);
	if (ret == TC_ECONFLICT)
		ret = move_key(c, p->plan.id, res.id);
	if (ret < 0) {
		client_fail(c, ret, what, err, errlen);
		if (!res.deduplicated)
			tc_rm(c, res.id);
		goto out_free;
	}
	ret = attach_ref(c, res.id, device, &a);
	if (ret < 0) {
		client_fail(c, ret, what, err, errlen);
		goto out_free;
	}
	*out = a;
out_free:
	tc__free(parts);
	tc__free(meta);
	tc__free(descs);
	return ret;
}
