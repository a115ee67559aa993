//! Running `ip`, `nft`, `sysctl` and helper processes in network namespaces, and tearing it all down.
//!
//! Names: every namespace of a run is `nsim-<run id>-<name>` and every interface `ns<run id><v|t><nnn><a|b>`
//! (11 characters; Linux allows 15), so two runs never clash and leftovers are recognisable. The run id is four
//! hex digits, checked against the namespaces that exist. The run directory `<tmp>/nsim-<run id>/` holds the
//! owner's pid, the relay configuration, the nft rulesets and one log file per process.
//!
//! Teardown, in every way a run can end: dropping the [`Run`] (normal exit, an error, a panic unwinding) and
//! SIGINT / SIGTERM / SIGHUP (a signal-hook thread) both kill every process inside the run's namespaces (all
//! of them were started by the run) and delete the namespaces, which destroys their veth and TAP devices.
//! Nothing is ever created in the root namespace. `cargo xtask netsim --cleanup` does the same for runs whose
//! owner process is gone (`--force`: for all runs).

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::tools;

/// Every namespace netsim creates starts with this.
pub(crate) const NS_PREFIX: &str = "nsim-";

/// Held while creating namespaces and spawning processes, and by the signal handler while tearing down, so
/// a signal arriving mid-spawn cannot leave a process behind.
static TEARDOWN_LOCK: Mutex<()> = Mutex::new(());
/// The ids of the runs this process owns, for the signal handler.
static ACTIVE_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One netsim run: its id, its directory, and the duty to tear everything down.
#[derive(Debug)]
pub(crate) struct Run {
    id: String,
    dir: PathBuf,
    next_if: AtomicU32,
    keep_dir: AtomicBool,
}

