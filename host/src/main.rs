//! The `disco` command: everything is in the library, so that tests and tools can call it.

fn main() -> std::process::ExitCode {
    host::run()
}
