/*
 * test_store.c - the store daemon end to end: a real daemon on a private
 * socket, driven through libtcast and through raw frames.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "client/client_internal.h"
#include "common/failpoint.h"
#include "net/net.h"
#include "tlib.h"

static struct t_daemon D;

static int setup(void **state)
{
	t_daemon_start(&D, "256MiB", NULL);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	return 0;
}

/* Check every tensor of `a` whose manifest file is `file` (or in folder
 * `prefix`) against manifest.json's SHA-256. */
static void check_manifest(tc_artifact *a, const char *top)
{
	json_t *man = json_load_file(t_data("manifest.json"), 0, NULL), *ts, *t;
	const struct tc_tensor_info *info = tc_artifact_tensors(a);
	const char *name;
	size_t checked = 0;

	assert_non_null(man);
	ts = json_object_get(man, top);
	assert_non_null(ts);
	assert_int_equal(json_object_size(ts), tc_artifact_count(a));
	json_object_foreach(ts, name, t)
	{
		int64_t i = tc_artifact_find(a, name);
		char hex[65];

		if (i < 0)
			fail_msg("tensor '%s' missing", name);
		assert_int_equal(
			info[i].nbytes,
			json_integer_value(json_object_get(t, "nbytes")));
		assert_int_equal(info[i].offset % 256, 0);
		t_sha256_hex((const uint8_t *)tc_artifact_data(a) +
				     info[i].offset,
			     info[i].nbytes, hex);
		if (strcmp(hex,
			   json_string_value(json_object_get(t, "sha256"))))
			fail_msg("tensor '%s' sha256 mismatch", name);
		checked++;
	}
	assert_true(checked > 0);
	json_decref(man);
}

static void import_ok(tc_client *c, const char *path, const char *key,
		      struct tc_result *r)
{
	struct tc_opts o = { 0 };
	int rc;

	if (key) {
		o.field_mask = TC_OPT_KEY;
		o.key = key;
	}
	rc = tc_import(c, path, &o, r);
	if (rc < 0)
		fail_msg("import '%s': %s: %s", path, tc_err_name(rc),
			 tc_client_errmsg(c));
}

/* ------------------------------------------------------------ round trip */

static void test_store__roundtrip_testdata(void **state)
{
	static const char *const items[] = { "dtypes.safetensors",
					     "many-tensors.safetensors",
					     "tiny-llama" };
	tc_client *c = t_connect(D.sock);

	for (size_t i = 0; i < 3; i++) {
		struct tc_result r, r2;
		tc_artifact *a, *b;
		char key[64];

		snprintf(key, sizeof(key), "test:%zu", i);
		import_ok(c, t_data(items[i]), key, &r);
		assert_int_equal(strlen(r.id), 68);
		assert_int_equal(r.key_generation, 1);
		/* By id and by key, the same bytes. */
		assert_int_equal(tc_attach(c, r.id, &a), 0);
		assert_int_equal(tc_attach(c, key, &b), 0);
		assert_string_equal(tc_artifact_id(b), r.id);
		check_manifest(a, items[i]);
		check_manifest(b, items[i]);
		/* The same content imported again is the same artifact. */
		import_ok(c, t_data(items[i]), NULL, &r2);
		assert_string_equal(r.id, r2.id);
		assert_int_equal(r2.deduplicated, 1);
		tc_artifact_close(a);
		tc_artifact_close(b);
	}
	tc_client_close(c);
}

/* put the bytes of an imported artifact again: same id, same bytes. */
/* Descriptors of an attached artifact's tensors (borrowing its names
 * and shapes), for a put of the same tensors.  Free with free(). */
static struct tc_tensor_desc *descs_of(const tc_artifact *a)
{
	uint32_t n = tc_artifact_count(a);
	const struct tc_tensor_info *info = tc_artifact_tensors(a);
	struct tc_tensor_desc *d = calloc(n ? n : 1, sizeof(*d));

	for (uint32_t i = 0; i < n; i++) {
		d[i].name = info[i].name;
		d[i].dtype = info[i].dtype;
		d[i].ndim = info[i].ndim;
		d[i].shape = info[i].shape;
	}
	return d;
}

