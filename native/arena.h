/* A cache of the interpreter's freed frame-stack chunks; see native/arena.c. */
#ifndef NETSOCK_ARENA_H
#define NETSOCK_ARENA_H

/* Put the cache in front of the interpreter's arena allocator (once per process; later calls do
 * nothing). Returns 1 if this call installed it, 0 if it was already in place. */
int ns_arena_cache_install(void);

#endif
