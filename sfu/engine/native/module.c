/* CPython binding of the engine core (core.c): sfu.engine._native.Engine. Same methods, arguments and results
 * as sfu.engine.reference.Engine; push() is the one call per incoming packet, METH_FASTCALL to keep it cheap. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core.h"
#include "reader.h"

static PyObject *EngineError;

static const char *DROP_NAMES[CC_DROP_COUNT] = {
    "malformed", "wrong_payload_type", "padding", "blocked", "paused", "unbound",
    "other_layer", "before_keyframe", "stale", "no_path", "srtp_error", "send_error", "simulated_loss",
};

typedef struct {
    PyObject_HEAD cc_engine *e;
    PyObject *capture; /* a list, or NULL */
    /* the reader thread and the mutex every method takes (reader.h): uncontended, tens of nanoseconds a call */
    cc_reader reader;
} EngineObject;

#define LOCK(self) cc_reader_lock(&(self)->reader)
#define UNLOCK(self) cc_reader_unlock(&(self)->reader)

static int check(int rc, const char *what) {
    if (rc < 0) {
        PyErr_Format(EngineError, "%s failed (%d)", what, rc);
        return -1;
    }
    return 0;
}

static void capture_cb(void *ctx, int tid, const uint8_t *plain, size_t plain_len, const uint8_t *cipher,
                       size_t cipher_len) {
    EngineObject *self = ctx;
    if (!self->capture) return;
    PyObject *item;
    if (cipher)
        item = Py_BuildValue("(iy#y#)", tid, plain, (Py_ssize_t)plain_len, cipher, (Py_ssize_t)cipher_len);
    else
        item = Py_BuildValue("(iy#O)", tid, plain, (Py_ssize_t)plain_len, Py_None);
    if (item) {
        PyList_Append(self->capture, item);
        Py_DECREF(item);
    } else {
        PyErr_Clear();
    }
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->e = cc_engine_new();
    if (!self->e) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->e->capture_ctx = self;
    if (cc_reader_init(&self->reader, self->e)) {
        cc_engine_free(self->e);
        self->e = NULL;
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Engine_dealloc(EngineObject *self) {
    if (self->e) {
        Py_BEGIN_ALLOW_THREADS
        cc_reader_destroy(&self->reader);
        Py_END_ALLOW_THREADS
    }
    if (self->e) {
        self->e->capture = NULL;
        cc_engine_free(self->e);
    }
    Py_XDECREF(self->capture);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- the hot call ---------------------------------------------------------------------------------------- */

static PyObject *Engine_push(EngineObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "push(stream, data, arrival)");
        return NULL;
    }
    long sid = PyLong_AsLong(args[0]);
    if (sid == -1 && PyErr_Occurred()) return NULL;
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "push: data must be bytes");
        return NULL;
    }
    double arrival = PyFloat_AsDouble(args[2]);
    if (arrival == -1.0 && PyErr_Occurred()) return NULL;
    int flags = cc_push(self->e, (int)sid, (const uint8_t *)PyBytes_AS_STRING(args[1]),
                        (size_t)PyBytes_GET_SIZE(args[1]), arrival);
    if (flags < 0) return PyErr_Format(EngineError, "push: unknown stream %ld", sid);
    return PyLong_FromLong(flags);
}

/* ---- commands ---------------------------------------------------------------------------------------------- */

static PyObject *Engine_add_stream(EngineObject *self, PyObject *args) {
    int codec, video, pt;
    if (!PyArg_ParseTuple(args, "ipi", &codec, &video, &pt)) return NULL;
    if (codec < 0 || codec > 2 || pt < 0 || pt > 127) return PyErr_Format(PyExc_ValueError, "bad stream");
    int sid = cc_add_stream(self->e, codec, video, pt);
    if (check(sid, "add_stream")) return NULL;
    return PyLong_FromLong(sid);
}

