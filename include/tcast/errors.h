/*
 * errors.h - the one error space of tcast.
 *
 * 0 is success; a negative value is either -errno from a failed system call
 * or one of the project codes below (range -4000..-4099).  The wire protocol
 * carries the same numbers, so a client rethrows a daemon's error unchanged
 * and the Python SDK maps each code to one exception class.  The table is the
 * single source: the enum, the names and the messages are generated from it.
 */
#ifndef TCAST_ERRORS_H
#define TCAST_ERRORS_H

#include "export.h"

#define TC_ERROR_MAP(X)                                           \
	X(TC_ENOTFOUND, -4000, "no such artifact, key or tensor") \
	X(TC_EEXIST, -4001, "already exists")                     \
	X(TC_ESEALED, -4002, "artifact is sealed")                \
	X(TC_EPROTO, -4003, "malformed message")                  \
	X(TC_EVERSION, -4004, "protocol version mismatch")        \
	X(TC_EBADFILE, -4005, "malformed safetensors file")       \
	X(TC_ECUDA, -4006, "CUDA call failed")                    \
	X(TC_ENOTSUP, -4007, "not supported by this build")       \
	X(TC_EBADINDEX, -4008, "malformed safetensors index")     \
	X(TC_EBADDTYPE, -4009, "unknown or unsupported dtype")    \
	X(TC_ENOSPACE, -4010, "memory budget exhausted")          \
	X(TC_ECONFLICT, -4011,                                    \
	  "key points elsewhere (compare-and-swap failed)")       \
	X(TC_EBUSY, -4012, "artifact is in use")                  \
	X(TC_ELIMIT, -4013, "request exceeds a limit")            \
	X(TC_EINVAL, -4014, "invalid argument")                   \
	X(TC_EDIGEST, -4015, "digest mismatch")                   \
	X(TC_ENODAEMON, -4016, "no daemon is running")            \
	X(TC_EPOLICY, -4017, "policy cannot be honoured")         \
	X(TC_ECLOSED, -4018, "connection closed")                 \
	X(TC_EBADCONFIG, -4019, "invalid configuration")          \
	X(TC_EPERM, -4020, "permission denied")                   \
	X(TC_ESHAPE, -4021, "shape or dtype mismatch")            \
	X(TC_EDEVICE, -4022, "no such device")                    \
	X(TC_ENODEV, -4023, "no GPU driver available")

enum tc_error {
#define TC__ERR_ENUM(name, val, msg) name = (val),
	TC_ERROR_MAP(TC__ERR_ENUM)
#undef TC__ERR_ENUM
};

/* Message for any code: a project code, a negated errno or 0.  Never NULL;
 * static storage. */
TC_API const char *tc_strerror(int err);

/* Symbolic name: "TC_ENOTFOUND", "ENOENT", "OK" or "UNKNOWN".  Never NULL;
 * static storage. */
TC_API const char *tc_err_name(int err);

#endif /* TCAST_ERRORS_H */
