/*
 * source.c - what an import reads: one safetensors file or a model folder.
 *
 * A folder is read through its model.safetensors.index.json when there is
 * one (only the shards it names; an unlisted *.safetensors is never picked
 * up), else model.safetensors, else its only *.safetensors file.  A Hugging
 * Face cache repository folder (models--org--name/) is followed through
 * refs/main to snapshots/<commit>/.
 *
 * Every shard is opened with openat(dirfd, name, O_NONBLOCK) relative to
 * the folder, where name is a plain basename (idx_parse.c checks), so an
 * index cannot reach outside the folder; symlinks are followed (snapshot
 * files are symlinks into ../../blobs/) and the target must be a regular
 * file, which fstat checks before any read, and O_NONBLOCK keeps a FIFO
 * from blocking the open.  All shard fds stay open for the loader, so the
 * shard count is checked against RLIMIT_NOFILE before the first open.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/map.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/errors.h"

#define ST_SUFFIX   ".safetensors"
#define SINGLE_NAME "model.safetensors"
/* fds left for the rest of the process when a folder's shards are open. */
#define FD_HEADROOM 64
/* Names listed in the "several files and no index" message. */
#define LIST_NAMES 4
/* open_hf_repo: the folder has no refs/main. */
#define NOT_HF_REPO 1
/* open_native: the folder has no tcast.manifest.json. */
#define NOT_NATIVE 2

static const char *kind_of(mode_t m)
{
	if (S_ISDIR(m))
		return "a folder";
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISLNK(m))
		return "a symlink";
	return "not a regular file";
}

void tc__source_free(struct tc__source *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < s->nfiles; i++) {
		if (s->files[i].fd >= 0)
			close(s->files[i].fd);
		tc__free(s->files[i].name);
	}
	tc__free(s->files);
	tc__free(s->expect_chunks);
	tc__table_release(&s->table);
	tc__free(s->display);
	tc__free(s);
}

/* Allocate files[] with every fd at -1, so cleanup closes only opened ones. */
static int alloc_files(struct tc__source *s, uint32_t n)
{
	s->files = tc__calloc(n, sizeof(*s->files));
	if (!s->files)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		s->files[i].fd = -1;
	s->nfiles = n;
	return 0;
}

/*
 * Open `name` inside dirfd as a shard: O_NONBLOCK so a FIFO cannot block
 * the open, then fstat to require a regular file, then clear O_NONBLOCK
 * (the description is ours).  `where` is the folder's display name.
 */
static int open_shard(int dirfd, const char *name, const char *where, int *out,
		      char *err, size_t errlen)
{
	struct stat st;
	int fd, ret, fl;

	*out = -1;
	fd = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s/%s': %s", where, name,
			    tc_strerror(ret));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot stat '%s/%s': %s", where, name,
			    tc_strerror(ret));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen, "'%s/%s' is %s, not a regular file",
			    where, name, kind_of(st.st_mode));
		ret = TC_EBADFILE;
		goto out_close;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	*out = fd;
	return 0;

out_close:
	close(fd);
	return ret;
}

/* Parse the header of files[i] (already open) into `t`. */
static int read_shard(struct tc__source *s, uint32_t i, const char *where,
		      struct tc__table *t, char *err, size_t errlen)
{
	int ret = tc__st_read(s->files[i].fd, i, t, &s->files[i].size, err,
			      errlen);

	if (ret < 0) {
		if (where)
			tc__fmt_prefix(err, errlen, "%s/%s", where,
				       s->files[i].name);
		else
			tc__fmt_prefix(err, errlen, "%s", s->files[i].name);
	}
	return ret;
}

/* A source of one file, read through `fd` (dup'd, the caller keeps fd). */
static int open_file(struct tc__source *s, int fd, const char *name,
		     const char *where, char *err, size_t errlen)
{
	int ret = alloc_files(s, 1);

	if (ret < 0)
		return ret;
	s->files[0].name = tc__strdup(name);
	if (!s->files[0].name)
		return -ENOMEM;
	s->files[0].fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (s->files[0].fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot dup the fd of '%s': %s",
			    s->display, tc_strerror(ret));
		return ret;
	}
	return read_shard(s, 0, where, &s->table, err, errlen);
}

/* ------------------------------------------------------------ index folder */

