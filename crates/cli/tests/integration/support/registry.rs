//! Registry-side helpers for the pull/push tests: real `docker-registry`
//! instances on free ports (plain, or htpasswd + TLS under a CA generated with
//! `openssl`), a scriptable fake HTTP registry for failure modes, a busybox
//! rootfs tarball made from `/bin/busybox`, and a `stowage` command builder
//! with its own store root and Docker config. Missing binaries make the tests
//! fail with a clear message; they never skip.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";
pub const BUSYBOX_BIN: &str = "/bin/busybox";

/// Panics unless `path` exists (tests must not skip).
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} package (these tests never skip)"
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn run_ok(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A running docker-registry, killed on drop.
pub struct RegistryProcess {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The CA certificate when started with TLS.
    pub ca_file: Option<PathBuf>,
}

impl RegistryProcess {
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Plain HTTP, no auth.
    pub fn start_plain() -> Self {
        Self::start(None)
    }

    /// htpasswd auth for `user`/`pass` and TLS under a fresh CA.
    pub fn start_secure(user: &str, pass: &str) -> Self {
        Self::start(Some((user, pass)))
    }

    fn start(secure: Option<(&str, &str)>) -> Self {
        require(REGISTRY_BIN, "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let mut ca_file = None;
        if let Some((user, pass)) = secure {
            require("/usr/bin/htpasswd", "apache2-utils");
            require("/usr/bin/openssl", "openssl");
            ca_file = Some(make_tls_files(dir.path()));
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, htpasswd).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RegistryProcess {
            child,
            dir,
            port,
            ca_file,
        }
    }

    /// A certs directory (`<dir>/127.0.0.1:<port>/ca.crt`) trusting this registry's CA.
    pub fn certs_dir(&self) -> PathBuf {
        let ca = self.ca_file.as_ref().expect("a TLS registry");
        let root = self.dir.path().join("certs.d");
        let host_dir = root.join(self.host());
        std::fs::create_dir_all(&host_dir).expect("mkdir certs.d");
        std::fs::copy(ca, host_dir.join("ca.crt")).expect("copy CA");
        root
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `ca.crt`, `server.crt`, `server.key` (SAN 127.0.0.1, localhost) in `dir`.
fn make_tls_files(dir: &Path) -> PathBuf {
    let p = |name: &str| dir.join(name).display().to_string();
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
        "-subj",
        "/CN=stowage test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    run_ok(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run_ok(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &p("server.crt"),
        "-extfile",
        &p("ext.cnf"),
    ]));
    dir.join("ca.crt")
}

/// A tiny busybox root filesystem tar (`/bin/busybox`, `/bin/sh` and `/bin/echo`
/// links, `/etc/passwd`) built from the host's static busybox.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    require(BUSYBOX_BIN, "busybox-static");
    let busybox = std::fs::read(BUSYBOX_BIN).expect("read busybox");
    let path = dir.join("busybox-rootfs.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create tar"));
    let dir_header = |name: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(946_684_800);
        header.set_cksum();
        (header, name.to_owned())
    };
    for name in ["bin/", "etc/"] {
        let (mut header, name) = dir_header(name);
        builder
            .append_data(&mut header, name, std::io::empty())
            .expect("dir");
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .expect("busybox");
    for applet in ["sh", "echo", "cat"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(946_684_800);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("link");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, "etc/passwd", passwd.as_slice())
        .expect("passwd");
    builder.into_inner().expect("finish tar");
    path
}

/// A `stowage` command with its own store root and Docker config directory.
pub struct Stowage {
    pub root: PathBuf,
    pub docker_config: PathBuf,
    pub certs_dir: Option<PathBuf>,
}

impl Stowage {
    /// Fresh root and Docker config below `dir`.
    pub fn new(dir: &Path) -> Self {
        let root = dir.join("root");
        let docker_config = dir.join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("mkdir docker config");
        Stowage {
            root,
            docker_config,
            certs_dir: None,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env(
                "STOWAGE_REGISTRY_CERTS_DIR",
                self.certs_dir
                    .clone()
                    .unwrap_or_else(|| self.root.join("no-certs.d")),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs and returns the output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stowage")
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stowage");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait stowage")
    }

    /// Runs and panics with the output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stowage {args:?} failed:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "stowage {args:?} succeeded but should fail:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn store(&self) -> stowage_store::Store {
        stowage_store::Store::open(&self.root).expect("open store")
    }

    /// Panics unless the store verifies clean.
    pub fn assert_store_verifies(&self) {
        let report = self.store().verify().expect("verify");
        assert!(
            report.is_ok(),
            "store does not verify: {:?}",
            report.problems
        );
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A request seen by the fake server.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&SeenRequest) -> Vec<u8> + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 answering with
/// whatever bytes the handler returns (then closing, which also models resets).
pub struct FakeRegistry {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    pub fn start(handler: impl Fn(&SeenRequest) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve_one(stream, &handler, &requests);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeRegistry {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(
    stream: TcpStream,
    handler: &Arc<Handler>,
    requests: &Arc<Mutex<Vec<SeenRequest>>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.trim_end().split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length: u64 = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
    let request = SeenRequest {
        method,
        path,
        headers,
    };
    requests.lock().expect("lock").push(request.clone());
    let response = handler(&request);
    let mut stream = stream;
    stream.write_all(&response)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// A full HTTP response; adds `Content-Length` of `body` unless `headers` has one.
pub fn http_response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    let mut has_length = false;
    for (k, v) in headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
