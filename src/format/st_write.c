/*
 * st_write.c - the safetensors writer.
 *
 * Output matches the reference writer byte for byte: tensors ordered by
 * dtype (the reference enum order, descending, which is alignment order)
 * then by name, a compact JSON header escaped as serde_json escapes, padded
 * with spaces to a multiple of 8 bytes, then the data with no holes.  The
 * table is validated first (the writer is also fed by clients), so the
 * output always passes tc__st_parse_header.
 *
 * tc__st_write_path publishes atomically: write a fresh O_EXCL|O_NOFOLLOW
 * temporary beside path (a random name; mode 0666 & ~umask), fsync it,
 * rename it to path (RENAME_NOREPLACE unless forced), fsync the folder.
 * It never replaces anything but a regular file, and that only when
 * forced.  An fsync error is returned,
 * never retried: after a writeback error the pages may be gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/compiler.h"
#include "common/io.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

/* Position of each dtype in the reference Dtype enum (formats.md 1.4). */
static const uint8_t dtype_rank[TC_DTYPE__COUNT] = {
	[TC_DTYPE_BOOL] = 0,	     [TC_DTYPE_F4] = 1,
	[TC_DTYPE_F6_E2M3] = 2,	     [TC_DTYPE_F6_E3M2] = 3,
	[TC_DTYPE_U8] = 4,	     [TC_DTYPE_I8] = 5,
	[TC_DTYPE_F8_E5M2] = 6,	     [TC_DTYPE_F8_E4M3] = 7,
	[TC_DTYPE_F8_E8M0] = 8,	     [TC_DTYPE_F8_E4M3FNUZ] = 9,
	[TC_DTYPE_F8_E5M2FNUZ] = 10, [TC_DTYPE_I16] = 11,
	[TC_DTYPE_U16] = 12,	     [TC_DTYPE_F16] = 13,
	[TC_DTYPE_BF16] = 14,	     [TC_DTYPE_I32] = 15,
	[TC_DTYPE_U32] = 16,	     [TC_DTYPE_F32] = 17,
	[TC_DTYPE_C64] = 18,	     [TC_DTYPE_F64] = 19,
	[TC_DTYPE_I64] = 20,	     [TC_DTYPE_U64] = 21,
};

static int cmp_write_order(const void *a, const void *b, void *arg)
{
	const struct tc__tensor *t = arg;
	const struct tc__tensor *x = &t[*(const uint32_t *)a];
	const struct tc__tensor *y = &t[*(const uint32_t *)b];

	if (dtype_rank[x->dtype] != dtype_rank[y->dtype])
		return dtype_rank[x->dtype] > dtype_rank[y->dtype] ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b, void *arg)
{
	const struct tc__tensor *t = arg;

	return strcmp(t[*(const uint32_t *)a].name,
		      t[*(const uint32_t *)b].name);
}

static int cmp_key(const void *a, const void *b, void *arg)
{
	const struct tc__meta *m = arg;

	return strcmp(m[*(const uint32_t *)a].key, m[*(const uint32_t *)b].key);
}

/* ------------------------------------------------------------- validation */

static int check_string(const char *s, size_t max, const char *what, char *err,
			size_t errlen)
{
	char q[TC_FMT_QUOTE];
	size_t n;

	if (!s) {
		tc__fmt_err(err, errlen, "%s is NULL", what);
		return TC_EINVAL;
	}
	n = strlen(s);
	if (n > max) {
		tc__fmt_err(err, errlen,
			    "%s '%s' is %zu bytes, longer than %zu", what,
			    tc__fmt_quote(q, s, n), n, max);
		return TC_ELIMIT;
	}
	if (!tc__fmt_utf8_valid(s, n)) {
		tc__fmt_err(err, errlen, "%s '%s' is not valid UTF-8", what,
			    tc__fmt_quote(q, s, n));
		return TC_EINVAL;
	}
	return 0;
}

