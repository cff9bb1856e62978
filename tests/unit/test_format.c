/*
 * test_format.c - src/format: safetensors headers, HF index folders, the
 * writer and tc_st_verify.
 *
 * Valid files are checked against tests/data/manifest.json (names, dtypes,
 * shapes, sizes and the SHA-256 of each tensor's bytes, read with pread).
 * Every hostile vector of tests/data/hostile/README.md must be rejected with
 * its code and a message naming the offending thing; cases git cannot hold
 * (FIFOs, sockets, big inputs) are built here.  Allocation failures are
 * injected at every allocation, jansson's included, until each operation
 * succeeds; run under ASan to catch leaks on those paths.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "common/alloc.h"
#include "format/format.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tcast/st.h"

#include "../fuzz/st_oracle.h"

/* The CLI verb is argument parsing over tc_st_verify: test it here, with
 * the CLI's shared helpers (cli.c: errors, escaping, --json output). */
#include "../../src/cli/cli.c"
#include "../../src/cli/cmd_verify.c"

#define DATA TC_TEST_DATA
#define MSG  2048

/* ---------------------------------------------------------------- helpers */

static char *tmpdir(void)
{
	char *d = strdup("/tmp/tc-format.XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static int rm_one(const char *p, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	chmod(p, 0700);
	return remove(p);
}

static void rmtree(char *d)
{
	nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(d);
}

static char *path_join(const char *a, const char *b)
{
	char *p = malloc(strlen(a) + strlen(b) + 2);

	assert_non_null(p);
	sprintf(p, "%s/%s", a, b);
	return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < mdlen; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* A safetensors file: 8-byte N, header, `ndata` zero bytes. */
static void write_st(const char *path, const char *header, size_t ndata)
{
	size_t n = strlen(header);
	uint8_t *b = calloc(1, 8 + n + ndata + 1);

	assert_non_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)n >> (8 * i));
	memcpy(b + 8, header, n);
	write_file(path, b, 8 + n + ndata);
	free(b);
}

/* Parse a header held in memory whose file would be exactly header + data. */
static int parse_mem(const char *hdr, size_t len, uint64_t ndata,
		     struct tc__table *t, char *err)
{
	tc__table_init(t);
	return tc__st_parse_header(hdr, len, 8 + len + ndata, 0, t, err, MSG);
}

static const char *torch_to_st(const char *torch)
{
	static const char *const map[][2] = {
		{ "bool", "BOOL" },
		{ "uint8", "U8" },
		{ "int8", "I8" },
		{ "float8_e5m2", "F8_E5M2" },
		{ "float8_e4m3fn", "F8_E4M3" },
		{ "int16", "I16" },
		{ "uint16", "U16" },
		{ "float16", "F16" },
		{ "bfloat16", "BF16" },
		{ "int32", "I32" },
		{ "uint32", "U32" },
		{ "float32", "F32" },
		{ "float64", "F64" },
		{ "int64", "I64" },
		{ "uint64", "U64" },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(map[i][0], torch))
			return map[i][1];
	fail_msg("unknown torch dtype '%s' in manifest", torch);
	return NULL;
}

static json_t *manifest(void)
{
	json_error_t e;
	json_t *m = json_load_file(DATA "/manifest.json", 0, &e);

	if (!m)
		fail_msg("manifest.json: %s", e.text);
	return m;
}

/*
 * The source at `path` holds exactly the tensors of manifest[key]: names,
 * dtypes, shapes, sizes, file, and the SHA-256 of the bytes read with
 * pread at src_offset.  Also checks the source invariant: tensors ordered
 * by (src_file, src_offset), contiguous, each file's data fully covered.
 */
static void check_against_manifest(const char *path, const char *key)
{
	char err[MSG], hex[65];
	struct tc__source *s;
	json_t *m = manifest(), *set = json_object_get(m, key);
	uint64_t expect_off = 0;
	uint32_t file = UINT32_MAX;
	int ret;

	assert_non_null(set);
	ret = tc__source_open(path, &s, err, sizeof(err));
	if (ret)
		fail_msg("%s: %s", path, err);
	assert_int_equal(s->table.ntensors, json_object_size(set));
	for (uint32_t i = 0; i < s->table.ntensors; i++) {
		const struct tc__tensor *x = &s->table.tensors[i];
		json_t *e = json_object_get(set, x->name), *sh;
		const struct tc__source_file *f = &s->files[x->src_file];
		const char *base = strrchr(f->name, '/');
		char *buf;

		if (!e)
			fail_msg("tensor '%s' not in the manifest", x->name);
		assert_string_equal(tc_dtype_name(x->dtype),
				    torch_to_st(json_string_value(
					    json_object_get(e, "dtype"))));
		sh = json_object_get(e, "shape");
		assert_int_equal(x->ndim, json_array_size(sh));
		for (uint32_t d = 0; d < x->ndim; d++)
			assert_int_equal(
				x->shape[d],
				json_integer_value(json_array_get(sh, d)));
		assert_int_equal(x->nbytes, json_integer_value(json_object_get(
						    e, "nbytes")));
		assert_string_equal(
			base ? base + 1 : f->name,
			json_string_value(json_object_get(e, "file")));
		assert_int_equal(x->offset, 0);
		/* ordering and contiguity */
		if (x->src_file != file) {
			assert_true(file == UINT32_MAX || x->src_file > file);
			if (file != UINT32_MAX)
				assert_int_equal(expect_off,
						 s->files[file].size);
			file = x->src_file;
			expect_off = x->src_offset;
		}
		assert_int_equal(x->src_offset, expect_off);
		expect_off += x->nbytes;
		buf = malloc(x->nbytes + 1);
		assert_int_equal(pread(f->fd, buf, x->nbytes,
				       (off_t)x->src_offset),
				 (ssize_t)x->nbytes);
		sha256_hex(buf, x->nbytes, hex);
		free(buf);
		assert_string_equal(
			hex, json_string_value(json_object_get(e, "sha256")));
	}
	assert_int_equal(expect_off, s->files[file].size);
	tc__source_free(s);
	json_decref(m);
}

/* ------------------------------------------------------------ valid data */

static void test_format__dtypes_file(void **state)
{
	struct tc__source *s;
	char err[MSG];

	(void)state;
	check_against_manifest(DATA "/dtypes.safetensors",
			       "dtypes.safetensors");
	assert_int_equal(tc__source_open(DATA "/dtypes.safetensors", &s, err,
					 sizeof(err)),
			 0);
	assert_int_equal(s->nfiles, 1);
	assert_int_equal(s->table.nmeta, 2);
	assert_string_equal(s->table.meta[0].key, "format");
	assert_string_equal(s->table.meta[0].val, "pt");
	assert_string_equal(s->table.meta[1].key, "note");
	assert_string_equal(s->table.meta[1].val, "dtype coverage");
	tc__source_free(s);
}

static void test_format__many_tensors(void **state)
{
	(void)state;
	check_against_manifest(DATA "/many-tensors.safetensors",
			       "many-tensors.safetensors");
}

static void test_format__tiny_llama(void **state)
{
	struct tc__source *s;
	char err[MSG], name[64];

	(void)state;
	check_against_manifest(DATA "/tiny-llama", "tiny-llama");
	assert_int_equal(
		tc__source_open(DATA "/tiny-llama", &s, err, sizeof(err)), 0);
	assert_int_equal(s->nfiles, 6);
	/* Files in name order whatever the weight_map order (it starts with
	 * lm_head, in shard 6). */
	for (uint32_t i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "model-%05u-of-00006.safetensors",
			 i + 1);
		assert_string_equal(s->files[i].name, name);
	}
	assert_int_equal(s->table.nmeta, 1);
	assert_string_equal(s->table.meta[0].key, "format");
	assert_string_equal(s->display, DATA "/tiny-llama");
	tc__source_free(s);
}

