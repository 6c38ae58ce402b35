"""Batched UDP receive for the benchmark's subscribers: recvmmsg(2) with kernel arrival timestamps, by ctypes.

A subscriber's cost must stay small next to the server's. An event loop that wakes up and makes one recvfrom
call per datagram costs the client about half of what the server spends forwarding that datagram. Polling each
socket every few milliseconds with one recvmmsg call for up to 64 datagrams, and taking each datagram's arrival
time from the kernel (SO_TIMESTAMPNS, CLOCK_REALTIME), cuts that without making latency figures coarser.
Linux only (the benchmark's platform).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct

SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
MSG_DONTWAIT = 0x40
BATCH = 64
SIZE = 2048
CONTROL = 64

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int))


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_libc.recvmmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_libc.recvmmsg.restype = ctypes.c_int
_SOCKADDR_IN = struct.Struct("!HH4s")  # family is host order, but only the port and address are read


class BatchReceiver:
    """Reusable buffers for recvmmsg on any number of sockets (one at a time)."""

    def __init__(self) -> None:
        self.data = ctypes.create_string_buffer(BATCH * SIZE)
        self.names = ctypes.create_string_buffer(BATCH * 16)
        self.control = ctypes.create_string_buffer(BATCH * CONTROL)
        self.iov = (_Iovec * BATCH)()
        self.msgs = (_Mmsghdr * BATCH)()
        base, names, control = (ctypes.addressof(b) for b in (self.data, self.names, self.control))
        for i in range(BATCH):
            self.iov[i].iov_base, self.iov[i].iov_len = base + i * SIZE, SIZE
            hdr = self.msgs[i].msg_hdr
            hdr.msg_name, hdr.msg_iov, hdr.msg_iovlen = names + i * 16, ctypes.pointer(self.iov[i]), 1
            hdr.msg_control, hdr.msg_controllen = control + i * CONTROL, CONTROL
            hdr.msg_namelen = 16
        self.view = memoryview(self.data).cast("B")
        self.name_view = memoryview(self.names).cast("B")
        self.control_view = memoryview(self.control).cast("B")

        self.msg_view = memoryview(self.msgs).cast("B")
        assert ctypes.sizeof(_Mmsghdr) == 64, "x86_64/aarch64 Linux layout expected"
        # The kernel shrinks each used header's name and control lengths: one copy of the pristine headers
        # restores them (a C memmove instead of a Python loop per datagram).
        self.template = ctypes.create_string_buffer(bytes(self.msgs), BATCH * 64)
        self.used = BATCH
        self._batches: dict[int, tuple[struct.Struct, struct.Struct]] = {}

    def address(self, index: int) -> tuple[str, int]:
        """The sender of the index-th datagram of the last batch (IPv4)."""
        _, port, addr = _SOCKADDR_IN.unpack_from(self.name_view, index * 16)
        return socket.inet_ntoa(addr), port

    def recv(self, fd: int) -> int:
        """One recvmmsg call: how many datagrams are now in the buffers (0 when none were waiting)."""
        if self.used:
            ctypes.memmove(self.msgs, self.template, self.used * 64)
        n = _libc.recvmmsg(fd, self.msgs, BATCH, MSG_DONTWAIT, None)
        if n < 0:
            self.used = 0
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, "recvmmsg")
        self.used = n
        return n

    def batch(self, n: int) -> tuple[tuple[int, ...], list[float]]:
        """The sizes and the kernel arrival times (CLOCK_REALTIME, 0.0 if the kernel gave none) of the first n
        datagrams of the last batch: two unpacks for the whole batch, not four per datagram."""
        unpack = self._batches.get(n)
        if unpack is None:
            # mmsghdr: msg_controllen at offset 40, msg_len at 56; each control buffer: cmsghdr, then a timespec
            unpack = self._batches[n] = (struct.Struct("=" + "40xQ8xI4x" * n),
                                         struct.Struct("=" + f"Qiiqq{CONTROL - 32}x" * n))
        headers = unpack[0].unpack_from(self.msg_view)
        control = unpack[1].unpack_from(self.control_view)
        arrivals = [control[5 * i + 3] + control[5 * i + 4] * 1e-9
                    if headers[2 * i] >= 32 and control[5 * i + 1] == socket.SOL_SOCKET
                    and control[5 * i + 2] == SCM_TIMESTAMPNS else 0.0 for i in range(n)]
        return headers[1::2], arrivals


def enable_timestamps(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