static int check_table(const struct tc__table *t, char *err, size_t errlen)
{
	char q[TC_FMT_QUOTE];
	uint32_t *ord;
	int ret = 0;

	if (t->ntensors > TC_MAX_TENSORS || t->nmeta > TC_MAX_META) {
		tc__fmt_err(
			err, errlen,
			"table has %u tensors and %u metadata entries (caps %d, %d)",
			t->ntensors, t->nmeta, TC_MAX_TENSORS, TC_MAX_META);
		return TC_ELIMIT;
	}
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		uint64_t n;

		ret = check_string(x->name, TC_MAX_NAME, "tensor name", err,
				   errlen);
		if (ret < 0)
			return ret;
		q[0] = '\0';
		tc__fmt_quote(q, x->name, strlen(x->name));
		if (!x->name[0] || !strcmp(x->name, "__metadata__")) {
			tc__fmt_err(err, errlen, "invalid tensor name '%s'", q);
			return TC_EINVAL;
		}
		ret = tc__tensor_nbytes(x->dtype, x->ndim, x->shape, &n);
		if (ret < 0) {
			tc__fmt_err(
				err, errlen,
				"tensor '%s': bad dtype %u or shape of rank %u",
				q, x->dtype, x->ndim);
			return TC_EINVAL;
		}
		if (n != x->nbytes) {
			tc__fmt_err(
				err, errlen,
				"tensor '%s': nbytes is %llu but %s of that shape needs %llu",
				q, (unsigned long long)x->nbytes,
				tc_dtype_name(x->dtype), (unsigned long long)n);
			return TC_EINVAL;
		}
	}
	for (uint32_t i = 0; i < t->nmeta; i++) {
		ret = check_string(t->meta[i].key, TC_MAX_META_BYTES,
				   "metadata key", err, errlen);
		if (ret == 0)
			ret = check_string(t->meta[i].val, TC_MAX_META_BYTES,
					   "metadata value", err, errlen);
		if (ret < 0)
			return ret;
	}
	ord = tc__reallocarray(NULL, TC_MAX(t->ntensors, t->nmeta) + 1,
			       sizeof(*ord));
	if (!ord)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->ntensors; i++)
		ord[i] = i;
	qsort_r(ord, t->ntensors, sizeof(*ord), cmp_name, t->tensors);
	for (uint32_t i = 1; i < t->ntensors && !ret; i++) {
		const char *a = t->tensors[ord[i - 1]].name;

		if (!strcmp(a, t->tensors[ord[i]].name)) {
			tc__fmt_err(err, errlen, "duplicate tensor '%s'",
				    tc__fmt_quote(q, a, strlen(a)));
			ret = TC_EINVAL;
		}
	}
	for (uint32_t i = 0; i < t->nmeta && !ret; i++)
		ord[i] = i;
	if (!ret)
		qsort_r(ord, t->nmeta, sizeof(*ord), cmp_key, t->meta);
	for (uint32_t i = 1; i < t->nmeta && !ret; i++) {
		const char *a = t->meta[ord[i - 1]].key;

		if (!strcmp(a, t->meta[ord[i]].key)) {
			tc__fmt_err(err, errlen, "duplicate metadata key '%s'",
				    tc__fmt_quote(q, a, strlen(a)));
			ret = TC_EINVAL;
		}
	}
	tc__free(ord);
	return ret;
}

/* ------------------------------------------------------------------ header */

/* A JSON string as serde_json writes it: \" \\ \b \f \n \r \t, other C0
 * controls as \u00xx, everything else (UTF-8, '/', DEL) as is. */
static void put_str(struct tc__buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run = s;

	tc__buf_put_u8(b, '"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char e[6] = { '\\', 0, '0', '0', 0, 0 };
		size_t n = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		tc__buf_put(b, run, (size_t)(s - run));
		run = s + 1;
		switch (c) {
		case '"':
		case '\\':
			e[1] = (char)c;
			break;
		case '\b':
			e[1] = 'b';
			break;
		case '\f':
			e[1] = 'f';
			break;
		case '\n':
			e[1] = 'n';
			break;
		case '\r':
			e[1] = 'r';
			break;
		case '\t':
			e[1] = 't';
			break;
		default:
			e[1] = 'u';
			e[4] = hex[c >> 4];
			e[5] = hex[c & 15];
			n = 6;
		}
		tc__buf_put(b, e, n);
	}
	tc__buf_put(b, run, (size_t)(s - run));
	tc__buf_put_u8(b, '"');
}

