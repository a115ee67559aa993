//! The user-space link shaper: delay, jitter and seeded loss on a link, because this kernel has no `netem`.
//!
//! A shaped link is two TAP devices. The shaper process (`xtask netsim-shaper`, in the run's shaper
//! namespace) creates both; the orchestrator then moves each into the namespace at one end of the link (a TAP
//! device keeps its file descriptor when it changes namespace), where it serves as an ordinary interface: a
//! router's WAN interface on one side, a port of the internet's bridge on the other. Every Ethernet frame one
//! end sends is read by the shaper and written, later or never, into the other end.
//!
//! The kernel segments GSO packets and fills in checksums before it hands a frame to a TAP device opened
//! without `IFF_VNET_HDR`, so the shaper only sees ordinary frames up to the MTU, whatever offloads the
//! endpoints use.
//!
//! Per direction there are two threads and a bounded FIFO between them, however many frames pass: the reader
//! takes a frame, notes its arrival time, drops it with the configured probability (a splitmix64 stream
//! seeded per link and direction, so a run is repeatable; either independent random loss or bursts from a
//! Gilbert-Elliott chain, see [`Burst`]), stamps it due at arrival + delay (+ uniform jitter,
//! clamped so frames never overtake each other) and queues it; the writer sleeps until the head frame is due
//! and writes it. With frames in FIFO order the queue needs no heap, and the only latency added beyond the
//! configured one is a thread wake-up (the self-test measures it). A full queue (8192 frames) drops the new
//! frame, like a tail-drop router queue. Rates are left to the kernel's `tbf`, which this kernel has.
//!
//! Control is line based: commands on standard input, one reply line each on standard output (`ok`,
//! `stats ...` or `err MESSAGE`); the process exits when standard input closes, so a crashed orchestrator
//! cannot leave it running, and its TAP devices vanish with it.
//!
//! ```text
//! attach LINK TAP_A TAP_B                          create both TAPs and start shaping
//! set LINK ab|ba|both DELAY_US JITTER_US LOSS_PPM [ENTER_PPM LEAVE_PPM BAD_LOSS_PPM]
//!                                                  change the shaping of a direction (a = first TAP); the
//!                                                  optional three make the loss bursty (Gilbert-Elliott)
//! stats LINK                                       "stats IN DROPPED OVERFLOW OUT" for ab, then for ba
//! ```

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use super::sys::{NsProcess, Pipes, Run, splitmix64};

/// Frames queued per direction before new ones are dropped.
const QUEUE_FRAMES: usize = 8192;
/// Larger than any frame a TAP device with a standard MTU hands out.
const FRAME_BUF: usize = 16 * 1024;

/// Delay, jitter and loss of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct LinkParams {
    /// One-way delay added to every frame, in microseconds.
    pub(crate) delay_us: u64,
    /// Extra uniform random delay of up to this many microseconds (frames keep their order).
    pub(crate) jitter_us: u64,
    /// Probability of dropping a frame, in parts per million (in the good state, with `burst`).
    pub(crate) loss_ppm: u32,
    /// Bursty loss: a two-state Gilbert-Elliott chain on top of `loss_ppm`.
    pub(crate) burst: Option<Burst>,
}

/// A Gilbert-Elliott loss model: a Markov chain of a good and a bad state, stepped once per frame. In the good
/// state frames are lost with [`LinkParams::loss_ppm`], in the bad state with `bad_loss_ppm`; each frame the
/// chain enters the bad state with probability `enter_ppm` and leaves it with `leave_ppm`. So the chain is bad
/// for a share `enter / (enter + leave)` of frames, in runs of `1 / leave` frames on average: losses come in
/// bursts, as on Wi-Fi or a mobile link, rather than independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Burst {
    /// Per frame, the probability of going from good to bad, in parts per million.
    pub(crate) enter_ppm: u32,
    /// Per frame, the probability of going from bad to good, in parts per million.
    pub(crate) leave_ppm: u32,
    /// Loss probability in the bad state, in parts per million.
    pub(crate) bad_loss_ppm: u32,
}

impl Burst {
    /// The long-run share of frames lost, with `good_loss` (ppm) in the good state, as a fraction.
    pub(crate) fn mean_loss(&self, good_loss_ppm: u32) -> f64 {
        let enter = f64::from(self.enter_ppm);
        let leave = f64::from(self.leave_ppm);
        if enter + leave == 0.0 {
            return f64::from(good_loss_ppm) / 1e6;
        }
        let bad_share = enter / (enter + leave);
        (bad_share * f64::from(self.bad_loss_ppm) + (1.0 - bad_share) * f64::from(good_loss_ppm))
            / 1e6
    }

