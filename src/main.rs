mod cli;

// jemalloc gives the memory of closed and parked connections back to the
// system about a second after a burst (glibc keeps its peak), and serves
// the per-request small allocations from per-thread caches.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings:
/// - purge freed pages after about a second, from a background thread
///   rather than on the serving threads;
/// - slabs of 8 pages for the 4–14 KiB classes: hyper's connection read
///   buffers are 8 KiB, and one is replaced on most requests; with the
///   default one-region slabs every such allocation and free went to the
///   arena for a slab of its own;
/// - trim the thread caches every 4 MiB allocated rather than every 64 KiB,
///   which those buffers alone pass every few requests.
///
/// A C `const char *`: the symbol is the address of the first byte.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,\
slab_sizes:4097-14336:8,tcache_gc_incr_bytes:4194304\0"[0];

fn main() -> std::process::ExitCode {
    // Every connection is a file. A failure leaves the limit as it was; a
    // low one is reported once the config says how many connections to
    // expect.
    let _ = cutover::server::raise_open_file_limit();
    cli::main()
}
