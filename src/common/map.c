/*
 * map.c - chained string hash map.
 */
#include <errno.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "alloc.h"
#include "map.h"

void tc__map_init(struct tc__map *m)
{
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

void tc__map_release(struct tc__map *m)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct tc__map_entry *e = m->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			tc__free(e);
		}
	}
	tc__free(m->buckets);
	tc__map_init(m);
}

static size_t hash_key(const char *k)
{
	return (size_t)XXH3_64bits(k, strlen(k));
}

static struct tc__map_entry **find(const struct tc__map *m, const char *key,
				   size_t h)
{
	struct tc__map_entry **pp;

	if (!m->nbuckets)
		return NULL;
	pp = &m->buckets[h & (m->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strcmp((*pp)->key, key))
			return pp;
	return pp;
}

static int grow(struct tc__map *m)
{
	size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
	struct tc__map_entry **b = tc__calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct tc__map_entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	tc__free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
	return 0;
}

void *tc__map_get(const struct tc__map *m, const char *key)
{
	struct tc__map_entry **pp = find(m, key, hash_key(key));

	return pp && *pp ? (*pp)->val : NULL;
}

int tc__map_put(struct tc__map *m, const char *key, void *val)
{
	size_t h = hash_key(key);
	struct tc__map_entry **pp, *e;

	if (m->count + 1 > m->nbuckets / 4 * 3 && grow(m) < 0)
		return -ENOMEM;
	pp = find(m, key, h);
	if (*pp) {
		(*pp)->val = val;
		(*pp)->key = key;
		return 0;
	}
	e = tc__malloc(sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->key = key;
	e->val = val;
	e->hash = h;
	e->next = NULL;
	*pp = e;
	m->count++;
	return 0;
}

void *tc__map_del(struct tc__map *m, const char *key)
{
	struct tc__map_entry **pp = find(m, key, hash_key(key)), *e;
	void *v;

	if (!pp || !*pp)
		return NULL;
	e = *pp;
	v = e->val;
	*pp = e->next;
	tc__free(e);
	m->count--;
	return v;
}

struct tc__map_entry *tc__map_next(const struct tc__map *m,
				   struct tc__map_entry *e, size_t *bucket)
{
	if (e && e->next)
		return e->next;
	for (size_t i = e ? *bucket + 1 : 0; i < m->nbuckets; i++) {
		if (m->buckets[i]) {
			*bucket = i;
			return m->buckets[i];
		}
	}
	return NULL;
}
