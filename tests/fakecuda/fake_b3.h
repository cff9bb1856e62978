/*
 * fake_b3.h - the chunk-hash kernels of the fake driver, on the host.
 */
#ifndef TC_FAKE_B3_H
#define TC_FAKE_B3_H

#include "gpu/kernels/b3core.h"

/* Run tc_b3_leaves (leaves) or tc_b3_parents over a's chunks, in the
 * order the GPU's barriers impose. */
void fake_b3_run(const struct b3_args *a, int leaves);

/* Run tc_b3_copy_leaves: every leaf of ca's chunks, in index order. */
void fake_b3_copy_run(const struct b3_copy_args *ca);

#endif /* TC_FAKE_B3_H */
