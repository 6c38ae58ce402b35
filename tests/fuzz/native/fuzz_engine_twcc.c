/* The transport-cc feedback entry point: cc_twcc_feedback with a subscriber's feedback (the FCI: base, count,
 * reference time, status chunks, receive deltas) against a transport that keeps numbering what it sends (each input
 * also pushes one packet, copied to the two slots on the numbered transport). The first two bytes are read as how
 * far back from the next number the feedback's base lies, so that mutations stay near the numbers really sent
 * (a random base is refused at once); the rest is the FCI as it came. Cost: 64 statuses per unit of work. */
#include "fuzz_common.h"

static void push_one(uint16_t seq) {
    uint8_t p[120] = {0x80, 96, (uint8_t)(seq >> 8), (uint8_t)seq, 0, 0, 0, 0, 0, 0, 0x12, 0x34};
    uint8_t d[] = {0x90, 0xC0, (uint8_t)(0x80 | (seq >> 8 & 0x7F)), (uint8_t)seq, (uint8_t)seq,
                   seq % 200 == 1 ? 0x00 : 0x01};
    memcpy(p + 12, d, sizeof d);
    cc_push(E, STREAMS[0], p, sizeof p, seq * 0.001);
}

static int TID; /* the numbered transport (set_twcc in setup) */

static void feedback(const uint8_t *data, size_t size) {
    uint8_t fci[1600];
    size_t n = size > sizeof fci ? sizeof fci : size;
    memcpy(fci, data, n);
    uint16_t base = (uint16_t)(E->transports[TID]->twcc_next - (data[0] << 8 | data[1]));
    fci[0] = (uint8_t)(base >> 8), fci[1] = (uint8_t)base;
    uint64_t before = E->transports[TID]->twcc_reported;
    int reported, lost;
    int rc = cc_twcc_feedback(E, TID, fci, n, &reported, &lost);
    if (rc < 0 || rc > 1 || lost < 0 || lost > reported) abort();
    if (rc == 0 && E->transports[TID]->twcc_reported != before + (uint64_t)reported) abort();
    if (rc == 1 && (reported || lost)) abort();
    if (E->transports[TID]->twcc_budget < 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint16_t next = 0;
    setup();
    TID = E->slots[SLOTS[0]]->transport;
    if (!next)
        for (int i = 0; i < 3000; i++) push_one(++next);
    push_one(++next);
    if (size < 2) return 0;
    long count = size >= 4 ? (data[2] << 8 | data[3]) : 0;
    timed(feedback, data, size, count / 64, "twcc_feedback");
    return 0;
}
