/* The engine's reader thread: see reader.h. */
#include "reader.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOCK(r) pthread_mutex_lock(&(r)->mu)
#define UNLOCK(r) pthread_mutex_unlock(&(r)->mu)

void cc_reader_lock(cc_reader *r) { LOCK(r); }
void cc_reader_unlock(cc_reader *r) { UNLOCK(r); }

int cc_reader_init(cc_reader *r, cc_engine *e) {
    memset(r, 0, sizeof *r);
    r->e = e;
    r->wake_fd = r->notify_fd = -1;
    r->route = 1;
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr)) return -1;
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init(&r->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    if (!rc && (rc = pthread_mutex_init(&r->qmu, NULL))) pthread_mutex_destroy(&r->mu);
    return rc ? -1 : 0;
}

void cc_reader_destroy(cc_reader *r) {
    cc_reader_stop(r);
    for (int i = 0; i < 2; i++) free(r->q[i].items), free(r->q[i].fds), free(r->q[i].off), free(r->q[i].data);
    memset(r->q, 0, sizeof r->q);
    pthread_mutex_destroy(&r->qmu);
    pthread_mutex_destroy(&r->mu);
}

static int append(cc_rqueue *q, const cc_rx *x, const uint8_t *data, int fd) {
    if (q->n >= CC_READER_QUEUE_MAX || q->used + x->len > CC_READER_QUEUE_BYTES) return -1;
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 256;
        cc_rx *items = realloc(q->items, (size_t)cap * sizeof(cc_rx));
        if (!items) return -1;
        q->items = items;
        int *fds = realloc(q->fds, (size_t)cap * sizeof(int));
        if (!fds) return -1;
        q->fds = fds;
        uint32_t *off = realloc(q->off, (size_t)cap * sizeof(uint32_t));
        if (!off) return -1;
        q->off = off;
        q->cap = cap;
    }
    if (q->used + x->len > q->dcap) {
        size_t dcap = q->dcap ? q->dcap : 65536;
        while (dcap < q->used + x->len) dcap *= 2;
        uint8_t *d = realloc(q->data, dcap);
        if (!d) return -1;
        q->data = d, q->dcap = dcap;
    }
    memcpy(q->data + q->used, data, x->len);
    q->items[q->n] = *x;
    q->fds[q->n] = fd;
    q->off[q->n] = (uint32_t)q->used;
    q->used += x->len;
    q->n++;
    return 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void signal_fd(int fd) {
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w; /* an eventfd at its limit is still readable: nothing is lost */
}

static void drain_fd(int fd) {
    uint64_t v;
    ssize_t rd = read(fd, &v, sizeof v);
    (void)rd;
}

/* One readable socket: up to 8 batches, each read without the engine's lock (the receive scratch is the thread's
 * alone while it runs: the binding refuses recv() then), sorted with it, and queued under the queues' lock only. */
static void read_socket(cc_reader *r, int fd) {
    cc_engine *e = r->e;
    for (int b = 0; b < 8; b++) {
        int got = cc_recv_read(e, fd);
        if (got == -EINTR) continue;
        if (got < 0) { /* ICMP errors (a client gone away) surface here, one per read */
            LOCK(r);
            r->errors++;
            UNLOCK(r);
            continue;
        }
        if (got == 0) return;
        LOCK(r);
        r->batches++;
        int n = cc_recv_sort(e, got, r->route);
        UNLOCK(r);
        pthread_mutex_lock(&r->qmu);
        cc_rqueue *q = &r->q[r->active];
        int was_empty = q->n == 0, urgent = 0;
        for (int i = 0; i < n; i++) {
            if (append(q, &e->rx[i], e->rxbuf + (size_t)i * CC_RX_MTU, fd)) r->overflow++;
            else if (e->rx[i].kind != CC_RX_PUSHED) urgent = 1;
        }
        int notify = 0;
        if (q->n > 0 && (urgent || !r->hold_ns || q->n >= CC_READER_QUEUE_MAX / 4)) {
            notify = was_empty || r->held; /* a held queue is woken now, with what came */
            r->held = 0;
        } else if (was_empty && q->n > 0) {
            r->held = 1, r->held_since = now_ns();
        }
        if (notify) r->notifies++;
        pthread_mutex_unlock(&r->qmu);
        if (notify) signal_fd(r->notify_fd);
        if (got < CC_RX_BATCH) return;
    }
}

