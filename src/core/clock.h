/*
 * clock.h - the server's notion of "now", in whole seconds since the epoch
 * (UTC). Expiry and the spend day are both decided by it. Test builds
 * (KB_TEST_HOOKS) add an offset read from KEYBRAKE_TEST_CLOCK_OFFSET at
 * start and settable through the admin API, so tests can cross a UTC day
 * without waiting for one.
 */
#ifndef KB_CORE_CLOCK_H
#define KB_CORE_CLOCK_H
#include <stddef.h>
#include <stdint.h>

/* Seconds since the epoch, UTC. Any thread. */
int64_t clock_now(void);
/* Milliseconds since the epoch, UTC (with the same test offset). Any thread. */
int64_t clock_now_ms(void);
/* Monotonic milliseconds, for latencies and timeouts. Any thread. */
int64_t clock_mono_ms(void);
/* Monotonic microseconds. Any thread. */
int64_t clock_mono_us(void);
/* The UTC day number (days since 1970-01-01) of t. */
int64_t clock_day(int64_t t);
/* Formats t as RFC 3339 UTC ("2026-11-22T07:39:48Z") into buf (>= 21 bytes). */
char *clock_rfc3339(int64_t t, char *buf, size_t size);
/* Formats a day number as "2026-11-22" into buf (>= 11 bytes). */
char *clock_day_str(int64_t day, char *buf, size_t size);
/* Test builds only: shifts clock_now() by offset seconds. */
void clock_set_offset(int64_t offset);
int64_t clock_get_offset(void);

#endif
