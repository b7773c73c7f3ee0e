fn main() -> std::process::ExitCode {
    vswitchd::daemon::main()
}
