//! Typed key builders: parts joined by a separator byte, integers big-endian so ranges sort right.

/// Separates the parts of a composite key (never valid inside UTF-8 identifiers).
pub const SEP: u8 = 0xff;

/// `a SEP b`.
pub fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k.extend_from_slice(b.as_bytes());
    k
}

/// `a SEP`: the prefix of every `pair(a, _)`.
pub fn prefix(a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(SEP);
    k
}

/// The part after the first separator, as UTF-8.
pub fn second(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == SEP)?;
    std::str::from_utf8(&key[at + 1..]).ok()
}

pub fn u64_be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn read_u64_be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_sort_and_split() {
        let k = pair("@a:x", "DEV");
        assert!(k.starts_with(&prefix("@a:x")));
        assert!(!pair("@ab:x", "D").starts_with(&prefix("@a")));
        assert_eq!(second(&k), Some("DEV"));
        assert!(u64_be(2) > u64_be(1) && u64_be(256) > u64_be(255));
        assert_eq!(read_u64_be(&u64_be(77)), Some(77));
    }
}