/* A tc__source_open_fd caller keeps its fd; the source works on its own. */
static void test_format__open_fd(void **state)
{
	struct tc__source *s;
	char err[MSG];
	int fd = open(DATA "/tiny-llama", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(tc__source_open_fd(fd, "tl", &s, err, sizeof(err)), 0);
	close(fd);
	assert_int_equal(s->table.ntensors, 30);
	tc__source_free(s);
	tc__source_free(NULL);
}

/* snapshots/<commit>/<file> -> ../../blobs/<sha256> as huggingface_hub
 * lays out its cache; both the snapshot and the repository folder open. */
static void test_format__hf_cache(void **state)
{
	static const char commit[] = "0123456789abcdef0123456789abcdef01234567";
	static const char *const files[] = {
		"model.safetensors.index.json",
		"model-00001-of-00006.safetensors",
		"model-00002-of-00006.safetensors",
		"model-00003-of-00006.safetensors",
		"model-00004-of-00006.safetensors",
		"model-00005-of-00006.safetensors",
		"model-00006-of-00006.safetensors",
		"config.json",
	};
	char *root = tmpdir(), *repo, *p, *q, hex[65], target[128], err[MSG];
	struct tc__source *s;
	size_t len;

	(void)state;
	repo = path_join(root, "models--t--tiny");
	assert_int_equal(mkdir(repo, 0755), 0);
	p = path_join(repo, "blobs");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = path_join(repo, "refs");
	assert_int_equal(mkdir(p, 0755), 0);
	q = path_join(p, "main");
	write_file(q, commit, 40);
	free(q);
	free(p);
	p = path_join(repo, "snapshots");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = path_join(repo,
		      "snapshots/0123456789abcdef0123456789abcdef01234567");
	assert_int_equal(mkdir(p, 0755), 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *src = path_join(DATA "/tiny-llama", files[i]);
		char *content = slurp(src, &len), *blob, *link;

		sha256_hex(content, len, hex);
		snprintf(target, sizeof(target), "blobs/%s", hex);
		blob = path_join(repo, target);
		write_file(blob, content, len);
		snprintf(target, sizeof(target), "../../blobs/%s", hex);
		link = path_join(p, files[i]);
		assert_int_equal(symlink(target, link), 0);
		free(link);
		free(blob);
		free(content);
		free(src);
	}
	check_against_manifest(p, "tiny-llama");
	assert_int_equal(tc__source_open(repo, &s, err, sizeof(err)), 0);
	assert_int_equal(s->table.ntensors, 30);
	assert_non_null(strstr(s->files[0].name, "model-00001"));
	tc__source_free(s);

	/* A dangling blob link is reported, naming the shard. */
	q = path_join(p, "model-00003-of-00006.safetensors");
	assert_int_equal(unlink(q), 0);
	assert_int_equal(symlink("../../blobs/missing", q), 0);
	assert_int_equal(tc__source_open(p, &s, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "model-00003-of-00006.safetensors"));
	assert_null(s);
	/* A ref that is not a commit id is not followed. */
	free(q);
	q = path_join(repo, "refs/main");
	write_file(q, "../../../etc\n", 13);
	assert_int_equal(tc__source_open(repo, &s, err, sizeof(err)),
			 TC_ENOTFOUND);
	assert_non_null(strstr(err, "does not hold a commit id"));
	free(q);
	free(p);
	free(repo);
	rmtree(root);
}

/* -------------------------------------------------------------- hostile */

static const char *const required_items[] = {
	"1.1.1",  "1.1.2",  "1.1.3",  "1.1.4",	"1.1.5",  "1.1.6",  "1.1.7",
	"1.1.8",  "1.1.9",  "1.1.10", "1.1.11", "1.1.12", "1.1.13", "1.1.14",
	"1.1.15", "1.1.16", "1.1.18", "1.1.19", "1.1.20", "1.1.21", "1.1.22",
	"1.1.23", "1.1.24", "1.1.25", "1.2.1",	"1.2.2",  "1.2.3",  "1.2.4",
	"1.2.5",  "1.2.6",  "1.2.7",
};

/* Every row of tests/data/hostile/README.md: `path` | CODE | `fragment`. */
static void test_format__hostile_corpus(void **state)
{
	char line[4096], msg[MSG], path[PATH_MAX];
	bool seen[sizeof(required_items) / sizeof(required_items[0])] = { 0 };
	FILE *f = fopen(DATA "/hostile/README.md", "r");
	int rows = 0, bad = 0;

	(void)state;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *rel, *code, *frag, *item, *e;
		int ret;

		if (strncmp(line, "| `", 3))
			continue;
		rel = line + 3;
		e = strchr(rel, '`');
		assert_non_null(e);
		*e = '\0';
		code = e + 4;
		e = strstr(code, " | `");
		assert_non_null(e);
		*e = '\0';
		frag = e + 4;
		e = strstr(frag, "` | ");
		assert_non_null(e);
		*e = '\0';
		item = e + 4;
		e = strstr(item, " | ");
		assert_non_null(e);
		*e = '\0';
		for (size_t i = 0; i < sizeof(seen); i++)
			if (!strcmp(item, required_items[i]))
				seen[i] = true;
		snprintf(path, sizeof(path), DATA "/hostile/%s", rel);
		ret = tc_st_verify(path, msg, sizeof(msg));
		rows++;
		if (strcmp(tc_err_name(ret), code) || !strstr(msg, frag)) {
			print_error("%s: want %s `%s`\n     got %s `%s`\n", rel,
				    code, frag, tc_err_name(ret), msg);
			bad++;
		}
	}
	fclose(f);
	assert_true(rows > 100);
	for (size_t i = 0; i < sizeof(seen); i++)
		if (!seen[i])
			print_error("no corpus case for item %s\n",
				    required_items[i]);
	for (size_t i = 0; i < sizeof(seen); i++)
		assert_true(seen[i]);
	assert_int_equal(bad, 0);
}

/* hostile-inputs.md 1.1.4: a sparse file exactly at the cap gets past the
 * length checks (and fails later on its NUL bytes); one byte more is
 * TC_ELIMIT, before anything is allocated. */
static void test_format__header_cap(void **state)
{
	char *d = tmpdir(), *p = path_join(d, "cap.safetensors"), err[MSG];
	struct tc__table t;
	uint64_t n, size;
	uint8_t pre[9];
	int fd, ret;

	(void)state;
	for (int k = 0; k < 2; k++) {
		n = TC_ST_MAX_HEADER + (uint64_t)k;
		for (int i = 0; i < 8; i++)
			pre[i] = (uint8_t)(n >> (8 * i));
		pre[8] = '{';
		fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, pre, 9), 9);
		assert_int_equal(ftruncate(fd, (off_t)(8 + n)), 0);
		tc__table_init(&t);
		ret = tc__st_read(fd, 0, &t, &size, err, sizeof(err));
		close(fd);
		if (k == 0) {
			assert_int_equal(ret, TC_EBADFILE);
			assert_non_null(strstr(err, "found NUL byte"));
		} else {
			assert_int_equal(ret, TC_ELIMIT);
			assert_non_null(
				strstr(err, "exceeds the 100000000-byte cap"));
		}
		assert_int_equal(t.ntensors, 0);
	}
	free(p);
	rmtree(d);
}

