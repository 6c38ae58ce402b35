/* The engine's receive entry point (issue 14): cc_rx_datagram with any bytes from one of two sources, the
 * connection's selected address (receive keys set: every profile aiortc offers over the run) and a stranger. The
 * first byte picks the source and, every 64 inputs, a new receive key; the rest is the datagram. It must never read
 * or write outside the datagram, only shrink it, and answer RTP/RTCP (or, native feedback being on, read RTCP
 * itself or hand up a loss window) only for the known source with a key. The same bytes then go to cc_rx_route as
 * if they had been authenticated (random bytes never are): a routed SSRC (four are, one per stream kind) is pushed,
 * anything else is left for Python. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz_common.h"

static struct sockaddr_in PATH, STRANGER;
static int RX_TRANSPORT = -1;

static void receive(const uint8_t *data, size_t size) {
    uint8_t buf[CC_RX_MTU + 64];
    size_t n = size - 1 > CC_RX_MTU ? CC_RX_MTU : size - 1;
    memcpy(buf, data + 1, n);
    memset(buf + n, 0xA5, 64); /* a canary: nothing may write past the datagram */
    int len = (int)n, tid = 7;
    const struct sockaddr_in *from = data[0] & 1 ? &STRANGER : &PATH;
    int kind = cc_rx_datagram(E, buf, &len, (const struct sockaddr *)from, sizeof(*from), &tid);
    if (len < 0 || len > (int)n) abort();
    for (int i = 0; i < 64; i++)
        if (buf[n + i] != 0xA5) abort();
    if (kind == CC_RX_LOSS && len != 4) abort();
    int flags = -1, routed = cc_rx_route(E, RX_TRANSPORT, data + 1, (int)n, 1.0, &flags);
    if (!(routed == CC_RX_PUSHED && flags >= 0) && !(routed == CC_RX_RTP && flags == 0)) abort();
    if (kind == CC_RX_RTP || kind == CC_RX_RTCP || kind == CC_RX_CONSUMED || kind == CC_RX_LOSS) {
        if (from != &PATH || tid != RX_TRANSPORT) abort();
    } else if (kind == CC_RX_SLOW || kind == CC_RX_DROPPED) {
        if (tid != -1) abort();
    } else {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int profiles[3][2] = {{8, 44} /* AEAD_AES_256_GCM */, {7, 28} /* AEAD_AES_128_GCM */,
                                       {1, 30} /* AES128_CM_SHA1_80 */};
    setup();
    if (RX_TRANSPORT < 0) {
        RX_TRANSPORT = cc_add_transport(E);
        PATH.sin_family = STRANGER.sin_family = AF_INET;
        PATH.sin_port = htons(40000);
        STRANGER.sin_port = htons(40001);
        inet_pton(AF_INET, "127.0.0.1", &PATH.sin_addr);
        inet_pton(AF_INET, "127.0.0.1", &STRANGER.sin_addr);
        /* a path without a socket: dry_run engines never send */
        if (cc_set_path(E, RX_TRANSPORT, -1, (struct sockaddr *)&PATH, sizeof(PATH))) abort();
        cc_set_feedback(E, RX_TRANSPORT, 1); /* its RTCP goes on to cc_rx_feedback (fuzz_engine_feedback) */
        static const uint32_t routed[4] = {0, 0x11111111u, 0x41414141u, 0xFFFFFFFFu};
        for (int i = 0; i < 4; i++)
            if (cc_route(E, RX_TRANSPORT, routed[i], STREAMS[i])) abort();
    }
    if (size < 1 || size > CC_MAX_PACKET) return 0;
    if (inputs % 64 == 0) {
        const int *p = profiles[(inputs / 64) % 3];
        if (cc_set_srtp_rx(E, RX_TRANSPORT, p[0], KEY, (size_t)p[1])) abort();
    }
    timed(receive, data, size, 0, "receive");
    return 0;
}
