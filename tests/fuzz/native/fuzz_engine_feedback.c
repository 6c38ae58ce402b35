/* The native feedback entry point (issue 21): cc_rx_feedback with a subscriber's unprotected RTCP compound, as
 * cc_rx_datagram hands it over when the transport has native feedback on. The first byte picks the transport (the
 * numbered one, or one without transport-wide numbers); the rest is the compound. In the first transport-cc
 * feedback of a compound, the base is read as how far back from the next number it lies (as the twcc target does),
 * so mutations stay near the numbers really sent. Each input also pushes one packet (copies numbered on the first
 * transport). It must never read outside the compound, apply nothing when it hands the packet up (0), and report a
 * loss window only above CC_LOSS_QUIET. Cost: one unit, plus 64 transport-cc statuses per unit. */
#include "fuzz_common.h"

static int TIDS[2];

static void push_one(uint16_t seq) {
    uint8_t p[120] = {0x80, 96, (uint8_t)(seq >> 8), (uint8_t)seq, 0, 0, 0, 0, 0, 0, 0x12, 0x34};
    uint8_t d[] = {0x90, 0xC0, (uint8_t)(0x80 | (seq >> 8 & 0x7F)), (uint8_t)seq, (uint8_t)seq,
                   seq % 200 == 1 ? 0x00 : 0x01};
    memcpy(p + 12, d, sizeof d);
    cc_push(E, STREAMS[0], p, sizeof p, seq * 0.001);
}

/* The first transport-cc feedback's FCI offset in a well-framed prefix of the compound, or 0. */
static size_t first_twcc(const uint8_t *d, size_t n) {
    size_t pos = 0;
    while (pos + 4 <= n) {
        size_t end = pos + 4 + 4 * (size_t)(d[pos + 2] << 8 | d[pos + 3]);
        if (end > n) return 0;
        if (d[pos + 1] == 205 && (d[pos] & 0x1F) == 15 && pos + 16 <= end) return pos + 12;
        pos = end;
    }
    return 0;
}

static void feedback(const uint8_t *data, size_t size) {
    uint8_t buf[1600];
    size_t n = size - 1 > sizeof buf ? sizeof buf : size - 1;
    memcpy(buf, data + 1, n);
    int tid = TIDS[data[0] & 1];
    cc_transport *t = E->transports[tid];
    size_t fci = first_twcc(buf, n);
    if (fci) {
        uint16_t base = (uint16_t)(t->twcc_next - (buf[fci] << 8 | buf[fci + 1]));
        buf[fci] = (uint8_t)(base >> 8), buf[fci + 1] = (uint8_t)base;
    }
    uint8_t copy[1600];
    memcpy(copy, buf, n);
    uint64_t reported_before = t->twcc_reported, refused_before = t->twcc_refused, consumed = t->rtcp_consumed;
    uint32_t win_before = t->win_reported;
    int64_t budget_before = t->twcc_budget;
    int lost = -1, reported = -1;
    int rc = cc_rx_feedback(E, tid, buf, n, &lost, &reported);
    if (memcmp(copy, buf, n)) abort(); /* it reads, never writes */
    if (rc == 0) {
        if (lost || reported || t->twcc_reported != reported_before || t->twcc_refused != refused_before ||
            t->win_reported != win_before || t->twcc_budget != budget_before || t->rtcp_consumed != consumed)
            abort();
    } else if (rc == 1) {
        if (lost || reported || t->rtcp_consumed != consumed + 1) abort();
    } else if (rc == 2) {
        if (reported < CC_LOSS_WINDOW || reported > 0xFFFF || lost < 0 || lost > reported ||
            lost * 256 / reported <= CC_LOSS_QUIET || t->win_reported != 0)
            abort();
    } else {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint16_t next = 0;
    setup();
    if (!next) {
        TIDS[0] = E->slots[SLOTS[0]]->transport; /* numbered (set_twcc in setup) */
        TIDS[1] = E->slots[SLOTS[1]]->transport; /* not numbered */
        cc_set_feedback(E, TIDS[0], 1);
        cc_set_feedback(E, TIDS[1], 1);
        for (int i = 0; i < 3000; i++) push_one(++next);
    }
    push_one(++next);
    if (size < 1) return 0;
    size_t fci = size > 1 ? first_twcc(data + 1, size - 1) : 0;
    long count = fci && fci + 4 <= size - 1 ? (data[1 + fci + 2] << 8 | data[1 + fci + 3]) : 0;
    timed(feedback, data, size, count / 64, "rx_feedback");
    return 0;
}
