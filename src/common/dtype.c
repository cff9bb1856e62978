/*
 * dtype.c - the dtype table, generated from TC_DTYPE_MAP.
 */
#include <string.h>

#include "tcast/dtype.h"
#include "tcast/errors.h"

struct dtype_info {
	const char *name;
	uint32_t bits;
	uint8_t dl_code;
	uint8_t dl_bits;
};

static const struct dtype_info dtypes[TC_DTYPE__COUNT] = {
#define TC__DT_INFO(n, id, st, bits, dlc, dlb) [id] = { st, bits, dlc, dlb },
	TC_DTYPE_MAP(TC__DT_INFO)
#undef TC__DT_INFO
};

TC_API const char *tc_dtype_name(int dtype)
{
	if (dtype < 0 || dtype >= TC_DTYPE__COUNT)
		return NULL;
	return dtypes[dtype].name;
}

TC_API int tc_dtype_from_name(const char *name)
{
	if (!name)
		return TC_EBADDTYPE;
	for (int i = 0; i < TC_DTYPE__COUNT; i++)
		if (!strcmp(dtypes[i].name, name))
			return i;
	return TC_EBADDTYPE;
}

TC_API uint32_t tc_dtype_bits(int dtype)
{
	if (dtype < 0 || dtype >= TC_DTYPE__COUNT)
		return 0;
	return dtypes[dtype].bits;
}

TC_API int tc_dtype_dlpack(int dtype, uint8_t *code, uint8_t *bits)
{
	if (dtype < 0 || dtype >= TC_DTYPE__COUNT)
		return TC_EBADDTYPE;
	*code = dtypes[dtype].dl_code;
	*bits = dtypes[dtype].dl_bits;
	return 0;
}
