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

#endif /* TC_GPU_DEVICE_H */
