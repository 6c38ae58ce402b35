/* The per-packet path in C. Its twin and specification is sfu/engine/reference.py: keep them in step. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#define SRTP_ROOM 64 /* what protect may append (auth tag, MKI) */

static int srtp_session_new(int profile, const uint8_t *key, size_t key_len, int outbound, srtp_t *out);

int cc_global_init(void) {
    if (srtp_init() == srtp_err_status_ok) return 0;
    /* libsrtp 2.7 refuses a second srtp_init: pylibsrtp's, in the same library (setup.py), may have come first.
     * Ready if it makes a session. */
    uint8_t key[30] = {0};
    srtp_t session;
    if (srtp_session_new(srtp_profile_aes128_cm_sha1_80, key, sizeof key, 1, &session)) return -1;
    srtp_dealloc(session);
    return 0;
}

/* ---- parsing (network bytes: fuzzed by tests/fuzz/native) ------------------------------------------------- */

int cc_parse_rtp(const uint8_t *d, size_t n, cc_rtp *h) {
    if (n < 12 || n > CC_MAX_PACKET || d[0] >> 6 != 2) return -1;
    uint32_t pos = 12 + 4u * (d[0] & 0x0F);
    if (pos > n) return -1;
    if (d[0] & 0x10) {
        if (pos + 4 > n) return -1;
        uint32_t words = (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        pos += 4 + 4 * words;
        if (pos > n) return -1;
    }
    uint32_t end = (uint32_t)n;
    if (d[0] & 0x20) {
        uint8_t padding = d[n - 1];
        if (padding == 0 || padding > n - pos) return -1;
        end = (uint32_t)n - padding;
    }
    h->marker = d[1] >> 7;
    h->pt = d[1] & 0x7F;
    h->seq = (uint16_t)(d[2] << 8 | d[3]);
    h->ts = (uint32_t)d[4] << 24 | (uint32_t)d[5] << 16 | (uint32_t)d[6] << 8 | d[7];
    h->ssrc = (uint32_t)d[8] << 24 | (uint32_t)d[9] << 16 | (uint32_t)d[10] << 8 | d[11];
    h->poff = pos;
    h->pend = end;
    return 0;
}

int cc_parse_vp8(const uint8_t *d, uint32_t start, uint32_t end, cc_vp8 *v) {
    if (start >= end) return -1;
    uint8_t b = d[start];
    uint32_t pos = start + 1;
    v->pid = v->tl0 = -1;
    v->long_pid = 0;
    if (b & 0x80) {
        if (pos >= end) return -1;
        uint8_t x = d[pos++];
        if (x & 0x80) {
            if (pos >= end) return -1;
            uint8_t p = d[pos];
            if (p & 0x80) {
                if (pos + 2 > end) return -1;
                v->pid = (p & 0x7F) << 8 | d[pos + 1];
                v->long_pid = 1;
                pos += 2;
            } else {
                v->pid = p;
                pos += 1;
            }
        }
        if (x & 0x40) {
            if (pos >= end) return -1;
            v->tl0 = d[pos++];
        }
        if (x & 0x30) {
            if (pos >= end) return -1;
            pos++;
        }
    }
    if (pos >= end) return -1;
    v->size = pos - start;
    v->keyframe = (b & 0x17) == 0x10 && !(d[pos] & 0x01);
    return 0;
}

int cc_h264_has_sps(const uint8_t *d, uint32_t start, uint32_t end) {
    if (end < start + 2) return 0;
    uint8_t nal = d[start] & 0x1F;
    if (nal == 7) return 1;
    if (nal == 24) {
        uint32_t pos = start + 1;
        while (pos + 2 <= end) {
            uint32_t size = (uint32_t)d[pos] << 8 | d[pos + 1];
            pos += 2;
            if (size == 0 || pos + size > end) return 0;
            if ((d[pos] & 0x1F) == 7) return 1;
            pos += size;
        }
    }
    return 0;
}

/* ---- rewriters (sfu/rtp.py SequenceRewriter, TimestampRewriter, Vp8PictureIdRewriter) ---------------------- */

static int seq_rewrite(cc_seqrw *r, uint16_t seq, int sw) {
    if (sw || !r->has) {
        int64_t out = r->has ? r->highest + r->offset + 1 : seq;
        r->has = 1;
        r->highest = r->floor = seq;
        r->offset = out - seq;
        return (int)(out & 0xFFFF);
    }
    int64_t ext = r->highest + (((int64_t)seq - r->highest + 0x8000) & 0xFFFF) - 0x8000;
    if (ext > r->highest)
        r->highest = ext;
    else if (ext < r->floor)
        return -1;
    return (int)((ext + r->offset) & 0xFFFF);
}

static uint32_t ts_rewrite(cc_tsrw *r, uint32_t ts, double now, int sw) {
    if (sw || !r->has) {
        int64_t out;
        if (!r->has) {
            out = ts;
        } else {
            double span = (now - r->highest_time) * (double)r->clock_rate;
            int64_t elapsed = span > 4e18 ? (int64_t)4e18 : span < -4e18 ? (int64_t)-4e18 : (int64_t)span;
            out = (r->highest + (elapsed > 1 ? elapsed : 1)) & 0xFFFFFFFF;
        }
        r->has = 1;
        r->offset = out - ts;
        r->highest = out;
        r->highest_time = now;
        return (uint32_t)out;
    }
    int64_t out = ((int64_t)ts + r->offset) & 0xFFFFFFFF;
    int64_t ahead = (out - r->highest) & 0xFFFFFFFF;
    if (ahead > 0 && ahead < 0x80000000LL) {
        r->highest = out;
        r->highest_time = now;
    }
    return (uint32_t)out;
}

static void vp8_rewrite(cc_vp8rw *r, const cc_pkt *p, int sw, int32_t *pid_out, int32_t *tl0_out) {
    if (sw) r->pid_pending = r->tl0_pending = 1;
    *pid_out = *tl0_out = -1;
    if (p->pid >= 0) {
        int64_t out;
        if (!r->pid_has || r->pid_pending) {
            out = !r->pid_has ? p->pid : r->pid_highest + r->pid_offset + 1;
            r->pid_has = 1;
            r->pid_highest = p->pid;
            r->pid_offset = out - p->pid;
            r->pid_pending = 0;
        } else {
            int64_t half = p->long_pid ? 0x4000 : 0x40;
            int64_t ext = r->pid_highest + (((int64_t)p->pid - r->pid_highest + half) & (2 * half - 1)) - half;
            if (ext > r->pid_highest) r->pid_highest = ext;
            out = ext + r->pid_offset;
        }
        *pid_out = (int32_t)(out & 0x7FFF);
    }
    if (p->tl0 >= 0) {
        int64_t out;
        if (!r->tl0_has || r->tl0_pending) {
            out = !r->tl0_has ? p->tl0 : r->tl0_highest + r->tl0_offset + 1;
            r->tl0_has = 1;
            r->tl0_highest = p->tl0;
            r->tl0_offset = out - p->tl0;
            r->tl0_pending = 0;
        } else {
            int64_t ext = r->tl0_highest + (((int64_t)p->tl0 - r->tl0_highest + 0x80) & 0xFF) - 0x80;
            if (ext > r->tl0_highest) r->tl0_highest = ext;
            out = ext + r->tl0_offset;
        }
        *tl0_out = (int32_t)(out & 0xFF);
    }
}

static void vp8_write(uint8_t *buf, const cc_pkt *p, int32_t pid, int32_t tl0) {
    uint32_t pos = 2; /* descriptor byte + extension byte */
    if (p->pid >= 0) {
        if (p->long_pid) {
            if (pid >= 0) {
                buf[pos] = 0x80 | ((pid >> 8) & 0x7F);
                buf[pos + 1] = pid & 0xFF;
            }
            pos += 2;
        } else {
            if (pid >= 0) buf[pos] = pid & 0x7F;
            pos += 1;
        }
    }
    if (tl0 >= 0 && p->tl0 >= 0) buf[pos] = tl0 & 0xFF;
}

/* ---- tables ------------------------------------------------------------------------------------------------ */

static uint8_t *queue(cc_engine *e, int tid, uint32_t len, int kind);

static int grow(void **items, int *n) {
    void **grown = realloc(*(void ***)items, sizeof(void *) * (size_t)(*n + 16));
    if (!grown) return -1;
    memset(grown + *n, 0, sizeof(void *) * 16);
    *(void ***)items = grown;
    *n += 16;
    return 0;
}

#define ALLOC_ID(table, count, type, out)                                                   \
    do {                                                                                    \
        int id_ = 0;                                                                        \
        while (id_ < (count) && (table)[id_]) id_++;                                        \
        if (id_ == (count) && grow((void **)&(table), &(count))) return -1;                 \
        (table)[id_] = calloc(1, sizeof(type));                                             \
        if (!(table)[id_]) return -1;                                                       \
        (out) = id_;                                                                        \
    } while (0)

static cc_stream *stream_at(cc_engine *e, int sid) {
    return sid >= 0 && sid < e->nstreams ? e->streams[sid] : NULL;
}
static cc_slot *slot_at(cc_engine *e, int id) { return id >= 0 && id < e->nslots ? e->slots[id] : NULL; }
static void rx_rebuild(cc_engine *e);

static cc_transport *transport_at(cc_engine *e, int id) {
    return id >= 0 && id < e->ntransports ? e->transports[id] : NULL;
}

static void pkt_unref(cc_pkt *p) {
    if (p && --p->refs == 0) free(p);
}

cc_engine *cc_engine_new(void) { return calloc(1, sizeof(cc_engine)); }

void cc_engine_free(cc_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->nstreams; i++)
        if (e->streams[i]) cc_remove_stream(e, i);
    for (int i = 0; i < e->nslots; i++)
        if (e->slots[i]) cc_remove_slot(e, i);
    for (int i = 0; i < e->ntransports; i++)
        if (e->transports[i]) cc_remove_transport(e, i);
    for (int i = 0; i < CC_BATCH; i++) free(e->out[i].buf);
    free(e->streams);
    free(e->slots);
    free(e->transports);
    free(e->events);
    free(e->missing);
    free(e->rxbuf);
    free(e);
}

