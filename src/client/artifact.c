/*
 * artifact.c - attached artifacts: mapping (host memfd or GPU replica),
 * table, DLPack, export.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client_internal.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "format/format.h"
#include "gpu/vmm.h"
#include "tcast/dlpack.h"
#include "tcast/errors.h"

/* Invariant: map covers map_size bytes read-only (host memory when
 * device < 0, else the GPU mapping in gmem); every tensor of `table` lies
 * inside it (checked when the reply was decoded). */
struct tc_artifact {
	_Atomic int refs;
	tc_client *c; /* holds a reference */
	char id[TC_ID_BUFLEN];
	const uint8_t *map;
	uint64_t map_size;
	struct tc__table table;
	struct tc_tensor_info *infos; /* owned, table.ntensors */
	char *names;		      /* owned: every name, NUL after each,
					 in table order (infos point here) */
	uint64_t names_len;
	int32_t device;		       /* CUDA ordinal here, or -1: host */
	struct tc__gpu_mem gmem;       /* owned when device >= 0 */
	char uuid[TC_GPU_UUID_STRLEN]; /* the GPU's UUID when device >= 0 */
	uint64_t binding;	       /* a BIND handle, or 0 */
	uint32_t origin;	       /* TC_ORIGIN_* of the attach reply */
	int32_t fill_source;	       /* TC_FILL_* or the sibling GPU's
					  daemon ordinal (tc_attach_gpu) */
	uint64_t fill_kbps;	       /* the fill's rate, kB/s (0: unknown) */
};

uint32_t tc__artifact_origin(const tc_artifact *a)
{
	return a->origin;
}

/* Tell the daemon one lease is gone (fire and forget: a DLPack deleter
 * must never block on a reply, and a dead daemon dropped it already). */
static void send_release(tc_client *c, const char *id, const char *uuid)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off;

	off = tc__client_begin(c, &b,
			       uuid ? TC_MSG_RELEASE_GPU : TC_MSG_RELEASE);
	tc__buf_put_str(&b, id);
	if (uuid)
		tc__buf_put_str(&b, uuid);
	tc__frame_finish(&b, off);
	tc__client_send(c, &b);
	tc__buf_release(&b);
}

/* Decode the table of an ATTACH or ATTACH_GPU reply and fill infos. */
static int read_table(tc_client *c, struct reply *rep, tc_artifact *a,
		      const char *what)
{
	char err[512];
	int rc =
		tc__proto_get_table(&rep->body, 1, &a->table, err, sizeof(err));

	if (rc < 0 || a->table.total_bytes > a->map_size) {
		if (rc == 0)
			tc__table_release(&a->table);
		return tc__client_err(c, TC_EPROTO, what);
	}
	a->infos = tc__calloc(a->table.ntensors ? a->table.ntensors : 1,
			      sizeof(*a->infos));
	if (!a->infos) {
		tc__table_release(&a->table);
		return tc__client_err(c, -ENOMEM, "out of memory");
	}
	a->names_len = 0;
	for (uint32_t i = 0; i < a->table.ntensors; i++)
		a->names_len += strlen(a->table.tensors[i].name) + 1;
	a->names = tc__malloc(a->names_len ? a->names_len : 1);
	if (!a->names) {
		tc__free(a->infos);
		a->infos = NULL;
		tc__table_release(&a->table);
		return tc__client_err(c, -ENOMEM, "out of memory");
	}
	for (uint64_t i = 0, at = 0; i < a->table.ntensors; i++) {
		const struct tc__tensor *x = &a->table.tensors[i];
		struct tc_tensor_info *t = &a->infos[i];
		size_t len = strlen(x->name) + 1;

		/* One block for every name: a binding reads them all with
		 * one call (tc_artifact_names) instead of one per tensor. */
		memcpy(a->names + at, x->name, len);
		t->name = a->names + at;
		at += len;
		t->dtype = x->dtype;
		t->ndim = x->ndim;
		t->offset = x->offset;
		t->nbytes = x->nbytes;
		memcpy(t->shape, x->shape, sizeof(uint64_t) * x->ndim);
	}
	return 0;
}

