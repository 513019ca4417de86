//! The `picoclaw-traffic-guardian` binary: parse, run, turn the outcome into an exit code.

fn main() -> std::process::ExitCode {
    picoclaw_traffic_guardian::cli::main()
}
