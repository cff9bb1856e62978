/*
 * fakecuda.c - a fake libcuda.so.1: the subset of the CUDA driver API that
 * src/gpu uses, implemented over host memory, so CI machines without a GPU
 * run every GPU code path.  Point TCAST_CUDA_LIB at the built library.
 *
 * Model:
 *   - "Device memory" is one memfd per cuMemCreate, named
 *     "fakecuda:dev<N>" so an importer can tell which GPU it lives on.
 *     Export is a dup of the memfd, so real SCM_RIGHTS passing works
 *     between processes; import dups the fd it is given.
 *   - cuMemAddressReserve reserves host address space (mmap PROT_NONE);
 *     cuMemMap maps the memfd there (MAP_FIXED|MAP_SHARED) still PROT_NONE,
 *     and cuMemSetAccess mprotects it to PROT_READ or PROT_READ|PROT_WRITE,
 *     as the real driver only grants access at cuMemSetAccess.  Device
 *     pointers are host addresses, so copies are memcpy.
 *   - Copies and memsets check the target range: writing into a read-only
 *     or unmapped range returns CUDA_ERROR_INVALID_VALUE and changes
 *     nothing (what an H200 did for cuMemsetD8 into a PROT_READ mapping),
 *     instead of faulting.
 *   - An allocation's memory lives until its handle and every mapping are
 *     gone; an exported fd keeps the memfd (not the budget) alive.
 *   - Access is per device, as cuMemSetAccess grants it: the mapping's
 *     mprotect is the union over devices, and a peer copy checks that
 *     its source is readable by the source context's device and its
 *     destination writable by the destination's.  Peer access
 *     (cuCtxEnablePeerAccess) is bookkeeping per ordered pair of
 *     devices; a peer copy copies the bytes between the two devices'
 *     memfds whether it is enabled or not (the driver stages through the
 *     host when it is not).
 *   - Streams and events are bookkeeping; async work completes at once.
 *
 * Environment (read at cuInit unless noted):
 *   TC_FAKECUDA_DEVICES=N       physical fake GPUs (default 2, max 16; 0 makes
 *                               cuInit fail with CUDA_ERROR_NO_DEVICE)
 *   TC_FAKECUDA_MEM_BYTES=N     per-GPU memory budget (default 16 GiB;
 *                               suffixes k, m, g); cuMemCreate beyond it
 *                               fails with CUDA_ERROR_OUT_OF_MEMORY
 *   TC_FAKECUDA_NO_VMM=1        report no VMM / POSIX-fd support
 *   TC_FAKECUDA_NO_PEER=1       cuDeviceCanAccessPeer says no for every
 *                               pair (GPUs on separate PCIe roots, no
 *                               NVLink): peer copies still work, staged
 *                               through the host as the driver does
 *   TC_FAKECUDA_GBPS=htod=R,peer=R,fresh=R  (re-read on every copy)
 *                               throttle host-to-device copies and peer
 *                               copies to about R GB/s (a sleep after the
 *                               memcpy), so a test can make one source
 *                               faster than the other; fresh: the bytes
 *                               of any copy or memset that land in device
 *                               memory never written before (pages the
 *                               memfd does not hold yet) run at R instead,
 *                               the first-touch cost a real driver pays
 *                               scrubbing memory; absent: full speed
 *   CUDA_VISIBLE_DEVICES=1,0    visible subset and order, by physical index;
 *                               the first bad entry ends the list, as in CUDA
 *   TC_FAKECUDA_FAIL=fn:n[+][:ERR][,...]   (re-read on every call)
 *                               fail the n-th call of fn (counting from when
 *                               the value last changed; "+" fails every call
 *                               from the n-th on; fn "*" counts every call)
 *                               with CUDA_ERROR_OUT_OF_MEMORY or ERR (a
 *                               CUDA_ERROR_* name or a number).  fn may name
 *                               the symbol with or without its _v2 suffix.
 *   TC_FAKECUDA_B3_WRONG=1      (re-read on every launch) the chunk-hash
 *                               kernels give a wrong digest, as a broken
 *                               driver or JIT might (tests of the self-test)
 *   TC_FAKECUDA_RELEASE_DELAY_MS=n  (re-read on every call) cuMemRelease
 *                               sleeps n ms first, as a real release of
 *                               GiBs takes ms (tests of deferred releases)
 *   TC_FAKECUDA_LOST_AFTER=n    (re-read on every call) after n more calls
 *                               the device is "lost": every call returns
 *                               CUDA_ERROR_DEVICE_UNAVAILABLE.  Teardown
 *                               calls (release, unmap, free, destroy,
 *                               unregister) still tear down before failing,
 *                               as a driver does for a dead GPU, so callers
 *                               can be checked for leaks.
 *   TC_FAKECUDA_ORDER_DIR=dir   (re-read on every call) check the teardown
 *                               order of memory shared between processes:
 *                               an exporter releasing its allocation
 *                               leaves dir/<tag>.released; an importer
 *                               that unmaps such an allocation afterwards
 *                               (the exporter let go first while this
 *                               process still mapped it, the order the
 *                               driver's rules for shared device memory
 *                               forbid) is aborted, as the H200 server's
 *                               CUDA context died after exactly that.  A
 *                               killed exporter leaves no marker, so only
 *                               orderly teardowns are judged.
 *   TC_FAKECUDA_QUEUED=1        (re-read on every call) model work queued on
 *                               a stream: an async copy or memset (it still
 *                               runs at once) keeps using the device ranges
 *                               it read and wrote until a synchronisation
 *                               covers it (cuStreamSynchronize of its
 *                               stream, cuCtxSynchronize, or any
 *                               cuEventSynchronize, which clears all: no
 *                               false alarms); a cuMemUnmap of such a range
 *                               before that aborts the process, as on a GPU
 *                               the queued work takes an illegal address and
 *                               the context dies (what the H200 tcast.shared
 *                               server did when an argument's mapping went
 *                               while a clone of it was queued).
 * cuGetErrorName/cuGetErrorString are never failed or counted.
 *
 * One global lock serialises the fake; it is a test double, not fast.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpu/cu.h"
#include "fake_b3.h"

#define FAKE_API	 __attribute__((visibility("default")))
#define FAKE_MAX_DEV	 16
#define FAKE_GRAN	 ((size_t)2 << 20) /* VMM granularity, as on H100/H200 */
#define FAKE_DEFAULT_MEM ((size_t)16 << 30)
#define FAKE_VERSION	 12080 /* reports CUDA 12.8 */
#define FAKE_MAX_SPECS	 16

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

struct fctx {
	int ordinal; /* visible ordinal of its device */
	int refs;    /* primary-context retain count */
};

/* One visible device. */
struct fdev {
	int phys;      /* physical index: names the memfd, makes the UUID */
	size_t budget; /* bytes */
	size_t used;   /* bytes charged by live cuMemCreate allocations */
	struct fctx ctx;
};

/* An allocation handle (created or imported). Lives while refs > 0: the
 * handle itself and one per mapping. */
struct falloc {
	int fd; /* memfd */
	size_t size;
	int phys; /* physical device */
	int refs;
	bool charged;	/* counted in devs[].used (created here) */
	bool handle;	/* the handle is not yet released */
	unsigned types; /* requested handle types */
	char tag[40];	/* unique per allocation, in the memfd's name */
	struct falloc *next;
};

struct fres { /* a cuMemAddressReserve range */
	uintptr_t base;
	size_t size;
	struct fres *next;
};

struct fmap { /* a cuMemMap mapping */
	uintptr_t va;
	size_t size;
	struct falloc *a;
	int prot; /* PROT_* granted by cuMemSetAccess: the union */
	int prot_dev[FAKE_MAX_DEV]; /* per visible ordinal */
	struct fmap *next;
};

struct freg { /* a cuMemHostRegister range */
	uintptr_t p;
	size_t n;
	struct freg *next;
};

struct fstream {
	int ordinal;
	struct fstream *next;
};

struct fevent {
	unsigned flags;
	bool recorded;
	struct timespec t;
	struct fevent *next;
};

struct fspec { /* one TC_FAKECUDA_FAIL entry */
	char fn[64];
	long nth;
	bool and_after;
	CUresult err;
	long count;
};

