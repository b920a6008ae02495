/* Blocked /dev/kmsg readers for benchmarks/kmsg_readers.py: N threads, each with an open file
 * of its own, as N `cat /dev/kmsg` would be, but without N processes' worth of noise.
 *
 *   kmsg_readers N   each thread reads the ring's first record, then all print "ready" once and
 *                    read on (blocking); whenever every thread has had one more record, prints
 *                    "ROUND CLOCK_MONOTONIC_SECONDS".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int n;
static long got;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t ready;

static void *reader(void *arg) {
    (void)arg;
    char buf[8192];
    int fd = open("/dev/kmsg", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf) <= 0) {
        perror("/dev/kmsg");
        exit(1);
    }
    pthread_barrier_wait(&ready);
    for (;;) {
        if (read(fd, buf, sizeof buf) <= 0)
            continue;  /* EPIPE: overtaken, read on */
        pthread_mutex_lock(&lock);
        if (++got % n == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            printf("%ld %ld.%09ld\n", got / n, (long)ts.tv_sec, ts.tv_nsec);
            fflush(stdout);
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 1;
    pthread_barrier_init(&ready, NULL, n + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, reader, NULL)) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_barrier_wait(&ready);
    printf("ready\n");
    fflush(stdout);
    pause();
    return 0;
}
