/* The engine's reader thread (reader.c) under ThreadSanitizer, or AddressSanitizer + UBSan: a publisher sends SRTP
 * to the engine's socket (its camera's SSRC routed, so the reader thread forwards it to two subscribers), the
 * subscribers send SRTCP receiver reports (read in the thread), while a commander thread changes everything the
 * slow path changes in a class (routes, streams, subscribers' paths and feedback, whole transports and slots, the
 * reader's socket set) and the main thread takes the reader's queue, as the binding does: every engine call under
 * the reader's lock. Run for STRESS_SECONDS (argv[1], default 3). Any race, memory error or undefined behaviour is
 * a sanitizer report and a failed run; so is a run where nothing was forwarded, taken or fed back.
 *
 * The packets are protected by two more engines (cc_protect): no SRTP code of its own. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "reader.h"

#define PROFILE 7 /* AEAD_AES_128_GCM */
#define KEY_LEN 28
#define CAMERA 0x111u
#define SUBSCRIBERS 2

static const uint8_t KEY[KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                                     25, 26, 27, 28};
static const uint8_t SUB_KEY[KEY_LEN] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2};

static cc_engine *E;     /* the SFU's engine */
static cc_reader R;      /* its reader */
static cc_engine *PUB_PEER, *SUB_PEER; /* protect what the publisher and the subscribers send */
static int SERVER, PUBLISHER, SINKS[SUBSCRIBERS];
static struct sockaddr_in SERVER_ADDR;
static atomic_int STOP;
static int PUB_TID, SID, SUB_TID[SUBSCRIBERS], SLOT[SUBSCRIBERS];

static int udp(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) abort();
    if (addr) *addr = a;
    return fd;
}

static struct sockaddr_in addr_of(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len)) abort();
    return a;
}

/* a VP8 packet: a keyframe's first packet every 30 */
static int vp8(uint8_t *b, uint16_t seq, uint32_t ts) {
    int key = seq % 30 == 0;
    b[0] = 0x80, b[1] = 96 | (seq % 3 == 2 ? 0x80 : 0);
    b[2] = (uint8_t)(seq >> 8), b[3] = (uint8_t)seq;
    b[4] = (uint8_t)(ts >> 24), b[5] = (uint8_t)(ts >> 16), b[6] = (uint8_t)(ts >> 8), b[7] = (uint8_t)ts;
    b[8] = (uint8_t)(CAMERA >> 24), b[9] = (uint8_t)(CAMERA >> 16), b[10] = (uint8_t)(CAMERA >> 8), b[11] = (uint8_t)CAMERA;
    uint8_t desc[] = {0x90, 0xC0, 0x80 | (uint8_t)(seq >> 8 & 0x7F), (uint8_t)seq, (uint8_t)(seq / 3)};
    memcpy(b + 12, desc, sizeof desc);
    int n = 12 + (int)sizeof desc;
    b[n++] = key && seq % 3 == 0 ? 0x00 : 0x01;
    if (key) {
        const uint8_t start[] = {0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01};
        memcpy(b + n, start, sizeof start);
        n += (int)sizeof start;
    }
    memset(b + n, 0x42, 600);
    return n + 600;
}

