/* classcast media engine core: the per-packet path, in plain C (no Python API), so that the fuzz targets and the
 * CPython binding (module.c) share one implementation. sfu/engine/reference.py is the same engine in Python and
 * the specification: every rule here has its twin there, and tests/sfu/test_engine_diff.py compares their output
 * byte for byte. */
#ifndef CC_CORE_H
#define CC_CORE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sendmmsg, struct mmsghdr */
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <srtp2/srtp.h>

#define CC_CACHE 2048    /* packets kept per stream for NACKs (power of two) */
#define CC_HISTORY 1024  /* out-sequence -> source memory per slot (power of two): 20 kB a slot, several seconds of NACKs */
/* libsrtp's replay window for what the engine sends. A sender's window only guards against reusing an index, yet
 * libsrtp shifts it on every packet protected: 1024 bits (as for receiving) cost 32 word moves per copy, 1.8% of the
 * server's CPU at 100 subscribers. A retransmission on the media SSRC (no RTX negotiated) repeats its index, so one
 * older than the window would fail: the engine does not answer those (CC_TX_WINDOW packets are 1.7 s of a 720p
 * camera, longer than any NACK is worth answering). */
#define CC_TX_WINDOW 256
#define CC_GOP_MAX 1500  /* packets of the cached group of pictures */
/* A joiner is replayed the whole cached group only up to this many packets, else the keyframe's alone (and a
 * keyframe is asked for). The replay leaves in one burst: a group of a few seconds is hundreds of packets, more than
 * a receiver's socket buffer holds (212 kB by default on Linux: 92 full-size datagrams, fewer for a busy reader),
 * and an aiortc receiver that lost the middle of it waited for those packets until its jitter buffer overflowed
 * (a cluster test's student: 113 of a 132-packet replay lost, no picture in 20 s). */
#define CC_REPLAY_MAX 64
#define CC_MAX_LAYERS 8
#define CC_BATCH 256     /* datagrams queued before a flush */
#define CC_MAX_PACKET 65535
#define CC_RTX_BURST 256
#define CC_ROUTES 16     /* routed SSRCs per transport: a publisher's simulcast layers of camera and screen, audio */ /* retransmissions allowed beyond half the packets sent */

enum { CC_CODEC_OTHER = 0, CC_CODEC_VP8 = 1, CC_CODEC_H264 = 2 };

/* Why a packet (or a copy of it) was not sent. The order is the Python reference's DROP_REASONS tuple. */
enum {
    CC_DROP_MALFORMED = 0,     /* stream: not RTP, or a truncated codec descriptor */
    CC_DROP_WRONG_PT,          /* stream: another payload type than the negotiated codec */
    CC_DROP_PADDING,           /* stream: padding only (bandwidth probe) */
    CC_DROP_BLOCKED,           /* stream: a moderator muted the publisher */
    CC_DROP_PAUSED,            /* consumer: the subscriber asked for no video */
    CC_DROP_UNBOUND,           /* consumer: its m-section is not negotiated yet */
    CC_DROP_OTHER_LAYER,       /* consumer: another simulcast layer than the one it carries */
    CC_DROP_BEFORE_KEYFRAME,   /* consumer: a decoder can only start at a keyframe */
    CC_DROP_STALE,             /* consumer: older than a switch point, its number is taken */
    CC_DROP_NO_PATH,           /* transport: no nominated ICE pair yet */
    CC_DROP_SRTP_ERROR,        /* transport: libsrtp refused (no key yet, or an error) */
    CC_DROP_SEND_ERROR,        /* transport: the kernel refused (buffer full, ...) */
    CC_DROP_SIMULATED_LOSS,    /* transport: the test hook set_loss dropped it, as a lossy network would */
    CC_DROP_COUNT
};

/* push() result flags */
#define CC_F_KEYFRAME 1
#define CC_F_EVENTS 2
#define CC_F_ACCEPTED 4

/* what a queued datagram is */
enum { CC_OUT_MEDIA = 0, CC_OUT_RETRANSMISSION = 1, CC_OUT_RTCP = 2 };

