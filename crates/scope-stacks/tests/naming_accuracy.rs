//! The naming-accuracy harness: programs whose task kinds have fooled
//! naming before (kind-scenarios: merged drop glue, generic futures,
//! `tracing::Instrumented`, async blocks, LocalSet, spawn_blocking,
//! current_thread) and the demo, each in three forms made from one
//! debuginfo build (so addresses are the same): with DWARF, symbols only
//! (`--strip-debug`), fully stripped (`--strip-all`). The truth is the DWARF
//! name of each `raw::poll<F, S>` instance. Every instance is counted as
//! correct, ambiguous and saying so, unnamed (with or without a spawn site),
//! or wrong; wrong must be 0 in every form, and with DWARF all are correct.
//! The table is printed (run with `--nocapture`) and kept in NAMING.md.

use scope_model::kinds::{canonical, kind_of_future, same_future};
use scope_model::{KindName, KindRole, TaskKind};
use scope_stacks::task_kinds::{NamingOptions, name_kinds, poll_instances_by_shape};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn program(name: &str) -> PathBuf {
    let path = Path::new(ROOT).join("target/release-debuginfo").join(name);
    assert!(path.exists(), "{}: missing (build it: cargo build --profile release-debuginfo -p {name})", path.display());
    path
}

/// A program from crates.io nobody here wrote, built with DWARF (`cargo
/// xtask test` installs mini-redis 0.4.1 and bore-cli 0.6.0 so, as `cargo
/// install` resolves them).
fn crates_io(name: &str) -> PathBuf {
    let path = Path::new(ROOT).join("target/crates-io/debuginfo/bin").join(name);
    assert!(path.exists(), "{}: missing (cargo xtask test installs it with CARGO_PROFILE_RELEASE_DEBUG=true)", path.display());
    path
}

/// llvm-objcopy (installed with LLVM by `cargo xtask setup`) or binutils.
fn objcopy() -> PathBuf {
    let candidates = ["/usr/lib/llvm-22/bin/llvm-objcopy", "llvm-objcopy", "objcopy"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| panic!("no objcopy found (tried {candidates:?}): run cargo xtask setup"))
}

/// The three forms of `binary`, the last two made in `dir`.
fn forms(binary: &Path, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let name = binary.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = vec![("debuginfo", binary.to_path_buf())];
    for (form, flag) in [("symbols only", "--strip-debug"), ("stripped", "--strip-all")] {
        let path = dir.join(format!("{name}.{}", flag.trim_start_matches("--")));
        let status = Command::new(objcopy()).arg(flag).arg(binary).arg(&path).status().expect("objcopy runs");
        assert!(status.success(), "objcopy {flag} {}", binary.display());
        out.push((form, path));
    }
    out
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    instances: usize,
    correct: usize,
    ambiguous: usize,
    spawn_site: usize,
    unnamed: usize,
    wrong: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.instances += o.instances;
        self.correct += o.correct;
        self.ambiguous += o.ambiguous;
        self.spawn_site += o.spawn_site;
        self.unnamed += o.unnamed;
        self.wrong += o.wrong;
    }
}

/// How `kind` fares against the truth `(F, S)`; a wrong role (blocking vs
/// async) is wrong too.
/// The same future whatever spelled it (legacy, v0, DWARF); Tokio's two
/// worker-loop futures are one kind.
fn key(future: &str, scheduler: Option<&str>) -> String {
    let label = kind_of_future(future, scheduler.unwrap_or("_"));
    if label == scope_model::kinds::WORKER_LOOP { label } else { canonical(future) }
}

