mod cli;

// The proxy allocates and frees many small buffers per request; mimalloc's
// thread-local free lists do that markedly cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
