/*
 * log.c - timestamped log lines to one sink, as text or as JSON objects.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int tc__log_level = TC_LOG_WARN;
static int log_format = TC_LOG_TEXT;
static FILE *sink;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void tc__log_set_file(FILE *f)
{
	pthread_mutex_lock(&sink_lock);
	sink = f;
	pthread_mutex_unlock(&sink_lock);
}

void tc__log_set_format(int format)
{
	pthread_mutex_lock(&sink_lock);
	log_format = format == TC_LOG_JSON ? TC_LOG_JSON : TC_LOG_TEXT;
	pthread_mutex_unlock(&sink_lock);
}

int tc__log_parse_format(const char *s)
{
	if (!strcmp(s, "text"))
		return TC_LOG_TEXT;
	if (!strcmp(s, "json"))
		return TC_LOG_JSON;
	return -1;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static int utf8_len(const unsigned char *p)
{
	int n = *p >= 0xf0 && *p <= 0xf4 ? 4 :
		*p >= 0xe0		 ? 3 :
		*p >= 0xc2 && *p <= 0xdf ? 2 :
					   0;

	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong 3- and 4-byte forms, surrogates, beyond U+10FFFF. */
	if ((n == 3 &&
	     ((*p == 0xe0 && p[1] < 0xa0) || (*p == 0xed && p[1] >= 0xa0))) ||
	    (n == 4 &&
	     ((*p == 0xf0 && p[1] < 0x90) || (*p == 0xf4 && p[1] >= 0x90))))
		return 0;
	return n;
}

/* `s` as the inside of a JSON string: quotes, backslashes and control
 * characters escaped, and a byte that is not UTF-8 (a file name can hold
 * any) as U+FFFD, so every line parses. */
static void json_str(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int n;

		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else if (*p < 0x80)
			fputc(*p, out);
		else if ((n = utf8_len(p)) > 0) {
			fwrite(p, 1, (size_t)n, out);
			p += n;
			continue;
		} else
			fputs("\\ufffd", out);
		p++;
	}
}

int tc__log_parse_level(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcasecmp(s, level_names[i]))
			return i;
	return -1;
}

static void log_v(int level, const char *file, int line, const char *suffix,
		  const char *fmt, va_list ap)
{
	char ts[32];
	struct timespec now;
	struct tm tm;
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
	if (log_format == TC_LOG_JSON) {
		char msg[2048];
		size_t ml;

		/* Formatted first: the message is escaped as a whole. */
		vsnprintf(msg, sizeof(msg), fmt, ap);
		ml = strlen(msg);
		snprintf(msg + ml, sizeof(msg) - ml, "%s", suffix);
		fprintf(out, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",", ts,
			now.tv_nsec / 1000000, level_names[level]);
		fputs("\"message\":\"", out);
		json_str(out, msg);
		fputs("\",\"file\":\"", out);
		json_str(out, base ? base + 1 : file);
		fprintf(out, "\",\"line\":%d,\"pid\":%d,\"tid\":%ld}\n", line,
			(int)getpid(), (long)syscall(SYS_gettid));
		fflush(out);
		pthread_mutex_unlock(&sink_lock);
		return;
	}
	fprintf(out, "%s.%03ldZ %-5s %s:%d: ", ts, now.tv_nsec / 1000000,
		level_names[level], base ? base + 1 : file, line);
	vfprintf(out, fmt, ap);
	fputs(suffix, out);
	fputc('\n', out);
	fflush(out);
	pthread_mutex_unlock(&sink_lock);
}

void tc__log_write(int level, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(level, file, line, "", fmt, ap);
	va_end(ap);
}

void tc__log_limited(struct tc__ratelimit *rl, uint32_t burst, int level,
		     const char *file, int line, const char *fmt, ...)
{
	struct timespec now;
	char suffix[64] = "";
	uint64_t ms;
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
	if (ms >= rl->next_ms) {
		rl->next_ms = ms + TC_LOG_INTERVAL_MS;
		rl->passed = 0;
	}
	if (rl->passed >= (burst ? burst : 1)) {
		rl->suppressed++;
		return;
	}
	rl->passed++;
	if (rl->suppressed)
		snprintf(suffix, sizeof(suffix),
			 " (%llu similar lines suppressed)",
			 (unsigned long long)rl->suppressed);
	rl->suppressed = 0;
	va_start(ap, fmt);
	log_v(level, file, line, suffix, fmt, ap);
	va_end(ap);
}