static void test_format__deep_nesting(void **state)
{
	static const char pre[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":";
	size_t n = 100000, len = strlen(pre) + n;
	char *h = malloc(len), err[MSG];
	struct tc__table t;

	(void)state;
	memcpy(h, pre, strlen(pre));
	memset(h + strlen(pre), '[', n);
	assert_int_equal(parse_mem(h, len, 0, &t, err), TC_EBADFILE);
	assert_non_null(strstr(err, "tensor 'a': shape: expected an integer"));
	memset(h, '[', len);
	assert_int_equal(parse_mem(h, len, 0, &t, err), TC_EBADFILE);
	free(h);
}

static void test_format__long_name(void **state)
{
	size_t n = 1 << 20;
	char *h = malloc(n + 64), err[MSG];
	struct tc__table t;
	int len;

	(void)state;
	h[0] = '{';
	h[1] = '"';
	memset(h + 2, 'x', n);
	len = (int)(n + 2);
	len += sprintf(h + len, "\":{}}");
	assert_int_equal(parse_mem(h, (size_t)len, 0, &t, err), TC_ELIMIT);
	assert_non_null(strstr(err, "is 1048576 bytes, longer than 1024"));
	assert_non_null(strstr(err, "'xxxx"));
	free(h);
}

static char *count_header(uint32_t n, size_t *len)
{
	size_t cap = (size_t)n * 64 + 16, o = 0;
	char *h = malloc(cap);

	assert_non_null(h);
	h[o++] = '{';
	for (uint32_t i = 0; i < n; i++)
		o += (size_t)sprintf(
			h + o,
			"%s\"t%u\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
			i ? "," : "", i);
	h[o++] = '}';
	*len = o;
	return h;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 1.1.17: 10^5 tensors parse in linear-ish time; past the cap is refused. */
static void test_format__count_bomb(void **state)
{
	struct tc__table t;
	char err[MSG];
	size_t len;
	char *h;
	double t0;

	(void)state;
	h = count_header(100000, &len);
	t0 = now_s();
	assert_int_equal(parse_mem(h, len, 0, &t, err), 0);
	print_message(
		"    100,000 zero-size tensors (%zu-byte header): %.1f ms\n",
		len, (now_s() - t0) * 1e3);
	assert_int_equal(t.ntensors, 100000);
	tc__table_release(&t);
	free(h);
	h = count_header(TC_MAX_TENSORS + 1, &len);
	assert_int_equal(parse_mem(h, len, 0, &t, err), TC_ELIMIT);
	assert_non_null(strstr(err, "more than 262144 tensors"));
	free(h);
}

static void test_format__rank_65536(void **state)
{
	static const char pre[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[";
	size_t o = strlen(pre);
	char *h = malloc(o + 2 * 65536 + 64), err[MSG];
	struct tc__table t;

	(void)state;
	memcpy(h, pre, o);
	for (int i = 0; i < 65536; i++) {
		h[o++] = '1';
		h[o++] = ',';
	}
	o += (size_t)sprintf(h + o - 1, "],\"data_offsets\":[0,1]}}") - 1;
	assert_int_equal(parse_mem(h, o, 1, &t, err), TC_ELIMIT);
	assert_non_null(strstr(err, "more than 16 dimensions"));
	free(h);
}

/* 1.1.18: the product that wraps to exactly end - begin. */
static void test_format__shape_wraps_to_16(void **state)
{
	static const char h[] =
		"{\"w\":{\"dtype\":\"F32\",\"shape\":[4194305,4194305,211106198978564],\"data_offsets\":[0,16]}}";
	struct tc__table t;
	char err[MSG];

	(void)state;
	/* 4194305^2 * 211106198978564 * 4 == 16 (mod 2^64) */
	assert_int_equal((uint64_t)4194305 * 4194305 * 211106198978564ull * 4,
			 16);
	assert_int_equal(parse_mem(h, strlen(h), 16, &t, err), TC_EBADFILE);
	assert_non_null(strstr(
		err,
		"tensor 'w': shape [4194305, 4194305, 211106198978564]: element count overflows"));
	assert_int_equal(t.ntensors, 0);
}

static void sigalrm(int sig)
{
	(void)sig;
	fail_msg("an open blocked (FIFO?)");
}

/* 1.1.27: what a path can be besides a file or a folder. */
static void test_format__special_files(void **state)
{
	char *d = tmpdir(), *p, msg[MSG];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sfd;

	(void)state;
	signal(SIGALRM, sigalrm);
	alarm(10);
	p = path_join(d, "fifo.safetensors");
	assert_int_equal(mkfifo(p, 0600), 0);
	assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), TC_EBADFILE);
	assert_non_null(
		strstr(msg, "fifo.safetensors' is a FIFO, not a regular file"));
	free(p);

	p = path_join(d, "sock.safetensors");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p);
	sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), -ENXIO);
	assert_non_null(strstr(msg, "cannot open '"));
	close(sfd);
	free(p);

	assert_int_equal(tc_st_verify("/dev/null", msg, sizeof(msg)),
			 TC_EBADFILE);
	assert_non_null(strstr(msg, "'/dev/null' is a character device"));

	p = path_join(d, "empty");
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), TC_ENOTFOUND);
	assert_non_null(strstr(msg, "no '*.safetensors' file"));
	free(p);

	p = path_join(d, "loop.safetensors");
	assert_int_equal(symlink("loop2.safetensors", p), 0);
	free(p);
	p = path_join(d, "loop2.safetensors");
	assert_int_equal(symlink("loop.safetensors", p), 0);
	assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), -ELOOP);
	free(p);

	p = path_join(d, "noperm.safetensors");
	write_st(p, "{}", 0);
	chmod(p, 0);
	if (geteuid() != 0) {
		assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), -EACCES);
		assert_non_null(strstr(msg, "Permission denied"));
	}
	free(p);
	alarm(0);
	rmtree(d);
}

/* A folder whose index names a shard that is `kind`. */
static void special_shard(const char *kind)
{
	static const char idx[] =
		"{\"weight_map\":{\"a\":\"model-00001-of-00001.safetensors\"}}";
	char *d = tmpdir(),
	     *p = path_join(d, "model-00001-of-00001.safetensors");
	char *ip = path_join(d, TC_IDX_NAME), msg[MSG];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sfd = -1, ret;

	write_file(ip, idx, strlen(idx));
	if (!strcmp(kind, "fifo")) {
		assert_int_equal(mkfifo(p, 0600), 0);
	} else if (!strcmp(kind, "device")) {
		assert_int_equal(symlink("/dev/zero", p), 0);
	} else {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p);
		sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)),
				 0);
	}
	alarm(10);
	ret = tc_st_verify(d, msg, sizeof(msg));
	alarm(0);
	if (!strcmp(kind, "socket")) {
		assert_int_equal(ret, -ENXIO);
		close(sfd);
	} else {
		assert_int_equal(ret, TC_EBADFILE);
		assert_non_null(strstr(
			msg,
			!strcmp(kind, "fifo") ?
				"is a FIFO, not a regular file" :
				"is a character device, not a regular file"));
	}
	assert_non_null(strstr(msg, "model-00001-of-00001.safetensors"));
	free(ip);
	free(p);
	rmtree(d);
}

static void test_format__special_shards(void **state)
{
	(void)state;
	signal(SIGALRM, sigalrm);
	special_shard("fifo");
	special_shard("device");
	special_shard("socket");
}

/* 1.2.1, as the brief lists them, straight into the index parser. */
static void test_format__index_escapes(void **state)
{
	static const char *const names[] = {
		"../x",	   "../../etc/passwd",
		"/abs",	   "sub/dir",
		".",	   "..",
		"",	   "a\\\\b.safetensors",
		"..\\\\x", "x.safetensors/",
		"/",
	};
	struct tc__index idx;
	char json[256], err[MSG];

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(json, sizeof(json), "{\"weight_map\":{\"t\":\"%s\"}}",
			 names[i]);
		assert_int_equal(tc__idx_parse(json, strlen(json), &idx, err,
					       sizeof(err)),
				 TC_EBADINDEX);
		assert_non_null(
			strstr(err, "weight_map tensor 't': shard name '"));
		assert_int_equal(idx.nshards, 0);
	}
	snprintf(
		json, sizeof(json),
		"{\"weight_map\":{\"t\":\"a.safetensors\",\"u\":\"b.safetensors\",\"v\":\"a.safetensors\"}}");
	assert_int_equal(
		tc__idx_parse(json, strlen(json), &idx, err, sizeof(err)), 0);
	assert_int_equal(idx.nshards, 2);
	assert_string_equal(idx.shards[0], "a.safetensors");
	assert_string_equal(idx.shards[1], "b.safetensors");
	assert_int_equal(idx.nentries, 3);
	assert_string_equal(idx.entries[1].tensor, "u");
	assert_int_equal(idx.entries[1].shard, 1);
	assert_int_equal(idx.entries[2].shard, 0);
	tc__idx_release(&idx);
	tc__idx_release(&idx);
}

/* 1.2.8: 10^5 shards are refused before anything is opened. */
static void test_format__many_shards(void **state)
{
	size_t cap = 100000 * 48 + 64, o = 0;
	char *j = malloc(cap), err[MSG];
	struct tc__index idx;

	(void)state;
	o += (size_t)sprintf(j, "{\"weight_map\":{");
	for (int i = 0; i < 100000; i++)
		o += (size_t)sprintf(j + o, "%s\"t%d\":\"s%d.safetensors\"",
				     i ? "," : "", i, i);
	o += (size_t)sprintf(j + o, "}}");
	assert_int_equal(tc__idx_parse(j, o, &idx, err, sizeof(err)),
			 TC_ELIMIT);
	assert_non_null(strstr(err, "more than 65536 shards"));
	free(j);
}

/* All shard fds stay open for the loader: a folder that needs more than
 * RLIMIT_NOFILE allows is refused up front, not half-opened. */
static void test_format__fd_limit(void **state)
{
	char *d = tmpdir(), *p, name[64], msg[MSG];
	struct rlimit old, low;
	size_t o = 0;
	char idx[4096];

	(void)state;
	o += (size_t)sprintf(idx, "{\"weight_map\":{");
	for (int i = 1; i <= 40; i++) {
		snprintf(name, sizeof(name), "model-%05d-of-00040.safetensors",
			 i);
		p = path_join(d, name);
		write_st(p, "{}", 0);
		free(p);
		snprintf(name, sizeof(name), "t%d", i);
		o += (size_t)sprintf(
			idx + o,
			"%s\"t%d\":\"model-%05d-of-00040.safetensors\"",
			i > 1 ? "," : "", i, i);
	}
	sprintf(idx + o, "}}");
	p = path_join(d, TC_IDX_NAME);
	write_file(p, idx, strlen(idx));
	free(p);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 80;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	assert_int_equal(tc_st_verify(d, msg, sizeof(msg)), TC_ELIMIT);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_non_null(strstr(
		msg, "40 shards need 104 open files but the limit is 80"));
	/* With the limit back, the shards themselves are read: each lacks
	 * the tensor the index lists for it. */
	assert_int_equal(tc_st_verify(d, msg, sizeof(msg)), TC_EBADINDEX);
	assert_non_null(strstr(
		msg,
		"tensor 't1' is listed for 'model-00001-of-00040.safetensors' but missing"));
	rmtree(d);
}

/* Whatever tcast accepts, jansson reads the same (tests/fuzz/st_oracle.h). */
static void check_oracle(const char *path)
{
	size_t len;
	char *f = slurp(path, &len), err[MSG];
	struct tc__table t;
	uint64_t n = 0;
	const char *why;

	if (len >= 8) {
		for (int i = 7; i >= 0; i--)
			n = n << 8 | (uint8_t)f[i];
		tc__table_init(&t);
		if (n <= len - 8 &&
		    tc__st_parse_header(f + 8, n, len, 0, &t, err,
					sizeof(err)) == 0) {
			why = st_oracle_check(f + 8, n, &t);
			if (why)
				fail_msg("%s: %s", path, why);
			tc__table_release(&t);
		}
	}
	free(f);
}

