/* The shared-memory link's rings: see ring.h for the contract and netsock/link/sharedmem.py for
 * the layout and the wake-up protocol.
 *
 * Memory ordering. The producer alone writes the tail and the consumer alone the head, each a
 * monotonic 64-bit byte count (offset = count & (size - 1)). The producer writes records, then
 * publishes them with a release store of the tail; the consumer's acquire load of the tail makes
 * those records visible to it. The consumer copies records out, then frees their room with a
 * release store of the head; the producer's acquire load of the head orders its overwriting of that
 * room after the copies. The wake-up is a Dekker handshake, which needs store->load ordering on
 * both sides, hence a sequentially consistent fence on each: the consumer stores waiting = 1 then
 * loads the tail, the producer stores the tail then loads waiting, so at least one of them sees the
 * other's store and a sleeping consumer is never left with frames it was not told about.
 *
 * A peer is not trusted: a record is checked against the ring and the published tail before it is
 * copied, and its header is read once into locals so that the peer rewriting it meanwhile cannot
 * make the copy overrun. Counters are multiples of 8 (every record is), so a record header always
 * fits between an offset and the ring's end; a counter that is not is the peer's doing, and the
 * side that finds it appends or reads nothing more.
 */
#include "ring.h"

#include <string.h>

static inline uint64_t *tail_of(uint8_t *ring) { return (uint64_t *)(ring + NS_RING_TAIL); }
static inline uint64_t *head_of(uint8_t *ring) { return (uint64_t *)(ring + NS_RING_HEAD); }
static inline uint32_t *waiting_of(uint8_t *ring) { return (uint32_t *)(ring + NS_RING_WAITING); }

static inline uint64_t record_size(uint64_t length)
{
    return NS_RING_RECORD_HEADER + ((length + 7) & ~(uint64_t)7);
}

static inline void write_record_header(uint8_t *at, uint32_t length, uint32_t gso_size)
{
    const uint32_t header[2] = {length, gso_size};
    memcpy(at, header, sizeof header);
}

/* Room for a record of `record` bytes at `tail`: the record itself, plus the rest of the ring when
 * it would run past the end (a skip record fills that). 0 if it does not fit now. */
static inline uint64_t room_needed(uint64_t tail, uint64_t head, uint64_t size, uint64_t record)
{
    uint64_t used = tail - head;
    uint64_t contiguous = size - (tail & (size - 1));
    uint64_t need = record <= contiguous ? record : contiguous + record;
    return used <= size && need <= size - used ? need : 0;   /* used > size: a corrupt head, treat as full */
}

/* After publishing: did the consumer say it was going to sleep? Clears the flag if so, so that
 * pushes while it sleeps cost one eventfd write in all. */
static inline int consumer_sleeping(uint8_t *ring)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(waiting_of(ring), __ATOMIC_RELAXED) &&
           __atomic_exchange_n(waiting_of(ring), 0, __ATOMIC_RELAXED);
}

size_t ns_ring_push_batch(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                          const uint32_t *frame_pieces, const uint32_t *gso_sizes, size_t frames, int *wake)
{
    uint8_t *data = ring + NS_RING_HEADER_SIZE;
    uint64_t tail = __atomic_load_n(tail_of(ring), __ATOMIC_RELAXED);     /* ours alone */
    uint64_t head = __atomic_load_n(head_of(ring), __ATOMIC_ACQUIRE);
    size_t pushed;

    *wake = 0;
    if (tail & 7)   /* records are 8-aligned: the peer wrote our tail; append nothing more */
        return 0;
    for (pushed = 0; pushed < frames; pushed++) {
        uint32_t count = frame_pieces[pushed];
        uint64_t length = 0;
        for (uint32_t i = 0; i < count; i++)
            length += lengths[i];
        if (length >= NS_RING_SKIP)
            break;
        uint64_t record = record_size(length);
        uint64_t need = room_needed(tail, head, size, record);
        if (!need) {   /* full as last seen: the consumer may have made room since */
            head = __atomic_load_n(head_of(ring), __ATOMIC_ACQUIRE);
            need = room_needed(tail, head, size, record);
            if (!need)
                break;
        }
        uint64_t offset = tail & (size - 1);
        if (need != record) {
            write_record_header(data + offset, NS_RING_SKIP, 0);
            offset = 0;
        }
        write_record_header(data + offset, (uint32_t)length, gso_sizes ? gso_sizes[pushed] : 0);
        uint8_t *at = data + offset + NS_RING_RECORD_HEADER;
        for (uint32_t i = 0; i < count; i++) {
            memcpy(at, pieces[i], lengths[i]);
            at += lengths[i];
        }
        memset(at, 0, record - NS_RING_RECORD_HEADER - length);
        tail += need;
        pieces += count;
        lengths += count;
    }
    if (pushed) {
        __atomic_store_n(tail_of(ring), tail, __ATOMIC_RELEASE);
        *wake = consumer_sleeping(ring);
    }
    return pushed;
}

int ns_ring_push(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                 size_t count, uint32_t gso_size, int *wake)
{
    uint32_t frame_pieces = (uint32_t)count;
    return (int)ns_ring_push_batch(ring, size, pieces, lengths, &frame_pieces, &gso_size, 1, wake);
}

size_t ns_ring_pop_batch(uint8_t *ring, uint64_t size, uint32_t max_frame, uint32_t max_super, uint8_t *out,
                         size_t out_size, size_t count, uint32_t *lengths, uint32_t *gso_sizes, uint32_t *errors)
{
    const uint8_t *data = ring + NS_RING_HEADER_SIZE;
    uint64_t head = __atomic_load_n(head_of(ring), __ATOMIC_RELAXED);     /* ours alone */
    const uint64_t start = head;
    const uint64_t tail = __atomic_load_n(tail_of(ring), __ATOMIC_ACQUIRE);
    size_t popped = 0, used = 0;

    *errors = 0;
    if (tail - head > size || (head | tail) & 7)
        goto corrupt;
    while (popped < count && head != tail) {
        uint64_t offset = head & (size - 1);
        uint64_t contiguous = size - offset;
        uint64_t available = tail - head;
        uint32_t header[2];
        memcpy(header, data + offset, sizeof header);
        const uint32_t length = header[0], gso_size = header[1];
        if (length == NS_RING_SKIP) {
            if (contiguous > available)
                goto corrupt;
            head += contiguous;
            continue;
        }
        uint64_t record = record_size(length);
        const uint32_t limit = gso_size ? max_super : max_frame;     /* 0: no super-segment is valid */
        if (!limit || length > limit || record > contiguous || record > available)
            goto corrupt;
        if (length > out_size - used)
            break;
        memcpy(out + used, data + offset + NS_RING_RECORD_HEADER, length);
        lengths[popped] = length;
        gso_sizes[popped++] = gso_size;
        used += length;
        head += record;
    }
    if (head != start)
        __atomic_store_n(head_of(ring), head, __ATOMIC_RELEASE);
    return popped;

corrupt:
    *errors = 1;
    __atomic_store_n(head_of(ring), tail, __ATOMIC_RELEASE);
    return popped;
}

int ns_ring_prepare_wait(uint8_t *ring)
{
    __atomic_store_n(waiting_of(ring), 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(tail_of(ring), __ATOMIC_ACQUIRE) == __atomic_load_n(head_of(ring), __ATOMIC_RELAXED))
        return 1;
    __atomic_store_n(waiting_of(ring), 0, __ATOMIC_RELAXED);
    return 0;
}
