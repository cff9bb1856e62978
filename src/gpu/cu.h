/*
 * cu.h - the CUDA driver, loaded at run time, and the only CUDA types in tcast.
 *
 * tcast never links against libcuda: tc__cu_get() dlopen()s the driver once
 * per process ($TCAST_CUDA_LIB, else "libcuda.so.1") and resolves every entry
 * point it uses into one function table.  The declarations below are our own
 * copy of the subset of cuda.h we need; every enum value and struct layout was
 * checked against NVIDIA's cuda.h (CUDA 11.x/12.x) and is pinned by the static
 * asserts at the end of this file.  Symbols are resolved under their real
 * exported names (cuMemcpyHtoD_v2, not cuMemcpyHtoD), because dlsym() does not
 * see cuda.h's #define renames.
 *
 * This header is private to src/gpu (and the fake driver in tests/fakecuda).
 * The rest of tcast uses vmm.h, which is free of CUDA types; the layering
 * check refuses CUresult and CUdeviceptr outside src/gpu.
 */
#ifndef TC_GPU_CU_H
#define TC_GPU_CU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

/* ------------------------------------------------------------------------ */
/* Driver types (cuda.h subset)                                              */
/* ------------------------------------------------------------------------ */

typedef unsigned long long CUdeviceptr; /* CUdeviceptr_v2 */
typedef int CUdevice;			/* CUdevice_v1 */
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUarray_st *CUarray;

typedef struct CUuuid_st {
	char bytes[16];
} CUuuid;

/* CUresult: only the codes tcast names; any other value passes through. */
typedef enum cudaError_enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_OUT_OF_MEMORY = 2,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_DEINITIALIZED = 4,
	CUDA_ERROR_STUB_LIBRARY = 34,
	CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
	CUDA_ERROR_NO_DEVICE = 100,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_MAP_FAILED = 205,
	CUDA_ERROR_UNMAP_FAILED = 206,
	CUDA_ERROR_ALREADY_MAPPED = 208,
	CUDA_ERROR_NOT_MAPPED = 211,
	CUDA_ERROR_ECC_UNCORRECTABLE = 214,
	CUDA_ERROR_PEER_ACCESS_UNSUPPORTED = 217,
	CUDA_ERROR_OPERATING_SYSTEM = 304,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_NOT_FOUND = 500,
	CUDA_ERROR_NOT_READY = 600,
	CUDA_ERROR_ILLEGAL_ADDRESS = 700,
	CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
	CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
	CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
	CUDA_ERROR_LAUNCH_FAILED = 719,
	CUDA_ERROR_NOT_PERMITTED = 800,
	CUDA_ERROR_NOT_SUPPORTED = 801,
	CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803,
	CUDA_ERROR_UNKNOWN = 999,
} CUresult;

typedef enum CUdevice_attribute_enum {
	CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
	CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33,
	CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34,
	CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING = 41,
	CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50,
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
	CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
	CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED = 99,
	CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
	CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103,
	CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED = 113,
	CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED = 116,
} CUdevice_attribute;

typedef enum CUmemAllocationGranularity_flags_enum {
	CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0,
	CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1,
} CUmemAllocationGranularity_flags;

typedef enum CUmemAccess_flags_enum {
	CU_MEM_ACCESS_FLAGS_PROT_NONE = 0x0,
	CU_MEM_ACCESS_FLAGS_PROT_READ = 0x1,
	CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3,
	CU_MEM_ACCESS_FLAGS_PROT_MAX = 0x7FFFFFFF,
} CUmemAccess_flags;

typedef enum CUmemLocationType_enum {
	CU_MEM_LOCATION_TYPE_INVALID = 0x0,
	CU_MEM_LOCATION_TYPE_DEVICE = 0x1,
	CU_MEM_LOCATION_TYPE_MAX = 0x7FFFFFFF,
} CUmemLocationType;

typedef enum CUmemAllocationType_enum {
	CU_MEM_ALLOCATION_TYPE_INVALID = 0x0,
	CU_MEM_ALLOCATION_TYPE_PINNED = 0x1,
	CU_MEM_ALLOCATION_TYPE_MAX = 0x7FFFFFFF,
} CUmemAllocationType;

typedef enum CUmemAllocationHandleType_enum {
	CU_MEM_HANDLE_TYPE_NONE = 0x0,
	CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 0x1,
	CU_MEM_HANDLE_TYPE_WIN32 = 0x2,
	CU_MEM_HANDLE_TYPE_WIN32_KMT = 0x4,
	CU_MEM_HANDLE_TYPE_FABRIC = 0x8,
	CU_MEM_HANDLE_TYPE_MAX = 0x7FFFFFFF,
} CUmemAllocationHandleType;