static struct {
	pthread_mutex_t lock;
	bool inited;
	int ndev;
	struct fdev devs[FAKE_MAX_DEV];
	bool no_vmm;
	bool no_peer;				  /* TC_FAKECUDA_NO_PEER */
	bool peer_on[FAKE_MAX_DEV][FAKE_MAX_DEV]; /* [ctx dev][peer] enabled */
	struct falloc *allocs;
	struct fres *res;
	struct fmap *maps;
	struct freg *regs;
	struct fstream *streams;
	struct fevent *events;
	unsigned tags; /* allocations made, for their tags */
	/* fault injection */
	char *fail_env; /* last TC_FAKECUDA_FAIL seen, owned */
	struct fspec specs[FAKE_MAX_SPECS];
	int nspecs;
	char *lost_env;	 /* last TC_FAKECUDA_LOST_AFTER seen, owned */
	long lost_after; /* -1: not armed */
	long lost_calls;
} F = { .lock = PTHREAD_MUTEX_INITIALIZER, .lost_after = -1 };

static __thread struct fctx *cur_ctx;

/* TC_FAKECUDA_QUEUED: device ranges used by queued (not yet synchronised)
 * async work.  When full, the oldest is forgotten: a missed check, never
 * a false alarm. */
#define FAKE_MAX_QUEUED 256
static struct fqueued {
	uintptr_t p;
	size_t n;
	CUstream s;
} queued[FAKE_MAX_QUEUED];
static unsigned nqueued;

static bool queued_mode(void)
{
	const char *env = getenv("TC_FAKECUDA_QUEUED");

	return env && *env && strcmp(env, "0") != 0;
}

/* Async work on s used [p, p + n) (F.lock held). */
static void queued_add(CUstream s, uintptr_t p, size_t n)
{
	if (!queued_mode() || n == 0)
		return;
	if (nqueued == FAKE_MAX_QUEUED) {
		memmove(queued, queued + 1, sizeof(queued[0]) * --nqueued);
	}
	queued[nqueued].p = p;
	queued[nqueued].n = n;
	queued[nqueued].s = s;
	nqueued++;
}

/* Work on s (every stream when all) is done (F.lock held). */
static void queued_done(CUstream s, bool all)
{
	unsigned k = 0;

	for (unsigned i = 0; i < nqueued; i++)
		if (!all && queued[i].s != s)
			queued[k++] = queued[i];
	nqueued = k;
}

