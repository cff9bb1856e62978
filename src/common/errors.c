/*
 * errors.c - names and messages generated from TC_ERROR_MAP.
 */
#include <errno.h>
#include <string.h>

#include "tcast/errors.h"
#include "tcast/version.h"

TC_API const char *tc_version(void)
{
	return TC_VERSION_STRING;
}

TC_API const char *tc_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define TC__ERR_MSG(name, val, msg) \
	case val:                   \
		return msg;
		TC_ERROR_MAP(TC__ERR_MSG)
#undef TC__ERR_MSG
	}
	if (err < 0 && err > -4000)
		return strerror(-err);
	return "unknown error";
}

TC_API const char *tc_err_name(int err)
{
	switch (err) {
	case 0:
		return "OK";
#define TC__ERR_NAME(name, val, msg) \
	case val:                    \
		return #name;
		TC_ERROR_MAP(TC__ERR_NAME)
#undef TC__ERR_NAME
	}
	if (err < 0 && err > -4000) {
		const char *n = strerrorname_np(-err);
		if (n)
			return n;
	}
	return "UNKNOWN";
}
