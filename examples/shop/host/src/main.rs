//! `shop-host`: `switchyard` with the shop's Rust services linked in. `switchyard dev
//! examples/shop` builds it and hands over to it; `shop-host host --services payments` runs
//! them against a platform elsewhere.

fn main() -> std::process::ExitCode {
    switchyard::main_with(shop_host::host())
}