fn judge(kind: &TaskKind, truth: &(String, String), truth_role: KindRole, wrongs: &mut Vec<String>) -> &'static str {
    let want = key(&truth.0, Some(&truth.1));
    // Without names the shape tells blocking from async tasks; the worker
    // loop is a blocking task, a LocalSet task an async one.
    let role_ok = kind.role == KindRole::Unknown
        || kind.role == truth_role
        || (truth_role == KindRole::Local && kind.role == KindRole::Async)
        || (truth_role == KindRole::WorkerLoop && kind.role == KindRole::Blocking);
    let verdict = match &kind.name {
        KindName::Exact { future, scheduler } => {
            if same_future(&key(future, scheduler.as_deref()), &want) { "correct" } else { "wrong" }
        }
        KindName::Ambiguous { futures, scheduler, open } => {
            let among = futures.iter().any(|f| same_future(&key(f, scheduler.as_deref()), &want));
            if among || *open { "ambiguous" } else { "wrong" }
        }
        KindName::Unnamed if !kind.spawn_sites.is_empty() => "spawn site",
        KindName::Unnamed => "unnamed",
    };
    if verdict == "wrong" || !role_ok {
        wrongs.push(format!("{:?} named {:?} (role {:?}), truth {} (role {truth_role:?})", kind.evidence, kind.label(), kind.role, truth.0));
        return "wrong";
    }
    verdict
}

/// Every spawn site in a workspace file must point at a line that spawns.
fn check_spawn_sites(kind: &TaskKind) {
    for site in &kind.spawn_sites {
        let mut parts = site.rsplitn(3, ':');
        let (_col, line, file) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        // Our workspace's files; other crates' sources are not at hand.
        if !file.starts_with("crates/") {
            continue;
        }
        let source = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let text = source.lines().nth(line.parse::<usize>().unwrap() - 1).unwrap();
        assert!(text.contains("spawn"), "spawn site {site} is `{}`", text.trim());
    }
}