typedef struct cc_pkt {
    int refs;
    double arrival;
    uint32_t ts;
    uint16_t seq;
    uint8_t marker, keyframe, has_vp8, long_pid;
    int32_t pid, tl0; /* -1 when absent */
    uint32_t poff, pend, len;
    uint8_t data[];
} cc_pkt;

typedef struct {
    int has;
    int64_t highest, floor, offset;
} cc_seqrw;

typedef struct {
    int has;
    int64_t highest, offset;
    double highest_time;
    uint32_t clock_rate;
} cc_tsrw;

typedef struct {
    int pid_has, pid_pending, tl0_has, tl0_pending;
    int64_t pid_highest, pid_offset, tl0_highest, tl0_offset;
} cc_vp8rw;

typedef struct {
    int32_t stream; /* -1: empty */
    uint16_t out_seq, in_seq;
    uint32_t out_ts;
    int32_t pid, tl0; /* the VP8 ids as sent: a retransmission repeats them */
} cc_hist;

typedef struct {
    int used, codec, video, blocked;
    uint8_t pt;
    cc_pkt *cache[CC_CACHE];
    cc_pkt **gop;
    int gop_n, gop_complete, has_kts;
    uint32_t kts;
    int *slots;
    int nslots, capslots;
    uint64_t packets_in, bytes_in, keyframes;
    uint64_t drops[CC_DROP_COUNT];
} cc_stream;

typedef struct {
    int used, transport, bound;
    uint32_t ssrc, rtx_ssrc;
    uint8_t pt, rtx_pt, has_rtx;
    cc_seqrw seq;
    cc_tsrw ts;
    cc_vp8rw vp8;
    uint16_t rtx_seq;
    int32_t last_seq; /* the last out-sequence number sent, -1 before */
    cc_hist *history;
    /* the consumer attached to the slot, if any */
    int attached, video, nstreams, current, target, paused, started, sw;
    int streams[CC_MAX_LAYERS];
    uint64_t packets_sent, octets_sent, bytes_out, retransmitted, switches, nacks_refused;
    uint64_t drops[CC_DROP_COUNT];
} cc_slot;

typedef struct {
    int used, has_srtp, profile, fd, has_path;
    srtp_t srtp;
    struct sockaddr_storage addr;
    socklen_t alen;
    uint8_t twcc_id;
    uint16_t twcc_next;
    uint64_t twcc_stamped; /* transport-wide numbers written so far */
    uint8_t twcc_pending[8192]; /* bitmap: transport-wide numbers sent and not yet reported */
    int64_t twcc_budget;        /* feedback statuses still worth reading: +2 per number written, -count per read */
    uint64_t twcc_feedbacks, twcc_refused, twcc_reported, twcc_lost;
    uint64_t packets_out, bytes_out;
    uint64_t drops[CC_DROP_COUNT];
    uint32_t loss_permille, loss_state; /* test hook: simulated loss */
    int loss_retransmissions;          /* ... of retransmissions too */
    /* receive (issue 14): the client's SRTP/SRTCP, unprotected here for datagrams from the path's address */
    int has_rx;
    srtp_t rx;
    uint64_t packets_in, bytes_in, rx_auth_failed;
    /* native feedback (issue 21): the subscriber's RTCP read here when it holds nothing for Python (cc_rx_feedback) */
    int feedback;
    uint32_t win_lost, win_reported; /* the transport-cc loss window (both paths add to it: cc_twcc_window) */
    uint64_t rtcp_consumed, loss_windows;
    /* routes (issue 14): the publisher's SSRC -> engine stream, so its RTP is pushed where it is unprotected */
    int nroutes;
    uint32_t route_ssrc[CC_ROUTES];
    int route_sid[CC_ROUTES];
    uint64_t rx_pushed;
} cc_transport;

/* Receive (issue 14): datagrams read with recvmmsg from the one media socket. SRTP/SRTCP from a transport's path
 * address with a receive key is unprotected here and handed up as (transport, RTP|RTCP, plaintext); everything else
 * (STUN, DTLS, an address no transport has, a transport without key yet) goes up as CC_RX_SLOW with its source
 * address, for the Python slow path. SRTP that fails authentication is counted and dropped. */