/* ---- streams ----------------------------------------------------------------------------------------------- */

int cc_add_stream(cc_engine *e, int codec, int video, int payload_type) {
    /* Stream ids are never reused: a slot's history may still name a removed stream. */
    int sid = e->nstreams;
    if (grow((void **)&e->streams, &e->nstreams)) return -1;
    e->nstreams = sid + 1;
    if (!(e->streams[sid] = calloc(1, sizeof(cc_stream)))) return -1;
    cc_stream *s = e->streams[sid];
    s->codec = codec;
    s->video = video;
    s->pt = (uint8_t)(payload_type & 0x7F);
    if (video && !(s->gop = calloc(CC_GOP_MAX, sizeof(cc_pkt *)))) {
        free(s);
        e->streams[sid] = NULL;
        return -1;
    }
    return sid;
}

static void gop_clear(cc_stream *s) {
    for (int i = 0; i < s->gop_n; i++) pkt_unref(s->gop[i]);
    s->gop_n = 0;
    s->has_kts = 0;
    s->gop_complete = 0;
}

int cc_remove_stream(cc_engine *e, int sid) {
    cc_stream *s = stream_at(e, sid);
    if (!s) return -1;
    for (int i = 0; i < CC_CACHE; i++) pkt_unref(s->cache[i]);
    gop_clear(s);
    free(s->gop);
    for (int i = 0; i < s->nslots; i++) { /* consumers lose the stream */
        cc_slot *c = slot_at(e, s->slots[i]);
        if (!c) continue;
        for (int k = 0; k < c->nstreams; k++)
            if (c->streams[k] == sid) c->streams[k] = -1;
        if (c->current == sid) c->current = -1;
        if (c->target == sid) c->target = -1;
    }
    free(s->slots);
    free(s);
    e->streams[sid] = NULL;
    for (int i = 0; i < e->ntransports; i++) { /* its publisher's packets go back to Python, which drops them */
        cc_transport *t = e->transports[i];
        for (int k = 0; t && k < t->nroutes; k++)
            if (t->route_sid[k] == sid) {
                t->nroutes--;
                t->route_ssrc[k] = t->route_ssrc[t->nroutes], t->route_sid[k] = t->route_sid[t->nroutes];
                k--;
            }
    }
    return 0;
}

int cc_set_blocked(cc_engine *e, int sid, int blocked) {
    cc_stream *s = stream_at(e, sid);
    if (!s) return -1;
    s->blocked = blocked;
    return 0;
}

/* ---- transports -------------------------------------------------------------------------------------------- */

int cc_add_transport(cc_engine *e) {
    /* Never reused either: a slot left behind must not send into another subscriber's connection. */
    int tid = e->ntransports;
    if (grow((void **)&e->transports, &e->ntransports)) return -1;
    e->ntransports = tid + 1;
    if (!(e->transports[tid] = calloc(1, sizeof(cc_transport)))) return -1;
    e->transports[tid]->fd = -1;
    return tid;
}

int cc_remove_transport(cc_engine *e, int tid) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    cc_flush(e); /* nothing queued may point at it */
    if (t->has_srtp) srtp_dealloc(t->srtp);
    if (t->has_rx) srtp_dealloc(t->rx);
    free(t);
    e->transports[tid] = NULL;
    rx_rebuild(e);
    return 0;
}

/* A libsrtp session for a DTLS-SRTP profile and its exported key: outbound (protect; a retransmission repeats an
 * index, so allow_repeat_tx) or inbound (unprotect, with the replay window). 0, or -2 (profile) -3 (key length)
 * -4 (libsrtp refused), the codes cc_set_srtp and cc_set_srtp_rx return. */
