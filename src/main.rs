//! Thin entry point: parse the command line, set up logging, dispatch, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    auditwarden::cli::main()
}