/* tc_attach; with `keep_fd`, *keep_fd gets a dup of the sealed memfd
 * (the caller closes it), for a reader that goes through its file. */
static int attach_host(tc_client *c, const char *ref, int *keep_fd,
		       tc_artifact **out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc_artifact *a;
	struct reply rep;
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
	rc = read_table(c, &rep, a, "malformed ATTACH table");
	if (rc < 0)
		goto out_free;
	/* Optional: daemons before it end the reply at the table. */
	if (tc__cur_read_u32(&rep.body, &a->origin) < 0)
		a->origin = TC_ORIGIN_HELD;
	/* No MAP_POPULATE: attaching costs the same for 16 MiB and 4 GiB;
	 * pages are mapped as they are first read. */
	p = mmap(NULL, a->map_size, PROT_READ, MAP_SHARED, rep.fds[0], 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		tc__client_err(c, rc, "cannot map the artifact");
		goto out_infos;
	}
	a->map = p;
	if (keep_fd) {
		*keep_fd = fcntl(rep.fds[0], F_DUPFD_CLOEXEC, 3);
		if (*keep_fd < 0) {
			rc = -errno;
			munmap(p, a->map_size);
			tc__client_err(c, rc, "cannot keep the artifact's fd");
			goto out_infos;
		}
	}
	a->device = -1;
	tc__gpu_mem_init(&a->gmem);
	atomic_init(&a->refs, 1);
	a->c = c;
	tc__client_ref(c);
	reply_release(&rep);
	*out = a;
	return 0;

out_infos:
	tc__free(a->infos);
	tc__free(a->names);
	tc__table_release(&a->table);
out_free:
	/* The daemon counted a lease: give it back. */
	if (a->id[0])
		send_release(c, a->id, NULL);
	tc__free(a);
out_reply:
	reply_release(&rep);
	return rc;
}

TC_API int tc_attach(tc_client *c, const char *ref, tc_artifact **out)
{
	return attach_host(c, ref, NULL, out);
}

TC_API void tc_artifact_ref(tc_artifact *a)
{
	atomic_fetch_add(&a->refs, 1);
}

/* Tell the daemon a binding is gone (fire and forget, as RELEASE). */
static void send_unbind(tc_client *c, uint64_t handle)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off = tc__client_begin(c, &b, TC_MSG_UNBIND);

	tc__buf_put_u64(&b, handle);
	tc__frame_finish(&b, off);
	tc__client_send(c, &b);
	tc__buf_release(&b);
}

/* ATTACH_GPU or BIND: ask for the memory, decode the reply (a BIND reply
 * starts with the binding's handle), import the fd read-only. */