static void test_store__put_roundtrip(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_tensor_desc *d;
	const struct tc_tensor_info *info;
	struct tc_result r, rp;
	tc_artifact *a, *b;
	tc_put *p;
	uint32_t n;

	import_ok(c, t_data("dtypes.safetensors"), NULL, &r);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	n = tc_artifact_count(a);
	info = tc_artifact_tensors(a);
	/* Every name in one block, in table order, each ended by a NUL. */
	{
		uint64_t len, at = 0;
		const char *names = tc_artifact_names(a, &len);

		for (uint32_t i = 0; i < n; i++) {
			assert_ptr_equal(info[i].name, names + at);
			at += strlen(info[i].name) + 1;
		}
		assert_int_equal(at, len);
	}
	d = descs_of(a);
	assert_int_equal(tc_put_begin(c, d, n,
				      "{\"format\":\"pt\",\"note\":\"dtype "
				      "coverage\"}",
				      NULL, &p),
			 0);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(tc_put_nbytes(p, i), info[i].nbytes);
		memcpy(tc_put_data(p, i),
		       (const uint8_t *)tc_artifact_data(a) + info[i].offset,
		       info[i].nbytes);
	}
	assert_int_equal(tc_put_commit(p, &rp), 0);
	assert_string_equal(rp.id, r.id);
	assert_int_equal(rp.deduplicated, 1);

	/* A different byte makes a different artifact. */
	assert_int_equal(tc_put_begin(c, d, n, NULL, NULL, &p), 0);
	for (uint32_t i = 0; i < n; i++)
		memcpy(tc_put_data(p, i),
		       (const uint8_t *)tc_artifact_data(a) + info[i].offset,
		       info[i].nbytes);
	((uint8_t *)tc_put_data(p, 0))[0] ^= 1;
	assert_int_equal(tc_put_commit(p, &rp), 0);
	assert_string_not_equal(rp.id, r.id);
	assert_int_equal(tc_attach(c, rp.id, &b), 0);
	assert_int_equal(tc_artifact_count(b), n);
	tc_artifact_close(b);
	tc_artifact_close(a);
	free(d);
	tc_client_close(c);
}

/* tc_put_write fills the put through its memory's file or its mapping
 * (TCAST_PUT_WRITE): the same id as copies through tc_put_data, and ranges
 * outside the memory refused. */
static void put_write_one_way(const char *way)
{
	tc_client *c = t_connect(D.sock);
	struct tc_tensor_desc *d;
	const struct tc_tensor_info *info;
	struct tc_result r, rp;
	tc_artifact *a;
	tc_put *p;
	uint32_t n;
	uint64_t end = 0;

	print_message("  tc_put_write, %s\n", way);

	import_ok(c, t_data("dtypes.safetensors"), NULL, &r);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	n = tc_artifact_count(a);
	info = tc_artifact_tensors(a);
	d = descs_of(a);
	assert_int_equal(tc_put_begin(c, d, n,
				      "{\"format\":\"pt\",\"note\":\"dtype "
				      "coverage\"}",
				      NULL, &p),
			 0);
	assert_int_equal(tc_put_offset(p, n), UINT64_MAX);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t off = tc_put_offset(p, i), nb = info[i].nbytes;
		const uint8_t *src =
			(const uint8_t *)tc_artifact_data(a) + info[i].offset;

		/* In two pieces, the second first: any order works. */
		assert_int_equal(tc_put_write(p, off + nb / 2, src + nb / 2,
					      nb - nb / 2),
				 0);
		assert_int_equal(tc_put_write(p, off, src, nb / 2), 0);
		end = off + nb > end ? off + nb : end;
	}
	/* Past the end of the memory, or wrapping around: refused with a
	 * message, the put untouched. */
	assert_int_equal(tc_put_write(p, UINT64_MAX - 1, "xy", 2), TC_EINVAL);
	assert_non_null(strstr(tc_client_errmsg(c), "outside the artifact"));
	assert_int_equal(tc_put_write(p, end + (1ull << 40), "x", 1),
			 TC_EINVAL);
	assert_int_equal(tc_put_commit(p, &rp), 0);
	assert_string_equal(rp.id, r.id);
	assert_int_equal(rp.deduplicated, 1);
	tc_artifact_close(a);
	free(d);
	tc_client_close(c);
}

/* In a child (the failpoint's spec is read once per process): 48 writes
 * of 1 MiB into one put, with way `slow` (file or map) made 20 ms dearer;
 * the put must leave it after both ways' two first calls, going back
 * only to keep its figure (one call in 16). */
static void put_write_adapts(const char *slow)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t n = 48ull << 20, calls[2];
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		static uint8_t buf[1 << 20];
		struct tc_result r;
		tc_client *c;
		tc_put *p;
		char spec[64];
		int bad = 0;

		snprintf(spec, sizeof(spec), "put_write_slow=%s", slow);
		setenv("TCAST_FAILPOINTS", spec, 1);
		tc__failpoint_reload();
		unsetenv("TCAST_PUT_WRITE");
		/* The choice is for 4 KiB pages: on huge ones the mapping
		 * is always taken. */
		setenv("TCAST_HUGE_PAGES", "off", 1);
		c = t_connect(D.sock);
		memset(buf, 0x3c, sizeof(buf));
		if (tc_put_begin(c, &d, 1, NULL, NULL, &p) < 0)
			_exit(2);
		for (uint64_t off = 0; off < n; off += sizeof(buf))
			if (tc_put_write(p, off, buf, sizeof(buf)) < 0)
				_exit(3);
		tc__put_write_ways(p, calls);
		/* calls[0] through the file, calls[1] the mapping. */
		if (calls[0] + calls[1] != 48)
			bad = 4;
		else if (!strcmp(slow, "file") && calls[0] > 2 + 48 / 16 + 1)
			bad = 5;
		else if (!strcmp(slow, "map") && calls[1] > 2 + 48 / 16 + 1)
			bad = 6;
		if (bad)
			fprintf(stderr,
				"%s slow: %llu calls through the file, "
				"%llu through the mapping\n",
				slow, (unsigned long long)calls[0],
				(unsigned long long)calls[1]);
		if (tc_put_commit(p, &r) < 0)
			_exit(7);
		tc_client_close(c);
		_exit(bad);
	}
	assert_int_equal(t_wait_status(pid), 0);
}

