/* A small cache of the interpreter's freed frame-stack chunks, so that a new greenlet costs no
 * mmap, munmap and page faults.
 *
 * Why: CPython (3.11+) keeps frames in per-thread "data stack" chunks that it takes from and gives
 * back to its arena allocator, which maps and unmaps them. greenlet gives every greenlet a data
 * stack of its own: the first call in a new greenlet maps a fresh 16 KB chunk (and faults its pages
 * in), and the greenlet's end unmaps it. netsock runs a greenlet per connection (a server's handler,
 * each gevent-patched thread), so that was ~7 us of a connection's cost here, more than the whole
 * greenlet otherwise costs (~1 us). With the cache, a finished greenlet's chunk goes to the next one.
 *
 * Only blocks of up to CACHED_MAX bytes are kept (frame-stack chunks; the object allocator's arenas
 * are larger and go straight through), at most CACHE_SLOTS of them: a bound of 1 MB held back.
 * Blocks are handed to the allocator that was in place before, when not cached, and anything it
 * allocated may be freed through here, so the cache can be put in at any time. The interpreter
 * calls the allocator with its GIL held, but interpreters with a GIL each (PEP 684) could call it
 * at once: a spin lock guards the cache (taken once per block, never contended in practice).
 */
#include <Python.h>

#include "arena.h"

#define CACHE_SLOTS 16
#define CACHED_MAX (64 * 1024)

static PyObjectArenaAllocator underlying;
static struct {
    void *ptr;
    size_t size;
} cache[CACHE_SLOTS];
static size_t cached;
static int installed;
static char busy;

static void lock(void)
{
    while (__atomic_test_and_set(&busy, __ATOMIC_ACQUIRE))
        ;
}

static void unlock(void)
{
    __atomic_clear(&busy, __ATOMIC_RELEASE);
}

static void *cached_alloc(void *ctx, size_t size)
{
    (void)ctx;
    lock();
    for (size_t i = cached; i-- > 0;) {
        if (cache[i].size == size) {
            void *ptr = cache[i].ptr;
            cache[i] = cache[--cached];
            unlock();
            return ptr;
        }
    }
    unlock();
    return underlying.alloc(underlying.ctx, size);
}

static void cached_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL && size <= CACHED_MAX) {
        lock();
        if (cached < CACHE_SLOTS) {
            cache[cached].ptr = ptr;
            cache[cached].size = size;
            cached++;
            unlock();
            return;
        }
        unlock();
    }
    underlying.free(underlying.ctx, ptr, size);
}

int ns_arena_cache_install(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();   /* cffi calls into C without the GIL */
    int done = 0;
    if (!installed) {
        PyObjectArenaAllocator cache_allocator = {NULL, cached_alloc, cached_free};
        PyObject_GetArenaAllocator(&underlying);
        PyObject_SetArenaAllocator(&cache_allocator);
        installed = done = 1;
    }
    PyGILState_Release(gil);
    return done;
}