static void test_format__jansson_agrees(void **state)
{
	char line[4096], path[PATH_MAX];
	FILE *f = fopen(DATA "/hostile/README.md", "r");

	(void)state;
	check_oracle(DATA "/dtypes.safetensors");
	check_oracle(DATA "/many-tensors.safetensors");
	check_oracle(DATA "/tiny-llama/model-00004-of-00006.safetensors");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *e;

		if (strncmp(line, "| `st/", 6))
			continue;
		e = strchr(line + 3, '`');
		*e = '\0';
		snprintf(path, sizeof(path), DATA "/hostile/%s", line + 3);
		check_oracle(path);
	}
	fclose(f);
}

/* --------------------------------------------------------------- writer */

/* Small headers for the branches the corpus does not reach.  `ndata` is the
 * data section the file has after the header. */
static const struct {
	const char *hdr;
	uint64_t ndata;
	int code;
	const char *frag;
} header_cases[] = {
	/* separators and structure */
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2 2]}}", 0, TC_EBADFILE,
	  "expected ',' or ']' in shape, found '2'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0 8]}}", 8,
	  TC_EBADFILE, "expected ',', found '8'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8}}", 8,
	  TC_EBADFILE, "expected ']', found '}'" },
	{ "{\"a\":{\"dtype\":\"F32\" \"shape\":[2]}}", 0, TC_EBADFILE,
	  "tensor 'a': invalid JSON at header byte 20: expected ',' or '}', found '\"'" },
	{ "{\"a\":{dtype:1}}", 0, TC_EBADFILE,
	  "expected a field name, found 'd'" },
	{ "{\"a\":{\"dtype\" 1}}", 0, TC_EBADFILE, "expected ':', found '1'" },
	{ "{\"a\" {}}", 0, TC_EBADFILE,
	  "tensor 'a': invalid JSON at header byte 5: expected ':'" },
	{ "{\"a\":{}", 0, TC_EBADFILE, "tensor 'a': missing field 'dtype'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]} \"b\"",
	  4, TC_EBADFILE, "expected ',' or '}', found '\"'" },
	{ "{\"__metadata__\":{\"k\":\"v\" \"x\"}}", 0, TC_EBADFILE,
	  "expected ',' or '}', found '\"'" },
	{ "{\"__metadata__\":{k:1}}", 0, TC_EBADFILE,
	  "expected a __metadata__ key, found 'k'" },
	{ "{\"__metadata__\" {}}", 0, TC_EBADFILE, "expected ':', found '{'" },
	{ "{\"__metadata__\":{\"k\" \"v\"}}", 0, TC_EBADFILE,
	  "expected ':', found '\"'" },
	{ "{\"__metadata__\":{\"\\q\":\"v\"}}", 0, TC_EBADFILE,
	  "invalid escape at header byte 18" },
	{ "{\"__metadata__\":{\"k\":\"\\q\"}}", 0, TC_EBADFILE,
	  "invalid escape at header byte 22" },
	{ "{\"__metadata__\":{},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}",
	  1, TC_EBADFILE, "expected a tensor name, found '}'" },
	{ "{\"a\":{\"\\q\":1}}", 0, TC_EBADFILE, "tensor 'a': invalid escape" },
	{ "{\"a\":{\"dtype\":\"\\q\"}}", 0, TC_EBADFILE,
	  "tensor 'a': invalid escape" },
	{ "{1}", 0, TC_EBADFILE, "expected a tensor name, found '1'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[x]}}", 0, TC_EBADFILE,
	  "shape: expected an integer at header byte 29, found 'x'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[-x]}}", 0, TC_EBADFILE,
	  "shape: expected an integer at header byte 29, found '-'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2", 0, TC_EBADFILE,
	  "expected ',' or ']' in shape, found end of header" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[\x01]}}", 0, TC_EBADFILE,
	  "found byte 0x01" },
	{ "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":{}}}", 0, TC_EBADFILE,
	  "tensor 'a': data_offsets is not an array" },
	/* strings: escapes then raw bytes, cut escapes */
	{ "{\"\\n\x01\":{}}", 0, TC_EBADFILE,
	  "control character 0x01 in a string at header byte 4" },
	{ "{\"\\n\xff\":{}}", 0, TC_EBADFILE,
	  "invalid UTF-8 at header byte 4" },
	{ "{\"\\n", 0, TC_EBADFILE, "unterminated string at header byte 1" },
	{ "{\"\\", 0, TC_EBADFILE, "unterminated string at header byte 2" },
	{ "{\"\\u12", 0, TC_EBADFILE, "invalid \\u escape at header byte 2" },
	{ "{\"\\ud800\\u0041\":{}}", 0, TC_EBADFILE,
	  "unpaired surrogate escape" },
	{ "{\"\\ud800\\uDBFF\":{}}", 0, TC_EBADFILE,
	  "unpaired surrogate escape" },
	{ "{\"\\ud800\\ue000\":{}}", 0, TC_EBADFILE,
	  "unpaired surrogate escape" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1E5]}}", 0, TC_EBADFILE,
	  "shape: number at header byte 29 is not an integer" },
	{ "{\"ab", 0, TC_EBADFILE, "unterminated string at header byte 1" },
	{ "{\"a\\nb\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n"
	  "\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n"
	  "\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\":1}",
	  0, TC_EBADFILE, "entry is not an object" },
	/* limits */
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,0],\"data_offsets\":[0,0]}}",
	  0, 0, NULL },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,3],\"data_offsets\":[0,0]}}",
	  0, TC_EBADFILE, "element count overflows 64 bits" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9,
	  TC_EBADFILE,
	  "1 bytes after the last tensor (data ends at 70, file at 71)" },
	/* valid, for the success paths of each construct */
	{ " \t\r\n{ \"a\" : { \"dtype\" : \"U8\" , \"shape\" : [ 1 , 2 ] , \"data_offsets\" : [ 0 , 2 ] } , "
	  "\"__metadata__\" : { \"k\" : \"v\" , \"\" : \"\" } }  ",
	  2, 0, NULL },
	{ "{\"__metadata__\":{}}", 0, 0, NULL },
	{ "{}", 0, 0, NULL },
};

static void test_format__header_table(void **state)
{
	struct tc__table t;
	char err[MSG];
	int ret;

	(void)state;
	for (size_t i = 0; i < sizeof(header_cases) / sizeof(header_cases[0]);
	     i++) {
		const char *h = header_cases[i].hdr;

		ret = parse_mem(h, strlen(h), header_cases[i].ndata, &t, err);
		if (ret != header_cases[i].code ||
		    (header_cases[i].frag &&
		     !strstr(err, header_cases[i].frag)))
			fail_msg("case %zu `%s`: want %s `%s`, got %s `%s`", i,
				 h, tc_err_name(header_cases[i].code),
				 header_cases[i].frag ? header_cases[i].frag :
							"",
				 tc_err_name(ret), err);
		if (ret == 0) {
			assert_null(st_oracle_check(h, strlen(h), &t));
			tc__table_release(&t);
		}
		assert_int_equal(t.ntensors, 0);
	}
}

/* Escapes decode to exactly what JSON says, on both paths of the string
 * scanner (escape first, escape after a run, raw UTF-8 after an escape). */
static void test_format__escapes_decode(void **state)
{
	static const char h[] =
		"{\"\\b\\f\\n\\r\\t\\/\\\"\\\\ \\u0041\\u00e9\\u20ac\\ud83d\\ude00\\uFFFD caf\xc3\xa9\":"
		"{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		"\"\\u005f_metadata__\":{\"\\u006b\":\"\\u2603 \xe2\x98\x83\"}}";
	static const char want[] =
		"\b\f\n\r\t/\"\\ A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd caf\xc3\xa9";
	struct tc__table t;
	char err[MSG];

	(void)state;
	if (parse_mem(h, strlen(h), 1, &t, err))
		fail_msg("%s", err);
	assert_int_equal(t.ntensors, 1);
	assert_string_equal(t.tensors[0].name, want);
	assert_int_equal(t.nmeta, 1);
	assert_string_equal(t.meta[0].key, "k");
	assert_string_equal(t.meta[0].val, "\xe2\x98\x83 \xe2\x98\x83");
	assert_null(st_oracle_check(h, strlen(h), &t));
	tc__table_release(&t);
}

