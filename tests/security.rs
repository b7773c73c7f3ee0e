//! Who may drive the daemon, and what they may make it touch: the control
//! socket judges each client by the kernel's credentials of the peer, not
//! only by the socket file's mode, and group members name pcap files only
//! inside the directories the administrator opened to them.
//!
//! Clients of other users are run with `Command::uid`/`gid`, so these need
//! root; CI runs them.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;

use testkit::lab::e2e_allowed;
use testkit::Switch;

const GROUP: u32 = 4242;
const NOBODY: u32 = 65534;

fn as_user<S: AsRef<std::ffi::OsStr>>(sw: &Switch, uid: u32, gid: u32, args: &[S]) -> Output {
    let mut cmd = sw.vsctl_command();
    cmd.uid(uid).gid(gid).args(args);
    // std clears root's supplementary groups when it drops to `uid`.
    cmd.output().expect("vsctl runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon whose socket group is GROUP and whose test directory is the
/// one pcap directory, with the directories opened so that other users
/// can reach the socket.
fn switch_for_a_group() -> Switch {
    let sw = Switch::start_with_args(&["--group", &GROUP.to_string(), "--pcap-dir", "{dir}"]);
    for dir in [sw.dir.path().to_path_buf(), sw.run_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    sw
}

#[test]
fn group_members_are_served_and_other_users_refused_by_their_credentials() {
    if !e2e_allowed("group_members_are_served_and_other_users_refused_by_their_credentials") {
        return;
    }
    let sw = switch_for_a_group();
    let socket = sw.run_dir().join(proto::SOCKET_NAME);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o777, std::os::unix::fs::MetadataExt::gid(&meta)),
        (0o660, GROUP)
    );

    let member = as_user(&sw, NOBODY, GROUP, &["add-br", "br0"]);
    assert!(member.status.success(), "a member of the group is served: {}", stderr(&member));

    // The file mode stops others first...
    let outsider = as_user(&sw, NOBODY, NOBODY, &["list-br"]);
    assert!(!outsider.status.success());
    assert!(stderr(&outsider).contains("ermission denied"), "{}", stderr(&outsider));
    // ...and when the mode is loosened, the daemon still refuses them.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let outsider = as_user(&sw, NOBODY, NOBODY, &["add-br", "intruder"]);
    assert!(!outsider.status.success());
    let refused = stderr(&outsider);
    assert!(
        refused.contains(&format!("uid {NOBODY}")) && refused.contains("may not configure vswitchd"),
        "{refused}"
    );
    assert!(refused.contains(&format!("group {GROUP}")), "says which group to join: {refused}");
    assert!(sw.log().contains("refused a control client"), "the refusal is logged");

    // Nothing of the outsider's took effect; root is served as before.
    assert_eq!(sw.ok(&["list-br"]).trim(), "br0");
}

#[test]
fn group_members_name_pcap_files_only_in_the_pcap_dirs() {
    if !e2e_allowed("group_members_name_pcap_files_only_in_the_pcap_dirs") {
        return;
    }
    let sw = switch_for_a_group();
    sw.ok(&["add-br", "br0"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("p1.pcap");
    let inside = sw.path("p1.pcap");
    let pcap_port = |path: &std::path::Path| -> Vec<String> {
        ["add-port", "br0", "p1", "--", "set", "interface", "p1", "type=pcap"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("options:tx_pcap={}", path.display())])
            .collect()
    };
    let refused = as_user(&sw, NOBODY, GROUP, &pcap_port(&outside));
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("outside the directories open to group members"), "{message}");
    assert!(!outside.exists(), "the refused capture was not created");
    assert!(sw.ok(&["list-ports", "br0"]).trim().is_empty(), "the refused port was not added");

    // Root may name it; a member may name a file in the pcap directory.
    let member = as_user(&sw, NOBODY, GROUP, &pcap_port(&inside));
    assert!(member.status.success(), "{}", stderr(&member));
    assert!(inside.exists());
    sw.ok(&["del-port", "p1"]);
    let root = sw.vsctl_command().args(pcap_port(&outside)).output().unwrap();
    assert!(root.status.success(), "{}", stderr(&root));
    assert!(outside.exists());
}
