/* Receive coalescing (Linux's GRO), the per-frame part: which consecutive frames of a batch merge into
 * one TCP super-segment, by exactly the rules of netsock/link/gro.py (its docstring says why each one
 * is there), and the merge itself. Python keeps the pure implementation as the reference; the tests
 * hold the two to identical output for any input.
 *
 * Frames are untrusted: every field is read only after the length that covers it is checked.
 *
 * The sums here are one's-complement sums of nonzero data (an IPv4 header starts 0x45, a TCP header's
 * offset byte is at least 0x50, the pseudo-header holds protocol 6), so any grouping of the adds folds
 * to the one value in [1, 0xffff] the Python code's folds and combines reach.
 */
#include "gro.h"

#include <string.h>

#include "checksum.h"

#define TCP_PROTOCOL 6
#define ACK 0x10
#define PSH 0x08
#define MAX_IP_PAYLOAD 0xffffu  /* IPv4 total length and IPv6 payload length are 16-bit fields */

/* What the run rules need of a mergeable segment. */
typedef struct segment {
    uint32_t payload_start;     /* in the frame */
    uint32_t payload_end;
    uint32_t headers;           /* link + IP + TCP header bytes */
    uint32_t seq;
    int32_t ident;              /* IPv4 identification; -1 for IPv6, which has none */
    uint8_t v4;
    uint8_t push;
} segment;

static inline uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static inline void put16(uint8_t *p, uint32_t value)
{
    p[0] = (uint8_t)(value >> 8);
    p[1] = (uint8_t)value;
}

/* Unfolded sum of the big-endian 16-bit words of p[0:n], n even and small (addresses). */
static inline uint32_t word_sum(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i += 2)
        sum += be16(p + i);
    return sum;
}

static inline uint32_t fold(uint32_t sum)
{
    sum = (sum & 0xffffu) + (sum >> 16);
    return (sum & 0xffffu) + (sum >> 16);
}

/* The pseudo-header sum, unfolded, for the IP header at ip (its version already known). */
static inline uint32_t pseudo_header_sum(const uint8_t *ip, int v4, uint32_t tcp_length)
{
    uint32_t addresses = v4 ? word_sum(ip + 12, 8) : word_sum(ip + 8, 32);
    return addresses + TCP_PROTOCOL + (tcp_length >> 16) + (tcp_length & 0xffffu);
}

/* Whether frame[0:len] is a mergeable TCP segment (see gro.py's _parse); fills *s if so. */
static int parse(const uint8_t *frame, size_t len, size_t link, segment *s)
{
    if (len < link || len - link < 40)
        return 0;
    const uint8_t *ip = frame + link;
    size_t ip_len = len - link, ip_header, total;
    int v4;

    switch (ip[0] >> 4) {
    case 4:
        /* Options, MF or a fragment offset, or not TCP. */
        if (ip[0] != 0x45 || ip[9] != TCP_PROTOCOL || (ip[6] & 0x3f) || ip[7])
            return 0;
        total = be16(ip + 2);
        if (total < 40 || total > ip_len || ns_checksum(ip, 20, 0) != 0xffff)
            return 0;
        ip_header = 20;
        v4 = 1;
        s->ident = (int32_t)be16(ip + 4);
        break;
    case 6:
        if (ip[6] != TCP_PROTOCOL)   /* an extension header, or not TCP */
            return 0;
        total = 40 + be16(ip + 4);
        if (total < 60 || total > ip_len)
            return 0;
        ip_header = 40;
        v4 = 0;
        s->ident = -1;
        break;
    default:
        return 0;
    }

    const uint8_t *tcp = ip + ip_header;
    size_t tcp_len = total - ip_header;     /* at least 20 */
    size_t offset = (size_t)(tcp[12] >> 4) * 4;
    uint8_t flags = tcp[13];
    if (offset < 20 || offset >= tcp_len || (flags & ~PSH) != ACK)     /* only ACK(+PSH), with payload */
        return 0;
    uint32_t sum = pseudo_header_sum(ip, v4, (uint32_t)tcp_len) + ns_checksum(tcp, tcp_len, 0);
    if (fold(sum) != 0xffff)
        return 0;

    s->headers = (uint32_t)(link + ip_header + offset);
    s->payload_start = s->headers;
    s->payload_end = (uint32_t)(link + total);
    s->seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | be16(tcp + 6);
    s->v4 = (uint8_t)v4;
    s->push = (flags & PSH) != 0;
    return 1;
}

/* Whether two parsed segments have the same merge key: link header, the IP fields that must match,
 * ports, acknowledgement number, data offset byte, window and options. */
