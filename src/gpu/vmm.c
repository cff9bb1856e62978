/*
 * vmm.c - exportable VMM allocations, imports, copies, streams, events and
 * host registration over the driver table in cu.c.
 *
 * Each entry point loads the driver (once), makes the device's primary
 * context current for the duration of the call and restores the caller's
 * context before returning.  Every acquisition is undone in reverse order on
 * failure, so a failed call leaves no handle, address range, mapping or fd
 * behind; teardown (tc__gpu_release) keeps going past driver errors so a
 * lost GPU never leaks host resources.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tcast/errors.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/compiler.h"
#include "common/log.h"
#include "cu.h"
#include "gpu_internal.h"
#include "vmm.h"

/* Load the driver and enter `ordinal`'s context. */
static int gpu_begin(int ordinal, const struct tc__cu **cu,
		     struct tc__cu_guard *g, char *err, size_t errlen)
{
	int ret = tc__cu_get(cu, err, errlen);

	if (ret < 0)
		return ret;
	return tc__cu_enter(*cu, ordinal, g, err, errlen);
}

/* Log a teardown failure; teardown goes on regardless. */
static void warn_cuda(const struct tc__cu *cu, CUresult r, const char *call,
		      const char *what, int ordinal)
{
	char err[256];

	tc__cu_fail(cu, r, call, err, sizeof(err), "cannot %s on GPU %d", what,
		    ordinal);
	tc__log(TC_LOG_WARN, "%s", err);
}

/* ------------------------------------------------------------------------ */
/* Driver and devices                                                        */
/* ------------------------------------------------------------------------ */

int tc__gpu_init(char *err, size_t errlen)
{
	const struct tc__cu *cu;

	return tc__cu_get(&cu, err, errlen);
}

int tc__gpu_device_count(char *err, size_t errlen)
{
	const struct tc__cu *cu;
	int ret = tc__cu_get(&cu, err, errlen);

	return ret < 0 ? ret : cu->ndev;
}

int tc__gpu_driver_version(int *version, const char **path, char *err,
			   size_t errlen)
{
	const struct tc__cu *cu;
	int ret = tc__cu_get(&cu, err, errlen);

	*version = 0;
	if (path)
		*path = NULL;
	if (ret < 0)
		return ret;
	*version = cu->driver_version;
	if (path)
		*path = cu->path;
	return 0;
}

int tc__gpu_device_info(int ordinal, struct tc__gpu_info *out, char *err,
			size_t errlen)
{
	const struct tc__cu *cu;
	const struct tc__cu_dev *d;
	int ret = tc__cu_get(&cu, err, errlen);

	if (ret < 0)
		return ret;
	d = tc__cu_dev(cu, ordinal, err, errlen);
	if (!d)
		return TC_EDEVICE;
	*out = d->info;
	return 0;
}

int tc__gpu_device_find(const uint8_t uuid[TC_GPU_UUID_BYTES], char *err,
			size_t errlen)
{
	const struct tc__cu *cu;
	char s[TC_GPU_UUID_STRLEN];
	int ret = tc__cu_get(&cu, err, errlen);

	if (ret < 0)
		return ret;
	for (int i = 0; i < cu->ndev; i++)
		if (!memcmp(cu->devs[i].info.uuid, uuid, TC_GPU_UUID_BYTES))
			return i;
	tc__gpu_uuid_format(uuid, s);
	return tc__cu_seterr(TC_EDEVICE, err, errlen,
			     "no visible GPU has UUID '%s' (%d visible)", s,
			     cu->ndev);
}

int tc__gpu_granularity(int ordinal, uint64_t *min_bytes, uint64_t *rec_bytes,
			char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	size_t gmin = 0, grec = 0;
	int ret;

	/* Queried inside the device's context: the driver documents no need
	 * for one, but nothing promises it either. */
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret >= 0) {
		ret = tc__cu_granularity(cu, ordinal, &gmin, &grec, err,
					 errlen);
		tc__cu_leave(cu, &g);
	}
	if (min_bytes)
		*min_bytes = ret < 0 ? 0 : gmin;
	if (rec_bytes)
		*rec_bytes = ret < 0 ? 0 : grec;
	return ret;
}