    /// The mean number of frames the chain stays bad once it went bad.
    pub(crate) fn mean_burst_frames(&self) -> f64 {
        1e6 / f64::from(self.leave_ppm.max(1))
    }
}

impl LinkParams {
    /// A delay of `ms` milliseconds and no loss.
    pub(crate) fn delay_ms(ms: u64) -> Self {
        Self {
            delay_us: ms * 1000,
            ..Self::default()
        }
    }

    /// The same with a loss probability of `percent` percent.
    pub(crate) fn with_loss_percent(mut self, percent: f64) -> Self {
        let ppm = (percent * 10_000.0).round().clamp(0.0, 1_000_000.0);
        // In range by the clamp.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            self.loss_ppm = ppm as u32;
        }
        self
    }

    /// The same with bursty loss from `burst` (and `loss_ppm` in its good state).
    pub(crate) fn with_burst(mut self, burst: Burst) -> Self {
        self.burst = Some(burst);
        self
    }
}

/// Which direction(s) of a link a change applies to; `a` is the first TAP of `attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the first TAP's namespace to the second's.
    Ab,
    /// From the second TAP's namespace to the first's.
    Ba,
    /// Both.
    Both,
}

impl Dir {
    fn word(self) -> &'static str {
        match self {
            Dir::Ab => "ab",
            Dir::Ba => "ba",
            Dir::Both => "both",
        }
    }
}

/// Frame counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct DirStats {
    /// Frames read from the sending end.
    pub(crate) frames_in: u64,
    /// Frames dropped by the loss setting.
    pub(crate) dropped: u64,
    /// Frames dropped because the queue was full.
    pub(crate) overflow: u64,
    /// Frames written to the receiving end.
    pub(crate) frames_out: u64,
}

// ---- The shaper process ----

struct Direction {
    delay_us: AtomicU64,
    jitter_us: AtomicU64,
    loss_ppm: AtomicU32,
    /// The Gilbert-Elliott parameters; `enter_ppm` 0 turns the chain off (always good).
    enter_ppm: AtomicU32,
    leave_ppm: AtomicU32,
    bad_loss_ppm: AtomicU32,
    frames_in: AtomicU64,
    dropped: AtomicU64,
    overflow: AtomicU64,
    frames_out: AtomicU64,
}

impl Direction {
    fn new() -> Self {
        Self {
            delay_us: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            loss_ppm: AtomicU32::new(0),
            enter_ppm: AtomicU32::new(0),
            leave_ppm: AtomicU32::new(0),
            bad_loss_ppm: AtomicU32::new(0),
            frames_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
        }
    }

    fn set(&self, params: LinkParams) {
        self.delay_us.store(params.delay_us, Ordering::Relaxed);
        self.jitter_us.store(params.jitter_us, Ordering::Relaxed);
        self.loss_ppm.store(params.loss_ppm, Ordering::Relaxed);
        let burst = params.burst.unwrap_or(Burst {
            enter_ppm: 0,
            leave_ppm: 0,
            bad_loss_ppm: 0,
        });
        self.enter_ppm.store(burst.enter_ppm, Ordering::Relaxed);
        self.leave_ppm.store(burst.leave_ppm, Ordering::Relaxed);
        self.bad_loss_ppm
            .store(burst.bad_loss_ppm, Ordering::Relaxed);
    }

    /// Whether the next frame is lost, stepping the Gilbert-Elliott chain (`bad`) first.
    fn lose(&self, rng: &mut u64, bad: &mut bool) -> bool {
        let enter = self.enter_ppm.load(Ordering::Relaxed);
        if enter == 0 {
            *bad = false;
        } else {
            let flip = if *bad {
                self.leave_ppm.load(Ordering::Relaxed)
            } else {
                enter
            };
            if chance(rng, flip) {
                *bad = !*bad;
            }
        }
        let loss = if *bad {
            self.bad_loss_ppm.load(Ordering::Relaxed)
        } else {
            self.loss_ppm.load(Ordering::Relaxed)
        };
        chance(rng, loss)
    }