/* Direct callers get the same guards tc__st_read applies. */
static void test_format__parse_guards(void **state)
{
	struct tc__table t;
	char err[MSG];
	int p[2];
	uint64_t size;

	(void)state;
	tc__table_init(&t);
	t.ntensors = 1;
	assert_int_equal(tc__st_parse_header("{}", 2, 10, 0, &t, err,
					     sizeof(err)),
			 TC_EINVAL);
	tc__table_init(&t);
	assert_int_equal(tc__st_parse_header("{}", (size_t)TC_ST_MAX_HEADER + 1,
					     UINT64_MAX, 0, &t, err,
					     sizeof(err)),
			 TC_ELIMIT);
	assert_int_equal(tc__st_parse_header("{}", 2, 9, 0, &t, err,
					     sizeof(err)),
			 TC_EBADFILE);
	assert_non_null(strstr(
		err,
		"header length 2 runs past the end of the file (9 bytes)"));
	assert_int_equal(tc__st_parse_header("{}", 2, 5, 0, &t, err,
					     sizeof(err)),
			 TC_EBADFILE);
	assert_int_equal(tc__st_parse_header("{}", 2, 10, 0, &t, NULL, 0), 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(tc__st_read(p[0], 0, &t, &size, err, sizeof(err)),
			 TC_EBADFILE);
	assert_non_null(strstr(err, "not a regular file"));
	close(p[0]);
	close(p[1]);
	assert_int_equal(tc__st_read(p[0], 0, &t, &size, err, sizeof(err)),
			 -EBADF);
}

static const struct {
	const char *json;
	int code;
	const char *frag;
} index_cases[] = {
	{ "{\"weight_map\":{\"\":\"a.safetensors\"}}", TC_EBADINDEX,
	  "weight_map has an empty tensor name" },
	{ "{\"weight_map\":{\"t\":null}}", TC_EBADINDEX,
	  "weight_map tensor 't': shard is not a string" },
	{ "{\"weight_map\":{\"t\":\"a-of-2.safetensors\",\"u\":\"b-1-of-.safetensors\",\"v\":\"-1-of-1.safetensors\",\"w\":\"x1-of-1.safetensors\"}}",
	  0, NULL },
	{ "{\"weight_map\":{\"t\":\"a-00001-of-00002.safetensors\",\"u\":\"b.safetensors\"}}",
	  0, NULL },
	{ "{\"weight_map\":{\"t\":\"a-00002-of-00001.safetensors\"}}",
	  TC_EBADINDEX,
	  "shard 'a-00002-of-00001.safetensors' is numbered 2 of 1" },
	{ "{\"weight_map\":{\"t\":\"a-1234567890-of-1.safetensors\"}}", 0,
	  NULL },
	{ "{\"weight_map\":{\"t\":\"a-1-of-1234567890.safetensors\"}}", 0,
	  NULL },
	{ "{\"weight_map\":{\"t\":\"a-1-of-1x.safetensors\"}}", 0, NULL },
	{ "{\"weight_map\":{\"t\":\".safetensors\"}}", TC_EBADINDEX,
	  "does not end in '.safetensors'" },
	{ "{\"weight_map\":{\"t\":\"a\\u007f.safetensors\"}}", TC_EBADINDEX,
	  "contains a control character" },
	{ "{\"weight_map\":{\"t\":\"a.safetensors\"},\"weight_map\":{}}",
	  TC_EBADINDEX, "duplicate object key" },
	{ "{\"metadata\":{\"total_size\":1e400},\"weight_map\":{\"t\":\"a.safetensors\"}}",
	  TC_EBADINDEX, "real number overflow" },
	{ "\xef\xbb\xbf{\"weight_map\":{\"t\":\"a.safetensors\"}}",
	  TC_EBADINDEX, "invalid JSON" },
	{ "", TC_EBADINDEX, "invalid JSON" },
};

static void test_format__index_table(void **state)
{
	struct tc__index idx;
	char err[MSG], *big;
	size_t n;
	int ret;

	(void)state;
	for (size_t i = 0; i < sizeof(index_cases) / sizeof(index_cases[0]);
	     i++) {
		const char *j = index_cases[i].json;

		ret = tc__idx_parse(j, strlen(j), &idx, err, sizeof(err));
		if (ret != index_cases[i].code ||
		    (index_cases[i].frag && !strstr(err, index_cases[i].frag)))
			fail_msg("case %zu `%s`: want %s `%s`, got %s `%s`", i,
				 j, tc_err_name(index_cases[i].code),
				 index_cases[i].frag ? index_cases[i].frag : "",
				 tc_err_name(ret), err);
		tc__idx_release(&idx);
	}
	/* a 1025-byte tensor name */
	big = malloc(4096);
	n = (size_t)sprintf(big, "{\"weight_map\":{\"");
	memset(big + n, 'n', 1025);
	n += 1025;
	n += (size_t)sprintf(big + n, "\":\"a.safetensors\"}}");
	assert_int_equal(tc__idx_parse(big, n, &idx, err, sizeof(err)),
			 TC_ELIMIT);
	assert_non_null(strstr(err, "is 1025 bytes, longer than 1024"));
	free(big);
	/* value bombs are refused before jansson builds a DOM */
	n = 2 * 600000 + 64;
	big = malloc(n);
	n = (size_t)sprintf(big, "{\"x\":[");
	for (int i = 0; i < 600000; i++)
		n += (size_t)sprintf(big + n, "0,");
	n += (size_t)sprintf(big + n - 1, "]}") - 1;
	assert_int_equal(tc__idx_parse(big, n, &idx, err, sizeof(err)),
			 TC_ELIMIT);
	assert_non_null(strstr(err, "JSON values"));
	free(big);
	/* the size cap is checked before the bytes are looked at */
	big = calloc(1, (size_t)TC_IDX_MAX_BYTES + 1);
	assert_int_equal(tc__idx_parse(big, (size_t)TC_IDX_MAX_BYTES + 1, &idx,
				       err, sizeof(err)),
			 TC_ELIMIT);
	free(big);
	/* 262,145 tensors */
	n = (size_t)(TC_MAX_TENSORS + 1) * 32 + 64;
	big = malloc(n);
	n = (size_t)sprintf(big, "{\"weight_map\":{");
	for (int i = 0; i <= TC_MAX_TENSORS; i++)
		n += (size_t)sprintf(big + n, "%s\"%d\":\"a.safetensors\"",
				     i ? "," : "", i);
	n += (size_t)sprintf(big + n, "}}");
	assert_int_equal(tc__idx_parse(big, n, &idx, err, sizeof(err)),
			 TC_ELIMIT);
	assert_non_null(strstr(err, "more than 262144 tensors"));
	free(big);
}

/* Folder shapes the corpus cannot hold. */
static void test_format__folder_edges(void **state)
{
	char *d = tmpdir(), *p, name[64], msg[MSG];
	struct tc__source *s;
	int fd, pfd[2];

	(void)state;
	/* an index that is a folder */
	p = path_join(d, TC_IDX_NAME);
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(tc_st_verify(d, msg, sizeof(msg)), TC_EBADINDEX);
	assert_non_null(
		strstr(msg, "model.safetensors.index.json' is a folder"));
	assert_int_equal(rmdir(p), 0);
	/* an index over the size cap (sparse) */
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_int_equal(ftruncate(fd, (off_t)TC_IDX_MAX_BYTES + 1), 0);
	close(fd);
	assert_int_equal(tc_st_verify(d, msg, sizeof(msg)), TC_ELIMIT);
	assert_non_null(strstr(msg, "index is 67108865 bytes"));
	assert_int_equal(unlink(p), 0);
	free(p);
	/* six files and no index: the message lists four and counts the rest */
	for (int i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "f%d.safetensors", i);
		p = path_join(d, name);
		write_st(p, "{}", 0);
		free(p);
	}
	assert_int_equal(tc_st_verify(d, msg, sizeof(msg)), TC_EBADINDEX);
	assert_non_null(strstr(
		msg,
		"6 safetensors files and no 'model.safetensors.index.json'"));
	assert_non_null(strstr(
		msg,
		"'f0.safetensors', 'f1.safetensors', 'f2.safetensors', 'f3.safetensors' and 2 more"));
	/* an HF repository whose snapshot is missing */
	p = path_join(d, "repo");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = path_join(d, "repo/refs");
	assert_int_equal(mkdir(p, 0755), 0);
	free(p);
	p = path_join(d, "repo/refs/main");
	write_file(p, "0123456789abcdef0123456789abcdef01234567", 40);
	free(p);
	p = path_join(d, "repo");
	assert_int_equal(tc_st_verify(p, msg, sizeof(msg)), -ENOENT);
	assert_non_null(strstr(
		msg,
		"repo/snapshots/0123456789abcdef0123456789abcdef01234567"));
	free(p);
	/* an fd that is neither a file nor a folder; a NULL display */
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	assert_int_equal(tc__source_open_fd(pfd[0], NULL, &s, msg, sizeof(msg)),
			 TC_EBADFILE);
	assert_non_null(
		strstr(msg, "'(fd)' is a FIFO, not a regular file or folder"));
	close(pfd[0]);
	close(pfd[1]);
	assert_int_equal(tc__source_open_fd(pfd[0], "x", &s, msg, sizeof(msg)),
			 -EBADF);
	rmtree(d);
}

