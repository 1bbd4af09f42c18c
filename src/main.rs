//! The `tessera` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's allocator: each argon2id hash allocates and frees a 19 MiB
/// block, and glibc keeps such blocks in per-thread arenas after its dynamic mmap threshold
/// rises, so the resident size climbed past 400 MB under a sign-in load (BENCHMARKS.md).
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages on its arena, and
/// each 2 MiB page the kernel backs counts whole, which made 12 of an idle server's 27 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tessera::cli::main()
}