    fn stats(&self) -> String {
        format!(
            "{} {} {} {}",
            self.frames_in.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.overflow.load(Ordering::Relaxed),
            self.frames_out.load(Ordering::Relaxed)
        )
    }
}

/// True with probability `ppm` parts per million; draws nothing for 0.
fn chance(rng: &mut u64, ppm: u32) -> bool {
    ppm > 0 && splitmix64(rng) % 1_000_000 < u64::from(ppm)
}

struct Link {
    ab: Arc<Direction>,
    ba: Arc<Direction>,
}

struct Frame {
    due: Instant,
    bytes: Vec<u8>,
}

/// `xtask netsim-shaper [--seed N]`: serves the control protocol on stdin/stdout until stdin closes.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let seed = match args {
        [] => 1,
        [flag, value] if flag == "--seed" => match value.parse() {
            Ok(seed) => seed,
            Err(e) => {
                eprintln!("netsim-shaper: bad --seed {value}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!(
                "usage: xtask netsim-shaper [--seed N]  (commands on stdin; see the module docs)"
            );
            return ExitCode::from(2);
        }
    };
    let mut links = HashMap::new();
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = command(&line, &mut links, seed).unwrap_or_else(|e| format!("err {e}"));
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn command(line: &str, links: &mut HashMap<String, Link>, seed: u64) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["attach", name, tap_a, tap_b] => {
            if links.contains_key(*name) {
                return Err(format!("link {name} exists"));
            }
            let link_seed = seed ^ fnv1a(name.as_bytes());
            let link =
                attach(tap_a, tap_b, link_seed).map_err(|e| format!("attach {name}: {e}"))?;
            links.insert((*name).to_owned(), link);
            Ok("ok".to_owned())
        }
        ["set", name, dir, delay, jitter, loss, burst @ ..] => {
            let ppm = |what: &str, word: &str| -> Result<u32, String> {
                let value: u32 = word.parse().map_err(|e| format!("{what} {word}: {e}"))?;
                if value > 1_000_000 {
                    return Err(format!("{what} {word} ppm is over 1000000"));
                }
                Ok(value)
            };
            let burst = match burst {
                [] => None,
                [enter, leave, bad] => Some(Burst {
                    enter_ppm: ppm("enter", enter)?,
                    leave_ppm: ppm("leave", leave)?,
                    bad_loss_ppm: ppm("bad loss", bad)?,
                }),
                _ => return Err(format!("set takes 5 or 8 arguments: {line}")),
            };
            let params = LinkParams {
                delay_us: delay.parse().map_err(|e| format!("delay {delay}: {e}"))?,
                jitter_us: jitter
                    .parse()
                    .map_err(|e| format!("jitter {jitter}: {e}"))?,
                loss_ppm: ppm("loss", loss)?,
                burst,
            };
            let link = links.get(*name).ok_or_else(|| format!("no link {name}"))?;
            match *dir {
                "ab" => link.ab.set(params),
                "ba" => link.ba.set(params),
                "both" => {
                    link.ab.set(params);
                    link.ba.set(params);
                }
                other => return Err(format!("direction {other}: ab, ba or both")),
            }
            Ok("ok".to_owned())
        }
        ["stats", name] => {
            let link = links.get(*name).ok_or_else(|| format!("no link {name}"))?;
            Ok(format!("stats {} {}", link.ab.stats(), link.ba.stats()))
        }
        _ => Err(format!("unknown command: {line}")),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn open_tap(name: &str) -> std::io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .enable(false)
        .build_sync()
}

fn attach(tap_a: &str, tap_b: &str, seed: u64) -> std::io::Result<Link> {
    let a = Arc::new(open_tap(tap_a)?);
    let b = Arc::new(open_tap(tap_b)?);
    let link = Link {
        ab: Arc::new(Direction::new()),
        ba: Arc::new(Direction::new()),
    };
    start_direction(
        &format!("{tap_a}>"),
        Arc::clone(&a),
        Arc::clone(&b),
        Arc::clone(&link.ab),
        seed,
    )?;
    start_direction(&format!("{tap_b}>"), b, a, Arc::clone(&link.ba), !seed)?;
    Ok(link)
}

fn start_direction(
    name: &str,
    from: Arc<SyncDevice>,
    to: Arc<SyncDevice>,
    dir: Arc<Direction>,
    seed: u64,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::sync_channel::<Frame>(QUEUE_FRAMES);
    let reader_dir = Arc::clone(&dir);
    thread::Builder::new()
        .name(format!("{name}read"))
        .spawn(move || read_loop(&from, &tx, &reader_dir, seed))?;
    thread::Builder::new()
        .name(format!("{name}write"))
        .spawn(move || write_loop(&to, &rx, &dir))?;
    Ok(())
}

