/*
 * buf.c - growable buffer and bounded cursor.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "tcast/errors.h"

void tc__buf_init(struct tc__buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->oom = false;
}

void tc__buf_release(struct tc__buf *b)
{
	tc__free(b->data);
	tc__buf_init(b);
}

int tc__buf_reserve(struct tc__buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (b->oom)
		return -ENOMEM;
	if (__builtin_add_overflow(b->len, extra, &need))
		goto out_oom;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (__builtin_mul_overflow(cap, 2, &cap))
			goto out_oom;
	}
	p = tc__realloc(b->data, cap);
	if (!p)
		goto out_oom;
	b->data = p;
	b->cap = cap;
	return 0;

out_oom:
	b->oom = true;
	return -ENOMEM;
}

void tc__buf_put(struct tc__buf *b, const void *p, size_t n)
{
	if (n == 0 || tc__buf_reserve(b, n) < 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void tc__buf_put_u8(struct tc__buf *b, uint8_t v)
{
	tc__buf_put(b, &v, 1);
}

void tc__buf_put_u16(struct tc__buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	tc__buf_put(b, x, 2);
}

void tc__buf_put_u32(struct tc__buf *b, uint32_t v)
{
	uint8_t x[4];

	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	tc__buf_put(b, x, 4);
}

void tc__buf_put_u64(struct tc__buf *b, uint64_t v)
{
	uint8_t x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	tc__buf_put(b, x, 8);
}

void tc__buf_put_i32(struct tc__buf *b, int32_t v)
{
	tc__buf_put_u32(b, (uint32_t)v);
}

void tc__buf_put_strn(struct tc__buf *b, const char *s, size_t n)
{
	if (n > UINT32_MAX) {
		b->oom = true;
		return;
	}
	tc__buf_put_u32(b, (uint32_t)n);
	tc__buf_put(b, s, n);
}

void tc__buf_put_str(struct tc__buf *b, const char *s)
{
	tc__buf_put_strn(b, s ? s : "", s ? strlen(s) : 0);
}

void tc__buf_patch_u32(struct tc__buf *b, size_t off, uint32_t v)
{
	/* Written as a subtraction: `off + 4` wraps for offsets near
	 * SIZE_MAX and would pass the check. */
	if (b->oom || off > b->len || b->len - off < 4)
		return;
	for (int i = 0; i < 4; i++)
		b->data[off + i] = (uint8_t)(v >> (8 * i));
}

void tc__buf_printf(struct tc__buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || tc__buf_reserve(b, (size_t)n + 1) < 0) {
		b->oom = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static uint64_t load_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

int tc__cur_read_u8(struct tc__cur *c, uint8_t *v)
{
	if (c->left < 1)
		return TC_EPROTO;
	*v = c->p[0];
	c->p += 1;
	c->left -= 1;
	return 0;
}

int tc__cur_read_u16(struct tc__cur *c, uint16_t *v)
{
	if (c->left < 2)
		return TC_EPROTO;
	*v = (uint16_t)load_le(c->p, 2);
	c->p += 2;
	c->left -= 2;
	return 0;
}

int tc__cur_read_u32(struct tc__cur *c, uint32_t *v)
{
	if (c->left < 4)
		return TC_EPROTO;
	*v = (uint32_t)load_le(c->p, 4);
	c->p += 4;
	c->left -= 4;
	return 0;
}

int tc__cur_read_u64(struct tc__cur *c, uint64_t *v)
{
	if (c->left < 8)
		return TC_EPROTO;
	*v = load_le(c->p, 8);
	c->p += 8;
	c->left -= 8;
	return 0;
}

int tc__cur_read_i32(struct tc__cur *c, int32_t *v)
{
	uint32_t u;
	int rc = tc__cur_read_u32(c, &u);

	if (rc == 0)
		*v = (int32_t)u;
	return rc;
}

int tc__cur_read_bytes(struct tc__cur *c, size_t n, const uint8_t **out)
{
	if (c->left < n)
		return TC_EPROTO;
	*out = c->p;
	c->p += n;
	c->left -= n;
	return 0;
}

int tc__cur_read_str(struct tc__cur *c, size_t max, const char **out,
		     size_t *len)
{
	struct tc__cur save = *c;
	uint32_t n;

	if (tc__cur_read_u32(c, &n) < 0)
		return TC_EPROTO;
	if (n > max || n > c->left || memchr(c->p, 0, n)) {
		*c = save;
		return n > max ? TC_ELIMIT : TC_EPROTO;
	}
	*out = (const char *)c->p;
	*len = n;
	c->p += n;
	c->left -= n;
	return 0;
}

int tc__cur_read_strcpy(struct tc__cur *c, char *dst, size_t dstlen)
{
	const char *s;
	size_t n;
	int rc;

	if (dstlen == 0)
		return TC_ELIMIT;
	rc = tc__cur_read_str(c, dstlen - 1, &s, &n);
	if (rc < 0)
		return rc;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

int tc__rxbuf_room(uint8_t **buf, size_t *cap, size_t *off, size_t *len,
		   size_t want, size_t max)
{
	size_t need, ncap;
	uint8_t *p;

	if (*cap - *len >= want)
		return 0;
	/* Compact first: most of the time the buffer is drained. */
	if (*off) {
		memmove(*buf, *buf + *off, *len - *off);
		*len -= *off;
		*off = 0;
	}
	need = *len + want;
	ncap = *cap ? *cap : 2 * want;
	while (ncap < need)
		ncap *= 2;
	if (ncap <= *cap)
		return 0;
	if (ncap > max)
		return -EMSGSIZE;
	p = tc__realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = ncap;
	return 0;
}