static int read_index(const char *where, struct tc__index *idx, int fd,
		      char *err, size_t errlen)
{
	struct stat st;
	size_t got;
	char *buf;
	int ret;

	if (fstat(fd, &st) < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot stat '%s/%s': %s", where,
			    TC_IDX_NAME, tc_strerror(ret));
		return ret;
	}
	if (!S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen, "'%s/%s' is %s, not a regular file",
			    where, TC_IDX_NAME, kind_of(st.st_mode));
		return TC_EBADINDEX;
	}
	if ((uint64_t)st.st_size > TC_IDX_MAX_BYTES) {
		tc__fmt_err(err, errlen,
			    "%s/%s: index is %llu bytes, more than %llu", where,
			    TC_IDX_NAME, (unsigned long long)st.st_size,
			    (unsigned long long)TC_IDX_MAX_BYTES);
		return TC_ELIMIT;
	}
	buf = tc__malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	ret = tc__pread_full(fd, buf, (size_t)st.st_size, 0, &got);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot read '%s/%s': %s", where,
			    TC_IDX_NAME, tc_strerror(ret));
		goto out_free_buf;
	}
	if (got != (size_t)st.st_size) {
		tc__fmt_err(err, errlen, "%s/%s: file shrank while being read",
			    where, TC_IDX_NAME);
		ret = TC_EBADINDEX;
		goto out_free_buf;
	}
	ret = tc__idx_parse(buf, got, idx, err, errlen);
	if (ret < 0)
		tc__fmt_prefix(err, errlen, "%s/%s", where, TC_IDX_NAME);
out_free_buf:
	tc__free(buf);
	return ret;
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

static int cmp_str_ptr_plain(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_entry_name(const void *a, const void *b, void *arg)
{
	const struct tc__index_entry *e = arg;

	return strcmp(e[*(const uint32_t *)a].tensor,
		      e[*(const uint32_t *)b].tensor);
}

struct lookup {
	const char *name;
	const struct tc__index_entry *e;
};

static int cmp_lookup(const void *key, const void *elt, void *arg)
{
	const struct lookup *k = key;

	(void)arg;
	return strcmp(k->name, k->e[*(const uint32_t *)elt].tensor);
}

/* bsearch with a context argument (glibc has none). */
static const uint32_t *find_entry(const uint32_t *ord, uint32_t n,
				  const struct lookup *k)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = cmp_lookup(k, &ord[mid], NULL);

		if (c == 0)
			return &ord[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/*
 * hostile-inputs.md 1.2.4: every index entry is in the shard it names and
 * every shard tensor is in the index under that shard.  Since names are
 * unique within a shard and in the index, this also rejects a tensor that
 * appears in two shards.  `map[shard id]` is the file index of that shard.
 */
static int cross_check(struct tc__source *s, const struct tc__index *idx,
		       const uint32_t *map, const char *where, char *err,
		       size_t errlen)
{
	char q[TC_FMT_QUOTE], q2[TC_FMT_QUOTE];
	uint32_t *ord;
	bool *seen;
	int ret = 0;

	ord = tc__reallocarray(NULL, idx->nentries, sizeof(*ord));
	seen = tc__calloc(idx->nentries, sizeof(*seen));
	if (!ord || !seen) {
		ret = -ENOMEM;
		goto out_free_lookup;
	}
	for (uint32_t i = 0; i < idx->nentries; i++)
		ord[i] = i;
	qsort_r(ord, idx->nentries, sizeof(*ord), cmp_entry_name, idx->entries);
	for (uint32_t i = 0; i < s->table.ntensors; i++) {
		const struct tc__tensor *x = &s->table.tensors[i];
		struct lookup k = { x->name, idx->entries };
		const uint32_t *hit = find_entry(ord, idx->nentries, &k);
		const char *file = s->files[x->src_file].name;

		if (!hit) {
			tc__fmt_err(err, errlen,
				    "%s/%s: tensor '%s' is not in the index",
				    where, file,
				    tc__fmt_quote(q, x->name, strlen(x->name)));
			ret = TC_EBADINDEX;
			goto out_free_lookup;
		}
		if (map[idx->entries[*hit].shard] != x->src_file) {
			const char *other =
				idx->shards[idx->entries[*hit].shard];

			tc__fmt_err(
				err, errlen,
				"%s/%s: tensor '%s' is listed in the index under '%s'",
				where, file,
				tc__fmt_quote(q, x->name, strlen(x->name)),
				tc__fmt_quote(q2, other, strlen(other)));
			ret = TC_EBADINDEX;
			goto out_free_lookup;
		}
		seen[*hit] = true;
	}
	for (uint32_t i = 0; i < idx->nentries; i++) {
		const struct tc__index_entry *e = &idx->entries[i];

		if (seen[i])
			continue;
		tc__fmt_err(
			err, errlen,
			"%s/%s: tensor '%s' is listed for '%s' but missing from it",
			where, TC_IDX_NAME,
			tc__fmt_quote(q, e->tensor, strlen(e->tensor)),
			idx->shards[e->shard]);
		ret = TC_EBADINDEX;
		goto out_free_lookup;
	}
out_free_lookup:
	tc__free(seen);
	tc__free(ord);
	return ret;
}

/* Move every shard table into s->table, in file order; metadata from the
 * first file.  The shard tables are left empty. */
static int merge_tables(struct tc__source *s, struct tc__table *tabs,
			const char *where, char *err, size_t errlen)
{
	uint64_t total = 0;
	uint32_t o = 0;

	for (uint32_t i = 0; i < s->nfiles; i++)
		total += tabs[i].ntensors;
	if (total > TC_MAX_TENSORS) {
		tc__fmt_err(err, errlen,
			    "%s: folder has %llu tensors, more than %d", where,
			    (unsigned long long)total, TC_MAX_TENSORS);
		return TC_ELIMIT;
	}
	s->table.tensors = tc__reallocarray(NULL, total ? total : 1,
					    sizeof(*s->table.tensors));
	if (!s->table.tensors)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->nfiles; i++) {
		if (tabs[i].ntensors)
			memcpy(s->table.tensors + o, tabs[i].tensors,
			       tabs[i].ntensors * sizeof(*tabs[i].tensors));
		o += tabs[i].ntensors;
		s->table.ntensors = o;
		/* The names now belong to s->table. */
		tabs[i].ntensors = 0;
	}
	s->table.meta = tabs[0].meta;
	s->table.nmeta = tabs[0].nmeta;
	tabs[0].meta = NULL;
	tabs[0].nmeta = 0;
	return 0;
}

static int check_fd_budget(uint32_t n, const char *where, char *err,
			   size_t errlen)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	if ((uint64_t)n + FD_HEADROOM > (uint64_t)rl.rlim_cur) {
		tc__fmt_err(
			err, errlen,
			"%s: %u shards need %u open files but the limit is %llu (raise ulimit -n)",
			where, n, n + FD_HEADROOM,
			(unsigned long long)rl.rlim_cur);
		return TC_ELIMIT;
	}
	return 0;
}

