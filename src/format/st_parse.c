/*
 * st_parse.c - the safetensors header parser and tc__st_read.
 *
 * The header is read by a strict single-pass parser that knows only the
 * safetensors schema: an object of tensor entries (each exactly dtype,
 * shape and data_offsets) plus an optional string-to-string __metadata__.
 * The grammar is three levels deep, so there is no recursion, no DOM and no
 * way to nest deeper; any value of the wrong type is an error on the spot.
 *
 * Why not jansson here: it took 2.4 ms for the 1,200-tensor test header
 * (a malloc-bound DOM of ~20x the input), against a budget well under 1 ms,
 * and a hostile 100 MB header would cost gigabytes of DOM.  This parser
 * allocates only what it returns (names, metadata, the tensor array) plus a
 * scratch buffer for strings with escapes.  The unit tests and the fuzzer
 * cross-check it against jansson with JSON_REJECT_DUPLICATES: whatever it
 * accepts, jansson must accept with the same content.
 *
 * JSON rules, matching jansson 2.14 where JSON is concerned (docs/formats.md):
 * strict UTF-8 (no overlongs, surrogates or > U+10FFFF), no raw control
 * characters in strings, \u escapes with paired surrogates, and integers
 * 0..2^63-1 without sign, leading zeros, fraction or exponent.  tcast is
 * stricter than JSON in two places: \u0000 is rejected in every string (names
 * and metadata are C strings) and "-0" is rejected as negative.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/alloc.h"
#include "common/compiler.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

/* Parser state over one header.  Invariant: pos <= len; tname, when set,
 * is the NUL-terminated name of the tensor the next message is about. */
struct hp {
	const uint8_t *p;    /* header bytes (borrowed) */
	size_t len;	     /* bytes in p */
	size_t pos;	     /* next unread byte */
	char *err;	     /* caller's message buffer */
	size_t errlen;	     /* its size */
	const char *tname;   /* tensor in context, or NULL (borrowed) */
	char *sbuf;	     /* owned scratch for strings with escapes */
	size_t scap;	     /* bytes allocated in sbuf */
	size_t slen;	     /* bytes used in sbuf */
	struct tc__table *t; /* the table being filled */
	uint32_t tcap;	     /* tensors allocated in t */
	uint32_t mcap;	     /* metadata entries allocated in t */
	bool have_meta;	     /* __metadata__ seen */
};

/* A parsed JSON string: points into the header or into sbuf, no NUL. */
struct str {
	const char *s;
	size_t len;
};

/* --------------------------------------------------------------- messages */

