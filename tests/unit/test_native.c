/*
 * test_native.c - tcast's native layout (src/format/native.c) and the
 * daemon's SQLite metadata (src/store/mdb.c): round trips through real
 * files, the id of docs/formats.md's tiny artifact read back from disk,
 * hostile manifests with their codes and messages, digests checked on
 * load, the failpoints of the durable write (nothing left behind), and
 * the metadata surviving a close and reopen with the key history trimmed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/tensor.h"
#include "format/canon.h"
#include "format/format.h"
#include "xfer/loader.h"
#include "store/mdb.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"
#include "tcast/st.h"
#include "tlib.h"

#define TINY_ID \
	"tc2:37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b70eeb"

/* A larger artifact than t_tiny_artifact's (3 chunks) whose tensors are
 * filled from `seed`. */
static void big(struct tc__table *t, uint8_t **bytes, uint8_t seed)
{
	tc__table_init(t);
	t->tensors = tc__calloc(2, sizeof(*t->tensors));
	t->ntensors = 2;
	t->tensors[0].name = tc__strdup("w");
	t->tensors[0].dtype = TC_DTYPE_BF16;
	t->tensors[0].ndim = 2;
	t->tensors[0].shape[0] = 1000;
	t->tensors[0].shape[1] = 4099;
	t->tensors[0].nbytes = 1000 * 4099 * 2;
	t->tensors[1].name = tc__strdup("b");
	t->tensors[1].dtype = TC_DTYPE_F32;
	t->tensors[1].ndim = 1;
	t->tensors[1].shape[0] = 1000001;
	t->tensors[1].nbytes = 4000004;
	assert_int_equal(tc__table_layout(t), 0);
	*bytes = tc__calloc(1, t->total_bytes);
	for (uint32_t i = 0; i < t->ntensors; i++)
		for (uint64_t k = 0; k < t->tensors[i].nbytes; k++)
			(*bytes)[t->tensors[i].offset + k] =
				(uint8_t)(k * 131 + seed + i);
}

static void id_of(const struct tc__table *t, const uint8_t *bytes,
		  struct tc__digest **chunks, uint64_t *n,
		  char id[TC_ID_LEN + 1])
{
	struct tc__digest root;

	*n = tc__chunk_count(t->total_bytes);
	*chunks = tc__calloc(*n ? *n : 1, sizeof(**chunks));
	assert_int_equal(tc__hash_chunks(bytes, t->total_bytes, 2, *chunks), 0);
	assert_int_equal(tc__canon_root(t, *chunks, *n, &root), 0);
	tc__digest_id(&root, id);
}

static char tmpdir[64];

static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