static int srtp_session_new(int profile, const uint8_t *key, size_t key_len, int outbound, srtp_t *out) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    if (srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile) != srtp_err_status_ok ||
        srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile) != srtp_err_status_ok)
        return -2;
    size_t need = (size_t)srtp_profile_get_master_key_length((srtp_profile_t)profile) +
                  (size_t)srtp_profile_get_master_salt_length((srtp_profile_t)profile);
    if (key_len != need) return -3;
    uint8_t material[64];
    memcpy(material, key, key_len);
    policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    policy.key = material;
    policy.window_size = outbound ? CC_TX_WINDOW : 1024;
    policy.allow_repeat_tx = outbound;
    return srtp_create(out, &policy) == srtp_err_status_ok ? 0 : -4;
}

int cc_set_srtp(cc_engine *e, int tid, int profile, const uint8_t *key, size_t key_len) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    srtp_t session;
    int err = srtp_session_new(profile, key, key_len, 1, &session);
    if (err) return err;
    cc_flush(e);
    if (t->has_srtp) srtp_dealloc(t->srtp);
    t->srtp = session;
    t->has_srtp = 1;
    t->profile = profile;
    return 0;
}

int cc_set_path(cc_engine *e, int tid, int fd, const struct sockaddr *addr, socklen_t alen) {
    cc_transport *t = transport_at(e, tid);
    if (!t || alen > sizeof(t->addr)) return -1;
    cc_flush(e);
    memcpy(&t->addr, addr, alen);
    t->alen = alen;
    t->fd = fd;
    t->has_path = 1;
    rx_rebuild(e);
    return 0;
}

int cc_clear_path(cc_engine *e, int tid) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    cc_flush(e);
    t->has_path = 0;
    t->fd = -1;
    rx_rebuild(e);
    return 0;
}

int cc_set_twcc(cc_engine *e, int tid, int ext_id) {
    cc_transport *t = transport_at(e, tid);
    if (!t || ext_id < 0 || ext_id > 14) return -1;
    if (t->twcc_id != ext_id) t->twcc_budget = CC_TWCC_SLACK; /* a new numbering: a new reader */
    t->twcc_id = (uint8_t)ext_id;
    return 0;
}

int cc_set_loss(cc_engine *e, int tid, int permille, uint32_t seed, int retransmissions) {
    cc_transport *t = transport_at(e, tid);
    if (!t || permille < 0 || permille > 1000) return -1;
    t->loss_permille = (uint32_t)permille;
    t->loss_state = seed ? seed : 1;
    t->loss_retransmissions = retransmissions != 0;
    return 0;
}

static int lose(cc_transport *t) { /* xorshift32, as the reference */
    if (!t->loss_permille) return 0;
    uint32_t x = t->loss_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t->loss_state = x;
    return x % 1000 < t->loss_permille;
}

int cc_twcc_take(cc_engine *e, int tid, uint16_t seq) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    uint8_t bit = (uint8_t)(1u << (seq & 7));
    int was = (t->twcc_pending[seq >> 3] & bit) != 0;
    t->twcc_pending[seq >> 3] &= (uint8_t)~bit;
    return was;
}

static uint16_t twcc_stamp(cc_transport *t) {
    uint16_t seq = t->twcc_next++;
    t->twcc_stamped++;
    uint16_t old = (uint16_t)(seq - 8192); /* feedback never came for it: forget it */
    t->twcc_pending[old >> 3] &= (uint8_t)~(1u << (old & 7));
    t->twcc_pending[seq >> 3] |= (uint8_t)(1u << (seq & 7));
    if (t->twcc_budget < 2 * CC_TWCC_SENT + CC_TWCC_SLACK - 2) t->twcc_budget += 2;
    else t->twcc_budget = 2 * CC_TWCC_SENT + CC_TWCC_SLACK;
    return seq;
}

int cc_twcc_feedback(cc_engine *e, int tid, const uint8_t *fci, size_t len, int *reported, int *lost) {
    cc_transport *t = transport_at(e, tid);
    uint8_t sym[CC_TWCC_SENT];
    if (!t) return -1;
    *reported = *lost = 0;
    if (len < 4) goto refused;
    int base = fci[0] << 8 | fci[1], count = fci[2] << 8 | fci[3];
    int span = (uint16_t)(t->twcc_next - base); /* numbers from base up to the last one we sent */
    if (count > span || span > CC_TWCC_SENT || count > t->twcc_budget || len < 8) goto refused;
    size_t pos = 8, needed = 0;
    int n = 0;
    while (n < count) { /* status chunks: run length, one-bit or two-bit vectors; symbols past count ignored */
        if (pos + 2 > len) goto refused;
        int w = fci[pos] << 8 | fci[pos + 1];
        pos += 2;
        if (!(w >> 15)) {
            int run = w & 0x1FFF;
            if (run > count - n) run = count - n;
            memset(sym + n, (w >> 13) & 3, (size_t)run);
            n += run;
        } else if (!(w >> 14 & 1)) {
            for (int i = 0; i < 14 && n < count; i++) sym[n++] = (uint8_t)(w >> (13 - i) & 1);
        } else {
            for (int i = 0; i < 7 && n < count; i++) sym[n++] = (uint8_t)(w >> (12 - 2 * i) & 3);
        }
    }
    for (int i = 0; i < count; i++) {
        if (sym[i] == 3) goto refused; /* reserved */
        needed += sym[i];              /* a small delta is one byte, a large one two */
    }
    if (pos + needed > len) goto refused;
    t->twcc_budget -= count;
    for (int i = 0; i < count; i++) {
        uint16_t seq = (uint16_t)(base + i);
        uint8_t bit = (uint8_t)(1u << (seq & 7));
        if (!(t->twcc_pending[seq >> 3] & bit)) continue;
        t->twcc_pending[seq >> 3] &= (uint8_t)~bit;
        ++*reported;
        if (!sym[i]) ++*lost;
    }
    if (*reported) {
        t->twcc_feedbacks++;
        t->twcc_reported += (uint64_t)*reported;
        t->twcc_lost += (uint64_t)*lost;
        t->win_reported += (uint32_t)*reported;
        t->win_lost += (uint32_t)*lost;
    }
    return 0;
refused:
    t->twcc_refused++;
    return 1;
}

int cc_twcc_window(cc_engine *e, int tid, int *lost, int *reported) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    *lost = *reported = 0;
    if (t->win_reported < CC_LOSS_WINDOW) return 0;
    uint32_t l = t->win_lost, r = t->win_reported;
    while (r > 0xFFFF) l >>= 1, r >>= 1; /* the window travels as 16-bit numbers (CC_RX_LOSS): keep the ratio */
    *lost = (int)l;
    *reported = (int)r;
    t->win_lost = t->win_reported = 0;
    return 1;
}

int cc_set_feedback(cc_engine *e, int tid, int on) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    t->feedback = on != 0;
    return 0;
}