static int hp_fail(struct hp *h, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int hp_fail(struct hp *h, int code, const char *fmt, ...)
{
	char msg[TC_FMT_ERRLEN], q[TC_FMT_QUOTE];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (h->tname)
		tc__fmt_err(h->err, h->errlen, "tensor '%s': %s",
			    tc__fmt_quote(q, h->tname, strlen(h->tname)), msg);
	else
		tc__fmt_err(h->err, h->errlen, "%s", msg);
	return code;
}

/* What the byte at pos is, for "expected X, found Y". */
static const char *found(const struct hp *h, char buf[16])
{
	uint8_t c;

	if (h->pos >= h->len)
		return "end of header";
	c = h->p[h->pos];
	if (c == 0)
		return "NUL byte";
	if (c > 0x20 && c < 0x7f)
		snprintf(buf, 16, "'%c'", c);
	else
		snprintf(buf, 16, "byte 0x%02x", c);
	return buf;
}

static int hp_expected(struct hp *h, const char *what)
{
	char b[16];

	return hp_fail(h, TC_EBADFILE,
		       "invalid JSON at header byte %zu: expected %s, found %s",
		       h->pos, what, found(h, b));
}

static const char *fmt_shape(char *buf, size_t n, const uint64_t *shape,
			     unsigned ndim)
{
	size_t o = 0;

	o += (size_t)snprintf(buf + o, n - o, "[");
	for (unsigned i = 0; i < ndim && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s%llu", i ? ", " : "",
				      (unsigned long long)shape[i]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
	return buf;
}

/* ------------------------------------------------------------------ lexer */

static inline void skip_ws(struct hp *h)
{
	while (h->pos < h->len) {
		uint8_t c = h->p[h->pos];

		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		h->pos++;
	}
}

/* Next non-whitespace byte, or -1 at the end. */
static inline int peek(struct hp *h)
{
	skip_ws(h);
	return h->pos < h->len ? h->p[h->pos] : -1;
}

static int expect(struct hp *h, char c, const char *what)
{
	if (peek(h) != (uint8_t)c)
		return hp_expected(h, what);
	h->pos++;
	return 0;
}

static int sbuf_put(struct hp *h, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (n > h->scap - h->slen) {
		size_t cap = h->scap ? h->scap : 64;
		char *nb;

		/* slen + n <= header length <= TC_ST_MAX_HEADER: no wrap. */
		while (cap - h->slen < n)
			cap *= 2;
		nb = tc__realloc(h->sbuf, cap);
		if (!nb)
			return -ENOMEM;
		h->sbuf = nb;
		h->scap = cap;
	}
	memcpy(h->sbuf + h->slen, p, n);
	h->slen += n;
	return 0;
}

static int hex4(const uint8_t *p, uint32_t *out)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++) {
		uint8_t c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t utf8_put(uint8_t *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (uint8_t)(0xf0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

static int bad_char(struct hp *h, size_t at)
{
	if (h->p[at] == 0)
		return hp_fail(h, TC_EBADFILE,
			       "NUL byte in a string at header byte %zu", at);
	return hp_fail(
		h, TC_EBADFILE,
		"control character 0x%02x in a string at header byte %zu",
		h->p[at], at);
}

/* Decode one escape at i (p[i] == '\\'); appends to sbuf, advances *i. */
static int unescape(struct hp *h, size_t *i)
{
	const uint8_t *p = h->p;
	size_t at = *i;
	uint8_t o[4], c;
	uint32_t cp, lo;
	int ret;

	if (at + 1 >= h->len)
		return hp_fail(h, TC_EBADFILE,
			       "unterminated string at header byte %zu", at);
	c = p[at + 1];
	switch (c) {
	case '"':
	case '\\':
	case '/':
		o[0] = c;
		break;
	case 'b':
		o[0] = '\b';
		break;
	case 'f':
		o[0] = '\f';
		break;
	case 'n':
		o[0] = '\n';
		break;
	case 'r':
		o[0] = '\r';
		break;
	case 't':
		o[0] = '\t';
		break;
	case 'u':
		if (h->len - at < 6 || hex4(p + at + 2, &cp))
			return hp_fail(h, TC_EBADFILE,
				       "invalid \\u escape at header byte %zu",
				       at);
		*i = at + 6;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (h->len - *i < 6 || p[*i] != '\\' ||
			    p[*i + 1] != 'u' || hex4(p + *i + 2, &lo) ||
			    lo < 0xdc00 || lo > 0xdfff)
				return hp_fail(
					h, TC_EBADFILE,
					"unpaired surrogate escape at header byte %zu",
					at);
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			*i += 6;
		} else if (cp >= 0xdc00 && cp <= 0xdfff) {
			return hp_fail(
				h, TC_EBADFILE,
				"unpaired surrogate escape at header byte %zu",
				at);
		} else if (cp == 0) {
			return hp_fail(
				h, TC_EBADFILE,
				"\\u0000 (NUL) in a string at header byte %zu",
				at);
		}
		ret = sbuf_put(h, o, utf8_put(o, cp));
		return ret < 0 ? ret : 0;
	default:
		return hp_fail(h, TC_EBADFILE,
			       "invalid escape at header byte %zu", at);
	}
	*i = at + 2;
	ret = sbuf_put(h, o, 1);
	return ret < 0 ? ret : 0;
}

/* Parse the string starting at pos (p[pos] == '"').  Strings without escapes
 * point into the header; others are decoded into sbuf and stay valid until
 * the next string. */
static int parse_string(struct hp *h, struct str *out)
{
	const uint8_t *p = h->p;
	size_t start = h->pos + 1, i = start, run, k;
	int ret;

	for (;;) {
		if (i >= h->len)
			return hp_fail(h, TC_EBADFILE,
				       "unterminated string at header byte %zu",
				       h->pos);
		if (p[i] == '"') {
			out->s = (const char *)p + start;
			out->len = i - start;
			h->pos = i + 1;
			return 0;
		}
		if (p[i] == '\\')
			break;
		if (p[i] < 0x20)
			return bad_char(h, i);
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = tc__fmt_utf8_seq(p + i, h->len - i);
		if (!k)
			return hp_fail(h, TC_EBADFILE,
				       "invalid UTF-8 at header byte %zu", i);
		i += k;
	}

	/* Slow path: the string has escapes. */
	h->slen = 0;
	ret = sbuf_put(h, p + start, i - start);
	if (ret < 0)
		return ret;
	for (;;) {
		if (i >= h->len)
			return hp_fail(h, TC_EBADFILE,
				       "unterminated string at header byte %zu",
				       h->pos);
		if (p[i] == '"')
			break;
		if (p[i] == '\\') {
			ret = unescape(h, &i);
			if (ret < 0)
				return ret;
			continue;
		}
		run = i;
		while (i < h->len && p[i] != '"' && p[i] != '\\') {
			if (p[i] < 0x20)
				return bad_char(h, i);
			if (p[i] < 0x80) {
				i++;
				continue;
			}
			k = tc__fmt_utf8_seq(p + i, h->len - i);
			if (!k)
				return hp_fail(
					h, TC_EBADFILE,
					"invalid UTF-8 at header byte %zu", i);
			i += k;
		}
		ret = sbuf_put(h, p + run, i - run);
		if (ret < 0)
			return ret;
	}
	out->s = h->sbuf;
	out->len = h->slen;
	h->pos = i + 1;
	return 0;
}

static bool str_eq(const struct str *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && !memcmp(s->s, lit, n);
}

/* A non-negative JSON integer below 2^63 (jansson's json_int_t range). */
static int parse_uint(struct hp *h, const char *what, uint64_t *v)
{
	const uint8_t *p = h->p;
	uint64_t x = 0;
	int c = peek(h);
	size_t at = h->pos;

	if (c == '-' && at + 1 < h->len && p[at + 1] >= '0' && p[at + 1] <= '9')
		return hp_fail(h, TC_EBADFILE,
			       "%s: negative number at header byte %zu", what,
			       at);
	if (c < '0' || c > '9') {
		char b[16];

		return hp_fail(
			h, TC_EBADFILE,
			"%s: expected an integer at header byte %zu, found %s",
			what, at, found(h, b));
	}
	if (c == '0' && at + 1 < h->len && p[at + 1] >= '0' && p[at + 1] <= '9')
		return hp_fail(
			h, TC_EBADFILE,
			"%s: invalid JSON number with a leading zero at header byte %zu",
			what, at);
	while (h->pos < h->len && p[h->pos] >= '0' && p[h->pos] <= '9') {
		uint64_t d = p[h->pos] - '0';

		if (x > ((uint64_t)INT64_MAX - d) / 10)
			return hp_fail(
				h, TC_EBADFILE,
				"%s: integer at header byte %zu is larger than 2^63-1",
				what, at);
		x = x * 10 + d;
		h->pos++;
	}
	if (h->pos < h->len &&
	    (p[h->pos] == '.' || p[h->pos] == 'e' || p[h->pos] == 'E'))
		return hp_fail(
			h, TC_EBADFILE,
			"%s: number at header byte %zu is not an integer", what,
			at);
	*v = x;
	return 0;
}

/* ------------------------------------------------------------------ entries */

static int parse_shape(struct hp *h, struct tc__tensor *x)
{
	int c, ret;

	if (peek(h) != '[')
		return hp_fail(h, TC_EBADFILE,
			       "shape is not an array (at header byte %zu)",
			       h->pos);
	h->pos++;
	if (peek(h) == ']') {
		h->pos++;
		return 0;
	}
	for (;;) {
		if (x->ndim == TC_MAX_RANK)
			return hp_fail(h, TC_ELIMIT,
				       "shape has more than %d dimensions",
				       TC_MAX_RANK);
		ret = parse_uint(h, "shape", &x->shape[x->ndim]);
		if (ret < 0)
			return ret;
		x->ndim++;
		c = peek(h);
		h->pos++;
		if (c == ']')
			return 0;
		if (c != ',') {
			h->pos--;
			return hp_expected(h, "',' or ']' in shape");
		}
	}
}

static int parse_offsets(struct hp *h, uint64_t *begin, uint64_t *end)
{
	uint64_t v[2];
	int c, ret;

	if (peek(h) != '[')
		return hp_fail(
			h, TC_EBADFILE,
			"data_offsets is not an array (at header byte %zu)",
			h->pos);
	h->pos++;
	if (peek(h) == ']')
		return hp_fail(h, TC_EBADFILE,
			       "data_offsets has 0 elements, not 2");
	for (int i = 0; i < 2; i++) {
		ret = parse_uint(h, "data_offsets", &v[i]);
		if (ret < 0)
			return ret;
		c = peek(h);
		if (i == 0 && c == ']')
			return hp_fail(h, TC_EBADFILE,
				       "data_offsets has 1 element, not 2");
		if (i == 1 && c == ',')
			return hp_fail(h, TC_EBADFILE,
				       "data_offsets has more than 2 elements");
		if (c != (i == 0 ? ',' : ']'))
			return hp_expected(h, i == 0 ? "','" : "']'");
		h->pos++;
	}
	*begin = v[0];
	*end = v[1];
	return 0;
}

/* tc_dtype_from_name needs a C string and strcmps every name; this compares
 * lengths first (exact and case-sensitive, like it). */
static const struct {
	const char *name;
	size_t len;
} dtype_names[TC_DTYPE__COUNT] = {
#define TC__DT_NAME(n, id, st, bits, dlc, dlb) [id] = { st, sizeof(st) - 1 },
	TC_DTYPE_MAP(TC__DT_NAME)
#undef TC__DT_NAME
};

static int parse_dtype(struct hp *h, int *dtype)
{
	char q[TC_FMT_QUOTE];
	struct str s;
	int ret, d = TC_EBADDTYPE;

	if (peek(h) != '"')
		return hp_fail(h, TC_EBADFILE,
			       "dtype is not a string (at header byte %zu)",
			       h->pos);
	ret = parse_string(h, &s);
	if (ret < 0)
		return ret;
	for (int i = 0; i < TC_DTYPE__COUNT; i++) {
		if (dtype_names[i].len == s.len &&
		    !memcmp(dtype_names[i].name, s.s, s.len)) {
			d = i;
			break;
		}
	}
	if (d < 0)
		return hp_fail(h, TC_EBADDTYPE, "unknown dtype '%s'",
			       tc__fmt_quote(q, s.s, s.len));
	*dtype = d;
	return 0;
}

/* Checked prod(shape) * bits / 8; the overflow cases (hostile-inputs.md
 * 1.1.18-19) include products that wrap to exactly 0 or to a small size
 * equal to end - begin, so every step is checked, never inferred. */
static int tensor_nbytes(struct hp *h, const struct tc__tensor *x,
			 uint64_t *out)
{
	uint32_t bits = tc_dtype_bits(x->dtype);
	uint64_t n = 1, nbits;
	char sh[TC_FMT_ERRLEN / 2];

	for (unsigned i = 0; i < x->ndim; i++)
		if (__builtin_mul_overflow(n, x->shape[i], &n))
			return hp_fail(
				h, TC_EBADFILE,
				"shape %s: element count overflows 64 bits",
				fmt_shape(sh, sizeof(sh), x->shape, x->ndim));
	if (__builtin_mul_overflow(n, (uint64_t)bits, &nbits))
		return hp_fail(
			h, TC_EBADFILE,
			"shape %s: %llu %s elements overflow 64 bits of size",
			fmt_shape(sh, sizeof(sh), x->shape, x->ndim),
			(unsigned long long)n, tc_dtype_name(x->dtype));
	if (nbits % 8)
		return hp_fail(
			h, TC_EBADFILE,
			"shape %s: %llu %s elements are %llu bits, not a whole number of bytes",
			fmt_shape(sh, sizeof(sh), x->shape, x->ndim),
			(unsigned long long)n, tc_dtype_name(x->dtype),
			(unsigned long long)nbits);
	*out = nbits / 8;
	return 0;
}

enum { F_DTYPE = 1, F_SHAPE = 2, F_OFFSETS = 4 };

static int parse_tensor(struct hp *h, struct tc__tensor *x)
{
	static const char *const fname[] = { "dtype", "shape", "data_offsets" };
	unsigned seen = 0, f;
	uint64_t begin = 0, end = 0, nbytes = 0;
	int dtype = 0, c, ret;
	char q[TC_FMT_QUOTE], sh[TC_FMT_ERRLEN / 2];
	struct str k;

	if (peek(h) != '{')
		return hp_fail(h, TC_EBADFILE,
			       "entry is not an object (at header byte %zu)",
			       h->pos);
	h->pos++;
	c = peek(h);
	if (c == '}')
		h->pos++;
	while (c != '}') {
		if (peek(h) != '"')
			return hp_expected(h, "a field name");
		ret = parse_string(h, &k);
		if (ret < 0)
			return ret;
		for (f = 0; f < 3; f++)
			if (str_eq(&k, fname[f]))
				break;
		if (f == 3)
			return hp_fail(h, TC_EBADFILE, "unknown field '%s'",
				       tc__fmt_quote(q, k.s, k.len));
		if (seen & (1u << f))
			return hp_fail(h, TC_EBADFILE, "duplicate field '%s'",
				       fname[f]);
		seen |= 1u << f;
		ret = expect(h, ':', "':'");
		if (ret < 0)
			return ret;
		if (f == 0)
			ret = parse_dtype(h, &dtype);
		else if (f == 1)
			ret = parse_shape(h, x);
		else
			ret = parse_offsets(h, &begin, &end);
		if (ret < 0)
			return ret;
		c = peek(h);
		h->pos++;
		if (c != ',' && c != '}') {
			h->pos--;
			return hp_expected(h, "',' or '}'");
		}
	}
	for (f = 0; f < 3; f++)
		if (!(seen & (1u << f)))
			return hp_fail(h, TC_EBADFILE, "missing field '%s'",
				       fname[f]);
	x->dtype = (uint8_t)dtype;
	if (end < begin)
		return hp_fail(h, TC_EBADFILE,
			       "data_offsets [%llu, %llu]: end before begin",
			       (unsigned long long)begin,
			       (unsigned long long)end);
	ret = tensor_nbytes(h, x, &nbytes);
	if (ret < 0)
		return ret;
	if (end - begin != nbytes)
		return hp_fail(
			h, TC_EBADFILE,
			"data_offsets [%llu, %llu] hold %llu bytes but %s %s needs %llu",
			(unsigned long long)begin, (unsigned long long)end,
			(unsigned long long)(end - begin),
			tc_dtype_name(x->dtype),
			fmt_shape(sh, sizeof(sh), x->shape, x->ndim),
			(unsigned long long)nbytes);
	x->nbytes = nbytes;
	x->src_offset = begin; /* data-relative until the geometry pass */
	return 0;
}

static int add_tensor(struct hp *h, const struct str *name,
		      struct tc__tensor **out)
{
	struct tc__table *t = h->t;
	struct tc__tensor *x;
	char q[TC_FMT_QUOTE];

	if (name->len == 0)
		return hp_fail(h, TC_EBADFILE, "empty tensor name");
	if (name->len > TC_MAX_NAME)
		return hp_fail(h, TC_ELIMIT,
			       "tensor name '%s' is %zu bytes, longer than %d",
			       tc__fmt_quote(q, name->s, name->len), name->len,
			       TC_MAX_NAME);
	if (t->ntensors == TC_MAX_TENSORS)
		return hp_fail(h, TC_ELIMIT, "more than %d tensors",
			       TC_MAX_TENSORS);
	if (t->ntensors == h->tcap) {
		uint32_t cap = h->tcap ? h->tcap * 2 : 16;

		if (cap > TC_MAX_TENSORS)
			cap = TC_MAX_TENSORS;
		x = tc__reallocarray(t->tensors, cap, sizeof(*x));
		if (!x)
			return -ENOMEM;
		t->tensors = x;
		h->tcap = cap;
	}
	x = &t->tensors[t->ntensors];
	memset(x, 0, sizeof(*x));
	x->name = tc__strndup(name->s, name->len);
	if (!x->name)
		return -ENOMEM;
	t->ntensors++;
	*out = x;
	return 0;
}

static int parse_meta(struct hp *h)
{
	struct tc__table *t = h->t;
	char q[TC_FMT_QUOTE];
	struct tc__meta *m;
	struct str s;
	int c, ret;

	if (h->have_meta)
		return hp_fail(h, TC_EBADFILE, "duplicate '__metadata__'");
	h->have_meta = true;
	if (peek(h) != '{')
		return hp_fail(
			h, TC_EBADFILE,
			"__metadata__ is not an object (at header byte %zu)",
			h->pos);
	h->pos++;
	c = peek(h);
	if (c == '}')
		h->pos++;
	while (c != '}') {
		if (peek(h) != '"')
			return hp_expected(h, "a __metadata__ key");
		ret = parse_string(h, &s);
		if (ret < 0)
			return ret;
		if (s.len > TC_MAX_META_BYTES)
			return hp_fail(
				h, TC_ELIMIT,
				"__metadata__ key '%s' is longer than %d bytes",
				tc__fmt_quote(q, s.s, s.len),
				TC_MAX_META_BYTES);
		if (t->nmeta == TC_MAX_META)
			return hp_fail(h, TC_ELIMIT,
				       "__metadata__ has more than %d entries",
				       TC_MAX_META);
		if (t->nmeta == h->mcap) {
			uint32_t cap = h->mcap ? h->mcap * 2 : 8;

			m = tc__reallocarray(t->meta, cap, sizeof(*m));
			if (!m)
				return -ENOMEM;
			t->meta = m;
			h->mcap = cap;
		}
		m = &t->meta[t->nmeta];
		m->val = NULL;
		m->key = tc__strndup(s.s, s.len);
		if (!m->key)
			return -ENOMEM;
		t->nmeta++;
		ret = expect(h, ':', "':'");
		if (ret < 0)
			return ret;
		if (peek(h) != '"')
			return hp_fail(
				h, TC_EBADFILE,
				"__metadata__ '%s': value is not a string (at header byte %zu)",
				tc__fmt_quote(q, m->key, strlen(m->key)),
				h->pos);
		ret = parse_string(h, &s);
		if (ret < 0)
			return ret;
		if (s.len > TC_MAX_META_BYTES)
			return hp_fail(
				h, TC_ELIMIT,
				"__metadata__ '%s': value is longer than %d bytes",
				tc__fmt_quote(q, m->key, strlen(m->key)),
				TC_MAX_META_BYTES);
		m->val = tc__strndup(s.s, s.len);
		if (!m->val)
			return -ENOMEM;
		c = peek(h);
		h->pos++;
		if (c != ',' && c != '}') {
			h->pos--;
			return hp_expected(h, "',' or '}'");
		}
	}
	return 0;
}

static int parse_top(struct hp *h)
{
	struct tc__tensor *x = NULL;
	struct str k;
	int c, ret;

	c = peek(h);
	if (c < 0)
		return hp_fail(h, TC_EBADFILE, "header is empty");
	if (c != '{') {
		if (h->len - h->pos >= 3 &&
		    !memcmp(h->p + h->pos, "\xef\xbb\xbf", 3))
			return hp_fail(h, TC_EBADFILE,
				       "byte order mark before '{'");
		return hp_expected(h, "'{' to open the header");
	}
	h->pos++;
	c = peek(h);
	if (c == '}')
		h->pos++;
	while (c != '}') {
		if (peek(h) != '"')
			return hp_expected(h, "a tensor name");
		ret = parse_string(h, &k);
		if (ret < 0)
			return ret;
		if (str_eq(&k, "__metadata__")) {
			ret = expect(h, ':', "':'");
			if (ret < 0)
				return ret;
			ret = parse_meta(h);
		} else {
			ret = add_tensor(h, &k, &x);
			if (ret < 0)
				return ret;
			h->tname = x->name;
			ret = expect(h, ':', "':'");
			if (ret == 0)
				ret = parse_tensor(h, x);
			if (ret == 0)
				h->tname = NULL;
		}
		if (ret < 0)
			return ret;
		c = peek(h);
		h->pos++;
		if (c != ',' && c != '}') {
			h->pos--;
			return hp_expected(h, "',' or '}'");
		}
	}
	skip_ws(h);
	if (h->pos < h->len) {
		if (h->p[h->pos] == 0)
			return hp_fail(
				h, TC_EBADFILE,
				"NUL padding after the header object at header byte %zu (only spaces may pad)",
				h->pos);
		return hp_fail(
			h, TC_EBADFILE,
			"trailing bytes after the header object at header byte %zu",
			h->pos);
	}
	return 0;
}

/* --------------------------------------------------------------- geometry */

/* Names sorted by (hash, name): integer compares almost always, strcmp
 * only on equal hashes.  Still a sort, so colliding names cost O(n log n)
 * strcmps at worst, never O(n^2). */
struct hname {
	uint64_t hash;
	const char *name;
};

static int cmp_hname(const void *a, const void *b)
{
	const struct hname *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Returns the first duplicated name, NULL if none, or `nomem`. */
static const char *find_dup(uint32_t n, const char *(*get)(void *, uint32_t),
			    void *arg, const char *nomem)
{
	struct hname *v = tc__reallocarray(NULL, n, sizeof(*v));
	const char *dup = NULL;

	if (!v)
		return nomem;
	for (uint32_t i = 0; i < n; i++) {
		v[i].name = get(arg, i);
		v[i].hash = XXH3_64bits(v[i].name, strlen(v[i].name));
	}
	qsort(v, n, sizeof(*v), cmp_hname);
	for (uint32_t i = 1; i < n && !dup; i++)
		if (v[i].hash == v[i - 1].hash &&
		    !strcmp(v[i].name, v[i - 1].name))
			dup = v[i].name;
	tc__free(v);
	return dup;
}

static const char *tensor_name(void *arg, uint32_t i)
{
	return ((struct tc__tensor *)arg)[i].name;
}

static const char *meta_key(void *arg, uint32_t i)
{
	return ((struct tc__meta *)arg)[i].key;
}

/* Data order: (begin, size, header order), so a zero-size tensor sorts
 * before the tensor that starts where it sits. */
static int cmp_data(const void *a, const void *b, void *arg)
{
	const struct tc__tensor *t = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

	if (t[i].src_offset != t[j].src_offset)
		return t[i].src_offset < t[j].src_offset ? -1 : 1;
	if (t[i].nbytes != t[j].nbytes)
		return t[i].nbytes < t[j].nbytes ? -1 : 1;
	return i < j ? -1 : i > j;
}

static uint32_t *iota(uint32_t n)
{
	uint32_t *v = tc__reallocarray(NULL, n ? n : 1, sizeof(*v));

	if (v)
		for (uint32_t i = 0; i < n; i++)
			v[i] = i;
	return v;
}

/* Duplicates (hostile-inputs.md 1.1.12): serde keeps the last value, which
 * would let a crafted header smuggle a second definition; tcast rejects. */
static int check_unique(struct hp *h)
{
	static const char nomem[] = "";
	struct tc__table *t = h->t;
	char q[TC_FMT_QUOTE];
	const char *dup;

	dup = find_dup(t->ntensors, tensor_name, t->tensors, nomem);
	if (dup == nomem)
		return -ENOMEM;
	if (dup)
		return hp_fail(h, TC_EBADFILE, "duplicate tensor '%s'",
			       tc__fmt_quote(q, dup, strlen(dup)));
	dup = find_dup(t->nmeta, meta_key, t->meta, nomem);
	if (dup == nomem)
		return -ENOMEM;
	if (dup)
		return hp_fail(h, TC_EBADFILE,
			       "duplicate __metadata__ key '%s'",
			       tc__fmt_quote(q, dup, strlen(dup)));
	return 0;
}

/*
 * Reference rules 5 and 8 (formats.md 1.2): in data order the first tensor
 * starts at 0 and each begins where the previous ends (no hole, no overlap),
 * and the last ends exactly at the end of the file.  A zero-size tensor
 * therefore may share an offset only where begin == end == previous end.
 * Then the tensors are put in data order with absolute file offsets.
 */
static int check_layout(struct hp *h, uint64_t file_size, uint32_t file_index)
{
	struct tc__table *t = h->t;
	struct tc__tensor *x, *prev = NULL, *sorted;
	uint64_t data_len = file_size - 8 - h->len, expected = 0, b, e;
	char q[TC_FMT_QUOTE];
	uint32_t *ord = NULL, n = t->ntensors, i;
	int ret = 0;

	for (i = 1; i < n; i++) {
		uint32_t a = i - 1;

		if (cmp_data(&a, &i, t->tensors) > 0)
			break;
	}
	if (i < n) {
		ord = iota(n);
		if (!ord)
			return -ENOMEM;
		qsort_r(ord, n, sizeof(*ord), cmp_data, t->tensors);
	}
	for (i = 0; i < n; i++) {
		x = &t->tensors[ord ? ord[i] : i];
		b = x->src_offset;
		e = b + x->nbytes;
		h->tname = x->name;
		if (b != expected && !prev)
			ret = hp_fail(
				h, TC_EBADFILE,
				"data_offsets [%llu, %llu]: first tensor starts at %llu, not 0 (hole)",
				(unsigned long long)b, (unsigned long long)e,
				(unsigned long long)b);
		else if (b > expected)
			ret = hp_fail(
				h, TC_EBADFILE,
				"data_offsets [%llu, %llu]: hole of %llu bytes after tensor '%s', which ends at %llu",
				(unsigned long long)b, (unsigned long long)e,
				(unsigned long long)(b - expected),
				tc__fmt_quote(q, prev->name,
					      strlen(prev->name)),
				(unsigned long long)expected);
		else if (b < expected)
			ret = hp_fail(
				h, TC_EBADFILE,
				"data_offsets [%llu, %llu]: overlaps tensor '%s' [%llu, %llu]",
				(unsigned long long)b, (unsigned long long)e,
				tc__fmt_quote(q, prev->name,
					      strlen(prev->name)),
				(unsigned long long)prev->src_offset,
				(unsigned long long)expected);
		else if (e > data_len)
			ret = hp_fail(
				h, TC_EBADFILE,
				"data_offsets [%llu, %llu]: past the end of the file (data section is %llu bytes)",
				(unsigned long long)b, (unsigned long long)e,
				(unsigned long long)data_len);
		if (ret)
			goto out_free_ord;
		expected = e;
		prev = x;
	}
	h->tname = NULL;
	if (expected != data_len) {
		ret = hp_fail(
			h, TC_EBADFILE,
			"%llu bytes after the last tensor (data ends at %llu, file at %llu)",
			(unsigned long long)(data_len - expected),
			(unsigned long long)(8 + h->len + expected),
			(unsigned long long)file_size);
		goto out_free_ord;
	}
	for (i = 0; i < n; i++) {
		x = &t->tensors[i];
		x->src_file = file_index;
		x->src_offset += 8 + h->len; /* <= file_size: no wrap */
	}
	if (ord) {
		sorted = tc__reallocarray(NULL, n, sizeof(*sorted));
		if (!sorted) {
			ret = -ENOMEM;
			goto out_free_ord;
		}
		for (i = 0; i < n; i++)
			sorted[i] = t->tensors[ord[i]];
		tc__free(t->tensors);
		t->tensors = sorted;
	}
out_free_ord:
	tc__free(ord);
	return ret;
}

/* ---------------------------------------------------------------- entries */

int tc__st_parse_header(const char *json, size_t len, uint64_t file_size,
			uint32_t file_index, struct tc__table *out, char *err,
			size_t errlen)
{
	struct hp h = {
		.p = (const uint8_t *)json,
		.len = len,
		.err = err,
		.errlen = errlen,
		.t = out,
	};
	int ret;

	tc__fmt_err(err, errlen, "no error");
	if (out->ntensors || out->nmeta) {
		tc__fmt_err(err, errlen, "output table is not empty");
		return TC_EINVAL;
	}
	/* Callers validate these first (tc__st_read); the fuzzer and other
	 * direct callers may not, so check again before touching a byte. */
	if (len > TC_ST_MAX_HEADER) {
		tc__fmt_err(err, errlen,
			    "header length %zu exceeds the %llu-byte cap", len,
			    (unsigned long long)TC_ST_MAX_HEADER);
		return TC_ELIMIT;
	}
	if (file_size < 8 || file_size - 8 < len) {
		tc__fmt_err(
			err, errlen,
			"header length %zu runs past the end of the file (%llu bytes)",
			len, (unsigned long long)file_size);
		return TC_EBADFILE;
	}
	ret = parse_top(&h);
	if (ret == 0)
		ret = check_unique(&h);
	if (ret == 0)
		ret = check_layout(&h, file_size, file_index);
	tc__free(h.sbuf);
	if (ret < 0) {
		if (ret == -ENOMEM)
			tc__fmt_err(err, errlen,
				    "out of memory parsing the header");
		tc__table_release(out);
	}
	return ret;
}

int tc__st_read(int fd, uint32_t file_index, struct tc__table *out,
		uint64_t *file_size, char *err, size_t errlen)
{
	struct stat st;
	uint8_t pre[8];
	uint64_t size, n = 0;
	size_t got;
	char *hdr;
	int ret;

	*file_size = 0;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot stat: %s", tc_strerror(ret));
		return ret;
	}
	if (!S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen, "not a regular file");
		return TC_EBADFILE;
	}
	size = (uint64_t)st.st_size;
	if (size < 8) {
		tc__fmt_err(
			err, errlen,
			"file is %llu bytes, shorter than the 8-byte header length",
			(unsigned long long)size);
		return TC_EBADFILE;
	}
	ret = tc__pread_full(fd, pre, 8, 0, &got);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot read: %s", tc_strerror(ret));
		return ret;
	}
	if (got < 8) {
		tc__fmt_err(err, errlen, "file shrank while being read");
		return TC_EBADFILE;
	}
	for (int i = 7; i >= 0; i--)
		n = n << 8 | pre[i];
	/* Validate N before allocating N bytes (hostile-inputs.md 1.1.3-4):
	 * the file bound first (N + 8 cannot wrap this way), then the cap. */
	if (n > size - 8) {
		tc__fmt_err(
			err, errlen,
			"header length %llu runs past the end of the file (%llu bytes)",
			(unsigned long long)n, (unsigned long long)size);
		return TC_EBADFILE;
	}
	if (n > TC_ST_MAX_HEADER) {
		tc__fmt_err(err, errlen,
			    "header length %llu exceeds the %llu-byte cap",
			    (unsigned long long)n,
			    (unsigned long long)TC_ST_MAX_HEADER);
		return TC_ELIMIT;
	}
	hdr = tc__malloc(n ? (size_t)n : 1);
	if (!hdr) {
		tc__fmt_err(err, errlen, "out of memory for a %llu-byte header",
			    (unsigned long long)n);
		return -ENOMEM;
	}
	ret = tc__pread_full(fd, hdr, (size_t)n, 8, &got);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot read the header: %s",
			    tc_strerror(ret));
		goto out_free_hdr;
	}
	if (got < n) {
		tc__fmt_err(err, errlen, "file shrank while being read");
		ret = TC_EBADFILE;
		goto out_free_hdr;
	}
	ret = tc__st_parse_header(hdr, (size_t)n, size, file_index, out, err,
				  errlen);
	if (ret == 0)
		*file_size = size;
out_free_hdr:
	tc__free(hdr);
	return ret;
}
