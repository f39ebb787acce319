//! Identities the simulated players present: unsigned JWTs, asset UUIDs and a cheap
//! deterministic hash so a run with the same seed produces the same population.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An unsigned JWT whose payload is `{"sub":"<user>"}`.
///
/// playstate trusts a gateway to verify tokens and only decodes them, so the header says
/// `alg: none` and the signature is a placeholder.
pub fn bearer_token(user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let payload = serde_json::json!({ "sub": user }).to_string();
    format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(payload))
}

/// `Bearer <token>` for `user`.
pub fn authorization(user: &str) -> String {
    format!("Bearer {}", bearer_token(user))
}

/// A version-4 UUID made from the caller's (seeded) random generator, so asset ids are
/// reproducible across runs with the same `--seed`.
pub fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut b = rng.u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h =
        |r: std::ops::Range<usize>| -> String { b[r].iter().map(|x| format!("{x:02x}")).collect() };
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// SplitMix64: a well-mixed hash of a counter, used to give each user a stable shape
/// (how many sessions it holds) without storing it.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_three_base64url_parts_with_the_sub_claim() {
        let token = bearer_token("lt-u42");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "eyJhbGciOiJub25lIn0");
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        assert_eq!(payload, br#"{"sub":"lt-u42"}"#);
        assert_eq!(parts[2], "sig");
        assert!(!token.contains('='), "base64url without padding");
        assert_eq!(authorization("x"), format!("Bearer {}", bearer_token("x")));
    }

    #[test]
    fn token_escapes_awkward_user_ids() {
        let token = bearer_token("a\"b");
        let payload = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["sub"], "a\"b");
    }

    #[test]
    fn uuids_are_version_4_and_reproducible() {
        let mut a = fastrand::Rng::with_seed(7);
        let mut b = fastrand::Rng::with_seed(7);
        let u = uuid(&mut a);
        assert_eq!(u, uuid(&mut b));
        assert_eq!(u.len(), 36);
        let groups: Vec<&str> = u.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(u, uuid(&mut a));
    }
}
