//! Agent versions as the update compares them: `MAJOR.MINOR.PATCH` (one to four numeric
//! parts), optionally `-PRERELEASE`. A pre-release sorts before its release, as in SemVer;
//! pre-releases of one release compare as text. Anything else is not a version.

use std::cmp::Ordering;

/// The longest version taken: it must fit the binary's version slot.
pub const MAX_LEN: usize = 31;

/// A parsed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: Vec<u64>,
    pre: Option<String>,
}

impl Version {
    /// `None` when `s` is not a version this agent can order.
    pub fn parse(s: &str) -> Option<Version> {
        if s.is_empty() || s.len() > MAX_LEN {
            return None;
        }
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        if let Some(p) = pre
            && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        {
            return None;
        }
        let mut parts = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts.push(part.parse().ok()?);
        }
        if parts.len() > 4 {
            return None;
        }
        parts.resize(4, 0);
        Some(Version { parts, pre: pre.map(str::to_string) })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.parts.cmp(&other.parts).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
    }
}

/// Whether `a` is a newer version than `b`; a version that does not parse is never newer,
/// and anything that parses is newer than one that does not.
pub fn newer(a: &str, b: &str) -> bool {
    match (Version::parse(a), Version::parse(b)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_their_numbers_and_a_pre_release_comes_before_its_release() {
        assert!(newer("0.2.0", "0.1.0"));
        assert!(newer("0.10.0", "0.9.9"));
        assert!(newer("1.0", "0.99.99"));
        assert!(!newer("0.1.0", "0.1.0"));
        assert!(!newer("0.1", "0.1.0"));
        assert!(newer("0.2.0", "0.2.0-rc1"));
        assert!(newer("0.2.0-rc2", "0.2.0-rc1"));
        assert!(!newer("0.1.9", "0.2.0-rc1"));
    }

    #[test]
    fn what_is_not_a_version_is_never_newer() {
        for bad in ["", "v1", "1..2", "1.2.3.4.5", "1.2-", "1.2-x y", "99999999999", &"1".repeat(40)] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
            assert!(!newer(bad, "0.0.1"), "{bad:?}");
        }
    }
}
