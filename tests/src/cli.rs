//! One-shot `wasmgate` commands (`plugin check`, `push`, `pull`, `convert`, `validate`): run the
//! real binary, feed stdin, collect exit code and output, bounded in time.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::wasmgate_bin;

/// Longest a one-shot command may take (a registry fetch is bounded by 30 s in the fetcher).
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// What a command did.
#[derive(Debug)]
pub struct Output {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Both streams, for assertions about what a user sees anywhere.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A `wasmgate` invocation with a hermetic environment: no `WASMGATE_*` variables and no docker
/// config unless the test sets them.
pub struct Cli {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Cli {
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(wasmgate_bin());
        cmd.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WASMGATE_") {
                cmd.env_remove(&key);
            }
        }
        // An empty docker config directory: credentials only when a test writes them.
        cmd.env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("wasmgate-e2e-no-docker-config"),
        );
        Self { cmd, stdin: None }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Runs to completion (killed after [`COMMAND_DEADLINE`]).
    pub fn run(mut self) -> Output {
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn wasmgate");
        if let Some(data) = self.stdin.take() {
            let mut pipe = child.stdin.take().expect("stdin");
            // A command that exits before reading closes the pipe; that is its business.
            let _ = pipe.write_all(&data);
        }
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let out = read(Box::new(child.stdout.take().expect("stdout")));
        let err = read(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("wasmgate did not finish within {COMMAND_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }
}

/// Runs `wasmgate <args>` with the hermetic environment of [`Cli::new`].
pub fn wasmgate<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Cli::new(args).run()
}
