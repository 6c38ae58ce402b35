/* Shared by the engine's libFuzzer targets: one engine for the whole run (state carries over from input to input,
 * so sequence numbers, rewriters, caches and histories reach the states a long stream reaches), fed through the
 * same core.c the extension is built from. No socket: transports have no path, so nothing leaves the process.
 *
 * Cost bound: every entry point must spend at most BUDGET_NS of thread CPU time per unit of work it was given
 * (a pushed packet, a NACKed sequence number, a protected packet). An input over it aborts like a crash. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

#define BUDGET_NS 50000L
#define WARMUP_INPUTS 2000 /* first inputs grow the allocator's pools: not timed */

static cc_engine *E;
static int STREAMS[5]; /* VP8, H.264, Opus, simulcast low, simulcast high */
static int PTS[5] = {96, 102, 111, 96, 96};
static int SLOTS[5];
static long inputs;

static const uint8_t KEY[64] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
                                45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64};

static void setup(void) {
    if (E) return;
    if (cc_global_init() || !(E = cc_engine_new())) abort();
    E->dry_run = 1;
    STREAMS[0] = cc_add_stream(E, CC_CODEC_VP8, 1, 96);
    STREAMS[1] = cc_add_stream(E, CC_CODEC_H264, 1, 102);
    STREAMS[2] = cc_add_stream(E, CC_CODEC_OTHER, 0, 111);
    STREAMS[3] = cc_add_stream(E, CC_CODEC_VP8, 1, 96);
    STREAMS[4] = cc_add_stream(E, CC_CODEC_VP8, 1, 96);
    int t0 = cc_add_transport(E), t1 = cc_add_transport(E), t2 = cc_add_transport(E);
    /* the profiles aiortc offers first (AES-CM + HMAC costs 5 to 10 times more with Debian's NSS-backed libsrtp:
     * the fuzzer would spend its time in libsrtp instead of in our code) */
    if (cc_set_srtp(E, t0, 8 /* AEAD_AES_256_GCM */, KEY, 44) || cc_set_srtp(E, t1, 7 /* AEAD_AES_128_GCM */, KEY, 28))
        abort();
    cc_set_twcc(E, t0, 3);
    int transports[5] = {t0, t1, t2, t0, t1};
    for (int i = 0; i < 5; i++) {
        SLOTS[i] = cc_add_slot(E, transports[i], i == 2 ? 48000 : 90000);
        cc_bind_slot(E, SLOTS[i], 0x1000u + (unsigned)i, 100 + i, i % 2, 0x2000u + (unsigned)i, 110 + i);
    }
    for (int i = 0; i < 3; i++) cc_attach(E, SLOTS[i], &STREAMS[i], 1, i != 2, 0);
    cc_attach(E, SLOTS[3], &STREAMS[3], 2, 1, 0); /* simulcast: low and high */
    cc_set_target(E, SLOTS[3], STREAMS[4]);
    cc_attach(E, SLOTS[4], &STREAMS[0], 1, 1, 0); /* a second subscriber of the VP8 stream */
}

static long thread_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static uint64_t copies_made(void) { /* packets written by every slot: first transmissions and retransmissions */
    uint64_t n = 0;
    for (int i = 0; i < 5; i++) n += E->slots[SLOTS[i]]->packets_sent + E->slots[SLOTS[i]]->retransmitted;
    return n;
}

/* Runs one call and checks its cost: units = 1 + the copies it made (each is a libsrtp protect, linear work) +
 * `extra` (e.g. NACKed numbers looked up).
 *
 * On a shared, loaded machine one call in a few hundred costs 50-400 us of thread CPU time whatever its input (a
 * preemption's cache refill, interrupts charged to the running thread), and such spells can cover several calls in
 * a row: four back-to-back attempts all over the bound happened in both 8-second runs of the protect target beside
 * two busy processes, and in 3 of 5 full test runs. So an input over the bound runs again at once, up to ATTEMPTS times; if it is over every time it
 * becomes a suspect and is timed ATTEMPTS more times RECHECK_AFTER inputs later, when that spell has passed. Only an
 * input over the bound both times is a finding: an input that is costly by what it holds is costly whenever it
 * runs, and a hostile packet's cost (issue 13: half a millisecond) is 10 times the bound. */
#define ATTEMPTS 4
#define RECHECK_AFTER 2000
#define SUSPECTS 16
typedef void (*call_fn)(const uint8_t *data, size_t size);

typedef struct {
    call_fn call;
    uint8_t *data;
    size_t size;
    long extra, due, spent, units;
    const char *what;
} suspect;

static suspect suspects[SUSPECTS];

/* The cheapest of ATTEMPTS back-to-back runs, stopping at the first within the bound: {spent, units}. */
static int over_every_time(call_fn call, const uint8_t *data, size_t size, long extra, long *spent, long *units) {
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        uint64_t before = copies_made();
        long started = thread_ns();
        call(data, size);
        *spent = thread_ns() - started;
        *units = 1 + (long)(copies_made() - before) + extra;
        if (*spent <= BUDGET_NS * *units) return 0;
    }
    return 1;
}

static void recheck_suspects(void) {
    for (int i = 0; i < SUSPECTS; i++) {
        suspect *s = &suspects[i];
        if (!s->data || inputs < s->due) continue;
        long spent, units;
        if (over_every_time(s->call, s->data, s->size, s->extra, &spent, &units)) {
            fprintf(stderr,
                    "COST BOUND: %s spent %ld ns for %ld unit(s), then %ld ns for %ld unit(s) %d inputs later "
                    "(bound %ld ns each)\n",
                    s->what, s->spent, s->units, spent, units, RECHECK_AFTER, BUDGET_NS);
            abort();
        }
        free(s->data);
        s->data = NULL;
    }
}

static void timed(call_fn call, const uint8_t *data, size_t size, long extra, const char *what) {
    recheck_suspects();
    if (++inputs <= WARMUP_INPUTS) {
        call(data, size);
        return;
    }
    long spent, units;
    if (!over_every_time(call, data, size, extra, &spent, &units)) return;
    for (int i = 0; i < SUSPECTS; i++)
        if (!suspects[i].data) {
            uint8_t *copy = malloc(size ? size : 1);
            if (!copy) abort();
            memcpy(copy, data, size);
            suspects[i] = (suspect){call, copy, size, extra, inputs + RECHECK_AFTER, spent, units, what};
            return;
        }
    /* SUSPECTS inputs over the bound within RECHECK_AFTER inputs: not a passing spell */
    fprintf(stderr, "COST BOUND: %s spent %ld ns for %ld unit(s), with %d other suspects pending (bound %ld ns each)\n",
            what, spent, units, SUSPECTS, BUDGET_NS);
    abort();
}

#endif