#define SIMPLE1(name, call)                                                                              \
    static PyObject *Engine_##name(EngineObject *self, PyObject *args) {                                 \
        int a;                                                                                           \
        if (!PyArg_ParseTuple(args, "i", &a)) return NULL;                                               \
        if (check(call(self->e, a), #name)) return NULL;                                                 \
        Py_RETURN_NONE;                                                                                  \
    }
#define SIMPLE2(name, call)                                                                              \
    static PyObject *Engine_##name(EngineObject *self, PyObject *args) {                                 \
        int a, b;                                                                                        \
        if (!PyArg_ParseTuple(args, "ii", &a, &b)) return NULL;                                          \
        if (check(call(self->e, a, b), #name)) return NULL;                                              \
        Py_RETURN_NONE;                                                                                  \
    }

SIMPLE1(remove_stream, cc_remove_stream)
SIMPLE2(set_blocked, cc_set_blocked)
SIMPLE1(remove_transport, cc_remove_transport)
SIMPLE1(clear_path, cc_clear_path)
SIMPLE2(set_twcc, cc_set_twcc)
SIMPLE1(remove_slot, cc_remove_slot)
SIMPLE1(detach, cc_detach)
SIMPLE1(unbind_slot, cc_unbind_slot)
SIMPLE2(set_target, cc_set_target)
SIMPLE2(set_paused, cc_set_paused)
SIMPLE1(restart, cc_restart)

static PyObject *Engine_add_transport(EngineObject *self, PyObject *unused) {
    int tid = cc_add_transport(self->e);
    if (check(tid, "add_transport")) return NULL;
    return PyLong_FromLong(tid);
}

static PyObject *Engine_set_srtp(EngineObject *self, PyObject *args) {
    int tid, profile;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "iiy*", &tid, &profile, &key)) return NULL;
    int rc = cc_set_srtp(self->e, tid, profile, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    if (check(rc, "set_srtp")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_srtp_rx(EngineObject *self, PyObject *args) {
    int tid, profile;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "iiy*", &tid, &profile, &key)) return NULL;
    int rc = cc_set_srtp_rx(self->e, tid, profile, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    if (check(rc, "set_srtp_rx")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *address_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, (int)ntohs(v4->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, (int)ntohs(v6->sin6_port));
    }
    Py_RETURN_NONE;
}

/* recv(fd) -> [(transport, kind, data, address or None, arrival)]: one recvmmsg batch (issue 14). kind 0 RTP and
 * 1 RTCP (unprotected, from the transport's path address), 2 for the slow path (STUN, DTLS, unknown source:
 * address); arrival on time.monotonic()'s clock, from the kernel's receive stamp when the socket has
 * SO_TIMESTAMPNS on. */
static PyObject *rx_item(const cc_rx *r, const uint8_t *data, int fd, int with_fd) {
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, r->len);
    if (!bytes) return NULL;
    PyObject *extra;
    if (r->kind == CC_RX_SLOW) {
        extra = address_tuple(&r->addr);
    } else if (r->kind == CC_RX_PUSHED) {
        extra = PyLong_FromLong(r->flags);
    } else {
        Py_INCREF(Py_None);
        extra = Py_None;
    }
    if (!extra) {
        Py_DECREF(bytes);
        return NULL;
    }
    return with_fd ? Py_BuildValue("(iiNNdi)", r->tid, r->kind, bytes, extra, r->arrival, fd)
                   : Py_BuildValue("(iiNNd)", r->tid, r->kind, bytes, extra, r->arrival);
}

static PyObject *Engine_recv(EngineObject *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    if (self->reader.running) return PyErr_Format(EngineError, "recv: the reader thread owns the sockets");
    int n = cc_recv(self->e, fd);
    if (n < 0) {
        errno = -n;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *item = rx_item(&self->e->rx[i], self->e->rxbuf + (size_t)i * CC_RX_MTU, fd, 0);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *Engine_route(EngineObject *self, PyObject *args) {
    int tid, sid;
    unsigned int ssrc;
    if (!PyArg_ParseTuple(args, "iIi", &tid, &ssrc, &sid)) return NULL;
    int rc = cc_route(self->e, tid, (uint32_t)ssrc, sid);
    if (rc == -2) return PyErr_Format(EngineError, "route: at most %d routes per transport", CC_ROUTES);
    if (check(rc, "route")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_rx_stats(EngineObject *self, PyObject *args) {
    int tid = -1;
    if (!PyArg_ParseTuple(args, "|i", &tid)) return NULL;
    cc_engine *e = self->e;
    if (tid < 0)
        return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "packets", (unsigned long long)e->rx_packets, "bytes",
                             (unsigned long long)e->rx_bytes, "auth_failed", (unsigned long long)e->rx_auth_failed,
                             "truncated", (unsigned long long)e->rx_truncated, "slow",
                             (unsigned long long)e->rx_slow, "consumed", (unsigned long long)e->rx_consumed,
                             "pushed", (unsigned long long)e->rx_pushed);
    cc_transport *t = tid < e->ntransports ? e->transports[tid] : NULL;
    if (!t) return PyErr_Format(EngineError, "rx_stats: unknown transport %d", tid);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "packets", (unsigned long long)t->packets_in, "bytes",
                         (unsigned long long)t->bytes_in, "auth_failed", (unsigned long long)t->rx_auth_failed,
                         "rtcp_consumed", (unsigned long long)t->rtcp_consumed, "loss_windows",
                         (unsigned long long)t->loss_windows, "pushed", (unsigned long long)t->rx_pushed);
}

static PyObject *Engine_set_path(EngineObject *self, PyObject *args) {
    int tid, fd, port;
    const char *host;
    if (!PyArg_ParseTuple(args, "iisi", &tid, &fd, &host, &port)) return NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (port < 0 || port > 65535) return PyErr_Format(PyExc_ValueError, "bad port %d", port);
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof(*v6);
    } else {
        return PyErr_Format(PyExc_ValueError, "not an IP address: %s", host);
    }
    if (check(cc_set_path(self->e, tid, fd, (struct sockaddr *)&ss, len), "set_path")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_loss(EngineObject *self, PyObject *args) {
    int tid, permille, retransmissions = 0;
    unsigned int seed;
    if (!PyArg_ParseTuple(args, "iiI|p", &tid, &permille, &seed, &retransmissions)) return NULL;
    if (check(cc_set_loss(self->e, tid, permille, seed, retransmissions), "set_loss")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_twcc_take(EngineObject *self, PyObject *args) {
    int tid, seq;
    if (!PyArg_ParseTuple(args, "ii", &tid, &seq)) return NULL;
    int rc = cc_twcc_take(self->e, tid, (uint16_t)seq);
    if (check(rc, "twcc_take")) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *Engine_twcc_feedback(EngineObject *self, PyObject *args) {
    int tid, reported, lost;
    Py_buffer fci;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &fci)) return NULL;
    int rc = cc_twcc_feedback(self->e, tid, fci.buf, (size_t)fci.len, &reported, &lost);
    PyBuffer_Release(&fci);
    if (check(rc, "twcc_feedback")) return NULL;
    if (rc) Py_RETURN_NONE;
    return Py_BuildValue("(ii)", reported, lost);
}

static PyObject *Engine_twcc_window(EngineObject *self, PyObject *args) {
    int tid, lost, reported;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    int rc = cc_twcc_window(self->e, tid, &lost, &reported);
    if (check(rc, "twcc_window")) return NULL;
    if (!rc) Py_RETURN_NONE;
    return Py_BuildValue("(ii)", lost, reported);
}

static PyObject *Engine_set_feedback(EngineObject *self, PyObject *args) {
    int tid, on;
    if (!PyArg_ParseTuple(args, "ip", &tid, &on)) return NULL;
    if (check(cc_set_feedback(self->e, tid, on), "set_feedback")) return NULL;
    Py_RETURN_NONE;
}

/* rx_feedback(transport, rtcp) -> (0 | 1 | 2, lost, reported): what cc_rx_datagram does with a subscriber's
 * unprotected RTCP under native feedback (exposed for the differential tests) */
static PyObject *Engine_rx_feedback(EngineObject *self, PyObject *args) {
    int tid, lost, reported;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &data)) return NULL;
    int rc = cc_rx_feedback(self->e, tid, data.buf, (size_t)data.len, &lost, &reported);
    PyBuffer_Release(&data);
    if (check(rc, "rx_feedback")) return NULL;
    return Py_BuildValue("(iii)", rc, lost, reported);
}

static PyObject *protect(EngineObject *self, PyObject *args, int rtcp) {
    int tid;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &data)) return NULL;
    if (data.len > CC_MAX_PACKET) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "packet too long");
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len + 64);
    if (!out) {
        PyBuffer_Release(&data);
        return NULL;
    }
    memcpy(PyBytes_AS_STRING(out), data.buf, (size_t)data.len);
    int len = (int)data.len;
    PyBuffer_Release(&data);
    int rc = cc_protect(self->e, tid, rtcp, (uint8_t *)PyBytes_AS_STRING(out), &len);
    if (rc < 0) {
        Py_DECREF(out);
        return PyErr_Format(EngineError, "protect failed (%d)", rc);
    }
    if (_PyBytes_Resize(&out, len) < 0) return NULL;
    return out;
}