static void test_store__put_write_through_the_file(void **state)
{
	(void)state;
	setenv("TCAST_PUT_WRITE", "pwrite", 1);
	put_write_one_way("pwrite");
	setenv("TCAST_PUT_WRITE", "map", 1);
	put_write_one_way("map");
	unsetenv("TCAST_PUT_WRITE");
	put_write_one_way("measured");
	put_write_adapts("file");
	put_write_adapts("map");
}

/* ---------------------------------------------------------- sealing */

static int raw_attach(int fd, const char *ref, int *memfd)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body;
	int fds[4], nfds, status;

	tc__buf_put_str(&b, ref);
	tc__buf_put_u32(&b, 0);
	t_raw_send(fd, TC_MSG_ATTACH, 7, b.data, b.len, NULL, 0);
	tc__buf_release(&b);
	if (t_raw_recv(fd, &h, &body, fds, &nfds) < 0)
		return -1;
	memcpy(&status, body, 4);
	free(body);
	*memfd = nfds == 1 ? fds[0] : -1;
	return status;
}

static void test_store__sealed_memfd_refuses_writes(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	char path[64];
	int fd, mfd = -1, rw;
	void *p;

	import_ok(c, t_data("many-tensors.safetensors"), NULL, &r);
	fd = t_raw_connect(D.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	assert_int_equal(raw_attach(fd, r.id, &mfd), 0);
	assert_true(mfd >= 0);
	/* The fd we are handed is read-only ... */
	assert_int_equal(write(mfd, "x", 1), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(ftruncate(mfd, 0), -1);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	assert_true(p == MAP_FAILED);
	/* ... and even a writable reopen of the same file is refused by the
	 * seals: no write, no resize, no writable shared mapping. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	rw = open(path, O_RDWR);
	if (rw >= 0) {
		assert_int_equal(pwrite(rw, "x", 1, 0), -1);
		assert_int_equal(errno, EPERM);
		assert_int_equal(ftruncate(rw, 1), -1);
		assert_int_equal(errno, EPERM);
		assert_int_equal(fallocate(rw, 0, 0, 1 << 30), -1);
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
		assert_true(p == MAP_FAILED);
		assert_int_equal(errno, EPERM);
		close(rw);
	}
	assert_true(fcntl(mfd, F_GET_SEALS) & F_SEAL_WRITE);
	close(mfd);
	close(fd);
	tc_client_close(c);
}

/* A client that keeps a writable mapping cannot seal: the daemon refuses,
 * and the put can be finished after unmapping. */
static void test_store__seal_with_writable_mapping_fails(void **state)
{
	tc_client *c = t_connect(D.sock);
	uint64_t shape[1] = { 1024 };
	struct tc_tensor_desc d = { "w", TC_DTYPE_F32, 1, shape };
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body;
	int fd = t_raw_connect(D.sock), fds[4], nfds, status;
	void *map;

	(void)c;
	assert_int_equal(t_raw_hello(fd), 0);
	/* CREATE by hand so we hold the writable fd. */
	tc__buf_put_u32(&b, 1);
	tc__buf_put_str(&b, d.name);
	tc__buf_put_u8(&b, TC_DTYPE_F32);
	tc__buf_put_u8(&b, 1);
	tc__buf_put_u64(&b, 1024);
	tc__buf_put_u64(&b, 0);
	tc__buf_put_u64(&b, 4096);
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u64(&b, 0);
	tc__buf_put_str(&b, "");
	tc__buf_put_str(&b, "");
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u64(&b, 0);
	t_raw_send(fd, TC_MSG_CREATE, 2, b.data, b.len, NULL, 0);
	tc__buf_release(&b);
	assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, 0);
	assert_int_equal(nfds, 1);
	free(body);
	/* The writable fd cannot resize the segment. */
	assert_int_equal(ftruncate(fds[0], 1), -1);
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	assert_true(map != MAP_FAILED);
	memset(map, 7, 4096);
	tc__buf_put_u64(&b, 1);
	t_raw_send(fd, TC_MSG_SEAL, 3, b.data, b.len, NULL, 0);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, TC_EBUSY);
	free(body);
	munmap(map, 4096);
	t_raw_send(fd, TC_MSG_SEAL, 4, b.data, b.len, NULL, 0);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, 0);
	free(body);
	tc__buf_release(&b);
	/* After the seal even our writable fd cannot write. */
	assert_int_equal(pwrite(fds[0], "x", 1, 0), -1);
	assert_int_equal(errno, EPERM);
	close(fds[0]);
	close(fd);
	tc_client_close(c);
}

/* ------------------------------------------------------------ leases */

