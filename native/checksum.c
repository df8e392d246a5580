/* The Internet checksum (RFC 1071), the hot loop of every send and receive.
 *
 * The sum is byte-order independent (RFC 1071 §2(B)): adding native-endian words and swapping the
 * folded result gives the big-endian sum. So the loop adds 32-bit native loads into a 64-bit
 * accumulator, where carries pile up in the high half instead of needing add-with-carry; since
 * 2**16 == 1 (mod 0xffff), any wider sum folds to the same 16-bit result. memcpy does the loads:
 * no alignment assumption, no strict-aliasing violation, and compilers emit a plain load for it.
 */
#include "checksum.h"

#include <string.h>

/* Bytes summed before the accumulator is folded back under 2**32: 2**30 bytes is 2**28 words of
 * at most 2**32 - 1 each, so the 64-bit accumulator (at most 2**32 - 1 after a fold) can't wrap. */
#define NS_CHUNK ((size_t)1 << 30)

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t fold64to32(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    return (sum & 0xffffffffu) + (sum >> 32);
}

static inline uint32_t fold32to16(uint32_t sum)
{
    sum = (sum & 0xffffu) + (sum >> 16);
    return (sum & 0xffffu) + (sum >> 16);
}

static inline int host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Native-order sum of the 32-bit words of p[0:n], n a multiple of 4 and at most NS_CHUNK. */
static uint64_t sum_words(const uint8_t *p, size_t n)
{
    uint64_t a = 0, b = 0;

    /* Two accumulators so consecutive adds don't wait on each other. */
    for (; n >= 32; p += 32, n -= 32) {
        a += load32(p);
        b += load32(p + 4);
        a += load32(p + 8);
        b += load32(p + 12);
        a += load32(p + 16);
        b += load32(p + 20);
        a += load32(p + 24);
        b += load32(p + 28);
    }
    for (; n >= 4; p += 4, n -= 4)
        a += load32(p);
    return a + b;
}

uint16_t ns_checksum(const uint8_t *buf, size_t len, uint32_t initial)
{
    uint64_t sum = 0;

    while (len >= 4) {
        size_t n = len < NS_CHUNK ? len & ~(size_t)3 : NS_CHUNK;
        sum = fold64to32(sum + sum_words(buf, n));
        buf += n;
        len -= n;
    }
    if (len >= 2) {
        uint16_t w;
        memcpy(&w, buf, sizeof w);
        sum += w;
        buf += 2;
        len -= 2;
    }
    if (len) {
        /* The odd byte is the high (first) byte of a word whose low byte is zero. */
        const uint8_t pad[2] = {buf[0], 0};
        uint16_t w;
        memcpy(&w, pad, sizeof w);
        sum += w;
    }

    uint32_t folded = fold32to16((uint32_t)fold64to32(sum));
    if (host_is_little_endian())
        folded = ((folded & 0xffu) << 8) | (folded >> 8);
    /* `initial` is added after the swap since it is already in big-endian (wire) order. */
    return (uint16_t)fold32to16((uint32_t)fold64to32((uint64_t)folded + initial));
}
