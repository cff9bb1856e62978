/*
 * view_permute.cu - the GPU kernel of views: permute the dims of a packed
 * tensor and cast its elements, in one pass.
 *
 * Not compiled by the build: scripts/gen-ptx.sh turns it into PTX
 * (src/gpu/view_permute_ptx.h, checked in), which tcast loads at run time
 * with cuModuleLoadData, so the project builds without a CUDA toolkit and
 * the driver JIT-compiles the PTX for whatever GPU it finds.
 *
 * One thread per output element (grid-stride): the output index is split
 * into output coordinates, whose input strides give the element to read.
 * Writes are coalesced; reads are strided, which costs far less than the
 * PCIe copy that brought the bytes.  Conversions are bit-for-bit those of
 * the host executor (src/format/view_exec.c): round to nearest even, NaNs
 * kept quiet with their top payload bits, f16 subnormals kept.
 *
 * struct tc_view_permute_args must match struct tc__gpu_permute in
 * src/gpu/vmm.h (and the fake driver's copy in tests/fakecuda).
 */
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

struct tc_view_permute_args {
	u64 dst;	  /* device address of the output */
	u64 src;	  /* device address of the packed input */
	u64 n;		  /* output elements */
	u64 oshape[16];	  /* output shape */
	u64 istride[16];  /* input stride, in elements, of each output dim */
	u32 ndim;	  /* 1..16 */
	u32 src_kind;	  /* TC_GPU_KIND_* */
	u32 dst_kind;
	u32 pad;
};

#define KIND_SIZE(k) ((k) & 0xff)
#define KIND_F16  0x102
#define KIND_BF16 0x202
#define KIND_F32  0x304

__device__ static float f32_from_bits(u32 x) { return __uint_as_float(x); }
__device__ static u32 f32_bits(float f) { return __float_as_uint(f); }

__device__ static float bf16_to_f32(u16 h) { return f32_from_bits((u32)h << 16); }

__device__ static u16 f32_to_bf16(float f)
{
	u32 x = f32_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (u16)((x >> 16) | 0x40);
	return (u16)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

__device__ static float f16_to_f32(u16 h)
{
	u32 sign = (u32)(h & 0x8000) << 16;
	u32 e = (h >> 10) & 0x1f, m = h & 0x3ff;

	if (e == 0)
		return f32_from_bits(f32_bits(__fmul_rn((float)m, 0x1p-24f)) | sign);
	if (e == 31)
		return f32_from_bits(sign | 0x7f800000u | (m << 13));
	return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

__device__ static u16 f32_to_f16(float f)
{
	u32 x = f32_bits(f);
	u32 sign = (x >> 16) & 0x8000;
	u32 ax = x & 0x7fffffffu;

	if (ax > 0x7f800000u)
		return (u16)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
	if (ax >= 0x477ff000u)
		return (u16)(sign | 0x7c00);
	if (ax < 0x38800000u) {
		float a = __fadd_rn(f32_from_bits(ax), 0.5f);

		return (u16)(sign | (f32_bits(a) - 0x3f000000u));
	}
	ax += 0xc8000fffu + ((ax >> 13) & 1);
	return (u16)(sign | (ax >> 13));
}

__device__ static float load_f(u32 kind, const unsigned char *p)
{
	if (kind == KIND_F32)
		return *(const float *)p;
	if (kind == KIND_BF16)
		return bf16_to_f32(*(const u16 *)p);
	return f16_to_f32(*(const u16 *)p);
}

__device__ static void store_f(u32 kind, unsigned char *p, float f)
{
	if (kind == KIND_F32)
		*(float *)p = f;
	else if (kind == KIND_BF16)
		*(u16 *)p = f32_to_bf16(f);
	else
		*(u16 *)p = f32_to_f16(f);
}

extern "C" __global__ void tc_view_permute(const struct tc_view_permute_args a)
{
	u32 is = KIND_SIZE(a.src_kind), os = KIND_SIZE(a.dst_kind);
	const unsigned char *src = (const unsigned char *)a.src;
	unsigned char *dst = (unsigned char *)a.dst;
	u64 step = (u64)gridDim.x * blockDim.x;

	for (u64 o = (u64)blockIdx.x * blockDim.x + threadIdx.x; o < a.n;
	     o += step) {
		u64 rem = o, in = 0;

		for (int d = (int)a.ndim - 1; d > 0; d--) {
			u64 q = rem / a.oshape[d];

			in += (rem - q * a.oshape[d]) * a.istride[d];
			rem = q;
		}
		in += rem * a.istride[0];
		const unsigned char *s = src + in * is;
		unsigned char *t = dst + o * os;

		if (a.src_kind == a.dst_kind) {
			switch (is) {
			case 1: *t = *s; break;
			case 2: *(u16 *)t = *(const u16 *)s; break;
			case 4: *(u32 *)t = *(const u32 *)s; break;
			default: *(u64 *)t = *(const u64 *)s; break;
			}
		} else {
			store_f(a.dst_kind, t, load_f(a.src_kind, s));
		}
	}
}
