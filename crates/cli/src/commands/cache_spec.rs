//! `--cache-from` / `--cache-to` values, in docker buildx's comma-separated
//! `key=value` form, plus the plain `--cache-from IMAGE` form.
//!
//! - `--cache-from IMAGE`: an image (local, else read from its registry).
//! - `--cache-from type=registry,ref=REF`: a cache export or an image in a registry.
//! - `--cache-to type=registry,ref=REF[,mode=min|max][,ignore-error=true|false]`.
//! - `--cache-to type=inline`: accepted and does nothing more, since every
//!   image stowage builds carries its layers' cache keys in its config.
//!
//! Without `type=`, the type is `registry`. Unknown types and keys are errors
//! that say what is accepted.

use std::collections::BTreeMap;

/// A parsed `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFromSpec {
    /// `--cache-from IMAGE`: the store's image if it has one, else the registry's.
    Image(String),
    /// `type=registry,ref=REF`: always read from the registry.
    Registry(String),
}

/// Which steps `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The final image's layers.
    Min,
    /// Every built stage's layers.
    Max,
}

/// A parsed `--cache-to` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheToSpec {
    /// `type=registry`.
    Registry {
        /// Where the cache goes.
        reference: String,
        /// Which steps.
        mode: CacheMode,
        /// Whether a failed export is only a warning.
        ignore_error: bool,
    },
    /// `type=inline`: the image config carries the keys anyway.
    Inline,
}

impl CacheToSpec {
    /// Whether a failed export is only a warning (`ignore-error=true`).
    pub fn ignores_errors(&self) -> bool {
        matches!(
            self,
            CacheToSpec::Registry {
                ignore_error: true,
                ..
            }
        )
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpecError {
    flag: &'static str,
    value: String,
    detail: String,
}

impl std::fmt::Display for CacheSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.flag, self.value, self.detail)
    }
}

impl std::error::Error for CacheSpecError {}

fn fields(flag: &'static str, value: &str) -> Result<BTreeMap<String, String>, CacheSpecError> {
    let error = |detail: String| CacheSpecError {
        flag,
        value: value.to_owned(),
        detail,
    };
    let mut map = BTreeMap::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, field) = part
            .split_once('=')
            .ok_or_else(|| error(format!("{part:?} is not KEY=VALUE")))?;
        let key = key.trim().to_ascii_lowercase();
        if map.insert(key.clone(), field.trim().to_owned()).is_some() {
            return Err(error(format!("{key} is given twice")));
        }
    }
    Ok(map)
}

