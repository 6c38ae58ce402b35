/* The NACK entry point: cc_retransmit with the sequence numbers a subscriber's NACK named (network values), against
 * caches and histories filled by a stream that keeps flowing (each input also pushes one fresh packet), with and
 * without RTX. Every 512 inputs the consumers are re-attached, which resets their retransmission bound. */
#include "fuzz_common.h"

static void push_one(uint16_t seq, int key) {
    uint8_t p[200] = {0x80, 96, (uint8_t)(seq >> 8), (uint8_t)seq, 0, 0, 0, 0, 0, 0, 0x12, 0x34};
    uint32_t ts = (uint32_t)seq * 3000u;
    p[4] = (uint8_t)(ts >> 24), p[5] = (uint8_t)(ts >> 16), p[6] = (uint8_t)(ts >> 8), p[7] = (uint8_t)ts;
    /* VP8 descriptor: X S, I L, 15-bit picture id, TL0PICIDX; then the payload header (P bit: 0 = keyframe) */
    uint8_t d[] = {0x90, 0xC0, (uint8_t)(0x80 | (seq >> 8 & 0x7F)), (uint8_t)seq, (uint8_t)seq, key ? 0x00 : 0x01};
    memcpy(p + 12, d, sizeof d);
    cc_push(E, STREAMS[0], p, sizeof p, seq * 0.001);
}

static void retransmit(const uint8_t *data, size_t size) {
    int slot = SLOTS[data[0] & 1 ? 4 : 0];
    int n = (int)((size - 1) / 2);
    uint16_t seqs[1024];
    if (n > 1024) n = 1024; /* what one NACK can carry after sfu/rtcp.py's bound */
    for (int i = 0; i < n; i++) seqs[i] = (uint16_t)(data[1 + 2 * i] << 8 | data[2 + 2 * i]);
    if (cc_retransmit(E, slot, seqs, n) < 0) abort();
    for (int i = 0; i + 1 < E->nmissing; i += 2)
        if (E->missing[i] != STREAMS[0]) abort(); /* only what the slot carried can be missing */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint16_t next = 0;
    setup();
    if (!next)
        for (int i = 0; i < 3000; i++) push_one(++next, i % 300 == 0);
    next++;
    push_one(next, next % 300 == 0);
    if (inputs % 512 == 0) {
        cc_attach(E, SLOTS[0], &STREAMS[0], 1, 1, 0);
        cc_attach(E, SLOTS[4], &STREAMS[0], 1, 1, 0);
    }
    if (size < 1) return 0;
    timed(retransmit, data, size, (long)(size - 1) / 2 / 64, "retransmit"); /* lookups: 64 per unit */
    return 0;
}