fn read_loop(from: &SyncDevice, queue: &mpsc::SyncSender<Frame>, dir: &Direction, seed: u64) {
    let mut rng = seed;
    let mut bad = false;
    let mut buf = vec![0u8; FRAME_BUF];
    let mut last_due = Instant::now();
    loop {
        let len = match from.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("netsim-shaper: read failed, direction stops: {e}");
                return;
            }
        };
        let arrived = Instant::now();
        dir.frames_in.fetch_add(1, Ordering::Relaxed);
        if dir.lose(&mut rng, &mut bad) {
            dir.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let jitter = dir.jitter_us.load(Ordering::Relaxed);
        let extra = if jitter > 0 {
            splitmix64(&mut rng) % (jitter + 1)
        } else {
            0
        };
        let delay = Duration::from_micros(dir.delay_us.load(Ordering::Relaxed) + extra);
        let due = (arrived + delay).max(last_due);
        last_due = due;
        let bytes = buf.get(..len).unwrap_or_default().to_vec();
        match queue.try_send(Frame { due, bytes }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                dir.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

fn write_loop(to: &SyncDevice, queue: &mpsc::Receiver<Frame>, dir: &Direction) {
    while let Ok(frame) = queue.recv() {
        let wait = frame.due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            thread::sleep(wait);
        }
        // A write fails while the other end is down (before it is configured): the frame is lost, as on a wire.
        if to.send(&frame.bytes).is_ok() {
            dir.frames_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---- The orchestrator's handle ----

/// The running shaper process of a topology.
#[derive(Debug)]
pub(crate) struct Shaper {
    process: NsProcess,
    ns: String,
}

impl Shaper {
    /// Starts `xtask netsim-shaper` in namespace `ns`.
    pub(crate) fn start(run: &Run, ns: &str, seed: u64) -> Result<Self, String> {
        let exe = super::topo::self_exe()?;
        let process = NsProcess::spawn(
            "shaper",
            ns,
            &exe,
            &[
                "netsim-shaper".to_owned(),
                "--seed".to_owned(),
                seed.to_string(),
            ],
            &run.dir().join(format!("{ns}-shaper.log")),
            Pipes {
                stdin: true,
                stdout: true,
            },
        )?;
        Ok(Self {
            process,
            ns: ns.to_owned(),
        })
    }

    /// The namespace the shaper runs in (where new TAP devices appear).
    pub(crate) fn ns(&self) -> &str {
        &self.ns
    }

    fn request(&mut self, line: &str) -> Result<String, String> {
        self.process.send_line(line)?;
        let reply = self
            .process
            .next_line(Duration::from_secs(5))
            .map_err(|e| {
                format!(
                    "shaper gave no answer to `{line}` ({e:?}); its log:\n{}",
                    self.process.log_tail(10)
                )
            })?;
        match reply.strip_prefix("err ") {
            Some(error) => Err(format!("shaper: {error}")),
            None => Ok(reply),
        }
    }

    /// Creates link `name`'s two TAP devices (in the shaper namespace) and starts shaping, unimpaired.
    pub(crate) fn attach(&mut self, name: &str, tap_a: &str, tap_b: &str) -> Result<(), String> {
        self.request(&format!("attach {name} {tap_a} {tap_b}"))
            .map(drop)
    }

    /// Sets the delay, jitter and loss of direction(s) `dir` of link `name`.
    pub(crate) fn set(&mut self, name: &str, dir: Dir, params: LinkParams) -> Result<(), String> {
        let burst = params.burst.map_or_else(String::new, |b| {
            format!(" {} {} {}", b.enter_ppm, b.leave_ppm, b.bad_loss_ppm)
        });
        self.request(&format!(
            "set {name} {} {} {} {}{burst}",
            dir.word(),
            params.delay_us,
            params.jitter_us,
            params.loss_ppm
        ))
        .map(drop)
    }

    /// The frame counters of link `name`: (a to b, b to a).
    pub(crate) fn stats(&mut self, name: &str) -> Result<(DirStats, DirStats), String> {
        let reply = self.request(&format!("stats {name}"))?;
        parse_stats(&reply).ok_or_else(|| format!("shaper: bad stats line {reply:?}"))
    }
}

fn parse_stats(line: &str) -> Option<(DirStats, DirStats)> {
    let numbers: Vec<u64> = line
        .strip_prefix("stats ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let dir = |n: &[u64]| DirStats {
        frames_in: n[0],
        dropped: n[1],
        overflow: n[2],
        frames_out: n[3],
    };
    (numbers.len() == 8).then(|| (dir(&numbers[..4]), dir(&numbers[4..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_validate_before_touching_devices() {
        let mut links = HashMap::new();
        assert!(command("set x ab 1 0 0", &mut links, 1).is_err());
        assert!(command("stats x", &mut links, 1).is_err());
        assert!(command("frobnicate", &mut links, 1).is_err());
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts_at_the_configured_rate() {
        let dir = Direction::new();
        let burst = Burst {
            enter_ppm: 10_000,
            leave_ppm: 250_000,
            bad_loss_ppm: 500_000,
        };
        dir.set(LinkParams::default().with_burst(burst));
        let (mut rng, mut bad) = (7u64, false);
        let frames = 400_000;
        let losses: Vec<bool> = (0..frames).map(|_| dir.lose(&mut rng, &mut bad)).collect();
        let lost = losses.iter().filter(|l| **l).count();
        #[allow(clippy::cast_precision_loss)]
        let rate = lost as f64 / f64::from(frames);
        let expected = burst.mean_loss(0);
        assert!(
            (rate - expected).abs() < expected * 0.1,
            "{rate} vs {expected}"
        );
        // Bursty: a loss is followed by another far more often than the mean rate would make it.
        let pairs = losses.windows(2).filter(|w| w[0] && w[1]).count();
        #[allow(clippy::cast_precision_loss)]
        let after_loss = pairs as f64 / lost as f64;
        assert!(after_loss > 5.0 * rate, "{after_loss} vs {rate}");
        assert!((burst.mean_burst_frames() - 4.0).abs() < 1e-9);
        // Independent loss alone: no burst structure.
        dir.set(LinkParams::default().with_loss_percent(2.0));
        let losses: Vec<bool> = (0..frames).map(|_| dir.lose(&mut rng, &mut bad)).collect();
        let lost = losses.iter().filter(|l| **l).count();
        let pairs = losses.windows(2).filter(|w| w[0] && w[1]).count();
        #[allow(clippy::cast_precision_loss)]
        let after_loss = pairs as f64 / lost as f64;
        assert!(after_loss < 0.05, "{after_loss}");
    }

    #[test]
    fn set_parses_burst_parameters() {
        let mut links = HashMap::new();
        let error = |line: &str, links: &mut HashMap<String, Link>| {
            command(line, links, 1).expect_err("no such link")
        };
        assert!(error("set x ab 1 0 0 1 2", &mut links).contains("5 or 8 arguments"));
        assert!(error("set x ab 1 0 0 1 2 2000000", &mut links).contains("over 1000000"));
        assert!(error("set x ab 1 0 2000000", &mut links).contains("over 1000000"));
        // Well formed: only the missing link is wrong.
        assert!(error("set x ab 1 0 0 1 2 3", &mut links).contains("no link x"));
        assert!(error("set x ab 1 0 0", &mut links).contains("no link x"));
    }

    #[test]
    fn stats_round_trip() {
        let d = Direction::new();
        d.frames_in.store(10, Ordering::Relaxed);
        d.dropped.store(1, Ordering::Relaxed);
        d.frames_out.store(9, Ordering::Relaxed);
        let line = format!("stats {} {}", d.stats(), Direction::new().stats());
        let (ab, ba) = parse_stats(&line).expect("parses");
        assert_eq!(ab.frames_in, 10);
        assert_eq!(ab.dropped, 1);
        assert_eq!(ab.frames_out, 9);
        assert_eq!(ba, DirStats::default());
        assert!(parse_stats("stats 1 2 3").is_none());
    }

    #[test]
    fn loss_percent_to_ppm() {
        assert_eq!(
            LinkParams::delay_ms(10).with_loss_percent(2.0).loss_ppm,
            20_000
        );
        assert_eq!(
            LinkParams::default().with_loss_percent(150.0).loss_ppm,
            1_000_000
        );
        assert_eq!(LinkParams::delay_ms(10).delay_us, 10_000);
    }
}