static void test_store__client_crash_releases(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	int pfd[2], status;
	pid_t pid;
	char byte;
	json_t *j;

	import_ok(c, t_data("tiny-llama"), "crash:model", &r);
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	if (pid == 0) {
		tc_client *cc;
		tc_artifact *a;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (tc_client_connect(D.sock, &cc, NULL, 0) < 0 ||
		    tc_attach(cc, "crash:model", &a) < 0 ||
		    tc_attach(cc, "crash:model", &a) < 0)
			_exit(1);
		/* Touch the memory so the mapping is real. */
		volatile uint8_t x = *(const uint8_t *)tc_artifact_data(a);
		(void)x;
		if (write(pfd[1], "k", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(pfd[0], &byte, 1), 1);
	{
		char *s;

		assert_int_equal(tc_inspect_json(c, "crash:model", &s), 0);
		j = json_loads(s, 0, NULL);
		assert_int_equal(
			json_integer_value(json_object_get(j, "leases")), 2);
		json_decref(j);
		tc_free(s);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	/* The daemon notices the closed socket and drops both leases. */
	for (int i = 0; i < 200; i++) {
		char *s;
		long long leases;

		assert_int_equal(tc_inspect_json(c, "crash:model", &s), 0);
		j = json_loads(s, 0, NULL);
		leases = json_integer_value(json_object_get(j, "leases"));
		json_decref(j);
		tc_free(s);
		if (leases == 0)
			break;
		assert_true(i < 199);
		usleep(10000);
	}
	assert_int_equal(t_status_int(c, "clients"), 1);
	close(pfd[0]);
	close(pfd[1]);
	tc_client_close(c);
}

static void put_blob(tc_client *c, const char *name, uint8_t fill,
		     uint64_t bytes, const char *policy, int expect_rc,
		     char *id);

/* Removing an artifact that a client maps keeps the memory until the
 * client lets go; the mapping stays readable meanwhile. */
static void test_store__rm_while_mapped(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	tc_artifact *a, *b;
	long long used0, used1;

	used0 = t_status_int(c, "host_used_bytes");
	put_blob(c, "rm-me", 42, 3 << 20, "cache", 0, r.id);
	assert_int_equal(tc_key_set(c, "rm:me", r.id, 0, 0, NULL), 0);
	assert_int_equal(tc_attach(c, "rm:me", &a), 0);
	used1 = t_status_int(c, "host_used_bytes");
	assert_true(used1 > used0);
	assert_int_equal(tc_rm(c, "rm:me"), 0);
	assert_int_equal(tc_attach(c, "rm:me", &b), TC_ENOTFOUND);
	assert_int_equal(tc_attach(c, r.id, &b), TC_ENOTFOUND);
	assert_int_equal(((const uint8_t *)tc_artifact_data(a))[(3 << 20) - 1],
			 42);
	assert_int_equal(t_status_int(c, "host_used_bytes"), used1);
	tc_artifact_close(a);
	assert_int_equal(t_status_int(c, "host_used_bytes"), used0);
	tc_client_close(c);
}

/* The same content put again while its removed copy is still leased: one
 * copy comes back to life, leases stay exact, memory returns at the end. */
static void test_store__reput_of_removed_leased_content(void **state)
{
	tc_client *c = t_connect(D.sock);
	char id1[TC_ID_BUFLEN], id2[TC_ID_BUFLEN];
	tc_artifact *a, *b, *x;
	long long used0 = t_status_int(c, "host_used_bytes");

	put_blob(c, "same", 9, 2 << 20, "cache", 0, id1);
	assert_int_equal(tc_key_set(c, "re:k1", id1, 0, 0, NULL), 0);
	assert_int_equal(tc_attach(c, "re:k1", &a), 0);
	assert_int_equal(tc_rm(c, "re:k1"), 0);
	assert_int_equal(tc_attach(c, id1, &x), TC_ENOTFOUND);
	put_blob(c, "same", 9, 2 << 20, "cache", 0, id2);
	assert_string_equal(id1, id2);
	assert_int_equal(tc_attach(c, id2, &b), 0);
	assert_int_equal(t_status_int(c, "host_used_bytes"), used0 + (2 << 20));
	tc_artifact_close(a);
	/* b's lease is intact: the artifact is still held and leased once. */
	{
		char *s;
		json_t *j;

		assert_int_equal(tc_inspect_json(c, id2, &s), 0);
		j = json_loads(s, 0, NULL);
		assert_int_equal(
			json_integer_value(json_object_get(j, "leases")), 1);
		json_decref(j);
		tc_free(s);
	}
	tc_artifact_close(b);
	assert_int_equal(tc_rm(c, id2), 0);
	assert_int_equal(t_status_int(c, "host_used_bytes"), used0);
	tc_client_close(c);
}

/* ---------------------------------------------------------- eviction */

static void put_blob(tc_client *c, const char *name, uint8_t fill,
		     uint64_t bytes, const char *policy, int expect_rc,
		     char *id)
{
	uint64_t shape[1] = { bytes };
	struct tc_tensor_desc d = { name, TC_DTYPE_U8, 1, shape };
	struct tc_opts o = { TC_OPT_POLICY, NULL, policy, 0, NULL, NULL, 0, 0 };
	struct tc_result r;
	tc_put *p;
	int rc = tc_put_begin(c, &d, 1, NULL, &o, &p);

	if (rc == 0) {
		memset(tc_put_data(p, 0), fill, bytes);
		rc = tc_put_commit(p, &r);
	}
	if (rc != expect_rc)
		fail_msg("put %s: %s (%s)", name, tc_err_name(rc),
			 tc_client_errmsg(c));
	if (rc == 0 && id)
		strcpy(id, r.id);
}

/* Imports and puts fill and hash a fresh segment through its file where
 * page faults are dear, through a mapping elsewhere (docs/design.md):
 * both ways, forced, make the same ids from the same bytes. */
static void test_store__file_and_mapping_fills_agree(void **state)
{
	const char *mode[] = { "1", "0" };
	char ids[2][3][TC_ID_BUFLEN];

	(void)state;
	for (int m = 0; m < 2; m++) {
		struct t_daemon d;
		struct tc_result r;
		tc_client *c;

		setenv("TCAST_HASH_BY_FILE", mode[m], 1);
		/* No spare: every segment is fresh. */
		t_daemon_start(&d, "64MiB", "--set", "host_spare=0", NULL);
		unsetenv("TCAST_HASH_BY_FILE");
		c = t_connect(d.sock);
		import_ok(c, t_data("dtypes.safetensors"), NULL, &r);
		strcpy(ids[m][0], r.id);
		import_ok(c, t_data("tiny-llama"), NULL, &r);
		strcpy(ids[m][1], r.id);
		put_blob(c, "blob", 7, (9 << 20) + 4095, "cache", 0, ids[m][2]);
		tc_client_close(c);
		assert_int_equal(t_daemon_stop(&d), 0);
	}
	for (int k = 0; k < 3; k++)
		assert_string_equal(ids[0][k], ids[1][k]);
}

static void test_store__eviction_lru_and_leases(void **state)
{
	struct t_daemon small;
	struct t_daemon saved = D;
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], cc[TC_ID_BUFLEN],
		d[TC_ID_BUFLEN], e[TC_ID_BUFLEN], msg[512];
	tc_client *c;
	tc_artifact *h, *x;

	/* No spare: this test counts every byte of the budget. */
	t_daemon_start(&small, "3MiB", "--set", "host_spare=0", NULL);
	D = small;
	c = t_connect(D.sock);
	put_blob(c, "a", 1, 1 << 20, "cache", 0, a);
	put_blob(c, "b", 2, 1 << 20, "cache", 0, b);
	put_blob(c, "c", 3, 1 << 20, "cache", 0, cc);
	/* Touch a: b is now the least recently used. */
	assert_int_equal(tc_attach(c, a, &h), 0);
	tc_artifact_close(h);
	put_blob(c, "d", 4, 1 << 20, "cache", 0, d);
	assert_int_equal(tc_attach(c, b, &x), TC_ENOTFOUND);
	assert_int_equal(tc_attach(c, a, &h), 0); /* held from here on */
	/* c is LRU and unleased: evicted next, never a. */
	put_blob(c, "e", 5, 1 << 20, "cache", 0, e);
	assert_int_equal(tc_attach(c, cc, &x), TC_ENOTFOUND);
	assert_int_equal(((const uint8_t *)tc_artifact_data(h))[12345], 1);
	/* warm never evicts others: refused while the budget is full. */
	put_blob(c, "f", 6, 1 << 20, "warm", TC_ENOSPACE, NULL);
	/* pinned artifacts are never evicted. */
	assert_int_equal(tc_rm(c, d), 0);
	put_blob(c, "p", 7, 1 << 20, "pinned", 0, d);
	assert_int_equal(tc_rm(c, e), 0);
	put_blob(c, "g", 8, 1 << 20, "cache", 0, e);
	/* Now a (leased) and p (pinned) and g fill it; one more evicts g. */
	put_blob(c, "i", 9, 1 << 20, "cache", 0, NULL);
	assert_int_equal(tc_attach(c, e, &x), TC_ENOTFOUND);
	assert_int_equal(tc_attach(c, d, &x), 0);
	tc_artifact_close(x);
	/* Bigger than the whole budget: a clear error. */
	put_blob(c, "huge", 1, 8 << 20, "cache", TC_ENOSPACE, NULL);
	snprintf(msg, sizeof(msg), "%s", tc_client_errmsg(c));
	assert_non_null(strstr(msg, "budget"));
	/* Unknown and unsupported policies are refused by name. */
	put_blob(c, "x", 1, 10, "durable", TC_EPOLICY, NULL);
	put_blob(c, "x", 1, 10, "bogus", TC_EINVAL, NULL);
	assert_true(t_status_int(c, "evictions") >= 3);
	tc_artifact_close(h);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&small), 0);
	D = saved;
}

