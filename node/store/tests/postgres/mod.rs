//! A throwaway PostgreSQL server for the engine suites: a cluster made with `initdb` in a
//! temporary folder, serving only a Unix socket there (no TCP port), stopped and removed with
//! the folder. It needs PostgreSQL's server binaries (Debian: `apt-get install postgresql`);
//! `TOCSIN_PG_BINDIR` names their folder when they are elsewhere. Run as root, the server runs as
//! the `postgres` user, which it insists on.
// Each suite that includes this module uses part of it.
#![allow(dead_code)]

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct PgServer {
    dir: tempfile::TempDir,
    /// The socket's folder, short and under `/tmp` whatever `TMPDIR` is: a Unix socket's path
    /// may not be longer than 107 bytes.
    socket: tempfile::TempDir,
    bin: PathBuf,
    /// The uid and gid the server runs as, when not the test's own.
    owner: Option<(u32, u32)>,
    server: Option<Child>,
}

impl PgServer {
    pub fn start() -> Self {
        let bin = bindir();
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = tempfile::Builder::new().prefix("pg").tempdir_in("/tmp").expect("socket dir");
        let owner = server_owner();
        if let Some((uid, gid)) = owner {
            for folder in [dir.path(), socket.path()] {
                std::os::unix::fs::chown(folder, Some(uid), Some(gid)).expect("chown the server's folders");
            }
        }
        let mut pg = Self { dir, socket, bin, owner, server: None };
        let status = pg
            .command("initdb")
            .args(["--auth=trust", "--username=tocsin", "--no-sync", "--encoding=UTF8", "--locale=C", "-D"])
            .arg(pg.data())
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        pg.run();
        pg
    }

    /// libpq connection parameters for the server's socket.
    pub fn conninfo(&self) -> String {
        format!("host={} user=tocsin dbname=postgres", self.socket.path().display())
    }

    /// Stops the server as a crash does: SIGQUIT, PostgreSQL's immediate shutdown, ends every
    /// server process at once without a checkpoint. The next start recovers from the WAL.
    pub fn crash(&mut self) {
        self.signal("QUIT");
    }

    pub fn restart(&mut self) {
        self.run();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&mut self) {
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(self.socket.path())
            .args(["-c", "listen_addresses=", "-c", "fsync=on", "-c", "synchronous_commit=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.socket.path())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not accept connections within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut server) = self.server.take() else { return };
        let _ = Command::new("kill").args([&format!("-{signal}"), &server.id().to_string()]).status();
        let _ = server.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: the fast shutdown.
        self.signal("INT");
    }
}

fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TOCSIN_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    // Debian keeps each major version's server binaries apart; the newest is taken.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries were not found in /usr/lib/postgresql/*/bin (Debian: apt-get install \
             postgresql), nor named by TOCSIN_PG_BINDIR"
        )
    })
}

/// The `postgres` account's uid and gid when the tests run as root (PostgreSQL refuses root).
fn server_owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    let owner = id(&["-u", "postgres"]).zip(id(&["-g", "postgres"]));
    Some(
        owner.expect("running as root, the PostgreSQL server needs the `postgres` account (Debian's package makes it)"),
    )
}
