//! Project automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: everything CI checks, in order, with a summary at the end: the system tools the
//!   tests need (installed with apt-get when running as root), rustfmt, clippy with warnings denied, the
//!   tests (nextest when installed, plus doc tests), the `demo` example (it must go direct), a smoke run of
//!   `iroh-bench` (every mode and measure, small sizes, debug build: it must run, not be fast), the NAT matrix
//!   and fault scenarios of `cargo xtask netsim` with the `transfer` example, local discovery against Avahi
//!   (`cargo xtask lan`), rustdoc with warnings denied,
//!   a build check of the fuzz targets, and the source file length limit.
//! - `cargo xtask check-tools`: only the first step.
//! - `cargo xtask netsim`: the NAT matrix in network namespaces (needs root); `--self-test` checks only the
//!   simulated internet itself, `--cleanup` removes what crashed runs left. See [`netsim`] for everything.
//!   `netsim-shaper`, `netsim-probe` and `netsim-peer` are its helper programs, run inside the namespaces.
//! - `cargo xtask lan`: local-network discovery between namespaces on one bridge, against Avahi (needs
//!   root; see [`netsim::lan`]).
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![forbid(unsafe_code)]

mod netsim;
mod tools;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

/// A non-test source file longer than this fails CI.
const MAX_FILE_LINES: usize = 1200;
/// A non-test source file longer than this is reported (the project aims for files under this size).
const WARN_FILE_LINES: usize = 800;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("check-tools") => match tools::ensure() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        },
        Some("netsim") => netsim::main(&args[1..]),
        Some("lan") => netsim::lan::main(&args[1..]),
        Some("lan-flood") => netsim::lan_helpers::flood_main(&args[1..]),
        Some("lan-count") => netsim::lan_helpers::count_main(&args[1..]),
        Some("netsim-shaper") => netsim::shaper::main(&args[1..]),
        Some("netsim-probe") => netsim::probe::main(&args[1..]),
        Some("netsim-peer") => netsim::peer::main(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | check-tools | netsim [--help] | lan>");
            ExitCode::from(2)
        }
    }
}

/// The outcome of one step, for the summary.
struct StepResult {
    name: &'static str,
    ok: bool,
    took: Duration,
    detail: String,
}

