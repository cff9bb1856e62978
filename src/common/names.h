/*
 * names.h - the one check every name passes at the door: keys, client
 * names, paths, tensor names, metadata keys and values.
 *
 * A name that is not valid UTF-8, or that carries control characters,
 * would vanish later (JSON cannot carry it) or reach a terminal raw; so it
 * is refused where it enters, with the field and the byte offset named.
 */
#ifndef TC_NAMES_H
#define TC_NAMES_H

#include <stddef.h>

#define TC_NAME_EMPTY_OK 1u /* "" is accepted */
#define TC_NAME_TEXT	 2u /* \t, \n and \r are accepted (metadata values) */

/* Check n bytes at s: strict UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF), no NUL, no C0 or C1 control character or DEL
 * (but see TC_NAME_TEXT), at most `max` bytes.  Returns 0, or TC_EINVAL or
 * TC_ELIMIT with err saying "<field>: what, at byte N". */
int tc__name_check(const char *field, const char *s, size_t n, size_t max,
		   unsigned flags, char *err, size_t errlen);

/* The tensor name the safetensors format reserves for its metadata. */
#define TC_RESERVED_TENSOR_NAME "__metadata__"

struct tc__table;
/* Every tensor name (non-empty, at most TC_MAX_NAME bytes, not
 * "__metadata__") and metadata key and value (values may hold \t \n \r)
 * of a table; the error names the tensor or metadata entry by index. */
int tc__table_check_names(const struct tc__table *t, char *err, size_t errlen);

#endif /* TC_NAMES_H */
