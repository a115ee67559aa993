//! `cargo xtask lan`: local-network discovery (mDNS / DNS-SD) between network namespaces on one bridge, with
//! no relay and no route to anything else, checked against Debian's Avahi.
//!
//! ```text
//! cargo build --example transfer --example listen
//! cargo xtask lan --bin-dir target/debug/examples [--trials 20]
//! ```
//!
//! One bridge (in namespace `hub`, multicast snooping off) joins five hosts, each with an IPv4 address in
//! 10.77.0.0/24 and an IPv6 ULA in fd77::/64 (plus its link-local address): `a`, `b`, `avahi`, `nomc`,
//! whose interface has the multicast flag off, and `flood`. The checks, in order:
//!
//! 1. `a` serves data (`transfer provide --local-discovery`), `b` listens (`listen --local-discovery`);
//! 2. `b` fetches from `a` knowing only its NodeId, `--trials` times, each a cold start (a new process):
//!    every fetch must complete intact over a direct path; the median time from start to connected is
//!    reported (the benchmark figure of BENCHMARKS.md "Local discovery");
//! 3. Avahi in `avahi` (its own D-Bus daemon and a private /run/avahi-daemon, publishing off) browses
//!    `_iroh._udp` and must list both `a` and `b` with their IPv4 addresses and TXT data;
//! 4. a second interface comes up on `a` (10.77.0.21, same bridge) and goes again: `b`'s listener must
//!    see `a` announce the new address, then announce without it;
//! 5. `a` stops (SIGTERM): `b`'s listener must print `local peer gone: <a>` and Avahi must stop listing it;
//! 6. `nomc` dials `b` by NodeId and must fail quickly with an error saying there are no local peers.
//! 7. `flood` announces 800 made-up nodes (what a known peer costs in `b`'s listener RSS), then 30,000
//!    (the listener's memory must stay bounded, and a real node started afterwards must still be heard).
//!
//! `--idle-secs S` also counts what an idle `a` multicasts over S seconds (after step 1).
//!
//! Nothing is sent outside the namespaces: multicast stays on the bridge.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use super::sys::{self, NoLine, NsProcess, Pipes, Run};

/// What one run needs.
#[derive(Debug, Clone)]
struct Options {
    bin_dir: PathBuf,
    trials: usize,
    /// Seconds to count the multicast a idle provider sends (0: not measured).
    idle_secs: u64,
}

/// The pause before each cold fetch.
const QUIET: Duration = Duration::from_millis(1200);

/// The hosts on the bridge and their addresses' last byte.
const HOSTS: [(&str, u8); 5] = [("a", 1), ("b", 2), ("avahi", 3), ("nomc", 4), ("flood", 5)];
/// Made-up peers announced first, so that what is measured next is the cost per peer rather than
/// buffers that fill once (the event channel, the allocator's first arenas).
const FLOOD_WARM: u64 = 200;
/// Made-up peers announced to measure what a known peer costs (with the warm-up, below the table's
/// bound of 1,024).
const FLOOD_FEW: u64 = 800;
/// Made-up peers of the flood (far past the bound), and their rate.
const FLOOD_MANY: (u64, u64) = (30_000, 5_000);
/// How much more than before the flood the listener may hold during and after it.
const FLOOD_RSS_BOUND_KIB: u64 = 8 * 1024;

