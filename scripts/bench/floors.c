/* What this machine allows at best, below any code of ours: the floors the latency rows of
 * `scripts/bench-durable` are read against.
 *
 *   cc -O2 -o /tmp/floors scripts/bench/floors.c -lpthread
 *   /tmp/floors DIRECTORY
 *
 * - fdatasync after a 4 KiB append to a file in DIRECTORY (what a WAL commit with
 *   synchronous=FULL waits for), 2000 times; then the same from two threads at once, each on
 *   a file of its own (two stores on one disk, as the bus benchmark's origin and subscriber
 *   are on this machine; on two hosts each has its own disk).
 * - A thread hand-off: one thread wakes another that sleeps on a condition variable, timed as
 *   half a round trip; back to back (a busy path), and with 1 ms between round trips (a path
 *   at 1 k events/s, whose threads sleep between events). Every hop between threads in the
 *   bus (a task resumed on the pool, the writer thread, the reactor, libzmq's I/O threads)
 *   costs at least this. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *samples, int n) {
    qsort(samples, n, sizeof(double), by_value);
    printf("floor: %s: p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us (%d samples)\n", what, samples[n / 2],
           samples[n * 99 / 100], samples[n * 999 / 1000], samples[n - 1], n);
}

/* Appends and fdatasyncs `count` times to `path`, timing each sync into `samples`. */
struct syncer { const char *path; int count; double *samples; };

static void *sync_loop(void *arg) {
    struct syncer *s = arg;
    int fd = open(s->path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror(s->path); exit(1); }
    char page[4096];
    memset(page, 7, sizeof page);
    for (int i = 0; i < s->count; i++) {
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) { perror("write"); exit(1); }
        double t = now_us();
        if (fdatasync(fd) != 0) { perror("fdatasync"); exit(1); }
        s->samples[i] = now_us() - t;
    }
    close(fd);
    unlink(s->path);
    return NULL;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int turn = 0;   /* 1: the other thread's turn; 0: the timing thread's */
static int rounds = 0; /* how many turns the other thread takes */

static void *answer(void *unused) {
    (void)unused;
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 1) pthread_cond_wait(&changed, &lock);
        turn = 0;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void hand_offs(const char *what, int n, int pause_us, double *samples) {
    pthread_t other;
    rounds = n;
    turn = 0;
    if (pthread_create(&other, NULL, answer, NULL) != 0) { perror("pthread_create"); exit(1); }
    for (int i = 0; i < n; i++) {
        if (pause_us > 0) usleep(pause_us);
        double t = now_us();
        pthread_mutex_lock(&lock);
        turn = 1;
        pthread_cond_broadcast(&changed);
        while (turn != 0) pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        samples[i] = (now_us() - t) / 2;
    }
    pthread_join(other, NULL);
    report(what, samples, n);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: floors DIRECTORY\n"); return 2; }
    enum { syncs = 2000, wakes = 20000, idle_wakes = 2000 };
    char path[4096], other_path[4096];
    snprintf(path, sizeof path, "%s/floors-sync-1.dat", argv[1]);
    snprintf(other_path, sizeof other_path, "%s/floors-sync-2.dat", argv[1]);
    double *samples = malloc(sizeof(double) * wakes), *other_samples = malloc(sizeof(double) * syncs);
    if (!samples || !other_samples) return 1;

    struct syncer one = { path, syncs, samples }, two = { other_path, syncs, other_samples };
    sync_loop(&one);
    report("fdatasync after a 4 KiB append", samples, syncs);

    pthread_t second;
    if (pthread_create(&second, NULL, sync_loop, &two) != 0) { perror("pthread_create"); return 1; }
    sync_loop(&one);
    pthread_join(second, NULL);
    memcpy(samples + syncs, other_samples, sizeof(double) * syncs);
    report("fdatasync, two files synced at once on one disk", samples, 2 * syncs);
    free(other_samples);

    hand_offs("thread hand-off, back to back", wakes, 0, samples);
    hand_offs("thread hand-off, 1 ms apart", idle_wakes, 1000, samples);
    free(samples);
    return 0;
}
