/*
 * map.h - string-keyed hash map (chained, power-of-two buckets).
 *
 * Keys are borrowed: the caller keeps each key alive while it is in the map
 * (the store keys artifacts by their own id buffer).  Values are opaque
 * pointers.  Not thread-safe: the daemon touches maps on its loop thread only.
 */
#ifndef TC_MAP_H
#define TC_MAP_H

#include <stddef.h>

struct tc__map_entry {
	const char *key; /* borrowed */
	void *val;
	size_t hash;
	struct tc__map_entry *next;
};

struct tc__map {
	struct tc__map_entry **buckets; /* owned array of nbuckets chains */
	size_t nbuckets;		/* 0 or a power of two */
	size_t count;			/* entries */
};

void tc__map_init(struct tc__map *m);
/* Frees the entries, not the keys or values. */
void tc__map_release(struct tc__map *m);
void *tc__map_get(const struct tc__map *m, const char *key);
/* Insert or replace; returns 0 or -ENOMEM. */
int tc__map_put(struct tc__map *m, const char *key, void *val);
/* Remove; returns the old value or NULL. */
void *tc__map_del(struct tc__map *m, const char *key);

/* Iteration: for (e = tc__map_next(m, NULL, &b); e; e = tc__map_next(m, e,
 * &b)). Do not insert while iterating; deleting the current entry is not
 * allowed. */
struct tc__map_entry *tc__map_next(const struct tc__map *m,
				   struct tc__map_entry *e, size_t *bucket);

#endif /* TC_MAP_H */