#define CC_RX_BATCH 64
#define CC_RX_MTU 2048
#define CC_RX_HASH 4096 /* address -> transport table (power of two, linear probing) */
enum { CC_RX_RTP = 0, CC_RX_RTCP = 1, CC_RX_SLOW = 2, CC_RX_LOSS = 3, CC_RX_PUSHED = 4, CC_RX_DROPPED = -1,
       CC_RX_CONSUMED = -2 };
/* A transport-cc loss window is judged once it holds this many reported numbers (sfu/bwe.py TwccSender). A loss
 * fraction (x/256) at or below CC_LOSS_QUIET changes nothing in the subscriber's estimate (sfu/bwe.py
 * SubscriberEstimate.on_loss acts above 2%): such feedback and reports need not reach Python. */
#define CC_LOSS_WINDOW 50
#define CC_LOSS_QUIET 5
typedef struct {
    int tid, kind, flags; /* flags: cc_push's, for CC_RX_PUSHED */
    uint32_t len;
    struct sockaddr_storage addr;
    socklen_t alen;
    /* when the kernel received it (SO_TIMESTAMPNS, moved onto CLOCK_MONOTONIC), else when recvmmsg returned: the
     * arrival TWCC feedback reports, so a stalled event loop is not mistaken for network queueing by the sender */
    double arrival;
} cc_rx;
/* room for one SCM_TIMESTAMPNS (a struct timespec) per datagram, aligned as cmsg wants */
#define CC_RX_CTL 64

typedef struct {
    int transport, kind; /* CC_OUT_* */
    uint32_t len, cap;
    uint8_t *buf;
} cc_out;

typedef void (*cc_capture_fn)(void *ctx, int transport, const uint8_t *plain, size_t plain_len,
                              const uint8_t *cipher, size_t cipher_len);

typedef struct {
    cc_stream **streams;
    int nstreams;
    cc_slot **slots;
    int nslots;
    cc_transport **transports;
    int ntransports;
    cc_out out[CC_BATCH];
    int nout;
    /* cc_flush's scratch (kept here, not on the stack: 40 kB a call) */
    struct mmsghdr msgs[CC_BATCH], group[CC_BATCH];
    struct iovec iov[CC_BATCH];
    int fds[CC_BATCH], tids[CC_BATCH], gtids[CC_BATCH], taken[CC_BATCH], kinds[CC_BATCH], gkinds[CC_BATCH];
    int *events; /* pairs (slot, stream): a consumer switched layer */
    int nevents, capevents;
    cc_capture_fn capture;
    void *capture_ctx;
    int dry_run; /* fuzzing: protect and count, never call the kernel */
    /* process-wide totals since the engine was made (never reset: metrics); packets/bytes: RTP only */
    uint64_t packets_out, bytes_out, retransmitted, switches;
    uint64_t drops[CC_DROP_COUNT];
    /* retransmit(): the (stream, seq) pairs the caches lack */
    int *missing;
    int nmissing, capmissing;
    /* receive: path address -> transport id + 1 (0: empty), rebuilt when a path changes; recvmmsg's scratch */
    int rxhash[CC_RX_HASH];
    uint8_t *rxbuf; /* CC_RX_BATCH * CC_RX_MTU */
    cc_rx rx[CC_RX_BATCH];
    struct mmsghdr rxmsgs[CC_RX_BATCH];
    struct iovec rxiov[CC_RX_BATCH];
    union {
        char buf[CC_RX_CTL];
        struct cmsghdr align;
    } rxctl[CC_RX_BATCH];
    uint64_t rx_packets, rx_bytes, rx_auth_failed, rx_truncated, rx_slow, rx_consumed, rx_pushed;
} cc_engine;

int cc_global_init(void);
cc_engine *cc_engine_new(void);
void cc_engine_free(cc_engine *e);

