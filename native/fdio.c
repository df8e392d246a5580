/* Batched reads from a packet file descriptor (a TUN/TAP fd: one read is one packet), into buffers
 * that are recycled instead of freed.
 *
 * Why a pool: a 64 KB TCP super-segment read into a fresh buffer costs more in the allocator than
 * in the read. Buffers of that size come from the top of the heap, and when a socket reader drains
 * a megabyte of them at once, free() hands the memory back to the kernel (malloc's trim threshold),
 * so the next read page-faults its buffer in again: ~35 us per 64 KB here, against ~15 us for the
 * read itself. Blocks that come back to the pool are reused as they are, never zeroed.
 *
 * Why a batch: one call into C per wake-up instead of one Python-level read per packet.
 *
 * The Python side (netsock/link/fdbased.py) hands each large packet up in the block it was read
 * into, with ns_pool_put as the block's destructor, so the payload reaches the socket reader
 * without a copy and the block returns here when the last view of it is gone. cffi releases the
 * GIL around calls, so blocks may come back from any thread: the pool has a lock.
 */
#include "fdio.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* In front of every block: the pool it belongs to and, while idle, the next idle block. Two
 * pointers keep the data 16-byte aligned, as malloc's own. */
typedef struct block_header {
    ns_pool *pool;
    struct block_header *next;
} block_header;

struct ns_pool {
    pthread_mutex_t lock;
    size_t block_size;
    size_t max_idle;
    size_t idle_count;
    size_t in_use;          /* handed out and not yet back */
    int closed;
    block_header *idle;
};

static void free_idle(ns_pool *pool)
{
    while (pool->idle) {
        block_header *h = pool->idle;
        pool->idle = h->next;
        free(h);
    }
    pool->idle_count = 0;
}

ns_pool *ns_pool_new(size_t block_size, size_t max_idle)
{
    ns_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    if (pthread_mutex_init(&pool->lock, NULL)) {
        free(pool);
        return NULL;
    }
    pool->block_size = block_size;
    pool->max_idle = max_idle;
    return pool;
}

void ns_pool_close(ns_pool *pool)
{
    int done;

    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->closed = 1;
    free_idle(pool);
    done = pool->in_use == 0;
    pthread_mutex_unlock(&pool->lock);
    if (done) {
        pthread_mutex_destroy(&pool->lock);
        free(pool);
    }
}

uint8_t *ns_pool_get(ns_pool *pool)
{
    block_header *h;

    pthread_mutex_lock(&pool->lock);
    h = pool->idle;
    if (h) {
        pool->idle = h->next;
        pool->idle_count--;
    }
    pool->in_use++;
    pthread_mutex_unlock(&pool->lock);
    if (!h) {
        h = malloc(sizeof *h + pool->block_size);
        if (!h) {
            pthread_mutex_lock(&pool->lock);
            pool->in_use--;
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        h->pool = pool;
    }
    return (uint8_t *)(h + 1);
}

void ns_pool_put(uint8_t *block)
{
    block_header *h;
    ns_pool *pool;
    int release_pool = 0;

    if (!block)
        return;
    h = (block_header *)block - 1;
    pool = h->pool;
    pthread_mutex_lock(&pool->lock);
    pool->in_use--;
    if (!pool->closed && pool->idle_count < pool->max_idle) {
        h->next = pool->idle;
        pool->idle = h;
        pool->idle_count++;
        h = NULL;
    } else {
        release_pool = pool->closed && pool->in_use == 0;
    }
    pthread_mutex_unlock(&pool->lock);
    free(h);
    if (release_pool) {
        pthread_mutex_destroy(&pool->lock);
        free(pool);
    }
}

size_t ns_read_batch(int fd, uint8_t *const *bufs, size_t count, size_t size, uint32_t *lengths, int *error)
{
    size_t done = 0;

    *error = 0;
    while (done < count) {
        ssize_t n = read(fd, bufs[done], size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *error = errno;
            break;
        }
        if (n == 0)
            break;
        lengths[done++] = (uint32_t)n;
    }
    return done;
}
