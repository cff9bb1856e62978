/*
 * log.c - timestamped log lines to one sink.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

int tc__log_level = TC_LOG_WARN;
static FILE *sink;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void tc__log_set_file(FILE *f)
{
	pthread_mutex_lock(&sink_lock);
	sink = f;
	pthread_mutex_unlock(&sink_lock);
}

int tc__log_parse_level(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcasecmp(s, level_names[i]))
			return i;
	return -1;
}

void tc__log_write(int level, const char *file, int line, const char *fmt, ...)
{
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;
	const char *base = strrchr(file, '/');
	FILE *out;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	if (level < 0)
		level = 0;
	if (level > 3)
		level = 3;

	pthread_mutex_lock(&sink_lock);
	out = sink ? sink : stderr;
	fprintf(out, "%s.%03ldZ %-5s %s:%d: ", ts, now.tv_nsec / 1000000,
		level_names[level], base ? base + 1 : file, line);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
	pthread_mutex_unlock(&sink_lock);
}
