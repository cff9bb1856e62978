/*
 * tcast.h - the umbrella header of libtcast's public C ABI.
 */
#ifndef TCAST_TCAST_H
#define TCAST_TCAST_H

#include "client.h"
#include "dlpack.h"
#include "dtype.h"
#include "errors.h"
#include "st.h"
#include "ring.h"
#include "version.h"
#include "view.h"

#endif /* TCAST_TCAST_H */
