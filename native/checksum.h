/* The Internet checksum (RFC 1071) for netsock; see netsock/header/checksum.py. */
#ifndef NETSOCK_CHECKSUM_H
#define NETSOCK_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* Folded, not complemented, one's-complement sum of the big-endian 16-bit words of buf[0:len]
 * (an odd trailing byte is the high byte of a zero-padded word), one's-complement added to
 * `initial`. The result is 0 only if buf is all zero and initial is 0. */
uint16_t ns_checksum(const uint8_t *buf, size_t len, uint32_t initial);

#endif
