/*
 * fmt_internal.h - helpers shared by the files of src/format only.
 *
 * Message formatting (every rejection names the file, the tensor and the
 * problem, and hostile names are quoted safely), strict UTF-8 checks and
 * full-length pread.  Nothing here is part of the module's contract
 * (format.h); other modules must not include this header.
 */
#ifndef TC_FMT_INTERNAL_H
#define TC_FMT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/io.h"

#define TC_FMT_ERRLEN	1024	  /* scratch size for one message */
#define TC_FMT_QUOTE	100	  /* bytes of a quoted name, NUL included */
#define TC_FMT_NAME_MAX 255	  /* bytes in a shard file name (NAME_MAX) */
#define TC_FMT_IO_MAX	TC_IO_MAX /* Linux's cap per read/write */

/* snprintf into err (NULL or errlen 0: nothing). */
void tc__fmt_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Turn err's message M into "<prefix>: M". */
void tc__fmt_prefix(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Render `len` bytes of a hostile name for a message: printable ASCII and
 * valid UTF-8 pass, control characters (C0, DEL, C1), quotes, backslashes
 * and invalid bytes become \xNN, and a long name is cut at a character
 * boundary and ends in "...".  Returns buf.
 */
const char *tc__fmt_quote(char buf[TC_FMT_QUOTE], const char *s, size_t len);

/* Length (2..4) of the well-formed UTF-8 sequence starting with a byte >=
 * 0x80 at p, or 0 when it is ill-formed (overlong, surrogate, > U+10FFFF,
 * cut short by n). */
size_t tc__fmt_utf8_seq(const uint8_t *p, size_t n);
/* Whole-string check: every byte is ASCII or part of a well-formed
 * sequence.  NUL bytes are allowed here; callers check those. */
bool tc__fmt_utf8_valid(const char *s, size_t n);

/* "%llu" with thousands separators ("287,616") into buf (>= 27 bytes). */
const char *tc__fmt_thousands(char *buf, size_t buflen, uint64_t v);

#endif /* TC_FMT_INTERNAL_H */