/* The spare: allocated at idle, taken by a put that fits, and given up
 * before any artifact is evicted for a request it cannot serve. */
static long long wait_spare(tc_client *c, long long want)
{
	for (int i = 0; i < 500; i++) {
		long long v = t_status_int(c, "host_spare_bytes");

		if (v == want)
			return v;
		usleep(10000);
	}
	return t_status_int(c, "host_spare_bytes");
}

static void test_store__spare_segment(void **state)
{
	struct t_daemon sd, saved = D;
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], x[TC_ID_BUFLEN];
	tc_client *c;
	tc_artifact *h;

	t_daemon_start(&sd, "8MiB", "--set", "host_spare=4MiB", NULL);
	D = sd;
	c = t_connect(D.sock);
	assert_int_equal(wait_spare(c, 4 << 20), 4 << 20);
	assert_int_equal(t_status_int(c, "host_used_bytes"), 0);
	{
		/* ls reports what artifacts use, like status: not the spare. */
		char *ls;
		json_t *j;

		assert_int_equal(tc_list_json(c, &ls), 0);
		j = json_loads(ls, 0, NULL);
		assert_int_equal(
			json_integer_value(json_object_get(j, "used_bytes")),
			0);
		json_decref(j);
		tc_free(ls);
	}
	put_blob(c, "a", 1, 2 << 20, "cache", 0, a); /* takes the spare */
	assert_int_equal(t_status_int(c, "host_used_bytes"), 2 << 20);
	assert_int_equal(wait_spare(c, 4 << 20), 4 << 20); /* refilled */
	assert_int_equal(tc_attach(c, a, &h), 0);
	assert_int_equal(((const uint8_t *)tc_artifact_data(h))[(2 << 20) - 1],
			 1);
	tc_artifact_close(h);
	/* 2 MiB used + 4 MiB spare: a 5 MiB put cannot use the spare; the
	 * spare goes, not the artifact. */
	put_blob(c, "b", 2, 5 << 20, "cache", 0, b);
	assert_int_equal(tc_attach(c, a, &h), 0);
	tc_artifact_close(h);
	assert_int_equal(t_status_int(c, "evictions"), 0);
	/* Full now (7 MiB of 8): no room for a spare, so none is made. */
	usleep(200000);
	assert_int_equal(t_status_int(c, "host_spare_bytes"), 0);
	put_blob(c, "x", 3, 1 << 20, "warm", 0, x);
	(void)b;
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&sd), 0);
	D = saved;
}

