/*
 * dynlib.c - libraries loaded by name when first needed (dynlib.h).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "dynlib.h"
#include "tcast/errors.h"

int tc__dl_load(const char *soname, const char *pkg, const char *const names[],
		size_t n, void *addr[], char *err, size_t errlen)
{
	void *dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

	if (!dl) {
		snprintf(err, errlen, "cannot load %s (Debian package %s): %s",
			 soname, pkg, dlerror());
		return TC_ENOTSUP;
	}
	/* All or nothing: a library too old for one call is not used. */
	for (size_t i = 0; i < n; i++) {
		addr[i] = dlsym(dl, names[i]);
		if (!addr[i]) {
			snprintf(err, errlen,
				 "%s has no %s (Debian package %s too old?)",
				 soname, names[i], pkg);
			memset(addr, 0, i * sizeof(addr[0]));
			dlclose(dl);
			return TC_ENOTSUP;
		}
	}
	return 0;
}
