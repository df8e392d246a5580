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

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

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

/* --- Super-segments merged as they are read (GRO of what a TUN with offloads hands over) ----------
 *
 * The kernel hands an offloaded TUN its TCP stream as 64 KB super-segments (the device's fixed
 * tso_max_size), and a wake-up reads about three at a time. Merged into one BIG TCP super-segment
 * (IPv4 total length 0 beyond 64 KB, as Linux's GRO builds one when gro_ipv4_max_size allows), they
 * cross IP and TCP once instead of three times. The merge costs no copy: while a run is open, the
 * next packet is read with readv, its headers into a slot and the rest straight behind the run's
 * payload in the arena. If it continues the run, its payload is in place; if not, it is moved up by
 * the header's length and the header put in front (a move of one packet, only where a run ends on
 * a packet that does not continue it).
 *
 * Unlike Linux's GRO, PSH does not end a run: the kernel sets it on nearly every super-segment it
 * hands a TUN (at the end of each sendmsg and every half window), which would leave nothing to
 * merge, and it tells netsock's receiver nothing (data is delivered as it arrives). The merged
 * super-segment has PSH if any piece had it; cut again, only its last segment carries it. */

#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_TCPV4 1

/* A super-segment that may be merged: its virtio-net header asks for TCP over IPv4 segmentation
 * with a partial checksum, the IPv4 header is 20 bytes, checksummed, no fragment, and its total
 * length is the frame's; TCP with ACK (and perhaps PSH) and payload. Reads only hdr[0:avail]. */
static int parse_super(const uint8_t *hdr, size_t avail, size_t len, size_t link, segment *s)
{
    if (link < 10 || avail < link + 40 || len < link + 40)
        return 0;
    if (hdr[0] != VNET_F_NEEDS_CSUM || hdr[1] != VNET_GSO_TCPV4 || (hdr[6] | hdr[7]) == 0)
        return 0;
    const uint8_t *ip = hdr + link;
    if (ip[0] != 0x45 || ip[9] != TCP_PROTOCOL || (ip[6] & 0x3f) || ip[7] || be16(ip + 2) != len - link
        || ns_checksum(ip, 20, 0) != 0xffff)
        return 0;
    const uint8_t *tcp = ip + 20;
    size_t offset = (size_t)(tcp[12] >> 4) * 4;
    uint8_t flags = tcp[13];
    if (offset < 20 || link + 20 + offset > avail || link + 20 + offset >= len || (flags & ~PSH) != ACK)
        return 0;
    s->headers = (uint32_t)(link + 20 + offset);
    s->payload_start = s->headers;
    s->payload_end = (uint32_t)len;
    s->seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | be16(tcp + 6);
    s->ident = -1;
    s->v4 = 1;
    s->push = (flags & PSH) != 0;
    return 1;
}

static inline uint32_t gso_size_of(const uint8_t *vnet)
{
    uint16_t size;      /* the virtio-net header is in host order */
    memcpy(&size, vnet + 6, 2);
    return size;
}

/* Patch the run's first header (at frame) for the whole: IP length (0 beyond 64 KB) and header
 * checksum, and the partial TCP checksum over the new length. */
static void finish_run(uint8_t *frame, size_t link, uint32_t length)
{
    uint8_t *ip = frame + link;
    uint32_t ip_length = length - (uint32_t)link;
    put16(ip + 2, ip_length > MAX_IP_PAYLOAD ? 0 : ip_length);
    put16(ip + 10, 0);
    put16(ip + 10, ~ns_checksum(ip, 20, 0) & 0xffffu);
    put16(ip + 20 + 16, fold(pseudo_header_sum(ip, 1, ip_length - 20)));
}

size_t ns_read_gro(int fd, uint8_t *arena, size_t arena_size, size_t *used, size_t frame_max, size_t link_len,
                   size_t max_merged, size_t count, ns_rx_frame *frames, ns_rx_totals *totals, int *error)
{
    uint8_t slot[NS_GRO_MAX_HEADERS];
    size_t at = *used, made = 0;
    /* While a run is open, frames[made - 1] is its frame and `first` its first packet: the next packet
     * is read with its headers into the slot and may continue it. A run closes on a packet that does
     * not, or once it cannot go on (a piece with PSH, or not a whole number of segments). */
    int open = 0;
    segment first;
    uint32_t next_seq = 0, gso_size = 1;

    *error = 0;
    *totals = (ns_rx_totals){0, 0, 0, 0};
    while (totals->reads < count) {
        if (arena_size - at < frame_max) {
            *error = NS_ARENA_FULL;
            break;
        }
        size_t h = open ? first.headers : 0;
        ssize_t n;
        if (h) {
            struct iovec iov[2] = {{slot, h}, {arena + at, frame_max - h}};
            n = readv(fd, iov, 2);
        } else {
            n = read(fd, arena + at, frame_max);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *error = errno;
            break;
        }
        if (n == 0)
            break;
        totals->reads++;
        totals->bytes += (uint64_t)n;
        if ((size_t)n >= frame_max) {      /* filled the room: truncated */
            totals->too_long++;
            continue;
        }
        size_t len = (size_t)n;
        if (h) {
            ns_rx_frame *run = &frames[made - 1];
            size_t payload = len - h;
            segment s;
            /* Equal virtio-net headers (same_flow): the same segment size too. */
            if (len > h && parse_super(slot, h, len, link_len, &s) && s.seq == next_seq
                && run->length + payload <= max_merged && same_flow(arena + run->offset, &first, slot, &s, link_len)) {
                run->length += (uint32_t)payload;
                run->pieces++;
                totals->merged++;
                at += payload;
                next_seq = s.seq + (uint32_t)payload;
                if (s.push)
                    arena[run->offset + link_len + 20 + 13] |= PSH;
                if (payload % gso_size) {
                    finish_run(arena + run->offset, link_len, run->length);
                    open = 0;
                }
                continue;
            }
            /* Not a continuation: the run ends, and this packet is made whole where it lies. */
            if (run->pieces > 1)
                finish_run(arena + run->offset, link_len, run->length);
            open = 0;
            if (len > h)
                memmove(arena + at + h, arena + at, len - h);
            memcpy(arena + at, slot, len < h ? len : h);
        }
        frames[made++] = (ns_rx_frame){(uint32_t)at, (uint32_t)len, 1};
        if (parse_super(arena + at, len, len, link_len, &first)) {
            uint32_t payload = first.payload_end - first.payload_start;
            gso_size = gso_size_of(arena + at);
            next_seq = first.seq + payload;
            open = payload % gso_size == 0;
        }
        at += len;
    }
    if (open && frames[made - 1].pieces > 1)
        finish_run(arena + frames[made - 1].offset, link_len, frames[made - 1].length);
    *used = at;
    return made;
}