/* -------------------------------------------------------------- keys */

static void on_progress(uint64_t done, uint64_t total, void *arg)
{
	uint64_t *seen = arg;

	assert_true(done <= total);
	seen[0]++;
	seen[1] = total;
}

static void test_store__import_reports_progress(void **state)
{
	tc_client *c = t_connect(D.sock);
	uint64_t seen[2] = { 0, 0 };
	struct tc_opts o = { TC_OPT_PROGRESS, NULL, NULL, 0,
			     on_progress,     seen, 0,	  0 };
	struct tc_result r;

	assert_int_equal(tc_import(c, t_data("tiny-llama"), &o, &r), 0);
	assert_true(seen[0] >= 1);
	assert_int_equal(seen[1], r.bytes);
	tc_client_close(c);
}

static void test_store__keys_cas_and_history(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r1, r2;
	struct tc_opts o = { 0 };
	uint64_t gen;
	char *s;
	json_t *j;

	import_ok(c, t_data("dtypes.safetensors"), "model:x", &r1);
	import_ok(c, t_data("many-tensors.safetensors"), NULL, &r2);
	/* Re-publishing the same artifact is fine; moving needs CAS. */
	assert_int_equal(tc_key_set(c, "model:x", r1.id, 0, 0, &gen), 0);
	assert_int_equal(gen, 1);
	assert_int_equal(tc_key_set(c, "model:x", r2.id, 0, 0, &gen),
			 TC_ECONFLICT);
	assert_non_null(strstr(tc_client_errmsg(c), "compare-and-swap"));
	assert_int_equal(tc_key_set(c, "model:x", r2.id, 1, 7, &gen),
			 TC_ECONFLICT);
	assert_int_equal(tc_key_set(c, "model:x", r2.id, 1, 1, &gen), 0);
	assert_int_equal(gen, 2);
	/* An import onto a key that points elsewhere fails without CAS ... */
	o.field_mask = TC_OPT_KEY;
	o.key = "model:x";
	assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), &o, NULL),
			 TC_ECONFLICT);
	/* ... and moves it with the right expectation. */
	o.field_mask |= TC_OPT_EXPECT;
	o.expect_gen = 2;
	assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), &o, &r1),
			 0);
	assert_int_equal(r1.key_generation, 3);
	/* expect 0 = create only. */
	assert_int_equal(tc_key_set(c, "model:new", r1.id, 1, 0, &gen), 0);
	assert_int_equal(tc_key_set(c, "model:new", r2.id, 1, 0, &gen),
			 TC_ECONFLICT);
	assert_int_equal(tc_key_set(c, "bad\nkey", r1.id, 0, 0, &gen),
			 TC_EINVAL);
	assert_int_equal(tc_keys_json(c, "model:x", &s), 0);
	j = json_loads(s, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "generation")),
			 3);
	assert_int_equal(json_array_size(json_object_get(j, "history")), 3);
	json_decref(j);
	tc_free(s);
	tc_client_close(c);
}

