/*
 * copy.cu - device-to-device copies by the multiprocessors.
 *
 * Not compiled by the build: scripts/gen-ptx.sh turns it into PTX and an
 * sm_90 cubin (src/gpu/copy_ptx.h, checked in), loaded at run time.
 *
 * Why not cuMemcpyDtoD: on an H200 it moved 8 GiB between two VMM
 * allocations at 0.76-0.87 TB/s, whether as one call or a thousand, a
 * fraction of what the memory does; a kernel that keeps every
 * multiprocessor's loads in flight is bound by the memory instead.
 * Each thread moves 16-byte words, four loads issued before their stores;
 * the streaming hints keep a copy that is read once and written once from
 * evicting what other kernels hold in L2.
 */
struct tc_copy_args {
	unsigned long long dst, src, n;
};

extern "C" __global__ void tc_copy(struct tc_copy_args a)
{
	unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x +
			       threadIdx.x;
	unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
	unsigned long long k, done = 0;

	if (((a.dst | a.src) & 15) == 0) {
		const uint4 *s = (const uint4 *)a.src;
		uint4 *d = (uint4 *)a.dst;
		unsigned long long nv = a.n / 16;

		for (k = i; k + 3 * step < nv; k += 4 * step) {
			uint4 x0 = __ldcs(s + k), x1 = __ldcs(s + k + step);
			uint4 x2 = __ldcs(s + k + 2 * step);
			uint4 x3 = __ldcs(s + k + 3 * step);

			__stcs(d + k, x0);
			__stcs(d + k + step, x1);
			__stcs(d + k + 2 * step, x2);
			__stcs(d + k + 3 * step, x3);
		}
		for (; k < nv; k += step)
			__stcs(d + k, __ldcs(s + k));
		done = nv * 16;
	}
	for (k = done + i; k < a.n; k += step)
		((unsigned char *)a.dst)[k] = ((const unsigned char *)a.src)[k];
}
