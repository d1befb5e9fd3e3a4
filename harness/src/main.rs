//! The `kube-harness` command line (built with the `cli` feature, on by default).

fn main() -> std::process::ExitCode {
    kube_harness::cli::main()
}
