//! `litemaas-schedule cron` end to end, against real crontabs: busybox's `crontab -c DIR` on a
//! scratch spool per test (the spool file is read directly as the witness), and Debian's
//! `crontab -u litemaas-crontest` (a user made for these tests by scripts/test-deps.sh). The
//! installed line's command is then run through `/bin/sh -c`, after cron's `%` handling, with a
//! fake litemaas-backup that records its arguments and environment.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OTHERS: &str = "# my jobs, hand-written\nMAILTO=ops@example.com\nSHELL=/bin/sh\n\n\
                      5 4 * * * /usr/bin/find /tmp -mtime +7 -delete  \n\
                      # 0 1 * * * disabled job\n\
                      30 1 * * 1-5 echo 'weekday %' > /dev/null\n";

fn busybox() -> PathBuf {
    let path = litemaas_testkit::test_home().join("busybox-static/busybox");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-deps.sh (busybox-static's crontab)",
        path.display()
    );
    path
}

/// A scratch crontab spool read and written by busybox's real `crontab -c DIR`.
struct Spool {
    dir: tempfile::TempDir,
    busybox: PathBuf,
}

impl Spool {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("spool")).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Self {
            dir,
            busybox: busybox(),
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn command(&self) -> String {
        format!(
            "{} crontab -c {}",
            self.busybox.display(),
            self.spool().display()
        )
    }

    /// Installs `text` with the real crontab, then forgets that a write happened.
    fn seed(&self, text: &str) {
        let mut child = Command::new(&self.busybox)
            .args(["crontab", "-c"])
            .arg(self.spool())
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        self.forget_writes();
    }

