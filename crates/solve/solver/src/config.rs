//! Config-only instructions: how ENV, LABEL, CMD, ENTRYPOINT, EXPOSE, USER,
//! WORKDIR, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER and ARG
//! change the image config, and the history line each one leaves, written as
//! Docker's BuildKit writes it.

use std::collections::BTreeMap;
use std::time::Duration;

use stowage_dockerfile::Instruction;
use stowage_dockerfile::instructions::{
    CommandLine, Healthcheck as HealthcheckInstruction, KeyValue, PortSpec, Protocol,
};
use stowage_image::{ContainerConfig, EmptyObject, Healthcheck, ImageConfig};

/// The shell Linux images use when the config sets none.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The PATH a container gets when its image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A config instruction that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// An EXPOSE port that does not parse.
    #[error("invalid EXPOSE port: {0}")]
    InvalidPort(String),
    /// VOLUME with an empty path.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// A STOPSIGNAL that is no signal.
    #[error("invalid STOPSIGNAL {0:?}: use a signal name like SIGTERM or a number")]
    InvalidSignal(String),
    /// The instruction is not config-only.
    #[error("{0} is not a config instruction")]
    NotConfig(&'static str),
}

/// Per-stage facts the config rules depend on.
#[derive(Debug, Clone, Default)]
pub struct StageFlags {
    /// Whether a CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

/// The shell a shell-form command runs under: the config's SHELL or `/bin/sh -c`.
pub fn shell_of(config: &ContainerConfig) -> Vec<String> {
    match &config.shell {
        Some(shell) if !shell.is_empty() => shell.clone(),
        _ => DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The argv of a command line: exec form as it is, shell form under the shell.
pub fn argv_of(command: &CommandLine, config: &ContainerConfig) -> Vec<String> {
    match command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(text) => {
            let mut argv = shell_of(config);
            argv.push(text.clone());
            argv
        }
    }
}

/// Sets or replaces `key` in a `KEY=value` list, keeping its position.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for existing in env.iter_mut() {
        let existing_key = existing
            .split_once('=')
            .map_or(existing.as_str(), |(k, _)| k);
        if existing_key == key {
            *existing = entry;
            return;
        }
    }
    env.push(entry);
}

/// Joins `path` onto the working directory as WORKDIR does, and cleans it.
pub fn resolve_workdir(current: Option<&str>, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{}", current.unwrap_or("/"), path)
    };
    clean_path(&joined)
}

/// `path.Clean` for absolute paths.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `strconv.Quote`, enough for history lines.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn protocol_name(protocol: &Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Expands EXPOSE words into `port/proto` keys.
pub fn exposed_ports(words: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut ports = Vec::new();
    for word in words {
        let spec = PortSpec::parse(word).map_err(ConfigError::InvalidPort)?;
        for port in spec.start..=spec.end {
            ports.push(format!("{port}/{}", protocol_name(&spec.protocol)));
        }
    }
    Ok(ports)
}

