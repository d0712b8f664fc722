//! `shop-host`: `switchyard` with the shop's Rust services linked in. `switchyard dev
//! examples/shop` builds it and hands over to it; `shop-host host --services payments` runs
//! them against a platform elsewhere.

/// The allocator `switchyard` itself uses (glibc's malloc cost a third of the CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::main_with(shop_host::host())
}
