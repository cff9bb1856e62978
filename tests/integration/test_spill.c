/*
 * test_spill.c - the cache policy's spill (docs/durable.md, "Spill"): a
 * real daemon with spill_dir, driven through libtcast.  Cache artifacts
 * evicted for room are written to the spill folder and load back with
 * their bytes; the folder's own budget removes the oldest copies; a write
 * that fails or a read-only folder drops the artifact and the daemon
 * serves on; a corrupted copy is refused by its chunk digest and removed;
 * warm and pinned never spill; a restart empties the folder.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define MIB (1u << 20)
#define ART (20 * MIB) /* one test artifact; the host budget holds 3 */

static struct t_daemon D;
static char base[300], spill[400], setdir[460], setbytes[64], root[420];

/* A daemon with a 64 MiB host budget spilling to `where` (NULL: a fresh
 * folder) within `budget`. */
static void start(const char *where, const char *budget)
{
	char *dir = t_tmpdir();

	snprintf(base, sizeof(base), "%s", dir);
	free(dir);
	if (where)
		snprintf(spill, sizeof(spill), "%s", where);
	else
		snprintf(spill, sizeof(spill), "%s/spill", base);
	snprintf(setdir, sizeof(setdir), "spill_dir=%s", spill);
	snprintf(setbytes, sizeof(setbytes), "spill_bytes=%s", budget);
	snprintf(root, sizeof(root), "%s/tcast-spill", spill);
	t_daemon_start(&D, "64MiB", "--set", setdir, "--set", setbytes, "--set",
		       "host_spare=0", NULL);
}

static void finish(void)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(base);
}

/* Put `bytes` bytes of `fill` under `key`; the id into `id`. */
static int put_n(tc_client *c, const char *key, const char *policy,
		 uint8_t fill, uint64_t bytes, char *id)
{
	struct tc_opts o = { 0 };

	o.field_mask = TC_OPT_POLICY | TC_OPT_KEY;
	o.key = key;
	o.policy = policy;
	return t_put_fill(c, &o, fill, bytes, id);
}

static int put(tc_client *c, const char *key, const char *policy, uint8_t fill,
	       char *id)
{
	return put_n(c, key, policy, fill, ART, id);
}

/* Attach `ref`: every byte must be `fill`. */
static int check(tc_client *c, const char *ref, uint8_t fill)
{
	return t_check_fill(c, ref, fill, ART);
}

static long long spill_int(tc_client *c, const char *field)
{
	json_t *st = t_status(c), *sp = json_object_get(st, "spill");
	long long v;

	assert_true(json_is_object(sp));
	v = json_integer_value(json_object_get(sp, field));
	json_decref(st);
	return v;
}

/* Wait until no spill write runs (they are off the loop). */
static void settle(tc_client *c)
{
	double end = t_now_ms() + 30000;

	while (spill_int(c, "writing") > 0) {
		assert_true(t_now_ms() < end);
		usleep(10000);
	}
}

static bool spilled_on_disk(const char *id)
{
	char path[700];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s/tcast.data", root,
		 id + strlen("tc2:"));
	return stat(path, &st) == 0;
}

/* Evicted cache artifacts are spilled and load back, by key and id, with
 * their bytes; a request that comes while the write runs waits for it. */
static void test_spill__evicted_cache_reloads(void **state)
{
	char id[6][TC_ID_BUFLEN], key[16];
	tc_client *c;

	start(NULL, "1GiB");
	c = t_connect(D.sock);
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(c, key, "cache", (uint8_t)(i + 1), id[i]),
				 0);
	}
	/* Right after the eviction of k1 (its write may still run). */
	assert_int_equal(check(c, "k1", 2), 0);
	settle(c);
	assert_true(spilled_on_disk(id[0]));
	assert_true(spill_int(c, "spilled") >= 2);
	assert_int_equal(spill_int(c, "dropped"), 0);
	assert_int_equal(check(c, "k0", 1), 0);
	assert_int_equal(check(c, id[0], 1), 0);
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(check(c, key, (uint8_t)(i + 1)), 0);
	}
	settle(c);
	assert_true(spill_int(c, "reloads") >= 3);
	assert_int_equal(spill_int(c, "reload_failures"), 0);
	/* rm of a spilled artifact removes its copy too. */
	assert_int_equal(put(c, "k5", "cache", 6, id[5]), 0);
	settle(c);
	assert_int_equal(tc_rm(c, "k0"), 0);
	assert_int_equal(check(c, id[0], 1), TC_ENOTFOUND);
	assert_false(spilled_on_disk(id[0]));
	tc_client_close(c);
	finish();
}