    /// The crontab file's bytes, read directly (not through the tool).
    fn file(&self) -> String {
        let user = std::fs::read_dir(self.spool())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap() != "cron.update");
        user.map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_default()
    }

    /// busybox's crontab leaves `cron.update` on every write: a write happened since
    /// [`Spool::forget_writes`].
    fn written(&self) -> bool {
        self.spool().join("cron.update").exists()
    }

    fn forget_writes(&self) {
        let _ = std::fs::remove_file(self.spool().join("cron.update"));
    }

    /// A fake litemaas-backup (executable) at `path`.
    fn fake_backup(&self, path: &Path) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let record = self.dir.path().join("record");
        std::fs::write(
            path,
            format!(
                "#!/bin/sh\n\
                 for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {r}.argv\n\
                 printf '%s\\n' \"KUBECONFIG=${{KUBECONFIG-unset}}\" \"AWS_PROFILE=${{AWS_PROFILE-unset}}\" \
                 \"AWS_SECRET_ACCESS_KEY=${{AWS_SECRET_ACCESS_KEY-unset}}\" > {r}.env\n\
                 echo 'fake backup: out'\n\
                 echo 'fake backup: err' >&2\n",
                r = record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_owned()
    }

    fn record(&self, which: &str) -> Vec<String> {
        let path = self.dir.path().join(format!("record.{which}"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (the line did not run the fake)", path.display()))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `litemaas-schedule cron ARGS` with this spool as the crontab, from the home directory,
    /// with no KUBECONFIG or AWS variables unless `env` sets them.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_with(&self.command(), &self.home(), args, env)
    }

    /// A default install: namespace `ns`, a fake binary, a log in the temp dir.
    fn install(&self, ns: &str, more: &[&str]) -> Output {
        let binary = self.fake_backup(&self.dir.path().join("bin/litemaas-backup"));
        let log = self.dir.path().join("backup.log");
        let mut args = vec![
            "install",
            "--namespace",
            ns,
            "--bucket",
            "maas-db-backup",
            "--binary",
            binary.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        self.run(&args, &[])
    }
}

fn run_with(crontab: &str, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_litemaas-schedule"));
    command.arg("cron").args(args).current_dir(cwd);
    command.env("LITEMAAS_CRONTAB", crontab);
    for (name, _) in std::env::vars() {
        if name == "KUBECONFIG"
            || name.starts_with("AWS_")
            || (name.starts_with("LITEMAAS_") && name != "LITEMAAS_CRONTAB")
        {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn failed(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "succeeded, stderr: {stderr}");
    assert!(
        stderr.starts_with("litemaas-schedule: error: ") && stderr.lines().count() == 1,
        "not one error line: {stderr}"
    );
    stderr
}

/// The crontab's lines that are ours, by namespace.
fn our_line(crontab: &str, ns: &str) -> String {
    let mark = format!(" # litemaas-backup namespace={ns}");
    let mine: Vec<&str> = crontab.lines().filter(|l| l.ends_with(&mark)).collect();
    assert_eq!(mine.len(), 1, "one line for {ns} in:\n{crontab}");
    mine[0].to_owned()
}

/// What cron hands to `/bin/sh -c` for `line`: the command after the five time fields; with
/// `vixie` (vixie cron, cronie, Debian) `\%` becomes `%`, `\\` becomes `\`, and an unescaped
/// `%` ends the command; busybox's crond passes the command as it is.
fn cron_command(line: &str, vixie: bool) -> String {
    let mut rest = line.trim_start();
    for _ in 0..5 {
        let end = rest.find([' ', '\t']).unwrap();
        rest = rest[end..].trim_start();
    }
    if !vixie {
        return rest.to_owned();
    }
    let mut out = String::new();
    let mut escaped = false;
    for ch in rest.chars() {
        if escaped {
            if ch == '%' || ch == '\\' {
                out.pop();
            }
            out.push(ch);
            escaped = false;
            continue;
        }
        if ch == '%' {
            break;
        }
        escaped = ch == '\\';
        out.push(ch);
    }
    out
}

fn run_as_cron(command: &str, home: &Path) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .current_dir(home)
        .status()
        .unwrap();
    assert!(status.success(), "{command}");
}

#[test]
fn install_leaves_every_other_line_byte_identical() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    let out = ok(&spool.install("litellm-rhpds", &[]));
    assert!(
        out.contains("installed the line for namespace litellm-rhpds"),
        "{out}"
    );
    let after = spool.file();
    let line = our_line(&after, "litellm-rhpds");
    assert_eq!(after, format!("{OTHERS}{line}\n"));
    assert!(line.starts_with("0 2 1 * * /"), "{line}");
    assert!(
        line.contains(" --namespace litellm-rhpds --bucket maas-db-backup >> /"),
        "{line}"
    );
    assert!(
        line.ends_with(" 2>&1 # litemaas-backup namespace=litellm-rhpds"),
        "{line}"
    );
    // list reads it back through the same crontab
    let listed = ok(&spool.run(&["list"], &[]));
    assert_eq!(listed, format!("litellm-rhpds (line 8): {line}\n"));
}

#[test]
fn a_crontab_without_a_final_newline_gets_one_and_nothing_else() {
    let spool = Spool::new();
    spool.seed("5 4 * * * /usr/bin/true");
    ok(&spool.install("ns", &[]));
    let after = spool.file();
    assert_eq!(
        after,
        format!("5 4 * * * /usr/bin/true\n{}\n", our_line(&after, "ns"))
    );
}

#[test]
fn no_crontab_yet_is_an_empty_crontab() {
    let spool = Spool::new();
    assert_eq!(
        ok(&spool.run(&["list"], &[])),
        "the crontab has no litemaas-backup lines\n"
    );
    ok(&spool.install("ns", &[]));
    let after = spool.file();
    assert_eq!(after, format!("{}\n", our_line(&after, "ns")));
}

#[test]
fn installing_the_same_again_writes_nothing() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    ok(&spool.install("ns", &[]));
    let first = spool.file();
    spool.forget_writes();
    let out = ok(&spool.install("ns", &[]));
    assert!(out.contains("already installed; nothing changed"), "{out}");
    assert!(!spool.written(), "the crontab was written again");
    assert_eq!(spool.file(), first);
}

#[test]
fn installing_with_other_flags_replaces_that_line_in_place() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    ok(&spool.install("ns", &[]));
    let first = spool.file();
    let old = our_line(&first, "ns");
    spool.seed(&format!("{first}0 6 * * * echo after\n"));
    let out = ok(&spool.install("ns", &["--schedule", "15 3 1 * *", "--", "--json"]));
    let after = spool.file();
    let new = our_line(&after, "ns");
    assert!(
        out.contains(&format!(
            "replaced the line for namespace ns:\n- {old}\n+ {new}\n"
        )),
        "{out}"
    );
    assert!(
        new.starts_with("15 3 1 * * ") && new.contains(" --bucket maas-db-backup --json >> "),
        "{new}"
    );
    assert_eq!(after, format!("{OTHERS}{new}\n0 6 * * * echo after\n"));
}

#[test]
fn two_namespaces_and_remove_takes_only_that_line() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    ok(&spool.install("team-a", &[]));
    ok(&spool.install("team-b", &["--schedule", "0 3 1 * *"]));
    let both = spool.file();
    let (a, b) = (our_line(&both, "team-a"), our_line(&both, "team-b"));
    assert_eq!(both, format!("{OTHERS}{a}\n{b}\n"));
    let listed = ok(&spool.run(&["list"], &[]));
    assert_eq!(
        listed,
        format!("team-a (line 8): {a}\nteam-b (line 9): {b}\n")
    );

    let out = ok(&spool.run(&["remove", "--namespace", "team-a"], &[]));
    assert_eq!(
        out,
        format!("removed the line for namespace team-a:\n- {a}\n")
    );
    assert_eq!(spool.file(), format!("{OTHERS}{b}\n"));
    spool.forget_writes();
    let out = ok(&spool.run(&["remove", "--namespace", "team-a"], &[]));
    assert!(
        out.contains("no line for namespace team-a; nothing changed"),
        "{out}"
    );
    assert!(!spool.written());
    ok(&spool.run(&["remove", "--namespace", "team-b"], &[]));
    assert_eq!(spool.file(), OTHERS);
}

