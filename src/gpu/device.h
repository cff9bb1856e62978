/*
 * device.h - what identifies a GPU and what it can do, free of CUDA types.
 *
 * Its own header so that cu.h (the driver table, which fills it) and
 * vmm.h (the API the rest of tcast uses, which reports it) both include it
 * without including each other.
 */
#ifndef TC_GPU_DEVICE_H
#define TC_GPU_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#define TC_GPU_UUID_BYTES 16 /* raw GPU UUID */
/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and a NUL */
#define TC_GPU_UUID_STRLEN 41
#define TC_GPU_NAME_MAX	   96 /* bytes of device name kept, with NUL */
#define TC_GPU_PCI_MAX	   16 /* "0000:17:00.0" and a NUL */

/*
 * What a process can know about one GPU without creating a context on it.
 * Filled once when the driver loads; ordinal is this process's view, uuid
 * is the GPU's identity across processes.
 */
struct tc__gpu_info {
	int ordinal;			   /* CUDA device ordinal here */
	uint8_t uuid[TC_GPU_UUID_BYTES];   /* stable identity */
	char uuid_str[TC_GPU_UUID_STRLEN]; /* nvidia-smi form */
	char name[TC_GPU_NAME_MAX];	   /* "NVIDIA H100 80GB HBM3" */
	char pci_bus_id[TC_GPU_PCI_MAX];   /* "0000:17:00.0" */
	uint64_t total_bytes;		   /* device memory */
	int cc_major;			   /* compute capability */
	int cc_minor;
	int sm_count;	       /* multiprocessors */
	bool vmm;	       /* VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED */
	bool posix_fd;	       /* HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED */
	bool rdma;	       /* GPU_DIRECT_RDMA_SUPPORTED */
	bool host_register;    /* HOST_REGISTER_SUPPORTED */
	bool host_register_ro; /* READ_ONLY_HOST_REGISTER_SUPPORTED */
};

/* Format a UUID as nvidia-smi does ("GPU-" + 8-4-4-4-12 lowercase hex). */
void tc__gpu_uuid_format(const uint8_t uuid[TC_GPU_UUID_BYTES],
			 char out[TC_GPU_UUID_STRLEN]);

/* Parse that form, with or without "GPU-".  Returns 0 or TC_EINVAL. */
int tc__gpu_uuid_parse(const char *s, uint8_t out[TC_GPU_UUID_BYTES]);

/*
 * A GPU named by a process's CUDA ordinal, for a daemon to resolve: ordinals
 * are per process (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so the ref
 * carries the environment that decides them: "cuda:N" then, for each of
 * CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and TCAST_CUDA_LIB, "|VAR=value"
 * when set or "|VAR!" when not.  A process that has not loaded the driver
 * sends it instead of the UUID, sparing its own cuInit (~15 ms of a CLI
 * call); the daemon resolves N itself when its environment is the same,
 * which is what makes its ordinal N the client's.
 */
#define TC_GPU_REF_MAX 1024

/* This process's ref for `ordinal`.  Returns 0, or TC_EINVAL when it does
 * not fit or a value holds '|' (the caller names the GPU by UUID). */
int tc__gpu_ordinal_ref(int ordinal, char *out, size_t outlen);

/* Whether s is an ordinal ref: 1 with *ordinal and *same_env (the ref's
 * environment is this process's), 0 when it is not one (a UUID, say),
 * TC_EINVAL when it starts as one but is malformed. */
int tc__gpu_ordinal_ref_parse(const char *s, int *ordinal, bool *same_env);

#endif /* TC_GPU_DEVICE_H */
