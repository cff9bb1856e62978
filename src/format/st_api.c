/*
 * st_api.c - the public checks of include/tcast/st.h.
 *
 * Thin: open the source (which validates everything), summarise, free.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tcast/st.h"

/* What a verify found. */
struct summary {
	uint32_t files;
	uint32_t tensors;
	uint64_t bytes;	 /* tensor bytes, saturating */
	uint32_t dtypes; /* bit per enum tc_dtype */
};

static int verify(const char *path, struct summary *sum, char *err,
		  size_t errlen)
{
	struct tc__source *s;
	int ret;

	memset(sum, 0, sizeof(*sum));
	if (!path) {
		tc__fmt_err(err, errlen, "path is NULL");
		return TC_EINVAL;
	}
	ret = tc__source_open(path, &s, err, errlen);
	if (ret < 0)
		return ret;
	sum->files = s->nfiles;
	sum->tensors = s->table.ntensors;
	for (uint32_t i = 0; i < s->table.ntensors; i++) {
		const struct tc__tensor *x = &s->table.tensors[i];

		if (__builtin_add_overflow(sum->bytes, x->nbytes, &sum->bytes))
			sum->bytes = UINT64_MAX;
		sum->dtypes |= 1u << x->dtype;
	}
	tc__source_free(s);
	return 0;
}

TC_API int tc_st_verify(const char *path, char *msg, size_t msglen)
{
	char err[TC_FMT_ERRLEN * 2], num[32], dts[TC_DTYPE__COUNT * 12];
	struct summary sum;
	size_t o = 0;
	int ret;

	ret = verify(path, &sum, err, sizeof(err));
	if (ret < 0) {
		tc__fmt_err(msg, msglen, "%s", err);
		return ret;
	}
	dts[0] = '\0';
	for (int d = 0; d < TC_DTYPE__COUNT; d++)
		if (sum.dtypes & (1u << d))
			o += (size_t)snprintf(dts + o, sizeof(dts) - o, "%s%s",
					      o ? "," : "", tc_dtype_name(d));
	tc__fmt_err(msg, msglen,
		    "ok: %s: %u file%s, %u tensor%s, %s byte%s, dtypes %s",
		    path, sum.files, sum.files == 1 ? "" : "s", sum.tensors,
		    sum.tensors == 1 ? "" : "s",
		    tc__fmt_thousands(num, sizeof(num), sum.bytes),
		    sum.bytes == 1 ? "" : "s", o ? dts : "none");
	return 0;
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD. */
static void put_json_str(struct tc__buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *p = (const uint8_t *)s;
	size_t n = strlen(s), i = 0, k;

	tc__buf_put_u8(b, '"');
	while (i < n) {
		uint8_t c = p[i];

		if (c == '"' || c == '\\') {
			tc__buf_put_u8(b, '\\');
			tc__buf_put_u8(b, c);
			i++;
		} else if (c < 0x20) {
			char e[6] = { '\\', 'u',	 '0',
				      '0',  hex[c >> 4], hex[c & 15] };

			tc__buf_put(b, e, sizeof(e));
			i++;
		} else if (c < 0x80) {
			tc__buf_put_u8(b, c);
			i++;
		} else if ((k = tc__fmt_utf8_seq(p + i, n - i))) {
			tc__buf_put(b, p + i, k);
			i += k;
		} else {
			tc__buf_put(b, "\\ufffd", 6);
			i++;
		}
	}
	tc__buf_put_u8(b, '"');
}

TC_API int tc_st_verify_json(const char *path, char *json, size_t jsonlen)
{
	char err[TC_FMT_ERRLEN * 2];
	struct tc__buf b = TC_BUF_INIT;
	struct summary sum;
	bool first = true;
	int ret;

	ret = verify(path, &sum, err, sizeof(err));
	tc__buf_printf(&b, "{\"path\":");
	put_json_str(&b, path ? path : "");
	if (ret == 0) {
		tc__buf_printf(
			&b,
			",\"ok\":true,\"files\":%u,\"tensors\":%u,\"bytes\":%llu,\"dtypes\":[",
			sum.files, sum.tensors, (unsigned long long)sum.bytes);
		for (int d = 0; d < TC_DTYPE__COUNT; d++) {
			if (!(sum.dtypes & (1u << d)))
				continue;
			tc__buf_printf(&b, "%s\"%s\"", first ? "" : ",",
				       tc_dtype_name(d));
			first = false;
		}
		tc__buf_printf(&b, "]}");
	} else {
		tc__buf_printf(
			&b,
			",\"ok\":false,\"error\":\"%s\",\"code\":%d,\"message\":",
			tc_err_name(ret), ret);
		put_json_str(&b, err);
		tc__buf_put_u8(&b, '}');
	}
	if (b.oom) {
		ret = -ENOMEM;
		tc__fmt_err(json, jsonlen, "%s", "");
	} else if (b.len >= jsonlen) {
		ret = -ERANGE;
		tc__fmt_err(json, jsonlen, "%s", "");
	} else {
		memcpy(json, b.data, b.len);
		json[b.len] = '\0';
	}
	tc__buf_release(&b);
	return ret;
}
