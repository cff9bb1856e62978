/*
 * kvyaml.h - read a YAML file that is one flat mapping of scalar keys to
 * scalar values (the config files of tcast's services), strictly: nested
 * mappings and lists are errors naming the line.
 */
#ifndef TC_KVYAML_H
#define TC_KVYAML_H

#include <stddef.h>

/* Called per key: returns 0 or a negative code with `why` set. */
typedef int tc__kvyaml_cb(void *arg, const char *key, const char *val,
			  char *why, size_t whylen);

/* Returns 0, TC_EBADCONFIG ("PATH:LINE: key 'k': why") or -errno. */
int tc__kvyaml_load(const char *path, tc__kvyaml_cb *cb, void *arg, char *err,
		    size_t errlen);

#endif /* TC_KVYAML_H */
