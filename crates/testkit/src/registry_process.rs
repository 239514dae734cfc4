//! Real `docker-registry` processes for tests.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's distribution registry (package docker-registry).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Panics unless `path` exists, naming the Debian package that provides it.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} package (these tests never skip)"
    );
}

/// A free TCP port on 127.0.0.1 (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Runs `command`, panicking with its output unless it succeeds; returns stdout.
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

/// A running docker-registry with its storage in a temporary directory;
/// killed and reaped on drop.
pub struct RegistryProcess {
    child: Child,
    /// The registry's directory: config, storage, log, TLS files.
    pub dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
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
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let process = RegistryProcess {
            child,
            dir,
            port,
            ca_file,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!(
            "docker-registry did not listen on {} within 20 s:\n{log}",
            self.port
        );
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

/// Writes `ca.crt`, `server.crt`, `server.key` (SAN 127.0.0.1, localhost) in
/// `dir`; returns the CA's path.
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
