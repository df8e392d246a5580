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

#endif
