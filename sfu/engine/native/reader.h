/* The engine's reader (issues 14 and 21): a thread that reads the media sockets (recvmmsg), unprotects, applies
 * subscribers' quiet feedback and pushes routed publisher RTP to the subscribers itself (cc_recv_sort), and queues
 * only what the slow path must see (STUN, DTLS, RTCP with NACK/PLI/SR/REMB, loss windows, pushed packets for their
 * bookkeeping). The slow path is woken through an eventfd only when that queue goes from empty to not empty.
 *
 * The engine's state is behind the reader's mutex: whoever else calls the engine (the CPython binding, the stress
 * harness) takes it around every call. The thread itself never calls out of this file and core.c, so it can never
 * wait for anything (the GIL above all) while it holds the mutex. Plain C, no Python API: the binding (module.c)
 * and tests/fuzz/native/stress_reader.c (ThreadSanitizer) share it. */
#ifndef CC_READER_H
#define CC_READER_H

#include "core.h" /* first: it asks for _GNU_SOURCE (recvmmsg, sendmmsg) */

#include <pthread.h>
#include <stdint.h>

#define CC_READER_FDS 8
#define CC_READER_QUEUE_MAX 16384          /* items waiting for the slow path before the reader drops (counted) */
#define CC_READER_QUEUE_BYTES (16u << 20)  /* ... and their bytes */

typedef struct {
    cc_rx *items;
    int *fds;
    uint32_t *off; /* items[i]'s bytes are data + off[i] */
    uint8_t *data;
    int n, cap;
    size_t used, dcap;
} cc_rqueue;

typedef struct {
    cc_engine *e;
    pthread_mutex_t mu; /* recursive: the binding's callers may re-enter (a finalizer run by an allocation) */
    int running, stopping;
    pthread_t thread;
    int tid; /* the thread's kernel id (gettid), set before cc_reader_start returns: the slow path may give it a
              * scheduling priority of its own (sfu/rtcserver.py) */
    int wake_fd, notify_fd; /* eventfds: the thread's poll (fd set changed, stop); the slow path's (items wait) */
    int fds[CC_READER_FDS], nfds;
    uint64_t generation, seen; /* the fd set's version, and the one the thread polls */
    /* the queues have a lock of their own: taking them never waits for a batch of pushes under the engine's */
    pthread_mutex_t qmu;
    cc_rqueue q[2];
    int active; /* the queue the thread fills; the slow path reads the other */
    int route;  /* push routed RTP in the thread; 0 while a capture hook wants the caller's thread */
    uint64_t wakeups, batches, overflow, errors; /* overflow: under qmu, the rest under mu */
    /* Bookkeeping may wait: a queue holding only CC_RX_PUSHED items (publisher RTP already forwarded, queued for
     * Python's statistics, TWCC and NACK detection) wakes the slow path hold_ns after its first item rather than
     * at once, so one wake-up carries several packets. Anything that wants an answer (STUN, DTLS, RTCP, loss
     * windows) wakes it at once. Under qmu. */
    uint64_t hold_ns, held_since, notifies;
    int held;
} cc_reader;

int cc_reader_init(cc_reader *r, cc_engine *e);
/* Stops the thread if it runs, frees the queues. */
void cc_reader_destroy(cc_reader *r);
void cc_reader_lock(cc_reader *r);
void cc_reader_unlock(cc_reader *r);
/* Starts the thread: 0, or -errno (-EBUSY when it runs already). r->notify_fd is then the fd to watch.
 * hold_ns: how long a queue of bookkeeping alone may wait for the slow path (0: never). */
int cc_reader_start(cc_reader *r, uint64_t hold_ns);
/* Blocks until the thread ended (it is woken through wake_fd). */
void cc_reader_stop(cc_reader *r);
/* The thread reads fd (non-blocking) from now on: 0, -ENOSPC past CC_READER_FDS, -EINVAL when not running. */
int cc_reader_add(cc_reader *r, int fd);
/* Returns once the thread will never touch fd again (its owner may close it then). */
void cc_reader_remove(cc_reader *r, int fd);
/* The queue the thread filled since the last take, swapped out under the lock (the notify eventfd is drained
 * first, so an item queued after this wakes the slow path again). The caller reads it, then calls
 * cc_reader_taken before the next take. */
cc_rqueue *cc_reader_take(cc_reader *r);
void cc_reader_taken(cc_rqueue *q);

#endif