int tc__gpu_mem_info(int ordinal, uint64_t *free_bytes, uint64_t *total_bytes,
		     char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	size_t fr = 0, tot = 0;
	CUresult r;
	int ret;

	*free_bytes = 0;
	*total_bytes = 0;
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuMemGetInfo(&fr, &tot);
	if (r)
		ret = tc__cu_fail(cu, r, "cuMemGetInfo", err, errlen,
				  "cannot query memory of GPU %d", ordinal);
	tc__cu_leave(cu, &g);
	if (ret == 0) {
		*free_bytes = fr;
		*total_bytes = tot;
	}
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Allocations                                                               */
/* ------------------------------------------------------------------------ */

void tc__gpu_mem_init(struct tc__gpu_mem *m)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

/* Grant this device `access` to [va, va + bytes). */
static int set_access(const struct tc__cu *cu, int ordinal, CUdeviceptr va,
		      size_t bytes, CUmemAccess_flags access, char *err,
		      size_t errlen)
{
	CUresult r = tc__cu_set_access(cu, ordinal, va, bytes, access);

	if (r)
		return tc__cu_fail(
			cu, r, "cuMemSetAccess", err, errlen,
			"cannot set %s access to %zu bytes on GPU %d",
			access == CU_MEM_ACCESS_FLAGS_PROT_READ ? "read-only" :
								  "read-write",
			bytes, ordinal);
	return 0;
}

/* Reserve an address range, map h there and, unless access_later, set
 * this device's access; t_ns (or NULL) gets when each of the three driver
 * calls began, for the import's log line.  On failure nothing stays
 * reserved or mapped. */
static int map_handle(const struct tc__cu *cu, int ordinal,
		      CUmemGenericAllocationHandle h, size_t bytes,
		      size_t align, CUmemAccess_flags access, bool access_later,
		      CUdeviceptr *va, uint64_t t_ns[3], char *err,
		      size_t errlen)
{
	CUresult r;
	int ret;

	*va = 0;
	if (t_ns)
		t_ns[0] = tc__mono_ns();
	r = cu->fn.cuMemAddressReserve(va, bytes, align, 0, 0);
	if (r)
		return tc__cu_fail(cu, r, "cuMemAddressReserve", err, errlen,
				   "cannot reserve %zu bytes of address space "
				   "on GPU %d",
				   bytes, ordinal);
	if (t_ns)
		t_ns[1] = tc__mono_ns();
	r = cu->fn.cuMemMap(*va, bytes, 0, h, 0);
	if (r) {
		ret = tc__cu_fail(cu, r, "cuMemMap", err, errlen,
				  "cannot map %zu bytes on GPU %d", bytes,
				  ordinal);
		goto out_free_va;
	}
	if (t_ns)
		t_ns[2] = tc__mono_ns();
	if (access_later)
		return 0;
	ret = set_access(cu, ordinal, *va, bytes, access, err, errlen);
	if (ret < 0)
		goto out_unmap;
	return 0;

out_unmap:
	r = cu->fn.cuMemUnmap(*va, bytes);
	if (r)
		warn_cuda(cu, r, "cuMemUnmap", "unmap", ordinal);
out_free_va:
	r = cu->fn.cuMemAddressFree(*va, bytes);
	if (r)
		warn_cuda(cu, r, "cuMemAddressFree", "free address range",
			  ordinal);
	*va = 0;
	return ret;
}

/* An access grant on its own thread (TC_GPU_ACCESS_LATER). */
struct tc__gpu_access {
	pthread_t thread;
	const struct tc__cu *cu;
	int ordinal;
	CUdeviceptr va;
	size_t bytes;
	CUmemAccess_flags access;
	uint64_t ns; /* how long the grant took */
	int rc;
	char err[256];
};

static void *access_main(void *arg)
{
	struct tc__gpu_access *j = arg;
	struct tc__cu_guard g;
	uint64_t t0 = tc__mono_ns();

	j->rc = tc__cu_enter(j->cu, j->ordinal, &g, j->err, sizeof(j->err));
	if (j->rc == 0) {
		j->rc = set_access(j->cu, j->ordinal, j->va, j->bytes,
				   j->access, j->err, sizeof(j->err));
		tc__cu_leave(j->cu, &g);
	}
	j->ns = tc__mono_ns() - t0;
	return NULL;
}

/* Start granting m's access on a thread; without one, grant it here. */
static int access_start(const struct tc__cu *cu, struct tc__gpu_mem *m,
			CUmemAccess_flags access, char *err, size_t errlen)
{
	struct tc__gpu_access *j = tc__calloc(1, sizeof(*j));

	if (j) {
		j->cu = cu;
		j->ordinal = m->device;
		j->va = (CUdeviceptr)m->dptr;
		j->bytes = (size_t)m->size;
		j->access = access;
		if (pthread_create(&j->thread, NULL, access_main, j) == 0) {
			m->access = j;
			return 0;
		}
		tc__free(j);
	}
	return set_access(cu, m->device, (CUdeviceptr)m->dptr, (size_t)m->size,
			  access, err, errlen);
}

int tc__gpu_access_wait(struct tc__gpu_mem *m, char *err, size_t errlen)
{
	struct tc__gpu_access *j = m->access;
	int rc;

	if (!j)
		return 0;
	pthread_join(j->thread, NULL);
	m->access = NULL;
	rc = j->rc;
	if (rc < 0)
		snprintf(err, errlen, "%s", j->err);
	else
		tc__log(TC_LOG_DEBUG,
			"access to %" PRIu64 " bytes on GPU %d granted in "
			"%.3f ms (beside the caller)",
			m->size, m->device, (double)j->ns / 1e6);
	tc__free(j);
	return rc;
}

int tc__gpu_alloc(int ordinal, uint64_t size, unsigned flags,
		  struct tc__gpu_mem *out, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUmemAllocationProp prop;
	CUmemGenericAllocationHandle h = 0;
	CUdeviceptr va;
	size_t gmin, grec, bytes;
	int fd = -1, ret;
	CUresult r;

	tc__gpu_mem_init(out);
	if (flags & ~(unsigned)TC_GPU_RDMA)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot allocate GPU memory: unknown "
				     "flags %#x",
				     flags);
	if (size == 0)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot allocate 0 bytes of GPU memory");
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__cu_granularity(cu, ordinal, &gmin, &grec, err, errlen);
	if (ret < 0)
		goto out_leave;
	if (size > SIZE_MAX - (gmin - 1)) {
		ret = tc__cu_seterr(TC_EINVAL, err, errlen,
				    "cannot allocate %" PRIu64
				    " bytes of GPU memory: too large",
				    size);
		goto out_leave;
	}
	bytes = TC_ALIGN_UP((size_t)size, gmin);

	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = cu->devs[ordinal].dev;
	prop.allocFlags.gpuDirectRDMACapable = (flags & TC_GPU_RDMA) ? 1 : 0;
	r = cu->fn.cuMemCreate(&h, bytes, &prop, 0);
	/* The memory may be on its way back (tc__gpu_release_later). */
	if (r == CUDA_ERROR_OUT_OF_MEMORY && tc__gpu_release_wait() > 0)
		r = cu->fn.cuMemCreate(&h, bytes, &prop, 0);
	if (r) {
		ret = tc__cu_fail(cu, r, "cuMemCreate", err, errlen,
				  "cannot allocate %zu bytes on GPU %d", bytes,
				  ordinal);
		goto out_leave;
	}
	r = cu->fn.cuMemExportToShareableHandle(
		&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
	if (r) {
		ret = tc__cu_fail(cu, r, "cuMemExportToShareableHandle", err,
				  errlen,
				  "cannot export %zu bytes on GPU %d as a "
				  "file descriptor",
				  bytes, ordinal);
		goto out_release_handle;
	}
	ret = map_handle(cu, ordinal, h, bytes, gmin,
			 CU_MEM_ACCESS_FLAGS_PROT_READWRITE, false, &va, NULL,
			 err, errlen);
	if (ret < 0)
		goto out_close_fd;
	tc__cu_leave(cu, &g);

	out->dptr = va;
	out->size = bytes;
	out->handle = h;
	out->device = ordinal;
	out->fd = fd;
	out->flags = flags;
	return 0;

out_close_fd:
	close(fd);
out_release_handle:
	r = cu->fn.cuMemRelease(h);
	if (r)
		warn_cuda(cu, r, "cuMemRelease", "release allocation", ordinal);
out_leave:
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_import(int ordinal, int fd, uint64_t size, unsigned flags,
		   struct tc__gpu_mem *out, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUmemGenericAllocationHandle h = 0;
	CUmemAccess_flags access = (flags & TC_GPU_READ_ONLY) ?
					   CU_MEM_ACCESS_FLAGS_PROT_READ :
					   CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	uint64_t t0, t3, t[3];
	CUdeviceptr va;
	size_t gmin, grec;
	int ret;
	CUresult r;

	tc__gpu_mem_init(out);
	if (flags & ~(unsigned)(TC_GPU_READ_ONLY | TC_GPU_ACCESS_LATER))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot import GPU memory: unknown flags "
				     "%#x",
				     flags);
	if (fd < 0)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot import GPU memory: bad fd %d", fd);
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__cu_granularity(cu, ordinal, &gmin, &grec, err, errlen);
	if (ret < 0)
		goto out_leave;
	if (size == 0 || size > SIZE_MAX || size % gmin) {
		ret = tc__cu_seterr(TC_EINVAL, err, errlen,
				    "cannot import %" PRIu64
				    " bytes of GPU memory: not a multiple of "
				    "the %zu-byte granularity",
				    size, gmin);
		goto out_leave;
	}

	t0 = tc__mono_ns();
	r = cu->fn.cuMemImportFromShareableHandle(
		&h, (void *)(uintptr_t)fd,
		CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	if (r) {
		ret = tc__cu_fail(cu, r, "cuMemImportFromShareableHandle", err,
				  errlen, "cannot import fd %d on GPU %d", fd,
				  ordinal);
		goto out_leave;
	}
	ret = map_handle(cu, ordinal, h, (size_t)size, gmin, access,
			 (flags & TC_GPU_ACCESS_LATER) != 0, &va, t, err,
			 errlen);
	if (ret < 0)
		goto out_release_handle;
	out->dptr = va;
	out->size = size;
	out->handle = h;
	out->device = ordinal;
	out->fd = -1;
	out->flags = flags;
	if (flags & TC_GPU_ACCESS_LATER) {
		ret = access_start(cu, out, access, err, errlen);
		if (ret < 0) {
			tc__cu_leave(cu, &g);
			tc__gpu_release(out);
			return ret;
		}
	}
	tc__cu_leave(cu, &g);
	t3 = tc__mono_ns();
	/* A process's first import of a fresh allocation was seen to take
	 * 0.1-0.2 s for 8 GiB on an H200, and a fresh attach's budget is a
	 * few ms: say which driver call it is. */
	tc__log(TC_LOG_DEBUG,
		"import of %" PRIu64
		" bytes on GPU %d took %.3f ms: import %.3f, reserve "
		"%.3f, map %.3f, access %.3f",
		size, ordinal, (double)(t3 - t0) / 1e6,
		(double)(t[0] - t0) / 1e6, (double)(t[1] - t[0]) / 1e6,
		(double)(t[2] - t[1]) / 1e6, (double)(t3 - t[2]) / 1e6);
	return 0;

out_release_handle:
	r = cu->fn.cuMemRelease(h);
	if (r)
		warn_cuda(cu, r, "cuMemRelease", "release imported allocation",
			  ordinal);
out_leave:
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_export(const struct tc__gpu_mem *m, int *fd, char *err,
		   size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	int newfd = -1, ret;
	CUresult r;

	*fd = -1;
	if (!m->handle)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot export an empty GPU allocation");
	ret = gpu_begin(m->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuMemExportToShareableHandle(
		&newfd, (CUmemGenericAllocationHandle)m->handle,
		CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
	if (r)
		ret = tc__cu_fail(cu, r, "cuMemExportToShareableHandle", err,
				  errlen,
				  "cannot export %" PRIu64
				  " bytes on GPU %d as a file descriptor",
				  m->size, m->device);
	else
		*fd = newfd;
	tc__cu_leave(cu, &g);
	return ret;
}

void tc__gpu_release(struct tc__gpu_mem *m)
{
	uint64_t t0, t1;
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	char err[256];
	CUresult r;

	if (!m->handle && !m->dptr && m->fd < 0)
		goto out_reset;
	if (m->access) {
		/* Never unmap under a grant still running: its outcome no
		 * longer matters, only that it is over. */
		pthread_join(m->access->thread, NULL);
		tc__free(m->access);
		m->access = NULL;
	}
	t0 = tc__mono_ns();
	if (tc__cu_get(&cu, err, sizeof(err)) < 0) {
		/* A forked child: the driver's objects are not ours to
		 * touch, but the fd copy is. */
		goto out_close_fd;
	}
	/* Without a context (a lost GPU) we still drop our references. */
	if (tc__cu_enter(cu, m->device, &g, err, sizeof(err)) < 0)
		tc__log(TC_LOG_WARN, "%s", err);
	if (m->dptr) {
		r = cu->fn.cuMemUnmap((CUdeviceptr)m->dptr, (size_t)m->size);
		if (r)
			warn_cuda(cu, r, "cuMemUnmap", "unmap", m->device);
		r = cu->fn.cuMemAddressFree((CUdeviceptr)m->dptr,
					    (size_t)m->size);
		if (r)
			warn_cuda(cu, r, "cuMemAddressFree",
				  "free address range", m->device);
	}
	if (m->handle) {
		r = cu->fn.cuMemRelease(
			(CUmemGenericAllocationHandle)m->handle);
		if (r)
			warn_cuda(cu, r, "cuMemRelease", "release allocation",
				  m->device);
	}
	tc__cu_leave(cu, &g);
	t1 = tc__mono_ns();
	/* Releases run where their owner runs (the daemon's loop, too): a
	 * slow one stalls that thread, so say which. */
	if (t1 - t0 > 5 * 1000000ull)
		tc__log(TC_LOG_DEBUG,
			"release of %" PRIu64 " bytes on GPU %d took %.1f ms",
			m->size, m->device, (double)(t1 - t0) / 1e6);
out_close_fd:
	if (m->fd >= 0)
		close(m->fd);
out_reset:
	tc__gpu_mem_init(m);
}

/* ---- releases off the caller's thread ---------------------------------- */

/* A release thread runs while releases are queued and exits when the queue
 * is empty: no thread outlives its work (nothing for the process's exit,
 * or a leak checker stopping every thread, to find mid-wait). */
struct later {
	struct later *next;
	struct tc__gpu_mem m;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t idle;
	struct later *head, *tail;
	int pending;   /* queued or being released */
	bool running;  /* a release thread is at work */
	bool joinable; /* `thread` is to be joined (running or done) */
	pthread_t thread;
	pid_t pid; /* the process that started one; 0: none yet */
} rel = { .mu = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER };

static void *release_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rel.mu);
	while (rel.head) {
		struct later *l = rel.head;

		rel.head = l->next;
		if (!rel.head)
			rel.tail = NULL;
		pthread_mutex_unlock(&rel.mu);
		tc__gpu_release(&l->m);
		tc__free(l);
		pthread_mutex_lock(&rel.mu);
		rel.pending--;
	}
	rel.running = false;
	pthread_cond_broadcast(&rel.idle);
	pthread_mutex_unlock(&rel.mu);
	return NULL;
}

/* A forked child inherits the queue and its lock (perhaps held), not the
 * thread: it releases on its own thread, never touching either. */
static bool release_forked(void)
{
	pid_t pid = __atomic_load_n(&rel.pid, __ATOMIC_ACQUIRE);

	return pid && pid != getpid();
}

/* With rel.mu held: a release thread at work, joining the one that
 * finished first.  False when none can be started. */
static bool release_thread_ready(void)
{
	while (!rel.running && rel.joinable) {
		pthread_t t = rel.thread;

		rel.joinable = false;
		pthread_mutex_unlock(&rel.mu);
		pthread_join(t, NULL); /* it has finished, or nearly */
		pthread_mutex_lock(&rel.mu);
	}
	if (rel.running)
		return true;
	if (pthread_create(&rel.thread, NULL, release_thread, NULL) != 0)
		return false;
	rel.running = rel.joinable = true;
	__atomic_store_n(&rel.pid, getpid(), __ATOMIC_RELEASE);
	return true;
}

void tc__gpu_release_later(struct tc__gpu_mem *m)
{
	struct later *l;

	if (!m->handle && !m->dptr && m->fd < 0)
		return;
	if (release_forked()) {
		tc__gpu_release(m);
		return;
	}
	l = tc__malloc(sizeof(*l));
	pthread_mutex_lock(&rel.mu);
	if (!l || !release_thread_ready()) {
		pthread_mutex_unlock(&rel.mu);
		tc__free(l);
		tc__gpu_release(m);
		return;
	}
	/* Queued before the lock goes: the thread finds it. */
	l->next = NULL;
	l->m = *m;
	if (rel.tail)
		rel.tail->next = l;
	else
		rel.head = l;
	rel.tail = l;
	rel.pending++;
	pthread_mutex_unlock(&rel.mu);
	tc__gpu_mem_init(m);
}

int tc__gpu_release_wait(void)
{
	bool join = false;
	pthread_t t;
	int n;

	if (release_forked())
		return 0;
	pthread_mutex_lock(&rel.mu);
	n = rel.pending;
	while (rel.pending || rel.running)
		pthread_cond_wait(&rel.idle, &rel.mu);
	if (rel.joinable) {
		t = rel.thread;
		rel.joinable = false;
		join = true;
	}
	pthread_mutex_unlock(&rel.mu);
	if (join)
		pthread_join(t, NULL);
	return n;
}

/* ------------------------------------------------------------------------ */
/* Streams and events                                                        */
/* ------------------------------------------------------------------------ */

int tc__gpu_stream_create(int ordinal, struct tc__gpu_stream **out, char *err,
			  size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	struct tc__gpu_stream *s;
	CUresult r;
	int ret;

	*out = NULL;
	s = tc__calloc(1, sizeof(*s));
	if (!s)
		return tc__cu_seterr(-ENOMEM, err, errlen,
				     "cannot create a stream: out of memory");
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		goto out_free_stream;
	r = cu->fn.cuStreamCreate(&s->s, CU_STREAM_NON_BLOCKING);
	if (r)
		ret = tc__cu_fail(cu, r, "cuStreamCreate", err, errlen,
				  "cannot create a stream on GPU %d", ordinal);
	tc__cu_leave(cu, &g);
	if (ret < 0)
		goto out_free_stream;
	s->device = ordinal;
	s->owned = true;
	*out = s;
	return 0;

out_free_stream:
	tc__free(s);
	return ret;
}

int tc__gpu_stream_wrap(int ordinal, uintptr_t handle,
			struct tc__gpu_stream **out, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__gpu_stream *s;
	int ret;

	*out = NULL;
	ret = tc__cu_get(&cu, err, errlen);
	if (ret < 0)
		return ret;
	if (!tc__cu_dev(cu, ordinal, err, errlen))
		return TC_EDEVICE;
	s = tc__calloc(1, sizeof(*s));
	if (!s)
		return tc__cu_seterr(-ENOMEM, err, errlen,
				     "cannot wrap a stream: out of memory");
	s->s = (CUstream)handle;
	s->device = ordinal;
	s->owned = false;
	*out = s;
	return 0;
}

uintptr_t tc__gpu_stream_handle(const struct tc__gpu_stream *s)
{
	return (uintptr_t)s->s;
}

int tc__gpu_stream_sync(struct tc__gpu_stream *s, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	/* The special handles mean "the current context's stream", so the
	 * right context must be current even to synchronise. */
	ret = gpu_begin(s->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuStreamSynchronize(s->s);
	if (r)
		ret = tc__cu_fail(cu, r, "cuStreamSynchronize", err, errlen,
				  "cannot synchronise a stream on GPU %d",
				  s->device);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_device_sync(int ordinal, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuCtxSynchronize();
	if (r)
		ret = tc__cu_fail(cu, r, "cuCtxSynchronize", err, errlen,
				  "cannot synchronise GPU %d", ordinal);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_stream_wait_event(struct tc__gpu_stream *s, struct tc__gpu_event *e,
			      char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	ret = gpu_begin(s->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuStreamWaitEvent(s->s, e->e, 0);
	if (r)
		ret = tc__cu_fail(cu, r, "cuStreamWaitEvent", err, errlen,
				  "cannot order a stream on GPU %d after an "
				  "event",
				  s->device);
	tc__cu_leave(cu, &g);
	return ret;
}

void tc__gpu_stream_free(struct tc__gpu_stream *s)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	char err[256];
	CUresult r;

	if (!s)
		return;
	if (s->owned && tc__cu_get(&cu, err, sizeof(err)) == 0) {
		if (tc__cu_enter(cu, s->device, &g, err, sizeof(err)) < 0)
			tc__log(TC_LOG_WARN, "%s", err);
		r = cu->fn.cuStreamDestroy(s->s);
		if (r)
			warn_cuda(cu, r, "cuStreamDestroy", "destroy a stream",
				  s->device);
		tc__cu_leave(cu, &g);
	}
	tc__free(s);
}

int tc__gpu_event_create(int ordinal, unsigned flags,
			 struct tc__gpu_event **out, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	struct tc__gpu_event *e;
	CUresult r;
	int ret;

	*out = NULL;
	if (flags & ~(unsigned)TC_GPU_EVENT_TIMING)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot create an event: unknown flags "
				     "%#x",
				     flags);
	e = tc__calloc(1, sizeof(*e));
	if (!e)
		return tc__cu_seterr(-ENOMEM, err, errlen,
				     "cannot create an event: out of memory");
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		goto out_free_event;
	r = cu->fn.cuEventCreate(&e->e, (flags & TC_GPU_EVENT_TIMING) ?
						CU_EVENT_DEFAULT :
						CU_EVENT_DISABLE_TIMING);
	if (r)
		ret = tc__cu_fail(cu, r, "cuEventCreate", err, errlen,
				  "cannot create an event on GPU %d", ordinal);
	tc__cu_leave(cu, &g);
	if (ret < 0)
		goto out_free_event;
	e->device = ordinal;
	e->flags = flags;
	*out = e;
	return 0;

out_free_event:
	tc__free(e);
	return ret;
}

int tc__gpu_event_record(struct tc__gpu_event *e, struct tc__gpu_stream *s,
			 char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	if (s && s->device != e->device)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot record an event of GPU %d on a "
				     "stream of GPU %d",
				     e->device, s->device);
	ret = gpu_begin(e->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuEventRecord(e->e, s ? s->s : NULL);
	if (r)
		ret = tc__cu_fail(cu, r, "cuEventRecord", err, errlen,
				  "cannot record an event on GPU %d",
				  e->device);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_event_sync(struct tc__gpu_event *e, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	ret = gpu_begin(e->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuEventSynchronize(e->e);
	if (r)
		ret = tc__cu_fail(cu, r, "cuEventSynchronize", err, errlen,
				  "cannot wait for an event on GPU %d",
				  e->device);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_event_query(struct tc__gpu_event *e, bool *done, char *err,
			size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	*done = false;
	ret = gpu_begin(e->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuEventQuery(e->e);
	if (r == CUDA_SUCCESS)
		*done = true;
	else if (r != CUDA_ERROR_NOT_READY)
		ret = tc__cu_fail(cu, r, "cuEventQuery", err, errlen,
				  "cannot query an event on GPU %d", e->device);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_event_elapsed_ms(struct tc__gpu_event *start,
			     struct tc__gpu_event *end, float *ms, char *err,
			     size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	*ms = 0;
	if (!(start->flags & end->flags & TC_GPU_EVENT_TIMING))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot time events created without "
				     "TC_GPU_EVENT_TIMING");
	ret = gpu_begin(start->device, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuEventElapsedTime(ms, start->e, end->e);
	if (r)
		ret = tc__cu_fail(cu, r, "cuEventElapsedTime", err, errlen,
				  "cannot time events on GPU %d",
				  start->device);
	tc__cu_leave(cu, &g);
	return ret;
}

void tc__gpu_event_free(struct tc__gpu_event *e)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	char err[256];
	CUresult r;

	if (!e)
		return;
	if (tc__cu_get(&cu, err, sizeof(err)) == 0) {
		if (tc__cu_enter(cu, e->device, &g, err, sizeof(err)) < 0)
			tc__log(TC_LOG_WARN, "%s", err);
		r = cu->fn.cuEventDestroy(e->e);
		if (r)
			warn_cuda(cu, r, "cuEventDestroy", "destroy an event",
				  e->device);
		tc__cu_leave(cu, &g);
	}
	tc__free(e);
}

/* ------------------------------------------------------------------------ */
/* Copies                                                                    */
/* ------------------------------------------------------------------------ */

int tc__gpu_enter(int ordinal, const struct tc__gpu_stream *s,
		  const struct tc__cu **cu, struct tc__cu_guard *g, char *err,
		  size_t errlen)
{
	if (s && s->device != ordinal)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot copy on GPU %d with a stream of "
				     "GPU %d",
				     ordinal, s->device);
	return gpu_begin(ordinal, cu, g, err, errlen);
}

/* One copy or memset: what moves, between which addresses. */
enum xfer_kind { XF_HTOD, XF_DTOH, XF_DTOD, XF_SET };
struct xfer {
	enum xfer_kind kind;
	uint64_t ddst, dsrc; /* device addresses (by kind) */
	void *hdst;	     /* XF_DTOH */
	const void *hsrc;    /* XF_HTOD */
	uint8_t value;	     /* XF_SET */
};

/*
 * Every copy and memset goes through here.  With a stream it is queued;
 * without one it is finished when this returns.  The driver's blocking
 * memset and device-to-device copy return before the device has finished,
 * and a blocking copy from pageable memory returns once the bytes are
 * staged, while every stream tcast makes is non-blocking (unordered with
 * the legacy stream): so the blocking forms also wait for the legacy
 * stream, and the bytes are in place for this process and any other.
 */
static int xfer_run(int ordinal, const struct xfer *x, uint64_t n,
		    struct tc__gpu_stream *s, char *err, size_t errlen)
{
	static const char *const names[][2] = {
		[XF_HTOD] = { "cuMemcpyHtoD", "cuMemcpyHtoDAsync" },
		[XF_DTOH] = { "cuMemcpyDtoH", "cuMemcpyDtoHAsync" },
		[XF_DTOD] = { "cuMemcpyDtoD", "cuMemcpyDtoDAsync" },
		[XF_SET] = { "cuMemsetD8", "cuMemsetD8Async" },
	};
	const char *what = names[x->kind][s != NULL];
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r = CUDA_SUCCESS;
	int ret;

	if (n == 0)
		return 0;
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	switch (x->kind) {
	case XF_HTOD:
		r = s ? cu->fn.cuMemcpyHtoDAsync(x->ddst, x->hsrc, n, s->s) :
			cu->fn.cuMemcpyHtoD(x->ddst, x->hsrc, n);
		break;
	case XF_DTOH:
		r = s ? cu->fn.cuMemcpyDtoHAsync(x->hdst, x->dsrc, n, s->s) :
			cu->fn.cuMemcpyDtoH(x->hdst, x->dsrc, n);
		break;
	case XF_DTOD:
		r = s ? cu->fn.cuMemcpyDtoDAsync(x->ddst, x->dsrc, n, s->s) :
			cu->fn.cuMemcpyDtoD(x->ddst, x->dsrc, n);
		break;
	case XF_SET:
		r = s ? cu->fn.cuMemsetD8Async(x->ddst, x->value, n, s->s) :
			cu->fn.cuMemsetD8(x->ddst, x->value, n);
		break;
	}
	/* A blocking copy to host memory is already complete. */
	if (r == CUDA_SUCCESS && !s && x->kind != XF_DTOH) {
		r = cu->fn.cuStreamSynchronize(NULL);
		what = "cuStreamSynchronize";
	}
	if (r == CUDA_SUCCESS)
		goto out;
	switch (x->kind) {
	case XF_HTOD:
		ret = tc__cu_fail(cu, r, what, err, errlen,
				  "cannot copy %" PRIu64
				  " bytes to GPU %d at 0x%" PRIx64,
				  n, ordinal, x->ddst);
		break;
	case XF_DTOH:
		ret = tc__cu_fail(cu, r, what, err, errlen,
				  "cannot copy %" PRIu64
				  " bytes from GPU %d at 0x%" PRIx64,
				  n, ordinal, x->dsrc);
		break;
	case XF_DTOD:
		ret = tc__cu_fail(cu, r, what, err, errlen,
				  "cannot copy %" PRIu64
				  " bytes on GPU %d from 0x%" PRIx64
				  " to 0x%" PRIx64,
				  n, ordinal, x->dsrc, x->ddst);
		break;
	case XF_SET:
		ret = tc__cu_fail(cu, r, what, err, errlen,
				  "cannot set %" PRIu64
				  " bytes on GPU %d at 0x%" PRIx64,
				  n, ordinal, x->ddst);
		break;
	}
out:
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_htod(int ordinal, uint64_t dst, const void *src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen)
{
	struct xfer x = { .kind = XF_HTOD, .ddst = dst, .hsrc = src };

	return xfer_run(ordinal, &x, n, s, err, errlen);
}

int tc__gpu_dtoh(int ordinal, void *dst, uint64_t src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen)
{
	struct xfer x = { .kind = XF_DTOH, .hdst = dst, .dsrc = src };

	return xfer_run(ordinal, &x, n, s, err, errlen);
}

int tc__gpu_dtod(int ordinal, uint64_t dst, uint64_t src, uint64_t n,
		 struct tc__gpu_stream *s, char *err, size_t errlen)
{
	struct xfer x = { .kind = XF_DTOD, .ddst = dst, .dsrc = src };

	return xfer_run(ordinal, &x, n, s, err, errlen);
}

int tc__gpu_memset8(int ordinal, uint64_t dst, uint8_t value, uint64_t n,
		    struct tc__gpu_stream *s, char *err, size_t errlen)
{
	struct xfer x = { .kind = XF_SET, .ddst = dst, .value = value };

	return xfer_run(ordinal, &x, n, s, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Strided copies                                                            */
/* ------------------------------------------------------------------------ */

/* cuMemcpy2D refuses pitches above the device's CU_DEVICE_ATTRIBUTE_MAX_PITCH
 * (2^31 - 1 on every GPU so far); larger ones go row by row. */
#define MAX_PITCH ((uint64_t)INT32_MAX)

/* The end of a strided copy: wait for it when it runs on no stream (the
 * caller's contract), then name what failed and which way it went. */
static int copy_finish(const struct tc__cu *cu, CUresult r, const char *what,
		       struct tc__gpu_stream *s, bool dst_dev, bool src_dev,
		       int ordinal, const char *shape, char *err, size_t errlen)
{
	if (r == CUDA_SUCCESS && !s) {
		r = cu->fn.cuStreamSynchronize(NULL);
		what = "cuStreamSynchronize";
	}
	if (r == CUDA_SUCCESS)
		return 0;
	return tc__cu_fail(cu, r, what, err, errlen, "cannot copy %s %s GPU %d",
			   shape,
			   dst_dev && src_dev ? "on" :
			   dst_dev	      ? "to" :
						"from",
			   ordinal);
}

int tc__gpu_copy_2d(int ordinal, uint64_t dst, bool dst_dev, uint64_t dpitch,
		    uint64_t src, bool src_dev, uint64_t spitch, uint64_t width,
		    uint64_t height, struct tc__gpu_stream *s, char *err,
		    size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUDA_MEMCPY2D m;
	CUstream st = s ? s->s : NULL;
	CUresult r = CUDA_SUCCESS;
	const char *what = "cuMemcpy2DAsync";
	char shape[96];
	int ret;

	if (width == 0 || height == 0)
		return 0;
	if ((height > 1 && (dpitch < width || spitch < width)))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot copy rows of %" PRIu64
				     " bytes with pitches %" PRIu64
				     " and %" PRIu64,
				     width, dpitch, spitch);
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	memset(&m, 0, sizeof(m));
	m.srcMemoryType = src_dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
	m.dstMemoryType = dst_dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
	if (height == 1 || dpitch > MAX_PITCH || spitch > MAX_PITCH ||
	    width > MAX_PITCH) {
		/* One row per copy: a 2D copy of height 1 with pitch = width
		 * is a plain copy the driver accepts for any width. */
		for (uint64_t row = 0; row < height && r == CUDA_SUCCESS;
		     row++) {
			uint64_t so = src + row * spitch,
				 dof = dst + row * dpitch;

			for (uint64_t o = 0; o < width && r == CUDA_SUCCESS;
			     o += MAX_PITCH) {
				uint64_t n = TC_MIN(MAX_PITCH, width - o);

				m.srcHost = (const void *)(uintptr_t)(so + o);
				m.srcDevice = so + o;
				m.dstHost = (void *)(uintptr_t)(dof + o);
				m.dstDevice = dof + o;
				m.srcPitch = m.dstPitch = m.WidthInBytes = n;
				m.Height = 1;
				r = cu->fn.cuMemcpy2DAsync(&m, st);
			}
		}
	} else {
		m.srcHost = (const void *)(uintptr_t)src;
		m.srcDevice = src;
		m.srcPitch = spitch;
		m.dstHost = (void *)(uintptr_t)dst;
		m.dstDevice = dst;
		m.dstPitch = dpitch;
		m.WidthInBytes = width;
		m.Height = height;
		r = cu->fn.cuMemcpy2DAsync(&m, st);
	}
	snprintf(shape, sizeof(shape), "%" PRIu64 " rows of %" PRIu64 " bytes",
		 height, width);
	ret = copy_finish(cu, r, what, s, dst_dev, src_dev, ordinal, shape, err,
			  errlen);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_copy_3d(int ordinal, uint64_t dst, bool dst_dev, uint64_t dpitch,
		    uint64_t dblock, uint64_t src, bool src_dev,
		    uint64_t spitch, uint64_t sblock, uint64_t width,
		    uint64_t height, uint64_t depth, struct tc__gpu_stream *s,
		    char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUDA_MEMCPY3D m;
	CUstream st = s ? s->s : NULL;
	CUresult r;
	char shape[96];
	int ret;

	if (width == 0 || height == 0 || depth == 0)
		return 0;
	/* What one 3D copy cannot express goes block by block. */
	if (depth == 1 || height == 1 || spitch < width || dpitch < width ||
	    spitch > MAX_PITCH || dpitch > MAX_PITCH || sblock % spitch ||
	    dblock % dpitch || sblock / spitch < height ||
	    dblock / dpitch < height) {
		for (uint64_t z = 0; z < depth; z++) {
			ret = tc__gpu_copy_2d(ordinal, dst + z * dblock,
					      dst_dev, dpitch, src + z * sblock,
					      src_dev, spitch, width, height, s,
					      err, errlen);
			if (ret < 0)
				return ret;
		}
		return 0;
	}
	ret = tc__gpu_enter(ordinal, s, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	memset(&m, 0, sizeof(m));
	m.srcMemoryType = src_dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
	m.srcHost = (const void *)(uintptr_t)src;
	m.srcDevice = src;
	m.srcPitch = spitch;
	m.srcHeight = sblock / spitch;
	m.dstMemoryType = dst_dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
	m.dstHost = (void *)(uintptr_t)dst;
	m.dstDevice = dst;
	m.dstPitch = dpitch;
	m.dstHeight = dblock / dpitch;
	m.WidthInBytes = width;
	m.Height = height;
	m.Depth = depth;
	r = cu->fn.cuMemcpy3DAsync(&m, st);
	snprintf(shape, sizeof(shape),
		 "%" PRIu64 " x %" PRIu64 " rows of %" PRIu64 " bytes", depth,
		 height, width);
	ret = copy_finish(cu, r, "cuMemcpy3DAsync", s, dst_dev, src_dev,
			  ordinal, shape, err, errlen);
	tc__cu_leave(cu, &g);
	return ret;
}

static int check_range(const struct tc__gpu_mem *m, uint64_t off, uint64_t n,
		       const char *verb, char *err, size_t errlen)
{
	if (!m->handle)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot %s an empty GPU allocation", verb);
	if (off > m->size || n > m->size - off)
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot %s bytes [%" PRIu64 ", %" PRIu64
				     ") of a %" PRIu64 "-byte GPU allocation",
				     verb, off, off + n, m->size);
	return 0;
}

int tc__gpu_mem_write(const struct tc__gpu_mem *m, uint64_t off,
		      const void *src, uint64_t n, struct tc__gpu_stream *s,
		      char *err, size_t errlen)
{
	TC_GUARD(check_range(m, off, n, "write", err, errlen));
	return tc__gpu_htod(m->device, m->dptr + off, src, n, s, err, errlen);
}

int tc__gpu_mem_read(const struct tc__gpu_mem *m, uint64_t off, void *dst,
		     uint64_t n, struct tc__gpu_stream *s, char *err,
		     size_t errlen)
{
	TC_GUARD(check_range(m, off, n, "read", err, errlen));
	return tc__gpu_dtoh(m->device, dst, m->dptr + off, n, s, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Pinned host memory                                                        */
/* ------------------------------------------------------------------------ */

int tc__gpu_host_register(int ordinal, void *p, uint64_t n, unsigned flags,
			  char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	unsigned int cuflags = CU_MEMHOSTREGISTER_PORTABLE;
	CUresult r;
	int ret;

	if (!p || n == 0 || (flags & ~(unsigned)TC_GPU_READ_ONLY))
		return tc__cu_seterr(TC_EINVAL, err, errlen,
				     "cannot pin host memory: bad range %p "
				     "+%" PRIu64 " or flags %#x",
				     p, n, flags);
	if (flags & TC_GPU_READ_ONLY)
		cuflags |= CU_MEMHOSTREGISTER_READ_ONLY;
	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuMemHostRegister(p, n, cuflags);
	if (r)
		ret = tc__cu_fail(cu, r, "cuMemHostRegister", err, errlen,
				  "cannot pin %" PRIu64
				  " bytes of host memory at %p for GPU %d",
				  n, p, ordinal);
	tc__cu_leave(cu, &g);
	return ret;
}

int tc__gpu_host_unregister(int ordinal, void *p, char *err, size_t errlen)
{
	const struct tc__cu *cu;
	struct tc__cu_guard g;
	CUresult r;
	int ret;

	ret = gpu_begin(ordinal, &cu, &g, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuMemHostUnregister(p);
	if (r)
		ret = tc__cu_fail(cu, r, "cuMemHostUnregister", err, errlen,
				  "cannot unpin host memory at %p", p);
	tc__cu_leave(cu, &g);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------ */

int tc__gpu_last_cuda_error(void)
{
	return tc__cu_last_error();
}

bool tc__gpu_last_error_oom(void)
{
	return tc__cu_last_error() == CUDA_ERROR_OUT_OF_MEMORY;
}

const char *tc__gpu_cuda_error_name(int cuda_error)
{
	const struct tc__cu *cu;

	if (tc__cu_get(&cu, NULL, 0) < 0)
		cu = NULL;
	return tc__cu_error_name(cu, cuda_error);
}
