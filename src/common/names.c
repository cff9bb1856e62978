/*
 * names.c - UTF-8 and control-character checks for names (names.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "tensor.h"
#include "tcast/errors.h"

/* Length of the valid UTF-8 sequence at p (n bytes left) and its code
 * point, or 0 when it is not valid (RFC 3629: shortest form only, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint32_t c = p[0], min;
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

int tc__name_check(const char *field, const char *s, size_t n, size_t max,
		   unsigned flags, char *err, size_t errlen)
{
	const uint8_t *p = (const uint8_t *)s;

	if (n == 0 && !(flags & TC_NAME_EMPTY_OK)) {
		snprintf(err, errlen, "%s: empty", field);
		return TC_EINVAL;
	}
	if (n > max) {
		snprintf(err, errlen, "%s: %zu bytes, the limit is %zu", field,
			 n, max);
		return TC_ELIMIT;
	}
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t k = utf8_seq(p + i, n - i, &cp);

		if (!k) {
			snprintf(err, errlen,
				 "%s: not valid UTF-8 at byte %zu (0x%02x)",
				 field, i, p[i]);
			return TC_EINVAL;
		}
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
			if (!((flags & TC_NAME_TEXT) &&
			      (cp == '\t' || cp == '\n' || cp == '\r'))) {
				snprintf(err, errlen,
					 "%s: control character U+%04X at "
					 "byte %zu",
					 field, (unsigned)cp, i);
				return TC_EINVAL;
			}
		}
		i += k;
	}
	return 0;
}

int tc__table_check_names(const struct tc__table *t, char *err, size_t errlen)
{
	char field[96];
	int rc;

	for (uint32_t i = 0; i < t->ntensors; i++) {
		const char *nm = t->tensors[i].name;

		snprintf(field, sizeof(field), "tensor #%u name", i);
		rc = tc__name_check(field, nm, strlen(nm), TC_MAX_NAME, 0, err,
				    errlen);
		if (rc < 0)
			return rc;
		if (!strcmp(nm, TC_RESERVED_TENSOR_NAME)) {
			snprintf(err, errlen,
				 "tensor #%u: the name '%s' is reserved for "
				 "safetensors metadata",
				 i, nm);
			return TC_EINVAL;
		}
	}
	for (uint32_t i = 0; i < t->nmeta; i++) {
		const struct tc__meta *m = &t->meta[i];

		snprintf(field, sizeof(field), "metadata key #%u", i);
		rc = tc__name_check(field, m->key, strlen(m->key),
				    TC_MAX_META_BYTES, 0, err, errlen);
		if (rc < 0)
			return rc;
		snprintf(field, sizeof(field), "metadata value of '%.40s'",
			 m->key);
		rc = tc__name_check(field, m->val, strlen(m->val),
				    TC_MAX_META_BYTES,
				    TC_NAME_EMPTY_OK | TC_NAME_TEXT, err,
				    errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}