int cc_rx_feedback(cc_engine *e, int tid, const uint8_t *d, size_t n, int *lost, int *reported) {
    cc_transport *t = transport_at(e, tid);
    *lost = *reported = 0;
    if (!t) return -1;
    if (!t->feedback || n < 4 || n > CC_MAX_PACKET) return 0;
    /* first pass, nothing applied: is everything in it ours to read? (sfu/rtcp.py parse_rtcp's framing) */
    size_t pos = 0, fci = 0, fci_end = 0;
    int twcc = 0;
    while (pos < n) {
        if (pos + 4 > n) return 0;
        size_t end = pos + 4 + 4 * (size_t)(d[pos + 2] << 8 | d[pos + 3]);
        if (d[pos] >> 6 != 2 || end > n) return 0;
        int count = d[pos] & 0x1F, pt = d[pos + 1];
        if (pt == 201) { /* RR: sender SSRC, then report blocks of 24 bytes; fraction lost is a block's 5th byte */
            if (pos + 8 + 24 * (size_t)count > end) return 0;
            for (int i = 0; i < count; i++)
                if (d[pos + 8 + 24 * (size_t)i + 4] > CC_LOSS_QUIET) return 0;
        } else if (pt == 205 && count == 15) { /* transport-cc: sender and media SSRC, then the FCI */
            if (!t->twcc_id || pos + 12 > end || twcc++) return 0;
            fci = pos + 12;
            fci_end = end;
        } else if (pt != 202) { /* SDES is the only other packet Python ignores too */
            return 0;
        }
        pos = end;
    }
    /* second pass: apply */
    if (twcc) {
        int r, l;
        cc_twcc_feedback(e, tid, d + fci, fci_end - fci, &r, &l);
        if (cc_twcc_window(e, tid, lost, reported) == 1) {
            if (*lost * 256 / *reported > CC_LOSS_QUIET) {
                t->loss_windows++;
                return 2;
            }
        }
        *lost = *reported = 0;
    }
    t->rtcp_consumed++;
    return 1;
}

int cc_send_rtcp(cc_engine *e, int tid, const uint8_t *data, size_t len) {
    cc_transport *t = transport_at(e, tid);
    if (!t || len < 8 || len > CC_MAX_PACKET - 64) return -1;
    if (!t->has_srtp || !t->has_path) return 0;
    uint8_t *b = queue(e, tid, (uint32_t)len, CC_OUT_RTCP);
    if (!b) return -1;
    memcpy(b, data, len);
    cc_flush(e);
    return 1;
}

int cc_protect(cc_engine *e, int tid, int rtcp, uint8_t *buf, int *len) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    if (!t->has_srtp) return -2;
    cc_flush(e); /* keep the order in which packets were protected */
    srtp_err_status_t status = rtcp ? srtp_protect_rtcp(t->srtp, buf, len) : srtp_protect(t->srtp, buf, len);
    return status == srtp_err_status_ok ? 0 : -3;
}

/* ---- slots and their consumers ----------------------------------------------------------------------------- */

int cc_add_slot(cc_engine *e, int tid, uint32_t clock_rate) {
    if (!transport_at(e, tid) || clock_rate == 0) return -1;
    int id;
    ALLOC_ID(e->slots, e->nslots, cc_slot, id);
    cc_slot *c = e->slots[id];
    if (!(c->history = malloc(sizeof(cc_hist) * CC_HISTORY))) {
        free(c);
        e->slots[id] = NULL;
        return -1;
    }
    for (int i = 0; i < CC_HISTORY; i++) c->history[i].stream = -1;
    c->transport = tid;
    c->ts.clock_rate = clock_rate;
    c->current = c->target = -1;
    c->last_seq = -1;
    return id;
}

static void unlink_slot(cc_engine *e, int id, cc_slot *c) {
    for (int k = 0; k < c->nstreams; k++) {
        cc_stream *s = stream_at(e, c->streams[k]);
        if (!s) continue;
        for (int i = 0; i < s->nslots; i++)
            if (s->slots[i] == id) { /* keep the order: it is the order copies leave in */
                memmove(s->slots + i, s->slots + i + 1, sizeof(int) * (size_t)(s->nslots - i - 1));
                s->nslots--;
                break;
            }
    }
    c->nstreams = 0;
    c->attached = 0;
}

int cc_remove_slot(cc_engine *e, int id) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    unlink_slot(e, id, c);
    free(c->history);
    free(c);
    e->slots[id] = NULL;
    return 0;
}

int cc_bind_slot(cc_engine *e, int id, uint32_t ssrc, int pt, int has_rtx, uint32_t rtx_ssrc, int rtx_pt) {
    cc_slot *c = slot_at(e, id);
    if (!c || pt < 0 || pt > 127 || (has_rtx && (rtx_pt < 0 || rtx_pt > 127))) return -1;
    c->ssrc = ssrc;
    c->pt = (uint8_t)pt;
    c->has_rtx = has_rtx != 0;
    c->rtx_ssrc = rtx_ssrc;
    c->rtx_pt = (uint8_t)rtx_pt;
    c->bound = 1;
    return 0;
}

int cc_unbind_slot(cc_engine *e, int id) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    c->bound = 0;
    return 0;
}

int cc_attach(cc_engine *e, int id, const int *streams, int n, int video, int paused) {
    cc_slot *c = slot_at(e, id);
    if (!c || n < 1 || n > CC_MAX_LAYERS) return -1;
    for (int k = 0; k < n; k++)
        if (!stream_at(e, streams[k])) return -1;
    unlink_slot(e, id, c);
    for (int k = 0; k < n; k++) {
        cc_stream *s = e->streams[streams[k]];
        if (s->nslots == s->capslots) {
            int *grown = realloc(s->slots, sizeof(int) * (size_t)(s->capslots + 16));
            if (!grown) return -1;
            s->slots = grown;
            s->capslots += 16;
        }
        s->slots[s->nslots++] = id;
        c->streams[k] = streams[k];
    }
    c->nstreams = n;
    c->attached = 1;
    c->video = video;
    c->current = n > 1 ? -1 : streams[0];
    c->target = streams[0];
    c->paused = paused;
    c->started = 0;
    c->sw = 1;
    c->retransmitted = c->switches = c->nacks_refused = 0;
    memset(c->drops, 0, sizeof(c->drops));
    return 0;
}

int cc_detach(cc_engine *e, int id) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    unlink_slot(e, id, c);
    c->current = c->target = -1;
    return 0;
}

int cc_set_target(cc_engine *e, int id, int sid) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    c->target = sid;
    return 0;
}

int cc_set_paused(cc_engine *e, int id, int paused) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    c->paused = paused;
    return 0;
}

int cc_restart(cc_engine *e, int id) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    c->started = 0;
    return 0;
}

int cc_ts_peek(cc_engine *e, int id, uint32_t ts, uint32_t *out) {
    cc_slot *c = slot_at(e, id);
    if (!c) return -1;
    if (!c->ts.has) return 0;
    *out = (uint32_t)(((int64_t)ts + c->ts.offset) & 0xFFFFFFFF);
    return 1;
}

/* ---- output ------------------------------------------------------------------------------------------------ */

static uint8_t *queue(cc_engine *e, int tid, uint32_t len, int kind) {
    if (e->nout == CC_BATCH) cc_flush(e);
    cc_out *o = &e->out[e->nout];
    if (o->cap < len + SRTP_ROOM) {
        uint8_t *buf = realloc(o->buf, len + SRTP_ROOM);
        if (!buf) return NULL;
        o->buf = buf;
        o->cap = len + SRTP_ROOM;
    }
    o->transport = tid;
    o->kind = kind;
    o->len = len;
    e->nout++;
    return o->buf;
}

