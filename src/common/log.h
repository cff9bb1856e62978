/*
 * log.h - leveled logging.
 *
 * tc__log() checks the level before evaluating its arguments.  Messages follow
 * the house wording: lowercase, no final period, the problem first, the
 * subject in quotes.  The daemon points the sink at its log file; libraries
 * default to stderr at WARN so they stay quiet inside user programs.
 */
#ifndef TC_LOG_H
#define TC_LOG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum tc_log_level {
	TC_LOG_ERROR = 0,
	TC_LOG_WARN = 1,
	TC_LOG_INFO = 2,
	TC_LOG_DEBUG = 3,
};

extern int tc__log_level; /* messages above this level are dropped */

/* Line formats: the default text line, or one JSON object per line for
 * log collectors (docs/operations.md lists its keys). */
enum tc_log_format {
	TC_LOG_TEXT = 0,
	TC_LOG_JSON = 1,
};

#define tc__log(level, ...)                                        \
	do {                                                       \
		if ((level) <= tc__log_level)                      \
			tc__log_write((level), __FILE__, __LINE__, \
				      __VA_ARGS__);                \
	} while (0)

void tc__log_write(int level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Send log lines to `f` (not closed by the logger); NULL means stderr. */
void tc__log_set_file(FILE *f);
void tc__log_set_format(int format);
/* Parse "text|json"; returns the format or -1. */
int tc__log_parse_format(const char *s);
/* Parse "error|warn|info|debug"; returns the level or -1. */
int tc__log_parse_level(const char *s);

/*
 * A log line that an attacker can repeat (a refused connection, accept
 * failing for want of fds) goes through a rate limit: at most one line per
 * `interval_ms`; the next line that passes says how many were suppressed.
 * One struct per call site (static); loop thread or one thread only (or
 * under the caller's lock).  tc__log_rl_burst lets `burst` lines through
 * per interval instead of one, for lines whose first few in a row are
 * each worth reading (different peers refused for different reasons).
 */
struct tc__ratelimit {
	uint64_t next_ms;    /* the interval's end */
	uint64_t suppressed; /* lines dropped since the last one */
	uint32_t passed;     /* lines let through in this interval */
};

#define TC_LOG_INTERVAL_MS 1000

#define tc__log_rl(rl, level, ...) \
	tc__log_rl_burst((rl), 1, (level), __VA_ARGS__)

#define tc__log_rl_burst(rl, burst, level, ...)                           \
	do {                                                              \
		if ((level) <= tc__log_level)                             \
			tc__log_limited((rl), (burst), (level), __FILE__, \
					__LINE__, __VA_ARGS__);           \
	} while (0)

void tc__log_limited(struct tc__ratelimit *rl, uint32_t burst, int level,
		     const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* Log file and line, then abort: for programmer errors only. */
#define TC_BUG(msg)                                                        \
	do {                                                               \
		tc__log_write(TC_LOG_ERROR, __FILE__, __LINE__, "BUG: %s", \
			      (msg));                                      \
		abort();                                                   \
	} while (0)

#endif /* TC_LOG_H */