#[test]
fn print_changes_nothing() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    let out = ok(&spool.install("ns", &["--print"]));
    assert!(
        out.starts_with("+ 0 2 1 * * /") && out.ends_with("nothing changed (--print)\n"),
        "{out}"
    );
    assert!(!spool.written());
    assert_eq!(spool.file(), OTHERS);

    ok(&spool.install("ns", &[]));
    let installed = spool.file();
    spool.forget_writes();
    let out = ok(&spool.install("ns", &["--print", "--schedule", "@weekly"]));
    assert!(out.contains("\n+ 0 0 * * 0 /"), "{out}");
    let out = ok(&spool.run(&["remove", "--namespace", "ns", "--print"], &[]));
    assert!(
        out.starts_with("- 0 2 1 * * ") && out.ends_with("nothing changed (--print)\n"),
        "{out}"
    );
    assert!(!spool.written());
    assert_eq!(spool.file(), installed);
}

#[test]
fn a_bad_schedule_names_its_field_and_changes_nothing() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    for (schedule, says) in [
        ("61 2 1 * *", "minute field \"61\""),
        ("0 24 1 * *", "hour field \"24\""),
        ("0 2 32 * *", "day of month field \"32\""),
        ("0 2 1 13 *", "month field \"13\""),
        ("0 2 1 * 8", "day of week field \"8\""),
        ("0 2 1 *", "4 field(s)"),
        ("@reboot", "@reboot is not a schedule"),
    ] {
        let e = failed(&spool.install("ns", &["--schedule", schedule]));
        assert!(
            e.contains(&format!("schedule {schedule:?}: {says}")),
            "{schedule}: {e}"
        );
    }
    assert!(!spool.written());
    assert_eq!(spool.file(), OTHERS);
}

#[test]
fn secrets_are_refused_and_never_printed() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    for extra in [
        &[
            "--",
            "--database-url",
            "postgres://litemaas:hunter2@db:5432/litemaas",
        ][..],
        &["--", "--database-url=host=db password=hunter2"],
        &["--", "--aws-secret-access-key", "hunter2"],
    ] {
        let e = failed(&spool.install("ns", extra));
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("password") || e.contains("secret"), "{e}");
    }
    assert!(!spool.written());
    assert_eq!(spool.file(), OTHERS);

    // Credentials in the environment are not copied into the line (and the run does not get them).
    let binary = spool.fake_backup(&spool.dir.path().join("bin/litemaas-backup"));
    let log = spool.dir.path().join("backup.log");
    let output = spool.run(
        &[
            "install",
            "--namespace",
            "ns",
            "--bucket",
            "b",
            "--binary",
            binary.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("LITEMAAS_DATABASE_URL", "postgres://u:hunter2@db/x"),
            ("AWS_PROFILE", "backup"),
        ],
    );
    ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AWS_SECRET_ACCESS_KEY is set here but is not written"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let crontab = spool.file();
    assert!(
        !crontab.contains("hunter2") && !crontab.contains("AKIA"),
        "{crontab}"
    );
    assert!(
        our_line(&crontab, "ns").contains(" AWS_PROFILE=backup /"),
        "{crontab}"
    );
}