/// Entry point of `cargo xtask lan`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut options = Options {
        bin_dir: PathBuf::from("target/debug/examples"),
        trials: 5,
        idle_secs: 0,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.clone().next()) {
            ("--bin-dir", Some(dir)) => {
                options.bin_dir = PathBuf::from(dir);
                it.next();
            }
            ("--idle-secs", Some(n)) => {
                let Ok(n) = n.parse() else {
                    eprintln!("--idle-secs takes a number");
                    return ExitCode::from(2);
                };
                options.idle_secs = n;
                it.next();
            }
            ("--trials", Some(n)) => {
                let Ok(n) = n.parse() else {
                    eprintln!("--trials takes a number");
                    return ExitCode::from(2);
                };
                options.trials = n;
                it.next();
            }
            _ => {
                eprintln!("usage: cargo xtask lan [--bin-dir DIR] [--trials N] [--idle-secs S]");
                return ExitCode::from(2);
            }
        }
    }
    match run(&options) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lan: FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<String, String> {
    for tool in ["avahi-daemon", "avahi-browse", "dbus-daemon", "unshare"] {
        if !crate::tools::on_path(tool) {
            return Err(format!(
                "`{tool}` is missing (Debian packages avahi-daemon avahi-utils dbus-daemon util-linux; \
                 `cargo xtask check-tools` installs them as root)"
            ));
        }
    }
    let transfer = options.bin_dir.join("transfer");
    let listen = options.bin_dir.join("listen");
    for bin in [&transfer, &listen] {
        if !bin.is_file() {
            return Err(format!(
                "{} is missing: cargo build --example transfer --example listen",
                bin.display()
            ));
        }
    }
    let run = Run::start()?;
    let outcome = scenario(&run, options, &transfer, &listen);
    if outcome.is_err() {
        run.keep_logs();
    }
    outcome
}