static int same_flow(const uint8_t *a, const segment *sa, const uint8_t *b, const segment *sb, size_t link)
{
    if (sa->v4 != sb->v4 || sa->headers != sb->headers || memcmp(a, b, link) != 0)
        return 0;
    const uint8_t *ia = a + link, *ib = b + link;
    size_t ip_header;
    if (sa->v4) {
        /* TOS, DF (and the reserved bit), TTL, addresses. */
        if (ia[1] != ib[1] || ia[6] != ib[6] || ia[8] != ib[8] || memcmp(ia + 12, ib + 12, 8) != 0)
            return 0;
        ip_header = 20;
    } else {
        /* Version, traffic class, flow label; hop limit, addresses. */
        if (memcmp(ia, ib, 4) != 0 || memcmp(ia + 7, ib + 7, 33) != 0)
            return 0;
        ip_header = 40;
    }
    const uint8_t *ta = ia + ip_header, *tb = ib + ip_header;
    /* Equal header lengths and equal offset bytes: the options are as long in both. */
    return memcmp(ta, tb, 4) == 0 && memcmp(ta + 8, tb + 8, 5) == 0 && memcmp(ta + 14, tb + 14, 2) == 0
        && memcmp(ta + 20, tb + 20, sa->headers - link - ip_header - 20) == 0;
}

/* A run being built (gro.py's _Run). */
typedef struct run_state {
    ns_gro_run run;
    segment first;
    uint32_t next_seq;
    int32_t next_ident;
    int ended;
} run_state;

static void start(run_state *r, uint32_t index, const segment *s)
{
    uint32_t size = s->payload_end - s->payload_start;
    r->run = (ns_gro_run){.first = index, .count = 1, .headers = s->headers, .size = size, .length = size,
                          .v4 = s->v4, .push = s->push};
    r->first = *s;
    r->next_seq = s->seq + size;
    r->next_ident = (s->ident + 1) & 0xffff;
    r->ended = s->push;
}

static int take(run_state *r, const uint8_t *const *frames, size_t link, const uint8_t *frame, const segment *s)
{
    uint32_t size = s->payload_end - s->payload_start;
    size_t ip_length = (size_t)r->run.headers - link + r->run.length + size;     /* IPv4 total length */
    if (r->ended || s->seq != r->next_seq || (s->ident >= 0 && s->ident != r->next_ident) || size > r->run.size
        || ip_length > MAX_IP_PAYLOAD + (r->run.v4 ? 0 : 40)                 /* IPv6: payload length */
        || !same_flow(frames[r->run.first], &r->first, frame, s, link))
        return 0;
    r->run.count++;
    r->run.length += size;
    r->next_seq = s->seq + size;
    r->next_ident = (s->ident + 1) & 0xffff;
    r->ended = s->push || size < r->run.size;
    r->run.push = s->push;
    return 1;
}

size_t ns_gro_plan(const uint8_t *const *frames, const uint32_t *lengths, size_t count, size_t link_len,
                   uint32_t *payload_start, uint32_t *payload_end, ns_gro_run *runs)
{
    size_t planned = 0;
    run_state r = {.run.count = 0};     /* no run while count is 0 */
    for (size_t i = 0; i < count; i++) {
        segment s;
        int mergeable = parse(frames[i], lengths[i], link_len, &s);
        if (mergeable) {
            payload_start[i] = s.payload_start;
            payload_end[i] = s.payload_end;
            if (r.run.count && take(&r, frames, link_len, frames[i], &s))
                continue;
        }
        if (r.run.count > 1)
            runs[planned++] = r.run;
        r.run.count = 0;
        if (mergeable)
            start(&r, (uint32_t)i, &s);
    }
    if (r.run.count > 1)
        runs[planned++] = r.run;
    return planned;
}

void ns_gro_merge(const uint8_t *const *frames, size_t link_len, const uint32_t *payload_start,
                  const uint32_t *payload_end, const ns_gro_run *run, uint8_t *out)
{
    size_t headers = run->headers;
    memcpy(out, frames[run->first], headers);
    uint8_t *ip = out + link_len;
    size_t ip_header;
    if (run->v4) {
        ip_header = 20;
        put16(ip + 2, (uint32_t)(headers - link_len + run->length));
        put16(ip + 10, 0);
        put16(ip + 10, ~ns_checksum(ip, 20, 0) & 0xffffu);
    } else {
        ip_header = 40;
        put16(ip + 4, (uint32_t)(headers - link_len - 40 + run->length));
    }
    uint8_t *tcp = ip + ip_header;
    if (run->push)
        tcp[13] |= PSH;
    /* Partial, as a GSO super-segment's: the pseudo-header sum only (see link.gso). */
    uint32_t tcp_length = (uint32_t)(headers - link_len - ip_header + run->length);
    put16(tcp + 16, fold(pseudo_header_sum(ip, run->v4, tcp_length)));

    uint8_t *p = out + headers;
    for (uint32_t k = run->first; k < run->first + run->count; k++) {
        size_t n = payload_end[k] - payload_start[k];
        memcpy(p, frames[k] + payload_start[k], n);
        p += n;
    }
}