static int setup(void **state)
{
	strcpy(tmpdir, "/tmp/tc-native-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd);
}

static void test_native__tiny_round_trip(void **state)
{
	struct tc__table t;
	struct tc__source *src;
	struct tc__digest *chunks, *got;
	uint64_t n;
	uint8_t *bytes, back[259];
	char id[TC_ID_LEN + 1], err[1024], path[256], msg[512];
	int pfd = open(tmpdir, O_RDONLY | O_DIRECTORY);

	bytes = tc__calloc(1, 259);
	assert_non_null(bytes);
	t_tiny_artifact(&t, bytes);
	id_of(&t, bytes, &chunks, &n, id);
	assert_string_equal(id, TINY_ID);
	assert_int_equal(tc__native_write(pfd, tmpdir, id, &t, bytes, chunks, n,
					  err, sizeof(err)),
			 0);
	/* Written again (same content): accepted, nothing added. */
	assert_int_equal(tc__native_write(pfd, tmpdir, id, &t, bytes, chunks, n,
					  err, sizeof(err)),
			 0);
	assert_int_equal(entries(tmpdir), 1);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, id + 4);
	assert_int_equal(tc__source_open(path, &src, err, sizeof(err)), 0);
	assert_int_equal(src->nfiles, 2);
	assert_string_equal(src->expect_id, TINY_ID);
	assert_int_equal(src->table.ntensors, 2);
	assert_int_equal(src->table.total_bytes, 259);
	assert_int_equal(src->table.tensors[1].offset, 256);
	assert_int_equal(src->table.nmeta, 2);
	memset(back, 0xee, sizeof(back));
	got = tc__calloc(1, sizeof(*got));
	memset(back, 0, sizeof(back));
	assert_int_equal(
		tc__load_source(src, back, 1, got, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, bytes, 259);
	assert_int_equal(
		tc__native_check(src, got, 1, TINY_ID, err, sizeof(err)), 0);
	/* `tcast verify` reads it like a safetensors folder. */
	assert_int_equal(tc_st_verify(path, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "2 tensors"));
	tc__source_free(src);
	tc__free(got);
	assert_int_equal(tc__native_remove(pfd, id), 0);
	assert_int_equal(entries(tmpdir), 0);
	close(pfd);
	tc__free(chunks);
	tc__free(bytes);
	tc__table_release(&t);
}

/* The put's path: the data written by several threads while it is
 * hashed (before the id is known), O_DIRECT for the aligned bulk, the
 * tail through the page cache; then a second write of the same content
 * in misaligned pieces, which finds the first and leaves nothing. */
static void test_native__written_while_hashed(void **state)
{
	struct tc__table t;
	struct tc__native_tmp w;
	struct tc__source *src;
	struct tc__digest *chunks, *got, root;
	struct stat st;
	struct statfs sfs;
	uint64_t n, size;
	uint8_t *bytes, *aligned, *back;
	char id[TC_ID_LEN + 1], err[1024], path[256];
	int pfd = open(tmpdir, O_RDONLY | O_DIRECTORY), wrc = -1;

	big(&t, &bytes, 9); /* 1-3 are the failpoints' artifacts */
	size = t.total_bytes;
	assert_true(size % 4096 != 0); /* a tail shorter than a block */
	aligned = aligned_alloc(4096, (size + 4095) / 4096 * 4096);
	memcpy(aligned, bytes, size);
	n = tc__chunk_count(size);
	chunks = tc__calloc(n, sizeof(*chunks));
	assert_int_equal(
		tc__native_begin(pfd, tmpdir, size, &w, err, sizeof(err)), 0);
	assert_int_equal(entries(tmpdir), 1); /* the temporary */
	assert_int_equal(tc__native_write_data(&w, aligned, size - 10, 11),
			 -EINVAL);
	assert_int_equal(tc__hash_chunks_write(aligned, size, 2, chunks, &w, 3,
					       &wrc),
			 0);
	assert_int_equal(wrc, 0);
	/* ext4 and xfs take O_DIRECT: there the bulk went direct. */
	if (statfs(tmpdir, &sfs) == 0 &&
	    (sfs.f_type == 0xEF53 || sfs.f_type == 0x58465342))
		assert_true(atomic_load(&w.direct));
	assert_int_equal(tc__canon_root(&t, chunks, n, &root), 0);
	tc__digest_id(&root, id);
	assert_int_equal(tc__native_commit(&w, tmpdir, id, &t, chunks, n, 0,
					   err, sizeof(err)),
			 0);
	assert_int_equal(entries(tmpdir), 1);
	snprintf(path, sizeof(path), "%s/%s/%s", tmpdir, id + 4,
		 TC_NATIVE_DATA);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, id + 4);
	assert_int_equal(tc__source_open(path, &src, err, sizeof(err)), 0);
	back = tc__calloc(1, size);
	got = tc__calloc(n, sizeof(*got));
	assert_int_equal(
		tc__load_source(src, back, 2, got, NULL, err, sizeof(err)), 0);
	assert_memory_equal(back, bytes, size);
	assert_int_equal(tc__native_check(src, got, n, id, err, sizeof(err)),
			 0);
	tc__source_free(src);
	/* Again, misaligned pieces from a misaligned buffer (all through
	 * the page cache), out of order: the folder exists, so the
	 * temporary goes and the answer is 0. */
	assert_int_equal(
		tc__native_begin(pfd, tmpdir, size, &w, err, sizeof(err)), 0);
	assert_int_equal(
		tc__native_write_data(&w, bytes + 4097, 4097, size - 4097), 0);
	assert_int_equal(tc__native_write_data(&w, bytes, 0, 4097), 0);
	assert_int_equal(tc__native_commit(&w, tmpdir, id, &t, chunks, n, 0,
					   err, sizeof(err)),
			 0);
	assert_int_equal(entries(tmpdir), 1);
	/* A failed write (data_rc) removes the temporary. */
	assert_int_equal(
		tc__native_begin(pfd, tmpdir, size, &w, err, sizeof(err)), 0);
	assert_int_equal(tc__native_commit(&w, tmpdir, id, &t, chunks, n, -EIO,
					   err, sizeof(err)),
			 -EIO);
	assert_non_null(strstr(err, "cannot write"));
	assert_int_equal(entries(tmpdir), 1);
	assert_int_equal(tc__native_remove(pfd, id), 0);
	assert_int_equal(entries(tmpdir), 0);
	close(pfd);
	free(aligned);
	tc__free(back);
	tc__free(got);
	tc__free(chunks);
	tc__free(bytes);
	tc__table_release(&t);
}

