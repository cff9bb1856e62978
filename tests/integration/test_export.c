/*
 * test_export.c - export is safe on shared folders (issue 10 finding 10):
 * a temporary another user planted is never written, a FIFO, a device node,
 * a folder or a symlink is never replaced, an existing file only with
 * force (API flag and CLI --force), and the new file's mode comes from the
 * umask.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

static struct t_daemon D;
static char ID[TC_ID_BUFLEN];

static int setup(void **state)
{
	struct tc_tensor_desc d = { "x", TC_DTYPE_U8, 1, (uint64_t[]){ 64 } };
	struct tc_result r;
	tc_client *c;
	tc_put *p;

	t_daemon_start(&D, "64MiB", NULL);
	c = t_connect(D.sock);
	assert_int_equal(tc_put_begin(c, &d, 1, NULL, NULL, &p), 0);
	memset(tc_put_data(p, 0), 0x5a, 64);
	assert_int_equal(tc_put_commit(p, &r), 0);
	memcpy(ID, r.id, sizeof(ID));
	tc_client_close(c);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(D.dir);
	return 0;
}

static int export(const char *path, uint32_t flags, char *msg, size_t len)
{
	tc_client *c = t_connect(D.sock);
	int rc = tc_export_ex(c, ID, path, flags);

	snprintf(msg, len, "%s", tc_client_errmsg(c));
	tc_client_close(c);
	return rc;
}

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", D.dir, name);
}

/* Count the entries of D.dir whose name starts with `prefix`. */
static int count_prefix(const char *prefix)
{
	char cmd[700], buf[32] = { 0 };
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | grep -c '^%s' || true", D.dir,
		 prefix);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(buf, sizeof(buf), p));
	pclose(p);
	return atoi(buf);
}

static void test_export__never_replaces_special_files(void **state)
{
	char fifo[400], dev[400], dir[400], lnk[400], msg[512];
	struct stat st;

	path_in(fifo, sizeof(fifo), "fifo");
	assert_int_equal(mkfifo(fifo, 0666), 0);
	assert_int_equal(export(fifo, TC_EXPORT_FORCE, msg, sizeof(msg)),
			 TC_EINVAL);
	assert_non_null(strstr(msg, "a FIFO"));
	assert_int_equal(lstat(fifo, &st), 0);
	assert_true(S_ISFIFO(st.st_mode));

	/* A device node like /dev/null (made here, not the real one). */
	path_in(dev, sizeof(dev), "null");
	if (mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0) {
		assert_int_equal(export(dev, TC_EXPORT_FORCE, msg, sizeof(msg)),
				 TC_EINVAL);
		assert_non_null(strstr(msg, "character device"));
		assert_int_equal(lstat(dev, &st), 0);
		assert_true(S_ISCHR(st.st_mode));
	} else {
		print_message("mknod: %s (not root?): device case skipped\n",
			      strerror(errno));
	}

	path_in(dir, sizeof(dir), "adir");
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(export(dir, TC_EXPORT_FORCE, msg, sizeof(msg)),
			 TC_EINVAL);
	assert_non_null(strstr(msg, "a folder"));

	/* A symlink to the FIFO: neither the link nor its target changes. */
	path_in(lnk, sizeof(lnk), "link");
	assert_int_equal(symlink(fifo, lnk), 0);
	assert_int_equal(export(lnk, TC_EXPORT_FORCE, msg, sizeof(msg)),
			 TC_EINVAL);
	assert_non_null(strstr(msg, "a symlink"));
	assert_int_equal(lstat(lnk, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(stat(fifo, &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	/* And no temporaries are left behind by any refusal. */
	assert_int_equal(count_prefix("fifo."), 0);
	assert_int_equal(count_prefix("null."), 0);
	assert_int_equal(count_prefix("link."), 0);
}

static void test_export__existing_file_needs_force(void **state)
{
	char out[400], msg[512], cmd[1200], bin[600], buf[8] = { 0 };
	struct stat st;
	int fd, rc;

	path_in(out, sizeof(out), "existing.safetensors");
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);
	assert_int_equal(export(out, 0, msg, sizeof(msg)), TC_EEXIST);
	assert_non_null(strstr(msg, "--force"));
	fd = open(out, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	assert_string_equal(buf, "keep");
	/* The CLI: refused without --force (exit 1, TC_EEXIST), then done. */
	if (getenv("TCAST_BIN"))
		snprintf(bin, sizeof(bin), "%s", getenv("TCAST_BIN"));
	else
		snprintf(bin, sizeof(bin), "%s/tcast", TC_TEST_BIN);
	snprintf(cmd, sizeof(cmd),
		 "'%s' --socket '%s' export %s '%s' 2>&1 | grep -q TC_EEXIST",
		 bin, D.sock, ID, out);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' export %s '%s' --force",
		 bin, D.sock, ID, out);
	rc = system(cmd);
	assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
	assert_int_equal(stat(out, &st), 0);
	assert_true(S_ISREG(st.st_mode) && st.st_size > 64);
	/* And through the API flag. */
	assert_int_equal(export(out, TC_EXPORT_FORCE, msg, sizeof(msg)), 0);
	assert_int_equal(count_prefix("existing.safetensors."), 0);
}

static void test_export__mode_from_umask(void **state)
{
	char out[400], msg[512];
	struct stat st;
	mode_t old = umask(022);

	path_in(out, sizeof(out), "m644.safetensors");
	assert_int_equal(export(out, 0, msg, sizeof(msg)), 0);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	umask(077);
	path_in(out, sizeof(out), "m600.safetensors");
	assert_int_equal(export(out, 0, msg, sizeof(msg)), 0);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	umask(002);
	path_in(out, sizeof(out), "m664.safetensors");
	assert_int_equal(export(out, 0, msg, sizeof(msg)), 0);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0664);
	umask(old);
}

/*
 * Another user plants the temporary name the exporter would use (the old
 * "<path>.tmp.<pid>", which anyone can predict) as a file it owns and may
 * write: the export must neither write into it nor end up owned by it.
 */
static void test_export__planted_temporary_is_not_used(void **state)
{
	char out[400], planted[500], msg[512], go;
	int p[2], status;
	struct stat st;
	pid_t pid;

	if (geteuid() != 0) {
		print_message("not root: planted-file case skipped\n");
		return;
	}
	path_in(out, sizeof(out), "shared.safetensors");
	assert_int_equal(chmod(D.dir, 01777), 0); /* a shared folder */
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[1]);
		if (read(p[0], &go, 1) != 1)
			_exit(2);
		_exit(export(out, 0, msg, sizeof(msg)) == 0 ? 0 : 1);
	}
	close(p[0]);
	snprintf(planted, sizeof(planted), "%s.tmp.%d", out, (int)pid);
	{
		int fd = open(planted, O_WRONLY | O_CREAT | O_EXCL, 0666);

		assert_true(fd >= 0);
		close(fd);
		assert_int_equal(chown(planted, 65534, 65534), 0);
		assert_int_equal(chmod(planted, 0666), 0);
	}
	assert_int_equal(write(p[1], "g", 1), 1);
	close(p[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(stat(planted, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(chmod(D.dir, 0700), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_export__never_replaces_special_files),
		cmocka_unit_test(test_export__existing_file_needs_force),
		cmocka_unit_test(test_export__mode_from_umask),
		cmocka_unit_test(test_export__planted_temporary_is_not_used),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
