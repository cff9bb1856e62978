/*
 * dynlib.c - libraries loaded by name when first needed (dynlib.h).
 */
#include <dlfcn.h>
#include <stdio.h>

#include "dynlib.h"
#include "tcast/errors.h"

int tc__dl_load(const char *soname, const char *pkg,
		const struct tc__dl_sym *syms, size_t n, char *err,
		size_t errlen)
{
	void *addr[64];
	void *dl;

	if (n > sizeof(addr) / sizeof(addr[0])) {
		snprintf(err, errlen, "%s: %zu symbols asked (at most 64)",
			 soname, n);
		return TC_ENOTSUP;
	}
	dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		snprintf(err, errlen, "cannot load %s (Debian package %s): %s",
			 soname, pkg, dlerror());
		return TC_ENOTSUP;
	}
	/* All or nothing: a library too old for one call is not used. */
	for (size_t i = 0; i < n; i++) {
		addr[i] = dlsym(dl, syms[i].name);
		if (!addr[i]) {
			snprintf(err, errlen,
				 "%s has no %s (Debian package %s too old?)",
				 soname, syms[i].name, pkg);
			dlclose(dl);
			return TC_ENOTSUP;
		}
	}
	for (size_t i = 0; i < n; i++)
		*syms[i].slot = addr[i];
	return 0;
}