/* [p, p + n) is being unmapped: no queued work may still use it. */
static void queued_check_unmap(uintptr_t p, size_t n)
{
	if (!queued_mode())
		return;
	for (unsigned i = 0; i < nqueued; i++) {
		if (queued[i].p < p + n && p < queued[i].p + queued[i].n) {
			fprintf(stderr,
				"fakecuda: pid %d unmaps [0x%" PRIxPTR
				", +%zu) while work queued on a stream still "
				"uses it (no synchronisation since): an "
				"illegal address on a GPU "
				"(TC_FAKECUDA_QUEUED)\n",
				(int)getpid(), p, n);
			abort();
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static const struct {
	CUresult code;
	const char *name;
	const char *text;
} errtab[] = {
	{ CUDA_SUCCESS, "CUDA_SUCCESS", "no error" },
	{ CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE",
	  "invalid argument" },
	{ CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY",
	  "out of memory" },
	{ CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED",
	  "initialization error" },
	{ CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED",
	  "driver shutting down" },
	{ CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE",
	  "CUDA-capable device(s) is/are busy or unavailable" },
	{ CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE",
	  "no CUDA-capable device is detected" },
	{ CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE",
	  "invalid device ordinal" },
	{ CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT",
	  "invalid device context" },
	{ CUDA_ERROR_MAP_FAILED, "CUDA_ERROR_MAP_FAILED",
	  "mapping of buffer object failed" },
	{ CUDA_ERROR_ALREADY_MAPPED, "CUDA_ERROR_ALREADY_MAPPED",
	  "resource already mapped" },
	{ CUDA_ERROR_NOT_MAPPED, "CUDA_ERROR_NOT_MAPPED",
	  "resource not mapped" },
	{ CUDA_ERROR_ECC_UNCORRECTABLE, "CUDA_ERROR_ECC_UNCORRECTABLE",
	  "uncorrectable ECC error encountered" },
	{ CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM",
	  "OS call failed or operation not supported on this OS" },
	{ CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE",
	  "invalid resource handle" },
	{ CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND",
	  "named symbol not found" },
	{ CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready" },
	{ CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
	  "an illegal memory access was encountered" },
	{ CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
	  "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
	  "part or all of the requested memory range is already mapped" },
	{ CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
	  "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
	  "pointer does not correspond to a registered memory region" },
	{ CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED",
	  "unspecified launch failure" },
	{ CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED",
	  "operation not permitted" },
	{ CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED",
	  "operation not supported" },
	{ CUDA_ERROR_PEER_ACCESS_UNSUPPORTED,
	  "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
	  "peer access is not supported between these two devices" },
	{ CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED,
	  "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED",
	  "peer access is already enabled" },
	{ CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error" },
};

static int err_index(CUresult r)
{
	for (size_t i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].code == r)
			return (int)i;
	return -1;
}

FAKE_API CUresult cuGetErrorName(CUresult r, const char **s)
{
	int i = err_index(r);

	if (!s)
		return CUDA_ERROR_INVALID_VALUE;
	*s = i < 0 ? NULL : errtab[i].name;
	return i < 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

FAKE_API CUresult cuGetErrorString(CUresult r, const char **s)
{
	int i = err_index(r);

	if (!s)
		return CUDA_ERROR_INVALID_VALUE;
	*s = i < 0 ? NULL : errtab[i].text;
	return i < 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

static CUresult parse_err(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (!strcmp(errtab[i].name, s))
			return errtab[i].code;
	v = strtol(s, &end, 0);
	if (*s && !*end && v > 0)
		return (CUresult)v;
	return CUDA_ERROR_OUT_OF_MEMORY;
}

/* ------------------------------------------------------------------------ */
/* Fault injection                                                           */
/* ------------------------------------------------------------------------ */

/* Strip a _v2 suffix so "cuMemcpyHtoD" and "cuMemcpyHtoD_v2" match. */
static void base_name(const char *in, char *out, size_t outlen)
{
	size_t n;

	snprintf(out, outlen, "%s", in);
	n = strlen(out);
	if (n > 3 && !strcmp(out + n - 3, "_v2"))
		out[n - 3] = '\0';
}

static void parse_fail_env(const char *env)
{
	char *copy = strdup(env), *save = NULL, *tok;

	F.nspecs = 0;
	if (!copy)
		return;
	for (tok = strtok_r(copy, ",", &save); tok && F.nspecs < FAKE_MAX_SPECS;
	     tok = strtok_r(NULL, ",", &save)) {
		struct fspec *sp = &F.specs[F.nspecs];
		char *c1 = strchr(tok, ':'), *c2, *end;

		if (!c1)
			continue;
		*c1++ = '\0';
		c2 = strchr(c1, ':');
		if (c2)
			*c2++ = '\0';
		memset(sp, 0, sizeof(*sp));
		base_name(tok, sp->fn, sizeof(sp->fn));
		sp->nth = strtol(c1, &end, 10);
		sp->and_after = *end == '+';
		sp->err = c2 ? parse_err(c2) : CUDA_ERROR_OUT_OF_MEMORY;
		if (sp->nth > 0)
			F.nspecs++;
	}
	free(copy);
}

/* Has an environment value changed since we last looked? */
static bool env_changed(const char *env, char **seen)
{
	if (!env && !*seen)
		return false;
	if (env && *seen && !strcmp(env, *seen))
		return false;
	free(*seen);
	*seen = env ? strdup(env) : NULL;
	return true;
}

/*
 * Called under F.lock at the top of every entry point.  Returns the error to
 * fail this call with, or CUDA_SUCCESS.  For teardown calls (deferred !=
 * NULL) a lost device does not stop the call: its error is stored in
 * *deferred and returned after the teardown ran.
 */
static CUresult fake_enter(const char *fn, CUresult *deferred)
{
	const char *env;
	char base[64];

	if (deferred)
		*deferred = CUDA_SUCCESS;
	env = getenv("TC_FAKECUDA_FAIL");
	if (env_changed(env, &F.fail_env)) {
		F.nspecs = 0;
		if (env)
			parse_fail_env(env);
	}
	env = getenv("TC_FAKECUDA_LOST_AFTER");
	if (env_changed(env, &F.lost_env)) {
		F.lost_after = env ? strtol(env, NULL, 10) : -1;
		F.lost_calls = 0;
	}

	if (F.lost_after >= 0 && F.lost_calls++ >= F.lost_after) {
		if (!deferred)
			return CUDA_ERROR_DEVICE_UNAVAILABLE;
		*deferred = CUDA_ERROR_DEVICE_UNAVAILABLE;
	}
	base_name(fn, base, sizeof(base));
	for (int i = 0; i < F.nspecs; i++) {
		struct fspec *sp = &F.specs[i];

		if (strcmp(sp->fn, "*") && strcmp(sp->fn, base))
			continue;
		sp->count++;
		if (sp->count == sp->nth ||
		    (sp->and_after && sp->count > sp->nth))
			return sp->err;
	}
	return CUDA_SUCCESS;
}

#define LOCK()	 pthread_mutex_lock(&F.lock)
#define UNLOCK() pthread_mutex_unlock(&F.lock)

/* Enter a normal call: lock, injected failure, initialised. */
#define ENTER(name)                              \
	CUresult r_;                             \
	LOCK();                                  \
	r_ = fake_enter(name, NULL);             \
	if (!r_ && !F.inited)                    \
		r_ = CUDA_ERROR_NOT_INITIALIZED; \
	if (r_) {                                \
		UNLOCK();                        \
		return r_;                       \
	}

/* Enter a teardown call: a lost device still tears down. */
#define ENTER_TEARDOWN(name)                     \
	CUresult lost_, r_;                      \
	LOCK();                                  \
	r_ = fake_enter(name, &lost_);           \
	if (!r_ && !F.inited)                    \
		r_ = CUDA_ERROR_NOT_INITIALIZED; \
	if (r_) {                                \
		UNLOCK();                        \
		return r_;                       \
	}

#define RETURN(code)                   \
	do {                           \
		CUresult rr_ = (code); \
		UNLOCK();              \
		return rr_;            \
	} while (0)

#define RETURN_TEARDOWN(code)             \
	do {                              \
		CUresult rr_ = (code);    \
		UNLOCK();                 \
		return rr_ ? rr_ : lost_; \
	} while (0)

/* A context must be current (and alive) for this call. */
#define NEED_CTX()                                          \
	do {                                                \
		if (!cur_ctx || cur_ctx->refs <= 0)         \
			RETURN(CUDA_ERROR_INVALID_CONTEXT); \
	} while (0)

/* ------------------------------------------------------------------------ */
/* Init and devices                                                          */
/* ------------------------------------------------------------------------ */

static size_t parse_bytes(const char *s, size_t dflt)
{
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return dflt;
	v = strtoull(s, &end, 0);
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		break;
	default:
		break;
	}
	return (size_t)v;
}

static void fake_uuid(int phys, char out[16])
{
	memcpy(out, "tcastfakeGPU", 12);
	out[12] = 0x10;
	out[13] = 0x20;
	out[14] = (char)(phys >> 8);
	out[15] = (char)phys;
}

static struct fdev *dev_of(CUdevice d)
{
	return (d >= 0 && d < F.ndev) ? &F.devs[d] : NULL;
}

/* Visible ordinal of a physical device, or -1. */
static int ordinal_of_phys(int phys)
{
	for (int i = 0; i < F.ndev; i++)
		if (F.devs[i].phys == phys)
			return i;
	return -1;
}

FAKE_API CUresult cuInit(unsigned int flags)
{
	const char *env, *vis;
	int nphys;
	size_t budget;
	CUresult r;

	LOCK();
	r = fake_enter("cuInit", NULL);
	if (r)
		RETURN(r);
	if (flags)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (F.inited)
		RETURN(F.ndev ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE);
	env = getenv("TC_FAKECUDA_DEVICES");
	nphys = env ? atoi(env) : 2;
	if (nphys < 0)
		nphys = 0;
	if (nphys > FAKE_MAX_DEV)
		nphys = FAKE_MAX_DEV;
	budget = parse_bytes(getenv("TC_FAKECUDA_MEM_BYTES"), FAKE_DEFAULT_MEM);
	env = getenv("TC_FAKECUDA_NO_VMM");
	F.no_vmm = env && *env && strcmp(env, "0");
	env = getenv("TC_FAKECUDA_NO_PEER");
	F.no_peer = env && *env && strcmp(env, "0");
	memset(F.peer_on, 0, sizeof(F.peer_on));

	F.ndev = 0;
	vis = getenv("CUDA_VISIBLE_DEVICES");
	if (!vis) {
		for (int i = 0; i < nphys; i++)
			F.devs[F.ndev++].phys = i;
	} else {
		/* Indices in order; the first invalid entry ends the list. */
		const char *p = vis;

		while (*p && F.ndev < FAKE_MAX_DEV) {
			char *end;
			long v = strtol(p, &end, 10);

			if (end == p || v < 0 || v >= nphys ||
			    ordinal_of_phys((int)v) >= 0)
				break;
			F.devs[F.ndev++].phys = (int)v;
			p = end;
			if (*p == ',')
				p++;
			else if (*p)
				break;
		}
	}
	for (int i = 0; i < F.ndev; i++) {
		F.devs[i].budget = budget;
		F.devs[i].used = 0;
		F.devs[i].ctx.ordinal = i;
		F.devs[i].ctx.refs = 0;
	}
	F.inited = true;
	RETURN(F.ndev ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE);
}

FAKE_API CUresult cuDriverGetVersion(int *v)
{
	CUresult r;

	LOCK();
	r = fake_enter("cuDriverGetVersion", NULL);
	if (r)
		RETURN(r);
	if (!v)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	*v = FAKE_VERSION;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceGetCount(int *n)
{
	ENTER("cuDeviceGetCount");
	if (!n)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	*n = F.ndev;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
	ENTER("cuDeviceGet");
	if (!d)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(ordinal))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	*d = ordinal;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
	ENTER("cuDeviceGetName");
	if (!name || len <= 0)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	snprintf(name, (size_t)len, "tcast fake GPU %d", F.devs[d].phys);
	RETURN(CUDA_SUCCESS);
}

static CUresult get_uuid(const char *fn, CUuuid *u, CUdevice d)
{
	ENTER(fn);
	if (!u)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	fake_uuid(F.devs[d].phys, u->bytes);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
	return get_uuid("cuDeviceGetUuid", u, d);
}

FAKE_API CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d)
{
	return get_uuid("cuDeviceGetUuid_v2", u, d);
}

FAKE_API CUresult cuDeviceGetPCIBusId(char *s, int len, CUdevice d)
{
	ENTER("cuDeviceGetPCIBusId");
	if (!s || len <= 0)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	snprintf(s, (size_t)len, "0000:%02x:00.0", 0x10 + F.devs[d].phys);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
	ENTER("cuDeviceTotalMem_v2");
	if (!bytes)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	*bytes = F.devs[d].budget;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
	ENTER("cuDeviceGetAttribute");
	if (!v)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	switch (a) {
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
		*v = 132;
		break;
	case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
		*v = 0x10 + F.devs[d].phys;
		break;
	case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
	case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID:
		*v = 0;
		break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
		*v = 9;
		break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
		*v = 0;
		break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
	case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED:
	case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED:
	case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED:
		*v = 1;
		break;
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
		*v = F.no_vmm ? 0 : 1;
		break;
	default:
		RETURN(CUDA_ERROR_INVALID_VALUE);
	}
	RETURN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------ */

static bool ctx_valid(CUcontext c)
{
	for (int i = 0; i < F.ndev; i++)
		if ((void *)c == (void *)&F.devs[i].ctx)
			return true;
	return false;
}

FAKE_API CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
	ENTER("cuDevicePrimaryCtxRetain");
	if (!c)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	F.devs[d].ctx.refs++;
	*c = (CUcontext)(void *)&F.devs[d].ctx;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
	ENTER_TEARDOWN("cuDevicePrimaryCtxRelease_v2");
	if (!dev_of(d))
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_DEVICE);
	if (F.devs[d].ctx.refs <= 0)
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_CONTEXT);
	F.devs[d].ctx.refs--;
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

FAKE_API CUresult cuCtxGetCurrent(CUcontext *c)
{
	ENTER("cuCtxGetCurrent");
	if (!c)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	*c = (CUcontext)(void *)cur_ctx;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuCtxSetCurrent(CUcontext c)
{
	ENTER("cuCtxSetCurrent");
	if (c && !ctx_valid(c))
		RETURN(CUDA_ERROR_INVALID_CONTEXT);
	cur_ctx = (struct fctx *)(void *)c;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuCtxSynchronize(void)
{
	ENTER("cuCtxSynchronize");
	NEED_CTX();
	queued_done(NULL, true);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemGetInfo_v2(size_t *fr, size_t *total)
{
	struct fdev *d;

	ENTER("cuMemGetInfo_v2");
	NEED_CTX();
	if (!fr || !total)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	d = &F.devs[cur_ctx->ordinal];
	*fr = d->budget - d->used;
	*total = d->budget;
	RETURN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* VMM                                                                       */
/* ------------------------------------------------------------------------ */

static bool prop_ok(const CUmemAllocationProp *p)
{
	return p && p->type == CU_MEM_ALLOCATION_TYPE_PINNED &&
	       p->location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
	       dev_of(p->location.id) &&
	       !(p->requestedHandleTypes &
		 ~(unsigned)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
}

FAKE_API CUresult
cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop,
			      CUmemAllocationGranularity_flags opt)
{
	ENTER("cuMemGetAllocationGranularity");
	if (F.no_vmm)
		RETURN(CUDA_ERROR_NOT_SUPPORTED);
	if (!g || !prop_ok(prop) ||
	    (opt != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
	     opt != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	*g = FAKE_GRAN;
	RETURN(CUDA_SUCCESS);
}

/* TC_FAKECUDA_ORDER_DIR: the exporter of `a` has released it. */
static void order_mark_released(const struct falloc *a)
{
	const char *dir = getenv("TC_FAKECUDA_ORDER_DIR");
	char path[512];
	int fd;

	if (!dir || !*dir || !a->tag[0])
		return;
	snprintf(path, sizeof(path), "%s/%s.released", dir, a->tag);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

/* TC_FAKECUDA_ORDER_DIR: this process unmaps its import of `a`; its
 * exporter must not have released it yet. */
static void order_check_unmap(const struct falloc *a)
{
	const char *dir = getenv("TC_FAKECUDA_ORDER_DIR");
	char path[512];

	if (!dir || !*dir || a->charged || !a->tag[0])
		return;
	snprintf(path, sizeof(path), "%s/%s.released", dir, a->tag);
	if (access(path, F_OK) == 0) {
		fprintf(stderr,
			"fakecuda: pid %d unmaps allocation %s, which its "
			"exporter already released: importers must unmap "
			"first (TC_FAKECUDA_ORDER_DIR)\n",
			(int)getpid(), a->tag);
		abort();
	}
}

static struct falloc *alloc_of(CUmemGenericAllocationHandle h)
{
	for (struct falloc *a = F.allocs; a; a = a->next)
		if ((uintptr_t)a == (uintptr_t)h)
			return a;
	return NULL;
}

static void alloc_unref(struct falloc *a)
{
	struct falloc **pp;

	if (--a->refs > 0)
		return;
	for (pp = &F.allocs; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	if (a->charged) {
		int o = ordinal_of_phys(a->phys);

		if (o >= 0)
			F.devs[o].used -= a->size;
	}
	close(a->fd);
	free(a);
}

FAKE_API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size,
			      const CUmemAllocationProp *prop,
			      unsigned long long flags)
{
	struct fdev *d;
	struct falloc *a;
	char name[80]; /* "fakecuda:devN:" and a tag of up to 39 */
	int fd;

	ENTER("cuMemCreate");
	if (F.no_vmm)
		RETURN(CUDA_ERROR_NOT_SUPPORTED);
	if (!h || !prop_ok(prop) || flags || size == 0 || size % FAKE_GRAN)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	d = dev_of(prop->location.id);
	if (size > d->budget - d->used)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	a = calloc(1, sizeof(*a));
	if (!a)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	/* The tag rides in the name (memfd_phys reads only the device), so
	 * an importer can name the allocation for TC_FAKECUDA_ORDER_DIR. */
	snprintf(a->tag, sizeof(a->tag), "%d-%lx-%u", (int)getpid(),
		 (unsigned long)(uintptr_t)a, ++F.tags);
	snprintf(name, sizeof(name), "fakecuda:dev%d:%s", d->phys, a->tag);
	fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		free(a);
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	}
	a->fd = fd;
	a->size = size;
	a->phys = d->phys;
	a->refs = 1;
	a->handle = true;
	a->charged = true;
	a->types = prop->requestedHandleTypes;
	a->next = F.allocs;
	F.allocs = a;
	d->used += size;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)a;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
	const char *delay = getenv("TC_FAKECUDA_RELEASE_DELAY_MS");
	struct falloc *a;

	/* A real release of GiBs takes ms, outside this fake's lock. */
	if (delay && atoi(delay) > 0)
		usleep((useconds_t)atoi(delay) * 1000);
	ENTER_TEARDOWN("cuMemRelease");
	a = alloc_of(h);
	if (!a || !a->handle)
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_VALUE);
	a->handle = false;
	if (a->charged)
		order_mark_released(a);
	alloc_unref(a);
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemExportToShareableHandle(void *out,
					       CUmemGenericAllocationHandle h,
					       CUmemAllocationHandleType type,
					       unsigned long long flags)
{
	struct falloc *a;
	int fd;

	ENTER("cuMemExportToShareableHandle");
	a = alloc_of(h);
	if (!out || !a || !a->handle || flags ||
	    type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR ||
	    !(a->types & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	*(int *)out = fd;
	RETURN(CUDA_SUCCESS);
}

/* The tag of a fake allocation's memfd (empty when it has none). */
static void memfd_tag(int fd, char *tag, size_t n)
{
	char path[64], target[256], *p, *e;
	ssize_t len;

	tag[0] = '\0';
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	len = readlink(path, target, sizeof(target) - 1);
	if (len < 0)
		return;
	target[len] = '\0';
	p = strchr(target + sizeof("/memfd:fakecuda:dev") - 1, ':');
	if (!p)
		return;
	p++;
	e = strchr(p, ' '); /* " (deleted)" */
	if (e)
		*e = '\0';
	snprintf(tag, n, "%s", p);
}

/* The physical device of a fake allocation's memfd, or -1 if fd is not one. */
static int memfd_phys(int fd)
{
	char path[64], target[256];
	ssize_t n;
	int phys;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -1;
	target[n] = '\0';
	if (sscanf(target, "/memfd:fakecuda:dev%d", &phys) != 1)
		return -1;
	return phys;
}

FAKE_API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h,
						 void *os_handle,
						 CUmemAllocationHandleType type)
{
	struct falloc *a;
	struct stat st;
	int fd = (int)(intptr_t)os_handle, phys, dupfd;

	ENTER("cuMemImportFromShareableHandle");
	if (!h || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	phys = memfd_phys(fd);
	if (phys < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 ||
	    st.st_size % (off_t)FAKE_GRAN)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (ordinal_of_phys(phys) < 0)
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	a = calloc(1, sizeof(*a));
	if (!a)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0) {
		free(a);
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	}
	a->fd = dupfd;
	a->size = (size_t)st.st_size;
	a->phys = phys;
	memfd_tag(fd, a->tag, sizeof(a->tag));
	a->refs = 1;
	a->handle = true;
	a->charged = false; /* the exporter's budget pays for it */
	a->types = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	a->next = F.allocs;
	F.allocs = a;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)a;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size,
				      size_t align, CUdeviceptr addr,
				      unsigned long long flags)
{
	struct fres *res;
	uintptr_t base, aligned;
	void *p;

	ENTER("cuMemAddressReserve");
	if (align == 0)
		align = FAKE_GRAN;
	if (!ptr || size == 0 || size % FAKE_GRAN || (align & (align - 1)) ||
	    align % FAKE_GRAN || flags)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	(void)addr; /* a hint; ignored */
	res = calloc(1, sizeof(*res));
	if (!res)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	p = mmap(NULL, size + align, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		free(res);
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	}
	base = (uintptr_t)p;
	aligned = (base + align - 1) & ~(uintptr_t)(align - 1);
	if (aligned > base)
		munmap(p, aligned - base);
	if (aligned + size < base + size + align)
		munmap((void *)(aligned + size), base + align - aligned);
	res->base = aligned;
	res->size = size;
	res->next = F.res;
	F.res = res;
	*ptr = aligned;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
	struct fres **pp, *res;

	ENTER_TEARDOWN("cuMemAddressFree");
	for (pp = &F.res; *pp; pp = &(*pp)->next)
		if ((*pp)->base == ptr && (*pp)->size == size)
			break;
	if (!*pp)
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_VALUE);
	for (struct fmap *m = F.maps; m; m = m->next)
		if (m->va >= ptr && m->va < ptr + size)
			RETURN_TEARDOWN(CUDA_ERROR_INVALID_VALUE);
	res = *pp;
	*pp = res->next;
	munmap((void *)res->base, res->size);
	free(res);
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

static struct fres *res_containing(uintptr_t p, size_t n)
{
	for (struct fres *r = F.res; r; r = r->next)
		if (p >= r->base && n <= r->size && p - r->base <= r->size - n)
			return r;
	return NULL;
}

FAKE_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
			   CUmemGenericAllocationHandle h,
			   unsigned long long flags)
{
	struct falloc *a = NULL;
	struct fmap *m;
	void *p;

	ENTER("cuMemMap");
	a = alloc_of(h);
	if (!a || !a->handle || offset || flags || size == 0 ||
	    size % FAKE_GRAN || ptr % FAKE_GRAN || size > a->size ||
	    !res_containing(ptr, size))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	for (m = F.maps; m; m = m->next)
		if (ptr < m->va + m->size && m->va < ptr + size)
			RETURN(CUDA_ERROR_INVALID_VALUE);
	m = calloc(1, sizeof(*m));
	if (!m)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	/* Mapped but not accessible until cuMemSetAccess. */
	p = mmap((void *)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED, a->fd,
		 0);
	if (p == MAP_FAILED) {
		free(m);
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	}
	m->va = ptr;
	m->size = size;
	m->a = a;
	m->prot = PROT_NONE;
	m->next = F.maps;
	F.maps = m;
	a->refs++;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	struct fmap **pp, *m;
	bool found = false;

	ENTER_TEARDOWN("cuMemUnmap");
	if (size == 0 || !res_containing(ptr, size))
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_VALUE);
	/* Every mapping in the range must lie wholly inside it. */
	for (m = F.maps; m; m = m->next)
		if (ptr < m->va + m->size && m->va < ptr + size &&
		    (m->va < ptr || m->va + m->size > ptr + size))
			RETURN_TEARDOWN(CUDA_ERROR_INVALID_VALUE);
	for (pp = &F.maps; *pp;) {
		m = *pp;
		if (m->va >= ptr && m->va + m->size <= ptr + size) {
			order_check_unmap(m->a);
			queued_check_unmap(m->va, m->size);
			*pp = m->next;
			/* Back to a PROT_NONE reservation. */
			mmap((void *)m->va, m->size, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
				     MAP_FIXED,
			     -1, 0);
			alloc_unref(m->a);
			free(m);
			found = true;
		} else {
			pp = &m->next;
		}
	}
	RETURN_TEARDOWN(found ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE);
}

/* Are [p, p + n) all mapped, contiguously, with at least `need` access:
 * the mapping's own (ord -1), or what device `ord` was granted (a peer
 * copy's ends)? */
static bool range_ok_dev(uintptr_t p, size_t n, int need, int ord)
{
	while (n > 0) {
		struct fmap *m;
		size_t chunk;

		for (m = F.maps; m; m = m->next)
			if (p >= m->va && p < m->va + m->size)
				break;
		if (!m ||
		    ((ord < 0 ? m->prot : m->prot_dev[ord]) & need) != need)
			return false;
		chunk = m->va + m->size - p;
		if (chunk >= n)
			return true;
		p += chunk;
		n -= chunk;
	}
	return true;
}

static bool range_ok(uintptr_t p, size_t n, int need)
{
	return range_ok_dev(p, n, need, -1);
}

FAKE_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size,
				 const CUmemAccessDesc *desc, size_t count)
{
	int prot[FAKE_MAX_DEV];
	bool set[FAKE_MAX_DEV] = { false };

	ENTER("cuMemSetAccess");
	if (!desc || count == 0 || size == 0)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	for (size_t i = 0; i < count; i++) {
		int id = desc[i].location.id;

		if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
		    !dev_of(id))
			RETURN(CUDA_ERROR_INVALID_DEVICE);
		switch (desc[i].flags) {
		case CU_MEM_ACCESS_FLAGS_PROT_NONE:
			prot[id] = PROT_NONE;
			break;
		case CU_MEM_ACCESS_FLAGS_PROT_READ:
			prot[id] = PROT_READ;
			break;
		case CU_MEM_ACCESS_FLAGS_PROT_READWRITE:
			prot[id] = PROT_READ | PROT_WRITE;
			break;
		default:
			RETURN(CUDA_ERROR_INVALID_VALUE);
		}
		set[id] = true;
	}
	/* The whole range must be mapped: check before changing anything. */
	if (!range_ok(ptr, size, PROT_NONE))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	for (struct fmap *m = F.maps; m; m = m->next) {
		if (m->va + m->size <= ptr || m->va >= ptr + size)
			continue;
		if (m->va < ptr || m->va + m->size > ptr + size)
			RETURN(CUDA_ERROR_INVALID_VALUE);
	}
	/* Each listed device gets what it is given; the others keep theirs.
	 * The host mapping is the union. */
	for (struct fmap *m = F.maps; m; m = m->next) {
		int u = PROT_NONE;

		if (m->va + m->size <= ptr || m->va >= ptr + size)
			continue;
		for (int d = 0; d < F.ndev; d++) {
			if (set[d])
				m->prot_dev[d] = prot[d];
			u |= m->prot_dev[d];
		}
		if (mprotect((void *)m->va, m->size, u) < 0)
			RETURN(CUDA_ERROR_UNKNOWN);
		m->prot = u;
	}
	RETURN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* Streams, events, copies                                                   */
/* ------------------------------------------------------------------------ */

static bool stream_ok(CUstream s)
{
	if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD)
		return true;
	for (struct fstream *f = F.streams; f; f = f->next)
		if ((void *)f == (void *)s)
			return true;
	return false;
}

static struct fevent *event_of(CUevent e)
{
	for (struct fevent *f = F.events; f; f = f->next)
		if ((void *)f == (void *)e)
			return f;
	return NULL;
}

/* The rate R of part `kind` of TC_FAKECUDA_GBPS ("htod=R,peer=R,fresh=R"),
 * or 0: not throttled. */
static double gbps_of(const char *kind)
{
	const char *env = getenv("TC_FAKECUDA_GBPS"), *p;
	size_t k = strlen(kind);
	double gbps;

	if (!kind[0])
		return 0;
	for (p = env; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, kind, k) && p[k] == '=')
			break;
	if (!p || !*p)
		return 0;
	gbps = strtod(p + k + 1, NULL);
	return gbps > 0 ? gbps : 0;
}

/* Bytes of device range [p, p + n) in pages no write has reached yet: the
 * memfd does not hold them (mincore), as it holds every page written. */
static size_t fresh_bytes(uintptr_t p, size_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t a = p & ~(uintptr_t)(pg - 1), end = p + n;
	unsigned char vec[1024];
	size_t fresh = 0;

	if (n == 0 || gbps_of("fresh") <= 0)
		return 0;
	while (a < end) {
		size_t np = (end - a + (size_t)pg - 1) / (size_t)pg;

		if (np > sizeof(vec))
			np = sizeof(vec);
		if (mincore((void *)a, np * (size_t)pg, vec) < 0)
			return 0;
		for (size_t i = 0; i < np; i++, a += (uintptr_t)pg) {
			uintptr_t lo = a < p ? p : a;
			uintptr_t hi = a + (uintptr_t)pg > end ?
					       end :
					       a + (uintptr_t)pg;

			if (!(vec[i] & 1))
				fresh += hi - lo;
		}
	}
	return fresh;
}

/* TC_FAKECUDA_GBPS: sleep so that a copy of `n` bytes of this kind ("" for
 * none), `fresh` of them into fresh device memory, takes about n / R ns in
 * all.  The memcpy itself is not timed: the fake's own speed is far above
 * any rate a test asks for. */
static void throttle(const char *kind, size_t n, size_t fresh)
{
	double g = gbps_of(kind), gf = fresh ? gbps_of("fresh") : 0, ns = 0;

	if (gf > 0) {
		ns += (double)fresh / gf;
		n -= fresh;
	}
	if (g > 0)
		ns += (double)n / g;
	if (ns >= 1e3)
		nanosleep(
			&(struct timespec){ (time_t)(ns / 1e9),
					    (long)((uint64_t)ns % 1000000000) },
			NULL);
}

/* One body for the eight copy/memset entry points. */
static CUresult do_copy(const char *fn, uintptr_t dst, int dst_need,
			uintptr_t src, int src_need, int fill, size_t n,
			bool async, CUstream s)
{
	size_t fresh;

	ENTER(fn);
	NEED_CTX();
	if (async && !stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (n == 0)
		RETURN(CUDA_SUCCESS);
	if (!dst || !src)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (dst_need && !range_ok(dst, n, dst_need))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (src_need && !range_ok(src, n, src_need))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	fresh = dst_need ? fresh_bytes(dst, n) : 0;
	if (fill >= 0)
		memset((void *)dst, fill, n);
	else
		memmove((void *)dst, (const void *)src, n);
	throttle(fill < 0 && dst_need && !src_need ? "htod" : "", n, fresh);
	if (async) {
		if (dst_need)
			queued_add(s, dst, n);
		if (src_need)
			queued_add(s, src, n);
	}
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
	return do_copy("cuMemcpyHtoD_v2", dst, PROT_WRITE, (uintptr_t)src, 0,
		       -1, n, false, NULL);
}

FAKE_API CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
	return do_copy("cuMemcpyDtoH_v2", (uintptr_t)dst, 0, src, PROT_READ, -1,
		       n, false, NULL);
}

FAKE_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
	return do_copy("cuMemcpyDtoD_v2", dst, PROT_WRITE, src, PROT_READ, -1,
		       n, false, NULL);
}

FAKE_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src,
				       size_t n, CUstream s)
{
	return do_copy("cuMemcpyHtoDAsync_v2", dst, PROT_WRITE, (uintptr_t)src,
		       0, -1, n, true, s);
}

FAKE_API CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n,
				       CUstream s)
{
	return do_copy("cuMemcpyDtoHAsync_v2", (uintptr_t)dst, 0, src,
		       PROT_READ, -1, n, true, s);
}