void cc_flush(cc_engine *e) {
    int n = e->nout;
    if (!n) return;
    e->nout = 0;
    struct mmsghdr *msgs = e->msgs, *group = e->group;
    struct iovec *iov = e->iov;
    int *fds = e->fds, *tids = e->tids, *gtids = e->gtids, *taken = e->taken, *kinds = e->kinds, *gkinds = e->gkinds;
    int ready = 0;
    for (int i = 0; i < n; i++) {
        cc_out *o = &e->out[i];
        cc_transport *t = transport_at(e, o->transport);
        if (!t) continue;
        int len = (int)o->len;
        if (!t->has_srtp) {
            e->drops[CC_DROP_SRTP_ERROR]++, t->drops[CC_DROP_SRTP_ERROR]++;
            if (e->capture) e->capture(e->capture_ctx, o->transport, o->buf, o->len, NULL, 0);
            continue;
        }
        uint8_t plain[e->capture ? o->len : 1];
        if (e->capture) memcpy(plain, o->buf, o->len);
        srtp_err_status_t status =
            o->kind == CC_OUT_RTCP ? srtp_protect_rtcp(t->srtp, o->buf, &len) : srtp_protect(t->srtp, o->buf, &len);
        if (status != srtp_err_status_ok) {
            e->drops[CC_DROP_SRTP_ERROR]++, t->drops[CC_DROP_SRTP_ERROR]++;
            if (e->capture) e->capture(e->capture_ctx, o->transport, plain, o->len, NULL, 0);
            continue;
        }
        if (e->capture) e->capture(e->capture_ctx, o->transport, plain, o->len, o->buf, (size_t)len);
        if ((o->kind == CC_OUT_MEDIA || (o->kind == CC_OUT_RETRANSMISSION && t->loss_retransmissions)) && lose(t)) {
            e->drops[CC_DROP_SIMULATED_LOSS]++, t->drops[CC_DROP_SIMULATED_LOSS]++;
            continue;
        }
        if (!t->has_path) {
            e->drops[CC_DROP_NO_PATH]++, t->drops[CC_DROP_NO_PATH]++;
            continue;
        }
        iov[ready].iov_base = o->buf;
        iov[ready].iov_len = (size_t)len;
        memset(&msgs[ready], 0, sizeof(msgs[ready]));
        msgs[ready].msg_hdr.msg_name = &t->addr;
        msgs[ready].msg_hdr.msg_namelen = t->alen;
        msgs[ready].msg_hdr.msg_iov = &iov[ready];
        msgs[ready].msg_hdr.msg_iovlen = 1;
        tids[ready] = o->transport;
        kinds[ready] = o->kind;
        fds[ready] = t->fd;
        ready++;
    }
    /* one sendmmsg per socket: group the ready datagrams by fd, keeping their order within a socket */
    memset(taken, 0, sizeof(int) * (size_t)ready);
    for (int i = 0; i < ready; i++) {
        if (taken[i]) continue;
        int fd = fds[i], g = 0;
        for (int j = i; j < ready; j++)
            if (!taken[j] && fds[j] == fd) {
                taken[j] = 1;
                gtids[g] = tids[j];
                gkinds[g] = kinds[j];
                group[g++] = msgs[j];
            }
        int done = 0;
        while (done < g) {
            int sent = 0;
            if (!e->dry_run) {
                sent = sendmmsg(fd, group + done, (unsigned)(g - done), MSG_DONTWAIT);
                if (sent < 0 && errno == EINTR) continue;
            } else {
                sent = g - done;
            }
            if (sent <= 0) { /* the first one failed: count it, go on with the rest */
                cc_transport *t = transport_at(e, gtids[done]);
                e->drops[CC_DROP_SEND_ERROR]++;
                if (t) t->drops[CC_DROP_SEND_ERROR]++;
                done++;
                continue;
            }
            for (int k = done; k < done + sent; k++) {
                cc_transport *t = transport_at(e, gtids[k]);
                if (gkinds[k] != CC_OUT_RTCP) {
                    e->packets_out++;
                    e->bytes_out += group[k].msg_hdr.msg_iov->iov_len;
                }
                if (t) {
                    t->packets_out++;
                    t->bytes_out += group[k].msg_hdr.msg_iov->iov_len;
                }
            }
            done += sent;
        }
    }
}

/* ---- forwarding -------------------------------------------------------------------------------------------- */

static void put16(uint8_t *b, uint16_t v) {
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}
static void put32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static void send_copy(cc_engine *e, int id, cc_slot *c, const cc_pkt *p, int sid) {
    int sw = c->sw;
    int seq = seq_rewrite(&c->seq, p->seq, sw);
    if (seq < 0) {
        e->drops[CC_DROP_STALE]++, c->drops[CC_DROP_STALE]++;
        return;
    }
    uint32_t ts = ts_rewrite(&c->ts, p->ts, p->arrival, sw);
    c->sw = 0;
    c->started = 1;
    cc_transport *t = transport_at(e, c->transport);
    uint32_t payload = p->pend - p->poff;
    uint32_t hlen = t && t->twcc_id ? 20 : 12;
    int32_t pid = -1, tl0 = -1;
    if (p->has_vp8) vp8_rewrite(&c->vp8, p, sw, &pid, &tl0);
    cc_hist *h = &c->history[seq & (CC_HISTORY - 1)];
    h->stream = sid;
    h->out_seq = (uint16_t)seq;
    h->in_seq = p->seq;
    h->out_ts = ts;
    h->pid = pid;
    h->tl0 = tl0;
    c->last_seq = seq;
    c->packets_sent++;
    c->octets_sent += payload;
    /* read without the lock by cc_slot_bytes_out (the slow path's layer choice, for every consumer) */
    __atomic_store_n(&c->bytes_out, c->bytes_out + hlen + payload, __ATOMIC_RELAXED);
    if (!t) return;
    uint8_t *b = queue(e, c->transport, hlen + payload, CC_OUT_MEDIA);
    if (!b) return;
    b[0] = hlen == 20 ? 0x90 : 0x80;
    b[1] = (uint8_t)(c->pt | (p->marker ? 0x80 : 0));
    put16(b + 2, (uint16_t)seq);
    put32(b + 4, ts);
    put32(b + 8, c->ssrc);
    if (hlen == 20) {
        put16(b + 12, 0xBEDE);
        put16(b + 14, 1);
        b[16] = (uint8_t)(t->twcc_id << 4 | 1);
        put16(b + 17, twcc_stamp(t));
        b[19] = 0;
    }
    memcpy(b + hlen, p->data + p->poff, payload);
    if (p->has_vp8) vp8_write(b + hlen, p, pid, tl0);
}

