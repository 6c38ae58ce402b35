/* The per-packet entry point: cc_push (RTP header, VP8 descriptor, H.264 NAL units, keyframe detection, GOP,
 * every consumer's rewrite, SRTP protect). The first byte picks the stream (and now and then a layer switch or a
 * pause, as the slow path would command between packets); the rest is the packet as it came off the network. */
#include "fuzz_common.h"

static double now = 1.0;

static void push(const uint8_t *data, size_t size) {
    if (cc_push(E, STREAMS[data[0] % 5], data + 1, size - 1, now) < 0) abort(); /* the stream exists */
    E->nevents = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size < 1) return 0;
    uint8_t pick = data[0];
    switch (pick >> 5) {
    case 6: cc_set_target(E, SLOTS[3], STREAMS[3 + (pick & 1)]); break;
    case 7: cc_set_paused(E, SLOTS[4], pick & 1); break;
    default: break;
    }
    now += 0.001 * (pick & 7);
    timed(push, data, size, 0, "push");
    return 0;
}
