//! Resolving a Dockerfile `USER` value to numeric ids through the image's
//! /etc/passwd and /etc/group, with Docker's (runc's `GetExecUser`) rules:
//!
//! - `""` means root (uid 0, gid 0);
//! - a name must exist in /etc/passwd; a number need not (gid then defaults to 0);
//! - the primary gid comes from the passwd entry unless a group is given;
//! - supplementary groups are the groups listing the user's name, and only
//!   when no group was given explicitly; when there are none, the primary
//!   group is the supplementary group (as runc does, so `id` shows it);
//! - a group name must exist in /etc/group; a number need not.

use crate::error::ExecError;

/// The numeric identity the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Real, effective and saved user id.
    pub uid: u32,
    /// Real, effective and saved group id.
    pub gid: u32,
    /// Supplementary group ids (sorted, deduplicated, may include `gid`).
    pub groups: Vec<u32>,
    /// The home directory from /etc/passwd (`/` when the user has no entry), which
    /// becomes `HOME` when the environment does not set it, as Docker does.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Largest id Docker accepts (runc rejects ids above `i32::MAX`).
const MAX_ID: u32 = i32::MAX as u32;

fn parse_passwd(content: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    content.lines().filter_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.trim().parse().ok()?;
        let gid = fields.next()?.trim().parse().ok()?;
        let _gecos = fields.next();
        let home = fields
            .next()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or("/");
        Some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

fn parse_group(content: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    content.lines().filter_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?.trim().parse().ok()?;
        let members = fields
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

fn parse_id(spec: &str, text: &str) -> Result<Option<u32>, ExecError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(ExecError::InvalidUser {
            spec: spec.to_owned(),
            reason: format!("id {text} is out of range (0..={MAX_ID})"),
        }),
    }
}

/// Resolves `spec` against the contents of /etc/passwd and /etc/group
/// (`None` when the file does not exist in the rootfs).
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, ExecError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part == Some("") {
        return Err(ExecError::InvalidUser {
            spec: spec.to_owned(),
            reason: "empty group after ':'".to_owned(),
        });
    }
    let user_part = if user_part.is_empty() {
        if group_part.is_some() {
            return Err(ExecError::InvalidUser {
                spec: spec.to_owned(),
                reason: "empty user before ':'".to_owned(),
            });
        }
        "0"
    } else {
        user_part
    };

    let numeric_uid = parse_id(spec, user_part)?;
    let entry = passwd.and_then(|content| {
        parse_passwd(content).find(|e| match numeric_uid {
            Some(uid) => e.uid == uid,
            None => e.name == user_part,
        })
    });
    let home = entry.as_ref().map_or("/", |e| e.home).to_owned();
    let (uid, mut gid, user_name) = match (numeric_uid, &entry) {
        (_, Some(e)) => (e.uid, e.gid, Some(e.name)),
        (Some(uid), None) => (uid, 0, None),
        (None, None) => {
            return Err(ExecError::UnknownUser {
                user: user_part.to_owned(),
            });
        }
    };

    let mut groups = Vec::new();
    match group_part {
        Some(group_text) => {
            let numeric_gid = parse_id(spec, group_text)?;
            let found = group.and_then(|content| {
                parse_group(content).find(|g| match numeric_gid {
                    Some(id) => g.gid == id,
                    None => g.name == group_text,
                })
            });
            gid = match (numeric_gid, found) {
                (_, Some(g)) => g.gid,
                (Some(id), None) => id,
                (None, None) => {
                    return Err(ExecError::UnknownGroup {
                        group: group_text.to_owned(),
                    });
                }
            };
        }
        None => {
            if let (Some(name), Some(content)) = (user_name, group) {
                groups.extend(
                    parse_group(content)
                        .filter(|g| g.members.contains(&name))
                        .map(|g| g.gid),
                );
            }
        }
    }
    // Like runc: with no supplementary group, the primary group is the one.
    if groups.is_empty() {
        groups.push(gid);
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nbroken line\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n";

    fn ok(spec: &str) -> ResolvedUser {
        resolve_user(spec, Some(PASSWD), Some(GROUP)).expect(spec)
    }

    #[test]
    fn empty_is_root_with_member_groups() {
        assert_eq!(
            ok(""),
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![10],
                home: "/root".into(),
            }
        );
    }

    #[test]
    fn name_resolves_gid_and_supplementary_groups() {
        assert_eq!(
            ok("app"),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 50],
                home: "/home/app".into(),
            }
        );
    }

    #[test]
    fn numeric_uid_known_and_unknown() {
        assert_eq!(ok("65534").gid, 65534);
        assert_eq!(
            ok("4242"),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                groups: vec![0],
                home: "/".into(),
            }
        );
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        assert_eq!(
            ok("app:staff"),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                groups: vec![50],
                home: "/home/app".into(),
            }
        );
        assert_eq!(ok("1000:777").gid, 777);
        assert_eq!(ok("nobody:0").gid, 0);
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        assert!(matches!(
            resolve_user("ghost", Some(PASSWD), Some(GROUP)),
            Err(ExecError::UnknownUser { user }) if user == "ghost"
        ));
        assert!(matches!(
            resolve_user("app:ghosts", Some(PASSWD), Some(GROUP)),
            Err(ExecError::UnknownGroup { group }) if group == "ghosts"
        ));
        assert!(matches!(
            resolve_user("app", None, None),
            Err(ExecError::UnknownUser { .. })
        ));
    }

    #[test]
    fn malformed_specs_are_rejected() {
        for spec in ["app:", ":staff", "99999999999", "1:4294967295"] {
            assert!(
                matches!(
                    resolve_user(spec, Some(PASSWD), Some(GROUP)),
                    Err(ExecError::InvalidUser { .. })
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn works_without_files_for_numeric_ids() {
        assert_eq!(
            resolve_user("12:34", None, None).expect("numeric"),
            ResolvedUser {
                uid: 12,
                gid: 34,
                groups: vec![34],
                home: "/".into(),
            }
        );
    }
}
