/*
 * gpu_internal.h - what the files of src/gpu share and nothing above sees:
 * the stream and event structs and the way into a device's context.
 */
#ifndef TC_GPU_INTERNAL_H
#define TC_GPU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "cu.h"

/* A stream on one device; owned streams are destroyed by _free, wrapped
 * ones (torch's, DLPack's 0/1/2) only lose the wrapper. */
struct tc__gpu_stream {
	CUstream s; /* driver handle; 0, 1, 2 are the special streams */
	int device; /* ordinal it belongs to */
	bool owned; /* created by tc__gpu_stream_create */
};

struct tc__gpu_event {
	CUevent e;	/* driver handle */
	int device;	/* ordinal it was created on */
	unsigned flags; /* TC_GPU_EVENT_* */
};

/* Load the driver and enter device `ordinal`'s primary context (leave it
 * with tc__cu_leave); s, when given, must belong to that device.  Returns
 * 0, TC_EINVAL (a stream of another device), TC_EDEVICE, TC_ENODEV or
 * TC_ECUDA. */
int tc__gpu_enter(int ordinal, const struct tc__gpu_stream *s,
		  const struct tc__cu **cu, struct tc__cu_guard *g, char *err,
		  size_t errlen);

#endif /* TC_GPU_INTERNAL_H */
