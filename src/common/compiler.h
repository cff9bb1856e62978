/*
 * compiler.h - small macros every module may use.
 *
 * TC_ENSURE makes each validation one line that always sets a code, after
 * s2n-tls's POSIX_ENSURE; TC_GUARD propagates a negative result.
 */
#ifndef TC_COMPILER_H
#define TC_COMPILER_H

#include <stddef.h>
#include <stdint.h>

#define TC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TC_MIN(a, b)	 ((a) < (b) ? (a) : (b))
#define TC_MAX(a, b)	 ((a) > (b) ? (a) : (b))
/* Round x up to a multiple of a power-of-two `a`. */
#define TC_ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define TC_UNUSED	  __attribute__((unused))
#define TC_LIKELY(x)	  __builtin_expect(!!(x), 1)
#define TC_UNLIKELY(x)	  __builtin_expect(!!(x), 0)

#define TC_ENSURE(cond, code)             \
	do {                              \
		if (TC_UNLIKELY(!(cond))) \
			return (code);    \
	} while (0)

#define TC_GUARD(expr)                       \
	do {                                 \
		int tc__guard_rc = (expr);   \
		if (tc__guard_rc < 0)        \
			return tc__guard_rc; \
	} while (0)

#endif /* TC_COMPILER_H */
