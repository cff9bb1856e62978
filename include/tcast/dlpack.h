/*
 * dlpack.h - DLPack 1.1 structures, ABI-identical to dmlc/dlpack's header.
 *
 * Our own copy: Debian ships DLPack 0.6, which lacks the versioned struct,
 * the flags and the float8/6/4 codes.  Offsets (x86-64) are checked by
 * tests/unit/test_client.c and against torch's copy on the GPU machine.
 */
#ifndef TCAST_DLPACK_H
#define TCAST_DLPACK_H

#include <stdint.h>

#define TC_DLPACK_MAJOR 1
#define TC_DLPACK_MINOR 1

#define TC_DLPACK_FLAG_READ_ONLY (1ull << 0)
#define TC_DLPACK_FLAG_IS_COPIED (1ull << 1)

enum {
	TC_kDLCPU = 1,
	TC_kDLCUDA = 2,
	TC_kDLCUDAHost = 3,
};

struct tc_DLPackVersion {
	uint32_t major;
	uint32_t minor;
};

struct tc_DLDevice {
	int32_t device_type;
	int32_t device_id;
};

struct tc_DLDataType {
	uint8_t code;
	uint8_t bits;
	uint16_t lanes;
};

struct tc_DLTensor {
	void *data;
	struct tc_DLDevice device;
	int32_t ndim;
	struct tc_DLDataType dtype;
	int64_t *shape;
	int64_t *strides;
	uint64_t byte_offset;
};

struct tc_DLManagedTensor {
	struct tc_DLTensor dl_tensor;
	void *manager_ctx;
	void (*deleter)(struct tc_DLManagedTensor *self);
};

struct tc_DLManagedTensorVersioned {
	struct tc_DLPackVersion version;
	void *manager_ctx;
	void (*deleter)(struct tc_DLManagedTensorVersioned *self);
	uint64_t flags;
	struct tc_DLTensor dl_tensor;
};

#endif /* TCAST_DLPACK_H */
