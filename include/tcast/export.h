/*
 * export.h - symbol visibility for the public C ABI.
 *
 * libtcast is built with -fvisibility=hidden; only functions marked TC_API
 * are exported, and libtcast.map lists them so every ABI change is a diff.
 */
#ifndef TCAST_EXPORT_H
#define TCAST_EXPORT_H

#if defined(TC_BUILDING_LIB)
#define TC_API __attribute__((visibility("default")))
#else
#define TC_API
#endif

#endif /* TCAST_EXPORT_H */