#[test]
fn naming_accuracy_per_form() {
    let dir = std::env::temp_dir().join(format!("naming-accuracy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = NamingOptions { debug_roots: Vec::new(), ..Default::default() };
    let mut totals: Vec<(&str, Tally)> = Vec::new();
    let mut rows = Vec::new();
    let mut wrongs = Vec::new();
    // NAMING_ACCURACY_EXTRA=a:b adds debuginfo builds of more programs
    // (real servers from crates.io, built with CARGO_PROFILE_RELEASE_DEBUG=true).
    let extra: Vec<PathBuf> = std::env::var("NAMING_ACCURACY_EXTRA").map(|v| v.split(':').map(PathBuf::from).collect()).unwrap_or_default();
    let programs: Vec<PathBuf> = ["kind-scenarios", "demo-app"].into_iter().map(program).chain([crates_io("mini-redis-server"), crates_io("bore")]).chain(extra).collect();
    for binary in &programs {
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        let name = name.as_str();
        let binary = binary.clone();
        let data = std::fs::read(&binary).unwrap();
        let offsets: Vec<u64> = scope_stacks::probe_points::tokio_probe_points(&data).unwrap().polls.iter().map(|p| p.file_offset).collect();
        // The truth: DWARF names every instance.
        let truth: HashMap<u64, (String, String)> = name_kinds(&binary, &offsets, &options)
            .kinds
            .into_iter()
            .map(|(o, k)| match k.name {
                KindName::Exact { future, scheduler: Some(s) } if k.evidence == scope_model::Evidence::Dwarf => (o, (future, s)),
                other => panic!("{name}+{o:#x}: no DWARF name ({other:?})"),
            })
            .collect();
        assert_eq!(truth.len(), offsets.len());
        for (form, path) in forms(&binary, &dir) {
            let instances = if form == "stripped" {
                // Found by vtable shape alone: exactly the instances the symbols list.
                let found = poll_instances_by_shape(&path);
                let mut want = offsets.clone();
                want.sort_unstable();
                assert_eq!(found, want, "{name} ({form}): task vtables by shape");
                found
            } else {
                offsets.clone()
            };
            let kinds = name_kinds(&path, &instances, &options).kinds;
            let mut tally = Tally::default();
            for &offset in &instances {
                let kind = kinds.get(&offset).cloned().unwrap_or_else(TaskKind::unnamed);
                let truth = &truth[&offset];
                check_spawn_sites(&kind);
                let truth_role = scope_model::kinds::role_of(&truth.0, Some(&truth.1));
                tally.instances += 1;
                match judge(&kind, truth, truth_role, &mut wrongs) {
                    "correct" => tally.correct += 1,
                    "ambiguous" => tally.ambiguous += 1,
                    "spawn site" => tally.spawn_site += 1,
                    "unnamed" => tally.unnamed += 1,
                    _ => tally.wrong += 1,
                }
            }
            rows.push(format!(
                "| {name} | {form} | {} | {} | {} | {} | {} | {} |",
                tally.instances, tally.correct, tally.ambiguous, tally.spawn_site, tally.unnamed, tally.wrong
            ));
            match totals.iter_mut().find(|(f, _)| *f == form) {
                Some((_, t)) => *t += tally,
                None => totals.push((form, tally)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("| program | form | instances | correct | ambiguous, said so | unnamed, spawn site given | unnamed | wrong |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    for (form, t) in &totals {
        let pct = |n: usize| 100.0 * n as f64 / t.instances as f64;
        println!(
            "| all | {form} | {} | {} ({:.0}%) | {} ({:.0}%) | {} ({:.0}%) | {} ({:.0}%) | {} |",
            t.instances,
            t.correct,
            pct(t.correct),
            t.ambiguous,
            pct(t.ambiguous),
            t.spawn_site,
            pct(t.spawn_site),
            t.unnamed,
            pct(t.unnamed),
            t.wrong
        );
    }
    assert!(wrongs.is_empty(), "wrong names:\n{}", wrongs.join("\n"));
    let by_form: HashMap<&str, Tally> = totals.into_iter().collect();
    assert_eq!(by_form["debuginfo"].correct, by_form["debuginfo"].instances, "with DWARF every kind is exact");
    // Stripped: every kind is named by where it is spawned, but those
    // spawned by Tokio itself (its worker loops).
    let stripped = by_form["stripped"];
    assert!(stripped.unnamed <= 4 + 2 * (programs.len() - 2), "stripped: {stripped:?}");
    assert!(by_form["symbols only"].correct * 2 > by_form["symbols only"].instances, "{:?}", by_form["symbols only"]);
}

/// DWARF split off (`objcopy --only-keep-debug`, as distributions ship it)
/// still names every kind exactly: found under a debug root by build-id,
/// or given as a file; a debug file of another build is not used.
#[test]
fn separate_debug_files_name_kinds_exactly() {
    let dir = std::env::temp_dir().join(format!("naming-debug-file-{}", std::process::id()));
    let root = dir.join("debug");
    std::fs::create_dir_all(&root).unwrap();
    let full = program("demo-app");
    let binary = dir.join("demo-app");
    let debug = dir.join("demo-app.debug");
    let run = |args: &[&std::ffi::OsStr]| assert!(Command::new(objcopy()).args(args).status().unwrap().success(), "objcopy {args:?}");
    run(&["--only-keep-debug".as_ref(), full.as_os_str(), debug.as_os_str()]);
    run(&["--strip-debug".as_ref(), full.as_os_str(), binary.as_os_str()]);
    let data = std::fs::read(&binary).unwrap();
    let offsets: Vec<u64> = scope_stacks::probe_points::tokio_probe_points(&data).unwrap().polls.iter().map(|p| p.file_offset).collect();
    let all_dwarf = |options: &NamingOptions| name_kinds(&binary, &offsets, options).kinds.values().all(|k| k.evidence == scope_model::Evidence::Dwarf);
    let nowhere = NamingOptions { debug_roots: vec![root.clone()], ..Default::default() };
    assert!(!all_dwarf(&nowhere), "no DWARF anywhere yet");
    assert!(all_dwarf(&NamingOptions { debug_files: vec![debug.clone()], debug_roots: Vec::new() }), "--debug-file");
    let id = scope_stacks::elf::build_id(&data).expect("build-id");
    let by_id = root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::copy(&debug, by_id.join(format!("{}.debug", &id[2..]))).unwrap();
    assert!(all_dwarf(&nowhere), "found by build-id under the root");
    // Another program's debug file is never used, given or not.
    let other = dir.join("other.debug");
    run(&["--only-keep-debug".as_ref(), program("kind-scenarios").as_os_str(), other.as_os_str()]);
    let wrong = NamingOptions { debug_files: vec![other.clone()], debug_roots: Vec::new() };
    assert!(name_kinds(&binary, &offsets, &wrong).kinds.values().all(|k| k.evidence != scope_model::Evidence::Dwarf));
    assert!(scope_stacks::debug_file::check(&binary, &other).is_err() && scope_stacks::debug_file::check(&binary, &debug).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