fn scenario(
    run: &Run,
    options: &Options,
    transfer: &Path,
    listen: &Path,
) -> Result<String, String> {
    build_lan(run)?;
    let mut report = vec![format!("## Local discovery (run {})", run.id())];
    let _avahi = start_avahi(run)?;

    // 1. The provider and the listener.
    let mut provider = spawn(
        run,
        "a",
        "provider",
        transfer,
        &args(&[
            "provide",
            "--local-discovery",
            "--json",
            "--size",
            "2000000",
        ]),
    )?;
    let line = provider.next_line(Duration::from_secs(20)).map_err(|e| {
        format!(
            "the provider printed nothing ({e:?}): {}",
            provider.log_tail(20)
        )
    })?;
    let a_id = json_str(&line, "node_id").ok_or_else(|| format!("no node_id in {line:?}"))?;
    let mut listener = spawn(run, "b", "listener", listen, &args(&["--local-discovery"]))?;
    let b_id = loop {
        let line = listener.next_line(Duration::from_secs(20)).map_err(|e| {
            format!(
                "the listener printed no id ({e:?}): {}",
                listener.log_tail(20)
            )
        })?;
        if let Some(id) = line.strip_prefix("listening as ") {
            break id.trim().to_owned();
        }
    };
    wait_for_line(
        &mut listener,
        &format!("local peer found: {a_id}"),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("b's listener never heard a: {e}"))?;
    report.push(format!("- a = {a_id}, b = {b_id}: b's listener heard a"));

    if options.idle_secs > 0 {
        report.push(idle_count(run, options.idle_secs)?);
    }

    // 2. Cold fetches by NodeId.
    let mut connect_ms = Vec::new();
    for trial in 0..options.trials {
        // A quiet segment: a responder multicasts a record at most once a second (RFC 6762 §6), so a
        // query right after the last trial's would wait for the querier's retry instead.
        thread::sleep(QUIET);
        let log = run.dir().join(format!("fetch-{trial}.log"));
        let mut fetch = NsProcess::spawn(
            "fetcher",
            &run.ns("b"),
            transfer,
            &args(&["fetch", "--node-id", &a_id, "--local-discovery", "--json"]),
            &log,
            Pipes {
                stdin: false,
                stdout: true,
            },
        )?;
        let result = loop {
            match fetch.next_line(Duration::from_secs(30)) {
                Ok(line) if line.contains("\"hash_ok\"") => break line,
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "fetch {trial} gave no result ({e:?}): {}",
                        fetch.log_tail(20)
                    ));
                }
            }
        };
        if !result.contains("\"hash_ok\":true") || !result.contains("\"final_path\":\"direct\"") {
            return Err(format!(
                "fetch {trial} did not arrive intact over a direct path: {result}"
            ));
        }
        let ms =
            json_num(&result, "connect_ms").ok_or_else(|| format!("no connect_ms in {result}"))?;
        connect_ms.push(ms);
        fetch.wait_timeout(Duration::from_secs(5));
    }
    connect_ms.sort_by(f64::total_cmp);
    let median = connect_ms[connect_ms.len() / 2];
    report.push(format!(
        "- {} cold fetches of 2 MB by NodeId alone, no relay: all intact and direct; start to connected: \
         median {median:.1} ms, min {:.1}, max {:.1}",
        connect_ms.len(),
        connect_ms[0],
        connect_ms[connect_ms.len() - 1]
    ));

    // 3. Avahi lists both.
    let seen = poll(Duration::from_secs(15), || {
        let out = avahi_browse(run)?;
        let both = [(&a_id, "10.77.0.1"), (&b_id, "10.77.0.2")]
            .iter()
            .all(|(id, ip)| {
                out.lines().any(|l| {
                    l.starts_with("=;") && l.contains(id.as_str()) && l.contains(&format!(";{ip};"))
                })
            });
        Ok(both.then_some(out))
    })
    .map_err(|e| format!("Avahi did not list both nodes with their addresses: {e}"))?;
    let a_line = seen
        .lines()
        .find(|l| l.starts_with("=;") && l.contains(&a_id) && l.contains("IPv4"))
        .unwrap_or_default();
    report.push(format!("- avahi-browse lists both; a as: `{a_line}`"));

    // 4. An interface comes and goes on a: a announces again each time.
    report.push(interface_change(run, &mut listener, &a_id)?);

    // 5. a leaves.
    let left = Instant::now();
    provider.stop(Duration::from_secs(5));
    wait_for_line(
        &mut listener,
        &format!("local peer gone: {a_id}"),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("b's listener did not forget a after it stopped: {e}"))?;
    let forgotten = left.elapsed();
    poll(Duration::from_secs(15), || {
        let out = avahi_browse(run)?;
        Ok((!out.lines().any(|l| l.contains(a_id.as_str()))).then_some(()))
    })
    .map_err(|e| format!("Avahi still lists a after it stopped: {e}"))?;
    report.push(format!(
        "- a stopped: b's listener forgot it after {} ms, Avahi stopped listing it",
        forgotten.as_millis()
    ));

    // 6. No multicast, no local peers.
    let started = Instant::now();
    let log = run.dir().join("nomc.log");
    let mut lonely = NsProcess::spawn(
        "nomc",
        &run.ns("nomc"),
        transfer,
        &args(&["fetch", "--node-id", &b_id, "--local-discovery", "--json"]),
        &log,
        Pipes {
            stdin: false,
            stdout: false,
        },
    )?;
    let status = lonely
        .wait_timeout(Duration::from_secs(20))
        .ok_or("the multicast-less fetch hung for 20 s")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if status.success() || !text.contains("no local peers") {
        return Err(format!(
            "the multicast-less fetch should fail saying there are no local peers: {status}: {}",
            sys::log_tail(&log, 5)
        ));
    }
    let error_line = text
        .lines()
        .find(|l| l.contains("no local peers"))
        .unwrap_or_default();
    report.push(format!(
        "- multicast off: failed after {} ms with `{}`",
        started.elapsed().as_millis(),
        error_line.trim()
    ));
    report.extend(flood_check(run, &mut listener, transfer)?);
    listener.stop(Duration::from_secs(5));
    Ok(report.join("\n"))
}