int cc_sender_reports(cc_engine *e, int sid, uint64_t ntp, uint32_t rtp_ts) {
    cc_stream *s = stream_at(e, sid);
    if (!s) return -1;
    int sent = 0;
    for (int i = 0; i < s->nslots; i++) {
        cc_slot *c = e->slots[s->slots[i]];
        if (!c || c->current != sid || !c->started || !c->bound || !c->ts.has) continue;
        cc_transport *t = transport_at(e, c->transport);
        if (!t || !t->has_srtp || !t->has_path) continue;
        uint8_t *b = queue(e, c->transport, 28, CC_OUT_RTCP);
        if (!b) continue;
        b[0] = 0x80;
        b[1] = 200;
        put16(b + 2, 6);
        put32(b + 4, c->ssrc);
        put32(b + 8, (uint32_t)(ntp >> 32));
        put32(b + 12, (uint32_t)ntp);
        put32(b + 16, (uint32_t)(((int64_t)rtp_ts + c->ts.offset) & 0xFFFFFFFF));
        put32(b + 20, (uint32_t)c->packets_sent);
        put32(b + 24, (uint32_t)c->octets_sent);
        sent++;
    }
    cc_flush(e);
    return sent;
}

static void become(cc_engine *e, int id, cc_slot *c, int sid) {
    if (sid == c->current) return;
    int previous = c->current;
    __atomic_store_n(&c->current, sid, __ATOMIC_RELAXED); /* read without the lock: cc_slot_current */
    c->sw = 1;
    if (previous >= 0) c->switches++, e->switches++;
    if (c->nstreams > 1) {
        if (e->nevents + 2 > e->capevents) {
            int cap = e->capevents ? e->capevents * 2 : 64;
            int *grown = realloc(e->events, sizeof(int) * (size_t)cap);
            if (!grown) return;
            e->events = grown;
            e->capevents = cap;
        }
        e->events[e->nevents++] = id;
        e->events[e->nevents++] = sid;
    }
}

static void forward(cc_engine *e, int id, cc_slot *c, const cc_pkt *p, int sid) {
    if (c->paused) {
        e->drops[CC_DROP_PAUSED]++, c->drops[CC_DROP_PAUSED]++;
        return;
    }
    if (!c->bound) {
        e->drops[CC_DROP_UNBOUND]++, c->drops[CC_DROP_UNBOUND]++;
        return;
    }
    if (sid != c->current) {
        if (sid != c->target || !p->keyframe) {
            e->drops[CC_DROP_OTHER_LAYER]++, c->drops[CC_DROP_OTHER_LAYER]++;
            return;
        }
        become(e, id, c, sid);
        c->started = 0;
    }
    if (!c->started && c->video && !p->keyframe) {
        e->drops[CC_DROP_BEFORE_KEYFRAME]++, c->drops[CC_DROP_BEFORE_KEYFRAME]++;
        return;
    }
    if (!c->started) {
        /* A consumer starts only once its subscriber can read it. Before the transport has its SRTP keys (DTLS
           not done) the flush would refuse the packet, yet the consumer would count as started: its start at
           connect (cc_start) would then skip the cached pictures, and the joiner would get delta frames and wait
           for the publisher's next keyframe. */
        cc_transport *t = transport_at(e, c->transport);
        if (t && !t->has_srtp) {
            e->drops[CC_DROP_SRTP_ERROR]++, t->drops[CC_DROP_SRTP_ERROR]++;
            return;
        }
    }
    send_copy(e, id, c, p, sid);
}

static void gop_add(cc_stream *s, cc_pkt *p) {
    if (p->keyframe && !(s->has_kts && p->ts == s->kts)) {
        gop_clear(s);
        s->gop[s->gop_n++] = p;
        p->refs++;
        s->kts = p->ts;
        s->has_kts = 1;
        s->gop_complete = 1;
        return;
    }
    if (!s->has_kts) return;
    if (s->gop_complete) {
        if (s->gop_n < CC_GOP_MAX) {
            s->gop[s->gop_n++] = p;
            p->refs++;
        } else { /* outgrown: keep the keyframe picture only */
            int kept = 0;
            for (int i = 0; i < s->gop_n; i++) {
                if (s->gop[i]->ts == s->kts)
                    s->gop[kept++] = s->gop[i];
                else
                    pkt_unref(s->gop[i]);
            }
            s->gop_n = kept;
            s->gop_complete = 0;
        }
    } else if (p->ts == s->kts && s->gop_n < CC_GOP_MAX) {
        s->gop[s->gop_n++] = p;
        p->refs++;
    }
}

int cc_push(cc_engine *e, int sid, const uint8_t *data, size_t len, double arrival) {
    cc_stream *s = stream_at(e, sid);
    if (!s) return -1;
    cc_rtp h;
    if (cc_parse_rtp(data, len, &h)) {
        e->drops[CC_DROP_MALFORMED]++, s->drops[CC_DROP_MALFORMED]++;
        return 0;
    }
    if (h.pt != s->pt) {
        e->drops[CC_DROP_WRONG_PT]++, s->drops[CC_DROP_WRONG_PT]++;
        return 0;
    }
    if (h.pend <= h.poff) {
        e->drops[CC_DROP_PADDING]++, s->drops[CC_DROP_PADDING]++;
        return 0;
    }
    cc_vp8 v = {-1, -1, 0, 0, 0};
    int keyframe = 0;
    if (s->codec == CC_CODEC_VP8) {
        if (cc_parse_vp8(data, h.poff, h.pend, &v)) {
            e->drops[CC_DROP_MALFORMED]++, s->drops[CC_DROP_MALFORMED]++;
            return 0;
        }
        keyframe = v.keyframe;
    } else if (s->codec == CC_CODEC_H264) {
        keyframe = cc_h264_has_sps(data, h.poff, h.pend);
    }
    cc_pkt *p = malloc(sizeof(cc_pkt) + len);
    if (!p) return 0;
    p->refs = 1;
    p->arrival = arrival;
    p->ts = h.ts;
    p->seq = h.seq;
    p->marker = h.marker;
    p->keyframe = (uint8_t)keyframe;
    p->has_vp8 = s->codec == CC_CODEC_VP8;
    p->long_pid = v.long_pid;
    p->pid = v.pid;
    p->tl0 = v.tl0;
    p->poff = h.poff;
    p->pend = h.pend;
    p->len = (uint32_t)len;
    memcpy(p->data, data, len);
    cc_pkt **cell = &s->cache[h.seq & (CC_CACHE - 1)];
    pkt_unref(*cell);
    *cell = p;
    s->packets_in++;
    s->bytes_in += len;
    if (keyframe) s->keyframes++;
    if (s->gop) gop_add(s, p);
    int flags = CC_F_ACCEPTED | (keyframe ? CC_F_KEYFRAME : 0);
    if (s->blocked) {
        e->drops[CC_DROP_BLOCKED]++, s->drops[CC_DROP_BLOCKED]++;
        return flags;
    }
    int before = e->nevents;
    for (int i = 0; i < s->nslots; i++) {
        int id = s->slots[i];
        cc_slot *c = e->slots[id];
        forward(e, id, c, p, sid);
    }
    cc_flush(e);
    if (e->nevents > before) flags |= CC_F_EVENTS;
    return flags;
}

int cc_cached(cc_engine *e, int sid, uint16_t seq) {
    cc_stream *s = stream_at(e, sid);
    if (!s) return -1;
    cc_pkt *p = s->cache[seq & (CC_CACHE - 1)];
    return p && p->seq == seq;
}

