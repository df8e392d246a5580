"""cffi builder (API mode) for ``netsock._native``: the C hot paths — the Internet checksum, batched
reads from a packet fd into pooled buffers, TCP super-segments cut and written to a packet fd
(software GSO), the single-producer/single-consumer frame rings of the shared-memory link, and receive
coalescing (GRO), and a cache of the interpreter's freed frame-stack chunks (cheap greenlets).

setup.py names it in ``cffi_modules``; the build is optional, and every caller falls back to pure
Python when the module is absent.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
uint16_t ns_checksum(const uint8_t *buf, size_t len, uint32_t initial);

typedef struct ns_pool ns_pool;
ns_pool *ns_pool_new(size_t block_size, size_t max_idle);
void ns_pool_close(ns_pool *pool);
uint8_t *ns_pool_get(ns_pool *pool);
void ns_pool_put(uint8_t *block);
size_t ns_read_batch(int fd, uint8_t *const *bufs, size_t count, size_t size, uint32_t *lengths, int *error);

#define NS_GSO_MAX_LINK_HEADER ...
enum { NS_GSO_OK, NS_GSO_MALFORMED, NS_GSO_TOO_LONG };
typedef struct ns_gso_result {
    size_t pieces;
    size_t sent;
    size_t bytes;
    int error;
} ns_gso_result;
int ns_gso_write(int fd, const uint8_t *head, size_t head_len, const uint8_t *data, size_t data_len,
                 size_t link_len, long gso_size, size_t mtu, ns_gso_result *result);

#define NS_RING_HEADER_SIZE ...
#define NS_RING_RECORD_HEADER ...
#define NS_RING_VERSION ...
size_t ns_ring_push_batch(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                          const uint32_t *frame_pieces, const uint32_t *gso_sizes, size_t frames, int *wake);
int ns_ring_push(uint8_t *ring, uint64_t size, const uint8_t *const *pieces, const uint32_t *lengths,
                 size_t count, uint32_t gso_size, int *wake);
size_t ns_ring_pop_batch(uint8_t *ring, uint64_t size, uint32_t max_frame, uint32_t max_super, uint8_t *out,
                         size_t out_size, size_t count, uint32_t *lengths, uint32_t *gso_sizes, uint32_t *errors);
int ns_ring_prepare_wait(uint8_t *ring);

typedef struct ns_gro_run {
    uint32_t first;
    uint32_t count;
    uint32_t headers;
    uint32_t size;
    uint32_t length;
    uint8_t v4;
    uint8_t push;
} ns_gro_run;
size_t ns_gro_plan(const uint8_t *const *frames, const uint32_t *lengths, size_t count, size_t link_len,
                   uint32_t *payload_start, uint32_t *payload_end, ns_gro_run *runs);
void ns_gro_merge(const uint8_t *const *frames, size_t link_len, const uint32_t *payload_start,
                  const uint32_t *payload_end, const ns_gro_run *run, uint8_t *out);
#define NS_ARENA_FULL ...
typedef struct ns_rx_frame {
    uint32_t offset;
    uint32_t length;
    uint32_t pieces;
} ns_rx_frame;
typedef struct ns_rx_totals {
    uint64_t bytes;
    uint32_t reads;
    uint32_t merged;
    uint32_t too_long;
} ns_rx_totals;
size_t ns_read_gro(int fd, uint8_t *arena, size_t arena_size, size_t *used, size_t frame_max, size_t link_len,
                   size_t max_merged, size_t count, ns_rx_frame *frames, ns_rx_totals *totals, int *error);

int ns_arena_cache_install(void);
""")
ffibuilder.set_source(
    "netsock._native",
    '#include "checksum.h"\n#include "fdio.h"\n#include "segment.h"\n#include "ring.h"\n#include "gro.h"\n'
    '#include "arena.h"',
    # Relative to the project root, where setuptools runs the build; relative paths also keep
    # the sources listed in an sdist.
    sources=["native/checksum.c", "native/fdio.c", "native/segment.c", "native/ring.c", "native/gro.c",
             "native/arena.c"],
    include_dirs=["native"],
)
