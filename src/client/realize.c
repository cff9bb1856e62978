/*
 * realize.c - tc_realize: which source serves an artifact, and why.
 *
 * The rules of the four sources (auto, local_only, disk_first, disk_only)
 * and of every fallback live here, in libtcast, so a C client and the
 * Python SDK get the same choices and the same words for them.  This file
 * only decides and records: attaching and importing are tc_attach,
 * tc_attach_gpu and tc_import.  For a GPU the preferred ways are the
 * daemon's: an import goes straight to the GPU through its loader, and a
 * replica held in host memory is copied to the GPU once by the daemon;
 * host memory serves only when the daemon has no GPU tier.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "client_internal.h"
#include "common/clock.h"
#include "gpu/vmm.h"
#include "tcast/errors.h"

static void add_reason(struct tc_realize_info *info, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Append one reason; several fallbacks in one call are joined by "; ". */
static void add_reason(struct tc_realize_info *info, const char *fmt, ...)
{
	size_t n = strlen(info->fallback_reason);
	size_t cap = sizeof(info->fallback_reason);
	va_list ap;

	if (n && n + 2 < cap) {
		memcpy(info->fallback_reason + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(info->fallback_reason + n, cap - n, fmt, ap);
	va_end(ap);
}

/* The daemon (or this process) has no usable GPU tier: host memory is the
 * only place the artifact can be served from. */
static bool no_gpu_tier(int rc)
{
	return rc == TC_ENODEV || rc == TC_ENOTSUP;
}

/* The file could not be read (a negated errno: missing, unreadable), as
 * opposed to a file that was read and refused (TC_EBADFILE: that is an
 * answer, not an unavailable source). */
static bool disk_unavailable(int rc)
{
	return (rc < 0 && rc > -4000) || rc == TC_ENOTFOUND;
}

/* Keep the message of the first failure when a fallback fails too, and
 * say what the fallback was. */
static int fail_after(tc_client *c, int rc, const char *first, const char *then)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%.600s (then %.200s: %.200s)", first, then,
		 tc_client_errmsg(c));
	return tc__client_err(c, rc, msg);
}

/* What an attach to a GPU adds to the import of its mapping. */
static unsigned gpu_flags(const struct tc_realize_opts *o)
{
	return o && (o->field_mask & TC_REALIZE_FLAGS) &&
			       (o->flags & TC_REALIZE_F_ACCESS_LATER) ?
		       TC_GPU_ACCESS_LATER :
		       0;
}

static int attach(tc_client *c, const char *ref, int32_t dev, unsigned gflags,
		  tc_artifact **out, struct tc_realize_info *info)
{
	uint64_t t0 = tc__mono_ns();
	char first[512];
	int rc;

	if (dev < 0) {
		rc = tc_attach(c, ref, out);
		info->device = -1;
		goto out;
	}
	rc = tc__attach_gpu(c, ref, dev, gflags, out);
	info->device = dev;
	if (rc == 0 || !no_gpu_tier(rc))
		goto out;
	snprintf(first, sizeof(first), "%s", tc_client_errmsg(c));
	if (tc_attach(c, ref, out) < 0) {
		rc = fail_after(c, rc, first, "attaching the host copy");
		goto out;
	}
	rc = 0;
	info->device = -1;
	add_reason(info,
		   "no replica on GPU %d (%.300s); attached the host copy",
		   (int)dev, first);
out:
	/* The daemon had it on its shared disk only and loaded it for this
	 * call: that, not a replica in memory, is what served. */
	if (rc == 0 && tc__artifact_origin(*out) != TC_ORIGIN_HELD) {
		uint32_t og = tc__artifact_origin(*out);

		info->served = og == TC_ORIGIN_SPILL_HOST ||
					       og == TC_ORIGIN_SPILL_GPU ?
				       TC_SERVED_SPILL :
				       TC_SERVED_SHARED_DISK;
		info->gpu_direct = og == TC_ORIGIN_SHARED_GPU ||
				   og == TC_ORIGIN_SPILL_GPU;
	}
	info->attach_ns += tc__mono_ns() - t0;
	return rc;
}

/* Import disk_path (straight to GPU `dev` when dev >= 0), then attach
 * what it made.  *import_failed says which step failed. */
static int from_disk(tc_client *c, const char *path,
		     const struct tc_realize_opts *o, int32_t dev,
		     tc_artifact **out, struct tc_realize_info *info,
		     bool *import_failed)
{
	struct tc_opts io;
	uint64_t t0 = tc__mono_ns();
	char first[512];
	int rc;

	memset(&io, 0, sizeof(io));
	if (o && (o->field_mask & TC_REALIZE_IMPORT) && o->import)
		io = *o->import;
	io.field_mask &= ~(uint64_t)TC_OPT_DEVICE;
	if (dev >= 0) {
		io.field_mask |= TC_OPT_DEVICE;
		io.device = dev;
	}
	rc = tc_import(c, path, &io, &info->import);
	if (rc < 0 && dev >= 0 && no_gpu_tier(rc)) {
		snprintf(first, sizeof(first), "%s", tc_client_errmsg(c));
		io.field_mask &= ~(uint64_t)TC_OPT_DEVICE;
		rc = tc_import(c, path, &io, &info->import);
		if (rc < 0)
			rc = fail_after(c, rc, first,
					"importing to host memory");
		else
			add_reason(info,
				   "cannot load straight to GPU %d (%.300s); "
				   "imported to host memory",
				   (int)dev, first);
		dev = -1; /* no GPU tier: attaching there would fail too */
	} else if (rc == 0 && dev >= 0) {
		info->gpu_direct = 1;
	}
	info->import_ns = tc__mono_ns() - t0;
	*import_failed = rc < 0;
	if (rc < 0)
		return rc;
	info->imported = 1;
	info->served = TC_SERVED_DISK;
	return attach(c, info->import.id, dev, gpu_flags(o), out, info);
}

