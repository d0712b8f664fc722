//! The `switchyard` binary: the command with no services linked in.

/// glibc's malloc took about a third of the runner's and the seed's CPU (perf, seeding
/// 100,000 events); a host binary chooses its own allocator (the shop's uses this one too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::main()
}
