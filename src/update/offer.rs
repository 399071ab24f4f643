//! An `update_agent` offer (PROTOCOL.md §9), read from the query and judged on its own
//! fields before anything is downloaded. Free of IO.

use serde_json::{Map, Value};

use crate::net::http_get::HttpUrl;
use crate::protocol::escape::escape;
use crate::update::version::{self, Version};

/// The largest `signature` taken: a minisign file is about 300 bytes.
const MAX_SIGNATURE: usize = 4096;

/// What the console offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: String,
    pub target: String,
    pub url: HttpUrl,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The whole `.minisig` file, as text; judged only with the downloaded file.
    pub signature: String,
}

/// Why an offer is not taken, with the code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Code 2: a missing or ill-typed field, or `reqtype` other than `write`.
    #[error("{0}")]
    BadRequest(String),
    /// Code 6: the offer's own fields are refused (wrong target, not newer, too big, bad url).
    #[error("{0}")]
    Refused(String),
}

/// What the rig knows when it judges an offer.
#[derive(Debug, Clone, Copy)]
pub struct Rig<'a> {
    /// This binary's target triple.
    pub target: &'a str,
    /// The newest version this rig ever ran (this one, or one it confirmed).
    pub newest: &'a str,
    /// Versions rolled back and not superseded since.
    pub bad: &'a [String],
    pub max_bytes: u64,
}

fn string<'a>(body: &'a Map<String, Value>, name: &str, cap: usize) -> Result<&'a str, OfferError> {
    match body.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= cap => Ok(s),
        Some(Value::String(s)) if s.is_empty() => Err(OfferError::BadRequest(format!("`{name}` is empty"))),
        Some(Value::String(_)) => Err(OfferError::BadRequest(format!("`{name}` is longer than {cap} bytes"))),
        Some(_) => Err(OfferError::BadRequest(format!("`{name}` is not a string"))),
        None => Err(OfferError::BadRequest(format!("`{name}` is missing"))),
    }
}

/// Reads and judges an offer: its shape first (code 2), then its fields against `rig`
/// (code 6).
pub fn judge(reqtype: &str, body: &Map<String, Value>, rig: Rig<'_>) -> Result<Offer, OfferError> {
    if reqtype != "write" {
        return Err(OfferError::BadRequest(format!(
            "update_agent is answered at once and reports through update_result: reqtype must be \"write\", not \"{}\"",
            escape(reqtype)
        )));
    }
    let version = string(body, "version", 64)?;
    let target = string(body, "target", 64)?;
    let url = string(body, "url", 2048)?;
    let sha256 = string(body, "sha256", 64)?;
    let signature = string(body, "signature", MAX_SIGNATURE)?;
    let size = match body.get("size") {
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| OfferError::BadRequest("`size` is not a positive integer".into()))?,
        None => return Err(OfferError::BadRequest("`size` is missing".into())),
    };
    let sha256 =
        parse_hex(sha256).ok_or_else(|| OfferError::BadRequest("`sha256` is not 64 hexadecimal digits".into()))?;
    if Version::parse(version).is_none() {
        return Err(OfferError::BadRequest(format!(
            "`version` \"{}\" is not a version (MAJOR.MINOR.PATCH, optionally -PRERELEASE)",
            escape(version)
        )));
    }
    let url = HttpUrl::parse(url).map_err(|why| OfferError::Refused(format!("`url` is refused: {why}")))?;
    if target != rig.target {
        return Err(OfferError::Refused(format!(
            "this rig runs {}, not {}: offer the build for {}",
            rig.target,
            escape(target),
            rig.target
        )));
    }
    if !version::newer(version, rig.newest) {
        return Err(OfferError::Refused(format!(
            "version {} is not newer than {}, the newest this rig ever ran (no downgrade, no replay)",
            escape(version),
            rig.newest
        )));
    }
    if rig.bad.iter().any(|b| b == version) {
        return Err(OfferError::Refused(format!(
            "version {} was rolled back on this rig and is not retried until a newer one succeeded",
            escape(version)
        )));
    }
    if size > rig.max_bytes {
        return Err(OfferError::Refused(format!(
            "size {size} is over this rig's update.max_bytes ({})",
            rig.max_bytes
        )));
    }
    Ok(Offer {
        version: version.to_string(),
        target: target.to_string(),
        url,
        size,
        sha256,
        signature: signature.to_string(),
    })
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// 32 bytes as 64 lower-case hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rig() -> Rig<'static> {
        Rig { target: "x86_64-unknown-linux-musl", newest: "0.1.0", bad: &[], max_bytes: 1 << 20 }
    }

    fn body(change: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
        let mut m = json!({"act":"update_agent","version":"0.2.0","target":"x86_64-unknown-linux-musl",
            "url":"https://mirror.example/rig-agent","size":1000,"sha256":"ab".repeat(32),
            "signature":"untrusted comment: x\nRW...\ntrusted comment: y\nzz\n"})
        .as_object()
        .unwrap()
        .clone();
        change(&mut m);
        m
    }

    #[test]
    fn a_well_formed_offer_for_this_rig_is_taken() {
        let o = judge("write", &body(|_| {}), rig()).unwrap();
        assert_eq!((o.version.as_str(), o.size, o.sha256[0]), ("0.2.0", 1000, 0xab));
        assert_eq!(o.url.host, "mirror.example");
    }

    #[test]
    fn a_post_or_a_missing_or_ill_typed_field_is_a_bad_request() {
        assert!(matches!(judge("post", &body(|_| {}), rig()), Err(OfferError::BadRequest(_))));
        for field in ["version", "target", "url", "size", "sha256", "signature"] {
            let r = judge("write", &body(|m| drop(m.remove(field))), rig());
            assert!(matches!(r, Err(OfferError::BadRequest(ref w)) if w.contains(field)), "{field}: {r:?}");
            let r = judge("write", &body(|m| drop(m.insert(field.into(), json!([1])))), rig());
            assert!(matches!(r, Err(OfferError::BadRequest(_))), "{field}: {r:?}");
        }
        let r = judge("write", &body(|m| drop(m.insert("size".into(), json!(-1)))), rig());
        assert!(matches!(r, Err(OfferError::BadRequest(_))));
        let r = judge("write", &body(|m| drop(m.insert("sha256".into(), json!("zz".repeat(32))))), rig());
        assert!(matches!(r, Err(OfferError::BadRequest(_))));
    }

    #[test]
    fn another_target_an_old_version_a_bad_one_or_an_oversize_build_is_refused_before_download() {
        let refused = |m: Map<String, Value>, r: Rig<'_>| matches!(judge("write", &m, r), Err(OfferError::Refused(_)));
        assert!(refused(body(|m| drop(m.insert("target".into(), json!("aarch64-unknown-linux-musl")))), rig()));
        assert!(refused(body(|m| drop(m.insert("version".into(), json!("0.1.0")))), rig()));
        assert!(refused(body(|m| drop(m.insert("version".into(), json!("0.0.9")))), rig()));
        assert!(refused(body(|m| drop(m.insert("size".into(), json!(2 << 20)))), rig()));
        assert!(refused(body(|m| drop(m.insert("url".into(), json!("ftp://x/y")))), rig()));
        let bad = ["0.2.0".to_string()];
        assert!(refused(body(|_| {}), Rig { bad: &bad, ..rig() }));
        assert!(refused(body(|_| {}), Rig { newest: "0.3.0", ..rig() }));
    }
}
