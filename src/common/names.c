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

/* A printable rendering of s for messages: control characters and bytes
 * that are not UTF-8 as \xNN (C1 as \u00NN), at most ~64 bytes of s. */
static void quote(const char *s, size_t n, char *out, size_t outlen)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t o = 0, i = 0;

	while (i < n && i < 64 && o + 8 < outlen) {
		uint32_t cp;
		size_t k = utf8_seq(p + i, n - i, &cp);

		if (!k) {
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x",
					      p[i]);
			i++;
			continue;
		}
		if (cp < 0x20 || cp == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x",
					      (unsigned)cp);
		else if (cp >= 0x80 && cp <= 0x9f)
			o += (size_t)snprintf(out + o, outlen - o, "\\u%04x",
					      (unsigned)cp);
		else if (o + k < outlen) {
			memcpy(out + o, p + i, k);
			o += k;
		}
		i += k;
	}
	if (i < n && o + 4 < outlen)
		o += (size_t)snprintf(out + o, outlen - o, "...");
	out[o < outlen ? o : outlen - 1] = '\0';
}

int tc__name_check(const char *field, const char *s, size_t n, size_t max,
		   unsigned flags, char *err, size_t errlen)
{
	char q[300];

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
			quote(s, n, q, sizeof(q));
			snprintf(err, errlen,
				 "%s: not valid UTF-8 at byte %zu (0x%02x) in "
				 "'%s'",
				 field, i, p[i], q);
			return TC_EINVAL;
		}
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
			if (!((flags & TC_NAME_TEXT) &&
			      (cp == '\t' || cp == '\n' || cp == '\r'))) {
				quote(s, n, q, sizeof(q));
				snprintf(err, errlen,
					 "%s: control character U+%04X at "
					 "byte %zu in '%s'",
					 field, (unsigned)cp, i, q);
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
