/* clock.c - wall and monotonic time (see clock.h). */
#include "core/clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic int64_t offset; /* test builds only; always 0 otherwise */

int64_t clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec + atomic_load_explicit(&offset, memory_order_relaxed);
}

int64_t clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec + atomic_load_explicit(&offset, memory_order_relaxed)) * 1000 +
           ts.tv_nsec / 1000000;
}

int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t clock_day(int64_t t)
{
    /* floor division: days before 1970 are negative, not rounded to 0 */
    return t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
}

char *clock_rfc3339(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && size)
        buf[0] = '\0';
    return buf;
}

char *clock_day_str(int64_t day, char *buf, size_t size)
{
    time_t tt = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (strftime(buf, size, "%Y-%m-%d", &tm) == 0 && size)
        buf[0] = '\0';
    return buf;
}

void clock_set_offset(int64_t off)
{
#ifdef KB_TEST_HOOKS
    atomic_store(&offset, off);
#else
    (void)off;
#endif
}

int64_t clock_get_offset(void)
{
    return atomic_load(&offset);
}