/* A byte flipped in the data file is found by its chunk, on load. */
static void test_native__corrupt_data_is_caught(void **state)
{
	struct tc__table t;
	struct tc__source *src;
	struct tc__digest *chunks, *got;
	uint64_t n;
	uint8_t *bytes, *back, x;
	char id[TC_ID_LEN + 1], err[1024], path[256];
	int pfd = open(tmpdir, O_RDONLY | O_DIRECTORY), fd;

	big(&t, &bytes, 7);
	id_of(&t, bytes, &chunks, &n, id);
	assert_int_equal(n, 3);
	assert_int_equal(tc__native_write(pfd, tmpdir, id, &t, bytes, chunks, n,
					  err, sizeof(err)),
			 0);
	snprintf(path, sizeof(path), "%s/%s/%s", tmpdir, id + 4,
		 TC_NATIVE_DATA);
	fd = open(path, O_RDWR);
	assert_int_equal(pread(fd, &x, 1, 5 << 20), 1);
	x ^= 0x10;
	assert_int_equal(pwrite(fd, &x, 1, 5 << 20), 1);
	close(fd);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, id + 4);
	assert_int_equal(tc__source_open(path, &src, err, sizeof(err)), 0);
	back = tc__calloc(1, t.total_bytes);
	got = tc__calloc(n, sizeof(*got));
	assert_int_equal(
		tc__load_source(src, back, 2, got, NULL, err, sizeof(err)), 0);
	assert_int_equal(tc__native_check(src, got, n, id, err, sizeof(err)),
			 TC_EDIGEST);
	assert_non_null(strstr(err, "chunk 1 (from byte 4194304)"));
	tc__source_free(src);
	/* A data file of the wrong length is refused before any read. */
	snprintf(path, sizeof(path), "%s/%s/%s", tmpdir, id + 4,
		 TC_NATIVE_DATA);
	assert_int_equal(truncate(path, 100), 0);
	snprintf(path, sizeof(path), "%s/%s", tmpdir, id + 4);
	assert_int_equal(tc__source_open(path, &src, err, sizeof(err)),
			 TC_EBADFILE);
	assert_non_null(strstr(err, "'tcast.data' is 100 bytes"));
	assert_int_equal(tc__native_remove(pfd, id), 0);
	close(pfd);
	tc__free(back);
	tc__free(got);
	tc__free(chunks);
	tc__free(bytes);
	tc__table_release(&t);
}

/* Hostile manifests: each rejected with its code and a message naming
 * the problem, nothing allocated left over (ASan). */
static void test_native__hostile_manifests(void **state)
{
	static const char ok_tail[] =
		"\"chunks\":\"0000000000000000000000000000000000000000000000000"
		"000000000000000\"}";
	static const struct {
		const char *json;
		int rc;
		const char *msg;
	} cases[] = {
		{ "", TC_EBADFILE, "line" },
		{ "[]", TC_EBADFILE, "not a JSON object" },
		{ "{\"format\":\"tcast-native\"}", TC_EBADFILE,
		  "missing key 'version'" },
		{ "{\"format\":\"tcast-native\",\"format\":\"x\"}", TC_EBADFILE,
		  "duplicate" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"x\","
		  "\"total_bytes\":0,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[],\"metadata\":{},\"chunks\":"
		  "\"\",\"evil\":1}",
		  TC_EBADFILE, "unknown key 'evil'" },
		{ "{\"format\":\"tcast-native\",\"version\":2,\"id\":\"x\","
		  "\"total_bytes\":0,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[],\"metadata\":{},\"chunks\":"
		  "\"\"}",
		  TC_ENOTSUP, "'version' is not 1" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"x\","
		  "\"total_bytes\":0,\"chunk_bytes\":4194304,\"data\":"
		  "\"../etc/passwd\",\"tensors\":[],\"metadata\":{},"
		  "\"chunks\":\"\"}",
		  TC_EBADFILE, "'data' is not" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[3],0,8]],"
		  "\"metadata\":{},\"chunks\":\"\"}",
		  TC_EBADFILE, "nbytes 8, but its dtype and shape make 12" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F33\",[2],0,8]],"
		  "\"metadata\":{},\"chunks\":\"\"}",
		  TC_EBADDTYPE, "unknown dtype" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":264,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[2],0,8],[\"b\","
		  "\"U8\",[8],8,8]],\"metadata\":{},\"chunks\":\"\"}",
		  TC_EBADFILE,
		  "tensor 'b': offset 8, where the layout puts it "
		  "at 256" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[2],0,8],[\"a\","
		  "\"F32\",[2],256,8]],\"metadata\":{},\"chunks\":\"\"}",
		  TC_EBADFILE, "tensor 'a' appears twice" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[2],0,8]],"
		  "\"metadata\":{},\"chunks\":\"\"}",
		  TC_EBADFILE, "'chunks' must be 1 digests" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[2],0,8]],"
		  "\"metadata\":{\"k\":1},",
		  TC_EBADFILE, "metadata entry 0 is not a string" },
		{ "{\"format\":\"tcast-native\",\"version\":1,\"id\":\"tc2:"
		  "37815ee52fe011d82c50a380302d5ad0c6ecf458b739c74dc8c8c83ed7b7"
		  "0eeb\",\"total_bytes\":8,\"chunk_bytes\":4194304,\"data\":"
		  "\"tcast.data\",\"tensors\":[[\"a\",\"F32\",[2],0,8]],"
		  "\"metadata\":{},",
		  TC_EDIGEST, "is not the id of its table" },
	};
	char buf[4096], err[1024];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tc__native n;
		const char *j = cases[i].json;
		int rc;

		/* Cases ending in ',' take the valid chunk list. */
		snprintf(buf, sizeof(buf), "%s%s", j,
			 j[0] && j[strlen(j) - 1] == ',' ? ok_tail : "");
		rc = tc__native_parse(buf, strlen(buf), UINT64_MAX, &n, err,
				      sizeof(err));
		if (rc != cases[i].rc || !strstr(err, cases[i].msg))
			fail_msg("case %zu: rc %d (want %d), '%s' (want '%s')",
				 i, rc, cases[i].rc, err, cases[i].msg);
		assert_null(n.chunks);
		assert_int_equal(n.table.ntensors, 0);
	}
}

