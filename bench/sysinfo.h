/*
 * sysinfo.h - the description of the machine a benchmark ran on (CPU model and count, kernel,
 * date, clocksource, hugepage pool), read the same way by bench_try and bench_scale for their
 * reports.
 */
#ifndef THR_BENCH_SYSINFO_H
#define THR_BENCH_SYSINFO_H

struct sysinfo {
        char cpu[128];
        char kernel[4 * 65 + 8];
        char date[32];
        char clocksource[32];
        long cpus;
        long huge_total, huge_free, huge_kb;
        double timer_ns; /* bench_scale: cost of one clock_gettime pair, reported; else 0 */
};

/*
 * Fill SI from /proc, /sys, uname and the clock. What cannot be read stays visible as such: cpu
 * and clocksource "unknown", kernel empty, the hugepage counts -1. timer_ns is left 0.
 */
void sysinfo_read(struct sysinfo *si);

#endif