#[test]
fn relative_paths_and_bad_names_are_refused() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    spool.fake_backup(&spool.home().join("litemaas-backup"));
    let not_executable = spool.dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let not_executable = not_executable.to_str().unwrap();
    let not_executable_says = format!("--binary {not_executable}: not an executable file");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--binary", "litemaas-backup"],
            "--binary litemaas-backup: a relative path",
        ),
        (
            &["--binary", "/nonexistent/litemaas-backup"],
            "--binary /nonexistent/litemaas-backup: cannot be read",
        ),
        (&["--binary", not_executable], &not_executable_says),
        (
            &["--log-file", "backup.log"],
            "--log-file backup.log: a relative path",
        ),
        (
            &["--log-file", "/nonexistent/backup.log"],
            "the directory /nonexistent does not exist",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["install", "--namespace", "ns", "--bucket", "b"];
        all.extend_from_slice(args);
        let e = failed(&spool.run(&all, &[]));
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let e = failed(&spool.install("Bad_NS", &[]));
    assert!(
        e.contains("namespace \"Bad_NS\" is not a Kubernetes namespace name"),
        "{e}"
    );
    let e = failed(&spool.install("ns", &["--", "--namespace", "other"]));
    assert!(e.contains("argument 1 after -- is --namespace"), "{e}");
    let e = failed(&spool.install("ns", &["--", "--database", "a\\b"]));
    assert!(
        e.contains("argument 2 after -- contains a backslash"),
        "{e}"
    );
    let long = "x".repeat(900);
    let e = failed(&spool.install("ns", &["--", "--database", &long]));
    assert!(
        e.contains("bytes; vixie cron (Debian's) refuses 1000 or more"),
        "{e}"
    );
    assert!(!spool.written());
    assert_eq!(spool.file(), OTHERS);
}

/// The line runs, through cron's `%` handling and `/bin/sh -c`, exactly the binary, arguments
/// and environment that were asked for, and appends its output to the log.
#[test]
fn the_installed_line_runs_what_was_meant_despite_quotes_and_percent() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    let odd = spool.dir.path().join("it's a 100% \"odd\" $HOME dir");
    let binary = spool.fake_backup(&odd.join("litemaas-backup"));
    let logs = spool.dir.path().join("logs 50%");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("backup's.log");
    std::fs::write(spool.home().join("kube config%"), "").unwrap();
    let extra = [
        "--database",
        "db 100%",
        "--snapshot-class",
        "$(touch pwned) `touch pwned2`",
        "--pvc-selector",
        "app=a;b|c&d > x",
        "%",
        "",
        "--json",
    ];
    let mut args = vec![
        "install",
        "--namespace",
        "ns",
        "--bucket",
        "maas-db-backup",
        "--binary",
        binary.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(&extra);
    ok(&spool.run(
        &args,
        &[("KUBECONFIG", "kube config%"), ("AWS_PROFILE", "backup")],
    ));
    let line = our_line(&spool.file(), "ns");

    let mut expected = vec!["--namespace", "ns", "--bucket", "maas-db-backup"];
    expected.extend_from_slice(&extra);
    let kubeconfig = spool.home().join("kube config%");
    for vixie in [true, false] {
        std::fs::write(&log, "earlier run\n").unwrap();
        run_as_cron(&cron_command(&line, vixie), &spool.home());
        assert_eq!(spool.record("argv"), expected, "vixie={vixie}: {line}");
        assert_eq!(
            spool.record("env"),
            [
                format!("KUBECONFIG={}", kubeconfig.display()),
                "AWS_PROFILE=backup".into(),
                "AWS_SECRET_ACCESS_KEY=unset".into(),
            ],
            "vixie={vixie}"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier run\nfake backup: out\nfake backup: err\n",
            "vixie={vixie}"
        );
    }
    assert!(!spool.home().join("pwned").exists() && !spool.home().join("pwned2").exists());
}

