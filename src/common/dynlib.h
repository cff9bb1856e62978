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

/*
 * dlopen `soname` and resolve names[0..n) into addr[0..n).  The library
 * stays loaded for the life of the process, so the addresses stay valid.
 * The caller converts each address to its function's type by a cast
 * (POSIX makes dlsym's result convertible; writing it through a `void **`
 * aimed at a function pointer would not be).  0, or TC_ENOTSUP with err
 * naming the library, what failed and `pkg` (the Debian package that
 * provides it); every addr[] is NULL then: all or nothing.
 */
int tc__dl_load(const char *soname, const char *pkg, const char *const names[],
		size_t n, void *addr[], char *err, size_t errlen);

#endif
