/* The benchmark's reader: the same small program for every server.
 *
 * One measured read is open + read to EOF (64 KiB buffer, as `cat`) + close.
 *
 *   reader lat COUNT PATH...   COUNT rounds; each round reads every PATH once, in turn (so that
 *                              the servers compared share the machine's noise). Prints one line
 *                              per PATH: "p50_ns p99_ns mean_ns errors".
 *   reader tput SECONDS PATH   prints "R" and waits for one byte on stdin (the start signal of
 *                              all readers), then reads PATH for SECONDS; prints
 *                              "reads elapsed_ns errors".
 *   reader paced MS COUNT PATH one read every MS milliseconds, COUNT times (a neighbour that
 *                              reads now and then, as `top` does); prints "R", waits for one
 *                              byte on stdin, then "p50_ns p99_ns mean_ns errors".
 *   reader once PATH...        reads each PATH once; exit status 1 if any failed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int read_once(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n;
    int rc = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {}
    if (n < 0) rc = -1;
    close(fd);
    return rc;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int lat(long count, int npaths, char **paths) {
    int64_t *t = calloc((size_t)count * npaths, sizeof *t);
    long *errors = calloc(npaths, sizeof *errors);
    if (!t || !errors) return 2;
    for (long i = 0; i < count; i++) {
        for (int p = 0; p < npaths; p++) {
            int64_t t0 = now_ns();
            if (read_once(paths[p]) < 0) errors[p]++;
            t[(size_t)p * count + i] = now_ns() - t0;
        }
    }
    for (int p = 0; p < npaths; p++) {
        int64_t *s = t + (size_t)p * count;
        qsort(s, count, sizeof *s, cmp64);
        double sum = 0;
        for (long i = 0; i < count; i++) sum += (double)s[i];
        long i99 = (long)(0.99 * (count - 1) + 0.5);
        printf("%lld %lld %.0f %ld\n", (long long)s[(count - 1) / 2], (long long)s[i99],
               sum / count, errors[p]);
    }
    return 0;
}

static int paced(double ms, long count, const char *path) {
    char go;
    printf("R\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 2;
    int64_t *t = calloc((size_t)count, sizeof *t);
    if (!t) return 2;
    long errors = 0;
    int64_t next = now_ns();
    for (long i = 0; i < count; i++) {
        next += (int64_t)(ms * 1e6);
        int64_t t0 = now_ns();
        if (read_once(path) < 0) errors++;
        t[i] = now_ns() - t0;
        int64_t left = next - now_ns();
        if (left > 0) {
            struct timespec ts = {left / 1000000000, left % 1000000000};
            nanosleep(&ts, NULL);
        }
    }
    qsort(t, count, sizeof *t, cmp64);
    double sum = 0;
    for (long i = 0; i < count; i++) sum += (double)t[i];
    long i99 = (long)(0.99 * (count - 1) + 0.5);
    printf("%lld %lld %.0f %ld\n", (long long)t[(count - 1) / 2], (long long)t[i99],
           sum / count, errors);
    return 0;
}

static int tput(double seconds, const char *path) {
    char go;
    printf("R\n");
    fflush(stdout);
    if (read(0, &go, 1) != 1) return 2;
    int64_t start = now_ns(), end = start + (int64_t)(seconds * 1e9), t;
    long reads = 0, errors = 0;
    do {
        if (read_once(path) < 0) errors++;
        reads++;
        t = now_ns();
    } while (t < end);
    printf("%ld %lld %ld\n", reads, (long long)(t - start), errors);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "lat") == 0) return lat(atol(argv[2]), argc - 3, argv + 3);
    if (argc == 4 && strcmp(argv[1], "tput") == 0) return tput(atof(argv[2]), argv[3]);
    if (argc == 5 && strcmp(argv[1], "paced") == 0)
        return paced(atof(argv[2]), atol(argv[3]), argv[4]);
    if (argc >= 3 && strcmp(argv[1], "once") == 0) {
        int rc = 0;
        for (int i = 2; i < argc; i++)
            if (read_once(argv[i]) < 0) { perror(argv[i]); rc = 1; }
        return rc;
    }
    fprintf(stderr, "usage: reader lat COUNT PATH... | tput SECONDS PATH | "
                    "paced MS COUNT PATH | once PATH...\n");
    return 2;
}