fn ci() -> ExitCode {
    let root = workspace_root();
    let mut results = Vec::new();

    let tools_ok = run_step(&mut results, "system tools", tools::ensure);
    if !tools_ok {
        // The tests need these tools; running them without would only produce confusing failures.
        return summarize(&results);
    }
    run_step(&mut results, "rustfmt", || {
        cargo(&root, &["fmt", "--all", "--", "--check"], &[])
    });
    run_step(&mut results, "clippy", || {
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    });
    if has_nextest() {
        run_step(&mut results, "tests (nextest)", || {
            cargo(
                &root,
                &[
                    "nextest",
                    "run",
                    "--workspace",
                    "--locked",
                    "--no-fail-fast",
                ],
                &[],
            )
        });
        run_step(&mut results, "doc tests", || {
            cargo(&root, &["test", "--workspace", "--locked", "--doc"], &[])
        });
    } else {
        run_step(&mut results, "tests (cargo test)", || {
            cargo(
                &root,
                &["test", "--workspace", "--locked", "--no-fail-fast"],
                &[],
            )
        });
    }
    run_step(&mut results, "demo example", || {
        // The README's main command, as a test: it exits non-zero unless the connection went direct and the
        // data arrived intact. A debug build and a smaller transfer keep it quick.
        cargo(
            &root,
            &[
                "run",
                "--locked",
                "--example",
                "demo",
                "--",
                "--size-mib",
                "16",
            ],
            &[],
        )
    });
    run_step(&mut results, "bench smoke run", || {
        // Every measure of the benchmark binary in all three modes, with small sizes: a mode that lands on
        // the wrong path or a measure that breaks fails here, long before anyone records figures. Debug
        // build, so the figures themselves mean nothing.
        cargo(
            &root,
            &[
                "run",
                "--locked",
                "-p",
                "iroh-bench",
                "--",
                "all",
                "--quick",
            ],
            &[],
        )?;
        // Discovery: connect by NodeId, publish to resolvable, and dnsperf against a small store.
        cargo(
            &root,
            &[
                "run",
                "--locked",
                "-p",
                "iroh-bench",
                "--",
                "discovery",
                "--quick",
            ],
            &[],
        )?;
        // The relay binary under connections that never log in (it measures the built binary).
        cargo(
            &root,
            &[
                "build",
                "--locked",
                "-p",
                "iroh-relay",
                "--bin",
                "iroh-relay",
            ],
            &[],
        )?;
        cargo(
            &root,
            &[
                "run",
                "--locked",
                "-p",
                "iroh-bench",
                "--",
                "hostile",
                "--quick",
            ],
            &[],
        )
    });
    run_step(&mut results, "netsim (NAT matrix)", || netsim_ci(&root));
    run_step(&mut results, "local discovery (mDNS, Avahi)", || {
        lan_ci(&root)
    });
    run_step(&mut results, "rustdoc", || {
        cargo(
            &root,
            &["doc", "--workspace", "--no-deps", "--locked"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    });
    run_step(&mut results, "fuzz targets build", || {
        cargo(
            &root,
            &[
                "check",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--bins",
                "--locked",
            ],
            &[],
        )
    });
    run_step(&mut results, "file length", || check_file_lengths(&root));

    summarize(&results)
}

/// The NAT matrix and fault scenarios of `cargo xtask netsim`, driving the real `transfer` example. CI runs as
/// root; elsewhere netsim fails naming what it lacks.
fn netsim_ci(root: &Path) -> Result<(), String> {
    cargo(root, &["build", "--locked", "--example", "transfer"], &[])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let transfer = target.join("debug").join("examples").join("transfer");
    let json = target.join("netsim.json");
    // Through /proc/self/exe rather than the path: a build running meanwhile may replace the binary file.
    let status = Command::new("/proc/self/exe")
        .arg("netsim")
        .arg("--peer-cmd")
        .arg(&transfer)
        .args(["--size", "20000000", "--json-out"])
        .arg(&json)
        .current_dir(root)
        .status()
        .map_err(|err| format!("could not run netsim: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "netsim exited with {status} (report: {})",
            json.display()
        ))
    }
}

/// `cargo xtask lan` with the `transfer` and `listen` examples (debug builds).
fn lan_ci(root: &Path) -> Result<(), String> {
    cargo(
        root,
        &[
            "build",
            "--locked",
            "--example",
            "transfer",
            "--example",
            "listen",
        ],
        &[],
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let status = Command::new("/proc/self/exe")
        .arg("lan")
        .arg("--bin-dir")
        .arg(target.join("debug").join("examples"))
        .current_dir(root)
        .status()
        .map_err(|err| format!("could not run lan: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo xtask lan exited with {status}"))
    }
}

fn run_step(
    results: &mut Vec<StepResult>,
    name: &'static str,
    step: impl FnOnce() -> Result<(), String>,
) -> bool {
    println!("\n==> {name}");
    let start = Instant::now();
    let outcome = step();
    let ok = outcome.is_ok();
    let detail = outcome.err().unwrap_or_default();
    if !ok {
        eprintln!("==> {name} FAILED: {detail}");
    }
    results.push(StepResult {
        name,
        ok,
        took: start.elapsed(),
        detail,
    });
    ok
}

fn summarize(results: &[StepResult]) -> ExitCode {
    println!("\n==> summary");
    for r in results {
        let status = if r.ok { "ok" } else { "FAILED" };
        println!(
            "  {:<22} {:<7} {:>6.1}s  {}",
            r.name,
            status,
            r.took.as_secs_f64(),
            r.detail
        );
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    println!("ci: {} passed, {} failed", results.len() - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

fn cargo(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root)
        .status()
        .map_err(|err| format!("could not run {cargo}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` exited with {status}", args.join(" ")))
    }
}

fn has_nextest() -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Fails when a non-test Rust source file is longer than [`MAX_FILE_LINES`] lines, counting the lines
/// before its first `#[cfg(test)]`. Files under `tests/`, `benches/` and `fuzz/`, and `tests.rs` modules,
/// are test code.
fn check_file_lengths(root: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_rust_files(root, &mut files);
    let mut too_long = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        let is_test = rel.components().any(|c| {
            matches!(
                c.as_os_str().to_str(),
                Some("tests" | "benches" | "fuzz" | "target")
            )
        }) || rel.file_name().is_some_and(|n| n == "tests.rs");
        if is_test {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let lines = text
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .count();
        if lines > MAX_FILE_LINES {
            too_long.push(format!("{} ({lines} lines)", rel.display()));
        } else if lines > WARN_FILE_LINES {
            println!(
                "note: {} has {lines} lines of non-test code (aim for {WARN_FILE_LINES})",
                rel.display()
            );
        }
    }
    if too_long.is_empty() {
        println!("all non-test source files are within {MAX_FILE_LINES} lines");
        Ok(())
    } else {
        Err(format!(
            "over {MAX_FILE_LINES} lines: {}",
            too_long.join(", ")
        ))
    }
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