/* The failpoints of the durable write: each fails the write with its
 * errno and leaves nothing in the folder, neither the artifact's name nor
 * a temporary.  main() arms them for the ids of seeds 1, 2, 3. */
static char fail_ids[3][TC_ID_LEN + 1];

static void test_native__failed_writes_leave_nothing(void **state)
{
	static const int want[3] = { -ENOSPC, -EIO, -EIO };
	static const char *what[3] = { "cannot write", "cannot fsync",
				       "cannot rename" };
	int pfd = open(tmpdir, O_RDONLY | O_DIRECTORY);

	for (int k = 0; k < 3; k++) {
		struct tc__table t;
		struct tc__digest *chunks;
		uint8_t *bytes;
		uint64_t n;
		char id[TC_ID_LEN + 1], err[1024];

		big(&t, &bytes, (uint8_t)(k + 1));
		id_of(&t, bytes, &chunks, &n, id);
		assert_string_equal(id, fail_ids[k]);
		assert_int_equal(tc__native_write(pfd, tmpdir, id, &t, bytes,
						  chunks, n, err, sizeof(err)),
				 want[k]);
		assert_non_null(strstr(err, what[k]));
		assert_int_equal(entries(tmpdir), 0);
		tc__free(chunks);
		tc__free(bytes);
		tc__table_release(&t);
	}
	close(pfd);
}

static int load_art(void *arg, const struct tc__mdb_artifact *a)
{
	int *n = arg;

	assert_string_equal(a->id, TINY_ID);
	assert_string_equal(a->policy, "durable");
	assert_int_equal(a->bytes, 259);
	assert_int_equal(a->expires_ms, 1234);
	n[0]++;
	return 0;
}

static int load_key(void *arg, const char *key, const struct tc__mdb_version *v,
		    uint32_t nv)
{
	int *n = arg;

	assert_string_equal(key, "model:x");
	assert_int_equal(nv, 3); /* the newest 3 of 5 */
	assert_int_equal(v[0].gen, 3);
	assert_int_equal(v[2].gen, 5);
	assert_string_equal(v[2].id, TINY_ID);
	n[1]++;
	return 0;
}

