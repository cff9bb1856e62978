/*
 * dynlib.h - libraries only some processes call, loaded by name when one
 * first does.
 *
 * A process linked against a library pays for loading it (relocations,
 * constructors) at every exec, whether it calls it or not.  The one
 * `tcast` binary holds the CLI and the daemons, and linking
 * libmicrohttpd (with its GnuTLS chain) and libsystemd cost every CLI
 * command ~8 ms of a ~15 ms start on the dev VM, for calls that only a
 * daemon serving metrics or started by systemd makes.  Those are loaded
 * here instead, the way src/gpu loads the CUDA driver.
 */
#ifndef TC_DYNLIB_H
#define TC_DYNLIB_H

#include <stddef.h>

/* One symbol to resolve: its exported name, and where its address goes. */
struct tc__dl_sym {
	const char *name;
	void **slot;
};

/* dlopen `soname` and fill every slot of syms[0..n).  The library stays
 * loaded for the life of the process, so the addresses stay valid.
 * 0, or TC_ENOTSUP with err naming the library, what failed and `pkg`
 * (the Debian package that provides it); no slot is set then. */
int tc__dl_load(const char *soname, const char *pkg,
		const struct tc__dl_sym *syms, size_t n, char *err,
		size_t errlen);

#endif
