/*
 * test_names.c - names are checked at the door (issue 10 finding 11): keys,
 * client names, paths, tensor names, metadata keys and values must be valid
 * UTF-8 without control characters and within their limits, and the tensor
 * name "__metadata__" is refused at put.  Each refusal names the field and
 * the byte; nothing refused shows up (or vanishes) in ls afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "proto/proto.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

static struct t_daemon D;

static int setup(void **state)
{
	t_daemon_start(&D, "64MiB", NULL);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(D.dir);
	return 0;
}

static void must_say(tc_client *c, const char *needle)
{
	if (!strstr(tc_client_errmsg(c), needle))
		fail_msg("message '%s' does not say '%s'", tc_client_errmsg(c),
			 needle);
}

static int put1(tc_client *c, const char *name, const char *meta,
		const char *key)
{
	struct tc_tensor_desc d = { name, TC_DTYPE_U8, 1, (uint64_t[]){ 4 } };
	struct tc_opts o = { 0 };
	struct tc_result r;
	tc_put *p;
	int rc;

	if (key) {
		o.field_mask = TC_OPT_KEY;
		o.key = key;
	}
	rc = tc_put_begin(c, &d, 1, meta, &o, &p);
	if (rc < 0)
		return rc;
	memset(tc_put_data(p, 0), 1, 4);
	return tc_put_commit(p, &r);
}

/* ls is one JSON document listing every artifact the daemon holds. */
static size_t ls_count(tc_client *c)
{
	char *s;
	json_t *j;
	size_t n;

	assert_int_equal(tc_list_json(c, &s), 0);
	j = json_loads(s, 0, NULL);
	tc_free(s);
	assert_non_null(j);
	n = json_array_size(json_is_array(j) ? j :
					       json_object_get(j, "artifacts"));
	json_decref(j);
	return n;
}

static void test_names__tensor_names_and_metadata(void **state)
{
	tc_client *c = t_connect(D.sock);
	size_t n0 = ls_count(c);

	assert_int_equal(put1(c, "bad\xff", NULL, NULL), TC_EINVAL);
	must_say(c, "tensor #0 name: not valid UTF-8 at byte 3");
	assert_int_equal(put1(c, "over\xc0\xafx", NULL, NULL), TC_EINVAL);
	must_say(c, "not valid UTF-8 at byte 4");
	assert_int_equal(put1(c, "sur\xed\xa0\x80", NULL, NULL), TC_EINVAL);
	assert_int_equal(put1(c, "a\x1b[31mred", NULL, NULL), TC_EINVAL);
	must_say(c, "control character U+001B at byte 1");
	assert_int_equal(put1(c, "c1\xc2\x9b", NULL, NULL), TC_EINVAL);
	must_say(c, "control character U+009B at byte 2");
	assert_int_equal(put1(c, "__metadata__", NULL, NULL), TC_EINVAL);
	must_say(c, "reserved");
	assert_int_equal(put1(c, "ok", "{\"k\\u001b\": \"v\"}", NULL),
			 TC_EINVAL);
	must_say(c, "metadata key #0: control character U+001B at byte 1");
	assert_int_equal(put1(c, "ok", "{\"k\": \"v\\u0007\"}", NULL),
			 TC_EINVAL);
	must_say(c, "metadata value of 'k': control character U+0007");
	assert_int_equal(ls_count(c), n0);
	/* What is fine stays fine: UTF-8 names, newlines in values. */
	assert_int_equal(put1(c, "caf\xc3\xa9/\xe2\x82\xac", NULL, NULL), 0);
	assert_int_equal(put1(c, "ok", "{\"cfg\": \"a\\nb\\tc\"}", NULL), 0);
	assert_int_equal(ls_count(c), n0 + 2);
	tc_client_close(c);
}

static void test_names__keys(void **state)
{
	tc_client *c = t_connect(D.sock);
	char longkey[600];

	assert_int_equal(put1(c, "x", NULL, "k\xff"), TC_EINVAL);
	must_say(c, "key: not valid UTF-8 at byte 1");
	assert_int_equal(put1(c, "x", NULL, "k\xc2\x85"), TC_EINVAL);
	must_say(c, "key: control character U+0085 at byte 1");
	memset(longkey, 'k', 513);
	longkey[513] = '\0';
	assert_int_equal(put1(c, "x", NULL, longkey), TC_ELIMIT);
	must_say(c, "key: 513 bytes, the limit is 512");
	longkey[512] = '\0';
	assert_int_equal(put1(c, "x", NULL, longkey), 0);
	assert_int_equal(tc_key_set(c, "ok\x7f", "tc2:0", 0, 0, NULL),
			 TC_EINVAL);
	must_say(c, "key: control character U+007F at byte 2");
	tc_client_close(c);
}

static void test_names__client_name(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body = NULL;
	int fd = t_raw_connect(D.sock), fds[8], nfds = 0;
	size_t off;

	off = tc__frame_begin(&b, TC_MSG_HELLO, 0, 1, 0);
	tc__buf_put_u32(&b, TC_PROTO_VERSION);
	tc__buf_put_u32(&b, (uint32_t)getpid());
	tc__buf_put_str(&b, "prog\x1b]0;owned\x07");
	tc__frame_finish(&b, off);
	assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
	assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds), 0);
	/* status, then the message */
	{
		struct tc__cur cur;
		int32_t st;
		const char *m;
		size_t ml;

		tc__cur_init(&cur, body, h.body_len);
		assert_int_equal(tc__cur_read_i32(&cur, &st), 0);
		assert_int_equal(st, TC_EINVAL);
		assert_int_equal(tc__cur_read_str(&cur, 4096, &m, &ml), 0);
		assert_non_null(strstr(m, "client name: control character "
					  "U+001B at byte 4"));
	}
	free(body);
	tc__buf_release(&b);
	close(fd);
}

static void test_names__paths_and_names_in_files(void **state)
{
	tc_client *c = t_connect(D.sock);
	char path[500];
	static const char st[] =
		"{\"a\\u001bb\":{\"dtype\":\"U8\",\"shape\":[1],"
		"\"data_offsets\":[0,1]}}";
	uint64_t hl = sizeof(st) - 1;
	int fd;

	/* A file whose name is not UTF-8. */
	snprintf(path, sizeof(path), "%s/bad\xff.safetensors", D.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &hl, 8), 8);
	assert_int_equal(write(fd, st, hl), (ssize_t)hl);
	assert_int_equal(write(fd, "z", 1), 1);
	close(fd);
	assert_int_equal(tc_import(c, path, NULL, NULL), TC_EINVAL);
	must_say(c, "path: not valid UTF-8 at byte");
	/* A tensor name with an escaped control character, in a file. */
	snprintf(path, sizeof(path), "%s/esc.safetensors", D.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &hl, 8), 8);
	assert_int_equal(write(fd, st, hl), (ssize_t)hl);
	assert_int_equal(write(fd, "z", 1), 1);
	close(fd);
	{
		int rc = tc_import(c, path, NULL, NULL);

		assert_true(rc == TC_EINVAL || rc == TC_EBADFILE);
		must_say(c, "U+001B");
	}
	tc_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names__tensor_names_and_metadata),
		cmocka_unit_test(test_names__keys),
		cmocka_unit_test(test_names__client_name),
		cmocka_unit_test(test_names__paths_and_names_in_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