impl Run {
    /// Checks the machine ([`preflight`]), installs the signal handler and picks an unused run id.
    pub(crate) fn start() -> Result<Self, String> {
        preflight()?;
        install_signal_handler()?;
        let existing = list_netns()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut state = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
        let id = (0..64)
            .map(|_| format!("{:04x}", splitmix64(&mut state) & 0xffff))
            .find(|id| {
                let prefix = format!("{NS_PREFIX}{id}-");
                !existing.iter().any(|ns| ns.starts_with(&prefix)) && !run_dir(id).exists()
            })
            .ok_or("no free run id (too many leftovers? try `cargo xtask netsim --cleanup`)")?;
        let dir = run_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(dir.join("owner"), format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        lock(&ACTIVE_RUNS).push(id.clone());
        Ok(Self {
            id,
            dir,
            next_if: AtomicU32::new(0),
            keep_dir: AtomicBool::new(false),
        })
    }

    /// The run id (four hex digits).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The run directory (configs, rulesets, logs).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The full name of this run's namespace `name`.
    pub(crate) fn ns(&self, name: &str) -> String {
        format!("{NS_PREFIX}{}-{name}", self.id)
    }

    /// A fresh pair of interface names for one link: `kind` is `v` (veth) or `t` (TAP).
    pub(crate) fn link_names(&self, kind: char) -> (String, String) {
        let n = self.next_if.fetch_add(1, Ordering::Relaxed) % 1000;
        (
            format!("ns{}{kind}{n:03}a", self.id),
            format!("ns{}{kind}{n:03}b", self.id),
        )
    }

    /// Keeps the run directory (with the logs) after the run; used when something failed.
    pub(crate) fn keep_logs(&self) {
        self.keep_dir.store(true, Ordering::Relaxed);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        {
            let _guard = lock(&TEARDOWN_LOCK);
            for error in teardown_run(&self.id) {
                eprintln!("netsim teardown: {error}");
            }
        }
        lock(&ACTIVE_RUNS).retain(|id| id != &self.id);
        if self.keep_dir.load(Ordering::Relaxed) || thread::panicking() {
            eprintln!("netsim: logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run_dir(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{NS_PREFIX}{id}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A step of the splitmix64 generator: small, seedable, good enough for run ids, loss decisions and test data.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fails, naming every missing piece, unless this is root with `ip`, `nft`, `sysctl`, `tc` and `/dev/net/tun`.
pub(crate) fn preflight() -> Result<(), String> {
    let mut missing = Vec::new();
    if !tools::is_root() {
        missing.push(
            "root: netsim creates network namespaces, veth and TAP devices and nftables rules \
             (run it as root, e.g. `sudo -E cargo xtask netsim`)"
                .to_owned(),
        );
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("sysctl", "procps"),
        ("tc", "iproute2"),
    ] {
        if !tools::on_path(program) {
            missing.push(format!("`{program}` (Debian package {package})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the TUN/TAP driver, for the link shaper)".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "netsim cannot run here; missing:\n  - {}",
            missing.join("\n  - ")
        ))
    }
}

/// The absolute path of a system tool (searching the sbin directories a non-root `PATH` lacks), or the bare
/// name when it is nowhere (the spawn error then names it).
pub(crate) fn tool(name: &str) -> String {
    static FOUND: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    let found = FOUND.get_or_init(|| Mutex::new(Vec::new()));
    if let Some((_, path)) = lock(found).iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.to_owned(), |p| p.display().to_string());
    lock(found).push((name.to_owned(), path.clone()));
    path
}

/// Runs `program args` to completion: its standard output, or an error naming the command, its exit status
/// and its standard error.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip args`.
pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    run_cmd("ip", args)
}

/// `ip -n ns args`: an `ip` command inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run_cmd("ip", &all)
}

/// Runs `program args` inside namespace `ns` (`ip netns exec`).
pub(crate) fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let program = tool(program);
    let mut all = vec!["netns", "exec", ns, program.as_str()];
    all.extend_from_slice(args);
    run_cmd("ip", &all)
}

/// Creates namespace `ns` with IPv6 off (the simulated internet is IPv4 only, so NAT behaviour is what is
/// tested), loopback up and, for routers, forwarding on.
pub(crate) fn add_netns(ns: &str, forwarding: bool) -> Result<(), String> {
    {
        let _guard = lock(&TEARDOWN_LOCK);
        ip(&["netns", "add", ns])?;
    }
    let forward = if forwarding {
        "net.ipv4.ip_forward=1"
    } else {
        "net.ipv4.ip_forward=0"
    };
    exec_in(
        ns,
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            forward,
        ],
    )?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Loads an nftables ruleset into namespace `ns`, keeping a copy at `file` for the logs.
pub(crate) fn nft_load(ns: &str, ruleset: &str, file: &Path) -> Result<(), String> {
    std::fs::write(file, ruleset).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let path = file.display().to_string();
    exec_in(ns, "nft", &["-f", &path]).map(drop)
}

/// The names of all network namespaces.
pub(crate) fn list_netns() -> Result<Vec<String>, String> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Kills every process in the namespaces of run `id` and deletes the namespaces; returns what failed.
pub(crate) fn teardown_run(id: &str) -> Vec<String> {
    let prefix = format!("{NS_PREFIX}{id}-");
    let namespaces = match list_netns() {
        Ok(all) => all,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for ns in namespaces.iter().filter(|ns| ns.starts_with(&prefix)) {
        kill_ns_processes(ns);
        if let Err(e) = ip(&["netns", "del", ns]) {
            errors.push(e);
        }
    }
    errors
}

/// Kills (SIGKILL) every process inside namespace `ns`: netsim starts all of them.
fn kill_ns_processes(ns: &str) {
    let Ok(pids) = ip(&["netns", "pids", ns]) else {
        return;
    };
    for pid in pids.split_whitespace() {
        let _ = run_cmd("kill", &["-KILL", pid]);
    }
}

fn install_signal_handler() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
                .map_err(|e| format!("cannot install the signal handler: {e}"))?;
            thread::Builder::new()
                .name("netsim-signals".into())
                .spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        eprintln!("\nnetsim: got signal {signal}, tearing down");
                        let _guard = lock(&TEARDOWN_LOCK);
                        for id in lock(&ACTIVE_RUNS).iter() {
                            for error in teardown_run(id) {
                                eprintln!("netsim teardown: {error}");
                            }
                            eprintln!("netsim: logs kept in {}", run_dir(id).display());
                        }
                        std::process::exit(128 + signal);
                    }
                })
                .map(drop)
                .map_err(|e| format!("cannot start the signal thread: {e}"))
        })
        .clone()
}