static void *reader_main(void *arg) {
    cc_reader *r = arg;
    struct pollfd p[CC_READER_FDS + 1];
    /* named, so that top -H, perf and the bench's per-thread CPU (bench/fanout.py thread_cpu) tell it apart from
     * the event loop's thread */
    pthread_setname_np(pthread_self(), "cc-reader");
    __atomic_store_n(&r->tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);
    for (;;) {
        LOCK(r);
        if (r->stopping) {
            UNLOCK(r);
            return NULL;
        }
        int n = 0;
        p[n].fd = r->wake_fd, p[n].events = POLLIN, p[n].revents = 0, n++;
        for (int i = 0; i < r->nfds; i++) p[n].fd = r->fds[i], p[n].events = POLLIN, p[n].revents = 0, n++;
        r->seen = r->generation;
        UNLOCK(r);
        int timeout = -1; /* ms; a held queue is woken by its deadline (poll's ms, rounded up: at most 1 ms late) */
        pthread_mutex_lock(&r->qmu);
        if (r->held) {
            uint64_t now = now_ns(), due = r->held_since + r->hold_ns;
            timeout = now >= due ? 0 : (int)((due - now + 999999) / 1000000);
        }
        pthread_mutex_unlock(&r->qmu);
        int rc = poll(p, (nfds_t)n, timeout);
        if (rc >= 0) { /* a held queue whose time is up wakes the slow path */
            pthread_mutex_lock(&r->qmu);
            int due = r->held && now_ns() >= r->held_since + r->hold_ns;
            if (due) r->held = 0, r->notifies++;
            pthread_mutex_unlock(&r->qmu);
            if (due) signal_fd(r->notify_fd);
        }
        if (rc < 0) {
            if (errno == EINTR) continue;
            return NULL;
        }
        LOCK(r);
        r->wakeups++;
        UNLOCK(r);
        if (p[0].revents) { /* the fd set changed, or stop: back to the top before touching a socket */
            drain_fd(r->wake_fd);
            continue;
        }
        for (int i = 1; i < n; i++)
            if (p[i].revents & (POLLIN | POLLERR)) read_socket(r, p[i].fd);
    }
}

int cc_reader_start(cc_reader *r, uint64_t hold_ns) {
    if (r->running) return -EBUSY;
    r->hold_ns = hold_ns, r->held = 0;
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = r->wake_fd < 0 || r->notify_fd < 0 ? errno : 0;
    if (!rc) {
        r->stopping = 0, r->nfds = 0;
        __atomic_store_n(&r->tid, 0, __ATOMIC_RELAXED);
        rc = pthread_create(&r->thread, NULL, reader_main, r);
        while (!rc && !__atomic_load_n(&r->tid, __ATOMIC_ACQUIRE)) sched_yield(); /* its first statement */
    }
    if (rc) {
        if (r->wake_fd >= 0) close(r->wake_fd);
        if (r->notify_fd >= 0) close(r->notify_fd);
        r->wake_fd = r->notify_fd = -1;
        return -rc;
    }
    r->running = 1;
    return 0;
}

void cc_reader_stop(cc_reader *r) {
    if (!r->running) return;
    LOCK(r);
    r->stopping = 1;
    UNLOCK(r);
    signal_fd(r->wake_fd);
    pthread_join(r->thread, NULL);
    r->running = r->stopping = 0;
    r->nfds = 0;
    close(r->wake_fd), close(r->notify_fd);
    r->wake_fd = r->notify_fd = -1;
    for (int i = 0; i < 2; i++) r->q[i].n = 0, r->q[i].used = 0;
}

/* Until the thread polls the current fd set: after that it never touches an fd that left it. */
static void sync_fds(cc_reader *r) {
    LOCK(r);
    uint64_t want = ++r->generation;
    UNLOCK(r);
    signal_fd(r->wake_fd);
    for (;;) {
        LOCK(r);
        int done = r->seen >= want;
        UNLOCK(r);
        if (done) return;
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

int cc_reader_add(cc_reader *r, int fd) {
    if (!r->running) return -EINVAL;
    LOCK(r);
    int full = r->nfds == CC_READER_FDS;
    if (!full) r->fds[r->nfds++] = fd;
    UNLOCK(r);
    if (full) return -ENOSPC;
    sync_fds(r);
    return 0;
}

void cc_reader_remove(cc_reader *r, int fd) {
    if (!r->running) return;
    LOCK(r);
    for (int i = 0; i < r->nfds; i++)
        if (r->fds[i] == fd) r->fds[i--] = r->fds[--r->nfds];
    UNLOCK(r);
    sync_fds(r);
}

cc_rqueue *cc_reader_take(cc_reader *r) {
    if (r->notify_fd >= 0) drain_fd(r->notify_fd); /* first: an item queued after this wakes the caller again */
    pthread_mutex_lock(&r->qmu);
    cc_rqueue *q = &r->q[r->active];
    r->active ^= 1;
    r->held = 0; /* taken: nothing waits any more */
    pthread_mutex_unlock(&r->qmu);
    return q;
}

void cc_reader_taken(cc_rqueue *q) { q->n = 0, q->used = 0; }
