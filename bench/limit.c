/* The physical limit of fan-out on this machine: only what a forwarding server cannot avoid, per copy, in C.
 *
 * For each incoming packet, each of N subscribers gets its own copy SRTP-protected with its own libsrtp context
 * (the libsrtp the engine links: bench/limit.py builds it against the same one, and "srtp" in the output names
 * it), and the N datagrams leave through one UDP socket in one sendmmsg to N loopback sockets that a child
 * process drains with recvmmsg (so the kernel delivers them, as it does to the bench's subscribers). Reported: the sender's CPU time (user + system, this process only, from
 * getrusage) per datagram sent, the same unit as the fan-out bench's "CPU µs per forwarded packet".
 *
 *   cc -O2 bench/limit.c -lsrtp2 -o build/limit && build/limit --subscribers 100 --seconds 5 --profile 8
 *   (Debian's libsrtp2; `python -m bench.limit` links the engine's)
 *
 * Packet sizes cycle through the lecture scenario's mix (four video packets of 1200 bytes, one Opus packet of
 * 100 bytes); --rate is incoming packets per second (default: the lecture's ~250), so that the run has the bench's
 * pacing too (timer wake-ups are part of any server's cost). Prints one JSON object. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SUBSCRIBERS 4096
#define SIZES 5
static const int SIZE[SIZES] = {1200, 1200, 1200, 1200, 100};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
}

static void drain(int *socks, int n) { /* the child: empties every subscriber socket, forever */
    static char bufs[64][2048];
    struct mmsghdr msgs[64];
    struct iovec iov[64];
    for (int i = 0; i < 64; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;) {
        int got = 0;
        for (int s = 0; s < n; s++)
            for (int r; (r = recvmmsg(socks[s], msgs, 64, MSG_DONTWAIT, NULL)) > 0;) got += r;
        if (!got) usleep(2000);
    }
}

int main(int argc, char **argv) {
    int n = 100, profile = 8;
    double seconds = 5, rate = 250;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--subscribers")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--profile")) profile = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--subscribers N] [--seconds S] [--profile 1|7|8] [--rate PPS]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || n > MAX_SUBSCRIBERS || srtp_init()) return 2;
    static int socks[MAX_SUBSCRIBERS];
    static struct sockaddr_in addrs[MAX_SUBSCRIBERS];
    for (int i = 0; i < n; i++) {
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        int size = 1 << 20;
        setsockopt(socks[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        addrs[i].sin_family = AF_INET;
        addrs[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(socks[i], (struct sockaddr *)&addrs[i], sizeof addrs[i])) return perror("bind"), 1;
        socklen_t len = sizeof addrs[i];
        getsockname(socks[i], (struct sockaddr *)&addrs[i], &len);
    }
    pid_t child = fork();
    if (child == 0) drain(socks, n);
    int out = socket(AF_INET, SOCK_DGRAM, 0);
    int size = 4 << 20;
    setsockopt(out, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    static srtp_t sessions[MAX_SUBSCRIBERS];
    for (int i = 0; i < n; i++) {
        srtp_policy_t policy;
        memset(&policy, 0, sizeof policy);
        if (srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile) ||
            srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile))
            return fprintf(stderr, "profile %d unknown\n", profile), 2;
        unsigned char key[64];
        for (int k = 0; k < 64; k++) key[k] = (unsigned char)(i * 7 + k);
        policy.key = key;
        policy.ssrc.type = ssrc_any_outbound;
        policy.window_size = 1024;
        policy.allow_repeat_tx = 1;
        if (srtp_create(&sessions[i], &policy)) return fprintf(stderr, "srtp_create failed\n"), 1;
    }
    static unsigned char bufs[MAX_SUBSCRIBERS][1200 + 64];
    static struct mmsghdr msgs[MAX_SUBSCRIBERS];
    static struct iovec iov[MAX_SUBSCRIBERS];
    long sent = 0, failed = 0;
    double start = now(), cpu0 = cpu_seconds(), next = start;
    for (long p = 0; now() - start < seconds; p++) {
        int len0 = SIZE[p % SIZES];
        for (int i = 0; i < n; i++) { /* the copy: a header of the subscriber's own, the payload, protect */
            unsigned char *b = bufs[i];
            b[0] = 0x80, b[1] = 96, b[2] = (unsigned char)(p >> 8), b[3] = (unsigned char)p;
            memset(b + 4, 0, 4);
            b[8] = 0x10, b[9] = (unsigned char)(i >> 16), b[10] = (unsigned char)(i >> 8), b[11] = (unsigned char)i;
            memset(b + 12, (int)p, (size_t)len0 - 12);
            int len = len0;
            if (srtp_protect(sessions[i], b, &len)) return fprintf(stderr, "protect failed\n"), 1;
            iov[i].iov_base = b;
            iov[i].iov_len = (size_t)len;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        for (int done = 0; done < n;) {
            int r = sendmmsg(out, msgs + done, (unsigned)(n - done), 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                failed++, done++;
            } else {
                sent += r, done += r;
            }
        }
        next += 1.0 / rate; /* paced like a real stream */
        double wait = next - now();
        if (wait > 0) {
            struct timespec t = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&t, NULL);
        }
    }
    double cpu = cpu_seconds() - cpu0, wall = now() - start;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("{\"subscribers\": %d, \"profile\": %d, \"datagrams\": %ld, \"failed\": %ld, \"cpu_s\": %.3f, "
           "\"wall_s\": %.2f, \"cpu_us_per_datagram\": %.2f, \"cpu_percent\": %.1f, \"srtp\": \"%s\"}\n",
           n, profile, sent, failed, cpu, wall, sent ? cpu / sent * 1e6 : 0.0, cpu / wall * 100,
           srtp_get_version_string());
    return 0;
}