int cc_add_stream(cc_engine *e, int codec, int video, int payload_type);
int cc_remove_stream(cc_engine *e, int sid);
int cc_set_blocked(cc_engine *e, int sid, int blocked);

int cc_add_transport(cc_engine *e);
int cc_remove_transport(cc_engine *e, int tid);
int cc_set_srtp(cc_engine *e, int tid, int profile, const uint8_t *key, size_t key_len);
int cc_set_path(cc_engine *e, int tid, int fd, const struct sockaddr *addr, socklen_t alen);
int cc_clear_path(cc_engine *e, int tid);
int cc_set_twcc(cc_engine *e, int tid, int ext_id);
int cc_set_loss(cc_engine *e, int tid, int permille, uint32_t seed, int retransmissions);
int cc_twcc_take(cc_engine *e, int tid, uint16_t seq);
/* A subscriber's transport-cc feedback (the FCI: base, count, reference time, chunks, deltas), read only when it
 * declares no more statuses than the numbers we sent since its base (at most CC_TWCC_SENT) and within the budget:
 * 0 and (reported, lost) among numbers sent and not yet reported, 1 when refused, -1 for an unknown transport. */
#define CC_TWCC_SENT 8192
#define CC_TWCC_SLACK 2000
int cc_twcc_feedback(cc_engine *e, int tid, const uint8_t *fci, size_t len, int *reported, int *lost);
/* The loss window: 1 with (lost, reported) once CC_LOSS_WINDOW numbers were reported since the last window (and a
 * new one begins), else 0; -1 for an unknown transport. cc_twcc_feedback fills it. */
int cc_twcc_window(cc_engine *e, int tid, int *lost, int *reported);
/* Native feedback on a transport: cc_rx_datagram reads its SRTCP with cc_rx_feedback. */
int cc_set_feedback(cc_engine *e, int tid, int on);
/* A subscriber's plaintext RTCP compound: 0 when Python must read it (anything but receiver reports, SDES and one
 * transport-cc feedback; a malformed packet; a report block over CC_LOSS_QUIET; transport-cc on a transport
 * without numbering): nothing was applied. Else the transport-cc feedback is applied here and 1 is returned, or 2
 * with (lost, reported) when it completed a loss window above CC_LOSS_QUIET, for the subscriber's estimate.
 * -1 for an unknown transport. */
int cc_rx_feedback(cc_engine *e, int tid, const uint8_t *d, size_t n, int *lost, int *reported);
/* protect for packets built in Python (RTCP, probes): the same context as the fan-out. */
int cc_protect(cc_engine *e, int tid, int rtcp, uint8_t *buf, int *len);
/* send RTCP built in Python through the transport's context and socket: 1 if it left, 0 if the transport has no
 * key or path yet (the caller sends it another way), <0 for an unknown transport or a bad length. */
int cc_send_rtcp(cc_engine *e, int tid, const uint8_t *data, size_t len);

int cc_add_slot(cc_engine *e, int tid, uint32_t clock_rate);
int cc_remove_slot(cc_engine *e, int slot);
int cc_bind_slot(cc_engine *e, int slot, uint32_t ssrc, int pt, int has_rtx, uint32_t rtx_ssrc, int rtx_pt);
int cc_unbind_slot(cc_engine *e, int slot);
int cc_attach(cc_engine *e, int slot, const int *streams, int n, int video, int paused);
int cc_detach(cc_engine *e, int slot);
int cc_set_target(cc_engine *e, int slot, int sid);
int cc_set_paused(cc_engine *e, int slot, int paused);
int cc_restart(cc_engine *e, int slot); /* started = 0 (the next packet must be a keyframe) */
/* Consumer start: replay the group of pictures. Returns 1 when a keyframe should be asked, 0 if not, <0 error. */
int cc_start(cc_engine *e, int slot);

