//! What `vsctl` and `vswitch-cni` share: the control-socket client, and
//! the CNI plugin's logic (its binary is a thin `main`).

pub mod client;
pub mod cni;