typedef struct CUmemLocation_st {
	CUmemLocationType type; /* CU_MEM_LOCATION_TYPE_DEVICE */
	int id;			/* device ordinal */
} CUmemLocation;

typedef struct CUmemAllocationProp_st {
	CUmemAllocationType type;
	CUmemAllocationHandleType requestedHandleTypes;
	CUmemLocation location;
	void *win32HandleMetaData;
	struct {
		unsigned char compressionType;
		unsigned char gpuDirectRDMACapable;
		unsigned short usage;
		unsigned char reserved[4];
	} allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
	CUmemLocation location;
	CUmemAccess_flags flags;
} CUmemAccessDesc;

typedef enum CUmemorytype_enum {
	CU_MEMORYTYPE_HOST = 0x01,
	CU_MEMORYTYPE_DEVICE = 0x02,
	CU_MEMORYTYPE_ARRAY = 0x03,
	CU_MEMORYTYPE_UNIFIED = 0x04,
} CUmemorytype;

/* cuMemcpy2D's description (CUDA_MEMCPY2D_v2): copy Height rows of
 * WidthInBytes bytes, row r from src + srcY*srcPitch + srcXInBytes +
 * r*srcPitch to the same place in dst with dstPitch. */
typedef struct CUDA_MEMCPY2D_st {
	size_t srcXInBytes;
	size_t srcY;
	CUmemorytype srcMemoryType;
	const void *srcHost;
	CUdeviceptr srcDevice;
	CUarray srcArray;
	size_t srcPitch;
	size_t dstXInBytes;
	size_t dstY;
	CUmemorytype dstMemoryType;
	void *dstHost;
	CUdeviceptr dstDevice;
	CUarray dstArray;
	size_t dstPitch;
	size_t WidthInBytes;
	size_t Height;
} CUDA_MEMCPY2D;

/* cuMemcpy3D's description (CUDA_MEMCPY3D_v2): Depth blocks of Height
 * rows of WidthInBytes bytes; a side's block z starts at
 * z * Pitch * Height(of that side) from its base. */
typedef struct CUDA_MEMCPY3D_st {
	size_t srcXInBytes;
	size_t srcY;
	size_t srcZ;
	size_t srcLOD;
	CUmemorytype srcMemoryType;
	const void *srcHost;
	CUdeviceptr srcDevice;
	CUarray srcArray;
	void *reserved0;
	size_t srcPitch;
	size_t srcHeight;
	size_t dstXInBytes;
	size_t dstY;
	size_t dstZ;
	size_t dstLOD;
	CUmemorytype dstMemoryType;
	void *dstHost;
	CUdeviceptr dstDevice;
	CUarray dstArray;
	void *reserved1;
	size_t dstPitch;
	size_t dstHeight;
	size_t WidthInBytes;
	size_t Height;
	size_t Depth;
} CUDA_MEMCPY3D;

/* cuStreamCreate flags */
#define CU_STREAM_DEFAULT      0x0
#define CU_STREAM_NON_BLOCKING 0x1
/* Special stream handles (DLPack's stream 1 and 2 are these values). */
#define CU_STREAM_LEGACY     ((CUstream)0x1)
#define CU_STREAM_PER_THREAD ((CUstream)0x2)

/* cuEventCreate flags */
#define CU_EVENT_DEFAULT	0x0
#define CU_EVENT_BLOCKING_SYNC	0x1
#define CU_EVENT_DISABLE_TIMING 0x2
#define CU_EVENT_INTERPROCESS	0x4

/* cuMemHostRegister flags */
#define CU_MEMHOSTREGISTER_PORTABLE  0x01
#define CU_MEMHOSTREGISTER_DEVICEMAP 0x02
#define CU_MEMHOSTREGISTER_IOMEMORY  0x04
#define CU_MEMHOSTREGISTER_READ_ONLY 0x08

/* ------------------------------------------------------------------------ */
/* The function table                                                        */
/* ------------------------------------------------------------------------ */

/*
 * X(field, exported symbol, fallback symbol or NULL, parameter list).
 * Every entry returns CUresult.  The exported names are what cuda.h's
 * #defines resolve to on CUDA >= 11 without per-thread default streams.
 * cuDeviceGetUuid_v2 (driver >= 470) is MIG-aware; older drivers only have
 * cuDeviceGetUuid, whose UUIDs are the same outside MIG.
 */