static int gpu_attach(tc_client *c, int type, const char *ref, int32_t device,
		      uint32_t flags, unsigned import_flags, tc_artifact **out)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__gpu_info info;
	char err[512], uuid[TC_GPU_UUID_STRLEN + 8];
	struct tc_artifact *a;
	uint64_t t0, t1, t2;
	struct reply rep;
	size_t off;
	int rc;

	*out = NULL;
	/* Ordinals are per process (CUDA_VISIBLE_DEVICES): the daemon is
	 * told the GPU's UUID, never our ordinal. */
	t0 = tc__mono_ns();
	rc = tc__gpu_device_info(device, &info, err, sizeof(err));
	if (rc < 0)
		return tc__client_err(c, rc, err);
	t1 = tc__mono_ns();
	off = tc__client_begin(c, &b, type);
	tc__buf_put_str(&b, ref);
	if (type == TC_MSG_ATTACH_GPU)
		tc__buf_put_u32(&b, TC_GPU_ANY_DEVICE);
	tc__buf_put_u32(&b, flags);
	tc__buf_put_str(&b, info.uuid_str);
	tc__frame_finish(&b, off);
	rc = tc__client_call(c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	t2 = tc__mono_ns();
	a = tc__calloc(1, sizeof(*a));
	if (!a) {
		rc = -ENOMEM;
		goto out_reply;
	}
	a->device = device;
	a->fill_source = TC_FILL_UNKNOWN;
	tc__gpu_mem_init(&a->gmem);
	if (rep.nfds != 1 ||
	    (type == TC_MSG_BIND &&
	     tc__cur_read_u64(&rep.body, &a->binding) < 0) ||
	    tc__cur_read_strcpy(&rep.body, a->id, sizeof(a->id)) < 0 ||
	    tc__cur_read_u64(&rep.body, &a->map_size) < 0 ||
	    tc__cur_read_strcpy(&rep.body, uuid, sizeof(uuid)) < 0 ||
	    strcmp(uuid, info.uuid_str)) {
		rc = tc__client_err(c, TC_EPROTO,
				    "malformed reply, or one for another GPU");
		goto out_free;
	}
	snprintf(a->uuid, sizeof(a->uuid), "%s", uuid);
	rc = read_table(c, &rep, a, "malformed tensor table");
	if (rc < 0)
		goto out_free;
	if (type != TC_MSG_ATTACH_GPU ||
	    tc__cur_read_u32(&rep.body, &a->origin) < 0)
		a->origin = TC_ORIGIN_HELD;
	{
		uint32_t fs;

		/* A daemon without sibling sources says nothing more. */
		a->fill_source = TC_FILL_UNKNOWN;
		if (type == TC_MSG_ATTACH_GPU &&
		    tc__cur_read_u32(&rep.body, &fs) == 0 &&
		    tc__cur_read_u64(&rep.body, &a->fill_kbps) == 0)
			a->fill_source = (int32_t)fs;
	}
	/* Read-only: the mapping refuses device writes (it catches bugs;
	 * the fd would allow a read-write import). */
	rc = tc__gpu_import(device, rep.fds[0], a->map_size,
			    TC_GPU_READ_ONLY | import_flags, &a->gmem, err,
			    sizeof(err));
	if (rc < 0) {
		tc__client_err(c, rc, err);
		goto out_table;
	}
	a->map = (const uint8_t *)(uintptr_t)a->gmem.dptr;
	/* Where a fresh process's attach goes (its budget is a few ms). */
	tc__log(TC_LOG_DEBUG,
		"attach of %s on GPU %d: device info %.3f ms, request %.3f, "
		"table and import %.3f",
		a->id, (int)device, (double)(t1 - t0) / 1e6,
		(double)(t2 - t1) / 1e6, (double)(tc__mono_ns() - t2) / 1e6);
	atomic_init(&a->refs, 1);
	a->c = c;
	tc__client_ref(c);
	reply_release(&rep); /* closes the fd: the import holds its own */
	*out = a;
	return 0;

out_table:
	tc__free(a->infos);
	tc__free(a->names);
	tc__table_release(&a->table);
out_free:
	/* The daemon counted a lease or made a binding: give it back. */
	if (a->binding)
		send_unbind(c, a->binding);
	else if (a->id[0])
		send_release(c, a->id, info.uuid_str);
	tc__free(a);
out_reply:
	reply_release(&rep);
	return rc;
}

TC_API int tc_attach_gpu(tc_client *c, const char *ref, int32_t device,
			 tc_artifact **out)
{
	return gpu_attach(c, TC_MSG_ATTACH_GPU, ref, device, 0, 0, out);
}

int tc__attach_gpu(tc_client *c, const char *ref, int32_t device,
		   unsigned import_flags, tc_artifact **out)
{
	return gpu_attach(c, TC_MSG_ATTACH_GPU, ref, device, 0, import_flags,
			  out);
}

TC_API int tc_artifact_wait(tc_artifact *a)
{
	char err[256];
	int rc;

	if (a->device < 0)
		return 0;
	rc = tc__gpu_access_wait(&a->gmem, err, sizeof(err));
	return rc < 0 ? tc__client_err(a->c, rc, err) : 0;
}

