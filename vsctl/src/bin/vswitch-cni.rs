//! vswitch-cni: the CNI plugin; see `vsctl::cni`.

fn main() -> std::process::ExitCode {
    vsctl::cni::main()
}
