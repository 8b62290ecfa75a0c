mod cli;

// jemalloc gives the memory of closed and parked connections back to the
// system about a second after a burst (glibc keeps its peak), and serves
// the per-request small allocations from per-thread caches.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: purge freed pages after about a second, from a
/// background thread rather than on the serving threads.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    cli::main()
}
