/* The entry point for what Python sends through the engine's SRTP context (RTCP, probes): cc_protect with any
 * bytes, both profiles, RTP and RTCP. The first byte picks the transport, RTP or RTCP, and one of 8 SSRCs: the
 * SFU only ever sends its own SSRCs, and libsrtp derives keys for each new SSRC of an any-outbound policy (a new
 * SSRC per input would measure libsrtp's key derivation, and grow its stream list without end). */
#include "fuzz_common.h"

static void protect(const uint8_t *data, size_t size) {
    uint8_t buf[1600 + 64];
    size_t n = size - 1 > 1600 ? 1600 : size - 1;
    memcpy(buf, data + 1, n);
    int rtcp = (data[0] >> 1) & 1;
    size_t at = rtcp ? 4 : 8; /* RTCP: the sender SSRC; RTP: the SSRC */
    if (n >= at + 4) memcpy(buf + at, "\x10\x00\x00", 3), buf[at + 3] = (uint8_t)(data[0] >> 5);
    int len = (int)n;
    cc_protect(E, data[0] & 1 ? 1 : 0, rtcp, buf, &len);
    if (len < 0 || len > (int)n + 64) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int primed;
    setup();
    if (!primed++) /* each transport's streams for the 8 SSRCs, RTP and RTCP, exist before anything is timed */
        for (int pick = 0; pick < 256; pick++) {
            uint8_t seed[13] = {(uint8_t)pick, 0x80, 0xC8, 0, 1};
            protect(seed, sizeof seed);
        }
    if (size < 1 || size > CC_MAX_PACKET) return 0;
    timed(protect, data, size, 0, "protect");
    return 0;
}
