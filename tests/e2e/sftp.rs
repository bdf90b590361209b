//! The SFTP backend against a real OpenSSH server: `sshd` (Debian
//! `openssh-server`, installed by `.ci/run`) started by the test on a free
//! loopback port, with a throwaway host key and user key, logging in as the
//! test's own user. The client is the system `ssh`, given a config of the
//! test's own through a wrapper first in `PATH`, so the user's `~/.ssh`
//! (known_hosts above all) is neither read nor written.
//!
//! Skipped, with a note, where `sshd` is missing or cannot run.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    /// Holds the keys, the configs and the `ssh` wrapper.
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", s(path)])
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", describe(&out));
}

impl Sshd {
    fn start(dir: &Path) -> Option<Sshd> {
        if !Path::new(SSHD).exists() {
            super::util::skip_note(format!("note: {SSHD} is missing (Debian openssh-server); test skipped"));
            return None;
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output().ok()?.stdout)
            .ok()?
            .trim()
            .to_string();
        fs::create_dir_all(dir).unwrap();
        // sshd refuses keys and configs others can write.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nAllowUsers {user}\n\
             Subsystem sftp internal-sftp\n",
            d = dir.display()
        );
        fs::write(dir.join("sshd_config"), config).unwrap();
        if is_root() {
            // sshd's privilege separation directory.
            let _ = fs::create_dir_all("/run/sshd");
        }
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f", s(&dir.join("sshd_config"))])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("sshd.log")).unwrap());
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                super::util::skip_note(format!("note: cannot start sshd ({e}); test skipped"));
                return None;
            }
        };
        let mut sshd = Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                super::util::skip_note(format!(
                    "note: sshd cannot run here ({status}): {}; test skipped",
                    fs::read_to_string(dir.join("sshd.log")).unwrap_or_default().trim()
                ));
                return None;
            }
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }

        // The client side: known_hosts with the throwaway host key, and a
        // wrapper that gives the system ssh this config instead of ~/.ssh.
        let host_pub = fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {kind} {key}\n")).unwrap();
        fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  IdentitiesOnly yes\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let real_ssh = which("ssh").expect("ssh on PATH");
        fs::write(
            bin.join("ssh"),
            format!(
                "#!/bin/sh\nexec {} -F {}/ssh_config \"$@\"\n",
                real_ssh.display(),
                dir.display()
            ),
        )
        .unwrap();
        fs::set_permissions(bin.join("ssh"), fs::Permissions::from_mode(0o755)).unwrap();
        sshd.dir = dir.to_path_buf();
        Some(sshd)
    }

    /// A handle on `sftp:127.0.0.1:PORT:PATH` through this server.
    fn snap(&self, path: &Path) -> Snap {
        let mut snap = Snap::new();
        snap.repo = PathBuf::from(format!("sftp:127.0.0.1:{}:{}", self.port, path.display()));
        let path_var = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        snap.env.push(("PATH".into(), path_var));
        // openssh keeps its control socket under the state directory.
        snap.env
            .push(("XDG_STATE_HOME".into(), s(&self.dir.join("state")).to_string()));
        snap
    }

    fn key_option(&self) -> String {
        format!("key={}", self.dir.join("user_key").display())
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[test]
fn a_repository_on_an_sftp_server() {
    let work = tempdir();
    let Some(sshd) = Sshd::start(&work.path().join("sshd")) else {
        return;
    };
    let remote_dir = work.path().join("nas/backups");
    let snap = sshd.snap(&remote_dir);
    let key = sshd.key_option();
    snap.init_repo(&["-o", &key, "--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    // The layout is the local one: the directory opens as a local repository.
    for dir in ["keys", "index", "snapshots", "locks", "data"] {
        assert!(remote_dir.join(dir).is_dir(), "{dir}");
    }
    assert!(remote_dir.join("config").is_file());

    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random_file(&src.join(format!("f{i}.bin")), 600_000, 100 + i);
    }
    fs::write(src.join("note.txt"), b"on the nas\n").unwrap();
    set_tree_times(&src);
    snap.create(&["-o", &key, s(&src)]);
    let target = work.path().join("out");
    assert_code(&snap.restore("latest", &target, &["-o", &key]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    snap.ok(&["-o", &key, "verify", "--read-data"]);

    // No temporary file is left under data/ (writes go through .tmp- names).
    let leftovers: Vec<_> = files_under(&remote_dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".tmp-")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let mut local = Snap::new();
    local.repo = remote_dir.clone();
    local.ok(&["verify", "--read-data"]);
    assert_eq!(local.snapshots().len(), 1);

    // Without the key (and no agent), the login is refused: an error, no prompt.
    let out = snap.run(&["-o", "timeout=10", "snapshots"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!panicked(&out), "{}", describe(&out));
}