static void put_u64(struct tc__buf *b, uint64_t v)
{
	char d[24];
	int n = snprintf(d, sizeof(d), "%llu", (unsigned long long)v);

	tc__buf_put(b, d, (size_t)n);
}

static void put_lit(struct tc__buf *b, const char *s)
{
	tc__buf_put(b, s, strlen(s));
}

/* Prefix and header into b, in the order `ord`. */
static int build_header(struct tc__buf *b, const struct tc__table *t,
			const uint32_t *ord, char *err, size_t errlen)
{
	uint64_t off = 0, n;
	bool have_format = false;

	for (uint32_t i = 0; i < t->nmeta; i++)
		if (!strcmp(t->meta[i].key, "format"))
			have_format = true;
	tc__buf_put_u64(b, 0); /* patched below */
	put_lit(b, "{\"__metadata__\":{");
	if (!have_format)
		put_lit(b, "\"format\":\"pt\"");
	for (uint32_t i = 0; i < t->nmeta; i++) {
		if (i || !have_format)
			tc__buf_put_u8(b, ',');
		put_str(b, t->meta[i].key);
		tc__buf_put_u8(b, ':');
		put_str(b, t->meta[i].val);
	}
	tc__buf_put_u8(b, '}');
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[ord[i]];

		tc__buf_put_u8(b, ',');
		put_str(b, x->name);
		put_lit(b, ":{\"dtype\":\"");
		put_lit(b, tc_dtype_name(x->dtype));
		put_lit(b, "\",\"shape\":[");
		for (uint32_t d = 0; d < x->ndim; d++) {
			if (d)
				tc__buf_put_u8(b, ',');
			put_u64(b, x->shape[d]);
		}
		put_lit(b, "],\"data_offsets\":[");
		put_u64(b, off);
		tc__buf_put_u8(b, ',');
		if (__builtin_add_overflow(off, x->nbytes, &off)) {
			tc__fmt_err(err, errlen, "data size overflows 64 bits");
			return TC_ELIMIT;
		}
		put_u64(b, off);
		put_lit(b, "]}");
	}
	tc__buf_put_u8(b, '}');
	/* An append after OOM adds nothing: check before the padding loop. */
	if (b->oom)
		return -ENOMEM;
	while ((b->len - 8) % 8 && !b->oom)
		tc__buf_put_u8(b, ' ');
	if (b->oom)
		return -ENOMEM;
	n = b->len - 8;
	if (n > TC_ST_MAX_HEADER) {
		tc__fmt_err(
			err, errlen,
			"header would be %llu bytes, more than the %llu-byte cap",
			(unsigned long long)n,
			(unsigned long long)TC_ST_MAX_HEADER);
		return TC_ELIMIT;
	}
	for (int i = 0; i < 8; i++)
		b->data[i] = (uint8_t)(n >> (8 * i));
	return 0;
}

/* ------------------------------------------------------------------- output */

static int write_full(int fd, const void *p, uint64_t n)
{
	const char *c = p;

	while (n) {
		size_t want = n < TC_FMT_IO_MAX ? (size_t)n : TC_FMT_IO_MAX;
		ssize_t w = write(fd, c, want);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		c += w;
		n -= (uint64_t)w;
	}
	return 0;
}

/* n bytes of the byte space at `off`: from base, or from src_fd's file. */
static int write_range(int fd, const void *base, int src_fd, uint64_t off,
		       uint64_t n)
{
	if (base)
		return write_full(fd, (const char *)base + off, n);
	return tc__copy_fd(fd, src_fd, off, n);
}

