/*
 * failpoint.c - named fault-injection points (see failpoint.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"

static const char *spec;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void)
{
	spec = getenv("TCAST_FAILPOINTS");
	if (spec && !*spec)
		spec = NULL;
}

uint64_t tc__failpoint_num(const char *name, uint64_t lo, uint64_t hi,
			   uint64_t dflt)
{
	char v[32], *end;
	unsigned long long n;

	if (!tc__failpoint_arg(name, v, sizeof(v)) || v[0] < '0' || v[0] > '9')
		return dflt;
	errno = 0;
	n = strtoull(v, &end, 10);
	return *end || errno || n < lo || n > hi ? dflt : (uint64_t)n;
}

void tc__failpoint_reload(void)
{
	pthread_once(&once, load);
	load();
}

bool tc__failpoint(const char *name, const char *subject)
{
	size_t nl = strlen(name);

	pthread_once(&once, load);
	if (!spec)
		return false;
	for (const char *p = spec; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len > nl && !strncmp(p, name, nl) && p[nl] == '=') {
			char sub[256];
			size_t sl = len - nl - 1;

			if (sl < sizeof(sub)) {
				memcpy(sub, p + nl + 1, sl);
				sub[sl] = '\0';
				if (!sl || (subject && strstr(subject, sub)))
					return true;
			}
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

bool tc__failpoint_arg(const char *name, char *val, size_t len)
{
	size_t nl = strlen(name);

	pthread_once(&once, load);
	if (!spec || !len)
		return false;
	for (const char *p = spec; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n > nl && !strncmp(p, name, nl) && p[nl] == '=') {
			size_t vl = n - nl - 1 < len - 1 ? n - nl - 1 : len - 1;

			memcpy(val, p + nl + 1, vl);
			val[vl] = '\0';
			return true;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

void tc__failpoint_hang(const char *name, const char *subject)
{
	if (!tc__failpoint(name, subject))
		return;
	for (;;)
		pause();
}
