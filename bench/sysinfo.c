/*
 * sysinfo.c - the machine a benchmark ran on, for the reports of bench_try and bench_scale (see
 * sysinfo.h). Nothing here is timed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "sysinfo.h"

static void read_line_value(const char *path, const char *key, char *out, size_t len)
{
        char line[512];
        FILE *f = fopen(path, "r");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *colon = strchr(line, ':');
                if (key && (strncmp(line, key, strlen(key)) != 0 || !colon))
                        continue;
                char *v = key ? colon + 1 : line;
                v += strspn(v, " \t");
                v[strcspn(v, "\n")] = '\0';
                snprintf(out, len, "%s", v);
                break;
        }
        fclose(f);
}

static long meminfo_long(const char *key)
{
        char v[64] = "";
        read_line_value("/proc/meminfo", key, v, sizeof(v));
        return v[0] ? strtol(v, NULL, 10) : -1;
}

void sysinfo_read(struct sysinfo *si)
{
        struct utsname u;
        time_t t = time(NULL);
        *si = (struct sysinfo){.cpu = "unknown", .clocksource = "unknown"};
        read_line_value("/proc/cpuinfo", "model name", si->cpu, sizeof(si->cpu));
        read_line_value("/sys/devices/system/clocksource/clocksource0/current_clocksource", NULL,
                        si->clocksource, sizeof(si->clocksource));
        if (uname(&u) == 0)
                snprintf(si->kernel, sizeof(si->kernel), "%s %s %s %s", u.sysname, u.release,
                         u.version, u.machine);
        strftime(si->date, sizeof(si->date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        si->cpus = sysconf(_SC_NPROCESSORS_ONLN);
        si->huge_total = meminfo_long("HugePages_Total");
        si->huge_free = meminfo_long("HugePages_Free");
        si->huge_kb = meminfo_long("Hugepagesize");
}