/// Step 7, made-up announcements: what a known peer costs, and that a flood far past the table's
/// bound neither grows the listener without limit nor stops it hearing a real node afterwards.
fn flood_check(
    run: &Run,
    listener: &mut NsProcess,
    transfer: &Path,
) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    let xtask = super::topo::self_exe()?;
    let flood = |name: &str, count: u64, rate: u64, seed: u64| -> Result<(), String> {
        let log = run.dir().join(format!("{name}.log"));
        let mut p = NsProcess::spawn(
            name,
            &run.ns("flood"),
            &xtask,
            &args(&[
                "lan-flood",
                &count.to_string(),
                &rate.to_string(),
                &seed.to_string(),
            ]),
            &log,
            Pipes {
                stdin: false,
                stdout: false,
            },
        )?;
        match p.wait_timeout(Duration::from_secs(60)) {
            Some(status) if status.success() => Ok(()),
            other => Err(format!(
                "{name} failed ({other:?}): {}",
                sys::log_tail(&log, 5)
            )),
        }
    };
    let drain = |listener: &mut NsProcess| {
        let mut found = 0usize;
        while let Ok(line) = listener.next_line(Duration::from_millis(1)) {
            found += usize::from(line.starts_with("local peer found"));
        }
        found
    };
    let pid = listener.pid();
    // The listener's output is read while a flood runs: a listener blocked on a full pipe would move
    // its work to another thread (and allocator arena) and measure that instead of its peers.
    let flood_reading = |listener: &mut NsProcess,
                         name: &str,
                         (count, rate, seed): (u64, u64, u64),
                         peak: &mut u64|
     -> Result<usize, String> {
        thread::scope(|scope| -> Result<usize, String> {
            let sender = scope.spawn(|| flood(name, count, rate, seed));
            let mut found = 0;
            let mut sampled = Instant::now();
            while !sender.is_finished() {
                found += drain(listener);
                if sampled.elapsed() >= Duration::from_millis(100) {
                    *peak = (*peak).max(rss_kib(pid)?);
                    sampled = Instant::now();
                }
                thread::sleep(Duration::from_millis(5));
            }
            sender
                .join()
                .map_err(|_| "the flood thread panicked".to_owned())??;
            for _ in 0..400 {
                found += drain(listener);
                thread::sleep(Duration::from_millis(5));
            }
            Ok(found)
        })
    };
    drain(listener);
    let mut peak = 0;
    flood_reading(listener, "flood-warm", (FLOOD_WARM, 2_000, 3), &mut peak)?;
    let before = rss_kib(pid)?;
    let heard = flood_reading(listener, "flood-few", (FLOOD_FEW, 2_000, 1), &mut peak)?;
    let few = rss_kib(pid)?;
    if (heard as u64) < FLOOD_FEW / 2 {
        return Err(format!(
            "the listener heard only {heard} of {FLOOD_FEW} made-up peers"
        ));
    }
    let per_100 = few.saturating_sub(before) as f64 * 100.0 / heard as f64;
    report.push(format!(
        "- {FLOOD_FEW} made-up peers announced: the listener heard {heard}; RSS {before} -> {few} KiB, \
         {per_100:.1} KiB per 100 peers (after {FLOOD_WARM} others)"
    ));
    let (many, rate) = FLOOD_MANY;
    let flooding = Instant::now();
    let mut peak = few;
    flood_reading(listener, "flood-many", (many, rate, 2), &mut peak)?;
    let after = rss_kib(pid)?;
    peak = peak.max(after);
    report.push(format!(
        "- flood of {many} made-up peers at {rate}/s ({} s): listener RSS peak {peak} KiB, {after} KiB after \
         (before the flood {few} KiB)",
        flooding.elapsed().as_secs()
    ));
    if peak > few + FLOOD_RSS_BOUND_KIB {
        return Err(format!(
            "the flood was not bounded: {}",
            report.last().cloned().unwrap_or_default()
        ));
    }
    // Still working: a new real node is heard.
    let mut provider = spawn(
        run,
        "a",
        "provider-2",
        transfer,
        &args(&["provide", "--local-discovery", "--json", "--size", "1000"]),
    )?;
    let line = provider
        .next_line(Duration::from_secs(20))
        .map_err(|e| format!("the second provider printed nothing ({e:?})"))?;
    let id = json_str(&line, "node_id").ok_or_else(|| format!("no node_id in {line:?}"))?;
    wait_for_line(
        listener,
        &format!("local peer found: {id}"),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("after the flood, the listener did not hear a new node: {e}"))?;
    report.push("- after the flood the listener heard a new real node at once".to_owned());
    provider.stop(Duration::from_secs(5));
    Ok(report)
}

