/*
 * artifact.c - attached artifacts: mapping, table, DLPack, export.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client_internal.h"
#include "common/alloc.h"
#include "common/hash.h"
#include "format/format.h"
#include "tcast/dlpack.h"
#include "tcast/errors.h"

/* Invariant: map covers map_size bytes read-only; every tensor of `table`
 * lies inside it (checked when the reply was decoded). */
struct tc_artifact {
	_Atomic int refs;
	tc_client *c; /* holds a reference */
	char id[TC_ID_BUFLEN];
	const uint8_t *map;
	uint64_t map_size;
	struct tc__table table;
	struct tc_tensor_info *infos; /* owned, table.ntensors */
};

TC_API int tc_attach(tc_client *c, const char *ref, tc_artifact **out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc_artifact *a;
	struct reply rep;
	char err[512];
	size_t off;
	void *p;
	int rc;

	*out = NULL;
	off = tc__client_begin(c, &b, TC_MSG_ATTACH);
	tc__buf_put_str(&b, ref);
	tc__buf_put_u32(&b, 0);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	a = tc__calloc(1, sizeof(*a));
	if (!a) {
		rc = -ENOMEM;
		goto out_reply;
	}
	if (rep.nfds != 1 ||
	    tc__cur_read_strcpy(&rep.body, a->id, sizeof(a->id)) < 0 ||
	    tc__cur_read_u64(&rep.body, &a->map_size) < 0) {
		rc = tc__client_err(c, TC_EPROTO, "malformed ATTACH reply");
		goto out_free;
	}
	rc = tc__proto_get_table(&rep.body, 1, &a->table, err, sizeof(err));
	if (rc < 0 || a->table.total_bytes > a->map_size) {
		rc = tc__client_err(c, TC_EPROTO, "malformed ATTACH table");
		goto out_table;
	}
	a->infos = tc__calloc(a->table.ntensors, sizeof(*a->infos));
	if (!a->infos) {
		rc = -ENOMEM;
		goto out_table;
	}
	for (uint32_t i = 0; i < a->table.ntensors; i++) {
		const struct tc__tensor *x = &a->table.tensors[i];
		struct tc_tensor_info *t = &a->infos[i];

		t->name = x->name;
		t->dtype = x->dtype;
		t->ndim = x->ndim;
		t->offset = x->offset;
		t->nbytes = x->nbytes;
		memcpy(t->shape, x->shape, sizeof(uint64_t) * x->ndim);
	}
	/* No MAP_POPULATE: attaching costs the same for 16 MiB and 4 GiB;
	 * pages are mapped as they are first read. */
	p = mmap(NULL, a->map_size, PROT_READ, MAP_SHARED, rep.fds[0], 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		tc__client_err(c, rc, "cannot map the artifact");
		goto out_infos;
	}
	a->map = p;
	atomic_init(&a->refs, 1);
	a->c = c;
	tc__client_ref(c);
	reply_release(&rep);
	*out = a;
	return 0;

out_infos:
	tc__free(a->infos);
out_table:
	tc__table_release(&a->table);
out_free:
	/* The daemon counted a lease: give it back. */
	{
		struct tc__buf r = TC_BUF_INIT;
		size_t o = tc__client_begin(c, &r, TC_MSG_RELEASE);

		tc__buf_put_str(&r, a->id);
		tc__frame_finish(&r, o);
		if (a->id[0])
			tc__client_send(c, &r);
		tc__buf_release(&r);
	}
	tc__free(a);
out_reply:
	reply_release(&rep);
	return rc;
}

TC_API void tc_artifact_ref(tc_artifact *a)
{
	atomic_fetch_add(&a->refs, 1);
}

TC_API void tc_artifact_close(tc_artifact *a)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off;

	if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
		return;
	munmap((void *)a->map, a->map_size);
	/* Fire and forget: a DLPack deleter must never block on a reply,
	 * and a dead daemon has dropped the lease already. */
	off = tc__client_begin(a->c, &b, TC_MSG_RELEASE);
	tc__buf_put_str(&b, a->id);
	tc__frame_finish(&b, off);
	tc__client_send(a->c, &b);
	tc__buf_release(&b);
	tc_client_close(a->c);
	tc__table_release(&a->table);
	tc__free(a->infos);
	tc__free(a);
}