/* __metadata__ caps: entries, key and value sizes; growth past 8. */
static void test_format__metadata_limits(void **state)
{
	size_t cap = (size_t)TC_MAX_META_BYTES + 4096, o;
	char *h = malloc(cap + 64 * (TC_MAX_META + 2)), err[MSG];
	struct tc__table t;

	(void)state;
	for (int n = TC_MAX_META; n <= TC_MAX_META + 1; n++) {
		o = (size_t)sprintf(h, "{\"__metadata__\":{");
		for (int i = 0; i < n; i++)
			o += (size_t)sprintf(h + o, "%s\"k%d\":\"v\"",
					     i ? "," : "", i);
		o += (size_t)sprintf(h + o, "}}");
		if (n == TC_MAX_META) {
			assert_int_equal(parse_mem(h, o, 0, &t, err), 0);
			assert_int_equal(t.nmeta, TC_MAX_META);
			assert_string_equal(t.meta[TC_MAX_META - 1].key,
					    "k1023");
			tc__table_release(&t);
		} else {
			assert_int_equal(parse_mem(h, o, 0, &t, err),
					 TC_ELIMIT);
			assert_non_null(strstr(
				err,
				"__metadata__ has more than 1024 entries"));
		}
	}
	for (int key = 0; key < 2; key++) {
		o = (size_t)sprintf(h, "{\"__metadata__\":{\"");
		if (key) {
			memset(h + o, 'k', TC_MAX_META_BYTES + 1);
			o += TC_MAX_META_BYTES + 1;
			o += (size_t)sprintf(h + o, "\":\"v\"}}");
		} else {
			o += (size_t)sprintf(h + o, "k\":\"");
			memset(h + o, 'v', TC_MAX_META_BYTES + 1);
			o += TC_MAX_META_BYTES + 1;
			o += (size_t)sprintf(h + o, "\"}}");
		}
		assert_int_equal(parse_mem(h, o, 0, &t, err), TC_ELIMIT);
		assert_non_null(strstr(
			err,
			key ? "__metadata__ key 'kkk" :
			      "__metadata__ 'k': value is longer than 1048576 bytes"));
	}
	free(h);
	tc__idx_release(NULL);
}

/* Re-write a file from its parsed table; reference-written files must come
 * back byte for byte (same order, escaping, padding). */
static void roundtrip(const char *path, bool identical)
{
	char *d = tmpdir(), *out = path_join(d, "out.safetensors"), err[MSG];
	struct tc__source *s, *s2;
	size_t len, len2;
	char *orig = slurp(path, &len), *copy;
	uint64_t data_start;

	assert_int_equal(tc__source_open(path, &s, err, sizeof(err)), 0);
	data_start = s->table.ntensors ? s->table.tensors[0].src_offset : len;
	for (uint32_t i = 0; i < s->table.ntensors; i++)
		s->table.tensors[i].offset =
			s->table.tensors[i].src_offset - data_start;
	if (tc__st_write_path(out, &s->table, orig + data_start,
			      TC_ST_WRITE_FORCE, err, sizeof(err)))
		fail_msg("%s", err);
	copy = slurp(out, &len2);
	if (identical) {
		assert_int_equal(len2, len);
		assert_memory_equal(copy, orig, len);
	}
	assert_int_equal(tc__source_open(out, &s2, err, sizeof(err)), 0);
	assert_int_equal(s2->table.ntensors, s->table.ntensors);
	for (uint32_t i = 0; i < s->table.ntensors; i++) {
		const struct tc__tensor *x = &s->table.tensors[i];
		long j = tc__table_find(&s2->table, x->name);
		const struct tc__tensor *y = &s2->table.tensors[j];

		assert_true(j >= 0);
		assert_int_equal(y->dtype, x->dtype);
		assert_int_equal(y->ndim, x->ndim);
		assert_memory_equal(y->shape, x->shape,
				    x->ndim * sizeof(x->shape[0]));
		assert_int_equal(y->nbytes, x->nbytes);
		assert_memory_equal(copy + y->src_offset, orig + x->src_offset,
				    x->nbytes);
	}
	/* nothing but the result is left in the folder */
	assert_int_equal(access(out, F_OK), 0);
	tc__source_free(s2);
	tc__source_free(s);
	free(copy);
	free(orig);
	free(out);
	rmtree(d);
}

static void test_format__write_roundtrip_files(void **state)
{
	char name[128];

	(void)state;
	roundtrip(DATA "/dtypes.safetensors", true);
	/* no __metadata__ in the original: the writer adds format: pt */
	roundtrip(DATA "/many-tensors.safetensors", false);
	for (int i = 1; i <= 6; i++) {
		snprintf(name, sizeof(name),
			 DATA "/tiny-llama/model-%05d-of-00006.safetensors", i);
		roundtrip(name, true);
	}
}

/* Every dtype, escapes in names and metadata, zero-size and scalar tensors:
 * write to a memfd, read back, compare everything. */