static PyObject *Engine_send_rtcp(EngineObject *self, PyObject *args) {
    int tid;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &data)) return NULL;
    int rc = cc_send_rtcp(self->e, tid, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    if (check(rc, "send_rtcp")) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *Engine_protect_rtp(EngineObject *self, PyObject *args) { return protect(self, args, 0); }
static PyObject *Engine_protect_rtcp(EngineObject *self, PyObject *args) { return protect(self, args, 1); }

static PyObject *Engine_add_slot(EngineObject *self, PyObject *args) {
    int tid;
    unsigned int rate;
    if (!PyArg_ParseTuple(args, "iI", &tid, &rate)) return NULL;
    int id = cc_add_slot(self->e, tid, rate);
    if (check(id, "add_slot")) return NULL;
    return PyLong_FromLong(id);
}

static PyObject *Engine_bind_slot(EngineObject *self, PyObject *args) {
    int id, pt;
    unsigned int ssrc;
    PyObject *rtx_ssrc, *rtx_pt;
    if (!PyArg_ParseTuple(args, "iIiOO", &id, &ssrc, &pt, &rtx_ssrc, &rtx_pt)) return NULL;
    int has_rtx = rtx_ssrc != Py_None && rtx_pt != Py_None;
    unsigned long rs = 0;
    long rp = 0;
    if (has_rtx) {
        rs = PyLong_AsUnsignedLong(rtx_ssrc);
        rp = PyLong_AsLong(rtx_pt);
        if (PyErr_Occurred()) return NULL;
    }
    if (check(cc_bind_slot(self->e, id, ssrc, pt, has_rtx, (uint32_t)rs, (int)rp), "bind_slot")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_attach(EngineObject *self, PyObject *args) {
    int id, video, paused;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "iO!pp", &id, &PyList_Type, &list, &video, &paused)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < 1 || n > CC_MAX_LAYERS) return PyErr_Format(PyExc_ValueError, "1 to %d streams", CC_MAX_LAYERS);
    int streams[CC_MAX_LAYERS];
    for (Py_ssize_t i = 0; i < n; i++) {
        streams[i] = (int)PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (PyErr_Occurred()) return NULL;
    }
    if (check(cc_attach(self->e, id, streams, (int)n, video, paused), "attach")) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_start(EngineObject *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    int rc = cc_start(self->e, id);
    if (check(rc, "start")) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *Engine_retransmit(EngineObject *self, PyObject *args) {
    int id;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "iO!", &id, &PyList_Type, &list)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    uint16_t *seqs = PyMem_Malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    if (!seqs) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(seqs);
            return NULL;
        }
        seqs[i] = (uint16_t)v;
    }
    int rc = cc_retransmit(self->e, id, seqs, (int)n);
    PyMem_Free(seqs);
    if (check(rc, "retransmit")) return NULL;
    PyObject *missing = PyList_New(0);
    if (!missing) return NULL;
    for (int i = 0; i + 1 < self->e->nmissing; i += 2) {
        PyObject *pair = Py_BuildValue("(ii)", self->e->missing[i], self->e->missing[i + 1]);
        if (!pair || PyList_Append(missing, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(missing);
            return NULL;
        }
        Py_DECREF(pair);
    }
    return missing;
}

static PyObject *Engine_cached(EngineObject *self, PyObject *args) {
    int sid, seq;
    if (!PyArg_ParseTuple(args, "ii", &sid, &seq)) return NULL;
    int rc = cc_cached(self->e, sid, (uint16_t)seq);
    if (check(rc, "cached")) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *Engine_ts_peek(EngineObject *self, PyObject *args) {
    int id;
    unsigned int ts;
    if (!PyArg_ParseTuple(args, "iI", &id, &ts)) return NULL;
    uint32_t out = 0;
    int rc = cc_ts_peek(self->e, id, ts, &out);
    if (check(rc, "ts_peek")) return NULL;
    if (!rc) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(out);
}

static PyObject *Engine_sender_reports(EngineObject *self, PyObject *args) {
    int sid;
    unsigned long long ntp;
    unsigned int rtp_ts;
    if (!PyArg_ParseTuple(args, "iKI", &sid, &ntp, &rtp_ts)) return NULL;
    int rc = cc_sender_reports(self->e, sid, (uint64_t)ntp, (uint32_t)rtp_ts);
    if (check(rc, "sender_reports")) return NULL;
    return PyLong_FromLong(rc);
}

static PyObject *Engine_events(EngineObject *self, PyObject *unused) {
    cc_engine *e = self->e;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int i = 0; i + 1 < e->nevents; i += 2) {
        PyObject *pair = Py_BuildValue("(ii)", e->events[i], e->events[i + 1]);
        if (!pair || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(pair);
    }
    e->nevents = 0;
    return list;
}

static PyObject *drops_dict(const uint64_t *drops) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < CC_DROP_COUNT; i++) {
        if (!drops[i]) continue;
        PyObject *v = PyLong_FromUnsignedLongLong(drops[i]);
        if (!v || PyDict_SetItemString(d, DROP_NAMES[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Engine_slot_info(EngineObject *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    cc_slot *c = id >= 0 && id < self->e->nslots ? self->e->slots[id] : NULL;
    if (!c) return PyErr_Format(EngineError, "slot_info: unknown slot %d", id);
    PyObject *drops = drops_dict(c->drops);
    if (!drops) return NULL;
    return Py_BuildValue("{s:i,s:i,s:i,s:O,s:O,s:K,s:K,s:K,s:K,s:K,s:K,s:N}", "current", c->current, "target",
                         c->target, "last_seq", c->last_seq,
                         "started", c->started ? Py_True : Py_False, "paused", c->paused ? Py_True : Py_False,
                         "packets_sent", (unsigned long long)c->packets_sent, "octets_sent",
                         (unsigned long long)c->octets_sent, "bytes_out", (unsigned long long)c->bytes_out,
                         "retransmitted", (unsigned long long)c->retransmitted, "switches",
                         (unsigned long long)c->switches, "nacks_refused", (unsigned long long)c->nacks_refused,
                         "drops", drops);
}

static PyObject *Engine_current(EngineObject *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    int current;
    if (cc_slot_current(self->e, id, &current)) return PyErr_Format(EngineError, "current: unknown slot %d", id);
    return PyLong_FromLong(current);
}

static PyObject *Engine_bytes_out(EngineObject *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    uint64_t bytes;
    if (cc_slot_bytes_out(self->e, id, &bytes)) return PyErr_Format(EngineError, "bytes_out: unknown slot %d", id);
    return PyLong_FromUnsignedLongLong((unsigned long long)bytes);
}

static PyObject *Engine_stream_stats(EngineObject *self, PyObject *args) {
    int sid;
    if (!PyArg_ParseTuple(args, "i", &sid)) return NULL;
    cc_stream *s = sid >= 0 && sid < self->e->nstreams ? self->e->streams[sid] : NULL;
    if (!s) return PyErr_Format(EngineError, "stream_stats: unknown stream %d", sid);
    PyObject *drops = drops_dict(s->drops);
    if (!drops) return NULL;
    return Py_BuildValue("{s:K,s:K,s:K,s:i,s:N}", "packets_in", (unsigned long long)s->packets_in, "bytes_in",
                         (unsigned long long)s->bytes_in, "keyframes", (unsigned long long)s->keyframes,
                         "consumers", s->nslots, "drops", drops);
}

static PyObject *Engine_transport_stats(EngineObject *self, PyObject *args) {
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    cc_transport *t = tid >= 0 && tid < self->e->ntransports ? self->e->transports[tid] : NULL;
    if (!t) return PyErr_Format(EngineError, "transport_stats: unknown transport %d", tid);
    PyObject *drops = drops_dict(t->drops);
    if (!drops) return NULL;
    return Py_BuildValue("{s:K,s:K,s:i,s:K,s:L,s:K,s:K,s:K,s:K,s:N}", "packets_out",
                         (unsigned long long)t->packets_out, "bytes_out", (unsigned long long)t->bytes_out,
                         "twcc_next", (int)t->twcc_next, "twcc_stamped", (unsigned long long)t->twcc_stamped,
                         "twcc_budget", (long long)t->twcc_budget, "twcc_feedbacks",
                         (unsigned long long)t->twcc_feedbacks, "twcc_refused", (unsigned long long)t->twcc_refused,
                         "twcc_reported", (unsigned long long)t->twcc_reported, "twcc_lost",
                         (unsigned long long)t->twcc_lost, "drops", drops);
}

static PyObject *Engine_totals(EngineObject *self, PyObject *unused) {
    cc_engine *e = self->e;
    PyObject *drops = drops_dict(e->drops);
    if (!drops) return NULL;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:N}", "packets_out", (unsigned long long)e->packets_out, "bytes_out",
                         (unsigned long long)e->bytes_out, "retransmitted", (unsigned long long)e->retransmitted,
                         "switches", (unsigned long long)e->switches, "drops", drops);
}

static PyObject *Engine_set_capture(EngineObject *self, PyObject *args) {
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O", &list)) return NULL;
    if (list != Py_None && !PyList_Check(list)) return PyErr_Format(PyExc_TypeError, "a list or None");
    Py_XDECREF(self->capture);
    self->capture = list == Py_None ? NULL : list;
    Py_XINCREF(self->capture);
    self->e->capture = self->capture ? capture_cb : NULL;
    self->reader.route = self->capture == NULL; /* the capture calls Python: then Python's thread pushes */
    Py_RETURN_NONE;
}


/* ---- the reader thread (reader.h) ---------------------------------------------------------------------------- */

static PyObject *reader_error(int rc, const char *what) {
    if (rc == -EBUSY) return PyErr_Format(EngineError, "%s: the reader is running already", what);
    if (rc == -EINVAL) return PyErr_Format(EngineError, "%s: the reader is not running", what);
    if (rc == -ENOSPC) return PyErr_Format(EngineError, "%s: at most %d sockets", what, CC_READER_FDS);
    errno = -rc;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* reader_start(hold_us=0) -> the eventfd Python's loop watches: readable when reader_take() has items (a queue of
 * bookkeeping alone after hold_us). */
static PyObject *Engine_reader_start(EngineObject *self, PyObject *args) {
    unsigned int hold_us = 0;
    if (!PyArg_ParseTuple(args, "|I", &hold_us)) return NULL;
    int rc = cc_reader_start(&self->reader, (uint64_t)hold_us * 1000u);
    if (rc) return reader_error(rc, "reader_start");
    return PyLong_FromLong(self->reader.notify_fd);
}

static PyObject *Engine_reader_stop(EngineObject *self, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    cc_reader_stop(&self->reader);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* reader_add(fd): the thread reads this socket from now on (it must be non-blocking). */
static PyObject *Engine_reader_add(EngineObject *self, PyObject *args) {
    int fd, rc;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = cc_reader_add(&self->reader, fd);
    Py_END_ALLOW_THREADS
    if (rc) return reader_error(rc, "reader_add");
    Py_RETURN_NONE;
}

/* reader_remove(fd): returns once the thread let it go (the caller may close it then). */
static PyObject *Engine_reader_remove(EngineObject *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    cc_reader_remove(&self->reader, fd);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *rx_item(const cc_rx *r, const uint8_t *data, int fd, int with_fd);

/* reader_take() -> [(transport, kind, data, extra, arrival, fd)]: what the thread queued, in order; extra is the
 * source address for the slow path, push()'s flags for a pushed packet, else None. */
static PyObject *Engine_reader_take(EngineObject *self, PyObject *unused) {
    cc_rqueue *q = cc_reader_take(&self->reader);
    PyObject *list = PyList_New(q->n);
    for (int i = 0; list && i < q->n; i++) {
        PyObject *item = rx_item(&q->items[i], q->data + q->off[i], q->fds[i], 1);
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    cc_reader_taken(q); /* always: the thread fills it again after the next swap */
    return list;
}

static PyObject *Engine_reader_stats(EngineObject *self, PyObject *unused) {
    cc_reader *r = &self->reader;
    LOCK(self);
    unsigned long long wakeups = r->wakeups, batches = r->batches, errors = r->errors;
    int running = r->running, sockets = r->nfds, tid = running ? __atomic_load_n(&r->tid, __ATOMIC_ACQUIRE) : 0;
    UNLOCK(self);
    pthread_mutex_lock(&r->qmu);
    unsigned long long overflow = r->overflow, notifies = r->notifies;
    int queued = r->q[r->active].n;
    pthread_mutex_unlock(&r->qmu);
    return Py_BuildValue("{s:i,s:i,s:K,s:K,s:K,s:K,s:i,s:K,s:i}", "running", running, "sockets", sockets, "wakeups",
                         wakeups, "batches", batches, "overflow", overflow, "errors", errors, "queued", queued,
                         "notifies", notifies, "thread", tid);
}

/* Every method runs under the engine's mutex, but the reader thread's (they manage it themselves) and the two
 * lock-free reads, current and bytes_out (cc_slot_current, cc_slot_bytes_out). */
#define LOCKED(name)                                                                                     \
    static PyObject *L_##name(EngineObject *self, PyObject *args) {                                      \
        LOCK(self);                                                                                      \
        PyObject *r = Engine_##name(self, args);                                                         \
        UNLOCK(self);                                                                                    \
        return r;                                                                                        \
    }

static PyObject *L_push(EngineObject *self, PyObject *const *args, Py_ssize_t nargs) {
    LOCK(self);
    PyObject *r = Engine_push(self, args, nargs);
    UNLOCK(self);
    return r;
}
LOCKED(add_stream)
LOCKED(remove_stream)
LOCKED(set_blocked)
LOCKED(add_transport)
LOCKED(remove_transport)
LOCKED(set_srtp)
LOCKED(set_path)
LOCKED(set_srtp_rx)
LOCKED(recv)
LOCKED(rx_stats)
LOCKED(clear_path)
LOCKED(set_twcc)
LOCKED(set_loss)
LOCKED(twcc_take)
LOCKED(twcc_feedback)
LOCKED(twcc_window)
LOCKED(set_feedback)
LOCKED(rx_feedback)
LOCKED(send_rtcp)
LOCKED(protect_rtp)
LOCKED(protect_rtcp)
LOCKED(add_slot)
LOCKED(remove_slot)
LOCKED(bind_slot)
LOCKED(unbind_slot)
LOCKED(attach)
LOCKED(detach)
LOCKED(set_target)
LOCKED(set_paused)
LOCKED(restart)
LOCKED(start)
LOCKED(retransmit)
LOCKED(cached)
LOCKED(ts_peek)
LOCKED(events)
LOCKED(sender_reports)
LOCKED(slot_info)
LOCKED(stream_stats)
LOCKED(transport_stats)
LOCKED(totals)
LOCKED(set_capture)
LOCKED(route)

static PyMethodDef Engine_methods[] = {
    {"push", (PyCFunction)(void (*)(void))L_push, METH_FASTCALL, "push(stream, data, arrival) -> flags"},
    {"add_stream", (PyCFunction)L_add_stream, METH_VARARGS, NULL},
    {"remove_stream", (PyCFunction)L_remove_stream, METH_VARARGS, NULL},
    {"set_blocked", (PyCFunction)L_set_blocked, METH_VARARGS, NULL},
    {"add_transport", (PyCFunction)L_add_transport, METH_NOARGS, NULL},
    {"remove_transport", (PyCFunction)L_remove_transport, METH_VARARGS, NULL},
    {"set_srtp", (PyCFunction)L_set_srtp, METH_VARARGS, NULL},
    {"set_path", (PyCFunction)L_set_path, METH_VARARGS, NULL},
    {"set_srtp_rx", (PyCFunction)L_set_srtp_rx, METH_VARARGS, "the client's SRTP key: receive natively"},
    {"recv", (PyCFunction)L_recv, METH_VARARGS, "recv(fd) -> [(transport, kind, data, address, arrival)]"},
    {"route", (PyCFunction)L_route, METH_VARARGS, "route(transport, ssrc, stream): push that SSRC's RTP where it is read (-1: unroute)"},
    {"reader_start", (PyCFunction)Engine_reader_start, METH_VARARGS,
     "reader_start(hold_us=0): start the reader thread -> the eventfd to watch"},
    {"reader_stop", (PyCFunction)Engine_reader_stop, METH_NOARGS, NULL},
    {"reader_add", (PyCFunction)Engine_reader_add, METH_VARARGS, "reader_add(fd): the thread reads this socket"},
    {"reader_remove", (PyCFunction)Engine_reader_remove, METH_VARARGS, "reader_remove(fd): returns when it is let go"},
    {"reader_take", (PyCFunction)Engine_reader_take, METH_NOARGS, "-> [(transport, kind, data, extra, arrival, fd)]"},
    {"reader_stats", (PyCFunction)Engine_reader_stats, METH_NOARGS, NULL},
    {"rx_stats", (PyCFunction)L_rx_stats, METH_VARARGS, "rx_stats(transport=-1) -> counters"},
    {"clear_path", (PyCFunction)L_clear_path, METH_VARARGS, NULL},
    {"set_twcc", (PyCFunction)L_set_twcc, METH_VARARGS, NULL},
    {"set_loss", (PyCFunction)L_set_loss, METH_VARARGS, "test hook: drop permille/1000 of what leaves"},
    {"twcc_take", (PyCFunction)L_twcc_take, METH_VARARGS, NULL},
    {"twcc_feedback", (PyCFunction)L_twcc_feedback, METH_VARARGS, NULL},
    {"twcc_window", (PyCFunction)L_twcc_window, METH_VARARGS, "a complete loss window (lost, reported), or None"},
    {"set_feedback", (PyCFunction)L_set_feedback, METH_VARARGS, "read the transport's RTCP natively when it can"},
    {"rx_feedback", (PyCFunction)L_rx_feedback, METH_VARARGS, "rx_feedback(transport, rtcp) -> (0|1|2, lost, reported)"},
    {"send_rtcp", (PyCFunction)L_send_rtcp, METH_VARARGS, "send RTCP through the transport (False: no key/path)"},
    {"protect_rtp", (PyCFunction)L_protect_rtp, METH_VARARGS, NULL},
    {"protect_rtcp", (PyCFunction)L_protect_rtcp, METH_VARARGS, NULL},
    {"add_slot", (PyCFunction)L_add_slot, METH_VARARGS, NULL},
    {"remove_slot", (PyCFunction)L_remove_slot, METH_VARARGS, NULL},
    {"bind_slot", (PyCFunction)L_bind_slot, METH_VARARGS, NULL},
    {"unbind_slot", (PyCFunction)L_unbind_slot, METH_VARARGS, NULL},
    {"attach", (PyCFunction)L_attach, METH_VARARGS, NULL},
    {"detach", (PyCFunction)L_detach, METH_VARARGS, NULL},
    {"set_target", (PyCFunction)L_set_target, METH_VARARGS, NULL},
    {"set_paused", (PyCFunction)L_set_paused, METH_VARARGS, NULL},
    {"restart", (PyCFunction)L_restart, METH_VARARGS, NULL},
    {"start", (PyCFunction)L_start, METH_VARARGS, NULL},
    {"retransmit", (PyCFunction)L_retransmit, METH_VARARGS, NULL},
    {"cached", (PyCFunction)L_cached, METH_VARARGS, NULL},
    {"ts_peek", (PyCFunction)L_ts_peek, METH_VARARGS, NULL},
    {"events", (PyCFunction)L_events, METH_NOARGS, NULL},
    {"sender_reports", (PyCFunction)L_sender_reports, METH_VARARGS,
     "sender_reports(stream, ntp, rtp_timestamp) -> SRs sent to the slots carrying it"},
    {"slot_info", (PyCFunction)L_slot_info, METH_VARARGS, NULL},
    {"current", (PyCFunction)Engine_current, METH_VARARGS, "the stream a slot carries now (-1: none)"},
    {"bytes_out", (PyCFunction)Engine_bytes_out, METH_VARARGS, "slot_info's bytes_out, without the dict"},
    {"stream_stats", (PyCFunction)L_stream_stats, METH_VARARGS, NULL},
    {"transport_stats", (PyCFunction)L_transport_stats, METH_VARARGS, NULL},
    {"totals", (PyCFunction)L_totals, METH_NOARGS, "process-wide counters since the engine was made"},
    {"set_capture", (PyCFunction)L_set_capture, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.engine._native.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native media engine (see sfu/engine/reference.py for the specification).",
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

/* srtp_version() -> "libsrtp2 2.x.y": which libsrtp this build links (setup.py: pylibsrtp's OpenSSL build, or
 * Debian's NSS build), for logs and bench records. */
static PyObject *srtp_version(PyObject *m, PyObject *unused) { return PyUnicode_FromString(srtp_get_version_string()); }

static PyMethodDef module_methods[] = {
    {"srtp_version", srtp_version, METH_NOARGS, "the libsrtp this build links"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sfu.engine._native", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    if (cc_global_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "srtp_init failed");
        return NULL;
    }
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    EngineError = PyErr_NewException("sfu.engine._native.EngineError", PyExc_RuntimeError, NULL);
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 || PyModule_AddObject(m, "EngineError", EngineError) < 0)
        return NULL;
    PyObject *names = PyTuple_New(CC_DROP_COUNT);
    if (!names) return NULL;
    for (int i = 0; i < CC_DROP_COUNT; i++) PyTuple_SET_ITEM(names, i, PyUnicode_FromString(DROP_NAMES[i]));
    PyModule_AddObject(m, "DROP_REASONS", names);
    return m;
}
