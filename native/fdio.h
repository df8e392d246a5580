/* Batched reads from a packet file descriptor into pooled buffers; see native/fdio.c. */
#ifndef NETSOCK_FDIO_H
#define NETSOCK_FDIO_H

#include <stddef.h>
#include <stdint.h>

typedef struct ns_pool ns_pool;

/* A pool of `block_size`-byte buffers keeping up to `max_idle` returned ones for reuse. NULL when
 * out of memory. */
ns_pool *ns_pool_new(size_t block_size, size_t max_idle);
/* The owner is done with the pool: its idle blocks are freed now, the pool itself once the last
 * block still in use comes back. */
void ns_pool_close(ns_pool *pool);
/* A block of the pool's size, uninitialised; NULL when out of memory. */
uint8_t *ns_pool_get(ns_pool *pool);
/* Give back a block from ns_pool_get (any thread; NULL is ignored). */
void ns_pool_put(uint8_t *block);

/* Read up to `count` packets from non-blocking `fd`, packet i into bufs[i] (room `size` each), its
 * length into lengths[i]. Returns how many were read. Stops early when the fd has no more
 * (*error = EAGAIN), at end of file (*error = 0 with fewer than `count` read) or on any other
 * failure (*error = errno); *error = 0 when `count` packets were read. EINTR is retried. */
size_t ns_read_batch(int fd, uint8_t *const *bufs, size_t count, size_t size, uint32_t *lengths, int *error);

#endif
