/*
 * kvyaml.c - flat YAML mappings (kvyaml.h), with libyaml.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#include "kvyaml.h"
#include "tcast/errors.h"

int tc__kvyaml_load(const char *path, tc__kvyaml_cb *cb, void *arg, char *err,
		    size_t errlen)
{
	yaml_parser_t p;
	yaml_event_t ev;
	FILE *f = fopen(path, "r");
	char key[64] = "", why[256];
	int depth = 0, rc = 0, have_key = 0, done = 0;

	if (!f) {
		int e = errno;

		snprintf(err, errlen, "cannot open config '%s': %s", path,
			 strerror(e));
		return -e;
	}
	yaml_parser_initialize(&p);
	yaml_parser_set_input_file(&p, f);
	while (!done && rc == 0) {
		if (!yaml_parser_parse(&p, &ev)) {
			snprintf(err, errlen, "%s:%zu: %s", path,
				 p.problem_mark.line + 1,
				 p.problem ? p.problem : "invalid YAML");
			rc = TC_EBADCONFIG;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_MAPPING_START_EVENT:
			if (++depth > 1) {
				snprintf(err, errlen,
					 "%s:%zu: nested mappings are not "
					 "allowed",
					 path, ev.start_mark.line + 1);
				rc = TC_EBADCONFIG;
			}
			break;
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_SEQUENCE_START_EVENT:
			snprintf(err, errlen, "%s:%zu: lists are not allowed",
				 path, ev.start_mark.line + 1);
			rc = TC_EBADCONFIG;
			break;
		case YAML_SCALAR_EVENT: {
			const char *v = (const char *)ev.data.scalar.value;

			if (depth != 1) {
				snprintf(err, errlen,
					 "%s:%zu: expected a mapping of keys",
					 path, ev.start_mark.line + 1);
				rc = TC_EBADCONFIG;
			} else if (!have_key) {
				snprintf(key, sizeof(key), "%s", v);
				have_key = 1;
			} else {
				if (cb(arg, key, v, why, sizeof(why)) < 0) {
					snprintf(err, errlen,
						 "%s:%zu: key '%s': %s", path,
						 ev.start_mark.line + 1, key,
						 why);
					rc = TC_EBADCONFIG;
				}
				have_key = 0;
			}
			break;
		}
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	fclose(f);
	return rc;
}
