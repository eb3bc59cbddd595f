//! The `icaptap` command: see `icaptap --help`.

fn main() -> std::process::ExitCode {
    icaptap::cli::main()
}