/* ------------------------------------------------------------ export */

static void test_store__export_reimport(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r, r2;
	char path[512];

	import_ok(c, t_data("tiny-llama"), NULL, &r);
	snprintf(path, sizeof(path), "%s/out.safetensors", D.dir);
	assert_int_equal(tc_export(c, r.id, path), 0);
	import_ok(c, path, NULL, &r2);
	/* Same tensors, same bytes: the tensor order of the file differs,
	 * so compare through the manifest rather than the id. */
	{
		tc_artifact *a;

		assert_int_equal(tc_attach(c, r2.id, &a), 0);
		check_manifest(a, "tiny-llama");
		tc_artifact_close(a);
	}
	tc_client_close(c);
}

/* ---------------------------------------------------------- hostile */

static void test_store__hostile_files(void **state)
{
	tc_client *c = t_connect(D.sock);
	char dir[512], path[1024];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s", t_data("hostile/st"));
	d = opendir(dir);
	if (!d)
		skip();
	while ((e = readdir(d))) {
		int rc;

		if (!strstr(e->d_name, ".safetensors") ||
		    strstr(e->d_name, "_ok"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		rc = tc_import(c, path, NULL, NULL);
		if (rc >= 0)
			fail_msg("hostile file '%s' was accepted", e->d_name);
		assert_true(strlen(tc_client_errmsg(c)) > 0);
		n++;
	}
	closedir(d);
	assert_true(n > 10);
	/* Still serving. */
	assert_true(t_status_int(c, "pid") > 0);
	tc_client_close(c);
}

/* Frames that break the rules end that connection only. */
static void test_store__hostile_frames(void **state)
{
	static const uint8_t junk[TC_FRAME_HDR] = { 'x', 'y', 'z' };
	tc_client *c = t_connect(D.sock);
	struct tc__frame_hdr h;
	uint8_t *body, big[TC_FRAME_HDR];
	int fd, p[2], status;

	/* Bad magic: an error reply says why, then the connection ends. */
	fd = t_raw_connect(D.sock);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, TC_EPROTO);
	free(body);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), -1);
	free(body);
	close(fd);
	/* A request before HELLO. */
	fd = t_raw_connect(D.sock);
	t_raw_send(fd, TC_MSG_LIST, 1, NULL, 0, NULL, 0);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, TC_EPROTO);
	free(body);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), -1);
	free(body);
	close(fd);
	/* A body length over the limit. */
	fd = t_raw_connect(D.sock);
	{
		struct tc__frame_hdr bh = {
			TC_PROTO_VERSION, TC_MSG_HELLO, 0, 1, 0xffffffffu, 0
		};

		tc__frame_encode(&bh, big);
		assert_int_equal(write(fd, big, sizeof(big)),
				 (ssize_t)sizeof(big));
	}
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, TC_ELIMIT);
	free(body);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), -1);
	free(body);
	close(fd);
	/* fds on a frame that takes none, and fds with no frame at all. */
	assert_int_equal(pipe(p), 0);
	fd = t_raw_connect(D.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	t_raw_send(fd, TC_MSG_LIST, 2, NULL, 0, p, 2);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, TC_EPROTO); /* LIST takes no fds */
	free(body);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), -1);
	free(body);
	close(fd);
	/* fds that no frame declares: the frame is served, then the
	 * connection ends; the fds are closed, not leaked. */
	fd = t_raw_connect(D.sock);
	assert_int_equal(t_raw_hello(fd), 0);
	{
		struct tc__frame_hdr lh = {
			TC_PROTO_VERSION, TC_MSG_LIST, 0, 3, 0, 0
		};
		struct iovec iov = { big, sizeof(big) };

		tc__frame_encode(&lh, big);
		assert_true(tc__fdpass_send(fd, &iov, 1, p, 2) > 0);
	}
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
	memcpy(&status, body, 4);
	assert_int_equal(status, 0);
	free(body);
	assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), -1);
	free(body);
	close(fd);
	close(p[0]);
	close(p[1]);
	/* A truncated body then EOF; a connection that never says HELLO. */
	fd = t_raw_connect(D.sock);
	{
		struct tc__frame_hdr th = {
			TC_PROTO_VERSION, TC_MSG_HELLO, 0, 1, 100, 0
		};

		tc__frame_encode(&th, big);
		assert_int_equal(write(fd, big, sizeof(big)),
				 (ssize_t)sizeof(big));
		assert_int_equal(write(fd, "abc", 3), 3);
	}
	close(fd);
	/* One byte per write still works. */
	fd = t_raw_connect(D.sock);
	{
		struct tc__buf b = TC_BUF_INIT;
		size_t off = tc__frame_begin(&b, TC_MSG_HELLO, 0, 9, 0);

		tc__buf_put_u32(&b, TC_PROTO_VERSION);
		tc__buf_put_u32(&b, 1);
		tc__buf_put_str(&b, "slow");
		tc__frame_finish(&b, off);
		for (size_t i = 0; i < b.len; i++) {
			assert_int_equal(write(fd, b.data + i, 1), 1);
			usleep(100);
		}
		tc__buf_release(&b);
		assert_int_equal(t_raw_recv(fd, &h, &body, NULL, NULL), 0);
		memcpy(&status, body, 4);
		assert_int_equal(status, 0);
		assert_int_equal(h.req_id, 9);
		free(body);
	}
	close(fd);
	/* The daemon kept serving everyone else. */
	assert_true(t_status_int(c, "protocol_errors") >= 5);
	tc_client_close(c);
}

