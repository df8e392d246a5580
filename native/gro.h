/* Receive coalescing (GRO): the per-frame work of netsock/link/gro.py; see native/gro.c. */
#ifndef NETSOCK_GRO_H
#define NETSOCK_GRO_H

#include <stddef.h>
#include <stdint.h>

/* Frames [first, first + count) of a batch (count >= 2) that make one super-segment. */
typedef struct ns_gro_run {
    uint32_t first;
    uint32_t count;
    uint32_t headers;   /* link + IP + TCP header bytes of the first frame (the same in every piece) */
    uint32_t size;      /* payload bytes of every piece but the last: the gso_size */
    uint32_t length;    /* payload bytes of all the pieces */
    uint8_t v4;         /* IPv4 (else IPv6) */
    uint8_t push;       /* the last piece had PSH */
} ns_gro_run;

/* Plan the coalescing of `frames[i][0:lengths[i]]`, i < count, each with a `link_len`-byte link header,
 * exactly as netsock.link.gro.coalesce does. Fills `runs` (room for count / 2) with the merges, in
 * order; the frames outside them pass through as they are. For each frame in a run,
 * `payload_start[i]`..`payload_end[i]` is where its TCP payload lies in it (other frames' entries are
 * left alone). Returns the number of runs. Every length is checked before a byte is read. */
size_t ns_gro_plan(const uint8_t *const *frames, const uint32_t *lengths, size_t count, size_t link_len,
                   uint32_t *payload_start, uint32_t *payload_end, ns_gro_run *runs);

/* Write the super-segment of a planned `run` to `out` (run->headers + run->length bytes): the first
 * frame's headers with the IP length (and IPv4 header checksum), PSH and the partial TCP checksum
 * (the pseudo-header sum) patched, then each piece's payload. */
void ns_gro_merge(const uint8_t *const *frames, size_t link_len, const uint32_t *payload_start,
                  const uint32_t *payload_end, const ns_gro_run *run, uint8_t *out);

/* Room for a merged super-segment's headers: virtio-net (10 or 12), IPv4 (20) and TCP (up to 60). */
#define NS_GRO_MAX_HEADERS 128
/* ns_read_gro's *error when it stopped for want of room for one more frame in the arena. */
#define NS_ARENA_FULL (-1)

/* A frame in the arena: arena[offset:offset + length], made of `pieces` packets read (1: as read). */
typedef struct ns_rx_frame {
    uint32_t offset;
    uint32_t length;
    uint32_t pieces;
} ns_rx_frame;

typedef struct ns_rx_totals {
    uint64_t bytes;         /* read from the fd */
    uint32_t reads;         /* packets read from the fd */
    uint32_t merged;        /* packets merged into the frame before them */
    uint32_t too_long;      /* packets that filled frame_max bytes (truncated), dropped */
} ns_rx_totals;

/* Read up to `count` packets from non-blocking packet fd `fd` (a TUN with a `link_len`-byte
 * virtio-net header) into `arena` from `*used` on, each in at most `frame_max` bytes, merging each
 * TCP/IPv4 super-segment that continues the one before it (same flow, next sequence number, the
 * one before ended on a whole segment) as long as the merged frame stays within
 * `max_merged` bytes. Fills `frames` (room for `count`) in order and returns how many; `*used`
 * moves past them. Stops at `count` packets (*error = 0), when fewer than frame_max bytes are left
 * in the arena (NS_ARENA_FULL), when the fd has none (EAGAIN), at end of file (0 with fewer read),
 * or on another failure (errno). */
size_t ns_read_gro(int fd, uint8_t *arena, size_t arena_size, size_t *used, size_t frame_max, size_t link_len,
                   size_t max_merged, size_t count, ns_rx_frame *frames, ns_rx_totals *totals, int *error);

#endif