static void test_format__write_every_dtype(void **state)
{
	static const char *const meta[][2] = {
		{ "quote\"back\\slash", "nl\nctl\x01tab\tdel\x7f" },
		{ "unicode", "caf\xc3\xa9 \xf0\x9f\x98\x80 /slash" },
		{ "", "empty key" },
	};
	struct tc__table t, r;
	struct tc__tensor *x;
	char err[MSG], name[64];
	uint64_t off = 0, size;
	uint8_t *base;
	int fd;

	(void)state;
	tc__table_init(&t);
	t.tensors = tc__calloc(TC_DTYPE__COUNT + 2, sizeof(*t.tensors));
	for (int d = 0; d < TC_DTYPE__COUNT; d++) {
		x = &t.tensors[t.ntensors++];
		snprintf(name, sizeof(name), "layer.%d/%s \"q\"", d,
			 tc_dtype_name(d));
		x->name = tc__strdup(name);
		x->dtype = (uint8_t)d;
		x->ndim = 2;
		x->shape[0] = 4;
		x->shape[1] = 3 + (uint64_t)d % 3; /* 12..20 elements */
		if (tc_dtype_bits(d) < 8) /* whole bytes: 8 or 4 x 6 elements */
			x->shape[1] = 6;
		assert_int_equal(
			tc__tensor_nbytes(d, x->ndim, x->shape, &x->nbytes), 0);
		x->offset = off;
		off += x->nbytes;
	}
	x = &t.tensors[t.ntensors++];
	x->name = tc__strdup("scalar");
	x->dtype = TC_DTYPE_F64;
	x->nbytes = 8;
	x->offset = off;
	off += 8;
	x = &t.tensors[t.ntensors++];
	x->name = tc__strdup("\xe2\x88\x85 empty");
	x->dtype = TC_DTYPE_BF16;
	x->ndim = 3;
	x->shape[1] = 5;
	x->offset = off;
	t.meta = tc__calloc(3, sizeof(*t.meta));
	for (int i = 0; i < 3; i++) {
		t.meta[i].key = tc__strdup(meta[i][0]);
		t.meta[i].val = tc__strdup(meta[i][1]);
		t.nmeta++;
	}
	base = malloc(off);
	for (uint64_t i = 0; i < off; i++)
		base[i] = (uint8_t)(i * 131 + 7);

	fd = memfd_create("st", MFD_CLOEXEC);
	assert_true(fd >= 0);
	if (tc__st_write_fd(fd, &t, base, err, sizeof(err)))
		fail_msg("%s", err);
	tc__table_init(&r);
	if (tc__st_read(fd, 3, &r, &size, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(r.ntensors, t.ntensors);
	assert_int_equal(r.nmeta, 4);
	assert_string_equal(r.meta[0].key, "format");
	assert_string_equal(r.meta[0].val, "pt");
	for (int i = 0; i < 3; i++) {
		assert_string_equal(r.meta[i + 1].key, meta[i][0]);
		assert_string_equal(r.meta[i + 1].val, meta[i][1]);
	}
	/* reference order: U64 first ... BOOL last */
	assert_int_equal(r.tensors[0].dtype, TC_DTYPE_U64);
	assert_int_equal(r.tensors[r.ntensors - 1].dtype, TC_DTYPE_BOOL);
	for (uint32_t i = 0; i < t.ntensors; i++) {
		const struct tc__tensor *a = &t.tensors[i];
		long j = tc__table_find(&r, a->name);
		const struct tc__tensor *b;
		uint8_t *buf;

		assert_true(j >= 0);
		b = &r.tensors[j];
		assert_int_equal(b->dtype, a->dtype);
		assert_int_equal(b->ndim, a->ndim);
		assert_memory_equal(b->shape, a->shape,
				    a->ndim * sizeof(a->shape[0]));
		assert_int_equal(b->nbytes, a->nbytes);
		assert_int_equal(b->src_file, 3);
		buf = malloc(a->nbytes + 1);
		assert_int_equal(pread(fd, buf, a->nbytes,
				       (off_t)b->src_offset),
				 (ssize_t)a->nbytes);
		assert_memory_equal(buf, base + a->offset, a->nbytes);
		free(buf);
	}
	assert_int_equal(r.tensors[0].src_offset % 8, 0);
	/* The same from the byte space's file (an attached memfd: export
	 * copies in the kernel, no mapping): the same file, to a regular
	 * file and to a pipe (tcast export to stdout); a source shorter than
	 * its table is a clear error. */
	{
		off_t len = lseek(fd, 0, SEEK_END);
		uint8_t *want = malloc((size_t)len), *got = malloc((size_t)len);
		int src = memfd_create("src", MFD_CLOEXEC);
		int out = memfd_create("out", MFD_CLOEXEC), pp[2];

		assert_int_equal(pread(fd, want, (size_t)len, 0), len);
		assert_int_equal(write(src, base, off), (ssize_t)off);
		assert_int_equal(tc__st_write_fd_from(out, &t, src, err,
						      sizeof(err)),
				 0);
		assert_int_equal(pread(out, got, (size_t)len, 0), len);
		assert_int_equal(lseek(out, 0, SEEK_END), len);
		assert_memory_equal(got, want, (size_t)len);
		assert_int_equal(pipe(pp), 0);
		{
			pid_t pid = fork();
			off_t n = 0;
			int st;
			ssize_t got_n;

			assert_true(pid >= 0);
			if (pid == 0) {
				close(pp[0]);
				_exit(tc__st_write_fd_from(pp[1], &t, src, err,
							   sizeof(err)) ?
					      1 :
					      0);
			}
			close(pp[1]);
			memset(got, 0, (size_t)len);
			while (n < len && (got_n = read(pp[0], got + n,
							(size_t)(len - n))) > 0)
				n += got_n;
			assert_int_equal(n, len);
			assert_int_equal(read(pp[0], got, 1), 0); /* no more */
			assert_int_equal(waitpid(pid, &st, 0), pid);
			assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
			close(pp[0]);
		}
		assert_memory_equal(got, want, (size_t)len);
		assert_int_equal(ftruncate(src, (off_t)(off - 3)), 0);
		assert_int_equal(tc__st_write_fd_from(out, &t, src, err,
						      sizeof(err)),
				 TC_EBADFILE);
		assert_non_null(strstr(err, "cannot write"));
		close(out);
		close(src);
		free(want);
		free(got);
	}
	close(fd);
	tc__table_release(&r);
	tc__table_release(&t);
	free(base);
}

static void test_format__write_rejects(void **state)
{
	struct tc__table t;
	uint8_t base[64] = { 0 };
	char err[MSG], *d, *p;
	int fd;

	(void)state;
	tc__table_init(&t);
	t.tensors = tc__calloc(2, sizeof(*t.tensors));
	t.ntensors = 2;
	t.tensors[0].name = tc__strdup("a");
	t.tensors[0].dtype = TC_DTYPE_F32;
	t.tensors[0].ndim = 1;
	t.tensors[0].shape[0] = 2;
	t.tensors[0].nbytes = 8;
	t.tensors[1] = t.tensors[0];
	t.tensors[1].name = tc__strdup("a");
	fd = memfd_create("st", MFD_CLOEXEC);
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "duplicate tensor 'a'"));
	t.tensors[1].name[0] = 'b';
	t.tensors[1].nbytes = 12;
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(
		err, "tensor 'b': nbytes is 12 but F32 of that shape needs 8"));
	t.tensors[1].nbytes = 8;
	t.tensors[1].name[0] = '\xff';
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "is not valid UTF-8"));
	tc__free(t.tensors[1].name);
	t.tensors[1].name = tc__strdup("__metadata__");
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	t.tensors[1].name[0] = '\0';
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	t.tensors[1].name[0] = 'b';
	t.tensors[1].dtype = 200;
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 TC_EINVAL);
	t.tensors[1].dtype = TC_DTYPE_F32;
	/* nothing was written by the rejected calls */
	assert_int_equal(lseek(fd, 0, SEEK_END), 0);
	close(fd);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(tc__st_write_fd(fd, &t, base, err, sizeof(err)),
			 -EBADF);
	assert_non_null(strstr(err, "cannot write"));
	close(fd);
	/* the path variant leaves no temporary file behind on failure */
	d = tmpdir();
	p = path_join(d, "missing/out.safetensors");
	assert_int_equal(tc__st_write_path(p, &t, base, 0, err, sizeof(err)),
			 -ENOENT);
	free(p);
	p = path_join(d, "out.safetensors");
	assert_int_equal(mkdir(p, 0755), 0); /* never over a folder */
	assert_int_equal(tc__st_write_path(p, &t, base, TC_ST_WRITE_FORCE, err,
					   sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "a folder"));
	assert_int_equal(rmdir(p), 0);
	assert_int_equal(tc__st_write_path(p, &t, base, 0, err, sizeof(err)),
			 0);
	assert_int_equal(rmdir(d) < 0 && errno == ENOTEMPTY, 1);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(rmdir(d), 0); /* only out.safetensors was there */
	free(p);
	free(d);
	tc__table_release(&t);
}

/* ---------------------------------------------------------- public API */

static void test_format__verify_summary(void **state)
{
	char msg[MSG], json[4096];
	json_t *j;
	json_error_t e;

	(void)state;
	assert_int_equal(tc_st_verify(DATA "/tiny-llama", msg, sizeof(msg)), 0);
	assert_string_equal(
		msg,
		"ok: " DATA
		"/tiny-llama: 6 files, 30 tensors, 287,616 bytes, dtypes BF16");
	assert_int_equal(
		tc_st_verify(DATA "/dtypes.safetensors", msg, sizeof(msg)), 0);
	assert_string_equal(
		msg,
		"ok: " DATA
		"/dtypes.safetensors: 1 file, 18 tensors, 3,513 bytes, dtypes BOOL,U8,I8,F8_E5M2,F8_E4M3,I16,U16,F16,BF16,I32,U32,F32,F64,I64,U64");
	assert_int_equal(tc_st_verify(NULL, msg, sizeof(msg)), TC_EINVAL);
	assert_int_equal(tc_st_verify(DATA "/tiny-llama", NULL, 0), 0);
	assert_int_equal(tc_st_verify(DATA "/tiny-llama", msg, 10), 0);
	assert_int_equal(strlen(msg), 9); /* cut, still terminated */
	assert_int_equal(strncmp(msg, "ok: ", 4), 0);

	assert_int_equal(
		tc_st_verify_json(DATA "/tiny-llama", json, sizeof(json)), 0);
	j = json_loads(json, 0, &e);
	assert_non_null(j);
	assert_true(json_is_true(json_object_get(j, "ok")));
	assert_int_equal(json_integer_value(json_object_get(j, "files")), 6);
	assert_int_equal(json_integer_value(json_object_get(j, "tensors")), 30);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes")),
			 287616);
	assert_string_equal(json_string_value(json_array_get(
				    json_object_get(j, "dtypes"), 0)),
			    "BF16");
	json_decref(j);
	assert_int_equal(
		tc_st_verify_json(DATA
				  "/hostile/st/end_before_begin.safetensors",
				  json, sizeof(json)),
		TC_EBADFILE);
	j = json_loads(json, 0, &e);
	assert_non_null(j);
	assert_true(json_is_false(json_object_get(j, "ok")));
	assert_string_equal(json_string_value(json_object_get(j, "error")),
			    "TC_EBADFILE");
	assert_int_equal(json_integer_value(json_object_get(j, "code")),
			 TC_EBADFILE);
	assert_non_null(strstr(
		json_string_value(json_object_get(j, "message")),
		"tensor 'x.weight': data_offsets [8, 4]: end before begin"));
	json_decref(j);
	/* a path that is not UTF-8 still yields valid JSON */
	assert_int_equal(tc_st_verify_json("/nonexistent/\xff\"x", json,
					   sizeof(json)),
			 -ENOENT);
	j = json_loads(json, 0, &e);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "path")),
			    "/nonexistent/\xef\xbf\xbd\"x");
	json_decref(j);
	assert_int_equal(tc_st_verify_json(DATA "/tiny-llama", json, 20),
			 -ERANGE);
	assert_string_equal(json, "");
}

