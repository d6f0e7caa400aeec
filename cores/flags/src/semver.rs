//! Hand-parsed semantic versions (semver 2.0.0): `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
//!
//! Strict: exactly three numeric components without leading zeros (each fits a `u64`), no `v`
//! prefix; pre-release and build identifiers are non-empty `[0-9A-Za-z-]+`, numeric pre-release
//! identifiers have no leading zeros. Precedence follows semver §11: a pre-release sorts before its
//! release; identifiers compare numerically when both are numeric, numeric < alphanumeric,
//! alphanumerics compare by ASCII; a shorter identifier list sorts first when it is a prefix of the
//! longer. Build metadata is ignored. Parsing borrows and never allocates.

use std::cmp::Ordering;

/// A parsed version borrowing its pre-release from the input (`""` = a release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version<'a> {
    major: u64,
    minor: u64,
    patch: u64,
    pre: &'a str,
}

/// A version owned by a compiled clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedVersion {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Box<str>,
}

impl OwnedVersion {
    pub(crate) fn parse(s: &str) -> Option<OwnedVersion> {
        let v = parse(s)?;
        Some(OwnedVersion { major: v.major, minor: v.minor, patch: v.patch, pre: v.pre.into() })
    }

    pub(crate) fn as_version(&self) -> Version<'_> {
        Version { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

/// Parses a version; `None` unless it is strictly well-formed.
pub(crate) fn parse(s: &str) -> Option<Version<'_>> {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    if let Some(build) = build
        && !build.split('.').all(is_identifier)
    {
        return None;
    }
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, pre),
        None => (rest, ""),
    };
    if rest.len() != core.len() && !pre.split('.').all(|id| is_identifier(id) && !has_leading_zero(id)) {
        return None;
    }
    let mut parts = core.split('.');
    let major = parse_component(parts.next()?)?;
    let minor = parse_component(parts.next()?)?;
    let patch = parse_component(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(Version { major, minor, patch, pre })
}

/// Semver precedence.
pub(crate) fn compare(a: Version<'_>, b: Version<'_>) -> Ordering {
    (a.major, a.minor, a.patch).cmp(&(b.major, b.minor, b.patch)).then_with(|| compare_pre(a.pre, b.pre))
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = compare_identifier(x, y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn compare_identifier(x: &str, y: &str) -> Ordering {
    match (is_numeric(x), is_numeric(y)) {
        // No leading zeros: the longer number is the larger; equal lengths compare digit-wise.
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

fn parse_component(s: &str) -> Option<u64> {
    if !is_numeric(s) || has_leading_zero(s) {
        return None;
    }
    s.parse().ok()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn has_leading_zero(s: &str) -> bool {
    is_numeric(s) && s.len() > 1 && s.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(parse(a).unwrap(), parse(b).unwrap())
    }

    #[test]
    fn parses_strictly() {
        for good in [
            "0.0.0",
            "1.2.3",
            "10.20.30",
            "1.2.3-alpha",
            "1.2.3-alpha.1",
            "1.2.3-0.3.7",
            "1.2.3+build.5",
            "1.2.3-rc-1+b",
            "18446744073709551615.0.0",
        ] {
            assert!(parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3-01",
            "1.2.3-a_b",
            "1.2.3+a..b",
            "a.b.c",
            "1.2.-3",
            " 1.2.3",
            "18446744073709551616.0.0",
            "1.2.3-ü",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn precedence_follows_semver_spec_example() {
        // semver.org §11: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta < 1.0.0-beta.2
        // < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for (i, a) in chain.iter().enumerate() {
            for (j, b) in chain.iter().enumerate() {
                assert_eq!(cmp(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(cmp("1.0.0+a", "1.0.0+b"), Ordering::Equal);
        assert_eq!(cmp("1.0.0-99999999999999999999999", "1.0.0-100000000000000000000000"), Ordering::Less);
    }
}
