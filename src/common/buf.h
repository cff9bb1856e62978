/*
 * buf.h - growable byte buffer (writer) and bounded cursor (reader).
 *
 * Every decoder in tcast reads through a tc__cur: each read checks the bytes
 * left first and a failed read leaves the cursor where it was, so no decoder
 * ever indexes a raw buffer.  All integers are little-endian on the wire.
 * A tc__buf that hit an allocation failure remembers it (buf->oom) so encoders
 * can append unconditionally and check once at the end.
 */
#ifndef TC_BUF_H
#define TC_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Invariant: len <= cap; data is NULL only when cap == 0. */
struct tc__buf {
	uint8_t *data; /* owned */
	size_t len;    /* bytes written */
	size_t cap;    /* bytes allocated */
	bool oom;      /* an append failed; contents are incomplete */
};

#define TC_BUF_INIT               \
	{                         \
		NULL, 0, 0, false \
	}

void tc__buf_init(struct tc__buf *b);
void tc__buf_release(struct tc__buf *b);
/* Ensure room for `extra` more bytes; returns 0 or -ENOMEM (and sets oom). */
int tc__buf_reserve(struct tc__buf *b, size_t extra);
void tc__buf_put(struct tc__buf *b, const void *p, size_t n);
void tc__buf_put_u8(struct tc__buf *b, uint8_t v);
void tc__buf_put_u16(struct tc__buf *b, uint16_t v);
void tc__buf_put_u32(struct tc__buf *b, uint32_t v);
void tc__buf_put_u64(struct tc__buf *b, uint64_t v);
void tc__buf_put_i32(struct tc__buf *b, int32_t v);
/* u32 length then the bytes (no NUL). */
void tc__buf_put_str(struct tc__buf *b, const char *s);
void tc__buf_put_strn(struct tc__buf *b, const char *s, size_t n);
/* Overwrite a u32 previously written at `off` (for back-patched lengths). */
void tc__buf_patch_u32(struct tc__buf *b, size_t off, uint32_t v);
/* printf-append; sets oom on failure. */
void tc__buf_printf(struct tc__buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * A receive buffer holds unread bytes [*off, *len) of *cap.  Make room for
 * `want` more at the end: compact the unread bytes to the front, then grow
 * (doubling, from 2 x want) as needed, to at most `max` bytes.  Returns 0,
 * -ENOMEM, or -EMSGSIZE when `max` would be passed.
 */
int tc__rxbuf_room(uint8_t **buf, size_t *cap, size_t *off, size_t *len,
		   size_t want, size_t max);

/* A read-only window over bytes owned elsewhere. */
struct tc__cur {
	const uint8_t *p; /* next unread byte (borrowed) */
	size_t left;	  /* bytes remaining */
};

static inline void tc__cur_init(struct tc__cur *c, const void *p, size_t n)
{
	c->p = p;
	c->left = n;
}

/* Each returns 0 or TC_EPROTO (cursor unchanged on failure). */
int tc__cur_read_u8(struct tc__cur *c, uint8_t *v);
int tc__cur_read_u16(struct tc__cur *c, uint16_t *v);
int tc__cur_read_u32(struct tc__cur *c, uint32_t *v);
int tc__cur_read_u64(struct tc__cur *c, uint64_t *v);
int tc__cur_read_i32(struct tc__cur *c, int32_t *v);
/* Borrow `n` bytes. */
int tc__cur_read_bytes(struct tc__cur *c, size_t n, const uint8_t **out);
/* A u32-length string of at most `max` bytes with no embedded NUL.  *out
 * points into the buffer and is NOT NUL-terminated; *len is its length. */
int tc__cur_read_str(struct tc__cur *c, size_t max, const char **out,
		     size_t *len);
/* Same, copied into `dst` (size dstlen, NUL-terminated); fails with
 * TC_ELIMIT when it does not fit. */
int tc__cur_read_strcpy(struct tc__cur *c, char *dst, size_t dstlen);

#endif /* TC_BUF_H */
