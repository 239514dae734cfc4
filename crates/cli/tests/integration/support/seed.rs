//! The seed's Step 1..4 Dockerfiles and what their pip step needs, shared by the build
//! and advisor tests.

use std::process::Command;

/// The seed's Dockerfiles, as `/work/shared/bench/peers.sh gen` writes them,
/// on a local Debian base.
pub fn seed_dockerfiles(base: &str) -> Vec<(&'static str, String)> {
    let tail = "COPY . /app\nWORKDIR /app\nRUN pip install --break-system-packages -r requirements.txt\nEXPOSE 5000\nENTRYPOINT [\"python3\"]\nCMD [\"application.py\"]\n";
    vec![
        (
            "v1",
            format!(
                "FROM {base}\nRUN apt-get update -y\nRUN apt-get install -y python3-pip python3-dev build-essential\n{tail}"
            ),
        ),
        (
            "v2",
            format!(
                "FROM {base}\nRUN apt-get update -y && apt-get install -y python3-pip python3-dev build-essential\n{tail}"
            ),
        ),
        (
            "v3",
            format!(
                "FROM {base}\nRUN apt-get update -y && apt-get install -y --no-install-recommends python3-pip python3-dev build-essential && rm -rf /var/lib/apt/lists/*\n{tail}"
            ),
        ),
        (
            "v4",
            format!(
                "FROM {base} AS build\n\
                 RUN apt-get update -y && apt-get install -y --no-install-recommends python3-pip python3-dev build-essential && rm -rf /var/lib/apt/lists/*\n\
                 COPY requirements.txt /app/\n\
                 WORKDIR /app\n\
                 RUN pip install --break-system-packages -r requirements.txt\n\
                 \n\
                 FROM {base}\n\
                 RUN apt-get update -y && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*\n\
                 COPY --from=build /usr/local/lib/python3.11/dist-packages /usr/local/lib/python3.11/dist-packages\n\
                 COPY . /app\n\
                 WORKDIR /app\n\
                 EXPOSE 5000\n\
                 ENTRYPOINT [\"python3\"]\n\
                 CMD [\"application.py\"]\n"
            ),
        ),
    ]
}

/// pip's index hosts, asked of the host's pip (as peers.sh does): TLS to them
/// goes through an intercepting proxy whose CA the image does not trust.
pub fn pip_trusted_hosts() -> (String, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import urllib.parse, pip._internal.models.index as m; print(urllib.parse.urlparse(m.PyPI.url).netloc, m.PyPI.file_storage_domain)",
        ])
        .output()
        .expect("run python3 (with pip) to learn the index hosts");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(a), Some(b)) if out.status.success() => (a.to_owned(), b.to_owned()),
        _ => panic!(
            "cannot ask pip for its index hosts: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
