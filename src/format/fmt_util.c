/*
 * fmt_util.c - messages, UTF-8 checks and pread for src/format.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fmt_internal.h"

void tc__fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void tc__fmt_prefix(char *err, size_t errlen, const char *fmt, ...)
{
	char prefix[TC_FMT_ERRLEN], msg[TC_FMT_ERRLEN];
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "%s", err);
	snprintf(err, errlen, "%s: %s", prefix, msg);
}

size_t tc__fmt_utf8_seq(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	/* RFC 3629 table 3-7: the second byte's range depends on the first,
	 * which is what rules out overlongs, surrogates and > U+10FFFF. */
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

bool tc__fmt_utf8_valid(const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0;

	while (i < n) {
		size_t k;

		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = tc__fmt_utf8_seq(p + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

const char *tc__fmt_quote(char buf[TC_FMT_QUOTE], const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0, o = 0;
	/* Room for the longest item (a 4-byte sequence or \xNN) plus "...". */
	const size_t room = TC_FMT_QUOTE - 1 - 3;

	while (i < len) {
		size_t k = 1;
		bool esc;

		if (p[i] < 0x80) {
			esc = p[i] < 0x20 || p[i] == 0x7f || p[i] == '\'' ||
			      p[i] == '\\';
		} else {
			k = tc__fmt_utf8_seq(p + i, len - i);
			/* C1 controls (U+0080..U+009F) are C2 80..C2 9F. */
			esc = !k || (p[i] == 0xc2 && p[i + 1] < 0xa0);
			if (esc)
				k = 1;
		}
		if (o + (esc ? 4 : k) > room) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (esc) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[p[i] >> 4];
			buf[o++] = hex[p[i] & 15];
		} else {
			memcpy(buf + o, p + i, k);
			o += k;
		}
		i += k;
	}
	buf[o] = '\0';
	return buf;
}

const char *tc__fmt_thousands(char *buf, size_t buflen, uint64_t v)
{
	char digits[24], out[32];
	int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
	int o = 0;

	for (int i = 0; i < n; i++) {
		if (i && (n - i) % 3 == 0)
			out[o++] = ',';
		out[o++] = digits[i];
	}
	out[o] = '\0';
	snprintf(buf, buflen, "%s", out);
	return buf;
}