FAKE_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src,
				       size_t n, CUstream s)
{
	return do_copy("cuMemcpyDtoDAsync_v2", dst, PROT_WRITE, src, PROT_READ,
		       -1, n, true, s);
}

FAKE_API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n)
{
	return do_copy("cuMemsetD8_v2", dst, PROT_WRITE, 1, 0, v, n, false,
		       NULL);
}

FAKE_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n,
				  CUstream s)
{
	return do_copy("cuMemsetD8Async", dst, PROT_WRITE, 1, 0, v, n, true, s);
}

/* Peers.  Every pair of distinct devices can reach each other unless
 * TC_FAKECUDA_NO_PEER; a peer copy works either way (the driver stages
 * it through the host when the pair cannot), and needs its source
 * readable by the source context's device and its destination writable by
 * the destination's (cuMemSetAccess). */
FAKE_API CUresult cuDeviceCanAccessPeer(int *can, CUdevice d, CUdevice peer)
{
	ENTER("cuDeviceCanAccessPeer");
	if (!can)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!dev_of(d) || !dev_of(peer))
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	*can = !F.no_peer && d != peer;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags)
{
	struct fctx *p = (struct fctx *)(void *)peer;

	ENTER("cuCtxEnablePeerAccess");
	NEED_CTX();
	if (flags)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!peer || !ctx_valid(peer) || p->refs <= 0)
		RETURN(CUDA_ERROR_INVALID_CONTEXT);
	if (p == cur_ctx)
		RETURN(CUDA_ERROR_INVALID_DEVICE);
	if (F.no_peer)
		RETURN(CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);
	if (F.peer_on[cur_ctx->ordinal][p->ordinal])
		RETURN(CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED);
	F.peer_on[cur_ctx->ordinal][p->ordinal] = true;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dctx,
				    CUdeviceptr src, CUcontext sctx, size_t n,
				    CUstream s)
{
	struct fctx *dc = (struct fctx *)(void *)dctx;
	struct fctx *sc = (struct fctx *)(void *)sctx;
	size_t fresh;

	ENTER("cuMemcpyPeerAsync");
	if (!dctx || !sctx || !ctx_valid(dctx) || !ctx_valid(sctx) ||
	    dc->refs <= 0 || sc->refs <= 0)
		RETURN(CUDA_ERROR_INVALID_CONTEXT);
	if (!stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (n == 0)
		RETURN(CUDA_SUCCESS);
	if (!dst || !src || !range_ok_dev(src, n, PROT_READ, sc->ordinal) ||
	    !range_ok_dev(dst, n, PROT_WRITE, dc->ordinal))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	fresh = fresh_bytes(dst, n);
	memmove((void *)dst, (const void *)src, n);
	queued_add(s, dst, n);
	queued_add(s, src, n);
	throttle("peer", n, fresh);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
	struct fstream *f;

	ENTER("cuStreamCreate");
	NEED_CTX();
	if (!s || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	f = calloc(1, sizeof(*f));
	if (!f)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	f->ordinal = cur_ctx->ordinal;
	f->next = F.streams;
	F.streams = f;
	*s = (CUstream)(void *)f;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuStreamDestroy_v2(CUstream s)
{
	struct fstream **pp, *f;

	ENTER_TEARDOWN("cuStreamDestroy_v2");
	for (pp = &F.streams; *pp; pp = &(*pp)->next)
		if ((void *)*pp == (void *)s)
			break;
	if (!*pp)
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_HANDLE);
	f = *pp;
	*pp = f->next;
	free(f);
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

FAKE_API CUresult cuStreamSynchronize(CUstream s)
{
	ENTER("cuStreamSynchronize");
	NEED_CTX();
	if (!stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	queued_done(s, false);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags)
{
	ENTER("cuStreamWaitEvent");
	NEED_CTX();
	if (!stream_ok(s) || !event_of(e))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	RETURN(flags ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS);
}

FAKE_API CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
	struct fevent *f;

	ENTER("cuEventCreate");
	NEED_CTX();
	if (!e || (flags & ~7u))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	f = calloc(1, sizeof(*f));
	if (!f)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	f->flags = flags;
	f->next = F.events;
	F.events = f;
	*e = (CUevent)(void *)f;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuEventDestroy_v2(CUevent e)
{
	struct fevent **pp, *f;

	ENTER_TEARDOWN("cuEventDestroy_v2");
	for (pp = &F.events; *pp; pp = &(*pp)->next)
		if ((void *)*pp == (void *)e)
			break;
	if (!*pp)
		RETURN_TEARDOWN(CUDA_ERROR_INVALID_HANDLE);
	f = *pp;
	*pp = f->next;
	free(f);
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

FAKE_API CUresult cuEventRecord(CUevent e, CUstream s)
{
	struct fevent *f;

	ENTER("cuEventRecord");
	NEED_CTX();
	f = event_of(e);
	if (!f || !stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	clock_gettime(CLOCK_MONOTONIC, &f->t);
	f->recorded = true;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuEventSynchronize(CUevent e)
{
	ENTER("cuEventSynchronize");
	if (!event_of(e))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	queued_done(NULL, true);
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuEventQuery(CUevent e)
{
	ENTER("cuEventQuery");
	RETURN(event_of(e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE);
}

FAKE_API CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b)
{
	struct fevent *fa, *fb;

	ENTER("cuEventElapsedTime");
	fa = event_of(a);
	fb = event_of(b);
	if (!ms)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!fa || !fb || !fa->recorded || !fb->recorded ||
	    ((fa->flags | fb->flags) & CU_EVENT_DISABLE_TIMING))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	*ms = (float)((double)(fb->t.tv_sec - fa->t.tv_sec) * 1e3 +
		      (double)(fb->t.tv_nsec - fa->t.tv_nsec) / 1e6);
	RETURN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* Host registration                                                         */
/* ------------------------------------------------------------------------ */

/* Is [p, p + n) wholly mapped, and writable unless read_only?  Checked in
 * /proc/self/maps, the way the driver's pinning would find out. */
static bool host_range_ok(uintptr_t p, size_t n, bool read_only)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	uintptr_t cur = p, end = p + n;

	if (!f)
		return false;
	while (cur < end && fgets(line, sizeof(line), f)) {
		uintptr_t lo, hi;
		char perms[8];

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi,
			   perms) != 3)
			continue;
		if (cur < lo || cur >= hi)
			continue;
		if (perms[0] != 'r' || (!read_only && perms[1] != 'w'))
			break;
		cur = hi;
	}
	fclose(f);
	return cur >= end;
}

FAKE_API CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags)
{
	struct freg *reg;
	uintptr_t a = (uintptr_t)p;

	ENTER("cuMemHostRegister_v2");
	NEED_CTX();
	if (!p || n == 0 || (flags & ~0xfu))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (flags & CU_MEMHOSTREGISTER_IOMEMORY)
		RETURN(CUDA_ERROR_NOT_PERMITTED);
	for (reg = F.regs; reg; reg = reg->next)
		if (a < reg->p + reg->n && reg->p < a + n)
			RETURN(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
	/* A read-only mapping needs CU_MEMHOSTREGISTER_READ_ONLY. */
	if (!host_range_ok(a, n, flags & CU_MEMHOSTREGISTER_READ_ONLY))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	reg = calloc(1, sizeof(*reg));
	if (!reg)
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	reg->p = a;
	reg->n = n;
	reg->next = F.regs;
	F.regs = reg;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuMemHostUnregister(void *p)
{
	struct freg **pp, *reg;

	ENTER_TEARDOWN("cuMemHostUnregister");
	NEED_CTX();
	for (pp = &F.regs; *pp; pp = &(*pp)->next)
		if ((*pp)->p == (uintptr_t)p)
			break;
	if (!*pp)
		RETURN_TEARDOWN(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
	reg = *pp;
	*pp = reg->next;
	free(reg);
	RETURN_TEARDOWN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* Strided copies                                                            */
/* ------------------------------------------------------------------------ */

/* Every row is checked before any is copied, so a bad range changes
 * nothing (as for the 1D copies). */
FAKE_API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *m, CUstream s)
{
	uintptr_t src, dst;
	int sneed, dneed;

	ENTER("cuMemcpy2DAsync_v2");
	NEED_CTX();
	if (!stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (!m || m->srcArray || m->dstArray ||
	    (m->srcMemoryType != CU_MEMORYTYPE_HOST &&
	     m->srcMemoryType != CU_MEMORYTYPE_DEVICE) ||
	    (m->dstMemoryType != CU_MEMORYTYPE_HOST &&
	     m->dstMemoryType != CU_MEMORYTYPE_DEVICE))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (m->WidthInBytes == 0 || m->Height == 0)
		RETURN(CUDA_SUCCESS);
	/* The real driver's limits: pitches at least the width and at most
	 * CU_DEVICE_ATTRIBUTE_MAX_PITCH (2^31 - 1). */
	if (m->srcPitch < m->WidthInBytes || m->dstPitch < m->WidthInBytes ||
	    m->srcPitch > INT32_MAX || m->dstPitch > INT32_MAX)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	src = m->srcMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)m->srcHost :
						       (uintptr_t)m->srcDevice;
	dst = m->dstMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)m->dstHost :
						       (uintptr_t)m->dstDevice;
	src += m->srcY * m->srcPitch + m->srcXInBytes;
	dst += m->dstY * m->dstPitch + m->dstXInBytes;
	if (!src || !dst)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	sneed = m->srcMemoryType == CU_MEMORYTYPE_DEVICE ? PROT_READ : 0;
	dneed = m->dstMemoryType == CU_MEMORYTYPE_DEVICE ? PROT_WRITE : 0;
	for (size_t r = 0; r < m->Height; r++)
		if ((sneed && !range_ok(src + r * m->srcPitch, m->WidthInBytes,
					sneed)) ||
		    (dneed &&
		     !range_ok(dst + r * m->dstPitch, m->WidthInBytes, dneed)))
			RETURN(CUDA_ERROR_INVALID_VALUE);
	for (size_t r = 0; r < m->Height; r++)
		memmove((void *)(dst + r * m->dstPitch),
			(const void *)(src + r * m->srcPitch), m->WidthInBytes);
	RETURN(CUDA_SUCCESS);
}

/* The driver's rules for linear memory: pitches at least the width and at
 * most 2^31 - 1, each side's slice height at least the copy's height;
 * every row is checked before any is copied. */
FAKE_API CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *m, CUstream s)
{
	uintptr_t src, dst;
	size_t sblock, dblock;
	int sneed, dneed;

	ENTER("cuMemcpy3DAsync_v2");
	NEED_CTX();
	if (!stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (!m || m->srcArray || m->dstArray || m->reserved0 || m->reserved1 ||
	    m->srcLOD || m->dstLOD ||
	    (m->srcMemoryType != CU_MEMORYTYPE_HOST &&
	     m->srcMemoryType != CU_MEMORYTYPE_DEVICE) ||
	    (m->dstMemoryType != CU_MEMORYTYPE_HOST &&
	     m->dstMemoryType != CU_MEMORYTYPE_DEVICE))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (m->WidthInBytes == 0 || m->Height == 0 || m->Depth == 0)
		RETURN(CUDA_SUCCESS);
	if (m->srcPitch < m->WidthInBytes || m->dstPitch < m->WidthInBytes ||
	    m->srcPitch > INT32_MAX || m->dstPitch > INT32_MAX ||
	    (m->Depth > 1 &&
	     (m->srcHeight < m->Height || m->dstHeight < m->Height)))
		RETURN(CUDA_ERROR_INVALID_VALUE);
	sblock = m->srcPitch * m->srcHeight;
	dblock = m->dstPitch * m->dstHeight;
	src = m->srcMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)m->srcHost :
						       (uintptr_t)m->srcDevice;
	dst = m->dstMemoryType == CU_MEMORYTYPE_HOST ? (uintptr_t)m->dstHost :
						       (uintptr_t)m->dstDevice;
	src += m->srcZ * sblock + m->srcY * m->srcPitch + m->srcXInBytes;
	dst += m->dstZ * dblock + m->dstY * m->dstPitch + m->dstXInBytes;
	if (!src || !dst)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	sneed = m->srcMemoryType == CU_MEMORYTYPE_DEVICE ? PROT_READ : 0;
	dneed = m->dstMemoryType == CU_MEMORYTYPE_DEVICE ? PROT_WRITE : 0;
	for (size_t z = 0; z < m->Depth; z++)
		for (size_t r = 0; r < m->Height; r++)
			if ((sneed &&
			     !range_ok(src + z * sblock + r * m->srcPitch,
				       m->WidthInBytes, sneed)) ||
			    (dneed &&
			     !range_ok(dst + z * dblock + r * m->dstPitch,
				       m->WidthInBytes, dneed)))
				RETURN(CUDA_ERROR_INVALID_VALUE);
	for (size_t z = 0; z < m->Depth; z++)
		for (size_t r = 0; r < m->Height; r++)
			memmove((void *)(dst + z * dblock + r * m->dstPitch),
				(const void *)(src + z * sblock +
					       r * m->srcPitch),
				m->WidthInBytes);
	RETURN(CUDA_SUCCESS);
}

/* ------------------------------------------------------------------------ */
/* Modules and the view kernel                                               */
/* ------------------------------------------------------------------------ */

/*
 * The fake cannot run PTX.  It accepts a PTX text (it must start like one
 * and declare the entry), and knows tcast's kernels by name:
 * tc_view_permute (src/gpu/kernels/view_permute.cu), run on the host with
 * the same semantics, and the chunk-hash kernels (chunk_hash.cu), run
 * through the very arithmetic they are compiled from (b3core.h).  So the
 * callers' arguments, ranges and launches are exercised in CI, and the
 * PTX itself on a GPU (tests/gpu).
 */
#define CUDA_ERROR_INVALID_IMAGE ((CUresult)200)
#define CUDA_ERROR_INVALID_PTX	 ((CUresult)218)

struct fmod {
	char *image; /* owned copy of the PTX text */
	struct fmod *next;
};

struct ffunc {
	const char *name;
	struct fmod *mod; /* the module it was got from; NULL: none */
};

static struct fmod *mods;
static struct ffunc permute_fn = { "tc_view_permute", NULL };
static struct ffunc b3_leaves_fn = { "tc_b3_leaves", NULL };
static struct ffunc b3_parents_fn = { "tc_b3_parents", NULL };
static struct ffunc b3_copy_fn = { "tc_b3_copy_leaves", NULL };
static struct ffunc *const known_fns[] = { &permute_fn, &b3_leaves_fn,
					   &b3_parents_fn, &b3_copy_fn };

FAKE_API CUresult cuModuleLoadData(CUmodule *out, const void *image)
{
	const char *s = image;
	struct fmod *m;

	ENTER("cuModuleLoadData");
	NEED_CTX();
	if (!out || !s)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if (!strstr(s, ".version") || !strstr(s, ".target"))
		RETURN(CUDA_ERROR_INVALID_IMAGE);
	m = calloc(1, sizeof(*m));
	if (!m || !(m->image = strdup(s))) {
		free(m);
		RETURN(CUDA_ERROR_OUT_OF_MEMORY);
	}
	m->next = mods;
	mods = m;
	*out = (CUmodule)m;
	RETURN(CUDA_SUCCESS);
}

FAKE_API CUresult cuModuleUnload(CUmodule mod)
{
	ENTER("cuModuleUnload");
	for (struct fmod **pp = &mods; *pp; pp = &(*pp)->next)
		if ((void *)*pp == (void *)mod) {
			struct fmod *m = *pp;

			*pp = m->next;
			for (size_t i = 0;
			     i < sizeof(known_fns) / sizeof(known_fns[0]); i++)
				if (known_fns[i]->mod == m)
					known_fns[i]->mod = NULL;
			free(m->image);
			free(m);
			RETURN(CUDA_SUCCESS);
		}
	RETURN(CUDA_ERROR_INVALID_HANDLE);
}

FAKE_API CUresult cuModuleGetFunction(CUfunction *out, CUmodule mod,
				      const char *name)
{
	struct fmod *m = NULL;

	ENTER("cuModuleGetFunction");
	for (struct fmod *x = mods; x; x = x->next)
		if ((void *)x == (void *)mod)
			m = x;
	if (!m || !out || !name)
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	for (size_t i = 0; i < sizeof(known_fns) / sizeof(known_fns[0]); i++) {
		char entry[64];

		snprintf(entry, sizeof(entry), ".entry %s(",
			 known_fns[i]->name);
		if (!strcmp(name, known_fns[i]->name) &&
		    strstr(m->image, entry)) {
			known_fns[i]->mod = m;
			*out = (CUfunction)known_fns[i];
			RETURN(CUDA_SUCCESS);
		}
	}
	RETURN(CUDA_ERROR_NOT_FOUND);
}

/* struct tc__gpu_permute (src/gpu/vmm.h), the kernel's parameter block. */
struct fperm {
	uint64_t dst, src, n;
	uint64_t oshape[16];
	uint64_t istride[16];
	uint32_t ndim, src_kind, dst_kind, pad;
};

static float fk_from_bits(uint32_t x)
{
	float f;

	memcpy(&f, &x, 4);
	return f;
}

static uint32_t fk_bits(float f)
{
	uint32_t x;

	memcpy(&x, &f, 4);
	return x;
}

static float fk_load(uint32_t kind, const uint8_t *p)
{
	uint16_t h;
	float f;

	if (kind == 0x304) {
		memcpy(&f, p, 4);
		return f;
	}
	memcpy(&h, p, 2);
	if (kind == 0x202)
		return fk_from_bits((uint32_t)h << 16);
	{
		uint32_t sign = (uint32_t)(h & 0x8000) << 16;
		uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;

		if (e == 0)
			return fk_from_bits(fk_bits((float)m * 0x1p-24f) |
					    sign);
		if (e == 31)
			return fk_from_bits(sign | 0x7f800000u | (m << 13));
		return fk_from_bits(sign | ((e + 112) << 23) | (m << 13));
	}
}

static void fk_store(uint32_t kind, uint8_t *p, float f)
{
	uint32_t x = fk_bits(f);
	uint16_t h;

	if (kind == 0x304) {
		memcpy(p, &f, 4);
		return;
	}
	if (kind == 0x202) {
		if ((x & 0x7fffffffu) > 0x7f800000u)
			h = (uint16_t)((x >> 16) | 0x40);
		else
			h = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
	} else {
		uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;

		if (ax > 0x7f800000u)
			h = (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
		else if (ax >= 0x477ff000u)
			h = (uint16_t)(sign | 0x7c00);
		else if (ax < 0x38800000u)
			h = (uint16_t)(sign |
				       (fk_bits(fk_from_bits(ax) + 0.5f) -
					0x3f000000u));
		else
			h = (uint16_t)(sign |
				       ((ax + 0xc8000fffu + ((ax >> 13) & 1)) >>
					13));
	}
	memcpy(p, &h, 2);
}

/*
 * The chunk-hash kernels, block after block and thread after thread: the
 * leaves in index order, then each chunk's merge level by level, which is
 * what the GPU's barriers order.  A launch that would touch memory outside
 * its allocations fails as a GPU's would, before touching it.
 */
static CUresult b3_launch(const struct ffunc *f, void **params)
{
	struct b3_copy_args ca;
	struct b3_args a;
	uint64_t per, nleaf, bytes;

	if (f == &b3_copy_fn)
		memcpy(&ca, params[0], sizeof(ca));
	memcpy(&a, f == &b3_copy_fn ? (void *)&ca.a : params[0], sizeof(a));
	if (a.chunk_bytes < B3_LEAF_BYTES || a.chunk_bytes % B3_LEAF_BYTES ||
	    !a.nchunks || a.chunk0 * a.chunk_bytes >= a.size)
		return CUDA_ERROR_INVALID_VALUE;
	per = a.chunk_bytes / B3_LEAF_BYTES;
	nleaf = a.nchunks * per;
	bytes = a.size - a.chunk0 * a.chunk_bytes < a.nchunks * a.chunk_bytes ?
			a.size - a.chunk0 * a.chunk_bytes :
			a.nchunks * a.chunk_bytes;
	if (!range_ok(a.cvs, nleaf * 32, PROT_WRITE) ||
	    !range_ok(a.tmp, nleaf * 32, PROT_WRITE) ||
	    !range_ok(a.out, a.nchunks * 32, PROT_WRITE) ||
	    !range_ok(a.data + a.chunk0 * a.chunk_bytes, bytes,
		      f == &b3_copy_fn ? PROT_WRITE : PROT_READ))
		return CUDA_ERROR_ILLEGAL_ADDRESS;
	if (f == &b3_copy_fn) {
		const struct b3_seg *sg = (const struct b3_seg *)ca.segs;

		/* The table and every source whole, as a GPU would fault on
		 * any of them (the kernel reads only the launch's part). */
		if (!range_ok(ca.segs, ca.nseg * sizeof(*sg), PROT_READ))
			return CUDA_ERROR_ILLEGAL_ADDRESS;
		for (uint64_t i = 0; i < ca.nseg; i++)
			if (!range_ok(sg[i].src, sg[i].len, PROT_READ))
				return CUDA_ERROR_ILLEGAL_ADDRESS;
		fake_b3_copy_run(&ca);
		return CUDA_SUCCESS;
	}
	fake_b3_run(&a, f == &b3_leaves_fn);
	if (f != &b3_leaves_fn && getenv("TC_FAKECUDA_B3_WRONG"))
		((uint32_t *)(uintptr_t)a.out)[0] ^= 1;
	return CUDA_SUCCESS;
}

FAKE_API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy,
				 unsigned int gz, unsigned int bx,
				 unsigned int by, unsigned int bz,
				 unsigned int shared, CUstream s, void **params,
				 void **extra)
{
	struct fperm a;
	uint64_t maxin = 0;
	size_t is, os;

	ENTER("cuLaunchKernel");
	NEED_CTX();
	if (!stream_ok(s))
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (!f || !((struct ffunc *)f)->mod)
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	if (!gx || !gy || !gz || !bx || !by || !bz || bx * by * bz > 1024 ||
	    !params || extra)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	if ((void *)f == (void *)&b3_leaves_fn ||
	    (void *)f == (void *)&b3_parents_fn ||
	    (void *)f == (void *)&b3_copy_fn)
		RETURN(b3_launch((struct ffunc *)f, params));
	if ((void *)f != (void *)&permute_fn)
		RETURN(CUDA_ERROR_INVALID_HANDLE);
	memcpy(&a, params[0], sizeof(a));
	if (a.ndim == 0 || a.ndim > 16)
		RETURN(CUDA_ERROR_INVALID_VALUE);
	is = a.src_kind & 0xff;
	os = a.dst_kind & 0xff;
	if (!a.n)
		RETURN(CUDA_SUCCESS);
	for (uint32_t d = 0; d < a.ndim; d++) {
		if (!a.oshape[d])
			RETURN(CUDA_SUCCESS);
		maxin += (a.oshape[d] - 1) * a.istride[d];
	}
	/* A kernel that reads or writes outside its allocations faults on a
	 * GPU (CUDA_ERROR_ILLEGAL_ADDRESS); say so without touching it. */
	if (!range_ok(a.src, (maxin + 1) * is, PROT_READ) ||
	    !range_ok(a.dst, a.n * os, PROT_WRITE))
		RETURN(CUDA_ERROR_ILLEGAL_ADDRESS);
	for (uint64_t o = 0; o < a.n; o++) {
		uint64_t rem = o, in = 0;
		const uint8_t *sp;
		uint8_t *tp;

		for (int d = (int)a.ndim - 1; d > 0; d--) {
			uint64_t q = rem / a.oshape[d];

			in += (rem - q * a.oshape[d]) * a.istride[d];
			rem = q;
		}
		in += rem * a.istride[0];
		sp = (const uint8_t *)(uintptr_t)a.src + in * is;
		tp = (uint8_t *)(uintptr_t)a.dst + o * os;
		if (a.src_kind == a.dst_kind)
			memcpy(tp, sp, is);
		else
			fk_store(a.dst_kind, tp, fk_load(a.src_kind, sp));
	}
	RETURN(CUDA_SUCCESS);
}