/* THE per-packet call. Returns CC_F_* flags, or a negative value for an unknown stream. */
int cc_push(cc_engine *e, int sid, const uint8_t *data, size_t len, double arrival);
/* Answer NACKs for these out-sequence numbers; e->missing gets what the caches lack. */
int cc_retransmit(cc_engine *e, int slot, const uint16_t *seqs, int n);
int cc_cached(cc_engine *e, int sid, uint16_t seq);
int cc_ts_peek(cc_engine *e, int slot, uint32_t ts, uint32_t *out);
/* The publisher's sender report for a stream (its NTP time and RTP timestamp), translated for every slot that
 * carries the stream now and has started: a bare SR (the slot's SSRC, the same NTP time, the RTP timestamp in the
 * slot's timeline, its packet and octet counts) through the slot's transport (with a key and a path), one
 * sendmmsg for all. The number queued, or -1 for an unknown stream. */
int cc_sender_reports(cc_engine *e, int sid, uint64_t ntp, uint32_t rtp_ts);
void cc_flush(cc_engine *e);
/* A slot's current stream and bytes sent, read without the reader's lock by the thread that makes and removes
 * slots (layer choice asks every consumer several times a second; the reader may hold the lock for a whole batch
 * of pushes). 0, or -1 for an unknown slot. */
int cc_slot_current(cc_engine *e, int slot, int *current);
int cc_slot_bytes_out(cc_engine *e, int slot, uint64_t *bytes);

/* Parsing (shared with the fuzz targets). */
typedef struct {
    uint8_t marker, pt;
    uint16_t seq;
    uint32_t ts, ssrc;
    uint32_t poff, pend;
} cc_rtp;
int cc_parse_rtp(const uint8_t *d, size_t n, cc_rtp *h);

/* receive */
int cc_set_srtp_rx(cc_engine *e, int tid, int profile, const uint8_t *key, size_t key_len);
/* One datagram from addr: unprotects buf in place (*len shrinks) and returns CC_RX_RTP/RTCP with *tid, or
 * CC_RX_SLOW (*tid = -1), or CC_RX_DROPPED (failed authentication, counted). With native feedback on the
 * transport, RTCP may also be CC_RX_CONSUMED (read here, nothing for Python) or CC_RX_LOSS (buf = lost and reported,
 * two big-endian 16-bit numbers, *len = 4), both with *tid. buf holds at least *len bytes. */
int cc_rx_datagram(cc_engine *e, uint8_t *buf, int *len, const struct sockaddr *addr, socklen_t alen, int *tid);
/* Route a publisher's SSRC on a transport to a stream (sid -1: unroute): its RTP that cc_recv unprotects is pushed
 * there at once (CC_RX_PUSHED with cc_push's flags) instead of waiting for Python to push it. At most CC_ROUTES per
 * transport (-2 beyond); a removed stream loses its routes. 0, or -1 for an unknown transport or stream. */
int cc_route(cc_engine *e, int tid, uint32_t ssrc, int sid);
/* After cc_rx_datagram gave CC_RX_RTP: push the plaintext if its SSRC is routed. CC_RX_PUSHED with *flags, or
 * CC_RX_RTP when it is not routed. */
int cc_rx_route(cc_engine *e, int tid, const uint8_t *buf, int len, double arrival, int *flags);
/* recvmmsg on fd (non-blocking): fills e->rx[0..n) (data at e->rxbuf + i * CC_RX_MTU); n, 0 when nothing waits,
 * or -errno. Dropped datagrams are not in e->rx. */
int cc_recv(cc_engine *e, int fd);
/* cc_recv in two halves, for a reader thread that reads the socket without the engine's lock and sorts what it read
 * with it: cc_recv_read (recvmmsg into the engine's receive scratch: the reader must be its only user) returns the
 * count read or -errno; cc_recv_sort sorts them as cc_recv does (pushing routed RTP only when route is set) and
 * returns what is left in e->rx. */
int cc_recv_read(cc_engine *e, int fd);
int cc_recv_sort(cc_engine *e, int got, int route);
typedef struct {
    int32_t pid, tl0;
    uint8_t long_pid, keyframe;
    uint32_t size;
} cc_vp8;
int cc_parse_vp8(const uint8_t *d, uint32_t start, uint32_t end, cc_vp8 *v);
int cc_h264_has_sps(const uint8_t *d, uint32_t start, uint32_t end);

#endif