static void *publish(void *arg) {
    int tid = cc_add_transport(PUB_PEER);
    if (cc_set_srtp(PUB_PEER, tid, PROFILE, KEY, KEY_LEN)) abort();
    uint8_t buf[1500];
    for (uint32_t n = 0; !atomic_load(&STOP); n++) {
        int len = vp8(buf, (uint16_t)n, n / 3 * 3000);
        if (cc_protect(PUB_PEER, tid, 0, buf, &len)) abort();
        sendto(PUBLISHER, buf, (size_t)len, 0, (struct sockaddr *)&SERVER_ADDR, sizeof SERVER_ADDR);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void *feed_back(void *arg) {
    int tids[SUBSCRIBERS];
    for (int i = 0; i < SUBSCRIBERS; i++) {
        tids[i] = cc_add_transport(SUB_PEER);
        if (cc_set_srtp(SUB_PEER, tids[i], PROFILE, SUB_KEY, KEY_LEN)) abort();
    }
    uint8_t buf[256];
    while (!atomic_load(&STOP)) {
        for (int i = 0; i < SUBSCRIBERS; i++) {
            /* a receiver report (no loss) and an SDES: what Chrome sends every second, read in the thread */
            const uint8_t rr[] = {0x81, 201, 0, 7, 0, 0, 0, 0x77, 0, 0, 0xBE, 0xEF, 0, 0, 0, 0,
                                  0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
            int len = (int)sizeof rr;
            memcpy(buf, rr, sizeof rr);
            if (cc_protect(SUB_PEER, tids[i], 1, buf, &len)) abort();
            sendto(SINKS[i], buf, (size_t)len, 0, (struct sockaddr *)&SERVER_ADDR, sizeof SERVER_ADDR);
            char drain[2048];
            while (recv(SINKS[i], drain, sizeof drain, 0) > 0) {
            }
        }
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void subscriber(int i) {
    struct sockaddr_in sink = addr_of(SINKS[i]);
    SUB_TID[i] = cc_add_transport(E);
    if (cc_set_srtp(E, SUB_TID[i], PROFILE, SUB_KEY, KEY_LEN) || cc_set_srtp_rx(E, SUB_TID[i], PROFILE, SUB_KEY, KEY_LEN) ||
        cc_set_path(E, SUB_TID[i], SERVER, (struct sockaddr *)&sink, sizeof sink) || cc_set_feedback(E, SUB_TID[i], 1))
        abort();
    SLOT[i] = cc_add_slot(E, SUB_TID[i], 90000);
    if (SLOT[i] < 0 || cc_bind_slot(E, SLOT[i], 0xBEE0u + (unsigned)i, 100, 0, 0, 0) ||
        cc_attach(E, SLOT[i], &SID, 1, 1, 0) || cc_start(E, SLOT[i]) < 0)
        abort();
}

/* What the slow path does to a class, at random, each call under the reader's lock. */
static void *command(void *arg) {
    unsigned seed = 21;
    while (!atomic_load(&STOP)) {
        int what = (int)(rand_r(&seed) % 8), i = (int)(rand_r(&seed) % SUBSCRIBERS);
        if (what == 6) { /* the layer choice's lock-free reads (this thread makes and removes the slots) */
            int current;
            uint64_t bytes;
            if (cc_slot_current(E, SLOT[i], &current) || cc_slot_bytes_out(E, SLOT[i], &bytes)) abort();
            continue;
        }
        if (what == 7) { /* the socket leaves the reader's set and comes back (a listener closed and bound) */
            cc_reader_remove(&R, SERVER);
            if (cc_reader_add(&R, SERVER)) abort();
            continue;
        }
        cc_reader_lock(&R);
        switch (what) {
        case 0: /* the camera unpublished and published again: a new stream, routed, subscribers attached */
            cc_remove_stream(E, SID);
            SID = cc_add_stream(E, CC_CODEC_VP8, 1, 96);
            if (SID < 0 || cc_route(E, PUB_TID, CAMERA, SID)) abort();
            for (int k = 0; k < SUBSCRIBERS; k++) cc_attach(E, SLOT[k], &SID, 1, 1, 0), cc_start(E, SLOT[k]);
            break;
        case 1: /* the route taken back, and given again */
            cc_route(E, PUB_TID, CAMERA, -1);
            cc_route(E, PUB_TID, CAMERA, SID);
            break;
        case 2: /* a subscriber leaves and another joins */
            cc_remove_slot(E, SLOT[i]);
            cc_remove_transport(E, SUB_TID[i]);
            subscriber(i);
            break;
        case 3: { /* a subscriber's path changes (an ICE restart) */
            struct sockaddr_in sink = addr_of(SINKS[i]);
            cc_clear_path(E, SUB_TID[i]);
            cc_set_path(E, SUB_TID[i], SERVER, (struct sockaddr *)&sink, sizeof sink);
            break;
        }
        case 4:
            cc_set_feedback(E, SUB_TID[i], (int)(rand_r(&seed) % 2));
            break;
        case 5: /* a subscriber pauses and resumes, asks for a keyframe */
            cc_set_paused(E, SLOT[i], 1);
            cc_set_paused(E, SLOT[i], 0);
            cc_restart(E, SLOT[i]);
            break;
        default: /* the slow path's reads */
            cc_twcc_window(E, SUB_TID[i], &(int){0}, &(int){0});
            break;
        }
        cc_reader_unlock(&R);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    if (cc_global_init() || !(E = cc_engine_new()) || !(PUB_PEER = cc_engine_new()) || !(SUB_PEER = cc_engine_new()) ||
        cc_reader_init(&R, E))
        abort();
    SERVER = udp(&SERVER_ADDR);
    struct sockaddr_in publisher;
    PUBLISHER = udp(&publisher);
    for (int i = 0; i < SUBSCRIBERS; i++) SINKS[i] = udp(NULL);
    PUB_TID = cc_add_transport(E);
    SID = cc_add_stream(E, CC_CODEC_VP8, 1, 96);
    if (cc_set_srtp_rx(E, PUB_TID, PROFILE, KEY, KEY_LEN) ||
        cc_set_path(E, PUB_TID, SERVER, (struct sockaddr *)&publisher, sizeof publisher) ||
        cc_route(E, PUB_TID, CAMERA, SID))
        abort();
    for (int i = 0; i < SUBSCRIBERS; i++) subscriber(i);
    if (cc_reader_start(&R, 2000000) || cc_reader_add(&R, SERVER)) abort();

    pthread_t threads[3];
    pthread_create(&threads[0], NULL, publish, NULL);
    pthread_create(&threads[1], NULL, feed_back, NULL);
    pthread_create(&threads[2], NULL, command, NULL);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long taken = 0, pushed = 0;
    do {
        struct pollfd p = {.fd = R.notify_fd, .events = POLLIN};
        poll(&p, 1, 10);
        cc_rqueue *q = cc_reader_take(&R);
        for (int i = 0; i < q->n; i++) {
            if (q->fds[i] != SERVER || q->off[i] + q->items[i].len > q->used) abort();
            pushed += q->items[i].kind == CC_RX_PUSHED;
        }
        taken += q->n;
        cc_reader_taken(q);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9 < seconds);
    atomic_store(&STOP, 1);
    for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
    cc_reader_lock(&R);
    unsigned long long forwarded = E->packets_out, consumed = E->rx_consumed;
    cc_reader_unlock(&R);
    cc_reader_destroy(&R);
    printf("stress_reader: %.1f s, %ld taken (%ld pushed), %llu forwarded, %llu feedback read in the thread, "
           "%llu reader batches\n", seconds, taken, pushed, forwarded, consumed, (unsigned long long)R.batches);
    cc_engine_free(E);
    cc_engine_free(PUB_PEER);
    cc_engine_free(SUB_PEER);
    return taken > 0 && pushed > 0 && forwarded > 0 && consumed > 0 ? 0 : 1;
}
