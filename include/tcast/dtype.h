/*
 * dtype.h - tensor element types: every dtype of the safetensors format.
 *
 * The numeric values are part of the ABI and of the wire protocol: never
 * renumber, only append.
 */
#ifndef TCAST_DTYPE_H
#define TCAST_DTYPE_H

#include <stdint.h>

#include "export.h"

/*        name          id  safetensors     bits dlpack-code dlpack-bits */
#define TC_DTYPE_MAP(X)                            \
	X(BOOL, 0, "BOOL", 8, 6, 8)                \
	X(U8, 1, "U8", 8, 1, 8)                    \
	X(I8, 2, "I8", 8, 0, 8)                    \
	X(F8_E5M2, 3, "F8_E5M2", 8, 12, 8)         \
	X(F8_E4M3, 4, "F8_E4M3", 8, 10, 8)         \
	X(F8_E8M0, 5, "F8_E8M0", 8, 14, 8)         \
	X(F8_E4M3FNUZ, 6, "F8_E4M3FNUZ", 8, 11, 8) \
	X(F8_E5M2FNUZ, 7, "F8_E5M2FNUZ", 8, 13, 8) \
	X(I16, 8, "I16", 16, 0, 16)                \
	X(U16, 9, "U16", 16, 1, 16)                \
	X(F16, 10, "F16", 16, 2, 16)               \
	X(BF16, 11, "BF16", 16, 4, 16)             \
	X(I32, 12, "I32", 32, 0, 32)               \
	X(U32, 13, "U32", 32, 1, 32)               \
	X(F32, 14, "F32", 32, 2, 32)               \
	X(C64, 15, "C64", 64, 5, 64)               \
	X(F64, 16, "F64", 64, 2, 64)               \
	X(I64, 17, "I64", 64, 0, 64)               \
	X(U64, 18, "U64", 64, 1, 64)               \
	X(F4, 19, "F4", 4, 17, 4)                  \
	X(F6_E2M3, 20, "F6_E2M3", 6, 15, 6)        \
	X(F6_E3M2, 21, "F6_E3M2", 6, 16, 6)

enum tc_dtype {
#define TC__DT_ENUM(name, id, st, bits, dlc, dlb) TC_DTYPE_##name = (id),
	TC_DTYPE_MAP(TC__DT_ENUM)
#undef TC__DT_ENUM
		TC_DTYPE__COUNT
};

/* safetensors name ("BF16") or NULL for an unknown id.  Static storage. */
TC_API const char *tc_dtype_name(int dtype);
/* Id for an exact, case-sensitive safetensors name, or TC_EBADDTYPE (also
 * for NULL). */
TC_API int tc_dtype_from_name(const char *name);
/* Bits per element (4, 6, 8, 16, 32, 64), or 0 for an unknown id. */
TC_API uint32_t tc_dtype_bits(int dtype);
/* DLPack {code, bits} of the dtype; returns 0 or TC_EBADDTYPE. */
TC_API int tc_dtype_dlpack(int dtype, uint8_t *code, uint8_t *bits);

#endif /* TCAST_DTYPE_H */