static int open_indexed(struct tc__source *s, int dirfd, int idxfd,
			const char *where, char *err, size_t errlen)
{
	struct tc__index idx;
	struct tc__table *tabs = NULL;
	char ***byname = NULL;
	uint32_t *map = NULL, n;
	int ret;

	ret = read_index(where, &idx, idxfd, err, errlen);
	if (ret < 0)
		return ret;
	n = idx.nshards;
	ret = check_fd_budget(n, where, err, errlen);
	if (ret < 0)
		goto out_release_idx;
	/* Files in name order (model-00001-of-... first), whatever order the
	 * weight_map lists them in; map[] takes shard ids to file indices. */
	byname = tc__reallocarray(NULL, n, sizeof(*byname));
	map = tc__reallocarray(NULL, n, sizeof(*map));
	tabs = tc__calloc(n, sizeof(*tabs));
	if (!byname || !map || !tabs) {
		ret = -ENOMEM;
		goto out_free_tables;
	}
	for (uint32_t i = 0; i < n; i++)
		byname[i] = &idx.shards[i];
	qsort(byname, n, sizeof(*byname), cmp_str_ptr);
	ret = alloc_files(s, n);
	if (ret < 0)
		goto out_free_tables;
	for (uint32_t i = 0; i < n; i++) {
		map[byname[i] - idx.shards] = i;
		s->files[i].name = tc__strdup(*byname[i]);
		if (!s->files[i].name) {
			ret = -ENOMEM;
			goto out_free_tables;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		tc__table_init(&tabs[i]);
		ret = open_shard(dirfd, s->files[i].name, where,
				 &s->files[i].fd, err, errlen);
		if (ret < 0)
			goto out_free_tables;
		ret = read_shard(s, i, where, &tabs[i], err, errlen);
		if (ret < 0)
			goto out_free_tables;
	}
	ret = merge_tables(s, tabs, where, err, errlen);
	if (ret < 0)
		goto out_free_tables;
	ret = cross_check(s, &idx, map, where, err, errlen);
out_free_tables:
	if (tabs)
		for (uint32_t i = 0; i < n; i++)
			tc__table_release(&tabs[i]);
	tc__free(tabs);
	tc__free(map);
	tc__free(byname);
out_release_idx:
	tc__idx_release(&idx);
	return ret;
}

/* ------------------------------------------------------- unindexed folder */

/* No index and no model.safetensors: exactly one *.safetensors. */
static int open_only_file(struct tc__source *s, int dirfd, const char *where,
			  char *err, size_t errlen)
{
	char **names = NULL, **nn;
	uint32_t count = 0, kept = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		tc__fmt_err(err, errlen, "cannot list '%s': %s", where,
			    tc_strerror(ret));
		return ret;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len <= strlen(ST_SUFFIX) ||
		    strcmp(de->d_name + len - strlen(ST_SUFFIX), ST_SUFFIX))
			continue;
		count++;
		/* Keep a bounded number of names: only a few are shown. */
		if (kept == TC_MAX_SHARDS)
			continue;
		if (kept == cap) {
			cap = cap ? 2 * cap : 8;
			nn = tc__reallocarray(names, cap, sizeof(*names));
			if (!nn) {
				ret = -ENOMEM;
				goto out_free_names;
			}
			names = nn;
		}
		names[kept] = tc__strdup(de->d_name);
		if (!names[kept]) {
			ret = -ENOMEM;
			goto out_free_names;
		}
		kept++;
	}
	if (count == 0) {
		tc__fmt_err(err, errlen,
			    "no '*.safetensors' file and no '%s' in '%s'",
			    TC_IDX_NAME, where);
		ret = TC_ENOTFOUND;
	} else if (count > 1) {
		char list[TC_FMT_ERRLEN / 2], q[TC_FMT_QUOTE];
		size_t o = 0;

		qsort(names, kept, sizeof(*names), cmp_str_ptr_plain);
		for (uint32_t i = 0; i < kept && i < LIST_NAMES; i++)
			o += (size_t)snprintf(list + o, sizeof(list) - o,
					      "%s'%s'", i ? ", " : "",
					      tc__fmt_quote(q, names[i],
							    strlen(names[i])));
		if (count > LIST_NAMES && o < sizeof(list))
			snprintf(list + o, sizeof(list) - o, " and %u more",
				 count - LIST_NAMES);
		tc__fmt_err(err, errlen,
			    "%u safetensors files and no '%s' in '%s': %s",
			    count, TC_IDX_NAME, where, list);
		ret = TC_EBADINDEX;
	} else {
		ret = alloc_files(s, 1);
		if (ret == 0) {
			s->files[0].name = names[0];
			names[0] = NULL;
			ret = open_shard(dirfd, s->files[0].name, where,
					 &s->files[0].fd, err, errlen);
		}
		if (ret == 0)
			ret = read_shard(s, 0, where, &s->table, err, errlen);
	}