/// Counts the mDNS responses host `a` multicasts over `secs` seconds while idle (b's listener keeps
/// its records fresh meanwhile), from the `flood` host.
fn idle_count(run: &Run, secs: u64) -> Result<String, String> {
    let xtask = super::topo::self_exe()?;
    let log = run.dir().join("idle-count.log");
    let mut counter = NsProcess::spawn(
        "idle-count",
        &run.ns("flood"),
        &xtask,
        &args(&["lan-count", &secs.to_string(), "10.77.0.1"]),
        &log,
        Pipes {
            stdin: false,
            stdout: true,
        },
    )?;
    let line = counter
        .next_line(Duration::from_secs(secs + 10))
        .map_err(|e| {
            format!(
                "the counter printed nothing ({e:?}): {}",
                sys::log_tail(&log, 5)
            )
        })?;
    Ok(format!("- idle provider, {secs} s: {line}"))
}

/// VmRSS of process `pid`, KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("process {pid} is gone: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn spawn(
    run: &Run,
    host: &str,
    name: &str,
    program: &Path,
    args: &[String],
) -> Result<NsProcess, String> {
    let log = run.dir().join(format!("{name}.log"));
    NsProcess::spawn(
        name,
        &run.ns(host),
        program,
        args,
        &log,
        Pipes {
            stdin: false,
            stdout: true,
        },
    )
}