TC_API const char *tc_source_name(int32_t source)
{
	static const char *const names[] = { "auto", "local_only", "disk_first",
					     "disk_only" };

	if (source < 0 || source > TC_SOURCE_DISK_ONLY)
		return NULL;
	return names[source];
}

TC_API int tc_realize(tc_client *c, const char *ref, const char *disk_path,
		      const struct tc_realize_opts *o, tc_artifact **out,
		      struct tc_realize_info *info)
{
	struct tc_realize_info local;
	int32_t src = TC_SOURCE_AUTO, dev = -1;
	char first[512], msg[1200];
	unsigned gflags = gpu_flags(o);
	bool import_failed = false;
	int rc;

	*out = NULL;
	if (!info)
		info = &local;
	memset(info, 0, sizeof(*info));
	info->device = -1;
	if (ref && !*ref)
		ref = NULL;
	if (disk_path && !*disk_path)
		disk_path = NULL;
	if (o && (o->field_mask & TC_REALIZE_SOURCE))
		src = o->source;
	if (o && (o->field_mask & TC_REALIZE_DEVICE))
		dev = o->device;
	if (!tc_source_name(src)) {
		snprintf(msg, sizeof(msg),
			 "unknown source %d (auto, local_only, disk_first or "
			 "disk_only)",
			 (int)src);
		return tc__client_err(c, TC_EINVAL, msg);
	}
	if (dev < -1) {
		snprintf(msg, sizeof(msg), "bad device %d (-1: host memory)",
			 (int)dev);
		return tc__client_err(c, TC_EINVAL, msg);
	}
	if (!ref && !disk_path)
		return tc__client_err(c, TC_EINVAL,
				      "nothing to realize: no key, artifact id "
				      "or disk path");
	info->served = TC_SERVED_LOCAL;

	switch (src) {
	case TC_SOURCE_LOCAL_ONLY:
		if (!ref) {
			snprintf(msg, sizeof(msg),
				 "source 'local_only' needs a key or an "
				 "artifact id; this artifact is only known by "
				 "its disk path '%.900s'",
				 disk_path);
			return tc__client_err(c, TC_EINVAL, msg);
		}
		return attach(c, ref, dev, gflags, out, info);
	case TC_SOURCE_DISK_ONLY:
		if (!disk_path)
			return tc__client_err(
				c, TC_EINVAL,
				"source 'disk_only' needs a disk path");
		return from_disk(c, disk_path, o, dev, out, info,
				 &import_failed);
	case TC_SOURCE_DISK_FIRST:
		if (!disk_path) {
			add_reason(info,
				   "no disk path; attached the local replica");
			break;
		}
		rc = from_disk(c, disk_path, o, dev, out, info, &import_failed);
		if (rc == 0 || !import_failed || !disk_unavailable(rc) || !ref)
			return rc;
		snprintf(first, sizeof(first), "%s", tc_client_errmsg(c));
		/* The failed import left nothing to describe. */
		info->served = TC_SERVED_LOCAL;
		info->imported = 0;
		info->gpu_direct = 0;
		info->fallback_reason[0] = '\0';
		add_reason(info,
			   "disk unavailable (%.400s); attached the "
			   "local replica",
			   first);
		rc = attach(c, ref, dev, gflags, out, info);
		if (rc < 0)
			return fail_after(c, rc, first,
					  "attaching the local replica");
		return 0;
	default: /* TC_SOURCE_AUTO */
		if (!ref)
			return from_disk(c, disk_path, o, dev, out, info,
					 &import_failed);
		rc = attach(c, ref, dev, gflags, out, info);
		if (rc != TC_ENOTFOUND || !disk_path)
			return rc;
		snprintf(first, sizeof(first), "%s", tc_client_errmsg(c));
		info->fallback_reason[0] = '\0';
		add_reason(info,
			   "not held locally (%.400s); imported from disk",
			   first);
		rc = from_disk(c, disk_path, o, dev, out, info, &import_failed);
		if (rc < 0)
			return fail_after(c, rc, first, "importing from disk");
		return 0;
	}
	if (!ref)
		return tc__client_err(c, TC_EINVAL,
				      "source 'disk_first' without a disk path "
				      "needs a key or an artifact id");
	return attach(c, ref, dev, gflags, out, info);
}
