//! The system tools the tests use, and installing them.

use std::process::Command;

/// A program the tests run, and the Debian package that provides it.
struct Tool {
    program: &'static str,
    package: &'static str,
    used_for: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        program: "turnserver",
        package: "coturn",
        used_for: "STUN interop tests (an independent STUN server)",
    },
    Tool {
        program: "turnutils_stunclient",
        package: "coturn",
        used_for: "STUN interop tests (an independent STUN client)",
    },
    Tool {
        program: "nft",
        package: "nftables",
        used_for: "NAT simulation in network namespaces",
    },
    Tool {
        program: "ip",
        package: "iproute2",
        used_for: "network namespaces and veth links",
    },
    Tool {
        program: "tc",
        package: "iproute2",
        used_for: "rate limits in the NAT simulation (cargo xtask netsim)",
    },
    Tool {
        program: "dig",
        package: "bind9-dnsutils",
        used_for: "discovery DNS interop tests (an independent DNS client reads our records)",
    },
    Tool {
        program: "dnsperf",
        package: "dnsperf",
        used_for: "the discovery DNS server benchmark (iroh-bench dns)",
    },
    Tool {
        program: "avahi-daemon",
        package: "avahi-daemon",
        used_for: "local discovery test (an independent mDNS responder and browser, cargo xtask lan)",
    },
    Tool {
        program: "avahi-browse",
        package: "avahi-utils",
        used_for: "local discovery test (lists our nodes as Avahi sees them)",
    },
    Tool {
        program: "dbus-daemon",
        package: "dbus-daemon",
        used_for: "local discovery test (a private bus between avahi-daemon and avahi-browse)",
    },
    Tool {
        program: "miniupnpd",
        package: "miniupnpd-nftables",
        used_for: "the port-mapping router of the NAT simulation (UPnP IGD, NAT-PMP, PCP)",
    },
    Tool {
        program: "upnpc",
        package: "miniupnpc",
        used_for: "reads back the port mappings of the NAT simulation's UPnP router",
    },
    Tool {
        program: "sysctl",
        package: "procps",
        used_for: "forwarding and IPv6 settings of the NAT simulation's namespaces",
    },
];

/// Makes sure every tool in [`TOOLS`] is on the `PATH`, installing missing ones with apt-get when running
/// as root on a Debian-like system. Otherwise returns a message naming what is missing.
pub(crate) fn ensure() -> Result<(), String> {
    let missing: Vec<&Tool> = TOOLS.iter().filter(|t| !on_path(t.program)).collect();
    if missing.is_empty() {
        println!("all system tools present: {}", names(TOOLS.iter()));
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    println!(
        "missing: {}; Debian packages: {}",
        names(missing.iter().copied()),
        packages.join(" ")
    );

    if !is_root() || !on_path("apt-get") {
        return Err(explain(
            &missing,
            &packages,
            "not root with apt-get, so not installing them",
        ));
    }
    println!("installing with apt-get: {}", packages.join(" "));
    let update = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !update.is_ok_and(|s| s.success()) {
        return Err(explain(&missing, &packages, "apt-get update failed"));
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !install.is_ok_and(|s| s.success()) {
        return Err(explain(&missing, &packages, "apt-get install failed"));
    }
    let still: Vec<&Tool> = TOOLS.iter().filter(|t| !on_path(t.program)).collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(explain(&still, &packages, "still missing after installing"))
    }
}

fn explain(missing: &[&Tool], packages: &[&str], why: &str) -> String {
    let mut text = format!("the tests need system tools that are not installed ({why}):\n");
    for tool in missing {
        text.push_str(&format!(
            "  {} (Debian package {}): {}\n",
            tool.program, tool.package, tool.used_for
        ));
    }
    text.push_str(&format!(
        "install them with: sudo apt-get install {}",
        packages.join(" ")
    ));
    text
}

fn names<'a>(tools: impl Iterator<Item = &'a Tool>) -> String {
    tools.map(|t| t.program).collect::<Vec<_>>().join(", ")
}

pub(crate) fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    // Also look in the sbin directories, which a non-root PATH often lacks (nft and ip live there).
    let extra = ["/usr/sbin", "/sbin"].map(std::path::PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .any(|dir| dir.join(program).is_file())
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