out_free_names:
	for (uint32_t i = 0; i < kept; i++)
		tc__free(names[i]);
	tc__free(names);
	closedir(d);
	return ret;
}

/* ------------------------------------------------------------------ folder */

static int open_folder(struct tc__source *s, int dirfd, const char *where,
		       int depth, char *err, size_t errlen);

/* A Hugging Face cache repository folder (models--org--name/): follow
 * refs/main to snapshots/<commit>/.  Returns NOT_HF_REPO (> 0) when there
 * is no refs/main, so a missing snapshot (-ENOENT) is still reported. */
static int open_hf_repo(struct tc__source *s, int dirfd, const char *where,
			char *err, size_t errlen)
{
	char ref[96], sub[128], *disp;
	size_t got, len;
	int sfd, ret;

	ret = open_shard(dirfd, "refs/main", where, &sfd, err, errlen);
	if (ret == -ENOENT || ret == -ENOTDIR)
		return NOT_HF_REPO;
	if (ret < 0)
		return ret;
	ret = tc__pread_full(sfd, ref, sizeof(ref) - 1, 0, &got);
	close(sfd);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot read '%s/refs/main': %s",
			    where, tc_strerror(ret));
		return ret;
	}
	len = got;
	while (len && (ref[len - 1] == '\n' || ref[len - 1] == ' ' ||
		       ref[len - 1] == '\r'))
		len--;
	ref[len] = '\0';
	/* The ref is hostile too: it must be a commit id, not a path. */
	if (len != 40 || strspn(ref, "0123456789abcdef") != 40) {
		tc__fmt_err(err, errlen,
			    "'%s/refs/main' does not hold a commit id", where);
		return TC_ENOTFOUND;
	}
	snprintf(sub, sizeof(sub), "snapshots/%s", ref);
	sfd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s/%s': %s", where, sub,
			    tc_strerror(ret));
		return ret;
	}
	disp = tc__malloc(strlen(where) + 1 + strlen(sub) + 1);
	if (!disp) {
		ret = -ENOMEM;
		goto out_close;
	}
	sprintf(disp, "%s/%s", where, sub);
	ret = open_folder(s, sfd, disp, 1, err, errlen);
	tc__free(disp);
