/*
 * version.h - library and protocol versions.
 */
#ifndef TCAST_VERSION_H
#define TCAST_VERSION_H

#include "export.h"

#define TC_VERSION_MAJOR  0
#define TC_VERSION_MINOR  1
#define TC_VERSION_PATCH  0
#define TC_VERSION_STRING "0.1.0"

/* Returns TC_VERSION_STRING of the library actually loaded (static). */
TC_API const char *tc_version(void);

#endif /* TCAST_VERSION_H */
