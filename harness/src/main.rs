//! The `kube-harness` command line: start a local control plane for a shell or a command.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