#define TC_CU_FUNCS(X)                                                         \
	X(cuGetErrorName, "cuGetErrorName", NULL, (CUresult, const char **))   \
	X(cuGetErrorString, "cuGetErrorString", NULL,                          \
	  (CUresult, const char **))                                           \
	X(cuInit, "cuInit", NULL, (unsigned int))                              \
	X(cuDriverGetVersion, "cuDriverGetVersion", NULL, (int *))             \
	X(cuDeviceGetCount, "cuDeviceGetCount", NULL, (int *))                 \
	X(cuDeviceGet, "cuDeviceGet", NULL, (CUdevice *, int))                 \
	X(cuDeviceGetName, "cuDeviceGetName", NULL, (char *, int, CUdevice))   \
	X(cuDeviceGetUuid, "cuDeviceGetUuid_v2", "cuDeviceGetUuid",            \
	  (CUuuid *, CUdevice))                                                \
	X(cuDeviceGetPCIBusId, "cuDeviceGetPCIBusId", NULL,                    \
	  (char *, int, CUdevice))                                             \
	X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL, (size_t *, CUdevice)) \
	X(cuDeviceGetAttribute, "cuDeviceGetAttribute", NULL,                  \
	  (int *, CUdevice_attribute, CUdevice))                               \
	X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL,          \
	  (CUcontext *, CUdevice))                                             \
	X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", NULL,     \
	  (CUdevice))                                                          \
	X(cuCtxGetCurrent, "cuCtxGetCurrent", NULL, (CUcontext *))             \
	X(cuCtxSetCurrent, "cuCtxSetCurrent", NULL, (CUcontext))               \
	X(cuCtxSynchronize, "cuCtxSynchronize", NULL, (void))                  \
	X(cuMemGetInfo, "cuMemGetInfo_v2", NULL, (size_t *, size_t *))         \
	X(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity",      \
	  NULL,                                                                \
	  (size_t *, const CUmemAllocationProp *,                              \
	   CUmemAllocationGranularity_flags))                                  \
	X(cuMemCreate, "cuMemCreate", NULL,                                    \
	  (CUmemGenericAllocationHandle *, size_t,                             \
	   const CUmemAllocationProp *, unsigned long long))                   \
	X(cuMemRelease, "cuMemRelease", NULL, (CUmemGenericAllocationHandle))  \
	X(cuMemExportToShareableHandle, "cuMemExportToShareableHandle", NULL,  \
	  (void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,    \
	   unsigned long long))                                                \
	X(cuMemImportFromShareableHandle, "cuMemImportFromShareableHandle",    \
	  NULL,                                                                \
	  (CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType)) \
	X(cuMemAddressReserve, "cuMemAddressReserve", NULL,                    \
	  (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))    \
	X(cuMemAddressFree, "cuMemAddressFree", NULL, (CUdeviceptr, size_t))   \
	X(cuMemMap, "cuMemMap", NULL,                                          \
	  (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,          \
	   unsigned long long))                                                \
	X(cuMemUnmap, "cuMemUnmap", NULL, (CUdeviceptr, size_t))               \
	X(cuMemSetAccess, "cuMemSetAccess", NULL,                              \
	  (CUdeviceptr, size_t, const CUmemAccessDesc *, size_t))              \
	X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", NULL,                               \
	  (CUdeviceptr, const void *, size_t))                                 \
	X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", NULL,                               \
	  (void *, CUdeviceptr, size_t))                                       \
	X(cuMemcpyDtoD, "cuMemcpyDtoD_v2", NULL,                               \
	  (CUdeviceptr, CUdeviceptr, size_t))                                  \
	X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL,                     \
	  (CUdeviceptr, const void *, size_t, CUstream))                       \
	X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL,                     \
	  (void *, CUdeviceptr, size_t, CUstream))                             \
	X(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", NULL,                     \
	  (CUdeviceptr, CUdeviceptr, size_t, CUstream))                        \
	X(cuMemcpy2DAsync, "cuMemcpy2DAsync_v2", NULL,                         \
	  (const CUDA_MEMCPY2D *, CUstream))                                   \
	X(cuMemcpy3DAsync, "cuMemcpy3DAsync_v2", NULL,                         \
	  (const CUDA_MEMCPY3D *, CUstream))                                   \
	X(cuModuleLoadData, "cuModuleLoadData", NULL,                          \
	  (CUmodule *, const void *))                                          \
	X(cuModuleUnload, "cuModuleUnload", NULL, (CUmodule))                  \
	X(cuModuleGetFunction, "cuModuleGetFunction", NULL,                    \
	  (CUfunction *, CUmodule, const char *))                              \
	X(cuLaunchKernel, "cuLaunchKernel", NULL,                              \
	  (CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, \
	   unsigned int, unsigned int, unsigned int, CUstream, void **,        \
	   void **))                                                           \
	X(cuMemsetD8, "cuMemsetD8_v2", NULL,                                   \
	  (CUdeviceptr, unsigned char, size_t))                                \
	X(cuMemsetD8Async, "cuMemsetD8Async", NULL,                            \
	  (CUdeviceptr, unsigned char, size_t, CUstream))                      \
	X(cuMemHostRegister, "cuMemHostRegister_v2", NULL,                     \
	  (void *, size_t, unsigned int))                                      \
	X(cuMemHostUnregister, "cuMemHostUnregister", NULL, (void *))          \
	X(cuStreamCreate, "cuStreamCreate", NULL, (CUstream *, unsigned int))  \
	X(cuStreamDestroy, "cuStreamDestroy_v2", NULL, (CUstream))             \
	X(cuStreamSynchronize, "cuStreamSynchronize", NULL, (CUstream))        \
	X(cuStreamWaitEvent, "cuStreamWaitEvent", NULL,                        \
	  (CUstream, CUevent, unsigned int))                                   \
	X(cuEventCreate, "cuEventCreate", NULL, (CUevent *, unsigned int))     \
	X(cuEventDestroy, "cuEventDestroy_v2", NULL, (CUevent))                \
	X(cuEventRecord, "cuEventRecord", NULL, (CUevent, CUstream))           \
	X(cuEventSynchronize, "cuEventSynchronize", NULL, (CUevent))           \
	X(cuEventQuery, "cuEventQuery", NULL, (CUevent))                       \
	X(cuEventElapsedTime, "cuEventElapsedTime", NULL,                      \
	  (float *, CUevent, CUevent))                                         \
	X(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer", NULL,                \
	  (int *, CUdevice, CUdevice))                                         \
	X(cuCtxEnablePeerAccess, "cuCtxEnablePeerAccess", NULL,                \
	  (CUcontext, unsigned int))                                           \
	X(cuMemcpyPeerAsync, "cuMemcpyPeerAsync", NULL,                        \
	  (CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream))