/* spill_bytes holds two copies: the oldest spilled ones go. */
static void test_spill__budget_removes_oldest(void **state)
{
	char id[8][TC_ID_BUFLEN], key[16];
	tc_client *c;

	start(NULL, "45MiB");
	c = t_connect(D.sock);
	for (int i = 0; i < 7; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(c, key, "cache", (uint8_t)(i + 1), id[i]),
				 0);
		settle(c);
	}
	/* k0..k3 were evicted in order; only the last two copies fit. */
	assert_int_equal(spill_int(c, "spilled"), 4);
	assert_int_equal(spill_int(c, "removed"), 2);
	assert_int_equal(spill_int(c, "artifacts"), 2);
	assert_true(spill_int(c, "bytes") <= 45 * MIB);
	assert_false(spilled_on_disk(id[0]));
	assert_false(spilled_on_disk(id[1]));
	assert_int_equal(check(c, "k0", 1), TC_ENOTFOUND);
	assert_int_equal(check(c, "k3", 4), 0);
	/* An artifact larger than spill_bytes is dropped, not spilled. */
	assert_int_equal(put_n(c, "big", "cache", 9, 50 * MIB, NULL), 0);
	assert_int_equal(put(c, "k7", "cache", 8, NULL), 0);
	settle(c);
	assert_true(spill_int(c, "dropped") >= 1);
	assert_int_equal(check(c, "big", 9), TC_ENOTFOUND);
	assert_true(spill_int(c, "bytes") <= 45 * MIB);
	tc_client_close(c);
	finish();
}

/* A write that fails (fsync failpoint), then a read-only folder: the
 * evicted artifact is dropped, counted, and the daemon serves on. */
static void test_spill__failures_drop_and_serve_on(void **state)
{
	char id[5][TC_ID_BUFLEN], key[16], *dir, mnt[300];
	tc_client *c;

	putenv((char *)"TCAST_FAILPOINTS=durable_fsync=");
	start(NULL, "1GiB");
	unsetenv("TCAST_FAILPOINTS");
	c = t_connect(D.sock);
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(c, key, "cache", (uint8_t)(i + 1), id[i]),
				 0);
	}
	/* Waits for the failing write, then says why it is gone. */
	assert_int_equal(check(c, "k0", 1), TC_ENOTFOUND);
	settle(c);
	assert_int_equal(spill_int(c, "spilled"), 0);
	assert_true(spill_int(c, "dropped") >= 1);
	assert_int_equal(spill_int(c, "artifacts"), 0);
	assert_int_equal(check(c, "k3", 4), 0);
	assert_int_equal(put(c, "k4", "cache", 5, id[4]), 0);
	assert_int_equal(check(c, "k4", 5), 0);
	tc_client_close(c);
	finish();

	dir = t_tmpdir();
	snprintf(mnt, sizeof(mnt), "%s/ro", dir);
	mkdir(mnt, 0700);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=64m") < 0) {
		t_rmtree(dir);
		free(dir);
		skip();
	}
	assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL),
			 0);
	start(mnt, "1GiB");
	c = t_connect(D.sock);
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(c, key, "cache", (uint8_t)(i + 1), id[i]),
				 0);
	}
	assert_int_equal(check(c, "k0", 1), TC_ENOTFOUND);
	assert_true(spill_int(c, "dropped") >= 2);
	assert_int_equal(spill_int(c, "spilled"), 0);
	{
		json_t *st = t_status(c), *sp = json_object_get(st, "spill");

		assert_string_equal(
			json_string_value(json_object_get(sp, "state")),
			"unavailable");
		json_decref(st);
	}
	assert_int_equal(check(c, "k4", 5), 0);
	tc_client_close(c);
	finish();
	umount2(mnt, MNT_DETACH);
	t_rmtree(dir);
	free(dir);
}