static int write_fd_any(int fd, const struct tc__table *t, const void *base,
			int src_fd, char *err, size_t errlen)
{
	struct tc__buf b = TC_BUF_INIT;
	uint64_t run = 0, runlen = 0;
	uint32_t *ord;
	int ret;

	tc__fmt_err(err, errlen, "no error");
	ret = check_table(t, err, errlen);
	if (ret < 0)
		goto out_report_nomem;
	ord = tc__reallocarray(NULL, t->ntensors + 1, sizeof(*ord));
	if (!ord) {
		ret = -ENOMEM;
		goto out_report_nomem;
	}
	for (uint32_t i = 0; i < t->ntensors; i++)
		ord[i] = i;
	qsort_r(ord, t->ntensors, sizeof(*ord), cmp_write_order, t->tensors);
	ret = build_header(&b, t, ord, err, errlen);
	if (ret < 0)
		goto out_free_header;
	ret = write_full(fd, b.data, b.len);
	/* Data in header order; tensors adjacent in the byte space go out
	 * in one write (a table from the parser is usually one run). */
	for (uint32_t i = 0; i < t->ntensors && ret == 0; i++) {
		const struct tc__tensor *x = &t->tensors[ord[i]];

		if (!x->nbytes)
			continue;
		if (runlen && x->offset == run + runlen) {
			runlen += x->nbytes;
			continue;
		}
		if (runlen)
			ret = write_range(fd, base, src_fd, run, runlen);
		run = x->offset;
		runlen = x->nbytes;
	}
	if (ret == 0 && runlen)
		ret = write_range(fd, base, src_fd, run, runlen);
	if (ret < 0 && ret != -ENOMEM)
		tc__fmt_err(err, errlen, "cannot write: %s", tc_strerror(ret));
out_free_header:
	tc__free(ord);
	tc__buf_release(&b);
out_report_nomem:
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "out of memory writing a header");
	return ret;
}

int tc__st_write_fd(int fd, const struct tc__table *t, const void *base,
		    char *err, size_t errlen)
{
	return write_fd_any(fd, t, base, -1, err, errlen);
}

int tc__st_write_fd_from(int fd, const struct tc__table *t, int src_fd,
			 char *err, size_t errlen)
{
	return write_fd_any(fd, t, NULL, src_fd, err, errlen);
}

/* fsync the folder holding `path`, so the rename itself is durable. */
static int fsync_parent(const char *path, char *err, size_t errlen)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, ret = 0;

	if (!slash)
		dir = tc__strdup(".");
	else
		dir = tc__strndup(path,
				  slash == path ? 1 : (size_t)(slash - path));
	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open folder '%s': %s", dir,
			    tc_strerror(ret));
		goto out_free_dir;
	}
	/* Some filesystems cannot fsync a folder (EINVAL): nothing more to
	 * do there, the rename is as durable as that filesystem makes it. */
	if (fsync(fd) < 0 && errno != EINVAL) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot fsync folder '%s': %s", dir,
			    tc_strerror(ret));
	}
	close(fd);
out_free_dir:
	tc__free(dir);
	return ret;
}

/* Refuse a target export must not replace: anything but a regular file
 * (a FIFO, a device node such as /dev/null, a folder, a symlink), and a
 * regular file unless the caller said so.  0 when absent or replaceable. */
static int check_target(const char *path, unsigned flags, char *err,
			size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		tc__fmt_err(err, errlen, "cannot inspect '%s': %s", path,
			    strerror(errno));
		return -errno;
	}
	if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen,
			    "'%s' exists and is %s; export replaces only "
			    "regular files",
			    path,
			    S_ISLNK(st.st_mode)	 ? "a symlink" :
			    S_ISDIR(st.st_mode)	 ? "a folder" :
			    S_ISFIFO(st.st_mode) ? "a FIFO" :
			    S_ISCHR(st.st_mode)	 ? "a character device" :
			    S_ISBLK(st.st_mode)	 ? "a block device" :
			    S_ISSOCK(st.st_mode) ? "a socket" :
						   "not a regular file");
		return TC_EINVAL;
	}
	if (!(flags & TC_ST_WRITE_FORCE)) {
		tc__fmt_err(err, errlen,
			    "'%s' exists; pass --force (TC_EXPORT_FORCE) to "
			    "replace it",
			    path);
		return TC_EEXIST;
	}
	return 0;
}

