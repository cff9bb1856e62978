/*
 * fuzz_st_header.c - libFuzzer target for the safetensors header parser.
 *
 * An input is a whole file: the 8-byte length N, the header, the data.
 * N is clamped to what the input holds (tc__st_read rejects a longer N
 * before parsing; clamping lets the mutator reach the parser anyway), then
 * tc__st_parse_header runs with the input size as the file size.  A header
 * it accepts must also be accepted, with the same content, by jansson
 * (st_oracle.h), and must survive the writer: parse(write(parse(x))) has
 * the same tensors and bytes.  Any mismatch aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "format/format.h"
#include "st_oracle.h"

static int out_fd = -1;

static void roundtrip(const uint8_t *data, struct tc__table *t)
{
	struct tc__table r;
	char err[512];
	uint64_t size;
	uint8_t *a, *b;

	if (out_fd < 0)
		out_fd = memfd_create("fuzz-st", MFD_CLOEXEC);
	if (out_fd < 0 || ftruncate(out_fd, 0) || lseek(out_fd, 0, SEEK_SET))
		abort();
	for (uint32_t i = 0; i < t->ntensors; i++)
		t->tensors[i].offset = t->tensors[i].src_offset;
	if (tc__st_write_fd(out_fd, t, data, err, sizeof(err))) {
		/* Only limits may refuse a parsed table (a header that grew
		 * past the cap through escaping). */
		if (!strstr(err, "cap")) {
			fprintf(stderr, "writer refused a parsed table: %s\n",
				err);
			abort();
		}
		return;
	}
	tc__table_init(&r);
	if (tc__st_read(out_fd, 0, &r, &size, err, sizeof(err))) {
		fprintf(stderr, "written file does not parse: %s\n", err);
		abort();
	}
	if (r.ntensors != t->ntensors || r.nmeta < t->nmeta)
		abort();
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		long j = tc__table_find(&r, x->name);
		const struct tc__tensor *y;

		if (j < 0)
			abort();
		y = &r.tensors[j];
		if (y->dtype != x->dtype || y->ndim != x->ndim ||
		    y->nbytes != x->nbytes ||
		    memcmp(y->shape, x->shape, x->ndim * sizeof(x->shape[0])))
			abort();
		a = malloc(x->nbytes + 1);
		if (!a || pread(out_fd, a, x->nbytes, (off_t)y->src_offset) !=
				  (ssize_t)x->nbytes)
			abort();
		b = (uint8_t *)data + x->src_offset;
		if (memcmp(a, b, x->nbytes))
			abort();
		free(a);
	}
	tc__table_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tc__table t;
	const char *why;
	char err[512];
	uint64_t n = 0;

	if (size < 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | data[i];
	if (n > size - 8)
		n = size - 8;
	tc__table_init(&t);
	if (tc__st_parse_header((const char *)data + 8, (size_t)n, size, 0, &t,
				err, sizeof(err)) == 0) {
		why = st_oracle_check((const char *)data + 8, (size_t)n, &t);
		if (why) {
			fprintf(stderr, "oracle: %s\n", why);
			abort();
		}
		roundtrip(data, &t);
	} else if (t.ntensors || t.nmeta) {
		abort(); /* a failed parse leaves the table empty */
	}
	tc__table_release(&t);
	return 0;
}