/// A person edits the crontab between the tool's read and its write: nothing is written, the
/// person's edit stays, and the error says so. The wrapper is the real crontab plus that edit.
#[test]
fn a_crontab_changed_between_read_and_write_is_not_overwritten() {
    let spool = Spool::new();
    spool.seed(OTHERS);
    let count = spool.dir.path().join("count");
    let wrapper = spool.dir.path().join("crontab-with-a-person.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n\
             if [ \"$n\" = 2 ]; then\n\
               {{ {cmd} -l; echo '0 7 * * * edited-by-a-person'; }} > {count}.new\n\
               {cmd} - < {count}.new\n\
             fi\n\
             exec {cmd} \"$@\"\n",
            count = count.display(),
            cmd = spool.command(),
        ),
    )
    .unwrap();
    let binary = spool.fake_backup(&spool.dir.path().join("bin/litemaas-backup"));
    let output = run_with(
        &format!("/bin/sh {}", wrapper.display()),
        &spool.home(),
        &[
            "install",
            "--namespace",
            "ns",
            "--bucket",
            "b",
            "--binary",
            binary.to_str().unwrap(),
            "--log-file",
            spool.dir.path().join("l.log").to_str().unwrap(),
        ],
        &[],
    );
    let e = failed(&output);
    assert!(
        e.contains("the crontab changed while litemaas-schedule was editing it"),
        "{e}"
    );
    assert_eq!(
        spool.file(),
        format!("{OTHERS}0 7 * * * edited-by-a-person\n")
    );
}

/// Debian's crontab (vixie cron): as root, `crontab -u litemaas-crontest`, a user made for
/// these tests by scripts/test-deps.sh. It checks each line's syntax when installing, keeps a
/// header that `-l` hides, and says "no crontab for USER" when there is none.
#[test]
fn debian_crontab_install_replace_remove() {
    const USER: &str = "litemaas-crontest";
    let have_user = Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_user,
        "user {USER} is missing: run scripts/test-deps.sh as root"
    );
    let crontab = format!("crontab -u {USER}");
    let real = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new("crontab")
            .args(["-u", USER])
            .args(args)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("Debian's crontab: run scripts/test-deps.sh");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    };
    let _ = real(&["-r"], None);
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool {
        dir,
        busybox: PathBuf::new(),
    };
    std::fs::create_dir(spool.home()).unwrap();
    let binary = spool.fake_backup(&spool.dir.path().join("bin 100%/litemaas-backup"));
    // 30 February: should a cron daemon be running, it never runs the test's line.
    let install = |ns: &str, schedule: &str| {
        run_with(
            &crontab,
            &spool.home(),
            &[
                "install",
                "--namespace",
                ns,
                "--bucket",
                "b",
                "--schedule",
                schedule,
                "--binary",
                binary.to_str().unwrap(),
                "--log-file",
                spool.dir.path().join("l.log").to_str().unwrap(),
            ],
            &[],
        )
    };
    let listed = ok(&run_with(&crontab, &spool.home(), &["list"], &[]));
    assert_eq!(listed, "the crontab has no litemaas-backup lines\n");

    let others = "MAILTO=\"\"\n# kept\n\n0 0 30 2 * echo '50%' >/dev/null\n";
    assert!(real(&["-"], Some(others)).status.success());
    ok(&install("team-a", "0 0 30 2 *"));
    ok(&install("team-b", "0 0 30 2 *"));
    let out = ok(&install("team-a", "0 0 30 2 *"));
    assert!(out.contains("nothing changed"), "{out}");
    ok(&install("team-a", "5 0 30 2 *"));
    let listed = String::from_utf8(real(&["-l"], None).stdout).unwrap();
    let (a, b) = (our_line(&listed, "team-a"), our_line(&listed, "team-b"));
    assert!(
        a.starts_with("5 0 30 2 * '/") && a.contains("/bin 100'\\%/litemaas-backup "),
        "{a}"
    );
    assert_eq!(listed, format!("{others}{a}\n{b}\n"));
    ok(&run_with(
        &crontab,
        &spool.home(),
        &["remove", "--namespace", "team-a"],
        &[],
    ));
    ok(&run_with(
        &crontab,
        &spool.home(),
        &["remove", "--namespace", "team-b"],
        &[],
    ));
    let listed = String::from_utf8(real(&["-l"], None).stdout).unwrap();
    assert_eq!(listed, others);
    let _ = real(&["-r"], None);
}