fn check_type(
    flag: &'static str,
    value: &str,
    map: &mut BTreeMap<String, String>,
    accepted: &[&str],
) -> Result<String, CacheSpecError> {
    let kind = map
        .remove("type")
        .unwrap_or_else(|| "registry".to_owned())
        .to_ascii_lowercase();
    if accepted.contains(&kind.as_str()) {
        return Ok(kind);
    }
    Err(CacheSpecError {
        flag,
        value: value.to_owned(),
        detail: format!(
            "type={kind} is not supported; use {} (type=local, gha, s3 and azblob are not implemented)",
            accepted
                .iter()
                .map(|t| format!("type={t}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    })
}

fn reject_unknown(
    flag: &'static str,
    value: &str,
    map: &BTreeMap<String, String>,
    known: &str,
) -> Result<(), CacheSpecError> {
    match map.keys().next() {
        Some(key) => Err(CacheSpecError {
            flag,
            value: value.to_owned(),
            detail: format!("unknown key {key:?} (accepted: {known})"),
        }),
        None => Ok(()),
    }
}

fn required_ref(
    flag: &'static str,
    value: &str,
    map: &mut BTreeMap<String, String>,
) -> Result<String, CacheSpecError> {
    match map.remove("ref") {
        Some(reference) if !reference.is_empty() => Ok(reference),
        _ => Err(CacheSpecError {
            flag,
            value: value.to_owned(),
            detail: "type=registry needs ref=REGISTRY/REPOSITORY[:TAG]".to_owned(),
        }),
    }
}

/// Parses a `--cache-from` value.
pub fn parse_cache_from(value: &str) -> Result<CacheFromSpec, CacheSpecError> {
    const FLAG: &str = "--cache-from";
    if !value.contains('=') {
        if value.trim().is_empty() {
            return Err(CacheSpecError {
                flag: FLAG,
                value: value.to_owned(),
                detail: "empty".to_owned(),
            });
        }
        return Ok(CacheFromSpec::Image(value.trim().to_owned()));
    }
    let mut map = fields(FLAG, value)?;
    check_type(FLAG, value, &mut map, &["registry"])?;
    let reference = required_ref(FLAG, value, &mut map)?;
    reject_unknown(FLAG, value, &map, "type, ref")?;
    Ok(CacheFromSpec::Registry(reference))
}

/// Parses a `--cache-to` value.
pub fn parse_cache_to(value: &str) -> Result<CacheToSpec, CacheSpecError> {
    const FLAG: &str = "--cache-to";
    let mut map = fields(FLAG, value)?;
    if !value.contains('=') {
        return Err(CacheSpecError {
            flag: FLAG,
            value: value.to_owned(),
            detail: "expected type=registry,ref=REF[,mode=min|max]".to_owned(),
        });
    }
    let kind = check_type(FLAG, value, &mut map, &["registry", "inline"])?;
    if kind == "inline" {
        reject_unknown(FLAG, value, &map, "type")?;
        return Ok(CacheToSpec::Inline);
    }
    let reference = required_ref(FLAG, value, &mut map)?;
    let mode = match map.remove("mode").as_deref().map(str::to_ascii_lowercase) {
        None => CacheMode::Min,
        Some(mode) if mode == "min" => CacheMode::Min,
        Some(mode) if mode == "max" => CacheMode::Max,
        Some(other) => {
            return Err(CacheSpecError {
                flag: FLAG,
                value: value.to_owned(),
                detail: format!("mode={other} is neither min nor max"),
            });
        }
    };
    let ignore_error = match map.remove("ignore-error").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(CacheSpecError {
                flag: FLAG,
                value: value.to_owned(),
                detail: format!("ignore-error={other} is neither true nor false"),
            });
        }
    };
    reject_unknown(FLAG, value, &map, "type, ref, mode, ignore-error")?;
    Ok(CacheToSpec::Registry {
        reference,
        mode,
        ignore_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_from_forms() {
        assert_eq!(
            parse_cache_from("app:cache").unwrap(),
            CacheFromSpec::Image("app:cache".into())
        );
        assert_eq!(
            parse_cache_from("type=registry,ref=127.0.0.1:5000/c:v1").unwrap(),
            CacheFromSpec::Registry("127.0.0.1:5000/c:v1".into())
        );
        assert_eq!(
            parse_cache_from("ref=r/c").unwrap(),
            CacheFromSpec::Registry("r/c".into())
        );
        let error = parse_cache_from("type=local,src=/tmp/x").unwrap_err();
        assert!(
            error.to_string().contains("type=local is not supported"),
            "{error}"
        );
        let error = parse_cache_from("type=registry,ref=a,mode=max").unwrap_err();
        assert!(
            error.to_string().contains("unknown key \"mode\""),
            "{error}"
        );
        assert!(parse_cache_from("type=registry").is_err());
        assert!(parse_cache_from("type=registry,ref=a,ref=b").is_err());
        assert!(parse_cache_from("").is_err());
    }

    #[test]
    fn cache_to_forms() {
        assert_eq!(
            parse_cache_to("type=registry,ref=r/c:v1").unwrap(),
            CacheToSpec::Registry {
                reference: "r/c:v1".into(),
                mode: CacheMode::Min,
                ignore_error: false
            }
        );
        assert_eq!(
            parse_cache_to("type=registry,ref=r/c,mode=max,ignore-error=true").unwrap(),
            CacheToSpec::Registry {
                reference: "r/c".into(),
                mode: CacheMode::Max,
                ignore_error: true
            }
        );
        assert_eq!(parse_cache_to("type=inline").unwrap(), CacheToSpec::Inline);
        for bad in [
            "r/c",
            "type=registry,ref=r/c,mode=all",
            "type=registry,ref=r/c,compression=zstd",
            "type=gha",
            "type=registry,ref=r/c,ignore-error=maybe",
            "type=inline,ref=x",
        ] {
            assert!(parse_cache_to(bad).is_err(), "{bad} must be refused");
        }
    }
}
