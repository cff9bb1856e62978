/*
 * view_ranges.h - the byte ranges a view of a safetensors source needs, as
 * a range plan for the loaders (loader.h, gpu_loader.h).
 *
 * A view plan (format/view.h) says, per output tensor, which pieces of the
 * source's byte space make its gather buffer.  Here each piece becomes a
 * file run: the source tensor's file and offset in it.  The loaders then
 * read exactly those bytes with the threads, pinned staging and streams of
 * a whole-file load.
 *
 * Short runs (a column shard: one piece per row) stay one piece each,
 * read into staging packed.  The alternative, reading the rows' covering
 * range into staging and gathering the columns with 2D device copies,
 * reads the whole tensor (8x the bytes of a 1/8 column shard: 8x the disk
 * time when cold) for a gain only where pieces are tiny; a piece of a few
 * KiB costs one pread from the page cache (or one io_uring read from the
 * disk), and each staging unit still crosses the bus as one large copy.
 *
 * Part of src/xfer (uses common, net, format, gpu).
 */
#ifndef TC_VIEW_RANGES_H
#define TC_VIEW_RANGES_H

#include <stdint.h>

#include "format/format.h"
#include "format/view.h"
#include "loader.h"

/*
 * The range plan of view plan `v`, planned against src->table (laid out by
 * tc__table_layout).  Output tensor i's gather buffer (format/view.h)
 * lands at dst_of[i] of the plan's byte space; dst_of NULL means at the
 * view's own offsets (v->out.tensors[i].offset), right only when no
 * tensor is transposed or cast (a gather buffer is then the tensor).
 * `size` is the byte space (0: v->out.total_bytes).  Empty tensors have no
 * runs.  Returns 0, TC_EINVAL (a gather buffer past `size`, buffers that
 * overlap, dst_of NULL with a transpose or cast) or -ENOMEM, with `err`.
 */
int tc__view_ranges(const struct tc__source *src, const struct tc__view_plan *v,
		    const uint64_t *dst_of, uint64_t size,
		    struct tc__load_plan *out, char *err, size_t errlen);

#endif /* TC_VIEW_RANGES_H */
