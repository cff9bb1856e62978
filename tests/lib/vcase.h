/*
 * vcase.h - random views over one tensor and the element-by-element
 * reference they must equal: shared by the host and GPU view tests.
 */
#ifndef TC_TEST_VCASE_H
#define TC_TEST_VCASE_H

#include <stdint.h>

#include "tlib.h"

/* A tensor of up to 4 dims, a slice of each (sliced[d]), maybe two dims
 * swapped (d0, d1), maybe a cast (src_dt -> dst_dt). */
struct t_vcase {
	uint32_t ndim;
	uint64_t shape[4], start[4], stop[4];
	int sliced[4];
	int swap, d0, d1;
	int src_dt, dst_dt;
};

/* A random case: 1-4 dims, any of five dtypes, casts among the floats. */
void t_vcase_random(struct t_rng *rng, struct t_vcase *c);

/* The view of c over the packed tensor at src, element by element, into
 * out (the reference the executors are checked against). */
void t_vcase_reference(const struct t_vcase *c, const uint8_t *src,
		       uint8_t *out);

#endif /* TC_TEST_VCASE_H */