fn nanos(duration: &Option<Duration>) -> Option<i64> {
    duration.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn format_labels(pairs: &[KeyValue]) -> String {
    pairs
        .iter()
        .map(|kv| format!(" {}={}", kv.key, kv.value))
        .collect()
}

/// Known signal names, for STOPSIGNAL validation.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

fn valid_signal(signal: &str) -> bool {
    if let Ok(number) = signal.parse::<u32>() {
        return (1..=64).contains(&number);
    }
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    SIGNALS.contains(&name)
        || name
            .strip_prefix("RTMIN+")
            .or_else(|| name.strip_prefix("RTMAX-"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 30)
        || name == "RTMIN"
        || name == "RTMAX"
}

/// Applies one config-only instruction (already expanded) to `image`, and
/// returns the history `created_by` line it leaves. ARG values are given
/// resolved, in `arg_values`.
pub fn apply(
    image: &mut ImageConfig,
    flags: &mut StageFlags,
    instruction: &Instruction,
    arg_values: &BTreeMap<String, Option<String>>,
) -> Result<String, ConfigError> {
    let config = &mut image.config;
    let created_by = match instruction {
        Instruction::Env(pairs) => {
            let env = config.env.get_or_insert_with(Vec::new);
            let mut line = String::from("ENV");
            for kv in pairs {
                set_env(env, &kv.key, &kv.value);
                line.push_str(&format!(" {}={}", kv.key, kv.value));
            }
            line
        }
        Instruction::Label(pairs) => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for kv in pairs {
                labels.insert(kv.key.clone(), kv.value.clone());
            }
            format!("LABEL{}", format_labels(pairs))
        }
        Instruction::Maintainer(name) => {
            image.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        Instruction::Cmd(command) => {
            let argv = argv_of(command, config);
            config.cmd = Some(argv.clone());
            flags.cmd_set = true;
            format!("CMD {}", go_quoted_list(&argv))
        }
        Instruction::Entrypoint(command) => {
            let argv = argv_of(command, config);
            config.entrypoint = Some(argv.clone());
            if !flags.cmd_set {
                config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quoted_list(&argv))
        }
        Instruction::Expose(words) => {
            let ports = exposed_ports(words)?;
            let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut map_text = Vec::new();
            for port in &ports {
                exposed.insert(port.clone(), EmptyObject {});
            }
            let mut sorted = ports.clone();
            sorted.sort();
            sorted.dedup();
            for port in sorted {
                map_text.push(format!("{port}:{{}}"));
            }
            format!("EXPOSE map[{}]", map_text.join(" "))
        }
        Instruction::User(user) => {
            config.user = Some(user.clone());
            format!("USER {user}")
        }
        Instruction::Workdir(path) => {
            let resolved = resolve_workdir(config.working_dir.as_deref(), path);
            config.working_dir = Some(resolved.clone());
            format!("WORKDIR {resolved}")
        }
        Instruction::Volume(paths) => {
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for path in paths {
                if path.is_empty() {
                    return Err(ConfigError::EmptyVolume);
                }
                volumes.insert(path.clone(), EmptyObject {});
            }
            format!("VOLUME {}", go_plain_list(paths))
        }
        Instruction::StopSignal(signal) => {
            if !valid_signal(signal) {
                return Err(ConfigError::InvalidSignal(signal.clone()));
            }
            config.stop_signal = Some(signal.clone());
            format!("STOPSIGNAL {signal}")
        }
        Instruction::Healthcheck(health) => {
            let check = match health {
                HealthcheckInstruction::None => Healthcheck {
                    test: Some(vec!["NONE".to_owned()]),
                    ..Healthcheck::default()
                },
                HealthcheckInstruction::Cmd {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => {
                    let test = match command {
                        CommandLine::Shell(text) => vec!["CMD-SHELL".to_owned(), text.clone()],
                        CommandLine::Exec(args) => {
                            let mut test = vec!["CMD".to_owned()];
                            test.extend(args.iter().cloned());
                            test
                        }
                    };
                    Healthcheck {
                        test: Some(test),
                        interval: nanos(interval),
                        timeout: nanos(timeout),
                        start_period: nanos(start_period),
                        start_interval: nanos(start_interval),
                        retries: retries.map(i64::from),
                    }
                }
            };
            let line = format!(
                "HEALTHCHECK &{{{} {:?} {:?} {:?} {:?} {}}}",
                go_quoted_list(check.test.as_deref().unwrap_or_default()),
                go_duration(check.interval),
                go_duration(check.timeout),
                go_duration(check.start_period),
                go_duration(check.start_interval),
                check.retries.unwrap_or(0)
            );
            config.healthcheck = Some(check);
            line
        }
        Instruction::Shell(shell) => {
            config.shell = Some(shell.clone());
            format!("SHELL {}", go_plain_list(shell))
        }
        Instruction::Onbuild { expression, .. } => {
            config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expression.clone());
            format!("ONBUILD {expression}")
        }
        Instruction::Arg(definitions) => {
            let parts: Vec<String> = definitions
                .iter()
                .map(|d| match arg_values.get(&d.name).cloned().flatten() {
                    Some(value) => format!("{}={value}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            format!("ARG {}", parts.join(" "))
        }
        Instruction::From(_) => return Err(ConfigError::NotConfig("FROM")),
        Instruction::Run(_) => return Err(ConfigError::NotConfig("RUN")),
        Instruction::Copy(_) => return Err(ConfigError::NotConfig("COPY")),
        Instruction::Add(_) => return Err(ConfigError::NotConfig("ADD")),
    };
    Ok(created_by)
}

/// Go's `time.Duration` text (`30s`, `1m30s`, `0s`), as history prints it.
fn go_duration(nanos: Option<i64>) -> String {
    let total = nanos.unwrap_or(0);
    if total == 0 {
        return "0s".to_owned();
    }
    let seconds = total / 1_000_000_000;
    let fraction = total % 1_000_000_000;
    let (hours, rest) = (seconds / 3600, seconds % 3600);
    let (minutes, secs) = (rest / 60, rest % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if fraction == 0 {
        out.push_str(&format!("{secs}s"));
    } else {
        let frac = format!("{fraction:09}");
        out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_dockerfile::instructions::ArgDefinition;

    fn image() -> ImageConfig {
        ImageConfig::default()
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn env_replaces_in_place_and_history_matches_buildkit() {
        let mut img = image();
        img.config.env = Some(vec!["PATH=/bin".into(), "A=1".into()]);
        let mut flags = StageFlags::default();
        let line = apply(
            &mut img,
            &mut flags,
            &Instruction::Env(vec![kv("PATH", "/usr/bin"), kv("B", "2")]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(line, "ENV PATH=/usr/bin B=2");
        assert_eq!(img.config.env.unwrap(), vec!["PATH=/usr/bin", "A=1", "B=2"]);
    }

    #[test]
    fn cmd_entrypoint_and_shell() {
        let mut img = image();
        let mut flags = StageFlags::default();
        let none = BTreeMap::new();
        img.config.cmd = Some(vec!["base".into()]);
        let line = apply(
            &mut img,
            &mut flags,
            &Instruction::Entrypoint(CommandLine::Exec(vec!["python3".into()])),
            &none,
        )
        .unwrap();
        assert_eq!(line, r#"ENTRYPOINT ["python3"]"#);
        assert_eq!(img.config.cmd, None, "ENTRYPOINT resets an inherited CMD");
        let line = apply(
            &mut img,
            &mut flags,
            &Instruction::Cmd(CommandLine::Shell("echo \"hi\"".into())),
            &none,
        )
        .unwrap();
        assert_eq!(line, r#"CMD ["/bin/sh" "-c" "echo \"hi\""]"#);
        apply(
            &mut img,
            &mut flags,
            &Instruction::Shell(vec!["/bin/bash".into(), "-ec".into()]),
            &none,
        )
        .unwrap();
        apply(
            &mut img,
            &mut flags,
            &Instruction::Entrypoint(CommandLine::Shell("run".into())),
            &none,
        )
        .unwrap();
        assert_eq!(
            img.config.entrypoint.unwrap(),
            vec!["/bin/bash", "-ec", "run"]
        );
        assert!(img.config.cmd.is_some(), "CMD set in this stage is kept");
    }

    #[test]
    fn expose_workdir_volume_label_user_signal_arg() {
        let mut img = image();
        let mut flags = StageFlags::default();
        let mut args = BTreeMap::new();
        args.insert("V".to_owned(), Some("1.0".to_owned()));
        args.insert("U".to_owned(), None);
        let steps: Vec<(Instruction, &str)> = vec![
            (
                Instruction::Expose(vec!["5000".into(), "53/UDP".into(), "8000-8001".into()]),
                "EXPOSE map[5000/tcp:{} 53/udp:{} 8000/tcp:{} 8001/tcp:{}]",
            ),
            (Instruction::Workdir("/app".into()), "WORKDIR /app"),
            (
                Instruction::Workdir("sub/../src".into()),
                "WORKDIR /app/src",
            ),
            (Instruction::Volume(vec!["/data".into()]), "VOLUME [/data]"),
            (
                Instruction::Label(vec![kv("maintainer", "jesang.myung@samsung.com")]),
                "LABEL maintainer=jesang.myung@samsung.com",
            ),
            (Instruction::User("app:app".into()), "USER app:app"),
            (
                Instruction::StopSignal("SIGINT".into()),
                "STOPSIGNAL SIGINT",
            ),
            (
                Instruction::Arg(vec![
                    ArgDefinition {
                        name: "V".into(),
                        default: None,
                    },
                    ArgDefinition {
                        name: "U".into(),
                        default: None,
                    },
                ]),
                "ARG V=1.0 U",
            ),
        ];
        for (instruction, want) in steps {
            assert_eq!(
                apply(&mut img, &mut flags, &instruction, &args).unwrap(),
                want
            );
        }
        let c = &img.config;
        assert_eq!(c.working_dir.as_deref(), Some("/app/src"));
        assert_eq!(c.exposed_ports.as_ref().unwrap().len(), 4);
        assert!(c.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(c.user.as_deref(), Some("app:app"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert!(matches!(
            apply(
                &mut img,
                &mut flags,
                &Instruction::StopSignal("SIGNOPE".into()),
                &args
            ),
            Err(ConfigError::InvalidSignal(_))
        ));
        assert!(matches!(
            apply(
                &mut img,
                &mut flags,
                &Instruction::Expose(vec!["x".into()]),
                &args
            ),
            Err(ConfigError::InvalidPort(_))
        ));
    }

    #[test]
    fn healthcheck_forms() {
        let mut img = image();
        let mut flags = StageFlags::default();
        let line = apply(
            &mut img,
            &mut flags,
            &Instruction::Healthcheck(HealthcheckInstruction::Cmd {
                command: CommandLine::Shell("curl -f http://localhost/".into()),
                interval: Some(Duration::from_secs(5)),
                timeout: Some(Duration::from_millis(1500)),
                start_period: None,
                start_interval: None,
                retries: Some(3),
            }),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            line,
            r#"HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/"] "5s" "1.5s" "0s" "0s" 3}"#
        );
        let check = img.config.healthcheck.clone().unwrap();
        assert_eq!(check.interval, Some(5_000_000_000));
        assert_eq!(check.retries, Some(3));
        apply(
            &mut img,
            &mut flags,
            &Instruction::Healthcheck(HealthcheckInstruction::None),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            img.config.healthcheck.unwrap().test.unwrap(),
            vec!["NONE".to_owned()]
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Some(90_000_000_000)), "1m30s");
        assert_eq!(go_duration(Some(3_600_000_000_000)), "1h0m0s");
        assert_eq!(go_duration(None), "0s");
    }
}