TC_API int tc_bind(tc_client *c, const char *ref, int32_t device,
		   tc_artifact **out)
{
	return gpu_attach(c, TC_MSG_BIND, ref, device, 0, 0, out);
}

TC_API int tc_bind2(tc_client *c, const char *ref, int32_t device,
		    uint32_t flags, tc_artifact **out)
{
	if (flags & ~TC_BIND_PUBLISH) {
		*out = NULL;
		return tc__client_err(c, TC_EINVAL, "unknown tc_bind2 flags");
	}
	return gpu_attach(c, TC_MSG_BIND, ref, device, flags, 0, out);
}

/* The public flag is the protocol's. */
_Static_assert(TC_BIND_PUBLISH == TC_BIND_F_PUBLISH, "BIND flag values");

/* SWAP; `flags` < 0: none sent (the binding keeps its setting). */
static int swap(tc_artifact *a, const char *ref, int64_t flags)
{
	struct tc__buf b = TC_BUF_INIT;
	char id[TC_ID_BUFLEN];
	struct reply rep;
	size_t off;
	int rc;

	if (!a->binding)
		return tc__client_err(a->c, TC_EINVAL,
				      "not a binding (made with tc_bind)");
	off = tc__client_begin(a->c, &b, TC_MSG_SWAP);
	tc__buf_put_u64(&b, a->binding);
	tc__buf_put_str(&b, ref);
	if (flags >= 0)
		tc__buf_put_u32(&b, (uint32_t)flags);
	tc__frame_finish(&b, off);
	rc = tc__client_call(a->c, &b, NULL, 0, NULL, &rep);
	tc__buf_release(&b);
	if (rc < 0)
		return rc;
	rc = tc__cur_read_strcpy(&rep.body, id, sizeof(id));
	reply_release(&rep);
	if (rc < 0)
		return tc__client_err(a->c, TC_EPROTO, "malformed SWAP reply");
	snprintf(a->id, sizeof(a->id), "%s", id);
	return 0;
}

TC_API int tc_binding_swap(tc_artifact *a, const char *ref)
{
	return swap(a, ref, -1);
}

TC_API int tc_binding_swap2(tc_artifact *a, const char *ref, uint32_t flags)
{
	if (flags & ~TC_BIND_PUBLISH)
		return tc__client_err(a->c, TC_EINVAL,
				      "unknown tc_binding_swap2 flags");
	return swap(a, ref, flags);
}

TC_API int32_t tc_artifact_device(const tc_artifact *a)
{
	return a->device;
}

TC_API int32_t tc_artifact_fill_source(const tc_artifact *a, double *gbps)
{
	if (gbps)
		*gbps = a->device >= 0 && a->fill_source != TC_FILL_UNKNOWN ?
				(double)a->fill_kbps / 1e6 :
				0.0;
	return a->device >= 0 ? a->fill_source : TC_FILL_UNKNOWN;
}

/*
 * Wait for every stream of this process on a's GPU before its mapping goes.
 * The last reference is usually a DLPack view dying on the host (Python
 * dropped the tensor), while kernels that read it -- a torch clone of an
 * argument queued on the caller's stream -- may not have run yet; the
 * driver does not wait for them at cuMemUnmap, and the first of them to
 * run then takes an illegal address that kills the whole CUDA context.
 * (The H200 tcast.shared server did exactly that once its per-call
 * arguments died before the reply's own synchronisation: 2026-12-02.)  A
 * failed sync (a context already broken) is logged; the unmap still runs.
 */
static void artifact_gpu_release(tc_artifact *a)
{
	char err[256];

	if (tc__gpu_device_sync(a->device, err, sizeof(err)) < 0)
		tc__log(TC_LOG_WARN,
			"artifact %s: unmapping unsynchronised: %s", a->id,
			err);
	tc__gpu_release(&a->gmem);
}