int cc_start(cc_engine *e, int id) {
    cc_slot *c = slot_at(e, id);
    if (!c || !c->attached) return -1;
    if (!c->bound || c->paused || c->started) return 0;
    int sid = c->target >= 0 ? c->target : c->streams[0];
    cc_stream *s = stream_at(e, sid);
    if (!s) return 0;
    if (!s->gop) {
        c->current = sid;
        return 0;
    }
    int n = s->gop_n, complete = s->gop_complete, key_only = 0;
    if (complete && n > CC_REPLAY_MAX) {
        key_only = 1;
        complete = 0;
    }
    if (n) {
        become(e, id, c, sid);
        for (int i = 0; i < n; i++)
            if (!key_only || s->gop[i]->ts == s->kts) send_copy(e, id, c, s->gop[i], sid);
        cc_flush(e);
        if (!complete) {
            c->started = 0;
            c->sw = 1;
        }
    }
    return !n || !complete;
}

static void miss(cc_engine *e, int sid, uint16_t seq) {
    if (e->nmissing + 2 > e->capmissing) {
        int cap = e->capmissing ? e->capmissing * 2 : 64;
        int *grown = realloc(e->missing, sizeof(int) * (size_t)cap);
        if (!grown) return;
        e->missing = grown;
        e->capmissing = cap;
    }
    e->missing[e->nmissing++] = sid;
    e->missing[e->nmissing++] = seq;
}

int cc_retransmit(cc_engine *e, int id, const uint16_t *seqs, int n) {
    cc_slot *c = slot_at(e, id);
    e->nmissing = 0;
    if (!c) return -1;
    int sent = 0;
    for (int i = 0; i < n; i++) {
        uint16_t out_seq = seqs[i];
        cc_hist *h = &c->history[out_seq & (CC_HISTORY - 1)];
        if (h->stream < 0 || h->out_seq != out_seq) continue;
        /* repeating an index older than the sender's replay window: libsrtp would refuse it */
        if (!c->has_rtx && (uint16_t)((uint16_t)c->last_seq - out_seq) >= CC_TX_WINDOW) continue;
        if (c->retransmitted >= c->packets_sent / 2 + CC_RTX_BURST) { /* a subscriber cannot make us resend forever */
            c->nacks_refused++;
            break;
        }
        cc_stream *s = stream_at(e, h->stream);
        if (!s) continue;
        cc_pkt *p = s->cache[h->in_seq & (CC_CACHE - 1)];
        if (!p || p->seq != h->in_seq) {
            miss(e, h->stream, h->in_seq);
            continue;
        }
        uint32_t payload = p->pend - p->poff;
        int rtx = c->has_rtx;
        uint8_t *b = queue(e, c->transport, 12 + (rtx ? 2 : 0) + payload, CC_OUT_RETRANSMISSION);
        if (!b) continue;
        b[0] = 0x80;
        if (rtx) {
            c->rtx_seq++;
            b[1] = (uint8_t)(c->rtx_pt | (p->marker ? 0x80 : 0));
            put16(b + 2, c->rtx_seq);
            put32(b + 4, h->out_ts);
            put32(b + 8, c->rtx_ssrc);
            put16(b + 12, out_seq);
        } else {
            b[1] = (uint8_t)(c->pt | (p->marker ? 0x80 : 0));
            put16(b + 2, out_seq);
            put32(b + 4, h->out_ts);
            put32(b + 8, c->ssrc);
        }
        uint8_t *body = b + 12 + (rtx ? 2 : 0);
        memcpy(body, p->data + p->poff, payload);
        if (p->has_vp8) vp8_write(body, p, h->pid, h->tl0);
        c->retransmitted++;
        e->retransmitted++;
        sent++;
    }
    cc_flush(e);
    return sent;
}

/* ---- receive (issue 14) ------------------------------------------------------------------------------------- */

/* The bytes that identify a UDP source: family, port, address. 0 for a family we do not serve. */
static size_t addr_key(const struct sockaddr *a, socklen_t alen, uint8_t out[20]) {
    if (a->sa_family == AF_INET && alen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        out[0] = 4;
        memcpy(out + 1, &v4->sin_port, 2);
        memcpy(out + 3, &v4->sin_addr, 4);
        return 7;
    }
    if (a->sa_family == AF_INET6 && alen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        out[0] = 6;
        memcpy(out + 1, &v6->sin6_port, 2);
        memcpy(out + 3, &v6->sin6_addr, 16);
        return 19;
    }
    return 0;
}

static uint32_t key_hash(const uint8_t *k, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 16777619u;
    return h;
}

static void rx_rebuild(cc_engine *e) {
    memset(e->rxhash, 0, sizeof(e->rxhash));
    for (int tid = 0; tid < e->ntransports; tid++) {
        cc_transport *t = e->transports[tid];
        uint8_t k[20];
        size_t n;
        if (!t || !t->has_path || !(n = addr_key((struct sockaddr *)&t->addr, t->alen, k))) continue;
        for (uint32_t i = key_hash(k, n), probes = 0; probes < CC_RX_HASH; i++, probes++) {
            int *slot = &e->rxhash[i & (CC_RX_HASH - 1)];
            if (*slot == 0) {
                *slot = tid + 1;
                break;
            }
        }
    }
}

static int rx_lookup(cc_engine *e, const struct sockaddr *addr, socklen_t alen) {
    uint8_t k[20], tk[20];
    size_t n = addr_key(addr, alen, k);
    if (!n) return -1;
    for (uint32_t i = key_hash(k, n), probes = 0; probes < CC_RX_HASH; i++, probes++) {
        int v = e->rxhash[i & (CC_RX_HASH - 1)];
        if (v == 0) return -1;
        cc_transport *t = transport_at(e, v - 1);
        if (t && t->has_path && addr_key((struct sockaddr *)&t->addr, t->alen, tk) == n && !memcmp(k, tk, n))
            return v - 1;
    }
    return -1;
}

int cc_set_srtp_rx(cc_engine *e, int tid, int profile, const uint8_t *key, size_t key_len) {
    cc_transport *t = transport_at(e, tid);
    if (!t) return -1;
    srtp_t session;
    int err = srtp_session_new(profile, key, key_len, 0, &session);
    if (err) return err;
    if (t->has_rx) srtp_dealloc(t->rx);
    t->rx = session;
    t->has_rx = 1;
    return 0;
}