/* A spilled copy changed on disk: TC_EDIGEST naming the chunk, nothing
 * served; the copy is removed, so the next request finds nothing. */
static void test_spill__corrupt_copy_refused(void **state)
{
	char id[4][TC_ID_BUFLEN], key[16], path[700];
	tc_client *c;
	int fd;

	start(NULL, "1GiB");
	c = t_connect(D.sock);
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(c, key, "cache", (uint8_t)(i + 1), id[i]),
				 0);
	}
	settle(c);
	assert_true(spilled_on_disk(id[0]));
	snprintf(path, sizeof(path), "%s/%s/tcast.data", root,
		 id[0] + strlen("tc2:"));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\xee", 1, 5 * MIB), 1);
	close(fd);
	assert_int_equal(check(c, "k0", 1), TC_EDIGEST);
	assert_non_null(strstr(tc_client_errmsg(c), "chunk 1"));
	assert_int_equal(spill_int(c, "reload_failures"), 1);
	assert_int_equal(check(c, "k0", 1), TC_ENOTFOUND);
	assert_false(spilled_on_disk(id[0]));
	assert_int_equal(check(c, "k3", 4), 0);
	tc_client_close(c);
	finish();
}

/* warm and pinned reject instead of evicting, so nothing spills; a
 * restart empties the folder (cache does not survive it). */
static void test_spill__warm_pinned_and_restart(void **state)
{
	static const char *const pols[] = { "warm", "pinned" };
	char key[16], junk[600], id[TC_ID_BUFLEN];
	tc_client *c;

	for (int p = 0; p < 2; p++) {
		start(NULL, "1GiB");
		c = t_connect(D.sock);
		for (int i = 0; i < 3; i++) {
			snprintf(key, sizeof(key), "k%d", i);
			if (put(c, key, pols[p], (uint8_t)(i + 1), NULL))
				fail_msg("%s %s: %s", pols[p], key,
					 tc_client_errmsg(c));
		}
		assert_int_equal(put(c, "more", pols[p], 2, NULL), TC_ENOSPACE);
		settle(c);
		assert_int_equal(spill_int(c, "spilled"), 0);
		assert_int_equal(spill_int(c, "artifacts"), 0);
		assert_int_equal(check(c, "k0", 1), 0);
		tc_client_close(c);
		if (p == 0) {
			finish();
			continue;
		}
		/* Restart: what was spilled (and anything else in the
		 * folder) is gone. */
		c = t_connect(D.sock);
		assert_int_equal(tc_rm(c, "k0"), 0);
		assert_int_equal(tc_rm(c, "k1"), 0);
		assert_int_equal(tc_rm(c, "k2"), 0);
		for (int i = 0; i < 4; i++) {
			snprintf(key, sizeof(key), "c%d", i);
			assert_int_equal(
				put(c, key, "cache", (uint8_t)(10 + i), id), 0);
		}
		settle(c);
		assert_true(spill_int(c, "artifacts") >= 1);
		tc_client_close(c);
		snprintf(junk, sizeof(junk), "%s/.tmp-w-left", root);
		assert_int_equal(mkdir(junk, 0700), 0);
		kill(D.pid, SIGTERM);
		assert_int_equal(t_wait_status(D.pid), 0);
		t_daemon_restart(&D, "64MiB", "--set", setdir, "--set",
				 setbytes, "--set", "host_spare=0", NULL);
		c = t_connect(D.sock);
		assert_int_equal(spill_int(c, "artifacts"), 0);
		{
			DIR *dir = opendir(root);
			struct dirent *e;
			int n = 0;

			assert_non_null(dir);
			while ((e = readdir(dir)))
				n += e->d_name[0] != '.' ||
				     !strncmp(e->d_name, ".tmp", 4);
			closedir(dir);
			assert_int_equal(n, 0);
		}
		assert_int_equal(check(c, "c0", 10), TC_ENOTFOUND);
		tc_client_close(c);
		finish();
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spill__evicted_cache_reloads),
		cmocka_unit_test(test_spill__budget_removes_oldest),
		cmocka_unit_test(test_spill__corrupt_copy_refused),
		cmocka_unit_test(test_spill__warm_pinned_and_restart),
		cmocka_unit_test(test_spill__failures_drop_and_serve_on),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