/*
 * A fresh temporary beside `path`, created O_EXCL|O_NOFOLLOW so that a name
 * another user planted (a file, a symlink) is never opened, only skipped;
 * the random part makes planting them all hopeless.  Mode 0666 & ~umask,
 * as any new file.  Returns the fd or -errno.
 */
static int open_temp(const char *path, char *tmp, size_t len)
{
	for (int i = 0; i < 64; i++) {
		uint64_t r = 0;
		int fd;

		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint64_t)getpid() * 2654435761u + (uint64_t)i;
		snprintf(tmp, len, "%s.tcast-%016llx.tmp", path,
			 (unsigned long long)r);
		fd = open(tmp,
			  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			  0666);
		if (fd >= 0 || errno != EEXIST)
			return fd >= 0 ? fd : -errno;
	}
	return -EEXIST;
}

static int write_path_any(const char *path, const struct tc__table *t,
			  const void *base, int src_fd, unsigned flags,
			  char *err, size_t errlen)
{
	size_t len = strlen(path) + 40;
	char *tmp;
	int fd, ret;

	ret = check_target(path, flags, err, errlen);
	if (ret < 0)
		return ret;
	tmp = tc__malloc(len);
	if (!tmp) {
		tc__fmt_err(err, errlen, "out of memory writing '%s'", path);
		return -ENOMEM;
	}
	fd = open_temp(path, tmp, len);
	if (fd < 0) {
		ret = fd;
		tc__fmt_err(err, errlen,
			    "cannot create a temporary file beside '%s': %s",
			    path, tc_strerror(ret));
		goto out_free_tmp;
	}
	ret = write_fd_any(fd, t, base, src_fd, err, errlen);
	if (ret < 0) {
		tc__fmt_prefix(err, errlen, "%s", path);
		goto out_close;
	}
	if (fsync(fd) < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot fsync '%s': %s", path,
			    tc_strerror(ret));
		goto out_close;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot close '%s': %s", path,
			    tc_strerror(ret));
		goto out_unlink;
	}
	fd = -1;
	/* Without force, never clobber: a file that appeared since the check
	 * stays (RENAME_NOREPLACE is atomic).  With force, check again just
	 * before: what is there must still be a regular file. */
	if (!(flags & TC_ST_WRITE_FORCE)) {
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) <
		    0) {
			ret = -errno;
			if (ret == -EEXIST)
				check_target(path, flags, err, errlen);
			else
				tc__fmt_err(err, errlen,
					    "cannot create '%s': %s", path,
					    tc_strerror(ret));
			ret = ret == -EEXIST ? TC_EEXIST : ret;
			goto out_unlink;
		}
	} else {
		ret = check_target(path, flags, err, errlen);
		if (ret < 0)
			goto out_unlink;
		if (rename(tmp, path) < 0) {
			ret = -errno;
			tc__fmt_err(err, errlen, "cannot replace '%s': %s",
				    path, tc_strerror(ret));
			goto out_unlink;
		}
	}
	ret = fsync_parent(path, err, errlen);
	goto out_free_tmp;

out_close:
	close(fd);
out_unlink:
	unlink(tmp);
out_free_tmp:
	tc__free(tmp);
	return ret;
}

int tc__st_write_path(const char *path, const struct tc__table *t,
		      const void *base, unsigned flags, char *err,
		      size_t errlen)
{
	return write_path_any(path, t, base, -1, flags, err, errlen);
}

int tc__st_write_path_from(const char *path, const struct tc__table *t,
			   int src_fd, unsigned flags, char *err, size_t errlen)
{
	return write_path_any(path, t, NULL, src_fd, flags, err, errlen);
}