static void test_mdb__survives_reopen(void **state)
{
	struct tc__mdb *db;
	struct tc__mdb_artifact a = { .id = TINY_ID,
				      .policy = "durable",
				      .bytes = 259,
				      .ntensors = 2,
				      .created_ms = 1,
				      .expires_ms = 1234,
				      .source = "put" };
	char dir[128], err[512];
	int n[2] = { 0, 0 };

	snprintf(dir, sizeof(dir), "%s/state", tmpdir);
	assert_int_equal(tc__mdb_open(dir, &db, err, sizeof(err)), 0);
	assert_int_equal(tc__mdb_artifact_put(db, &a, err, sizeof(err)), 0);
	for (uint64_t g = 1; g <= 5; g++) {
		struct tc__mdb_version v = { .gen = g, .unix_ms = g };

		snprintf(v.id, sizeof(v.id), "%s", TINY_ID);
		assert_int_equal(tc__mdb_key_set(db, "model:x", &v, 3, err,
						 sizeof(err)),
				 0);
	}
	assert_int_equal(tc__mdb_key_set(db, "gone",
					 &(struct tc__mdb_version){ 1, "x", 1 },
					 3, err, sizeof(err)),
			 0);
	assert_true(tc__mdb_key_known(db, "gone"));
	assert_int_equal(tc__mdb_key_del(db, "gone", err, sizeof(err)), 0);
	assert_false(tc__mdb_key_known(db, "gone"));
	tc__mdb_close(db);
	assert_int_equal(tc__mdb_open(dir, &db, err, sizeof(err)), 0);
	assert_int_equal(
		tc__mdb_load_artifacts(db, load_art, n, err, sizeof(err)), 0);
	assert_int_equal(tc__mdb_load_keys(db, load_key, n, err, sizeof(err)),
			 0);
	assert_int_equal(n[0], 1);
	assert_int_equal(n[1], 1);
	assert_int_equal(tc__mdb_artifact_del(db, TINY_ID, err, sizeof(err)),
			 0);
	tc__mdb_close(db);
	/* A state folder that is a file: a clear configuration error. */
	snprintf(dir, sizeof(dir), "%s/state/%s", tmpdir, TC_MDB_FILE);
	assert_int_equal(tc__mdb_open(dir, &db, err, sizeof(err)),
			 TC_EBADCONFIG);
	assert_non_null(strstr(err, "is not a folder"));
}

/* Hashing through a file gives the digests hashing through memory does,
 * for a size that ends mid-window; the probe of fault costs answers and
 * the override wins. */
static void test_native__hash_through_the_file(void **state)
{
	struct tc__table t;
	struct tc__digest *a, *b;
	uint8_t *bytes;
	uint64_t n, size;
	int fd = memfd_create("t", MFD_CLOEXEC);

	(void)state;
	big(&t, &bytes, 11);
	size = t.total_bytes;
	n = tc__chunk_count(size);
	a = tc__calloc(n, sizeof(*a));
	b = tc__calloc(n, sizeof(*b));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, size), (ssize_t)size);
	assert_int_equal(tc__hash_chunks(bytes, size, 2, a), 0);
	assert_int_equal(tc__hash_chunks_fd(fd, size, 3, b), 0);
	assert_memory_equal(a, b, n * sizeof(*a));
	/* A file shorter than the bytes it should hold: an error. */
	assert_int_equal(ftruncate(fd, (off_t)(size / 2)), 0);
	assert_true(tc__hash_chunks_fd(fd, size, 2, b) < 0);
	assert_true(tc__page_fault_ns() > 0);
	setenv("TCAST_HASH_BY_FILE", "1", 1);
	assert_true(tc__faults_dear());
	setenv("TCAST_HASH_BY_FILE", "0", 1);
	assert_false(tc__faults_dear());
	unsetenv("TCAST_HASH_BY_FILE");
	close(fd);
	tc__free(a);
	tc__free(b);
	tc__free(bytes);
	tc__table_release(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_native__tiny_round_trip,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_native__corrupt_data_is_caught, setup, teardown),
		cmocka_unit_test(test_native__hostile_manifests),
		cmocka_unit_test(test_native__hash_through_the_file),
		cmocka_unit_test_setup_teardown(
			test_native__written_while_hashed, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_native__failed_writes_leave_nothing, setup,
			teardown),
		cmocka_unit_test_setup_teardown(test_mdb__survives_reopen,
						setup, teardown),
	};
	char fp[512];

	/* Arm the failpoints before anything reads them (they are loaded
	 * once per process). */
	for (int k = 0; k < 3; k++) {
		struct tc__table t;
		struct tc__digest *chunks;
		uint8_t *bytes;
		uint64_t n;

		big(&t, &bytes, (uint8_t)(k + 1));
		id_of(&t, bytes, &chunks, &n, fail_ids[k]);
		tc__free(chunks);
		tc__free(bytes);
		tc__table_release(&t);
	}
	snprintf(fp, sizeof(fp),
		 "durable_enospc=%s,durable_fsync=%s,durable_rename=%s",
		 fail_ids[0] + 4, fail_ids[1] + 4, fail_ids[2] + 4);
	setenv("TCAST_FAILPOINTS", fp, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