TC_API void tc_artifact_close(tc_artifact *a)
{
	if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
		return;
	if (a->binding) {
		artifact_gpu_release(a);
		send_unbind(a->c, a->binding);
	} else if (a->device >= 0) {
		artifact_gpu_release(a);
		send_release(a->c, a->id, a->uuid);
	} else {
		munmap((void *)a->map, a->map_size);
		send_release(a->c, a->id, NULL);
	}
	tc_client_close(a->c);
	tc__table_release(&a->table);
	tc__free(a->infos);
	tc__free(a->names);
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

TC_API const char *tc_artifact_names(const tc_artifact *a, uint64_t *len)
{
	*len = a->names_len;
	return a->names;
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

/* A DLPack tensor over `ptr` on a's device holding one reference on a. */
static int dl_make(tc_artifact *a, const void *ptr, uint32_t ndim,
		   const uint64_t *shape, uint8_t code, uint8_t bits,
		   int versioned, void **out)
{
	struct tc_DLTensor *t;
	struct dl_export *e = tc__calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	for (uint32_t d = 0; d < ndim; d++)
		e->shape[d] = (int64_t)shape[d];
	t = versioned ? &e->u.v.dl_tensor : &e->u.l.dl_tensor;
	t->data = (void *)ptr;
	t->device.device_type = a->device >= 0 ? TC_kDLCUDA : TC_kDLCPU;
	t->device.device_id = a->device >= 0 ? a->device : 0;
	t->ndim = (int32_t)ndim;
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

TC_API int tc_artifact_dlpack(tc_artifact *a, uint32_t i, int versioned,
			      void **out)
{
	const struct tc__tensor *x;
	uint8_t code, bits;

	*out = NULL;
	if (i >= a->table.ntensors)
		return TC_EINVAL;
	x = &a->table.tensors[i];
	if (tc_dtype_dlpack(x->dtype, &code, &bits) < 0)
		return TC_EBADDTYPE;
	return dl_make(a, a->map + x->offset, x->ndim, x->shape, code, bits,
		       versioned, out);
}

TC_API int tc_artifact_dlpack_bytes(tc_artifact *a, int versioned, void **out)
{
	uint64_t n = a->table.total_bytes;

	*out = NULL;
	return dl_make(a, a->map, 1, &n, 1 /* kDLUInt */, 8, versioned, out);
}

/* ---------------------------------------------------------------- export */

TC_API int tc_export(tc_client *c, const char *ref, const char *path)
{
	return tc_export_ex(c, ref, path, 0);
}

TC_API int tc_export_ex(tc_client *c, const char *ref, const char *path,
			uint32_t flags)
{
	tc_artifact *a;
	char err[512];
	int rc;

	int src;

	if (flags & ~(uint32_t)TC_EXPORT_FORCE)
		return tc__client_err(c, TC_EINVAL, "unknown export flags");
	rc = attach_host(c, ref, &src, &a);
	if (rc < 0)
		return rc;
	/* Through the memfd's file, not the mapping: the kernel copies each
	 * run page cache to page cache, with no fault per page of a fresh
	 * mapping (docs/design.md). */
	rc = tc__st_write_path_from(
		path, &a->table, src,
		flags & TC_EXPORT_FORCE ? TC_ST_WRITE_FORCE : 0, err,
		sizeof(err));
	if (rc < 0)
		tc__client_err(c, rc, err);
	close(src);
	tc_artifact_close(a);
	return rc;
}

int tc__client_export_fd(tc_client *c, const char *ref, int fd)
{
	tc_artifact *a;
	char err[512];
	int src, rc = attach_host(c, ref, &src, &a);

	if (rc < 0)
		return rc;
	rc = tc__st_write_fd_from(fd, &a->table, src, err, sizeof(err));
	if (rc < 0)
		tc__client_err(c, rc, err);
	close(src);
	tc_artifact_close(a);
	return rc;
}