/// `cargo xtask netsim --cleanup`: removes the namespaces, processes and run directories of runs whose owner
/// process is gone (with `force`, of every run).
pub(crate) fn cleanup_stale(force: bool) -> Result<(), String> {
    preflight()?;
    let mut ids: Vec<String> = list_netns()?
        .iter()
        .filter_map(|ns| ns.strip_prefix(NS_PREFIX))
        .filter_map(|rest| rest.split('-').next())
        .map(str::to_owned)
        .collect();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        ids.extend(entries.flatten().filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix(NS_PREFIX)?;
            (id.len() == 4 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_owned())
        }));
    }
    ids.sort();
    ids.dedup();
    let mut removed = 0;
    for id in &ids {
        if !force && let Some(pid) = owner_alive(id) {
            println!("run {id}: owner process {pid} still runs; skipped (use --force)");
            continue;
        }
        for error in teardown_run(id) {
            eprintln!("run {id}: {error}");
        }
        let _ = std::fs::remove_dir_all(run_dir(id));
        println!("run {id}: removed");
        removed += 1;
    }
    println!("netsim cleanup: {removed} run(s) removed");
    Ok(())
}

/// The owner pid of run `id` if that process still exists and is an xtask.
fn owner_alive(id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(run_dir(id).join("owner")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "xtask").then_some(pid)
}

/// A process started inside a namespace. Standard error (and standard output unless captured) go to its log
/// file. Dropping it kills it.
#[derive(Debug)]
pub(crate) struct NsProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<mpsc::Receiver<String>>,
    log: PathBuf,
}

/// How [`NsProcess::spawn`] connects a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pipes {
    /// Give it a pipe as standard input (helpers exit when it closes; see [`NsProcess::send_line`]).
    pub(crate) stdin: bool,
    /// Read its standard output line by line ([`NsProcess::next_line`]); the lines are also logged.
    pub(crate) stdout: bool,
}

/// What [`NsProcess::next_line`] saw instead of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoLine {
    /// Nothing within the timeout.
    Timeout,
    /// The output ended (the process closed it or exited).
    Closed,
}

impl NsProcess {
    /// Starts `program args` in namespace `ns`, logging to `log`.
    pub(crate) fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        pipes: Pipes,
    ) -> Result<Self, String> {
        let log_file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stderr(err_file)
            .stdin(if pipes.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if pipes.stdout {
            cmd.stdout(Stdio::piped());
        } else {
            let out_file = log_file
                .try_clone()
                .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
            cmd.stdout(out_file);
        }
        let mut child = {
            let _guard = lock(&TEARDOWN_LOCK);
            cmd.spawn()
                .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?
        };
        let lines = match child.stdout.take() {
            Some(stdout) => {
                let (tx, rx) = mpsc::channel();
                let mut copy = log_file;
                thread::Builder::new()
                    .name(format!("{name}-stdout"))
                    .spawn(move || {
                        for line in BufReader::new(stdout).lines() {
                            let Ok(line) = line else { break };
                            let _ = writeln!(copy, "[stdout] {line}");
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| format!("cannot start a reader thread: {e}"))?;
                Some(rx)
            }
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            log: log.to_path_buf(),
        })
    }

    /// The process id (the program itself: `ip netns exec` replaces itself with it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Writes one line to the process's standard input.
    pub(crate) fn send_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{} has no stdin pipe", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{} does not listen any more: {e}", self.name))
    }

    /// The next line of standard output, waiting at most `timeout`.
    pub(crate) fn next_line(&mut self, timeout: Duration) -> Result<String, NoLine> {
        let Some(lines) = &self.lines else {
            return Err(NoLine::Closed);
        };
        lines.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => NoLine::Timeout,
            mpsc::RecvTimeoutError::Disconnected => NoLine::Closed,
        })
    }

    /// The exit status, if the process has ended.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for the process to end.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, waits at most `grace`, then kills.
    pub(crate) fn stop(&mut self, grace: Duration) {
        if self.try_wait().is_some() {
            return;
        }
        let _ = run_cmd("kill", &["-TERM", &self.pid().to_string()]);
        if self.wait_timeout(grace).is_none() {
            self.kill();
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `n` lines of the log, for error messages.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        // Closing stdin first lets helpers end on their own; then make sure.
        self.stdin = None;
        self.kill();
    }
}

/// The last `n` lines of a file.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_spreads() {
        let (mut a, mut b) = (7, 7);
        let xs: Vec<u64> = (0..4).map(|_| splitmix64(&mut a)).collect();
        let ys: Vec<u64> = (0..4).map(|_| splitmix64(&mut b)).collect();
        assert_eq!(xs, ys);
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }
}
