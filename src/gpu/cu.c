/*
 * cu.c - the CUDA driver loaded at run time: one function table, device
 * enumeration, primary contexts and error messages.
 *
 * Everything here happens at most once per process or once per device:
 * the driver is loaded under pthread_once, each device's primary context is
 * retained on first use under dev_lock and kept until exit (as the CUDA
 * runtime does), and nothing is ever unloaded.  Callers get a const view of
 * the table and switch contexts through tc__cu_enter/tc__cu_leave, which put
 * the calling thread's previous context back so tcast can run inside a
 * torch process without moving torch's current device.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcast/errors.h"
#include "common/alloc.h"
#include "common/log.h"
#include "cu.h"

#define TC_CU_DEFAULT_LIB "libcuda.so.1" /* the driver's soname */

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static bool load_started; /* load_once_fn has begun (atomic) */
static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tc__cu the_cu;	/* valid when load_ret == 0 */
static int load_ret;		/* result of the one load */
static char load_err[512];	/* and its message */
static int forked;		/* set in a child forked after the load */
static __thread int last_error; /* CUresult of the thread's last failure */

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Names for when the driver cannot tell us (not loaded, or it does not know
 * the code). */
static const struct {
	int code;
	const char *name;
} builtin_names[] = {
	{ CUDA_SUCCESS, "CUDA_SUCCESS" },
	{ CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE" },
	{ CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY" },
	{ CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED" },
	{ CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED" },
	{ CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY" },
	{ CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE" },
	{ CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE" },
	{ CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE" },
	{ CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT" },
	{ CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE" },
	{ CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY" },
	{ CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS" },
	{ CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED" },
	{ CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED" },
	{ CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN" },
};

const char *tc__cu_error_name(const struct tc__cu *cu, int r)
{
	static __thread char unknown[32];
	const char *name = NULL;

	if (cu && cu->fn.cuGetErrorName &&
	    cu->fn.cuGetErrorName((CUresult)r, &name) == CUDA_SUCCESS && name)
		return name;
	for (size_t i = 0; i < sizeof(builtin_names) / sizeof(builtin_names[0]);
	     i++)
		if (builtin_names[i].code == r)
			return builtin_names[i].name;
	snprintf(unknown, sizeof(unknown), "CUDA error %d", r);
	return unknown;
}

static const char *error_string(const struct tc__cu *cu, CUresult r)
{
	const char *s = NULL;

	if (cu && cu->fn.cuGetErrorString &&
	    cu->fn.cuGetErrorString(r, &s) == CUDA_SUCCESS && s)
		return s;
	return "no description";
}

int tc__cu_last_error(void)
{
	return last_error;
}

int tc__cu_seterr(int code, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* The message tail shared by tc__cu_fail and the load path. */
static void append_cuda(const struct tc__cu *cu, CUresult r, const char *call,
			char *err, size_t errlen)
{
	size_t n;

	if (!err || !errlen)
		return;
	n = strlen(err);
	if (n + 1 >= errlen)
		return;
	snprintf(err + n, errlen - n, ": %s: %s (%s)", call,
		 tc__cu_error_name(cu, r), error_string(cu, r));
}

int tc__cu_fail(const struct tc__cu *cu, CUresult r, const char *call,
		char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	last_error = (int)r;
	if (!err || !errlen)
		return TC_ECUDA;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	append_cuda(cu, r, call, err, errlen);
	return TC_ECUDA;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

static void on_fork_child(void)
{
	/* The driver's state does not survive fork(): CUDA documents that a
	 * child must not use it.  Refuse cleanly instead of hanging. */
	__atomic_store_n(&forked, 1, __ATOMIC_RELEASE);
}

static void *resolve(void *dl, const char *sym, const char *fallback)
{
	void *p = dlsym(dl, sym);

	if (!p && fallback)
		p = dlsym(dl, fallback);
	return p;
}

static int query_attr(const struct tc__cu *cu, CUdevice dev,
		      CUdevice_attribute a)
{
	int v = 0;

	/* Older drivers reject attributes they do not know; that means "no". */
	if (cu->fn.cuDeviceGetAttribute(&v, a, dev) != CUDA_SUCCESS)
		return 0;
	return v;
}

static int query_device(struct tc__cu *cu, int ordinal, char *err,
			size_t errlen)
{
	struct tc__cu_dev *d = &cu->devs[ordinal];
	struct tc__gpu_info *info = &d->info;
	char name[256];
	CUuuid uuid;
	size_t total;
	CUresult r;

	info->ordinal = ordinal;
	r = cu->fn.cuDeviceGet(&d->dev, ordinal);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceGet", err, errlen,
				   "cannot enumerate GPU %d", ordinal);
	r = cu->fn.cuDeviceGetName(name, (int)sizeof(name), d->dev);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceGetName", err, errlen,
				   "cannot enumerate GPU %d", ordinal);
	name[sizeof(name) - 1] = '\0';
	snprintf(info->name, sizeof(info->name), "%s", name);
	r = cu->fn.cuDeviceGetUuid(&uuid, d->dev);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceGetUuid", err, errlen,
				   "cannot enumerate GPU %d", ordinal);
	memcpy(info->uuid, uuid.bytes, TC_GPU_UUID_BYTES);
	tc__gpu_uuid_format(info->uuid, info->uuid_str);
	r = cu->fn.cuDeviceTotalMem(&total, d->dev);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceTotalMem", err, errlen,
				   "cannot enumerate GPU %d", ordinal);
	info->total_bytes = total;
	if (cu->fn.cuDeviceGetPCIBusId(name, (int)sizeof(name), d->dev) ==
	    CUDA_SUCCESS) {
		name[sizeof(name) - 1] = '\0';
		snprintf(info->pci_bus_id, sizeof(info->pci_bus_id), "%s",
			 name);
	}
	info->cc_major = query_attr(
		cu, d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
	info->cc_minor = query_attr(
		cu, d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
	info->sm_count = query_attr(cu, d->dev,
				    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
	info->vmm = query_attr(
		cu, d->dev,
		CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED);
	info->posix_fd = query_attr(
		cu, d->dev,
		CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED);
	info->rdma = query_attr(cu, d->dev,
				CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED);
	info->host_register = query_attr(
		cu, d->dev, CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED);
	info->host_register_ro = query_attr(
		cu, d->dev,
		CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED);
	return 0;
}

static int load_driver(struct tc__cu *cu, char *err, size_t errlen)
{
	const char *path = getenv("TCAST_CUDA_LIB");
	const char *vis;
	CUresult r;
	int n, ret;

	if (!path || !*path)
		path = TC_CU_DEFAULT_LIB;
	if (strlen(path) >= sizeof(cu->path))
		return tc__cu_seterr(TC_ENODEV, err, errlen,
				     "cannot load CUDA driver: path too long");
	snprintf(cu->path, sizeof(cu->path), "%s", path);
	cu->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!cu->dl)
		return tc__cu_seterr(TC_ENODEV, err, errlen,
				     "cannot load CUDA driver '%s': %s", path,
				     dlerror());

#define TC__CU_RESOLVE(field, sym, fallback, params)                      \
	cu->fn.field =                                                    \
		(__typeof__(cu->fn.field))resolve(cu->dl, sym, fallback); \
	if (!cu->fn.field) {                                              \
		ret = tc__cu_seterr(TC_ENODEV, err, errlen,               \
				    "CUDA driver '%s' lacks '%s' "        \
				    "(driver too old?)",                  \
				    path, sym);                           \
		goto out_close_dl;                                        \
	}
	TC_CU_FUNCS(TC__CU_RESOLVE)
#undef TC__CU_RESOLVE

	/* From here the driver may have started threads and opened device
	 * files: it stays loaded whatever happens. */
	r = cu->fn.cuInit(0);
	if (r) {
		last_error = (int)r;
		tc__cu_seterr(TC_ENODEV, err, errlen,
			      "cannot initialise CUDA driver '%s'", path);
		append_cuda(cu, r, "cuInit", err, errlen);
		return TC_ENODEV;
	}
	r = cu->fn.cuDriverGetVersion(&cu->driver_version);
	if (r)
		return tc__cu_fail(cu, r, "cuDriverGetVersion", err, errlen,
				   "cannot query CUDA driver '%s'", path);
	r = cu->fn.cuDeviceGetCount(&n);
	if (r)
		return tc__cu_fail(cu, r, "cuDeviceGetCount", err, errlen,
				   "cannot count GPUs");
	if (n <= 0) {
		vis = getenv("CUDA_VISIBLE_DEVICES");
		return tc__cu_seterr(TC_ENODEV, err, errlen,
				     "no CUDA device visible (driver '%s', "
				     "CUDA_VISIBLE_DEVICES=%s)",
				     path, vis ? vis : "unset");
	}
	cu->devs = tc__calloc((size_t)n, sizeof(*cu->devs));
	if (!cu->devs)
		return tc__cu_seterr(-ENOMEM, err, errlen,
				     "cannot enumerate GPUs: out of memory");
	cu->ndev = n;
	for (int i = 0; i < n; i++) {
		ret = query_device(cu, i, err, errlen);
		if (ret < 0)
			goto out_free_devs;
	}
	return 0;

out_free_devs:
	tc__free(cu->devs);
	cu->devs = NULL;
	cu->ndev = 0;
	return ret;
out_close_dl:
	dlclose(cu->dl);
	cu->dl = NULL;
	return ret;
}

static void load_once_fn(void)
{
	__atomic_store_n(&load_started, true, __ATOMIC_RELEASE);
	load_ret = load_driver(&the_cu, load_err, sizeof(load_err));
	if (load_ret == 0)
		pthread_atfork(NULL, NULL, on_fork_child);
	else
		tc__log(TC_LOG_INFO, "%s", load_err);
}

bool tc__gpu_driver_untouched(void)
{
	const char *path = getenv("TCAST_CUDA_LIB");
	void *h;

	if (__atomic_load_n(&load_started, __ATOMIC_ACQUIRE))
		return false;
	if (!path || !*path)
		path = TC_CU_DEFAULT_LIB;
	/* Loaded by someone else (torch): its cuInit has read the
	 * environment already, and ordinals are what it saw. */
	h = dlopen(path, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
	if (h) {
		dlclose(h);
		return false;
	}
	return true;
}

int tc__cu_get(const struct tc__cu **out, char *err, size_t errlen)
{
	*out = NULL;
	pthread_once(&load_once, load_once_fn);
	if (load_ret < 0)
		return tc__cu_seterr(load_ret, err, errlen, "%s", load_err);
	if (__atomic_load_n(&forked, __ATOMIC_ACQUIRE))
		return tc__cu_seterr(TC_ENODEV, err, errlen,
				     "cannot use CUDA in process %d: it was "
				     "forked after the driver was initialised",
				     (int)getpid());
	*out = &the_cu;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Devices and contexts                                                      */
/* ------------------------------------------------------------------------ */

const struct tc__cu_dev *tc__cu_dev(const struct tc__cu *cu, int ordinal,
				    char *err, size_t errlen)
{
	if (ordinal < 0 || ordinal >= cu->ndev) {
		tc__cu_seterr(TC_EDEVICE, err, errlen,
			      "no GPU with ordinal %d (%d visible)", ordinal,
			      cu->ndev);
		return NULL;
	}
	return &cu->devs[ordinal];
}

/* The device's primary context, retained on first use. */
static int primary_ctx(const struct tc__cu *cu, struct tc__cu_dev *d,
		       CUcontext *ctx, char *err, size_t errlen)
{
	CUresult r = CUDA_SUCCESS;

	*ctx = __atomic_load_n(&d->ctx, __ATOMIC_ACQUIRE);
	if (*ctx)
		return 0;
	pthread_mutex_lock(&dev_lock);
	if (!d->ctx) {
		r = cu->fn.cuDevicePrimaryCtxRetain(ctx, d->dev);
		if (r == CUDA_SUCCESS)
			__atomic_store_n(&d->ctx, *ctx, __ATOMIC_RELEASE);
	}
	*ctx = d->ctx;
	pthread_mutex_unlock(&dev_lock);
	if (r)
		return tc__cu_fail(cu, r, "cuDevicePrimaryCtxRetain", err,
				   errlen, "cannot open GPU %d (%s)",
				   d->info.ordinal, d->info.uuid_str);
	return 0;
}

int tc__cu_ctx(const struct tc__cu *cu, int ordinal, CUcontext *ctx, char *err,
	       size_t errlen)
{
	*ctx = NULL;
	if (!tc__cu_dev(cu, ordinal, err, errlen))
		return TC_EDEVICE;
	return primary_ctx(cu, &cu->devs[ordinal], ctx, err, errlen);
}

int tc__cu_enter(const struct tc__cu *cu, int ordinal, struct tc__cu_guard *g,
		 char *err, size_t errlen)
{
	struct tc__cu_dev *d;
	CUcontext ctx;
	CUresult r;
	int ret;

	g->prev = NULL;
	g->switched = false;
	g->active = false;
	if (!tc__cu_dev(cu, ordinal, err, errlen))
		return TC_EDEVICE;
	d = &cu->devs[ordinal];
	ret = primary_ctx(cu, d, &ctx, err, errlen);
	if (ret < 0)
		return ret;
	r = cu->fn.cuCtxGetCurrent(&g->prev);
	if (r)
		return tc__cu_fail(cu, r, "cuCtxGetCurrent", err, errlen,
				   "cannot use GPU %d", ordinal);
	if (g->prev != ctx) {
		r = cu->fn.cuCtxSetCurrent(ctx);
		if (r)
			return tc__cu_fail(cu, r, "cuCtxSetCurrent", err,
					   errlen, "cannot use GPU %d",
					   ordinal);
		g->switched = true;
	}
	g->active = true;
	return 0;
}

void tc__cu_leave(const struct tc__cu *cu, struct tc__cu_guard *g)
{
	CUresult r;

	if (!g->active)
		return;
	g->active = false;
	if (!g->switched)
		return;
	r = cu->fn.cuCtxSetCurrent(g->prev);
	if (r) {
		last_error = (int)r;
		tc__log(TC_LOG_WARN,
			"cannot restore the caller's CUDA context: "
			"cuCtxSetCurrent: %s",
			tc__cu_error_name(cu, r));
	}
}

CUresult tc__cu_set_access(const struct tc__cu *cu, int ordinal, CUdeviceptr va,
			   size_t bytes, CUmemAccess_flags flags)
{
	CUmemAccessDesc d;

	memset(&d, 0, sizeof(d));
	d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	d.location.id = cu->devs[ordinal].dev;
	d.flags = flags;
	return cu->fn.cuMemSetAccess(va, bytes, &d, 1);
}

int tc__cu_granularity(const struct tc__cu *cu, int ordinal, size_t *min,
		       size_t *rec, char *err, size_t errlen)
{
	struct tc__cu_dev *d;
	CUmemAllocationProp prop;
	size_t gmin = 0, grec = 0;
	CUresult r;

	if (!tc__cu_dev(cu, ordinal, err, errlen))
		return TC_EDEVICE;
	d = &cu->devs[ordinal];
	if (!d->info.vmm || !d->info.posix_fd)
		return tc__cu_seterr(TC_ENOTSUP, err, errlen,
				     "GPU %d (%s) does not support virtual "
				     "memory management with POSIX fds",
				     ordinal, d->info.name);
	/* gran_rec is stored before gran_min, so a non-zero min means rec is
	 * there too. */
	*min = __atomic_load_n(&d->gran_min, __ATOMIC_ACQUIRE);
	if (*min) {
		*rec = __atomic_load_n(&d->gran_rec, __ATOMIC_ACQUIRE);
		return 0;
	}

	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = d->dev;
	r = cu->fn.cuMemGetAllocationGranularity(
		&gmin, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
	if (r)
		return tc__cu_fail(cu, r, "cuMemGetAllocationGranularity", err,
				   errlen, "cannot query GPU %d granularity",
				   ordinal);
	r = cu->fn.cuMemGetAllocationGranularity(
		&grec, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
	if (r)
		return tc__cu_fail(cu, r, "cuMemGetAllocationGranularity", err,
				   errlen, "cannot query GPU %d granularity",
				   ordinal);
	/* Everything below relies on it being a power of two. */
	if (!gmin || (gmin & (gmin - 1)))
		return tc__cu_seterr(TC_ECUDA, err, errlen,
				     "GPU %d reports granularity %zu, not a "
				     "power of two",
				     ordinal, gmin);
	if (grec < gmin || (grec & (grec - 1)))
		grec = gmin;
	pthread_mutex_lock(&dev_lock);
	__atomic_store_n(&d->gran_rec, grec, __ATOMIC_RELEASE);
	__atomic_store_n(&d->gran_min, gmin, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&dev_lock);
	*min = gmin;
	*rec = grec;
	return 0;
}
