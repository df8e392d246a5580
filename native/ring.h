/* Single-producer/single-consumer rings of frames in shared memory, for the shared-memory link
 * (netsock/link/sharedmem.py, whose docstring gives the layout and the wake-up protocol).
 *
 * `ring` points at a ring's header in the mapping, its data right behind the header; `size` is the
 * data's length, a power of two the caller validated when it mapped the region and passes from its
 * own memory, never read back from the shared header. Nothing a peer writes into the ring can make
 * these functions touch memory outside [ring, ring + NS_RING_HEADER_SIZE + size). */
#ifndef NETSOCK_RING_H
#define NETSOCK_RING_H

#include <stddef.h>
#include <stdint.h>

#define NS_RING_VERSION 2           /* of the region's format (sharedmem.py VERSION): records carry gso_size */
#define NS_RING_HEADER_SIZE 128     /* tail in the producer's cache line, head and waiting in the consumer's */
#define NS_RING_TAIL 0
#define NS_RING_HEAD 64
#define NS_RING_WAITING 72
#define NS_RING_RECORD_HEADER 8     /* uint32 length, uint32 gso_size; the frame follows, padded to 8 bytes */
#define NS_RING_SKIP 0xffffffffu    /* the length of a record that pads the ring to its end */

/* Producer. Append frames whose bytes are gathered from pieces[] (lengths[] bytes each), frame i
 * made of the next frame_pieces[i] pieces and recorded with gso_sizes[i] (0: a plain frame, >0: a
 * TCP super-segment of segments that size; gso_sizes NULL: all plain), and publish them with one
 * release store of the tail. Stops at the first frame that does not fit. Returns how many were
 * appended; *wake is 1 when the consumer had said it was going to sleep (the flag is then cleared:
 * write its eventfd), else 0. */
size_t ns_ring_push_batch(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                          const uint32_t *frame_pieces, const uint32_t *gso_sizes, size_t frames, int *wake);
/* ns_ring_push_batch for one frame of `count` pieces: 1 if it was appended, 0 if the ring is full. */
int ns_ring_push(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                 size_t count, uint32_t gso_size, int *wake);

/* Consumer. Copy up to `count` frames, back to back, into out[0:out_size], frame i's length into
 * lengths[i] and its gso_size into gso_sizes[i], and release their room with one release store of
 * the head. Stops early when the ring is empty or the next frame does not fit in what is left of
 * `out`. A record breaking the ring's rules (a plain frame longer than max_frame, a super-segment
 * longer than max_super or any super-segment when max_super is 0, a record running past the ring's
 * end or the published tail; counters further apart than the ring is long) makes the consumer skip
 * everything published so far: *errors counts such events (0 or 1). Returns how many frames were
 * copied. */
size_t ns_ring_pop_batch(uint8_t *ring, uint64_t size, uint32_t max_frame, uint32_t max_super, uint8_t *out,
                         size_t out_size, size_t count, uint32_t *lengths, uint32_t *gso_sizes, uint32_t *errors);
/* Consumer, about to sleep: raise the waiting flag, then look at the ring again. 1: still empty,
 * sleep until the eventfd is written; 0: frames arrived meanwhile (flag lowered), read them. */
int ns_ring_prepare_wait(uint8_t *ring);

#endif