/* Run cmd_verify with stdout and stderr captured. */
static int run_verify(char *out, size_t outlen, char *errs, size_t errlen,
		      int argc, ...)
{
	char *argv[16];
	int o = memfd_create("out", MFD_CLOEXEC),
	    e = memfd_create("err", MFD_CLOEXEC);
	int so = dup(1), se = dup(2), rc;
	va_list ap;
	ssize_t n;

	va_start(ap, argc);
	for (int i = 0; i < argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	fflush(stderr);
	dup2(o, 1);
	dup2(e, 2);
	rc = cmd_verify(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	n = pread(o, out, outlen - 1, 0);
	out[n < 0 ? 0 : n] = '\0';
	n = pread(e, errs, errlen - 1, 0);
	errs[n < 0 ? 0 : n] = '\0';
	close(o);
	close(e);
	return rc;
}

static void test_format__cli_verify(void **state)
{
	char out[8192], errs[8192];
	json_error_t e;
	json_t *j;

	(void)state;
	assert_int_equal(run_verify(out, sizeof(out), errs, sizeof(errs), 2,
				    "verify", DATA "/tiny-llama"),
			 0);
	assert_string_equal(
		out,
		"ok: " DATA
		"/tiny-llama: 6 files, 30 tensors, 287,616 bytes, dtypes BF16\n");
	assert_string_equal(errs, "");
	assert_int_equal(
		run_verify(out, sizeof(out), errs, sizeof(errs), 3, "verify",
			   DATA "/hostile/st/end_before_begin.safetensors",
			   DATA "/dtypes.safetensors"),
		1);
	assert_non_null(strstr(errs, "error: TC_EBADFILE: "));
	assert_non_null(strstr(
		errs,
		"tensor 'x.weight': data_offsets [8, 4]: end before begin\n"));
	assert_non_null(strstr(out, "ok: " DATA "/dtypes.safetensors: 1 file"));
	/* --json is taken by main() into cli.json before the verb runs: one
	 * document for all paths. */
	cli.json = true;
	assert_int_equal(run_verify(out, sizeof(out), errs, sizeof(errs), 3,
				    "verify", DATA "/tiny-llama",
				    DATA "/dtypes.safetensors"),
			 0);
	cli.json = false;
	j = json_loads(out, 0, &e);
	assert_non_null(j);
	assert_true(json_is_true(json_object_get(j, "valid")));
	assert_int_equal(json_array_size(json_object_get(j, "results")), 2);
	assert_int_equal(
		json_integer_value(json_object_get(
			json_array_get(json_object_get(j, "results"), 0),
			"tensors")),
		30);
	json_decref(j);
	assert_int_equal(run_verify(out, sizeof(out), errs, sizeof(errs), 1,
				    "verify"),
			 2);
	assert_non_null(strstr(errs, "error: TC_EINVAL: missing argument"));
	assert_int_equal(run_verify(out, sizeof(out), errs, sizeof(errs), 3,
				    "verify", "--bogus", DATA "/tiny-llama"),
			 2);
	assert_non_null(strstr(errs, "unknown option '--bogus'"));
	assert_int_equal(run_verify(out, sizeof(out), errs, sizeof(errs), 3,
				    "verify", "--", "-missing"),
			 1);
	assert_non_null(strstr(errs, "error: ENOENT: cannot open '-missing'"));
}

/* ------------------------------------------------------ fault injection */

/*
 * Fail allocation k, for k = 0, 1, ... until `op` succeeds; every failure
 * must be a clean -ENOMEM (ASan reports any leak on those paths).
 *
 * With `jansson_too`, jansson allocates through tc__malloc as well, so its
 * failure paths run too.  jansson 2.14 reports some of its allocation
 * failures as syntax errors, so TC_EBADINDEX is accepted there; in the
 * library's real setup (jansson on malloc, first pass) only -ENOMEM is.
 */
static void oom_loop(const char *what, int (*op)(void *), void *arg,
		     bool jansson_too)
{
	json_malloc_t om;
	json_free_t of;
	long k;
	int ret;

	json_get_alloc_funcs(&om, &of);
	if (jansson_too)
		json_set_alloc_funcs(tc__malloc, tc__free);
	for (k = 0; k < 100000; k++) {
		tc__alloc_fail_after(k);
		ret = op(arg);
		tc__alloc_fail_after(-1);
		if (ret == 0)
			break;
		if (ret != -ENOMEM && !(jansson_too && ret == TC_EBADINDEX))
			fail_msg(
				"%s: allocation %ld failed: got %s, not -ENOMEM",
				what, k, tc_err_name(ret));
	}
	json_set_alloc_funcs(om, of);
	assert_int_equal(ret, 0);
	print_message("    %s%s: %ld allocation failure points\n", what,
		      jansson_too ? " (jansson too)" : "", k);
}

static int op_source(void *arg)
{
	struct tc__source *s;
	char err[MSG];
	int ret = tc__source_open(arg, &s, err, sizeof(err));

	if (ret == -ENOMEM)
		assert_non_null(strstr(err, "out of memory"));
	if (ret == 0)
		assert_true(s->table.ntensors > 0);
	tc__source_free(s);
	return ret;
}

static int op_verify_json(void *arg)
{
	char json[4096];

	return tc_st_verify_json(arg, json, sizeof(json));
}

static int op_write(void *arg)
{
	char err[MSG];
	int fd = memfd_create("st", MFD_CLOEXEC), ret;

	ret = tc__st_write_fd(fd, arg, NULL, err, sizeof(err));
	close(fd);
	return ret;
}

static void test_format__oom(void **state)
{
	struct tc__table t;

	(void)state;
	oom_loop("dtypes.safetensors", op_source, DATA "/dtypes.safetensors",
		 false);
	oom_loop("tiny-llama", op_source, DATA "/tiny-llama", false);
	oom_loop("tiny-llama", op_source, DATA "/tiny-llama", true);
	oom_loop("verify_json", op_verify_json, DATA "/tiny-llama", false);
	/* out-of-order offsets (sorting), escapes (scratch buffer) */
	oom_loop("unsorted offsets", op_source,
		 DATA "/hostile/st/zero_size_boundary_ok.safetensors", false);
	oom_loop("escaped names", op_source,
		 DATA "/hostile/st/escaped_names_ok.safetensors", false);
	oom_loop("folder without index", op_source,
		 DATA "/hostile/idx/no_index_one_file_ok", false);
	oom_loop("folder with model.safetensors", op_source,
		 DATA "/hostile/idx/model_safetensors_preferred_ok", false);
	/* zero-size tensors need no data, so base may be NULL */
	tc__table_init(&t);
	t.tensors = tc__calloc(3, sizeof(*t.tensors));
	for (int i = 0; i < 3; i++) {
		struct tc__tensor *x = &t.tensors[t.ntensors++];

		x->name = tc__strdup(i == 0 ? "a" : i == 1 ? "b\"q" : "c");
		x->dtype = (uint8_t)(i * 7);
		x->ndim = 2;
		x->shape[1] = 3;
	}
	t.meta = tc__calloc(1, sizeof(*t.meta));
	t.meta[0].key = tc__strdup("k");
	t.meta[0].val = tc__strdup("v");
	t.nmeta = 1;
	oom_loop("writer", op_write, &t, false);
	tc__table_release(&t);
}

/* Not a pass/fail benchmark: prints the time per parse. */
static void test_format__parse_speed(void **state)
{
	size_t len;
	char *f = slurp(DATA "/many-tensors.safetensors", &len), err[MSG];
	uint64_t n = 0;
	struct tc__table t;
	double t0;
	int it = 200;

	(void)state;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | (uint8_t)f[i];
	t0 = now_s();
	for (int i = 0; i < it; i++) {
		tc__table_init(&t);
		assert_int_equal(tc__st_parse_header(f + 8, n, len, 0, &t, err,
						     sizeof(err)),
				 0);
		tc__table_release(&t);
	}
	print_message(
		"    many-tensors (1,200 tensors, %llu-byte header): %.0f us per parse\n",
		(unsigned long long)n, (now_s() - t0) / it * 1e6);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format__dtypes_file),
		cmocka_unit_test(test_format__many_tensors),
		cmocka_unit_test(test_format__tiny_llama),
		cmocka_unit_test(test_format__open_fd),
		cmocka_unit_test(test_format__hf_cache),
		cmocka_unit_test(test_format__hostile_corpus),
		cmocka_unit_test(test_format__header_cap),
		cmocka_unit_test(test_format__deep_nesting),
		cmocka_unit_test(test_format__long_name),
		cmocka_unit_test(test_format__count_bomb),
		cmocka_unit_test(test_format__rank_65536),
		cmocka_unit_test(test_format__shape_wraps_to_16),
		cmocka_unit_test(test_format__special_files),
		cmocka_unit_test(test_format__special_shards),
		cmocka_unit_test(test_format__index_escapes),
		cmocka_unit_test(test_format__many_shards),
		cmocka_unit_test(test_format__fd_limit),
		cmocka_unit_test(test_format__jansson_agrees),
		cmocka_unit_test(test_format__header_table),
		cmocka_unit_test(test_format__escapes_decode),
		cmocka_unit_test(test_format__parse_guards),
		cmocka_unit_test(test_format__index_table),
		cmocka_unit_test(test_format__folder_edges),
		cmocka_unit_test(test_format__metadata_limits),
		cmocka_unit_test(test_format__write_roundtrip_files),
		cmocka_unit_test(test_format__write_every_dtype),
		cmocka_unit_test(test_format__write_rejects),
		cmocka_unit_test(test_format__verify_summary),
		cmocka_unit_test(test_format__cli_verify),
		cmocka_unit_test(test_format__oom),
		cmocka_unit_test(test_format__parse_speed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