/* One pointer per driver entry point; all are non-NULL once loaded. */
struct tc__cu_fns {
#define TC__CU_FIELD(field, sym, fallback, params) CUresult(*field) params;
	TC_CU_FUNCS(TC__CU_FIELD)
#undef TC__CU_FIELD
};

/*
 * One device as this process sees it (CUDA_VISIBLE_DEVICES applies, so the
 * ordinal of a GPU may differ between processes; info.uuid does not).
 * info is filled at load and never changes.  ctx and the granularities are
 * filled on first use of the device, under the driver's lock; once non-zero
 * they never change, so readers load them without the lock.
 */
struct tc__cu_dev {
	CUdevice dev;		  /* driver handle for this ordinal */
	struct tc__gpu_info info; /* what tc__gpu_device_info() reports */
	CUcontext ctx;		  /* retained primary context, or NULL */
	size_t gran_min;	  /* minimum VMM granularity, 0 = unknown */
	size_t gran_rec;	  /* recommended VMM granularity */
};

/*
 * The loaded driver.  Built once by tc__cu_get() and never freed: the
 * driver library is never dlclose()d (unloading libcuda under a process
 * that may also hold torch's CUDA state is not safe).
 */
struct tc__cu {
	void *dl;		 /* dlopen() handle */
	char path[256];		 /* what was loaded */
	int driver_version;	 /* cuDriverGetVersion, e.g. 12080 */
	int ndev;		 /* visible devices, > 0 */
	struct tc__cu_dev *devs; /* ndev entries, owned */
	struct tc__cu_fns fn;	 /* entry points */
};

/*
 * Saved calling-thread context, so a tcast call leaves the thread's current
 * context (torch's, say) as it found it.
 */
struct tc__cu_guard {
	CUcontext prev; /* the thread's context before tc__cu_enter */
	bool switched;	/* we changed it and must restore prev */
	bool active;	/* enter succeeded; leave has work to do */
};

/* ------------------------------------------------------------------------ */
/* Loading and errors                                                        */
/* ------------------------------------------------------------------------ */

/* Load the driver once per process (pthread_once) and return it in *out.
 * Returns 0; TC_ENODEV when no driver library loads, a required symbol is
 * missing, cuInit fails, no device is visible, or the process was forked
 * after the driver was initialised; TC_ECUDA when enumerating devices fails;
 * -ENOMEM.
 * A failure is sticky for the life of the process.  *out is borrowed and
 * lives until exit; NULL on failure.  err (may be NULL) gets the reason. */