out_close:
	close(sfd);
	return ret;
}

/* A folder in tcast's native layout (format.h): a manifest and the data
 * file.  NOT_NATIVE when there is no manifest. */
static int open_native(struct tc__source *s, int dirfd, const char *where,
		       char *err, size_t errlen)
{
	int mfd, dfd, ret;

	ret = open_shard(dirfd, TC_NATIVE_MANIFEST, where, &mfd, err, errlen);
	if (ret == -ENOENT)
		return NOT_NATIVE;
	if (ret < 0)
		return ret;
	ret = open_shard(dirfd, TC_NATIVE_DATA, where, &dfd, err, errlen);
	if (ret < 0) {
		close(mfd);
		return ret;
	}
	return tc__native_source(s, mfd, dfd, where, err, errlen);
}

static int open_folder(struct tc__source *s, int dirfd, const char *where,
		       int depth, char *err, size_t errlen)
{
	int fd, ret;

	ret = open_native(s, dirfd, where, err, errlen);
	if (ret != NOT_NATIVE)
		return ret;

	fd = openat(dirfd, TC_IDX_NAME,
		    O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0) {
		ret = open_indexed(s, dirfd, fd, where, err, errlen);
		close(fd);
		return ret;
	}
	if (errno != ENOENT) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s/%s': %s", where,
			    TC_IDX_NAME, tc_strerror(ret));
		return ret;
	}
	ret = open_shard(dirfd, SINGLE_NAME, where, &fd, err, errlen);
	if (ret == 0) {
		ret = alloc_files(s, 1);
		if (ret < 0) {
			close(fd);
			return ret;
		}
		s->files[0].fd = fd;
		s->files[0].name = tc__strdup(SINGLE_NAME);
		if (!s->files[0].name)
			return -ENOMEM;
		return read_shard(s, 0, where, &s->table, err, errlen);
	}
	if (ret != -ENOENT)
		return ret;
	if (depth == 0) {
		ret = open_hf_repo(s, dirfd, where, err, errlen);
		if (ret != NOT_HF_REPO)
			return ret;
	}
	return open_only_file(s, dirfd, where, err, errlen);
}

/* ------------------------------------------------------------------ public */

int tc__source_open_fd(int fd, const char *display, struct tc__source **out,
		       char *err, size_t errlen)
{
	struct tc__source *s;
	struct stat st;
	int ret;

	*out = NULL;
	tc__fmt_err(err, errlen, "no error");
	if (!display)
		display = "(fd)";
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot stat '%s': %s", display,
			    tc_strerror(ret));
		return ret;
	}
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		tc__fmt_err(err, errlen,
			    "'%s' is %s, not a regular file or folder", display,
			    kind_of(st.st_mode));
		return TC_EBADFILE;
	}
	s = tc__calloc(1, sizeof(*s));
	if (!s) {
		ret = -ENOMEM;
		goto out_report_nomem;
	}
	tc__table_init(&s->table);
	s->display = tc__strdup(display);
	if (!s->display) {
		ret = -ENOMEM;
		goto out_free_source;
	}
	if (S_ISREG(st.st_mode))
		ret = open_file(s, fd, display, NULL, err, errlen);
	else
		ret = open_folder(s, fd, s->display, 0, err, errlen);
	if (ret < 0)
		goto out_free_source;
	*out = s;
	return 0;

out_free_source:
	tc__source_free(s);
out_report_nomem:
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "out of memory opening '%s'", display);
	return ret;
}

int tc__source_open(const char *path, struct tc__source **out, char *err,
		    size_t errlen)
{
	struct stat st;
	int fd, ret, fl;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s': %s", path,
			    tc_strerror(ret));
		return ret;
	}
	/* O_NONBLOCK only protected the open from a FIFO; the description is
	 * ours, so clear it before the source dups it. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	}
	ret = tc__source_open_fd(fd, path, out, err, errlen);
	close(fd);
	return ret;
}

/* ------------------------------------------------------- client's shards */

