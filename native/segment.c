/* TCP segmentation offload in software: Linux's GSO (tcp_gso_segment) for a link with no device
 * to do it, such as a TUN/TAP fd without a virtio-net header.
 *
 * netsock's TCP hands such a link 64 KB super-segments: headers built once, the TCP checksum field
 * holding only the pseudo-header sum. Cutting them here, just before the fd, spares the stack its
 * per-segment walk (sender, options, headers, checksum, IP, NIC, link) for each of the ~45 wire
 * segments, as Linux spares its TCP by cutting in dev_queue_xmit.
 *
 * The cut is netsock/link/gso.py's segment_tcp, byte for byte: each piece has the original headers
 * with its own sequence number, IP total length (IPv6 payload length) and IPv4 identification
 * (consecutive from the original's), FIN and PSH only on the last piece and CWR only on the first,
 * and both checksums computed afresh. Nothing is allocated and the payload is never copied in user
 * space: each piece is one writev of its headers, built in a stack buffer, and its slice of the
 * payload.
 */
#include "segment.h"

#include "checksum.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
#define IP_PROTO_TCP 6
#define MAX_IP_HEADER 60
#define MAX_TCP_HEADER 60
#define TCP_MIN_HEADER 20
#define TCP_SEQ 4
#define TCP_OFFSET 12
#define TCP_FLAGS 13
#define TCP_CHECKSUM 16
#define HEADERS_MAX (NS_GSO_MAX_LINK_HEADER + MAX_IP_HEADER + MAX_TCP_HEADER)

/* The packet as the stack holds it: headers prepended in one buffer, the payload in another. */
typedef struct {
    const uint8_t *head;
    size_t head_len;
    const uint8_t *data;
    size_t data_len;
} two_part;

static inline uint16_t load16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void store16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Bytes [off, off + n) of the packet as at most two iovecs; returns how many. */
static int slice(const two_part *p, size_t off, size_t n, struct iovec *iov)
{
    int count = 0;

    if (off < p->head_len && n) {
        size_t k = p->head_len - off < n ? p->head_len - off : n;
        iov[count].iov_base = (void *)(p->head + off);
        iov[count++].iov_len = k;
        off += k;
        n -= k;
    }
    if (n) {
        iov[count].iov_base = (void *)(p->data + (off - p->head_len));
        iov[count++].iov_len = n;
    }
    return count;
}

/* The sum over the iovecs laid end to end, added to `initial`: a part that starts at an odd offset
 * sums with its bytes in the other lanes, which byte-swapping its own sum puts right (RFC 1071). */
static uint16_t sum_iovecs(const struct iovec *iov, int count, uint32_t initial)
{
    uint32_t sum = initial;
    size_t offset = 0;

    for (int i = 0; i < count; i++) {
        uint32_t part = ns_checksum(iov[i].iov_base, iov[i].iov_len, 0);
        if (offset & 1)
            part = ((part & 0xffu) << 8) | (part >> 8);
        sum += part;
        offset += iov[i].iov_len;
    }
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)((sum & 0xffffu) + (sum >> 16));
}

