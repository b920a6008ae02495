/* sysinfo(2) as a program in a container sees it, and what one call costs.
 *
 *   sysinfo_probe            prints "key=value" lines: every field of struct sysinfo, then
 *                            phys_pages=sysconf(_SC_PHYS_PAGES) and page_size; on failure
 *                            "error=ERRNO" and exit status 1.
 *   sysinfo_probe lat COUNT  COUNT calls, each timed alone; prints "p50_ns p99_ns mean_ns
 *                            errors" (sorted samples, nearest rank).
 *   sysinfo_probe loop SECS  calls sysinfo for SECS seconds; prints "calls errors".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int probe(void) {
    struct sysinfo si;
    memset(&si, 0xff, sizeof si);
    if (sysinfo(&si) != 0) {
        printf("error=%d\n", errno);
        return 1;
    }
    printf("uptime=%ld\nloads0=%lu\nloads1=%lu\nloads2=%lu\n", si.uptime, si.loads[0],
           si.loads[1], si.loads[2]);
    printf("totalram=%lu\nfreeram=%lu\nsharedram=%lu\nbufferram=%lu\n", si.totalram, si.freeram,
           si.sharedram, si.bufferram);
    printf("totalswap=%lu\nfreeswap=%lu\nprocs=%u\ntotalhigh=%lu\nfreehigh=%lu\nmem_unit=%u\n",
           si.totalswap, si.freeswap, si.procs, si.totalhigh, si.freehigh, si.mem_unit);
    printf("phys_pages=%ld\npage_size=%ld\n", sysconf(_SC_PHYS_PAGES), sysconf(_SC_PAGESIZE));
    return 0;
}

static int latency(long count) {
    int64_t *ns = malloc(sizeof(int64_t) * (size_t)count);
    long errors = 0;
    double sum = 0;
    struct sysinfo si;
    if (!ns)
        return 2;
    for (long i = 0; i < count; i++) {
        int64_t t0 = now_ns();
        if (sysinfo(&si) != 0)
            errors++;
        ns[i] = now_ns() - t0;
        sum += (double)ns[i];
    }
    qsort(ns, (size_t)count, sizeof *ns, cmp);
    printf("%lld %lld %.0f %ld\n", (long long)ns[(count - 1) / 2],
           (long long)ns[(count * 99 + 99) / 100 - 1], sum / (double)count, errors);
    free(ns);
    return errors != 0;
}

static int loop(double seconds) {
    struct sysinfo si;
    long calls = 0, errors = 0;
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    while (now_ns() < end) {
        if (sysinfo(&si) != 0)
            errors++;
        calls++;
    }
    printf("%ld %ld\n", calls, errors);
    return errors != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "lat") == 0)
        return latency(atol(argv[2]) > 0 ? atol(argv[2]) : 1);
    if (argc == 3 && strcmp(argv[1], "loop") == 0)
        return loop(atof(argv[2]));
    return probe();
}
