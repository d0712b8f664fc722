//! The `switchyard` binary: the command with no services linked in.

fn main() -> std::process::ExitCode {
    switchyard::main()
}
