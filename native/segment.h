/* TCP segmentation offload in software, written straight to a packet fd; see native/segment.c. */
#ifndef NETSOCK_SEGMENT_H
#define NETSOCK_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

/* The most link-header bytes copied in front of each piece (Ethernet has 14). */
#define NS_GSO_MAX_LINK_HEADER 32

enum {
    NS_GSO_OK = 0,
    NS_GSO_MALFORMED = 1,   /* not an IPv4/IPv6 TCP packet whose headers parse, gso_size < 1, or
                               pieces too long for their IP length field */
    NS_GSO_TOO_LONG = 2,    /* a piece would exceed the MTU */
};

typedef struct ns_gso_result {
    size_t pieces;          /* frames the super-segment makes */
    size_t sent;            /* of which written, in order */
    size_t bytes;           /* bytes written, link headers included */
    int error;              /* errno of the write that failed; 0 when all were sent */
} ns_gso_result;

/* Cut the TCP super-segment `head[0:head_len]` followed by `data[0:data_len]` — a `link_len`-byte
 * link header, an IPv4 or IPv6 (no extension headers) header, a TCP header, the payload — into
 * pieces of `gso_size` payload bytes, each with complete headers and checksums, and write each as
 * one frame to `fd`, stopping at the first write that fails (EINTR is retried).
 *
 * Returns NS_GSO_OK with `result` filled in, or NS_GSO_MALFORMED / NS_GSO_TOO_LONG having written
 * nothing. `mtu` bounds each piece's IP packet. */
int ns_gso_write(int fd, const uint8_t *head, size_t head_len, const uint8_t *data, size_t data_len,
                 size_t link_len, long gso_size, size_t mtu, ns_gso_result *result);

#endif
