//! A sshd test host that answers like a Mac (tests/standins/macos): `uname` and `sw_vers`
//! say Darwin/macOS 15, Homebrew at /opt/homebrew, `launchctl` runs /Library/LaunchDaemons;
//! the login is the admin user `symphony` with passwordless sudo.

use super::Hosts;

/// Starts one Mac-like host.
pub fn a_mac() -> Hosts {
    super::ensure_tool("sudo", "sudo");
    let hosts = Hosts::up_with(1, &["Library", "Users"]);
    hosts.sh(
        1,
        "useradd -m -s /bin/sh -p '*' symphony && mkdir -p /home/symphony/.ssh && cp /root/.ssh/authorized_keys /home/symphony/.ssh/ && chown -R symphony: /home/symphony/.ssh && chmod 700 /home/symphony/.ssh && mkdir -p /etc/sudoers.d && echo 'symphony ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/symphony && chmod 440 /etc/sudoers.d/symphony",
    );
    for (src, dest) in [
        ("tests/standins/macos/uname", "/usr/local/bin/uname"),
        ("tests/standins/macos/sw_vers", "/usr/local/bin/sw_vers"),
        ("tests/standins/macos/launchctl", "/usr/local/bin/launchctl"),
        ("tests/standins/macos/brew", "/opt/homebrew/bin/brew"),
        ("tests/standins/ollama", "/opt/homebrew/.standin/ollama"),
    ] {
        hosts.install(1, src, dest);
    }
    // What every Mac has.
    hosts.sh(
        1,
        "chown -R symphony: /opt/homebrew && mkdir -p /Library/LaunchDaemons /etc/newsyslog.d",
    );
    hosts
}
