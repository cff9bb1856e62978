/*
 * copy.c - streaming (non-temporal) copies.
 */
#include <stdint.h>
#include <string.h>

#include "copy.h"

#if defined(__x86_64__)
#include <emmintrin.h>

void tc__copy_nt(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	size_t head = (16 - ((uintptr_t)d & 15)) & 15;

	if (n < 256) {
		memcpy(d, s, n);
		return;
	}
	memcpy(d, s, head);
	d += head;
	s += head;
	n -= head;
	/* 64 bytes (a cache line) per step: four loads, four streaming
	 * stores, so each line is written whole and never read. */
	for (; n >= 64; n -= 64, d += 64, s += 64) {
		__m128i a = _mm_loadu_si128((const __m128i *)(s + 0));
		__m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
		__m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
		__m128i e = _mm_loadu_si128((const __m128i *)(s + 48));

		_mm_stream_si128((__m128i *)(d + 0), a);
		_mm_stream_si128((__m128i *)(d + 16), b);
		_mm_stream_si128((__m128i *)(d + 32), c);
		_mm_stream_si128((__m128i *)(d + 48), e);
	}
	memcpy(d, s, n);
	/* Streaming stores are weakly ordered: fence them before anyone is
	 * told the buffer is ready. */
	_mm_sfence();
}
#else
void tc__copy_nt(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
}
#endif