int tc__cu_get(const struct tc__cu **out, char *err, size_t errlen);

/* Record a failed driver call: sets the thread's last CUDA result, writes
 * "<what>: <call>: <CUDA_ERROR_NAME> (<driver's text>)" into err (what is
 * printf-formatted), and returns TC_ECUDA.  r must not be CUDA_SUCCESS. */
int tc__cu_fail(const struct tc__cu *cu, CUresult r, const char *call,
		char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* printf into err when err is non-NULL; returns code unchanged. */
int tc__cu_seterr(int code, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Make device `ordinal`'s primary context current on the calling thread,
 * retaining it (and querying its VMM granularity) on first use.  Returns 0,
 * TC_EDEVICE for an ordinal out of range, or TC_ECUDA.  On success pair it
 * with tc__cu_leave(); on failure g needs no leave (but leave is harmless). */
int tc__cu_enter(const struct tc__cu *cu, int ordinal, struct tc__cu_guard *g,
		 char *err, size_t errlen);

/* Device `ordinal`'s primary context (retained on first use) in *ctx,
 * without making it current: the other end of a peer copy.  Returns 0,
 * TC_EDEVICE or TC_ECUDA. */
int tc__cu_ctx(const struct tc__cu *cu, int ordinal, CUcontext *ctx, char *err,
	       size_t errlen);

/* Restore the context saved by tc__cu_enter.  A failure is only logged: the
 * caller's work is done and there is nothing better to do. */
void tc__cu_leave(const struct tc__cu *cu, struct tc__cu_guard *g);

/* cuMemSetAccess of [va, va + bytes) for GPU `ordinal` alone: the one
 * access descriptor every grant builds (callers word their own errors). */
CUresult tc__cu_set_access(const struct tc__cu *cu, int ordinal, CUdeviceptr va,
			   size_t bytes, CUmemAccess_flags flags);

/* Minimum and recommended VMM granularity of exportable pinned memory on
 * `ordinal`, queried once and cached.  Returns 0, TC_EDEVICE, TC_ENOTSUP
 * (no VMM or no POSIX-fd handles) or TC_ECUDA.  Callers query it inside
 * tc__cu_enter(): the driver does not promise to need no context. */
int tc__cu_granularity(const struct tc__cu *cu, int ordinal, size_t *min,
		       size_t *rec, char *err, size_t errlen);

/* CUresult of the last failed driver call on this thread, 0 if none. */
int tc__cu_last_error(void);

/* Symbolic name of a CUresult: from the driver when cu is loaded, else a
 * built-in table, else "CUDA error N".  Never NULL; static or thread-local
 * storage. */
const char *tc__cu_error_name(const struct tc__cu *cu, int r);

/* Check `ordinal` and return its device (borrowed), or NULL after writing
 * TC_EDEVICE's message into err. */
const struct tc__cu_dev *tc__cu_dev(const struct tc__cu *cu, int ordinal,
				    char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* ABI pins: these must match cuda.h on x86-64 and aarch64 Linux            */
/* ------------------------------------------------------------------------ */

_Static_assert(sizeof(CUresult) == 4, "CUresult is an int-sized enum");
_Static_assert(sizeof(CUmemLocation) == 8, "CUmemLocation layout");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc layout");
_Static_assert(__builtin_offsetof(CUmemAccessDesc, flags) == 8,
	       "CUmemAccessDesc.flags offset");
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp size");
_Static_assert(__builtin_offsetof(CUmemAllocationProp, location) == 8,
	       "CUmemAllocationProp.location offset");
_Static_assert(__builtin_offsetof(CUmemAllocationProp, win32HandleMetaData) ==
		       16,
	       "CUmemAllocationProp.win32HandleMetaData offset");
_Static_assert(__builtin_offsetof(CUmemAllocationProp, allocFlags) == 24,
	       "CUmemAllocationProp.allocFlags offset");
_Static_assert(sizeof(CUuuid) == 16, "CUuuid size");
_Static_assert(sizeof(CUDA_MEMCPY2D) == 128, "CUDA_MEMCPY2D size");
_Static_assert(__builtin_offsetof(CUDA_MEMCPY2D, dstXInBytes) == 56,
	       "CUDA_MEMCPY2D.dstXInBytes offset");
_Static_assert(__builtin_offsetof(CUDA_MEMCPY2D, WidthInBytes) == 112,
	       "CUDA_MEMCPY2D.WidthInBytes offset");
_Static_assert(sizeof(CUdeviceptr) == 8, "CUdeviceptr is 64-bit");

#endif /* TC_GPU_CU_H */