int cc_rx_datagram(cc_engine *e, uint8_t *buf, int *len, const struct sockaddr *addr, socklen_t alen, int *tid) {
    *tid = -1;
    /* RFC 7983: 128-191 is RTP/RTCP; RTCP's packet types 192-223 sit in the second byte (RFC 5761) */
    if (*len < 12 || buf[0] < 128 || buf[0] > 191) return CC_RX_SLOW;
    int id = rx_lookup(e, addr, alen);
    cc_transport *t = id >= 0 ? transport_at(e, id) : NULL;
    if (!t || !t->has_rx) return CC_RX_SLOW;
    int rtcp = buf[1] >= 192 && buf[1] <= 223;
    int n = *len;
    srtp_err_status_t st = rtcp ? srtp_unprotect_rtcp(t->rx, buf, &n) : srtp_unprotect(t->rx, buf, &n);
    if (st != srtp_err_status_ok || n < 0 || n > *len) {
        t->rx_auth_failed++;
        e->rx_auth_failed++;
        return CC_RX_DROPPED;
    }
    *len = n;
    *tid = id;
    t->packets_in++;
    t->bytes_in += (uint64_t)n;
    e->rx_packets++;
    e->rx_bytes += (uint64_t)n;
    if (rtcp && t->feedback) {
        int lost, reported, read = cc_rx_feedback(e, id, buf, (size_t)n, &lost, &reported);
        if (read == 1) {
            e->rx_consumed++;
            return CC_RX_CONSUMED;
        }
        if (read == 2) {
            buf[0] = (uint8_t)(lost >> 8), buf[1] = (uint8_t)lost;
            buf[2] = (uint8_t)(reported >> 8), buf[3] = (uint8_t)reported;
            *len = 4;
            return CC_RX_LOSS;
        }
    }
    return rtcp ? CC_RX_RTCP : CC_RX_RTP;
}

int cc_recv_read(cc_engine *e, int fd) {
    if (!e->rxbuf && !(e->rxbuf = malloc((size_t)CC_RX_BATCH * CC_RX_MTU))) return -ENOMEM;
    for (int i = 0; i < CC_RX_BATCH; i++) {
        e->rxiov[i].iov_base = e->rxbuf + (size_t)i * CC_RX_MTU;
        e->rxiov[i].iov_len = CC_RX_MTU;
        memset(&e->rxmsgs[i].msg_hdr, 0, sizeof(e->rxmsgs[i].msg_hdr));
        e->rxmsgs[i].msg_hdr.msg_iov = &e->rxiov[i];
        e->rxmsgs[i].msg_hdr.msg_iovlen = 1;
        e->rxmsgs[i].msg_hdr.msg_name = &e->rx[i].addr;
        e->rxmsgs[i].msg_hdr.msg_namelen = sizeof(e->rx[i].addr);
        e->rxmsgs[i].msg_hdr.msg_control = e->rxctl[i].buf;
        e->rxmsgs[i].msg_hdr.msg_controllen = sizeof(e->rxctl[i].buf);
    }
    int got = recvmmsg(fd, e->rxmsgs, CC_RX_BATCH, MSG_DONTWAIT, NULL);
    if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    return got;
}

int cc_recv_sort(cc_engine *e, int got, int route) {
    /* the kernel stamps CLOCK_REALTIME; Python's time.monotonic() is CLOCK_MONOTONIC: one offset per batch */
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    double now = (double)mono.tv_sec + (double)mono.tv_nsec * 1e-9;
    double offset = now - ((double)real.tv_sec + (double)real.tv_nsec * 1e-9);
    int out = 0;
    for (int i = 0; i < got; i++) {
        double arrival = now;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&e->rxmsgs[i].msg_hdr); c; c = CMSG_NXTHDR(&e->rxmsgs[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                double at = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + offset;
                if (at <= now) arrival = at; /* a clock step between the two reads must not put it in the future */
            }
        }
        uint8_t *data = e->rxbuf + (size_t)i * CC_RX_MTU;
        int len = (int)e->rxmsgs[i].msg_len;
        socklen_t alen = e->rxmsgs[i].msg_hdr.msg_namelen;
        if (e->rxmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
            e->rx_truncated++; /* larger than any datagram WebRTC sends */
            continue;
        }
        int tid, kind = cc_rx_datagram(e, data, &len, (struct sockaddr *)&e->rx[i].addr, alen, &tid);
        if (kind == CC_RX_DROPPED || kind == CC_RX_CONSUMED) continue;
        if (kind == CC_RX_SLOW) e->rx_slow++;
        int flags = 0;
        if (kind == CC_RX_RTP && route) kind = cc_rx_route(e, tid, data, len, arrival, &flags);
        if (out != i) { /* keep the entries dense: move this one down */
            memmove(e->rxbuf + (size_t)out * CC_RX_MTU, data, (size_t)len);
            e->rx[out].addr = e->rx[i].addr;
        }
        e->rx[out].tid = tid;
        e->rx[out].kind = kind;
        e->rx[out].flags = flags;
        e->rx[out].len = (uint32_t)len;
        e->rx[out].alen = alen;
        e->rx[out].arrival = arrival;
        out++;
    }
    return out;
}

int cc_recv(cc_engine *e, int fd) {
    int got = cc_recv_read(e, fd);
    return got > 0 ? cc_recv_sort(e, got, 1) : got;
}

int cc_route(cc_engine *e, int tid, uint32_t ssrc, int sid) {
    cc_transport *t = transport_at(e, tid);
    if (!t || (sid >= 0 && !stream_at(e, sid))) return -1;
    for (int k = 0; k < t->nroutes; k++)
        if (t->route_ssrc[k] == ssrc) {
            if (sid >= 0) {
                t->route_sid[k] = sid;
            } else {
                t->nroutes--;
                t->route_ssrc[k] = t->route_ssrc[t->nroutes], t->route_sid[k] = t->route_sid[t->nroutes];
            }
            return 0;
        }
    if (sid < 0) return 0;
    if (t->nroutes == CC_ROUTES) return -2;
    t->route_ssrc[t->nroutes] = ssrc, t->route_sid[t->nroutes] = sid, t->nroutes++;
    return 0;
}

int cc_rx_route(cc_engine *e, int tid, const uint8_t *buf, int len, double arrival, int *flags) {
    *flags = 0;
    cc_transport *t = transport_at(e, tid);
    if (!t || !t->nroutes || len < 12) return CC_RX_RTP;
    uint32_t ssrc = (uint32_t)buf[8] << 24 | (uint32_t)buf[9] << 16 | (uint32_t)buf[10] << 8 | buf[11];
    for (int k = 0; k < t->nroutes; k++)
        if (t->route_ssrc[k] == ssrc) {
            int f = cc_push(e, t->route_sid[k], buf, (size_t)len, arrival);
            if (f < 0) return CC_RX_RTP; /* cannot happen: a removed stream loses its routes */
            *flags = f;
            t->rx_pushed++;
            e->rx_pushed++;
            return CC_RX_PUSHED;
        }
    return CC_RX_RTP;
}

/* Lock-free reads for the slow path's thread (the one that makes and removes slots, so the slot cannot go away
 * under it): the reader thread writes these two with atomic stores. */
int cc_slot_current(cc_engine *e, int slot, int *current) {
    cc_slot *c = slot_at(e, slot);
    if (!c) return -1;
    *current = __atomic_load_n(&c->current, __ATOMIC_RELAXED);
    return 0;
}

int cc_slot_bytes_out(cc_engine *e, int slot, uint64_t *bytes) {
    cc_slot *c = slot_at(e, slot);
    if (!c) return -1;
    *bytes = __atomic_load_n(&c->bytes_out, __ATOMIC_RELAXED);
    return 0;
}