/* ------------------------------------------------------- concurrency */

struct worker_arg {
	const char *ref;
	int iters;
	int failures;
};

static void *attach_loop(void *p)
{
	struct worker_arg *w = p;
	tc_client *c;

	if (tc_client_connect(D.sock, &c, NULL, 0) < 0) {
		w->failures = w->iters;
		return NULL;
	}
	for (int i = 0; i < w->iters; i++) {
		tc_artifact *a;

		if (tc_attach(c, w->ref, &a) < 0) {
			w->failures++;
			continue;
		}
		if (tc_artifact_count(a) != 1200)
			w->failures++;
		tc_artifact_close(a);
	}
	tc_client_close(c);
	return NULL;
}

static void test_store__concurrent_clients_and_a_stalled_one(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct worker_arg w[8];
	pthread_t t[8];
	struct tc_result r;
	int stalled, silent, fd0 = t_count_fds();

	import_ok(c, t_data("many-tensors.safetensors"), "conc:many", &r);
	/* One client sends half a frame and stalls; another floods requests
	 * and never reads replies. */
	stalled = t_raw_connect(D.sock);
	assert_int_equal(write(stalled, "TSC1", 4), 4);
	silent = t_raw_connect(D.sock);
	assert_int_equal(t_raw_hello(silent), 0);
	tc__sock_set_nonblock(silent, 1);
	{
		struct tc__buf b = TC_BUF_INIT;

		tc__buf_put_str(&b, "conc:many");
		for (int i = 0; i < 2000; i++)
			if (t_raw_send(silent, TC_MSG_INSPECT,
				       100 + (uint32_t)i, b.data, b.len, NULL,
				       0) < 0)
				break;
		tc__buf_release(&b);
	}
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker_arg){ "conc:many", 300, 0 };
		pthread_create(&t[i], NULL, attach_loop, &w[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	close(stalled);
	close(silent);
	/* Every lease went back.  Releases are fire-and-forget on the
	 * workers' own connections, so the last of them may still be on
	 * its way when our inspect arrives: wait for them, a bounded time. */
	{
		json_int_t leases = -1;

		for (int tries = 0; tries < 500 && leases != 0; tries++) {
			char *s;
			json_t *j;

			if (tries)
				usleep(10000);
			assert_int_equal(tc_inspect_json(c, "conc:many", &s),
					 0);
			j = json_loads(s, 0, NULL);
			leases = json_integer_value(
				json_object_get(j, "leases"));
			json_decref(j);
			tc_free(s);
		}
		assert_int_equal(leases, 0);
	}
	assert_int_equal(t_count_fds(), fd0);
	tc_client_close(c);
}

static void test_store__bad_requests_keep_connection(void **state)
{
	tc_client *c = t_connect(D.sock);
	tc_artifact *a;
	char big[8192];

	assert_int_equal(tc_attach(c, "no:such:key", &a), TC_ENOTFOUND);
	assert_non_null(strstr(tc_client_errmsg(c), "no:such:key"));
	assert_int_equal(
		tc_attach(
			c,
			"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			&a),
		TC_ENOTFOUND);
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/* An oversized field is refused; the connection goes on. */
	assert_int_equal(tc_attach(c, big, &a), TC_ELIMIT);
	assert_int_equal(tc_import(c, "/nonexistent/file", NULL, NULL),
			 -ENOENT);
	assert_int_equal(tc_import(c, "/dev/null", NULL, NULL), TC_EINVAL);
	assert_true(t_status_int(c, "pid") > 0);
	tc_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store__roundtrip_testdata),
		cmocka_unit_test(test_store__put_roundtrip),
		cmocka_unit_test(test_store__put_write_through_the_file),
		cmocka_unit_test(test_store__file_and_mapping_fills_agree),
		cmocka_unit_test(test_store__sealed_memfd_refuses_writes),
		cmocka_unit_test(test_store__seal_with_writable_mapping_fails),
		cmocka_unit_test(test_store__client_crash_releases),
		cmocka_unit_test(test_store__rm_while_mapped),
		cmocka_unit_test(test_store__reput_of_removed_leased_content),
		cmocka_unit_test(test_store__eviction_lru_and_leases),
		cmocka_unit_test(test_store__spare_segment),
		cmocka_unit_test(test_store__import_reports_progress),
		cmocka_unit_test(test_store__keys_cas_and_history),
		cmocka_unit_test(test_store__export_reimport),
		cmocka_unit_test(test_store__hostile_files),
		cmocka_unit_test(test_store__hostile_frames),
		cmocka_unit_test(
			test_store__concurrent_clients_and_a_stalled_one),
		cmocka_unit_test(test_store__bad_requests_keep_connection),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