/// Without --binary: the litemaas-backup next to this program, else the first on PATH; made
/// absolute (a relative PATH entry too).
#[test]
fn the_default_binary_is_the_one_beside_this_program_else_on_path() {
    let spool = Spool::new();
    let beside = spool.dir.path().join("beside");
    std::fs::create_dir(&beside).unwrap();
    let schedule = beside.join("litemaas-schedule");
    std::fs::copy(env!("CARGO_BIN_EXE_litemaas-schedule"), &schedule).unwrap();
    let path_dir = spool.home().join("tools");
    spool.fake_backup(&path_dir.join("litemaas-backup"));
    let log = spool.dir.path().join("l.log");
    let install = |ns: &str| {
        let mut command = Command::new(&schedule);
        command
            .args([
                "cron",
                "install",
                "--namespace",
                ns,
                "--bucket",
                "b",
                "--print",
            ])
            .arg("--log-file")
            .arg(&log)
            .current_dir(spool.home())
            .env("LITEMAAS_CRONTAB", spool.command())
            .env("PATH", "/nonexistent:tools:/usr/bin:/bin");
        command.output().unwrap()
    };
    let out = ok(&install("ns"));
    let expected = format!("{} --namespace ns", path_dir.display());
    assert!(
        out.contains(&format!(
            "* * {}/litemaas-backup --namespace",
            path_dir.display()
        )),
        "{out}\nwanted {expected}"
    );

    spool.fake_backup(&beside.join("litemaas-backup"));
    let out = ok(&install("ns"));
    assert!(
        out.contains(&format!(
            "* * {}/litemaas-backup --namespace",
            beside.display()
        )),
        "{out}"
    );

    std::fs::remove_file(beside.join("litemaas-backup")).unwrap();
    std::fs::remove_file(path_dir.join("litemaas-backup")).unwrap();
    let e = failed(&install("ns"));
    assert!(
        e.contains("no litemaas-backup next to this program or on PATH"),
        "{e}"
    );
}

/// A schedule that backs up more than once a day (retention then covers less time), that ORs
/// day of month and day of week, or that never runs is installed with a warning.
#[test]
fn surprising_schedules_are_warned_about() {
    let spool = Spool::new();
    for (schedule, says) in [
        ("*/15 * * * *", "runs 96 times a day"),
        ("0 2 1 * mon", "restricts both day of month and day of week"),
        ("0 2 30 feb *", "names no date that exists"),
    ] {
        let output = spool.install("ns", &["--print", "--schedule", schedule]);
        ok(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{schedule}: {stderr}");
    }
    let output = spool.install("ns", &["--print"]);
    ok(&output);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// A real cron daemon (busybox's crond on the scratch spool, in the foreground) runs the
/// installed line at the next minute: the fake litemaas-backup gets exactly its arguments and
/// its output lands in the log. Waits up to about 70 seconds for the minute to turn.
#[test]
fn a_real_crond_runs_the_installed_line() {
    let spool = Spool::new();
    let binary = spool.fake_backup(&spool.dir.path().join("it's 100% $odd/litemaas-backup"));
    let log = spool.dir.path().join("cron 5%.log");
    let args = [
        "install",
        "--namespace",
        "ns",
        "--bucket",
        "maas-db-backup",
        "--schedule",
        "* * * * *",
        "--binary",
        binary.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
        "--",
        "--database",
        "db 100%",
        "--json",
    ];
    ok(&spool.run(&args, &[]));
    let crond_log = spool.dir.path().join("crond.log");
    let mut crond = Command::new(&spool.busybox)
        .args(["crond", "-f", "-l", "8", "-L"])
        .arg(&crond_log)
        .arg("-c")
        .arg(spool.spool())
        .spawn()
        .unwrap();
    let argv = spool.dir.path().join("record.argv");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(75);
    while !(argv.exists() && log.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500)); // let the job finish writing
    let _ = crond.kill();
    let _ = crond.wait();
    assert!(
        argv.exists(),
        "crond did not run the line; its log:\n{}",
        std::fs::read_to_string(&crond_log).unwrap_or_default()
    );
    assert_eq!(
        spool.record("argv"),
        [
            "--namespace",
            "ns",
            "--bucket",
            "maas-db-backup",
            "--database",
            "db 100%",
            "--json"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "fake backup: out\nfake backup: err\n"
    );
}