TC_API const char *tc_artifact_id(const tc_artifact *a)
{
	return a->id;
}

TC_API const void *tc_artifact_data(const tc_artifact *a)
{
	return a->map;
}

TC_API uint64_t tc_artifact_size(const tc_artifact *a)
{
	return a->table.total_bytes;
}

TC_API uint32_t tc_artifact_count(const tc_artifact *a)
{
	return a->table.ntensors;
}

TC_API int64_t tc_artifact_find(const tc_artifact *a, const char *name)
{
	long i = tc__table_find(&a->table, name);

	return i < 0 ? TC_ENOTFOUND : i;
}

TC_API const struct tc_tensor_info *tc_artifact_tensors(const tc_artifact *a)
{
	return a->infos;
}

TC_API uint32_t tc_artifact_meta_count(const tc_artifact *a)
{
	return a->table.nmeta;
}

TC_API const char *tc_artifact_meta_key(const tc_artifact *a, uint32_t i)
{
	return i < a->table.nmeta ? a->table.meta[i].key : NULL;
}

TC_API const char *tc_artifact_meta_value(const tc_artifact *a, uint32_t i)
{
	return i < a->table.nmeta ? a->table.meta[i].val : NULL;
}

/* ---------------------------------------------------------------- DLPack */

/* One exported tensor: the managed struct, its shape, and the artifact
 * reference it holds.  `u` comes first so the deleter's argument is the
 * allocation. */
struct dl_export {
	union {
		struct tc_DLManagedTensorVersioned v;
		struct tc_DLManagedTensor l;
	} u;
	tc_artifact *a;
	int64_t shape[16];
};

static void dl_delete_versioned(struct tc_DLManagedTensorVersioned *m)
{
	struct dl_export *e = (struct dl_export *)m;

	tc_artifact_close(e->a);
	tc__free(e);
}

static void dl_delete_legacy(struct tc_DLManagedTensor *m)
{
	struct dl_export *e = (struct dl_export *)m;

	tc_artifact_close(e->a);
	tc__free(e);
}

TC_API int tc_artifact_dlpack(tc_artifact *a, uint32_t i, int versioned,
			      void **out)
{
	const struct tc__tensor *x;
	struct tc_DLTensor *t;
	struct dl_export *e;
	uint8_t code, bits;

	*out = NULL;
	if (i >= a->table.ntensors)
		return TC_EINVAL;
	x = &a->table.tensors[i];
	if (tc_dtype_dlpack(x->dtype, &code, &bits) < 0)
		return TC_EBADDTYPE;
	e = tc__calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (uint32_t d = 0; d < x->ndim; d++)
		e->shape[d] = (int64_t)x->shape[d];
	t = versioned ? &e->u.v.dl_tensor : &e->u.l.dl_tensor;
	t->data = (void *)(a->map + x->offset);
	t->device.device_type = TC_kDLCPU;
	t->device.device_id = 0;
	t->ndim = x->ndim;
	t->dtype.code = code;
	t->dtype.bits = bits;
	t->dtype.lanes = 1;
	t->shape = e->shape;
	t->strides = NULL;
	t->byte_offset = 0;
	if (versioned) {
		e->u.v.version.major = TC_DLPACK_MAJOR;
		e->u.v.version.minor = TC_DLPACK_MINOR;
		e->u.v.manager_ctx = a;
		e->u.v.deleter = dl_delete_versioned;
		e->u.v.flags = TC_DLPACK_FLAG_READ_ONLY;
	} else {
		e->u.l.manager_ctx = a;
		e->u.l.deleter = dl_delete_legacy;
	}
	e->a = a;
	tc_artifact_ref(a);
	*out = e;
	return 0;
}

/* ---------------------------------------------------------------- export */

TC_API int tc_export(tc_client *c, const char *ref, const char *path)
{
	tc_artifact *a;
	char err[512];
	int rc = tc_attach(c, ref, &a);

	if (rc < 0)
		return rc;
	rc = tc__st_write_path(path, &a->table, a->map, err, sizeof(err));
	if (rc < 0)
		tc__client_err(c, rc, err);
	tc_artifact_close(a);
	return rc;
}