/// The bridge and the four hosts, IPv6 on (unlike netsim's internet).
fn build_lan(run: &Run) -> Result<(), String> {
    let hub = run.ns("hub");
    sys::add_netns(&hub, false)?;
    sys::ip_in(
        &hub,
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )?;
    sys::ip_in(&hub, &["link", "set", "br0", "up"])?;
    for (host, n) in HOSTS {
        let ns = run.ns(host);
        sys::add_netns(&ns, false)?;
        sys::exec_in(
            &ns,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ],
        )?;
        let (inner, outer) = run.link_names('v');
        sys::ip(&[
            "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns",
            &hub,
        ])?;
        sys::ip_in(&hub, &["link", "set", &outer, "master", "br0", "up"])?;
        sys::ip_in(&ns, &["link", "set", &inner, "name", "eth0"])?;
        sys::exec_in(
            &ns,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.eth0.disable_ipv6=0",
                "net.ipv6.conf.eth0.accept_dad=0",
            ],
        )?;
        sys::ip_in(
            &ns,
            &["addr", "add", &format!("10.77.0.{n}/24"), "dev", "eth0"],
        )?;
        sys::ip_in(
            &ns,
            &[
                "addr",
                "add",
                &format!("fd77::{n}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        if host == "nomc" {
            sys::ip_in(&ns, &["link", "set", "eth0", "multicast", "off"])?;
        }
        sys::ip_in(&ns, &["link", "set", "eth0", "up"])?;
        if host == "flood" {
            sys::ip_in(&ns, &["route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
    }
    Ok(())
}

/// D-Bus and avahi-daemon in the `avahi` host, in a mount namespace of their own (avahi-daemon insists
/// on /run/avahi-daemon for its pid file and socket).
fn start_avahi(run: &Run) -> Result<NsProcess, String> {
    let dir = run.dir();
    let conf = dir.join("avahi-daemon.conf");
    std::fs::write(
        &conf,
        "[server]\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=eth0\nenable-dbus=yes\n\
         [wide-area]\nenable-wide-area=no\n[publish]\ndisable-publishing=yes\n[reflector]\n[rlimits]\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let bus = dir.join("bus");
    let script = dir.join("avahi.sh");
    std::fs::write(
        &script,
        format!(
            "set -e\nmkdir -p /run/avahi-daemon\nmount -t tmpfs tmpfs /run/avahi-daemon\n\
             dbus-daemon --config-file=/usr/share/dbus-1/session.conf --address=unix:path={bus} --nofork --nopidfile &\n\
             for i in $(seq 50); do [ -S {bus} ] && break; sleep 0.1; done\n\
             export DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus}\n\
             exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits\n",
            bus = bus.display(),
            conf = conf.display()
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let unshare = PathBuf::from(sys::tool("unshare"));
    let script_arg = script.display().to_string();
    let avahi = NsProcess::spawn(
        "avahi",
        &run.ns("avahi"),
        &unshare,
        &args(&["-m", "--propagation", "private", "sh", &script_arg]),
        &dir.join("avahi.log"),
        Pipes {
            stdin: false,
            stdout: false,
        },
    )?;
    let log = dir.join("avahi.log");
    poll(Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server startup complete")
            .then_some(()))
    })
    .map_err(|e| {
        format!(
            "avahi-daemon did not start: {e}: {}",
            sys::log_tail(&log, 10)
        )
    })?;
    Ok(avahi)
}

/// `avahi-browse -r -p -t -k _iroh._udp` in the Avahi host: one line per record set, `=` lines resolved.
fn avahi_browse(run: &Run) -> Result<String, String> {
    let bus = format!(
        "DBUS_SYSTEM_BUS_ADDRESS=unix:path={}",
        run.dir().join("bus").display()
    );
    let browse = sys::tool("avahi-browse");
    sys::exec_in(
        &run.ns("avahi"),
        "env",
        &[&bus, &browse, "-r", "-p", "-t", "-k", "_iroh._udp"],
    )
}

/// Calls `check` every 200 ms until it gives something or `timeout` passes.
fn poll<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing yet");
    loop {
        match check() {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!("gave up after {} s ({last})", timeout.as_secs()));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Adds a second interface to `a` (10.77.0.21 on the same bridge), then removes it: `b`'s listener must
/// see the address appear in `a`'s announcement and go again.
fn interface_change(run: &Run, listener: &mut NsProcess, a_id: &str) -> Result<String, String> {
    let (ns, hub) = (run.ns("a"), run.ns("hub"));
    let (inner, outer) = run.link_names('v');
    let found = format!("local peer found: {a_id}");
    let added = Instant::now();
    sys::ip(&[
        "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns", &hub,
    ])?;
    sys::ip_in(&hub, &["link", "set", &outer, "master", "br0", "up"])?;
    sys::ip_in(&ns, &["addr", "add", "10.77.0.21/24", "dev", &inner])?;
    sys::ip_in(&ns, &["link", "set", &inner, "up"])?;
    wait_for_match(listener, Duration::from_secs(20), |l| {
        l.starts_with(&found) && l.contains("10.77.0.21:")
    })
    .map_err(|e| format!("a's new interface was not announced: {e}"))?;
    let up = added.elapsed();
    let removed = Instant::now();
    sys::ip_in(&ns, &["link", "del", &inner])?;
    wait_for_match(listener, Duration::from_secs(20), |l| {
        l.starts_with(&found) && !l.contains("10.77.0.21:")
    })
    .map_err(|e| format!("a's removed interface was still announced: {e}"))?;
    Ok(format!(
        "- a second interface on a: announced after {} ms; removed, announced without it after {} ms",
        up.as_millis(),
        removed.elapsed().as_millis()
    ))
}

/// Reads lines until one starts with `prefix`.
fn wait_for_line(process: &mut NsProcess, prefix: &str, timeout: Duration) -> Result<(), String> {
    wait_for_match(process, timeout, |line| line.starts_with(prefix))
        .map_err(|e| format!("no `{prefix}`: {e}"))
}

/// Reads lines until one matches.
fn wait_for_match(
    process: &mut NsProcess,
    timeout: Duration,
    matches: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match process.next_line(left) {
            Ok(line) if matches(&line) => return Ok(()),
            Ok(_) => {}
            Err(NoLine::Timeout) => {
                return Err(format!("nothing matched within {} s", timeout.as_secs()));
            }
            Err(NoLine::Closed) => {
                return Err(format!("the process ended: {}", process.log_tail(10)));
            }
        }
    }
}

fn json_str(line: &str, key: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get(key)?.as_str().map(str::to_owned)
}

fn json_num(line: &str, key: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get(key)?.as_f64()
}
