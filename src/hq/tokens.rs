//! Per-node agent tokens: random, shown once, stored only as a SHA-256 hash, compared in
//! constant time.

use crate::util::sha256_hex;

/// A new random token (256 bits, hex), prefixed so it is recognisable in a leak scan.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(format!(
        "fleet_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// What the store keeps.
pub fn hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Compares two hashes without an early exit, so timing reveals nothing about the stored one.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_compare() {
        let a = generate().expect("token");
        let b = generate().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 6 + 64);
        assert!(hashes_equal(&hash(&a), &hash(&a)));
        assert!(!hashes_equal(&hash(&a), &hash(&b)));
        assert!(!hashes_equal("ab", "abc"));
    }
}