int ns_gso_write(int fd, const uint8_t *head, size_t head_len, const uint8_t *data, size_t data_len,
                 size_t link_len, long gso_size, size_t mtu, ns_gso_result *result)
{
    const two_part pkt = {head, head_len, data, data_len};
    const size_t total = head_len + data_len;
    uint8_t hdr[HEADERS_MAX];
    struct iovec iov[3];
    size_t have, ip = link_len, ip_len, tcp, tcp_len, headers_end, payload, first, pieces;
    const uint8_t *addresses;
    size_t address_len;
    int v4;

    memset(result, 0, sizeof *result);
    if (gso_size < 1 || link_len > NS_GSO_MAX_LINK_HEADER)
        return NS_GSO_MALFORMED;

    /* The headers, wherever they lie in the two buffers, contiguous in hdr. */
    have = total < sizeof hdr ? total : sizeof hdr;
    {
        struct iovec parts[2];
        int count = slice(&pkt, 0, have, parts);
        size_t at = 0;
        for (int i = 0; i < count; i++) {
            memcpy(hdr + at, parts[i].iov_base, parts[i].iov_len);
            at += parts[i].iov_len;
        }
    }
    if (have <= ip)
        return NS_GSO_MALFORMED;
    switch (hdr[ip] >> 4) {
    case 4:
        ip_len = (size_t)(hdr[ip] & 0x0f) * 4;
        if (ip_len < 20 || have < ip + ip_len || hdr[ip + 9] != IP_PROTO_TCP)
            return NS_GSO_MALFORMED;
        addresses = hdr + ip + 12;
        address_len = 4;
        v4 = 1;
        break;
    case 6:
        ip_len = 40;
        if (have < ip + ip_len || hdr[ip + 6] != IP_PROTO_TCP)
            return NS_GSO_MALFORMED;
        addresses = hdr + ip + 8;
        address_len = 16;
        v4 = 0;
        break;
    default:
        return NS_GSO_MALFORMED;
    }
    tcp = ip + ip_len;
    if (have < tcp + TCP_MIN_HEADER)
        return NS_GSO_MALFORMED;
    tcp_len = (size_t)(hdr[tcp + TCP_OFFSET] >> 4) * 4;
    if (tcp_len < TCP_MIN_HEADER || have < tcp + tcp_len)
        return NS_GSO_MALFORMED;
    headers_end = tcp + tcp_len;
    payload = total - headers_end;

    /* The first piece is the longest: its length must fit the 16-bit IP length field, and the MTU. */
    first = payload < (size_t)gso_size ? payload : (size_t)gso_size;
    if ((v4 ? ip_len : 0) + tcp_len + first > 0xffff)
        return NS_GSO_MALFORMED;
    if (ip_len + tcp_len + first > mtu)
        return NS_GSO_TOO_LONG;
    /* A super-segment with no payload still goes out, as one segment. */
    pieces = payload ? (payload - 1) / (size_t)gso_size + 1 : 1;
    result->pieces = pieces;

    {
        const uint32_t pseudo = ns_checksum(addresses, 2 * address_len, IP_PROTO_TCP);
        const uint32_t seq = load32(hdr + tcp + TCP_SEQ);
        const uint8_t flags = hdr[tcp + TCP_FLAGS];
        const uint16_t ident = v4 ? load16(hdr + ip + 4) : 0;
        size_t offset = 0;

        iov[0].iov_base = hdr;
        iov[0].iov_len = headers_end;
        for (size_t i = 0; i < pieces; i++, offset += (size_t)gso_size) {
            const size_t n = payload - offset < (size_t)gso_size ? payload - offset : (size_t)gso_size;
            const int count = 1 + slice(&pkt, headers_end + offset, n, iov + 1);
            uint8_t piece_flags = flags;
            ssize_t written;

            if (i + 1 < pieces)
                piece_flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (i)
                piece_flags &= (uint8_t)~TCP_CWR;
            if (v4) {
                store16(hdr + ip + 2, (uint32_t)(ip_len + tcp_len + n));
                store16(hdr + ip + 4, (uint16_t)(ident + i));
                store16(hdr + ip + 10, 0);
                store16(hdr + ip + 10, (uint16_t)~ns_checksum(hdr + ip, ip_len, 0));
            } else {
                store16(hdr + ip + 4, (uint32_t)(tcp_len + n));
            }
            store32(hdr + tcp + TCP_SEQ, (uint32_t)(seq + offset));
            hdr[tcp + TCP_FLAGS] = piece_flags;
            store16(hdr + tcp + TCP_CHECKSUM, 0);
            /* The TCP header is a multiple of four bytes: the payload's lanes follow on. */
            store16(hdr + tcp + TCP_CHECKSUM,
                    (uint16_t)~sum_iovecs(iov + 1, count - 1,
                                          ns_checksum(hdr + tcp, tcp_len, pseudo + (uint32_t)(tcp_len + n))));

            do
                written = writev(fd, iov, count);
            while (written < 0 && errno == EINTR);
            if (written < 0) {
                result->error = errno;
                break;
            }
            result->sent++;
            result->bytes += (size_t)written;
        }
    }
    return NS_GSO_OK;
}