/* Names of one shard must be distinct (a tensor in two shards, or one shard
 * twice, would make two tensors of one name). */
static int dup_tensor(const struct tc__table *t, const char *where, char *err,
		      size_t errlen)
{
	struct tc__map m;
	int ret = 0;

	tc__map_init(&m);
	for (uint32_t i = 0; i < t->ntensors && ret == 0; i++) {
		if (tc__map_get(&m, t->tensors[i].name)) {
			tc__fmt_err(err, errlen,
				    "%s: tensor '%s' appears in two shards",
				    where, t->tensors[i].name);
			ret = TC_EBADINDEX;
		} else if (tc__map_put(&m, t->tensors[i].name,
				       (void *)t->tensors[i].name) < 0) {
			ret = -ENOMEM;
		}
	}
	tc__map_release(&m);
	return ret;
}

/* The client resolved a native folder: its manifest and data file. */
static int open_native_shards(struct tc__source *s, const int *fds,
			      struct tc__source **out, char *err, size_t errlen)
{
	int mfd = -1, dfd = -1, ret;

	if (!s->display) {
		ret = -ENOMEM;
		goto out_free;
	}
	mfd = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
	dfd = fcntl(fds[1], F_DUPFD_CLOEXEC, 0);
	if (mfd < 0 || dfd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot dup a shard fd: %s",
			    tc_strerror(ret));
		if (mfd >= 0)
			close(mfd);
		if (dfd >= 0)
			close(dfd);
		goto out_free;
	}
	ret = tc__native_source(s, mfd, dfd, s->display, err, errlen);
	if (ret < 0)
		goto out_free;
	*out = s;
	return 0;

out_free:
	tc__source_free(s);
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "out of memory opening a folder");
	return ret;
}

int tc__source_open_shards(const int *fds, const char *const *names, uint32_t n,
			   const char *display, struct tc__source **out,
			   char *err, size_t errlen)
{
	struct tc__table *tabs = NULL;
	struct tc__source *s;
	int ret;

	*out = NULL;
	if (!display)
		display = "(shards)";
	if (n == 0 || n > TC_MAX_SHARDS) {
		tc__fmt_err(err, errlen, "%s: %u shards (1..%d)", display, n,
			    TC_MAX_SHARDS);
		return TC_ELIMIT;
	}
	ret = check_fd_budget(n, display, err, errlen);
	if (ret < 0)
		return ret;
	s = tc__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	tc__table_init(&s->table);
	s->display = tc__strdup(display);
	if (n == 2 && !strcmp(names[0], TC_NATIVE_MANIFEST) &&
	    !strcmp(names[1], TC_NATIVE_DATA))
		return open_native_shards(s, fds, out, err, errlen);
	tabs = tc__calloc(n, sizeof(*tabs));
	if (!s->display || !tabs) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = alloc_files(s, n);
	if (ret < 0)
		goto out_free;
	for (uint32_t i = 0; i < n; i++) {
		struct stat st;

		tc__table_init(&tabs[i]);
		s->files[i].name = tc__strdup(names[i]);
		if (!s->files[i].name) {
			ret = -ENOMEM;
			goto out_free;
		}
		/* The client opened it, with its own rights; we only check
		 * what it is before reading. */
		if (fstat(fds[i], &st) < 0 || !S_ISREG(st.st_mode)) {
			tc__fmt_err(err, errlen,
				    "'%s/%s' is not a regular file", display,
				    names[i]);
			ret = TC_EBADFILE;
			goto out_free;
		}
		s->files[i].fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
		if (s->files[i].fd < 0) {
			ret = -errno;
			tc__fmt_err(err, errlen, "cannot dup a shard fd: %s",
				    tc_strerror(ret));
			goto out_free;
		}
		ret = read_shard(s, i, display, &tabs[i], err, errlen);
		if (ret < 0)
			goto out_free;
	}
	ret = merge_tables(s, tabs, display, err, errlen);
	if (ret == 0)
		ret = dup_tensor(&s->table, display, err, errlen);
	if (ret < 0)
		goto out_free;
	for (uint32_t i = 0; i < n; i++)
		tc__table_release(&tabs[i]);
	tc__free(tabs);
	*out = s;
	return 0;

out_free:
	if (tabs)
		for (uint32_t i = 0; i < n; i++)
			tc__table_release(&tabs[i]);
	tc__free(tabs);
	tc__source_free(s);
	if (ret == -ENOMEM)
		tc__fmt_err(err, errlen, "out of memory opening '%s'", display);
	return ret;
}
